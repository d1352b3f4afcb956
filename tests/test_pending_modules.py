# SPDX-License-Identifier: GPL-2.0-or-later
"""Configured, not yet in effect (issue 20, module parameters, blacklists and firmware VT): modprobe.d as kmod
applies it against /sys/module, blacklists against loaded modules, and the VT MSR against the kernel log."""
from __future__ import annotations

from pathlib import Path

import pytest

import kvmcheck
from kvmcheck.checks.kernel import kernel_modules_blacklist
from kvmcheck.checks.kvm import kvm_nested
from kvmcheck.core.host import Host
from kvmcheck.facts import Facts
from kvmcheck.facts.kvm import ModuleParameter, ModuleParameters, module_parameters, modprobe_d
from kvmcheck.facts.system import Arch
from kvmcheck.parsers.cmdline import parse_cmdline
from kvmcheck.parsers.cpuinfo import parse_cpuinfo
from kvmcheck.parsers.modprobe import kernel_value, option_values

from test_firmware import AMD_SVM, BIOS_LOG, INTEL_NO_VMX, vt_enabled

INTEL = parse_cpuinfo("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vmx\n")
JUDGED = ["kvm.nested", "kvm.modules", "kernel.modules-blacklist"]


def write(root: Path, files) -> Path:
    for rel, text in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def parameters(root: Path) -> ModuleParameters:
    return Facts(Host(str(root))).get("module_parameters")


# --- the parser: values as the kernel parses and prints them ------------------------------------------------
@pytest.mark.parametrize("kind, value, printed", [
    ("bool", "1", "Y"), ("bool", "y", "Y"), ("bool", "Yes", "Y"), ("bool", "on", "Y"), ("bool", "true", "Y"),
    ("bool", None, "Y"),  # a bare 'nested' sets the bool (param_set_bool)
    ("bool", "0", "N"), ("bool", "N", "N"), ("bool", "off", "N"), ("bool", "false", "N"),
    ("bool", "", None), ("bool", "o", None), ("bool", "maybe", None),
    ("int", "1", "1"), ("int", "0x10", "16"), ("int", "010", "8"), ("int", "-1", "-1"), ("int", "+5", "5"),
    ("int", "1\n", "1"), ("int", "Y", None), ("int", "08", None), ("int", "0x", None), ("int", "", None),
    ("int", None, None), ("int", "2147483648", None),
    ("uint", "200000", "200000"), ("uint", "-1", None), ("uint", "4294967295", "4294967295"),
    ("uint", "4294967296", None),
    ("string", "10de:1b80,10de:10f0", "10de:1b80,10de:10f0"),
])
def test_kernel_value(kind, value, printed):
    assert kernel_value(kind, value) == printed


def test_option_values_match_dashes_and_underscores_and_keep_bare_words():
    assert option_values(("halt-poll-ns=0", "nested", "ids=a,b=c")) == [
        ("halt_poll_ns", "0"), ("nested", None), ("ids", "a,b=c")]


# --- the facts ----------------------------------------------------------------------------------------------
def test_kmod_reads_the_files_by_name_across_directories_and_the_last_setting_wins(tmp_path):
    # kmod sorts the files by name whatever their directory: /usr/lib/.../kvm.conf comes before
    # /etc/.../zz.conf, so zz's nested=0 is applied last.  In directory order the vendor's nested=1 would win.
    write(tmp_path, {"/etc/modprobe.d/zz.conf": "options kvm-intel nested=0\n",
                     "/usr/lib/modprobe.d/kvm.conf": "options kvm_intel nested=1 ept=1\n",
                     "/usr/lib/modprobe.d/a.conf": "options kvm_intel nested=1\n"})
    conf = modprobe_d(Host(str(tmp_path)))
    assert [f.path for f in conf.files] == ["/usr/lib/modprobe.d/a.conf", "/usr/lib/modprobe.d/kvm.conf",
                                            "/etc/modprobe.d/zz.conf"]
    assert conf.setting("kvm_intel", "nested") == ("/etc/modprobe.d/zz.conf", 1, "nested=0", "0")
    assert conf.setting("kvm_intel", "ept") == ("/usr/lib/modprobe.d/kvm.conf", 1, "ept=1", "1")
    assert conf.setting("kvm_amd", "nested") is None


