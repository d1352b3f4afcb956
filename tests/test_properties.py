"""Property tests (hypothesis) for every parser in kvmcheck/parsers/ (issue 9).

Each public parser gets arbitrary text (NULs and control characters included),
text decoded from arbitrary bytes the way Host.read_text decodes files
(UTF-8, errors="replace"), and "structured-ish" text: real-looking lines of its
format, mutated, so that hypothesis gets past the first line.  Contract: the
parser returns its documented type or raises only its documented error
(ParseError, for the few that document one); where cheap, the tests also check
invariants of the result.  Huge lines and files are in explicit cases at the
end (each must parse in well under a second), not in every generated example.

The example count comes from the hypothesis profile in conftest.py ("ci", the
default: 3000 per test; HYPOTHESIS_PROFILE=dev for a quick run).
"""
from __future__ import annotations

import ipaddress
import re
import struct
import time
from typing import Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kvmcheck.parsers import ParseError
from kvmcheck.parsers import accounts, cgroups, cmdline, cpuinfo, cpulist, hypervisor, iommu, kconfig
from kvmcheck.parsers import kernel_log, kernel_version, libvirt_xml, meminfo, modprobe, mounts, msr
from kvmcheck.parsers import netroute, pkgdb, repos, vulnerabilities
from kvmcheck.parsers import container, posix_acl, qemu_stack, security_conf, sysctl

# --- input strategies ---------------------------------------------------------------------------------------

# Decoded text never holds surrogates; everything else, NUL and the other line breaks of
# str.splitlines (\x0b \x0c \x1c-\x1e \x85 \u2028 \u2029) included, can come out of a file.
CHARS = st.characters(exclude_categories=("Cs",))
ARBITRARY = st.text(CHARS, max_size=400)
DECODED = st.binary(max_size=400).map(lambda b: b.decode("utf-8", errors="replace"))
# Characters that matter to some parser somewhere, so that short random strings hit separators.
SPECIAL = list(" \t:=#;,\"'\\/-_.[]<>()&!+*?|{}$\x00\r\x0b\x1c\x85\u2028\ufffd\u00b2\u0663\uff15")
TOKEN = st.text(st.one_of(st.sampled_from(SPECIAL), st.sampled_from("0123456789abcdefxyzABCDEFKMV")),
                max_size=10)
WORD = st.text(st.sampled_from("abcdefghklmnopqrstuvwxyz0123456789_-."), min_size=1, max_size=10)
NUMBER = st.one_of(st.integers(0, 70000).map(str), st.sampled_from(["-1", "+1", "1_000", "0x10", "", "9" * 30,
                                                                    "\u0663", "\u00b2", "1e3", " 1", "0" * 8]))
EOL = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r", "\x00", "\x0b", "\u2028"])


def lines(*line_strategies: st.SearchStrategy, max_lines: int = 12) -> st.SearchStrategy:
    """Text made of the given kinds of lines, mixed with noise lines, joined by assorted line breaks."""
    one = st.one_of(*line_strategies, TOKEN, st.just(""), st.just("#"), ARBITRARY.map(lambda s: s[:40]))
    return st.tuples(st.lists(one, max_size=max_lines), EOL, st.booleans()).map(
        lambda t: t[1].join(t[0]) + (t[1] if t[2] else ""))


def words(*choices: str, extra: st.SearchStrategy = TOKEN, max_size: int = 6) -> st.SearchStrategy:
    return st.lists(st.one_of(st.sampled_from(choices), extra), max_size=max_size)


def joined(parts: st.SearchStrategy, seps=(" ", "\t", "  ", "")) -> st.SearchStrategy:
    return st.tuples(parts, st.sampled_from(seps)).map(lambda t: t[1].join(t[0]))


