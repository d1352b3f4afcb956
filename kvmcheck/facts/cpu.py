# SPDX-License-Identifier: GPL-2.0-or-later
"""What the CPU checks judge beyond the shared facts: the kernel's CPU vulnerability report and SMT state,
the kernel's bitness, whether an s390 kernel would list 'sie', /dev/kvm on arm64 and CPU 0's vendor.

The last three are needed on one branch of a judgement only, so they are Later: asked for there, their
OSError (a permission problem) surfaces there and nowhere else, as it did when the check read them itself.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Later, Readout, fact, read
from kvmcheck.facts import system  # noqa: F401 - the shared facts these are computed from
from kvmcheck.parsers.vulnerabilities import Vulnerability, parse_vulnerabilities

VULN_DIR = "/sys/devices/system/cpu/vulnerabilities"
SMT_CONTROL = "/sys/devices/system/cpu/smt/control"
SMT_ACTIVE = "/sys/devices/system/cpu/smt/active"
# s390 hwcaps the kernel printed only after it learned 'sie' (Linux 4.5): vxd and vxe came with z14 support
# (Linux 4.11), gs in 4.12, the rest later (arch/s390/kernel/processor.c hwcap_str).  'vx' (Linux 4.1) and
# everything before it are older than 'sie' and prove nothing.
S390_HWCAPS_AFTER_SIE = frozenset({"vxd", "vxe", "gs", "vxe2", "vxp", "sort", "dflt", "vxp2", "nnpa", "pcimio"})


class VulnerabilityFiles(Record):
    """The files of /sys/devices/system/cpu/vulnerabilities (Linux >= 4.15), dot-files left out."""

    found: Dict[str, Vulnerability]  # name -> the parsed first line of each file read, sorted by name
    unreadable: Tuple[Readout, ...]  # files listed that could not be read: "denied" or "unreadable" (reason)

    @staticmethod
    def name(readout: Readout) -> str:
        return readout.path.rsplit("/", 1)[-1]


class Smt(Record):
    """/sys/devices/system/cpu/smt/{control,active} as read (absent before Linux 4.19 and off x86)."""

    control: Readout
    active: Readout

    @staticmethod
    def line(readout: Readout) -> Optional[str]:
        """The file's first line, stripped; None when it was not read (absent, denied or unreadable)."""
        return readout.text.split("\n", 1)[0].strip() if readout.ok and readout.text is not None else None


class KernelBits(Record):
    bits: Optional[int]  # 64, 32, or None when nothing in the root says
    source: str  # what told: "uname: x86_64", "release 3.10.0-1160.el7.i686", a config path; "unknown"


@fact(reads=(VULN_DIR, VULN_DIR + "/*"))
def vulnerabilities(host) -> VulnerabilityFiles:
    """Every vulnerability file, parsed; a file that cannot be read is kept apart with its reason.

    A listing that fails (the directory itself denied) propagates: the runner names the directory."""
    names = [n for n in host.listdir(VULN_DIR) if not n.startswith(".")]
    readouts = [read(host, f"{VULN_DIR}/{name}", limit=4096) for name in names]
    found = parse_vulnerabilities({VulnerabilityFiles.name(r): r.text for r in readouts if r.ok})
    return VulnerabilityFiles(found, tuple(r for r in readouts if r.state in ("denied", "unreadable")))


@fact(reads=(SMT_CONTROL, SMT_ACTIVE))
def smt(host) -> Smt:
    return Smt(read(host, SMT_CONTROL, limit=4096), read(host, SMT_ACTIVE, limit=4096))


@fact(uses=("kernel_config",))
def kernel_bits(arch, kernel_version, cpuinfo, facts) -> KernelBits:
    """The kernel's bitness and what told it: uname or /proc/sys/kernel/arch, a release suffix (.i686, PAE),
    the lines only 32-bit x86 kernels print in cpuinfo, else CONFIG_64BIT of the kernel's configuration
    (read only when nothing before told)."""
    name, source = arch
    if name and source != "inferred from /proc/cpuinfo":
        return KernelBits(64 if name.endswith("64") or name in ("s390x",) else 32, f"{source}: {name}")
    if kernel_version and kernel_version.arch_hint:
        return KernelBits(kernel_version.arch_hint[1], f"release {kernel_version.release}")
    if cpuinfo is not None and cpuinfo.x86_32bit_kernel:
        return KernelBits(32, "/proc/cpuinfo fdiv_bug/hlt_bug/f00f_bug lines (printed only by 32-bit x86 kernels)")
    if cpuinfo is not None and cpuinfo.x86_flags and cpuinfo.first("wp") is not None:
        # A 32-bit kernel prints fdiv_bug right before 'wp' on every CPU (show_cpuinfo_misc); a 64-bit one never.
        return KernelBits(64, "/proc/cpuinfo without fdiv_bug lines (32-bit x86 kernels print them)")
    found = facts.get("kernel_config")
    value = found.config.get("CONFIG_64BIT") if found.config is not None else None
    if value is not None:
        return KernelBits(64 if value == "y" else 32, found.path)
    return KernelBits(None, "unknown")


@fact(reads=(VULN_DIR,))
def s390_reports_sie(host, kernel_version, cpuinfo) -> Later:
    """Later: would this s390 kernel list 'sie' in cpuinfo (Linux >= 4.5), so that its absence means no SIE?

    The release when known; else hwcaps newer than 'sie' in cpuinfo; else, in a capture without a release,
    /sys/devices/system/cpu/vulnerabilities, which appeared in Linux 4.15."""
    def ask() -> bool:
        if kernel_version is not None:
            return kernel_version.version >= (4, 5, 0)
        if cpuinfo is not None and any(s & S390_HWCAPS_AFTER_SIE for s in cpuinfo.word_sets("features")):
            return True
        return host.is_dir(VULN_DIR)

    return Later(ask)


@fact(reads=("/dev/kvm",))
def dev_kvm_exists(host) -> Later:
    """Later: whether /dev/kvm exists in this root (asked on arm64 only, where cpuinfo cannot show EL2)."""
    return Later(lambda: host.stat("/dev/kvm") is not None)


@fact(uses=("cpuinfo",))
def cpu_vendor_id(facts) -> Later:
    """Later: CPU 0's vendor_id ('' when cpuinfo has none), for advice that names the vendor's package."""
    def ask() -> str:
        cpu = facts.get("cpuinfo")
        return (cpu.first("vendor_id") if cpu else None) or ""

    return Later(ask)