def test_the_nested_root_compares_configured_and_effective(host_root):
    got = parameters(host_root("pending-nested-reload"))
    assert got.get("kvm_intel", "nested") == ModuleParameter(
        "kvm_intel", "nested", False, "loaded", "nested=1", "/etc/modprobe.d/kvm.conf:1", "Y", "N", ())
    assert got.get("kvm_intel", "nested").pending
    kvm = got.get("kvm", "halt_poll_ns")
    assert (kvm.state, kvm.word, kvm.effective, kvm.holders, kvm.pending) == ("loaded", None, None, ("kvm_intel",),
                                                                            False)
    assert [p.module for p in got.parameters if p.pending] == ["kvm_intel"]


def test_a_module_not_loaded_a_built_in_one_and_a_refused_value_are_not_pending(tmp_path):
    # Not loaded: the option applies at the next load.  Built in: modprobe.d never reaches it.  A value the
    # kernel refuses: the module would not load with it, nothing to compare.
    write(tmp_path, {"/etc/modprobe.d/kvm.conf": "options kvm_intel nested=1\noptions kvm ignore_msrs=maybe\n"
                                                 "options kvm halt_poll_ns=0\n",
                     "/sys/module/kvm/parameters/ignore_msrs": "N\n",
                     "/sys/module/kvm/parameters/halt_poll_ns": "200000\n"})
    got = parameters(tmp_path)
    nested, msrs, poll = (got.get("kvm_intel", "nested"), got.get("kvm", "ignore_msrs"),
                          got.get("kvm", "halt_poll_ns"))
    assert (nested.state, nested.configured, nested.effective, nested.pending) == (None, "Y", None, False)
    assert (msrs.state, msrs.word, msrs.configured, msrs.effective, msrs.pending) == (
        "built-in", "ignore_msrs=maybe", None, "N", False)
    assert (poll.differs, poll.pending) == (True, False)


def test_vfio_pci_ids_are_read_but_never_compared(tmp_path):
    # vfio_pci declares ids with permission 0: sysfs has no such file, so the effective value is unknown.
    write(tmp_path, {"/etc/modprobe.d/vfio.conf": "options vfio-pci ids=10de:1b80,10de:10f0\n",
                     "/sys/module/vfio_pci/initstate": "live\n", "/sys/module/vfio_pci/parameters/.keep": ""})
    ids = parameters(tmp_path).get("vfio_pci", "ids")
    assert (ids.state, ids.configured, ids.effective, ids.differs, ids.pending) == (
        "loaded", "10de:1b80,10de:10f0", None, False, False)


def test_live_parameters_are_what_sysfs_says():
    got = Facts(Host("/")).get("module_parameters")
    for p in got.parameters:
        path = Path(f"/sys/module/{p.module}/parameters/{p.name}")
        try:
            raw = path.read_text().split("\n", 1)[0].strip()
        except OSError:
            raw = None
        if p.module == "kvm" and p.name in ("halt_poll_ns", "ignore_msrs") and raw is not None:
            assert p.effective == raw, p
        elif raw is None:
            assert p.effective is None, p


# --- the checks, end to end: exact (id, status, pending) ----------------------------------------------------
ROOTS = {
    "pending-nested-reload": [("kvm.nested", "pass", "module-reload"), ("kvm.modules", "pass", None),
                              ("kernel.modules-blacklist", "pass", None)],
    "pending-nested-reverse": [("kvm.nested", "pass", "module-reload"), ("kvm.modules", "pass", None),
                               ("kernel.modules-blacklist", "pass", None)],
    "pending-kvm-tunables": [("kvm.nested", "pass", None), ("kvm.modules", "pass", "module-reload"),
                             ("kernel.modules-blacklist", "pass", None)],
    "pending-blacklisted-loaded": [("kvm.nested", "pass", None), ("kvm.modules", "pass", None),
                                   ("kernel.modules-blacklist", "fail", "module-reload")],
    "pending-none": [("kvm.nested", "pass", None), ("kvm.modules", "pass", None),
                     ("kernel.modules-blacklist", "pass", None)],
}


def triples(report):
    return sorted((r.id, r.status.value, r.pending) for r in report.checks)