def texts(structured: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly structured, sometimes arbitrary or decoded-bytes text."""
    return st.one_of(structured, structured, ARBITRARY, DECODED)


def call(fn: Callable, *args, raises: Tuple[type, ...] = ()):
    """fn(*args); None when it raised one of its documented errors, which must then say why."""
    try:
        return fn(*args)
    except raises as exc:
        assert str(exc), f"{fn.__name__} raised {type(exc).__name__} without a message"
        return None


# --- every text parser on arbitrary text --------------------------------------------------------------------
# name -> (function, the documented errors, the type of the result)
TEXT_PARSERS: Dict[str, Tuple[Callable[[str], object], Tuple[type, ...], type]] = {
    "parse_passwd": (accounts.parse_passwd, (), list),
    "parse_group": (accounts.parse_group, (), dict),
    "parse_cgroup_mounts": (cgroups.parse_cgroup_mounts, (), cgroups.CgroupLayout),
    "parse_proc_cgroups": (cgroups.parse_proc_cgroups, (), dict),
    "parse_controller_list": (cgroups.parse_controller_list, (), tuple),
    "parse_proc_self_cgroup": (cgroups.parse_proc_self_cgroup, (), list),
    "parse_cmdline": (cmdline.parse_cmdline, (), cmdline.KernelCmdline),
    "parse_cpuinfo": (cpuinfo.parse_cpuinfo, (), cpuinfo.CpuInfo),
    "riscv_extensions": (cpuinfo.riscv_extensions, (), frozenset),
    "parse_cpulist": (cpulist.parse_cpulist, (ParseError,), tuple),
    "sysinfo_hypervisor": (hypervisor.sysinfo_hypervisor, (), (str, type(None))),
    "pci_slot": (iommu.pci_slot, (), (str, type(None))),
    "parse_pci_class": (iommu.parse_pci_class, (), (int, type(None))),
    "parse_kconfig": (kconfig.parse_kconfig, (), kconfig.KConfig),
    "parse_kernel_log": (kernel_log.parse_kernel_log, (), kernel_log.KernelLogFacts),
    "parse_kernel_release": (kernel_version.parse_kernel_release, (ParseError,), kernel_version.KernelVersion),
    "parse_min_version": (kernel_version.parse_min_version, (ParseError,), tuple),
    "parse_network_xml": (libvirt_xml.parse_network_xml, (ParseError,), libvirt_xml.LibvirtNetwork),
    "parse_meminfo": (meminfo.parse_meminfo, (ParseError,), meminfo.MemInfo),
    "normalize": (modprobe.normalize, (), str),
    "parse_modprobe_conf": (modprobe.parse_modprobe_conf, (), list),
    "parse_modules_builtin": (modprobe.parse_modules_builtin, (), frozenset),
    "parse_proc_modules": (modprobe.parse_proc_modules, (), dict),
    "parse_modules_dep": (modprobe.parse_modules_dep, (), list),
    "unescape": (mounts.unescape, (), str),
    "parse_mounts": (mounts.parse_mounts, (), list),
    "parse_mountinfo": (mounts.parse_mountinfo, (), list),
    "parse_proc_net_route": (netroute.parse_proc_net_route, (ParseError,), list),
    "parse_dpkg_status": (pkgdb.parse_dpkg_status, (), dict),
    "parse_rpm_qa": (pkgdb.parse_rpm_qa, (), dict),
    "parse_dnf_repo": (repos.parse_dnf_repo, (), list),
    "parse_zypper_repo": (repos.parse_zypper_repo, (), list),
    "parse_apt_list": (repos.parse_apt_list, (), list),
    "parse_apt_sources": (repos.parse_apt_sources, (), list),
    "parse_vulnerability": (lambda text: vulnerabilities.parse_vulnerability("x", text), (),
                            vulnerabilities.Vulnerability),
    "parse_qemu_conf_identity": (qemu_stack.parse_qemu_conf_identity, (), dict),
    "parse_qemu_conf_defaults": (qemu_stack.parse_qemu_conf_defaults, (), dict),
    "parse_qmp": (qemu_stack.parse_qmp, (), qemu_stack.QmpAnswers),
    "kvm_guest_arches": (qemu_stack.kvm_guest_arches, (ParseError,), list),
    "domcaps_kvm": (qemu_stack.domcaps_kvm, (ParseError,), dict),
    "parse_net_list": (qemu_stack.parse_net_list, (), list),
    "pool_target": (qemu_stack.pool_target, (ParseError,), (str, type(None))),
    "detect_container": (lambda text: container.detect_container(text, text), (), container.ContainerFacts),
    "parse_modprobe_options": (modprobe.parse_modprobe_options, (), list),
    "parse_sysctl_conf": (sysctl.parse_sysctl_conf, (), list),
    "parse_libvirt_conf": (lambda text: security_conf.parse_libvirt_conf(text, ("security_driver", "user")), (), dict),
    "parse_selinux_config": (security_conf.parse_selinux_config, (), dict),
}


def check_contract(text: str) -> None:
    for name, (fn, errors, kind) in TEXT_PARSERS.items():
        result = call(fn, text, raises=errors)
        assert result is None and errors or isinstance(result, kind), (name, result)


@given(st.one_of(ARBITRARY, st.text(st.sampled_from(SPECIAL + list("0123456789abcdefx\n")), max_size=200)))
@example("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\neth0\t0x000000\t00000000\t0003\t0\t0\t0\t00000000\n")
@example("1" * 5000 + ".0")  # kernel release: int() refused the digits with a plain ValueError
@example("1" * 5000)  # cpulist: the same
def test_every_parser_on_arbitrary_text(text):
    check_contract(text)


@given(DECODED)
def test_every_parser_on_decoded_bytes(text):
    check_contract(text)


# --- per parser: structured input and invariants ------------------------------------------------------------

CPUINFO_KEYS = ["processor", "flags", "Features", "features", "isa", "hart isa", "vendor_id", "model name",
                "processor 0", "cpu family", "BogoMIPS", "CPU implementer", "State"]
FLAG_WORDS = words("vmx", "svm", "hypervisor", "lm", "sse2", "ept", "npt", "rv64imafdch_zicsr", "h", "0", "1")
CPUINFO_LINE = st.builds(lambda k, pad, sep, v: f"{k}{pad}{sep}{v}",
                         st.one_of(st.sampled_from(CPUINFO_KEYS), TOKEN), st.sampled_from(["\t", " ", "", "\t\t "]),
                         st.sampled_from([": ", ":", " : ", "::"]), joined(FLAG_WORDS))


def check_cpuinfo(text):
    info = cpuinfo.parse_cpuinfo(text)
    assert len(info.entries) <= len(text.splitlines())
    for key, value in info.entries:
        assert key and key == key.strip() and key == key.lower() and not re.search(r"\s\s|[^\S ]", key)
        assert value == value.strip() and ":" not in key
    for flags in info.x86_flags + info.word_sets("features", "isa"):
        assert all(isinstance(w, str) and w and not any(c.isspace() for c in w) for w in flags)
    assert 0 <= info.cpu_count <= len(info.entries)
    assert info.all_have("vmx", "flags") in (True, False, None)
    assert isinstance(info.any_has("svm", "flags"), bool)
    assert isinstance(info.x86_32bit_kernel, bool)
    assert all(len(v) == 2 and v == v.upper() for v in info.s390_versions)
    for isa in info.values("isa") + [text]:
        ext = cpuinfo.riscv_extensions(isa)
        assert ext <= set(isa.lower()) | set("imafd") and all(len(e) == 1 and "a" <= e <= "z" for e in ext)


CPU_ITEM = st.one_of(
    st.integers(0, 300).map(str),
    st.tuples(st.integers(0, 300), st.integers(0, 300)).map(lambda t: f"{min(t)}-{max(t)}"),
    st.tuples(st.integers(0, 300), st.integers(0, 300), st.integers(0, 9), st.integers(0, 9)).map(
        lambda t: f"{min(t[:2])}-{max(t[:2])}:{t[2]}/{t[3]}"),
    st.sampled_from(["", " ", "65535", "65536", "0-65535", "3-1", "a", "0-", "-1", "1:2/3", "0-3:0/2", "\u0663"]),
)
CPULIST = st.tuples(st.lists(CPU_ITEM, max_size=8), st.sampled_from([",", ", ", ",,"]),
                    st.sampled_from(["", "\n", " "])).map(lambda t: t[1].join(t[0]) + t[2])


def slow_cpulist(text: str) -> Tuple[int, ...]:
    """The definition, one CPU at a time (for small lists only)."""
    cpus = set()
    for item in filter(None, (i.strip() for i in text.strip().split(","))):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+)/(\d+))?)?", item)
        first = int(m.group(1))
        last = int(m.group(2) or first)
        used, group = (int(m.group(3)), int(m.group(4))) if m.group(3) else (1, 1)
        cpus.update(c for c in range(first, last + 1) if (c - first) % group < used)
    return tuple(sorted(cpus))


def check_cpulist(text):
    cpus = call(cpulist.parse_cpulist, text, raises=(ParseError,))
    if cpus is None:
        return
    assert list(cpus) == sorted(set(cpus)) and all(isinstance(c, int) and 0 <= c < cpulist.MAX_CPUS for c in cpus)
    assert cpulist.parse_cpulist(cpulist.format_cpulist(cpus)) == cpus
    if len(text) < 200:
        assert cpus == slow_cpulist(text)


def check_format_cpulist_round_trips(cpus):
    text = cpulist.format_cpulist(cpus)
    assert cpulist.parse_cpulist(text) == tuple(sorted(cpus))
    assert text.count(",") < max(len(cpus), 1)


RELEASE = st.builds(
    lambda a, b, c, extra: f"{a}.{b}{c}{extra}",
    st.integers(0, 99), st.integers(0, 999), st.one_of(st.just(""), st.integers(0, 999).map(".{}".format)),
    st.one_of(st.sampled_from(["", "-427.13.1.el9_4.x86_64", "-fc-v669", "-419.el5PAE", "-18-amd64", "-18-686-pae",
                               "-19041-Microsoft", "-rc3", ".aarch64", "-ppc64le", "+", "-s390x.", "\n", " x"]),
              TOKEN))


def check_kernel_release(text):
    kv = call(kernel_version.parse_kernel_release, text, raises=(ParseError,))
    if kv is None:
        with pytest.raises(ParseError):
            kernel_version.parse_min_version(text)
        return
    assert kv.release == text.strip() and kv.release.endswith(kv.extra)
    assert len(kv.version) == 3 and all(isinstance(n, int) and n >= 0 for n in kv.version)
    assert kernel_version.parse_kernel_release(str(kv)).version == kv.version
    assert kernel_version.parse_min_version(text) == kv.version
    hint = kv.arch_hint
    assert hint is None or (hint[0] in ("x86_64", "aarch64", "ppc64", "s390x", "i686") and hint[1] in (32, 64))


KMSG = st.sampled_from(["6,123,456789,-;", "4,1,2,-,caller=T1;", "[    0.021044] ", "Jan  1 00:00:00 host kernel: ",
                        "kernel: ", "1,2,3,4;", "[ 1.2]", ""])
KLOG_MSG = st.sampled_from([
    "VMX (outside TXT) disabled by BIOS", "VMX (inside TXT) disabled by BIOS", "kvm: disabled by bios",
    "VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL", "SVM is disabled (by BIOS)", "Hypervisor detected: KVM",
    "Hypervisor detected: ", "virt/tdx: module initialized", "virt/tdx: ", "SVM not supported by CPU"])
KLOG_LINE = st.builds(lambda p, m, t: p + m + t, KMSG, KLOG_MSG, st.one_of(st.just(""), TOKEN))


def check_kernel_log(text):
    facts = kernel_log.parse_kernel_log(text)
    assert len(set(facts.firmware_disabled)) == len(facts.firmware_disabled)
    assert len(set(facts.tdx)) == len(facts.tdx)
    for msg in facts.firmware_disabled:
        assert msg == msg.strip() and any(rx.search(msg) for rx in kernel_log.FIRMWARE_DISABLED)
    for msg in facts.tdx:
        assert "virt/tdx: " in msg
    assert facts.hypervisor is None or (isinstance(facts.hypervisor, str) and "\n" not in facts.hypervisor)


def kernel_log_reference(text):
    """parse_kernel_log without its substring filter: every line taken apart and searched."""
    disabled, tdx, hypervisor = {}, {}, None
    for raw in text.splitlines():
        msg = kernel_log._message(raw).strip()
        if any(rx.search(msg) for rx in kernel_log.FIRMWARE_DISABLED):
            disabled.setdefault(msg)
        m = kernel_log._HYPERVISOR.search(msg)
        if m:
            hypervisor = m.group(1).strip()
        m = kernel_log._TDX.search(msg)
        if m:
            tdx.setdefault(m.group(0).strip())
    return kernel_log.KernelLogFacts(tuple(disabled), hypervisor, tuple(tdx))


@given(texts(lines(KLOG_LINE, st.builds(lambda p, m: p + m, KMSG, st.sampled_from(
    ["KVM: DISABLED BY BIOS", "svm Disabled (By Bios)", "Hypervisor Detected: KVM", "virt/TDX: x", "BIOS-e820: usable"])),
    max_lines=20)))
def test_kernel_log_filter_answers_as_the_reference(text):
    assert kernel_log.parse_kernel_log(text) == kernel_log_reference(text)


MODPROBE_LINE = joined(words("blacklist", "install", "options", "alias", "kvm-intel", "kvm_amd", "/bin/false",
                             "/bin/true", "false", "exit", "1", "#", "\\"))
MODPATH = st.builds(lambda d, n, ext, rest: f"kernel/{d}/{n}{ext}{rest}", WORD, WORD,
                    st.sampled_from([".ko", ".ko.xz", ".ko.zst", "", ".k"]),
                    st.sampled_from(["", ":", ": kernel/x/y.ko", " "]))
PROC_MODULE = joined(st.tuples(WORD, NUMBER, NUMBER, st.sampled_from(["-", "kvm_intel,", "[permanent],", "a,,b"]),
                               st.sampled_from(["Live", ""]), st.just("0x0")).map(list))


def check_modprobe(text):
    nlines = len(text.splitlines())
    blocks = modprobe.parse_modprobe_conf(text)
    assert [b.line for b in blocks] == sorted(b.line for b in blocks)
    for b in blocks:
        assert 1 <= b.line <= nlines and "-" not in b.module and b.module == b.module.strip()
        assert b.how == "blacklist" or b.how.startswith("install ")
    for names in (modprobe.parse_modules_builtin(text), modprobe.parse_modules_dep(text)):
        assert all(isinstance(n, str) and "-" not in n and "/" not in n for n in names)
    for name, users in modprobe.parse_proc_modules(text).items():
        assert "-" not in name and name and all(u and u != "-" and not u.startswith("[") for u in users)


def kernel_escape(field: str) -> str:
    """What the kernel writes for a field of the mount table (fs/proc_namespace.c mangle: ' \\t\\n\\\\')."""
    return "".join({" ": "\\040", "\t": "\\011", "\n": "\\012", "\\": "\\134"}.get(c, c) for c in field)


MOUNT_FIELD = st.lists(st.one_of(st.sampled_from(["\\040", "\\011", "\\134", "\\777", "\\0", "\\", "/", ".", "..",
                                                  "//", ",", "=", "a", "b"]), st.sampled_from(SPECIAL)),
                       min_size=1, max_size=5).map(lambda p: "".join(p).replace(" ", "").replace("\t", "") or "x")
MOUNT_LINE = joined(st.tuples(MOUNT_FIELD, MOUNT_FIELD.map("/{}".format),
                              st.sampled_from(["ext4", "nfs", "cgroup", "cgroup2", "xfs", "fuse.ceph"]),
                              st.one_of(st.sampled_from(["rw,relatime", "ro,name=systemd,cpu,memory", "defaults",
                                                         "rw,nosuid,cpuset,hugetlb", ",,"]), MOUNT_FIELD),
                              st.sampled_from(["0", ""]), st.sampled_from(["0", ""])).map(list),
                    seps=(" ", "\t", "  "))
MOUNTINFO_LINE = joined(st.lists(st.one_of(st.sampled_from(["36", "35", "98:0", "/", "/mnt", "rw,noatime",
                                                           "master:1", "shared:2", "-", "ext3", "/dev/root",
                                                           "rw,errors=continue", "cgroup2"]), MOUNT_FIELD),
                                 min_size=5, max_size=9))


def check_mounts(text):
    nlines = len(text.splitlines())
    for table in (mounts.parse_mounts(text), mounts.parse_mountinfo(text)):
        assert [m.line for m in table] == sorted(m.line for m in table)
        for m in table:
            assert 1 <= m.line <= nlines and all(o and "," not in o for o in m.options)
            if m.target.startswith("/"):
                assert "//" not in m.target and "/./" not in m.target + "/" and (m.target == "/" or
                                                                                  not m.target.endswith("/"))
            assert m.shared_kind is None or m.shared_kind in mounts.SHARED_FSTYPES.values()
            assert m.option("name") is None or isinstance(m.option("name"), str)
        top = mounts.top_mounts(table)
        assert len({m.target for m in top}) == len(top) and {m.target for m in top} == {m.target for m in table}
        for path in ("/", "/var/lib/libvirt/images", "relative", "/sys/fs/cgroup/cpu"):
            best = mounts.backing_mount(table, path)
            assert best is None or (best in table and best.target.startswith("/"))
        layout = cgroups.cgroup_layout(table)
        assert all(m.version == 1 for m in layout.v1) and all(m.version == 2 for m in layout.v2)
        assert all(set(m.controllers) <= cgroups.V1_CONTROLLERS for m in layout.v1)
        assert set(layout.v1_controllers()) <= cgroups.V1_CONTROLLERS
    assert cgroups.parse_cgroup_mounts(text) == cgroups.cgroup_layout(mounts.parse_mounts(text, comments=False))


def check_mount_fields_round_trip(source, name):
    """A mount point as the kernel escapes it comes back as it was: no raw "\\040" left, no double unescaping."""
    target = "/" + "/".join(p for p in name.split("/") if p and p != ".") if name.strip("/") else "/"
    if source.startswith("#"):
        return  # the kernel does not escape '#', but parse_mounts also reads fstab, where it starts a comment
    line = f"{kernel_escape(source)} {kernel_escape(target)} ext4 rw 0 0"
    if any(c.isspace() for c in kernel_escape(source)):
        return  # other whitespace (\x1c, \u2028 ...) is not escaped by the kernel and splits lines or fields
    table = mounts.parse_mounts(line)
    assert [(m.source, m.target) for m in table] == [(source, target)]
    assert mounts.unescape(kernel_escape(name)) == name
    assert len(mounts.unescape(name)) <= len(name)


CGROUP_ROW = joined(st.tuples(st.sampled_from(["cpu", "memory", "#subsys_name", "pids"]), NUMBER, NUMBER,
                              st.sampled_from(["1", "0", ""])).map(list))
SELF_CGROUP = st.builds(lambda a, b, c: f"{a}:{b}:{c}", NUMBER, st.sampled_from(["", "cpu,cpuacct", "name=systemd",
                                                                                 ",,"]),
                        st.sampled_from(["/", "/user.slice", "/a:b", ""]))


def check_cgroup_files(text):
    for name, row in cgroups.parse_proc_cgroups(text).items():
        assert row.name == name and not name.startswith("#") and isinstance(row.hierarchy, int)
    ctrl = cgroups.parse_controller_list(text)
    assert all(c and not any(ch.isspace() for ch in c) for c in ctrl)
    for m in cgroups.parse_proc_self_cgroup(text):
        assert isinstance(m.hierarchy, int) and all(m.controllers) and isinstance(m.path, str)


PASSWD_LINE = st.builds(lambda f: ":".join(f), st.lists(st.one_of(NUMBER, WORD, st.just("/bin/bash"), TOKEN),
                                                        min_size=3, max_size=8))


def check_accounts(text):
    for user in accounts.parse_passwd(text):
        assert isinstance(user.uid, int) and isinstance(user.gid, int) and user.shell == user.shell.strip()
    for gid, group in accounts.parse_group(text).items():
        assert group.gid == gid and all(m and m == m.strip() and "," not in m for m in group.members)


CMD_WORD = st.one_of(
    st.builds(lambda n, v: f"{n}={v}", st.sampled_from(["intel_iommu", "amd-iommu", "iommu", "iommu.passthrough",
                                                        "modprobe.blacklist", "isolcpus", "kvm-intel.nested"]),
              st.sampled_from(["on", "off", "pt", "nopt", "1", "0", "sm_on,igfx_off", "force", "", "y", "kvm,kvm_amd",
                               '"a b"', "x=y"])),
    st.sampled_from(["--", '"', "quiet", "=", "=x", '"a=b c"', "ro"]), TOKEN)


def check_cmdline_and_iommu(text):
    cl = cmdline.parse_cmdline(text)
    for name, value in cl.params:
        assert name and "=" not in name and '"' not in name and "\x00" not in name
        assert value is None or ('"' not in value and "\x00" not in value)
    assert all(w and '"' not in w for w in cl.init_args) or "" in cl.init_args
    for name, _ in cl.params[:3]:
        assert cl.has(name) and cl.get_all(name) and all(v for v in cl.list_values(name))
    opts = iommu.iommu_options(cl)
    assert opts.intel_iommu in (True, False, None) and opts.passthrough in (True, False, None)
    assert not (opts.amd_iommu_off and opts.amd_iommu_on)
    assert len(opts.given) <= len(cl.params)
    assert opts.disabled_by("DMAR") in (None, "iommu=off", "intel_iommu=off")


def check_cmdline_round_trip(params, init):
    text = " ".join(n if v is None else f'{n}="{v}"' for n, v in params)
    parsed = cmdline.parse_cmdline(" ".join([text, "--"] + init) if init else text)
    assert parsed.params == tuple(params) and parsed.init_args == tuple(init)


KCONFIG_LINE = st.one_of(
    st.builds(lambda n, v: f"CONFIG_{n}={v}", st.sampled_from(["KVM", "KVM_INTEL", "X", "a_1"]),
              st.one_of(st.sampled_from(["y", "m", "n", "123", '"str"', '"a\\"b"', '"', '""', "0x10"]), TOKEN)),
    st.builds(lambda n, pad: f"#{pad}CONFIG_{n} is not set", st.sampled_from(["KVM", "X"]),
              st.sampled_from([" ", "", "\t"])))


def check_kconfig(text):
    cfg = kconfig.parse_kconfig(text)
    assert bool(cfg) == bool(cfg.options)
    for name, value in cfg.options.items():
        assert re.fullmatch(r"CONFIG_[A-Za-z0-9_]+", name) and isinstance(value, str)
        assert cfg.get(name[7:]) == value and cfg.enabled(name) == (value in ("y", "m"))


MEMINFO_LINE = st.builds(lambda k, pad, n, u: f"{k}:{pad}{n}{u}",
                         st.sampled_from(["MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal",
                                          "HugePages_Total", " ", "Mem Total"]),
                         st.sampled_from(["", " ", "       "]), NUMBER, st.sampled_from([" kB", "", " MB", " kb", " x",
                                                                                     " kB extra"]))


def check_meminfo(text):
    info = call(meminfo.parse_meminfo, text, raises=(ParseError,))
    if info is None:
        return
    assert all(isinstance(v, int) and v >= 0 and k == k.strip() and k for k, v in info.fields.items())
    assert info.total >= 0 and info.available >= 0 and isinstance(info.available_estimated, bool)
    assert info.swap_total >= 0 and info.swap_free >= 0


VULN = st.builds(lambda a, b: a + b, st.sampled_from([
    "Not affected", "Vulnerable", "Vulnerable: Clear CPU buffers attempted, no microcode; SMT vulnerable",
    "Mitigation: PTE Inversion; VMX: conditional cache flushes, SMT vulnerable", "KVM: Mitigation: Split huge pages",
    "KVM: Vulnerable", "Unknown: Dependent on hypervisor status", "Processor vulnerable",
    "Mitigation: Enhanced / Automatic IBRS; BHI: Vulnerable, KVM: SW loop", "", "; ,", "SMT Host state unknown"]),
    st.one_of(st.just(""), TOKEN, st.just("\nsecond line")))


def check_vulnerabilities(text, files):
    v = vulnerabilities.parse_vulnerability("spectre_v2", text)
    assert v.state in (vulnerabilities.NOT_AFFECTED, vulnerabilities.MITIGATED, vulnerabilities.VULNERABLE,
                       vulnerabilities.UNKNOWN, vulnerabilities.OTHER)
    assert v.text == v.text.strip() and len(v.text.splitlines()) <= 1 and v.text in text
    assert v.smt in (None, "vulnerable", "disabled", "mitigated", "host state unknown")
    assert isinstance(v.open_to_guests, bool) and v.smt_vulnerable == (v.smt == "vulnerable")
    assert all(p in v.text for p in v.vulnerable_parts)
    parsed = vulnerabilities.parse_vulnerabilities(files)
    assert list(parsed) == sorted(files) and all(parsed[n].name == n for n in parsed)


HEX8 = st.one_of(st.integers(0, 0xFFFFFFFF).map("{:08X}".format),
                 st.sampled_from(["00FFFFFF", "0000FFFF", "FFFFFFFF", "00000000", "0x000000", "1234_678", "+1234567",
                                  "\u0663\u0663\u0663\u0663\u0663\u0663\u0663\u0663", "0000FFF", "GGGGGGGG"]))
ROUTE_LINE = joined(st.tuples(st.sampled_from(["eth0", "virbr0", "Iface"]), HEX8, HEX8, st.sampled_from(["0003", "1",
                                                                                                         "0x1", "g"]),
                              st.just("0"), st.just("0"), NUMBER, HEX8, st.sampled_from(["0", ""])).map(list),
                    seps=("\t", " "))


def check_netroute(text, order):
    routes = call(netroute.parse_proc_net_route, text, order, raises=(ParseError,))
    if routes is None:
        assert text.strip()
        return
    for r in routes:
        assert isinstance(r.network, ipaddress.IPv4Network) and r.flags >= 0 and isinstance(r.up, bool)
        assert r.is_default == (r.network.prefixlen == 0) and r.iface in r.describe()


DPKG_LINE = st.sampled_from(["Package: qemu-kvm", "Package: libvirt0", "Status: install ok installed",
                             "Status: deinstall ok config-files", "Version: 1:8.2.2+ds-0ubuntu1", " continuation",
                             "Version:", "Package:", ""])
RPM_LINE = st.builds(lambda n, sep, v: f"{n}{sep}{v}", st.sampled_from(["kernel", "qemu-kvm", "", " "]),
                     st.sampled_from(["\t", " ", "  ", ""]), st.sampled_from(["6.1-1", "6.2-1", "", "a, b", "a"]))


def check_pkgdb(text):
    for name, version in pkgdb.parse_dpkg_status(text).items():
        assert name and name == name.strip() and isinstance(version, str)
    rpm = pkgdb.parse_rpm_qa(text)
    for name, version in rpm.items():
        assert name == name.strip() and version == version.strip()
        parts = version.split(", ") if version else []
        assert len(parts) == len(set(parts)) or ", " in text.replace("\t", " ")


INI_LINE = st.one_of(
    st.builds(lambda s: f"[{s}]", st.one_of(st.sampled_from(["main", "baseos", "bad id", "a]b", "\x00preamble", ""]),
                                            TOKEN)),
    st.builds(lambda k, pad, v: f"{k}{pad}={pad}{v}",
              st.sampled_from(["baseurl", "mirrorlist", "metalink", "enabled", "name", "gpgcheck", "type", "x"]),
              st.sampled_from(["", " ", "   "]),
              st.one_of(st.sampled_from(["http://a/b, http://c", "1", "0", "yes", "maybe", "always", "+", ""]),
                        TOKEN)),
    st.sampled_from(["  http://cont/inuation", "; comment", "=", "[", "]", "\tindented=1", "key"]))
APT_LINE = st.builds(lambda c, t, o, rest: f"{c}{t} {o}{rest}", st.sampled_from(["", "#", "# ", " "]),
                     st.sampled_from(["deb", "deb-src", "rpm", "Deb"]),
                     st.sampled_from(["", "[arch=amd64] ", "[signed-by=/k.gpg trusted=yes] ", "[", "[] "]),
                     joined(words("http://deb.debian.org/debian", "bookworm", "main", "./", "contrib", "#", "x#y")))
DEB822_LINE = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", st.sampled_from(["Types", "URIs", "Suites", "Components", "Enabled",
                                                          "Signed-By", "types", "X-Repolib-Name"]),
              st.one_of(st.sampled_from(["deb deb-src", "http://a/ http://b/", "stable ./", "main", "no", "yes",
                                         "-----BEGIN PGP PUBLIC KEY BLOCK-----", "rpm", ""]), TOKEN)),
    st.sampled_from([" .", " continuation", "\tmore", "# comment", "", " ", "NoColon"]))


def check_sources(found: List[repos.Source], text: str, manager: Optional[str]) -> None:
    nlines = len(repos._normalize_newlines(text).split("\n"))
    for s in found:
        assert isinstance(s, repos.Source) and (manager is None or s.manager == manager)
        assert 0 <= s.line <= nlines and isinstance(s.usable, bool) and isinstance(s.label, str)
        assert s.usable <= (s.enabled and bool(s.urls))
        ev = s.to_evidence()
        assert ev["file"] == "f.repo" and ev["enabled"] == s.enabled
        assert all(u and not any(c.isspace() for c in u) for u in s.urls) or s.format == "one-line"
    # Output stays in proportion to the input (each section repeats the file's problems).
    assert sum(len(s.problems) for s in found) <= 20 * (nlines + 1) * 2


def check_ini_repos(text):
    check_sources(repos.parse_dnf_repo(text, "f.repo"), text, "dnf")
    check_sources(repos.parse_zypper_repo(text, "f.repo"), text, "zypper")
    for s in repos.parse_dnf_repo(text, "f.repo"):
        assert s.id.lower() != "main" and s.format == "ini"


def check_apt_sources(text):
    one = repos.parse_apt_list(text, "f.repo")
    check_sources(one, text, "apt")
    for s in one:
        assert s.format == "one-line" and all("#" not in c for c in s.components + s.suites + s.urls)
        assert s.enabled != s.commented or s.problems
    stanzas = repos.parse_apt_sources(text, "f.repo")
    check_sources(stanzas, text, "apt")
    assert all(s.format == "deb822" and s.line >= 1 for s in stanzas)


XML_ATTR = st.one_of(st.sampled_from(["192.168.122.1", "10.0.0.1", "fd00::1", "224.0.0.1", "300.1.1.1", "", " ",
                                      "24", "255.255.255.0", "255.0.255.0", "\u00b2", "0" * 5000, "ipv4", "ipv6",
                                      "IPv6", "x"]), TOKEN)


def xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")


NETWORK_XML = st.builds(
    lambda top, name, fwd, ips: (f"<{top}>" + (f"<name>{xml_escape(name)}</name>" if name is not None else "") + fwd
                                 + "".join(ips) + f"</{top}>"),
    st.sampled_from(["network", "network", "domain"]), st.one_of(st.none(), TOKEN),
    st.sampled_from(["", "<forward/>", "<forward mode='bridge' dev='eth0'/>", "<forward mode=' Route '/>",
                     "<bridge name='virbr0'/>", "<bridge/>"]),
    st.lists(st.builds(lambda a, f, p, n: (f"<ip address='{xml_escape(a)}' family='{xml_escape(f)}' "
                                           f"prefix='{xml_escape(p)}' netmask='{xml_escape(n)}'>"
                                           "<dhcp><range start='a' end='b'/></dhcp></ip>"),
                       XML_ATTR, XML_ATTR, XML_ATTR, XML_ATTR)
             | st.builds(lambda a, n: f"<ip address='{xml_escape(a)}' netmask='{xml_escape(n)}'/>", XML_ATTR,
                         XML_ATTR), max_size=3))


def check_network_xml(text):
    net = call(libvirt_xml.parse_network_xml, text, raises=(ParseError,))
    if net is None:
        return
    for ip in net.ips:
        assert ip.family in ("ipv4", "ipv6") and ip.address
        assert ip.prefix is None or 0 <= ip.prefix <= (32 if ip.family == "ipv4" else 128)
        assert ip.network is None or ip.network.prefixlen == ip.prefix
    assert len(net.ipv4) + len(net.ipv6) == len(net.ips)


SYSINFO_LINE = st.builds(lambda n, pad, v: f"VM{n:02d} Control Program:{pad}{v}", st.integers(0, 99),
                         st.sampled_from(["", " ", "   ", "\t"]),
                         st.sampled_from(["KVM/Linux", "z/VM    7.2.0", "", "  ", "LPAR"]))
OPT_TEXT = st.one_of(st.none(), TOKEN, ARBITRARY.map(lambda s: s[:50]))
VIRT_INPUTS = st.builds(
    hypervisor.VirtInputs,
    x86_flags=st.frozensets(st.sampled_from(["hypervisor", "vmx", "svm"])),
    cpuid_signature=st.one_of(st.none(), st.sampled_from(list(hypervisor.CPUID_SIGNATURES) + ["\0\0\0", "KVMKVMKVM\0\0\0"]),
                              TOKEN),
    dmi=st.dictionaries(st.sampled_from(["sys_vendor", "product_name", "bios_vendor", "board_vendor"]),
                        st.one_of(st.sampled_from(["QEMU", "VMware, Inc.", "Xen", "Amazon EC2", "innotek GmbH",
                                                   "Microsoft Corporation Virtual Machine", "Hitachi LPAR"]), TOKEN)),
    sysinfo=st.one_of(OPT_TEXT, lines(SYSINFO_LINE, st.just("LPAR Name: X"))),
    pci_devices=st.one_of(OPT_TEXT, st.sampled_from(["0010\t58530001\t0", "0008\t15ad0710", "x 80EEBEEF"])),
    xen_capabilities=st.one_of(OPT_TEXT, st.just("control_d")),
    has_proc_xen=st.booleans(), has_iseries=st.booleans(),
    device_tree=st.dictionaries(st.sampled_from(["compatible", "ibm,partition-name", "hmc-managed?"]),
                                st.sampled_from(["ibm,powernv", "qemu,pseries\0", ""])),
    clocksources=st.one_of(OPT_TEXT, st.sampled_from(["tsc kvm-clock", "xen", "hyperv_clocksource_tsc_page hpet"])),
    boot_log_hypervisor=st.one_of(OPT_TEXT, st.sampled_from(["KVM", "Xen HVM", "Microsoft Hyper-V", "VMware", ""])),
    osrelease=st.one_of(OPT_TEXT, st.just("5.15.0-microsoft-standard-WSL2")),
    family=st.sampled_from(["x86", "s390", "ppc64", "arm64", "riscv", "unknown"]),
    xen_guest_type=st.one_of(OPT_TEXT, st.sampled_from(["PV", "HVM\n", "PVH"])),
    hypervisor_type=st.one_of(OPT_TEXT, st.just("xen\n")),
    s390_versions=st.lists(st.sampled_from(["FF", "00", "ff", "12"]), max_size=3).map(tuple),
    ppc_platform=st.one_of(OPT_TEXT, st.sampled_from(["pSeries", "PowerNV", "PowerMac"])),
    ppc_machine=st.one_of(OPT_TEXT, st.sampled_from(["CHRP IBM pSeries (emulated by qemu)", "CHRP IBM,8231-E2D"])),
)


def check_hypervisor(text, inputs):
    vendor = hypervisor.sysinfo_hypervisor(text)
    assert vendor is None or (vendor and vendor == vendor.strip() and "\n" not in vendor)
    facts = hypervisor.detect_hypervisor(inputs)
    assert isinstance(facts, hypervisor.VirtFacts) and facts.source
    # A guest always has a vendor (maybe "unknown"); a non-guest has none (bare metal), or "unknown" (the
    # files cannot tell), or is Xen's dom0, which runs under Xen without being a guest.
    assert not facts.in_guest or facts.vendor is not None
    assert facts.in_guest or facts.vendor in (None, hypervisor.UNKNOWN) or (facts.vendor, facts.xen) == ("Xen", "dom0")


PCI_ADDR = st.builds(lambda d, b, s, f: f"{d}:{b}:{s}.{f}", st.sampled_from(["0000", "10000", "00", "abcd"]),
                     st.sampled_from(["01", "1", "ff"]), st.sampled_from(["00", "1f"]), st.sampled_from("0178"))
PCI_CLASS = st.one_of(st.none(), st.sampled_from([0x030000, 0x030200, 0x040300, 0x060400, 0x060900, 0x020000]),
                      st.integers(0, 0xFFFFFF))


def check_iommu_helpers(address, class_text, groups, classes):
    slot = iommu.pci_slot(address)
    assert slot is None or (address.lower().startswith(slot) and slot.count(":") == 2)
    cls = iommu.parse_pci_class(class_text)
    assert cls is None or isinstance(cls, int)
    if cls is not None and cls >= 0:
        assert isinstance(iommu.class_name(cls), str)
    for c in classes.values():
        assert iommu.is_gpu(c) == (c is not None and 0x030000 <= c <= 0x03FFFF) and isinstance(iommu.is_bridge(c), bool)
    for shared in iommu.gpus_sharing_groups(groups, classes):
        assert shared.address in groups[shared.group] and shared.others and shared.address not in shared.others


def check_msr(raw):
    value = msr.msr_value(raw)
    assert (value is None) == (len(raw) != 8)
    if value is None:
        return
    assert 0 <= value < 1 << 64 and value == int.from_bytes(raw, "little")
    intel, amd = msr.intel_feature_control(value), msr.amd_vm_cr(value)
    assert intel.disabled == bool(value & 1 and not value & 4) and intel.locked == (bool(value & 1) and (
        intel.disabled or bool(value & 4)))
    assert amd.disabled == bool(value & 0x10) and amd.locked == bool(value & 0x08)


# --- the generated tests: a few parsers per test, each parser on its own kind of text -------------------------
# (one test per parser would pay hypothesis' per-example overhead two dozen times over; this way every parser
# still sees the profile's full example count)

@given(texts(lines(CPUINFO_LINE, max_lines=20)), texts(CPULIST), st.sets(st.integers(0, cpulist.MAX_CPUS - 1),
                                                                            max_size=200), texts(RELEASE))
def test_cpu_and_kernel_release(cpuinfo_text, cpulist_text, cpus, release):
    check_cpuinfo(cpuinfo_text)
    check_cpulist(cpulist_text)
    check_format_cpulist_round_trips(cpus)
    check_kernel_release(release)


@given(texts(lines(KLOG_LINE, max_lines=15)), texts(lines(MODPROBE_LINE, MODPATH, PROC_MODULE)),
       texts(lines(KCONFIG_LINE)), texts(VULN), st.dictionaries(WORD, texts(VULN), max_size=3))
def test_kernel_files(log, modules, config, vulnerability, vulnerability_files):
    check_kernel_log(log)
    check_modprobe(modules)
    check_kconfig(config)
    check_vulnerabilities(vulnerability, vulnerability_files)


@given(texts(lines(MOUNT_LINE, MOUNTINFO_LINE, max_lines=6)),
       st.text(CHARS, min_size=1, max_size=20).filter(lambda s: s.strip() == s and "\\" not in s),
       st.text(st.sampled_from("ab \t\n\\/"), min_size=1, max_size=20))
def test_mount_tables(table, source, name):
    check_mounts(table)
    check_mount_fields_round_trip(source, name)


@given(texts(lines(CGROUP_ROW, SELF_CGROUP)), texts(lines(PASSWD_LINE, max_lines=10)), texts(lines(MEMINFO_LINE)),
       texts(lines(DPKG_LINE, RPM_LINE, max_lines=20)),
       texts(lines(ROUTE_LINE, st.just("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask"))),
       st.sampled_from([None, "little", "big"]))
def test_system_tables(cgroup_text, passwd, mem, packages, routes, order):
    check_cgroup_files(cgroup_text)
    check_accounts(passwd)
    check_meminfo(mem)
    check_pkgdb(packages)
    check_netroute(routes, order)


def dpkg_status_reference(text):
    """parse_dpkg_status as first written (every line partitioned): the fast one must answer the same."""
    installed, fields = {}, {}

    def flush():
        name = fields.get("package")
        if name and fields.get("status", "").split() == ["install", "ok", "installed"]:
            installed.setdefault(name, fields.get("version", ""))

    for raw in text.replace("\r\n", "\n").split("\n"):
        if not raw.strip():
            flush()
            fields = {}
            continue
        if raw[0] in " \t":
            continue
        key, sep, value = raw.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    flush()
    return installed


ODD_DPKG_LINE = st.sampled_from(["PACKAGE : qemu-kvm", "\x0bPackage: vt", "\x85", " \t", "\tStatus: install ok installed",
                                 "Pre-Depends: a", "status:install ok installed", "Version : 2", "Package:\x0cff",
                                 "Source: x", "\u2028", "P", "version: 3\r"])


@given(texts(lines(DPKG_LINE, ODD_DPKG_LINE, max_lines=30)))
def test_dpkg_status_fast_parse_answers_as_the_reference(text):
    assert pkgdb.parse_dpkg_status(text) == dpkg_status_reference(text)


@given(texts(joined(st.lists(CMD_WORD, max_size=10), seps=(" ", "\x00", "  ", "\t"))),
       st.lists(st.tuples(st.text(st.sampled_from("abc_.1"), min_size=1, max_size=6),
                          st.one_of(st.none(), st.text(st.sampled_from("xyz ,=-\t"), max_size=6))), max_size=6),
       st.lists(st.text(st.sampled_from("ab-"), min_size=1, max_size=3), max_size=3),
       st.one_of(PCI_ADDR, TOKEN), st.one_of(st.none(), TOKEN, PCI_CLASS.map(lambda c: c if c is None else hex(c))),
       st.dictionaries(st.sampled_from(["1", "2", "10"]), st.lists(PCI_ADDR, max_size=4), max_size=3),
       st.dictionaries(PCI_ADDR, PCI_CLASS, max_size=4))
def test_cmdline_and_iommu(text, params, init, address, class_text, groups, classes):
    check_cmdline_and_iommu(text)
    check_cmdline_round_trip(params, init)
    check_iommu_helpers(address, class_text, groups, classes)


@given(texts(lines(INI_LINE, max_lines=16)), texts(lines(APT_LINE, DEB822_LINE, max_lines=16)))
def test_package_sources(ini, apt):
    check_ini_repos(ini)
    check_apt_sources(apt)


@given(texts(NETWORK_XML), texts(lines(SYSINFO_LINE, st.just("LPAR Name: X"))), VIRT_INPUTS, st.binary(max_size=16))
def test_network_and_virtualization(xml, sysinfo, inputs, raw_msr):
    check_network_xml(xml)
    check_hypervisor(sysinfo, inputs)
    check_msr(raw_msr)


@given(st.one_of(st.binary(max_size=72), st.lists(st.tuples(st.sampled_from([1, 2, 4, 8, 0x10, 0x20, 3]),
                                                         st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)),
                                               max_size=8).map(lambda es: struct.pack("<I", 2) + b"".join(
                                                   struct.pack("<HHI", *e) for e in es))),
       st.integers(0, 7), st.integers(0, 0o7777), st.integers(0, 70000), st.sets(st.integers(0, 70000), max_size=4))
def test_posix_acl(raw, want, mode, uid, gids):
    try:
        entries = posix_acl.parse_posix_acl(raw)
    except ParseError:
        return
    assert all(0 <= e.perm <= 7 for e in entries)
    assert isinstance(posix_acl.may_access(want, mode, 0, 0, uid, frozenset(gids), entries), bool)
    assert posix_acl.may_access(want, mode, 0, 0, 0, frozenset(), entries)  # root passes DAC for rw


@given(texts(lines(st.just('{"return": {"enabled": true, "present": true}}'), st.just('{"QMP": {"version": 1}}'),
                   st.just("[" * 3000 + "]" * 3000), st.just('{"return": {"qemu": {"major": 1e999, "minor": 0}}}'))))
def test_qmp_answers(text):
    answers = qemu_stack.parse_qmp(text)
    for value in answers.returns + [answers.greeting]:
        assert qemu_stack.qemu_version(value) is None or isinstance(qemu_stack.qemu_version(value), str)


# The minimal inputs of the bugs found (see the fixes in kvmcheck/parsers/), and a few real-looking cases.
EXAMPLES = [
    (check_cpuinfo, ("processor\t: 0\nflags\t\t: vmx  svm\x00 lm\n\nprocessor 1: version = FF\n",)),
    (check_cpulist, ("0-15:2/4,1,3-5",)),
    (check_cpulist, ("0-9:3/3,7-7:1/5",)),
    (check_cpulist, ("1" * 5000,)),  # int() refused the digits with a plain ValueError, not ParseError
    (check_kernel_release, ("6.8.0-rc3",)),
    (check_kernel_release, ("3.0",)),
    (check_kernel_release, ("1" * 5000 + ".0",)),  # the same ValueError
    (check_modprobe, ("blacklist kvm\\\n-intel\ninstall kvm /bin/false\\",)),
    (check_mounts, ("none /sys/fs/cgroup/cpu\\054cpuacct cgroup rw,cpu\\054cpuacct 0 0\n",)),
    (check_mount_fields_round_trip, ("#", "\\")),
    (check_accounts, ("root:x:0:0:root:/root:/bin/bash\n+nis:::\nwheel:x:10:a, ,b\n",)),
    (check_cmdline_and_iommu, ('a b=c d="e f" -- init args',)),
    (check_meminfo, ("MemTotal: 1_000 kB\nMemFree: \u0663 kB\n",)),
    (check_pkgdb, ("kernel\t1\nkernel\t\nkernel\t2\nkernel 1\n",)),
    # /proc/net/route: int(f, 16) took "0x", bytes.fromhex did not (ValueError)
    # a kernel mount table has no comments: '#' may start a source there (parse_cgroup_mounts), not in fstab
    (check_mounts, ("#\x00\\040 /\\040 cgroup rw,relatime 0 0\x00\\040 /\\040 ext4 rw,relatime 0 0",)),
    (check_netroute, ("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                      "eth0\t0x000000\t00000000\t0003\t0\t0\t0\t00000000\n", None)),
    (check_netroute, ("eth0\t\u0663\u0663\u0663\u0663\u0663\u0663\u0663\u0663\t00000000\t0003\t0\t0\t0\t00000000\n", None)),
    (check_ini_repos, ("[a]\nx" + " " * 100 + "y\n",)),  # configparser's option pattern is quadratic in such runs
    (check_ini_repos, ("bare=1\n[x]\n[\x00preamble]\nbaseurl=http://a\n",)),
    (check_ini_repos, ("[a]b]\n  baseurl=x\n[\n",)),
    (check_apt_sources, ("Types: deb\nURIs: http://a/\nSuites: stable\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n"
                         " .\n x\n",)),
    (check_network_xml, ("<network><ip address='1.2.3.4' prefix='\u00b2'/></network>",)),  # isdigit() but not int()
    (check_network_xml, ("<network><ip address='1.2.3.4' prefix='" + "9" * 5000 + "'/></network>",)),
    (check_network_xml, ("<!DOCTYPE n [<!ENTITY a 'x'>]><network/>",)),
    (check_hypervisor, ("VM00 Control Program:\nVM01 Control Program: z/VM 7.2\n", hypervisor.VirtInputs())),
    (check_msr, (b"\x01\x00\x00\x00\x00\x00\x00\x00",)),
    (check_msr, (b"\x10" + b"\x00" * 7,)),
]


@pytest.mark.parametrize("check, args", EXAMPLES, ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(EXAMPLES)])
def test_examples(check, args):
    check(*args)
    for text in args:
        if isinstance(text, str):
            check_contract(text)


# --- huge input: one megabyte of a hostile pattern must parse in well under a second ------------------------
# (patterns of many short lines are a quarter of that, to keep CI time sane; the 4 MiB file further down
# checks that no parser is quadratic in the number of lines)
MB = 1 << 20
HOSTILE = {
    "spaces": " " * MB,
    "word-spaces-word": "a" + " " * MB + "b=",
    "colons": ":" * MB,
    "backslashes": "\\" * MB,
    "continuations": "x\\\n" * (MB // 12),
    "cpulist": "0-65535," * (MB // 8),
    "cpulist-groups": "".join(f"{i}-65535:1/2," for i in range(MB // 16)),
    "quotes": '"a b" ' * (MB // 6),
    "brackets": "[" * MB,
    "many lines": "kvm: disabled by bios x\n" * (MB // 96),
    "distinct lines": "".join(f"kernel {i}\n" for i in range(MB // 48)),
    "octal": "a /b\\040c ext4 rw\n" * (MB // 72),
    "sysinfo": "LPAR\nVM00 Control Program: a" + " " * MB + "b\n",
    "ini": "[a]\nx" + " \t" * (MB // 2) + "y\n",
    "ini bad lines": "[a]\nbad line\n" * (MB // 56),
    "deb822": "Types: deb\nURIs: http://a/\n" + " x\n" * (MB // 12),
    "digits": "1" * MB + ".1",
    "xml": "<network>" + "<ip address='1.2.3.4' prefix='24'/>" * (MB // 40) + "</network>",
}
SLOW_LIMIT = 1.0  # seconds for one megabyte; the quadratic versions took minutes
PER_LINE = 10e-6  # and this per line: a record per line (350,000 of them in a megabyte) costs microseconds each


def budget(text: str) -> float:
    return SLOW_LIMIT + PER_LINE * text.count("\n")


@pytest.mark.parametrize("pattern", sorted(HOSTILE))
def test_huge_input_is_linear(pattern):
    text = HOSTILE[pattern]
    slow = []
    for name, (fn, errors, kind) in TEXT_PARSERS.items():
        start = time.perf_counter()
        result = call(fn, text, raises=errors)
        took = time.perf_counter() - start
        assert result is None and errors or isinstance(result, kind), name
        if took > budget(text):
            slow.append(f"{name}: {took:.2f}s")
    assert not slow, slow


def test_many_lines_of_a_full_size_file():
    """4 MiB (half of Host's read limit) of short lines: no parser may be quadratic in the number of lines."""
    # dpkg/deb822 stanzas with continuation lines, modprobe continuations, many distinct log lines and
    # versions of one package: each once made some parser quadratic in the number of lines
    text = "".join(f"Package: k{i % 7}\n {i}\\\nkvm: disabled by bios {i}\nkernel\t{i}\n[s{i}]\nbad\n"
                   for i in range(4 << 20 >> 6))
    for name in ("parse_rpm_qa", "parse_dpkg_status", "parse_modprobe_conf", "parse_mounts", "parse_cpuinfo",
                 "parse_kernel_log", "parse_apt_sources", "parse_dnf_repo"):
        fn, errors, _ = TEXT_PARSERS[name]
        start = time.perf_counter()
        call(fn, text, raises=errors)
        assert time.perf_counter() - start < budget(text), name
