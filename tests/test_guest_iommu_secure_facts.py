# SPDX-License-Identifier: GPL-2.0-or-later
"""kvm.guest-run, kvm.acceleration, iommu.enabled and secure-guest.support as judges called directly with fact
records (no root), and their facts on captured roots: absent, denied and offline kept apart.

Root reads every file whatever its mode, so the denied cases run as nobody (setpriv) on a copy of a captured
root in a directory nobody may traverse."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import as_nobody, materialize
from kvmcheck.checks.guest import acceleration, guest_run
from kvmcheck.checks.iommu import iommu_enabled
from kvmcheck.checks.secure_guest import secure_guest_support
from kvmcheck.core import kvmapi
from kvmcheck.core.host import Host
from kvmcheck.facts import Facts, Later, Readout
from kvmcheck.facts.guest import GuestProbe, KvmError, KvmProbe, LoopProbe, NestedParams
from kvmcheck.facts.iommu import AcpiTables, IommuGroups, VfioPci
from kvmcheck.facts.secure_guest import ModuleParams, SevHost, Ultravisor
from kvmcheck.facts.system import KernelLog
from kvmcheck.parsers.cmdline import parse_cmdline
from kvmcheck.parsers.cpuinfo import parse_cpuinfo
from kvmcheck.parsers.hypervisor import VirtFacts
from kvmcheck.parsers.kernel_log import parse_kernel_log

BARE = VirtFacts(None, "test", False)
KVM_GUEST = VirtFacts("KVM", "test", True)


def never(what: str) -> Later:
    """A Later that fails the test when a judge asks for it (the branch must not need it)."""
    return Later(lambda: pytest.fail(f"{what} asked on a branch that does not need it"))


def ok(path: str, text: str) -> Readout:
    return Readout(path, "ok", text)


def absent(path: str) -> Readout:
    return Readout(path, "absent")


def denied(path: str) -> Readout:
    return Readout(path, "denied", reason="Permission denied")


def cpu(vendor: str, flags: str = "fpu lm") -> object:
    return parse_cpuinfo(f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n")


# --- kvm.guest-run ---------------------------------------------------------------------------------------------
def _run(ok_=True, executed=True, value=None, reason=""):
    expected = kvmapi.guest_expected(0x1234, 0x0BEF)
    return kvmapi.GuestRun(ok=ok_, inputs=(0x1234, 0x0BEF), expected=expected,
                           value=expected if value is None else value, port=kvmapi.RESULT_PORT,
                           exits=["KVM_EXIT_IO", "KVM_EXIT_HLT"], reason=reason, arch="x86_64", executed=executed)


GUEST_CASES = [
    (KvmProbe("offline", root="captured"), "skip", "offline root"),
    (KvmProbe("error", error=KvmError(13, "EACCES", "Permission denied", "open")), "fail",
     "permission denied opening /dev/kvm (EACCES)"),
    (KvmProbe("error", error=KvmError(2, "ENOENT", "No such file or directory", "open")), "fail",
     "/dev/kvm does not exist (ENOENT)"),
    (KvmProbe("error", error=KvmError(19, "ENODEV", "not a character device", "open", not_chardev=True)), "fail",
     "/dev/kvm is not a character device (ENODEV)"),
    (KvmProbe("error", error=KvmError(12, "ENOMEM", "Cannot allocate memory", "ioctl")), "fail",
     "a KVM ioctl failed: Cannot allocate memory (ENOMEM)"),
    (KvmProbe("timeout", limit_s=0.54, reason="the KVM probe did not finish within 0.54 s"), "fail",
     "the guest did not stop within 0.54 s"),
    (KvmProbe("ok", GuestProbe(11, {})), "fail", "KVM API version 11, expected 12"),
    (KvmProbe("ok", GuestProbe(12, {"nr_vcpus": 4}, _run())), "pass",
     f"test guest computed 0x{kvmapi.guest_expected(0x1234, 0x0BEF):04x} and halted (API 12)"),
    (KvmProbe("ok", GuestProbe(12, {}, _run(ok_=False, value=0, reason="KVM_EXIT_SHUTDOWN"))), "fail",
     "the test guest ran but did not produce the right answer: KVM_EXIT_SHUTDOWN"),
    (KvmProbe("ok", GuestProbe(12, {}, _run(executed=False, reason="only VM creation on s390x"))), "pass",
     "VM and vCPU created (API 12); guest execution not probed on x86_64"),
    (KvmProbe("ok", GuestProbe(12, {}, _run(ok_=False, executed=False, reason="KVM_CREATE_VCPU: EINVAL"))), "fail",
     "could not create a VM and vCPU"),
]


@pytest.mark.parametrize("probe,status,summary", GUEST_CASES, ids=[c[2][:40] for c in GUEST_CASES])
def test_guest_run_judge(probe, status, summary):
    out = guest_run.func(guest_run_probe=Later(lambda: probe))
    assert (out.status.value, out.summary) == (status, summary)
    if status == "fail":
        assert out.detail and out.remediation


# --- kvm.acceleration --------------------------------------------------------------------------------------------
def _loop(per_second: float, completed=True, reason=""):
    iterations = 20_000
    return kvmapi.LoopRun(iterations=iterations, elapsed_s=iterations / per_second, per_second=per_second,
                          completed=completed, exits=2, reason=reason,
                          accelerated=per_second >= kvmapi.ACCELERATED_MIN_PER_SECOND, requested=iterations)


NESTED = NestedParams({"kvm_intel": ok("/sys/module/kvm_intel/parameters/nested", "Y\n"),
                       "kvm_amd": denied("/sys/module/kvm_amd/parameters/nested")})
PVM_MODULES = {"kvm": "loaded", "kvm_pvm": "loaded"}
INTEL_MODULES = {"kvm": "loaded", "kvm_intel": "loaded"}

ACCELERATION_CASES = [  # loop probe, modules, virt (None: must not be asked), status, cause key
    (KvmProbe("ok", LoopProbe(_loop(5e8), _loop(5e8), ["vmx"])), INTEL_MODULES, None, "pass", None),
    (KvmProbe("ok", LoopProbe(_loop(1e6), _loop(1e6), [])), PVM_MODULES, KVM_GUEST, "fail", "not-accelerated"),
    (KvmProbe("ok", LoopProbe(_loop(1e6), _loop(1e6), [])), INTEL_MODULES, BARE, "fail", "not-accelerated"),
    (KvmProbe("ok", LoopProbe(_loop(5e8), _loop(5e8, completed=False, reason="loop did not finish within 1.00 s "
                                                 "budget"), None)), INTEL_MODULES, None, "warn", "inconclusive"),
    (KvmProbe("ok", LoopProbe(_loop(1e6), _loop(1e6, completed=False, reason="KVM_EXIT_SHUTDOWN"), None)),
     INTEL_MODULES, None, "fail", "timing-guest-failed"),
    (KvmProbe("offline", root="captured"), INTEL_MODULES, None, "skip", None),
    (KvmProbe("error", error=KvmError(24, "EMFILE", "Too many open files", "ioctl")), INTEL_MODULES, None, "fail",
     None),
]


@pytest.mark.parametrize("probe,modules,virt,status,cause", ACCELERATION_CASES)
def test_acceleration_judge(probe, modules, virt, status, cause):
    out = acceleration.func(loop_run_probe=Later(lambda: probe), modules=modules, kvm_nested_params=NESTED,
                            host_vt_flags=("vmx",), virt_when_asked=Later(lambda: virt) if virt else never("virt"))
    assert out.status.value == status, out.summary
    if cause:
        assert out.cause == cause
    if probe.state == "ok":
        # the nested parameter that could be read, and not the denied one
        assert out.evidence["nested"] == {"kvm_intel": "Y"} and out.evidence["host_virt_flags"] == ["vmx"]
        assert out.evidence["provider"] == next(m for m in modules if m != "kvm")
    if status == "fail" and cause == "not-accelerated":
        assert list(out.caused_by) == ["cpu.virt-flags", "firmware.vt-enabled"]
        assert ("PVM" in out.detail) is ("kvm_pvm" in modules)


# --- iommu.enabled -------------------------------------------------------------------------------------------------
GROUPS = IommuGroups({"0": ("0000:00:00.0",), "1": ("0000:01:00.0", "0000:01:00.1")},
                     {"0000:00:00.0": 0x060000, "0000:01:00.0": 0x030000, "0000:01:00.1": 0x040300})
SHARED = IommuGroups({"1": ("0000:01:00.0", "0000:02:00.0")}, {"0000:01:00.0": 0x030000, "0000:02:00.0": 0x020000})
NO_GROUPS = IommuGroups({}, {})
LOADED = VfioPci(True, None)
NO_VFIO = VfioPci(False, "/lib/modules/6.1.0", builtin=ok("/lib/modules/6.1.0/modules.builtin", "kernel/x.ko\n"),
                  modules_dep=True)
TABLES = AcpiTables(True, frozenset({"DMAR", "IVRS", "IORT"}))
NO_TABLE = AcpiTables(True, frozenset())
NO_ACPI = AcpiTables(False, frozenset())
INTEL, AMD = cpu("GenuineIntel"), cpu("AuthenticAMD")

IOMMU_CASES = [  # name, facts that differ from the defaults, status, words of the summary
    ("no cpuinfo", {"cpuinfo": None}, "skip", "no /proc/cpuinfo in this root"),
    ("groups", {"iommu_groups": GROUPS}, "pass", "IOMMU active: 2 IOMMU groups, device assignment possible"),
    ("groups in a VM", {"iommu_groups": GROUPS, "virt": KVM_GUEST}, "pass", "a virtual IOMMU inside this KVM VM"),
    ("shared GPU", {"iommu_groups": SHARED}, "warn", "1 GPU(s) cannot be assigned alone"),
    ("no vfio-pci", {"iommu_groups": GROUPS, "vfio_pci": NO_VFIO}, "warn", "but vfio-pci is missing"),
    ("arm64", {"family": "arm64", "device_tree_iommus": Later(lambda: ("smmu@2b400000",))}, "skip",
     "arm64: no IOMMU groups"),
    ("s390", {"family": "s390"}, "skip", "s390: no IOMMU groups"),
    ("unknown vendor", {"cpuinfo": cpu("GenuineTMx86")}, "skip", "unknown x86 CPU vendor 'GenuineTMx86'"),
    ("VM without vIOMMU", {"virt": KVM_GUEST, "acpi_iommu_tables": NO_TABLE}, "skip", "has no virtual IOMMU"),
    ("no ACPI tables", {"acpi_iommu_tables": NO_ACPI}, "skip", "ACPI tables are not available in this root"),
    ("no DMAR", {"acpi_iommu_tables": NO_TABLE}, "warn", "no ACPI DMAR table"),
    ("intel_iommu=off", {"cmdline": parse_cmdline("ro intel_iommu=off"), "distro_family": "rhel"}, "warn",
     "Intel VT-d is in the firmware (ACPI DMAR) but not enabled in the kernel"),
    ("VT-d off by default", {"intel_iommu_default_on": Later(lambda: False)}, "warn", "not enabled in the kernel"),
    ("amd_iommu=off", {"cpuinfo": AMD, "cmdline": parse_cmdline("ro amd_iommu=off"), "intel_iommu_default_on":
                       never("CONFIG_INTEL_IOMMU_DEFAULT_ON")}, "warn", "disabled by amd_iommu=off"),
    ("AMD-Vi failed", {"cpuinfo": AMD, "intel_iommu_default_on": never("CONFIG_INTEL_IOMMU_DEFAULT_ON")}, "warn",
     "but the kernel did not enable it"),
]


def iommu_facts(**changed):
    facts = dict(cpuinfo=INTEL, family="x86", cmdline=parse_cmdline("ro quiet"), virt=BARE, iommu_units=(),
                 iommu_groups=NO_GROUPS, acpi_iommu_tables=TABLES, vfio_pci=LOADED,
                 device_tree_iommus=never("the device tree"), intel_iommu_default_on=Later(lambda: None),
                 distro_family="debian")
    facts.update(changed)
    return facts


@pytest.mark.parametrize("name,changed,status,words", IOMMU_CASES, ids=[c[0] for c in IOMMU_CASES])
def test_iommu_judge(name, changed, status, words):
    out = iommu_enabled.func(**iommu_facts(**changed))
    assert out.status.value == status and words in out.summary, out.summary
    if status == "warn":
        assert out.detail and out.remediation


def test_iommu_judge_fixes_follow_the_facts():
    out = iommu_enabled.func(**iommu_facts(cmdline=parse_cmdline("ro intel_iommu=off"), distro_family="rhel"))
    assert '--remove-args="intel_iommu=off" --args="intel_iommu=on"' in out.remediation
    out = iommu_enabled.func(**iommu_facts(intel_iommu_default_on=Later(lambda: False)))
    assert "CONFIG_INTEL_IOMMU_DEFAULT_ON is not set" in out.detail and "update-grub" in out.remediation
    out = iommu_enabled.func(**iommu_facts(iommu_groups=GROUPS, vfio_pci=VfioPci(
        False, "/lib/modules/6.1.0", builtin=denied("/lib/modules/6.1.0/modules.builtin"))))
    # a denied modules.builtin proves nothing either way: vfio-pci unknown, the groups still pass
    assert (out.status.value, out.evidence["vfio_pci"]) == ("pass", None)


# --- secure-guest.support --------------------------------------------------------------------------------------
def sev(**values):
    return ModuleParams("kvm_amd", {p: values.get(p, absent(f"/sys/module/kvm_amd/parameters/{p}"))
                                    for p in ("sev", "sev_es", "sev_snp")})


def tdx(readout):
    return ModuleParams("kvm_intel", {"tdx": readout})


SEV_Y = ok("/sys/module/kvm_amd/parameters/sev", "Y\n")
TDX_PATH = "/sys/module/kvm_intel/parameters/tdx"
AMD_SEV = "fpu lm sme sev"
TDX_LOG = KernelLog(parse_kernel_log("virt/tdx: module initialized\n"), ("/var/log/dmesg",))
NO_UV = Ultravisor(False, absent("/sys/firmware/uv/prot_virt_host"))
S390 = parse_cpuinfo("vendor_id       : IBM/S390\n# processors    : 2\nfacilities      : 0 1 2 158\n")

SECURE_CASES = [  # name, facts that differ, status, summary (start)
    ("no cpuinfo", {"cpuinfo": None}, "skip", "no /proc/cpuinfo in this root"),
    ("AMD without sev", {}, "pass", "no confidential-guest support: AMD SEV not available (optional)"),
    ("sev, no kvm_amd", {"x86_flags_first_cpu": frozenset(AMD_SEV.split()), "modules": {}}, "pass",
     "AMD SEV in the CPU; kvm_amd is not loaded"),
    ("sev, no parameter", {"x86_flags_first_cpu": frozenset(AMD_SEV.split())}, "pass",
     "AMD SEV in the CPU, but this kernel's KVM has no SEV support"),
    ("sev parameter denied", {"x86_flags_first_cpu": frozenset(AMD_SEV.split()),
                              "sev_params": sev(sev=denied("/sys/module/kvm_amd/parameters/sev"))}, "skip",
     "permission denied reading /sys/module/kvm_amd/parameters/sev"),
    ("sev=N", {"x86_flags_first_cpu": frozenset(AMD_SEV.split()),
               "sev_params": sev(sev=ok("/sys/module/kvm_amd/parameters/sev", "N\n"))}, "pass",
     "AMD SEV supported by the CPU but disabled in KVM (kvm_amd sev=N)"),
    ("sev=Y, no /dev/sev", {"x86_flags_first_cpu": frozenset(AMD_SEV.split()), "sev_params": sev(sev=SEV_Y)}, "pass",
     "AMD SEV enabled in KVM, but /dev/sev is missing"),
    ("sev ready", {"x86_flags_first_cpu": frozenset(AMD_SEV.split()), "sev_params": sev(sev=SEV_Y),
                   "sev_host": Later(lambda: SevHost(True, "sev 15\nsev_es 0\n"))}, "pass",
     "AMD SEV available to KVM (SEV-ES not in the CPU, SEV-SNP not in the CPU)"),
    ("Intel, no TDX", {"cpuinfo": cpu("GenuineIntel"), "modules": {"kvm_intel": "loaded"}}, "pass",
     "no confidential-guest support: Intel TDX not available (optional)"),
    ("TDX ready", {"cpuinfo": cpu("GenuineIntel"), "x86_flags_first_cpu": frozenset({"tdx_host_platform"}),
                   "tdx_param": tdx(ok(TDX_PATH, "Y\n")), "kernel_log": TDX_LOG}, "pass",
     "Intel TDX available to KVM (kvm_intel tdx=Y)"),
    ("TDX off", {"cpuinfo": cpu("GenuineIntel"), "x86_flags_first_cpu": frozenset({"tdx_host_platform"}),
                 "tdx_param": tdx(ok(TDX_PATH, "N\n")), "modules": {"kvm_intel": "loaded"}}, "pass",
     "Intel TDX enabled by the platform but disabled in KVM (kvm_intel tdx=N)"),
    ("TDX, no kvm_intel", {"cpuinfo": cpu("GenuineIntel"), "x86_flags_first_cpu": frozenset({"tdx_host_platform"}),
                           "modules": {}}, "pass", "Intel TDX enabled by the platform; kvm_intel is not loaded"),
    ("TDX, no parameter", {"cpuinfo": cpu("GenuineIntel"), "x86_flags_first_cpu": frozenset({"tdx_host_platform"}),
                           "modules": {"kvm_intel": "loaded"}}, "pass",
     "Intel TDX enabled by the platform, but this kernel's KVM has no TDX support"),
    ("TDX parameter denied", {"cpuinfo": cpu("GenuineIntel"), "x86_flags_first_cpu": frozenset({"tdx_host_platform"}),
                              "tdx_param": tdx(denied(TDX_PATH)), "modules": {"kvm_intel": "loaded"}}, "skip",
     f"permission denied reading {TDX_PATH}"),
    ("other vendor", {"cpuinfo": cpu("CentaurHauls")}, "pass",
     "no confidential-guest support known for CPU vendor 'CentaurHauls' (optional)"),
    ("s390 without uv", {"cpuinfo": S390, "family": "s390"}, "pass",
     "IBM Secure Execution in the machine, but not supported by this kernel (no /sys/firmware/uv)"),
    ("s390 prot_virt_host", {"cpuinfo": S390, "family": "s390", "ultravisor": Ultravisor(
        True, ok("/sys/firmware/uv/prot_virt_host", "1\n"))}, "pass", "IBM Secure Execution available"),
    ("s390 prot_virt_host denied, prot_virt=1", {"cpuinfo": S390, "family": "s390", "ultravisor": Ultravisor(
        True, denied("/sys/firmware/uv/prot_virt_host")), "cmdline": parse_cmdline("prot_virt=1")}, "pass",
     "IBM Secure Execution available"),
    ("arm64", {"cpuinfo": parse_cpuinfo("processor\t: 0\nCPU architecture: 8\n"), "family": "arm64"}, "skip",
     "confidential guests are not probed on arm64"),
]


def secure_facts(**changed):
    amd = "cpuinfo" not in changed or changed["cpuinfo"] is AMD
    facts = dict(cpuinfo=AMD, family="x86", virt=BARE, x86_flags_first_cpu=frozenset({"fpu", "lm"}),
                 modules={"kvm_amd": "loaded"}, sev_params=sev(),
                 sev_host=Later(lambda: SevHost(False, None)) if amd else never("/dev/sev and misc.capacity"),
                 tdx_param=tdx(absent(TDX_PATH)), kernel_log=KernelLog(parse_kernel_log(""), ()),
                 ultravisor=NO_UV, cmdline=None)
    facts.update(changed)
    return facts


@pytest.mark.parametrize("name,changed,status,summary", SECURE_CASES, ids=[c[0] for c in SECURE_CASES])
def test_secure_guest_judge(name, changed, status, summary):
    out = secure_guest_support.func(**secure_facts(**changed))
    assert (out.status.value, out.summary[:len(summary)]) == (status, summary)
    assert out.status.value in ("pass", "skip")  # confidential guests are optional: never a warning


# --- the facts on captured roots ---------------------------------------------------------------------------------
FACT_MODULES = "import kvmcheck.facts.guest, kvmcheck.facts.iommu, kvmcheck.facts.secure_guest"


def fact_as(root, name: str, expr: str, nobody: bool = True):
    """expr of the fact NAME (as v) gathered on root, run as nobody (or as root), through JSON."""
    code = (f"import json, sys; {FACT_MODULES}\nfrom kvmcheck.core.host import Host\nfrom kvmcheck.facts import Facts\n"
            f"try:\n    v = Facts(Host(sys.argv[1])).get({name!r}); print(json.dumps({expr}))\n"
            "except OSError as exc:\n    print(json.dumps(['raised', type(exc).__name__, exc.filename]))")
    argv = [sys.executable, "-c", code, str(root)]
    proc = subprocess.run(as_nobody(argv) if nobody else argv, capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def check_as_nobody(root, check_id: str) -> dict:
    argv = as_nobody([sys.executable, "-c", "from kvmcheck.cli import main; main()", "check", "--root", str(root),
                      "--only", check_id, "--format", "json"])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    assert "Traceback" not in proc.stderr, proc.stderr
    [result] = json.loads(proc.stdout)["checks"]
    return result


def test_sev_params_keep_denied_apart_from_absent(public_tmp):
    root = materialize("sev-enabled", public_tmp)
    (root / "sys/module/kvm_amd/parameters/sev").chmod(0)
    states = "{p: r.state for p, r in v.readouts.items()}"
    assert fact_as(root, "sev_params", states) == {"sev": "denied", "sev_es": "ok", "sev_snp": "absent"}
    assert fact_as(root, "sev_params", states, nobody=False) == {"sev": "ok", "sev_es": "ok", "sev_snp": "absent"}
    result = check_as_nobody(root, "secure-guest.support")
    assert (result["id"], result["status"]) == ("secure-guest.support", "skip")
    assert result["summary"] == "permission denied reading /sys/module/kvm_amd/parameters/sev"


def test_tdx_param_denied_is_no_missing_tdx_support(public_tmp):
    root = materialize("tdx-enabled", public_tmp)
    (root / "sys/module/kvm_intel/parameters/tdx").chmod(0)
    assert fact_as(root, "tdx_param", "v.readouts['tdx'].state") == "denied"
    result = check_as_nobody(root, "secure-guest.support")
    assert (result["id"], result["status"], result["summary"]) == (
        "secure-guest.support", "skip", "permission denied reading /sys/module/kvm_intel/parameters/tdx")
    (root / "sys/module/kvm_intel/parameters/tdx").unlink()
    assert fact_as(root, "tdx_param", "v.readouts['tdx'].state") == "absent"


def test_sev_host_is_asked_on_amd_hosts_only(public_tmp):
    """misc.capacity unreadable: the AMD host's check skips naming it, as it always did (the OSError reaches
    the runner); an Intel host never reads it (sev_host is a Later)."""
    amd = materialize("sev-enabled", public_tmp)
    (amd / "sys/fs/cgroup/misc.capacity").chmod(0)
    assert fact_as(amd, "sev_host", "v.get()") == ["raised", "PermissionError", "/sys/fs/cgroup/misc.capacity"]
    result = check_as_nobody(amd, "secure-guest.support")
    assert (result["status"], result["summary"]) == ("skip", "permission denied reading /sys/fs/cgroup/misc.capacity")
    intel = materialize("tdx-enabled", public_tmp)
    (intel / "sys/fs/cgroup").mkdir(parents=True)
    (intel / "sys/fs/cgroup/misc.capacity").write_text("sev 15\n")
    (intel / "sys/fs/cgroup/misc.capacity").chmod(0)
    result = check_as_nobody(intel, "secure-guest.support")
    assert (result["status"], result["summary"]) == ("pass", "Intel TDX available to KVM (kvm_intel tdx=Y)")


def test_ultravisor_keeps_denied_apart_from_absent(public_tmp):
    root = materialize("s390x-lpar", public_tmp)
    uv = root / "sys/firmware/uv"
    uv.mkdir(parents=True)
    expr = "[v.present, v.prot_virt_host.state]"
    assert fact_as(root, "ultravisor", expr) == [True, "absent"]
    (uv / "prot_virt_host").write_text("1\n")
    (uv / "prot_virt_host").chmod(0)
    assert fact_as(root, "ultravisor", expr) == [True, "denied"]
    assert fact_as(root, "ultravisor", expr, nobody=False) == [True, "ok"]


def test_nested_params_keep_denied_apart_from_absent(public_tmp):
    root = materialize("sev-enabled", public_tmp)
    (root / "sys/module/kvm_amd/parameters/nested").chmod(0)
    expr = "[{m: r.state for m, r in v.readouts.items()}, v.values()]"
    assert fact_as(root, "kvm_nested_params", expr) == [{"kvm_intel": "absent", "kvm_amd": "denied"}, {}]
    assert fact_as(root, "kvm_nested_params", expr, nobody=False) == [
        {"kvm_intel": "absent", "kvm_amd": "ok"}, {"kvm_amd": "1"}]


def test_vfio_pci_keeps_a_denied_modules_builtin(public_tmp):
    root = materialize("iommu-intel-gpu-isolated", public_tmp)
    shutil.rmtree(root / "sys/module/vfio_pci")
    release = (root / "proc/sys/kernel/osrelease").read_text().strip()
    mods = root / "lib/modules" / release
    mods.mkdir(parents=True, exist_ok=True)
    (mods / "modules.builtin").write_text("kernel/drivers/vfio/pci/vfio-pci.ko\n")
    expr = "[v.loaded, v.modules_dir, v.builtin.state, v.builtin_text]"
    assert fact_as(root, "vfio_pci", expr) == [False, f"/lib/modules/{release}", "ok",
                                               "kernel/drivers/vfio/pci/vfio-pci.ko\n"]
    (mods / "modules.builtin").chmod(0)
    assert fact_as(root, "vfio_pci", expr) == [False, f"/lib/modules/{release}", "denied", ""]


def test_iommu_groups_denied_is_no_absence_of_groups(public_tmp):
    """An unlistable /sys/kernel/iommu_groups propagates (the runner names it), never 'no IOMMU groups'."""
    root = materialize("iommu-intel-gpu-isolated", public_tmp)
    groups = root / "sys/kernel/iommu_groups"
    assert fact_as(root, "iommu_groups", "len(v.groups)") == 6
    groups.chmod(0)
    try:
        assert fact_as(root, "iommu_groups", "len(v.groups)") == ["raised", "PermissionError",
                                                                  "/sys/kernel/iommu_groups"]
        result = check_as_nobody(root, "iommu.enabled")
        assert (result["status"], result["summary"]) == ("skip", "permission denied reading /sys/kernel/iommu_groups")
    finally:
        groups.chmod(0o755)


def test_guest_probes_never_open_an_offline_roots_device(tmp_path):
    root = materialize("pvm-host", tmp_path)
    assert (root / "dev/kvm").is_char_device()
    host = Host(str(root), label="pvm-host")
    facts = Facts(host)
    for name in ("guest_run_probe", "loop_run_probe"):
        assert facts.get(name).get() == KvmProbe("offline", root="pvm-host")
    assert "/dev/kvm" not in host.reads


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="/dev/kvm absent")
def test_guest_probe_as_nobody_is_denied_at_open():
    if os.stat("/dev/kvm").st_mode & 0o006:
        pytest.skip("/dev/kvm is world read/write here; nobody can open it")
    assert fact_as("/", "guest_run_probe", "[v.get().state, v.get().error.name, v.get().error.stage]") == [
        "error", "EACCES", "open"]