@pytest.mark.parametrize("name", sorted(ROOTS))
def test_pending_roots(host_root, name):
    report = kvmcheck.run(str(host_root(name)), only=JUDGED)
    assert triples(report) == sorted(ROOTS[name])
    data = report.to_dict()  # validated against the schema (conftest)
    pending = {r.pending for r in report.checks} - {None}
    assert data.get("pending", {}) == ({"module-reload": [r.id for r in report.checks if r.pending]}
                                       if pending else {})


def results(root, **options):
    return {r.id: r for r in kvmcheck.run(str(root), only=JUDGED, **options).checks}


def test_the_nested_note_names_the_setting_the_file_and_the_safe_reload(host_root):
    r = results(host_root("pending-nested-reload"))["kvm.nested"]
    assert r.pending_note == ("configured, not yet in effect: nested=1 for kvm_intel in /etc/modprobe.d/kvm.conf; "
                              "reload kvm_intel (no guest may be running: modprobe -r kvm_intel && modprobe "
                              "kvm_intel) or reboot")
    assert "configured but not in effect: nested=1 in /etc/modprobe.d/kvm.conf:1" in r.detail
    reverse = results(host_root("pending-nested-reverse"))["kvm.nested"]
    assert reverse.summary == "enabled (kvm_intel nested=Y)"
    assert reverse.pending_note.startswith(
        "configured, not yet in effect: nested=0 for kvm_intel in /etc/modprobe.d/zz-no-nested.conf; reload kvm_intel")


def test_a_failing_nested_keeps_its_failure_and_its_pending_reload(host_root, tmp_path):
    conf = tmp_path / "nested-required.toml"
    conf.write_text('[severity."kvm.nested"]\npass = "fail"\n')
    r = results(host_root("pending-nested-reload"), config=str(conf))["kvm.nested"]
    assert (r.status.value, r.original_status.value, r.pending) == ("fail", "pass", "module-reload")
    assert r.pending_note.startswith("configured, not yet in effect: nested=1 for kvm_intel")


def test_kvm_tunables_are_compared_in_kvm_modules_and_reloaded_with_their_holders(host_root):
    r = results(host_root("pending-kvm-tunables"))["kvm.modules"]
    assert r.evidence["parameters"] == {
        "halt_poll_ns": {"configured": "0", "effective": "200000", "where": "/etc/modprobe.d/kvm-tunables.conf:2"},
        "ignore_msrs": {"configured": "Y", "effective": "N", "where": "/etc/modprobe.d/kvm-tunables.conf:1"}}
    assert r.pending_note == (
        "configured, not yet in effect: halt_poll_ns=0 for kvm in /etc/modprobe.d/kvm-tunables.conf; ignore_msrs=1 "
        "for kvm in /etc/modprobe.d/kvm-tunables.conf; reload kvm (no guest may be running: modprobe -r kvm_intel "
        "kvm && modprobe kvm_intel) or reboot; or set it now: echo 0 > /sys/module/kvm/parameters/halt_poll_ns; "
        "echo Y > /sys/module/kvm/parameters/ignore_msrs")
    same = results(host_root("pending-none"))["kvm.modules"]
    assert same.evidence["parameters"]["ignore_msrs"] == {"configured": "Y", "effective": "Y",
                                                          "where": "/etc/modprobe.d/kvm.conf:2"}


def test_a_blacklist_of_a_loaded_module_is_pending_its_unload(host_root):
    r = results(host_root("pending-blacklisted-loaded"))["kernel.modules-blacklist"]
    assert r.pending_note == (
        "configured, not yet in effect: blacklist kvm_intel in /etc/modprobe.d/disable-virt.conf; install vhost_net "
        "/bin/false in /etc/modprobe.d/disable-virt.conf; unload kvm_intel (no guest may be running: modprobe -r "
        "kvm_intel) or reboot; unload vhost_net (no guest may be running: modprobe -r vhost_net) or reboot")


@pytest.mark.parametrize("case, states, cmdline, pending", [
    ("blacklisted, not loaded: it just stays out", {}, None, None),
    ("kvm blacklisted, loaded: its users go first", {"kvm": "loaded", "kvm_intel": "loaded"}, None,
     "configured, not yet in effect: blacklist kvm in /etc/modprobe.d/x.conf; unload kvm (no guest may be "
     "running: modprobe -r kvm_intel kvm) or reboot"),
    ("built in: no blacklist reaches it", {"kvm": "built-in"}, None, None),
    ("on the kernel command line: in effect already", {"vhost_net": "loaded"}, "modprobe.blacklist=vhost_net", None),
])
def test_blacklist_pending_judge(tmp_path, case, states, cmdline, pending):
    write(tmp_path, {"/etc/modprobe.d/x.conf": "blacklist kvm\n"})
    r = kernel_modules_blacklist.func(
        modprobe_d=modprobe_d(Host(str(tmp_path))), cmdline=parse_cmdline(cmdline) if cmdline else None,
        family="x86", cpuinfo=INTEL, arch=Arch("x86_64", "uname"), modules={}, watched_module_states=states,
        module_holders={"kvm": ("kvm_intel",)} if states.get("kvm") == "loaded" else {})
    assert (r.pending, r.pending_note or None) == (("module-reload" if pending else None), pending)


def test_nested_not_loaded_is_not_pending(tmp_path):
    write(tmp_path, {"/etc/modprobe.d/kvm.conf": "options kvm_intel nested=1\n"})
    conf = modprobe_d(Host(str(tmp_path)))
    params = ModuleParameters((ModuleParameter("kvm_intel", "nested", False, None, "nested=1",
                                               "/etc/modprobe.d/kvm.conf:1", "Y", None, ()),))
    r = kvm_nested.func(family="x86", modules={"kvm": "loaded"}, cmdline=None, sys_module=True,
                        nested_parameters={"kvm_intel": None}, modprobe_d=conf, module_parameters=params)
    assert (r.status.value, r.pending) == ("skip", None)


# --- firmware VT: the kernel log says disabled, the MSR (read now) says enabled: pending a power cycle -------
# The Host opens /dev/cpu/0/msr only on the running host (a captured root cannot serve it, and this machine
# has no msr device), so the judge is tested with the MSR records the fact would return.
POWER_CYCLE = ("configured in firmware, not yet in effect: power the machine off and on; a warm reboot may not "
               "apply it")
FIRMWARE = [  # (case, arguments, status, pending)
    ("Intel: enabled and locked now", dict(cpuinfo=INTEL_NO_VMX, kernel_log=BIOS_LOG,
                                           msrs={"feature_control": 0x5, "vm_cr": None}), "fail", "power-cycle"),
    ("Intel: still locked off", dict(cpuinfo=INTEL_NO_VMX, kernel_log=BIOS_LOG, msrs={"feature_control": 0x1}),
     "fail", None),
    ("Intel: enabled, not locked", dict(cpuinfo=INTEL_NO_VMX, kernel_log=BIOS_LOG, msrs={"feature_control": 0x4}),
     "fail", None),
    ("MSR unreadable", dict(cpuinfo=INTEL_NO_VMX, kernel_log=BIOS_LOG, msrs={"feature_control": None}), "fail",
     None),
    ("offline: no MSR", dict(cpuinfo=INTEL_NO_VMX, kernel_log=BIOS_LOG, live=False), "fail", None),
    ("AMD: SVMDIS clear and locked now", dict(cpuinfo=AMD_SVM, kernel_log=BIOS_LOG, msrs={"vm_cr": 0x8}), "fail",
     "power-cycle"),
    ("AMD: SVMDIS still set", dict(cpuinfo=AMD_SVM, kernel_log=BIOS_LOG, msrs={"vm_cr": 0x18}), "fail", None),
]


@pytest.mark.parametrize("case, args, status, pending", FIRMWARE, ids=[c[0] for c in FIRMWARE])
def test_firmware_power_cycle_pending(case, args, status, pending):
    out = vt_enabled(**args)
    assert (out.status.value, out.summary, out.pending) == (status, "the kernel log says firmware disabled VT",
                                                           pending)
    assert out.pending_note == (POWER_CYCLE if pending else "")
    if pending:
        assert out.evidence["msr_state"].startswith(("IA32_FEATURE_CONTROL = 0x5", "VM_CR = 0x8"))


def test_a_guest_is_never_told_to_power_cycle():
    from kvmcheck.parsers.hypervisor import VirtFacts

    out = vt_enabled(cpuinfo=INTEL_NO_VMX, kernel_log=BIOS_LOG, virt=VirtFacts("KVM", "CPUID", True),
                     msrs={"feature_control": 0x5})
    assert (out.status.value, out.pending) == ("fail", None)
