# SPDX-License-Identifier: GPL-2.0-or-later
"""The facts most checks share: the CPU, the architecture, the kernel, its log and modules, mounts, the
virtualization context, the distribution and the container; and the report's host block built from them."""
from __future__ import annotations

import struct
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import fact
from kvmcheck.parsers import ParseError, pattern
from kvmcheck.parsers.cpuinfo import CpuInfo, parse_cpuinfo
from kvmcheck.parsers.hypervisor import VirtFacts, VirtInputs, detect_hypervisor
from kvmcheck.parsers.kernel_log import KernelLogFacts, parse_kernel_log
from kvmcheck.parsers.kernel_version import KernelVersion, parse_kernel_release
from kvmcheck.parsers.kconfig import KConfig
from kvmcheck.parsers.mounts import Mount
from kvmcheck.parsers.os_release import LEGACY_RELEASE_FILES
from kvmcheck.parsers.cmdline import KernelCmdline
from kvmcheck.parsers.container import ContainerFacts

# Log files a captured or Kickstart root may hold, newest information first.
OFFLINE_LOGS = ("/var/log/dmesg", "/var/log/kern.log", "/var/log/messages", "/var/log/syslog", "/var/log/boot.log")
DMI_FIELDS = ("sys_vendor", "product_name", "bios_vendor", "board_vendor")
MOUNT_TABLES = ("/proc/self/mounts", "/proc/mounts")
KVM_MODULES = ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm", "kvm_hv", "kvm_pr")

# uname -m and uname -r as the kernel prints them (utsname fields hold at most 64 bytes)
_MACHINE = pattern(r"[a-z][a-z0-9_]{0,31}")
_RELEASE = pattern(r"[^\s/\x00-\x1f\x7f\ufffd]{1,64}")


def is_name(value: str, limit: int = 256) -> bool:
    """Whether text read from the root can stand as a name in a report: printable, decoded, not huge
    (a damaged capture puts control characters, undecodable bytes or a 2 MB line where a name belongs)."""
    return value.isprintable() and "\ufffd" not in value and len(value) <= limit


def quoted(value: Optional[str], width: int = 40) -> str:
    """ascii() of a value read from the root, cut to width characters: garbage is named, not echoed."""
    if value is None or len(value) <= width:
        return ascii(value)
    return ascii(value[:width]) + "..."


# uname -m -> the family kvmcheck reasons about
_FAMILIES = (
    (("x86_64", "i386", "i486", "i586", "i686", "x86"), "x86"),
    (("aarch64", "arm64"), "arm64"),
    (("s390", "s390x"), "s390"),
    (("ppc64", "ppc64le"), "ppc64"),
    (("riscv64", "riscv32"), "riscv"),
    (("loongarch64", "loongarch32"), "loongarch"),
)


def arch_family(arch: Optional[str]) -> str:
    if not arch:
        return "unknown"
    for names, family in _FAMILIES:
        if arch in names:
            return family
    if arch.startswith("arm"):
        return "arm"
    if arch.startswith("sparc"):
        return "sparc"
    if arch.startswith("ppc"):
        return "ppc"
    return arch


def arch_from_cpuinfo(cpu: CpuInfo) -> Optional[str]:
    """Infer uname -m from cpuinfo alone (an offline root with no kernel/arch file)."""
    vendor = cpu.first("vendor_id") or ""
    if vendor.startswith("IBM/S390"):
        return "s390x" if cpu.any_has("zarch", "features") else "s390"
    isa = cpu.first("isa") or ""
    if isa.startswith("rv64"):
        return "riscv64"
    if isa.startswith("rv32"):
        return "riscv32"
    if "loongarch64" in isa.split() or (cpu.first("cpu family") or "").startswith("Loongson-64"):
        return "loongarch64"
    if cpu.first("cpu architecture") in ("8", "AArch64"):  # arm64 kernels before 3.19 print "AArch64"
        return "aarch64"
    if cpu.first("cpu architecture") is not None or (cpu.first("processor") or "").startswith("ARMv"):
        return "armv7l"
    cpu_line = cpu.first("cpu") or ""
    if cpu_line.startswith("POWER") or cpu.first("platform") in ("pSeries", "PowerNV"):
        return "ppc64"
    if cpu.first("platform") or cpu.first("pvr") or "pvr" in (cpu.first("revision") or ""):
        return "ppc"
    if "sparc" in cpu_line.lower() or (cpu.first("type") or "").startswith("sun4"):
        return "sparc64"
    if cpu.first("arch") == "IA-64":  # arch/ia64/kernel/setup.c show_cpuinfo
        return "ia64"
    if cpu.first("system type") is not None and cpu.first("isa") is not None:  # arch/mips/kernel/proc.c
        isa = (cpu.first("isa") or "").split()
        return "mips64" if any(level.startswith("mips64") for level in isa) else "mips"
    if cpu.x86_flags:
        # The kernel's architecture, not the CPU's: a 32-bit kernel on a long-mode CPU prints fdiv_bug lines.
        return "i686" if cpu.x86_32bit_kernel or not cpu.all_have("lm", "flags") else "x86_64"
    return None


def cpu_arch_from_cpuinfo(cpu: CpuInfo, kernel_arch: Optional[str]) -> Optional[str]:
    """The CPU's own architecture where it can differ from the kernel's (x86: long mode 'lm')."""
    if arch_family(kernel_arch) == "x86" and cpu.x86_flags:
        return "x86_64" if cpu.all_have("lm", "flags") else "i686"
    return kernel_arch


# -- records ---------------------------------------------------------------------------------------
class Arch(Record):
    name: Optional[str]  # uname -m
    source: str  # how it was found: "uname", "/proc/sys/kernel/arch", "inferred from /proc/cpuinfo", "unknown"


class KernelConfigFact(Record):
    config: Optional[KConfig]
    path: Optional[str]
    notes: Tuple[str, ...]  # why a candidate file was not used


class KernelLog(Record):
    facts: KernelLogFacts
    sources: Tuple[str, ...]  # where it came from; () when no log could be read


class MountTable(Record):
    path: Optional[str]  # the table read; None when none was readable
    entries: Tuple[Mount, ...]
    problems: Tuple[str, ...]  # "PATH: reason" for each table present that could not be read


# CPUID leaves (leaf, subleaf) the checks consult; raw registers of CPU 0 through /dev/cpu/0/cpuid.
CPUID_LEAVES = ((1, 0), (0x40000000, 0), (0x80000001, 0))


# -- the CPU ----------------------------------------------------------------------------------------
@fact(reads=("/proc/cpuinfo",))
def cpuinfo(host) -> Optional[CpuInfo]:
    """Parsed /proc/cpuinfo, or None when the root has none (PermissionError propagates: nothing about
    the CPU can be judged without it, and the runner names the file)."""
    text = host.read_optional("/proc/cpuinfo")
    return None if text is None else parse_cpuinfo(text)


@fact(reads=("/proc/sys/kernel/arch",), uses=("cpuinfo",))
def arch(host, facts) -> Arch:
    """uname -m, and how it was found (live: uname; offline: /proc/sys/kernel/arch, else /proc/cpuinfo)."""
    if host.live:
        return Arch(host.machine(), "uname")
    name = host.first_line("/proc/sys/kernel/arch")  # Linux >= 6.1
    if name and _MACHINE.fullmatch(name):
        return Arch(name, "/proc/sys/kernel/arch")
    # Anything else there is not a machine name (a damaged capture): go by /proc/cpuinfo.
    cpu = facts.get("cpuinfo")
    guess = arch_from_cpuinfo(cpu) if cpu else None
    return Arch(guess, "inferred from /proc/cpuinfo" if guess else "unknown")


@fact()
def family(arch) -> str:
    return arch_family(arch.name)


@fact()
def cpu_arch(cpuinfo, arch) -> Optional[str]:
    """The CPU's architecture (x86_64 for a long-mode CPU under a 32-bit kernel); else the kernel's."""
    return cpu_arch_from_cpuinfo(cpuinfo, arch.name) if cpuinfo else arch.name


@fact()
def x86_flags_first_cpu(cpuinfo) -> FrozenSet[str]:
    sets = cpuinfo.x86_flags if cpuinfo else []
    return sets[0] if sets else frozenset()


@fact()
def cpu_model(cpuinfo) -> Tuple[Optional[str], Optional[str]]:
    """(vendor, model name) as /proc/cpuinfo names them on each architecture."""
    cpu = cpuinfo
    if cpu is None:
        return None, None
    vendor = cpu.first("vendor_id") or cpu.first("cpu implementer") or cpu.first("mvendorid")
    model = (
        cpu.first("model name") or cpu.first("cpu model") or cpu.first("uarch") or cpu.first("cpu")
        or (cpu.first("processor") if not (cpu.first("processor") or "0").isdigit() else None)
    )
    return vendor, model


@fact(reads=("/dev/cpu/0/cpuid",))
def cpuid(host, family) -> Dict[Tuple[int, int], Tuple[int, int, int, int]]:
    """Raw CPUID registers (eax, ebx, ecx, edx) of CPU 0 for CPUID_LEAVES; {} when not available
    (offline, not x86, the cpuid driver not loaded, or not root)."""
    if not host.live or family != "x86":
        return {}
    out = {}
    for leaf, subleaf in CPUID_LEAVES:
        try:
            raw = host.read_device_at("/dev/cpu/0/cpuid", leaf | (subleaf << 32), 16)
        except OSError:
            return out  # the cpuid driver is not loaded, or we are not root
        if len(raw) == 16:
            out[(leaf, subleaf)] = struct.unpack("<4I", raw)
    return out


# -- the kernel -------------------------------------------------------------------------------------
@fact(reads=("/proc/sys/kernel/osrelease",))
def osrelease_text(host) -> Optional[str]:
    """The first line of /proc/sys/kernel/osrelease as it is (None when missing or unreadable)."""
    return host.first_line("/proc/sys/kernel/osrelease")


@fact()
def osrelease(osrelease_text) -> Optional[str]:
    """The kernel release (uname -r); None when the root has none, or what it holds cannot be one.

    Checks build paths from it (/lib/modules/RELEASE, /boot/config-RELEASE), so a blank, a '/',
    a control character or more than the kernel's 64 bytes disqualify it.
    """
    text = osrelease_text
    return text if text and _RELEASE.fullmatch(text) and text not in (".", "..") else None


@fact()
def kernel_version(osrelease) -> Optional[KernelVersion]:
    try:
        return parse_kernel_release(osrelease) if osrelease else None
    except ParseError:
        return None


@fact(reads=("/proc/cmdline",))
def cmdline(host) -> Optional[KernelCmdline]:
    """The kernel command line (/proc/cmdline), parsed; None when the root has none or it is unreadable."""
    from kvmcheck.parsers.cmdline import parse_cmdline

    try:
        text = host.read_optional("/proc/cmdline", limit=65536)
    except OSError:
        return None
    return None if text is None else parse_cmdline(text)


# /boot: the glob of /boot/config-* (a root with no kernel release to go by) lists it.
@fact(reads=("/boot", "/boot/config-*", "/lib/modules", "/lib/modules/*", "/proc/config.gz"))
def kernel_config(host, osrelease) -> KernelConfigFact:
    """The running kernel's build configuration from /boot/config-RELEASE.

    An offline root without /proc tries the kernels installed under /lib/modules, newest first.
    /proc/config.gz is gzip-compressed and not read (the notes say so).
    """
    from kvmcheck.parsers.kconfig import parse_kconfig

    notes: List[str] = []
    if osrelease:
        candidates = [f"/boot/config-{osrelease}"]
    else:
        releases = [r for r in host.listdir("/lib/modules") if host.is_dir(f"/lib/modules/{r}")]
        candidates = [f"/boot/config-{r}" for r in reversed(releases)] or host.glob("/boot/config-*")[-1:]
    for path in candidates:
        try:
            text = host.read_optional(path)
        except OSError as exc:
            notes.append(f"{path} unreadable ({exc.strerror or exc}).")
            continue
        if text is not None:
            config = parse_kconfig(text)
            if config:
                return KernelConfigFact(config, path, tuple(notes))
            notes.append(f"{path} holds no CONFIG_ lines.")
    if host.exists("/proc/config.gz"):
        notes.append("/proc/config.gz exists but is gzip-compressed; kvmcheck reads text only.")
    return KernelConfigFact(None, None, tuple(notes))


@fact(reads=("/dev/kmsg",) + OFFLINE_LOGS)
def kernel_log(host) -> KernelLog:
    """Facts from the kernel log, and where they came from (no sources when no log could be read)."""
    texts, sources = [], []
    if host.live:
        try:
            texts.append(host.kernel_log())
            sources.append("/dev/kmsg")
        except OSError:
            pass  # dmesg_restrict or no /dev/kmsg: fall back to the log files
    if not sources:
        for path in OFFLINE_LOGS:
            try:
                text = host.read_optional(path)
            except OSError:
                continue
            if text is not None:
                texts.append(text)
                sources.append(path)
    return KernelLog(parse_kernel_log("\n".join(texts)), tuple(sources))


def module_state(host, name: str) -> Optional[str]:
    """"loaded" (a .ko), "built-in", or None when /sys/module does not show the module."""
    if not host.is_dir(f"/sys/module/{name}"):
        return None
    # Only loadable modules have initstate (kernel/module/sysfs.c).
    return "loaded" if host.exists(f"/sys/module/{name}/initstate") else "built-in"


@fact(reads=tuple(f"/sys/module/{m}" for m in KVM_MODULES) + tuple(f"/sys/module/{m}/initstate" for m in KVM_MODULES))
def modules(host) -> Dict[str, str]:
    """KVM-related modules present: name -> "loaded" (a .ko) or "built-in"."""
    states = {name: module_state(host, name) for name in KVM_MODULES}
    return {name: state for name, state in states.items() if state}


@fact(reads=MOUNT_TABLES)
def mounts(host) -> MountTable:
    """The mounted file systems, from the first mount table that can be read."""
    from kvmcheck.parsers.mounts import parse_mounts

    problems = []
    for path in MOUNT_TABLES:
        try:
            text = host.read_optional(path, limit=16 << 20)
        except OSError as exc:  # unreadable or not a file: try the next source
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        if text is not None:
            return MountTable(path, tuple(parse_mounts(text, comments=False)), tuple(problems))
    return MountTable(None, (), tuple(problems))


# -- the virtualization context ----------------------------------------------------------------------
_DEVICE_TREE = ("compatible", "ibm,partition-name", "hmc-managed?")


@fact(reads=("/proc/device-tree/compatible", "/proc/device-tree/ibm,partition-name", "/proc/device-tree/hmc-managed?",
             "/sys/class/dmi/id/sys_vendor", "/sys/class/dmi/id/product_name", "/sys/class/dmi/id/bios_vendor",
             "/sys/class/dmi/id/board_vendor", "/proc/sysinfo", "/proc/bus/pci/devices", "/proc/xen",
             "/proc/xen/capabilities", "/proc/iSeries", "/sys/devices/system/clocksource/clocksource0/available_clocksource",
             "/sys/hypervisor/guest_type", "/sys/hypervisor/type"))
def virt(host, cpuinfo, cpuid, kernel_log, osrelease, family, x86_flags_first_cpu) -> VirtFacts:
    """Which hypervisor, if any, this root runs under (kvmcheck.parsers.hypervisor decides from these)."""
    signature = None
    leaf1 = cpuid.get((1, 0))
    if leaf1 and leaf1[2] & (1 << 31):  # CPUID.1:ECX[31], the hypervisor-present bit
        regs = cpuid.get((0x40000000, 0))
        if regs:
            signature = struct.pack("<3I", *regs[1:]).decode("latin-1")
    dt = {}
    for name in _DEVICE_TREE:
        try:
            text = host.read_optional(f"/proc/device-tree/{name}", limit=4096)
        except OSError:
            text = None
        if text is not None:
            dt[name] = text
    dmi = {}
    for name in DMI_FIELDS:
        value = host.first_line(f"/sys/class/dmi/id/{name}")
        if value:
            dmi[name] = value
    cpu = cpuinfo
    inputs = VirtInputs(
        x86_flags=x86_flags_first_cpu,
        cpuid_signature=signature,
        dmi=dmi,
        sysinfo=host.read_optional("/proc/sysinfo"),
        pci_devices=host.read_optional("/proc/bus/pci/devices"),
        xen_capabilities=host.read_optional("/proc/xen/capabilities"),
        has_proc_xen=host.exists("/proc/xen"),
        has_iseries=host.exists("/proc/iSeries"),
        device_tree=dt,
        clocksources=host.first_line("/sys/devices/system/clocksource/clocksource0/available_clocksource"),
        boot_log_hypervisor=kernel_log.facts.hypervisor,
        osrelease=osrelease,
        family=family,
        xen_guest_type=host.first_line("/sys/hypervisor/guest_type"),
        hypervisor_type=host.first_line("/sys/hypervisor/type"),
        s390_versions=cpu.s390_versions if cpu else (),
        ppc_platform=cpu.first("platform") if cpu else None,
        ppc_machine=cpu.first("machine") if cpu else None,
    )
    return detect_hypervisor(inputs)


@fact(reads=("/.dockerenv", "/run/.containerenv", "/proc/1/cgroup", "/proc/self/mountinfo"))
def container(host) -> ContainerFacts:
    """Whether this root's processes run in a container, and under which runtime (see parsers.container)."""
    from kvmcheck.parsers.container import detect_container

    markers = [p for p in ("/.dockerenv", "/run/.containerenv") if host.exists(p)]
    cgroup = host.read_optional("/proc/1/cgroup", limit=1 << 16)
    mountinfo = host.read_optional("/proc/self/mountinfo", limit=4 << 20)
    return detect_container(cgroup, mountinfo, markers)


# -- the distribution ---------------------------------------------------------------------------------
@fact(reads=("/etc/os-release", "/usr/lib/os-release") + tuple(entry[0] for entry in LEGACY_RELEASE_FILES))
def os_name(host) -> Optional[Dict[str, str]]:
    """The report's host.os block ({id, name, version, like}) from os-release, else from the
    release file of a distribution older than os-release; None when neither says.

    Read through the Host (kvmcheck.parsers.os_release tells why not the distro package)."""
    from kvmcheck.parsers.os_release import legacy_identity, os_identity, parse_os_release

    # os-release(5): /etc/os-release first, /usr/lib/os-release when /etc has none.
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = host.read_optional(path, limit=65536)
        except OSError:
            continue  # a FIFO, a directory, unreadable: try the next source
        if text is not None:
            found = os_identity(parse_os_release(text))
            if found:
                return found
    for path, *_ in LEGACY_RELEASE_FILES:
        try:
            text = host.read_optional(path, limit=4096)
        except OSError:
            continue
        found = legacy_identity(path, text) if text is not None else None
        if found:
            return found
    return None


@fact(uses=("os_name",))
def distro_family(host, facts) -> Optional[str]:
    """debian, ubuntu, rhel (Fedora, CentOS, Rocky, Alma, Oracle, Amazon), suse, arch, or None (unknown).

    From os-release ID and ID_LIKE, so derivatives (Mint: ID_LIKE="ubuntu debian") land with their parent.
    """
    try:
        info = facts.get("os_name") or {}
    except OSError:
        return None  # an unreadable os-release makes the advice generic, not the check fail
    return family_of(info)


def family_of(info: Dict[str, str]) -> Optional[str]:
    words = [info.get("id", "")] + (info.get("like") or "").split()
    for word in words:
        if word in ("ubuntu", "linuxmint", "pop"):
            return "ubuntu"
        if word in ("debian", "raspbian", "kali"):
            return "debian"
        if word in ("rhel", "fedora", "centos", "rocky", "almalinux", "alma", "ol", "oracle", "amzn", "scientific"):
            return "rhel"
        if word.startswith(("suse", "opensuse", "sles", "sled")):
            return "suse"
        if word == "arch":
            return "arch"
    return None


# -- the report's host block ------------------------------------------------------------------------------
@fact(reads=("/proc/sys/kernel/hostname", "/etc/hostname"),
      uses=("arch", "cpu_model", "virt", "osrelease", "os_name", "modules", "container"))
def host_block(host, facts) -> Dict[str, Any]:
    """The report's host block; a fact whose files cannot be read or understood is null, named in "unreadable"."""
    unreadable: List[str] = []

    def safe(name: str, default=None):  # type: ignore[no-untyped-def]
        try:
            return facts.get(name)
        except OSError as exc:
            unreadable.append(f"{exc.filename or '?'}: {exc.strerror or exc}")
        except ValueError as exc:  # ParseError: text of an unexpected form (a damaged root)
            unreadable.append(f"{name}: not readable text of the expected form ({exc})")
        return default

    def plain(what: str, value: Optional[str]) -> Optional[str]:
        """value, unless it is no name at all (control characters, undecodable bytes, a 2 MB line)."""
        if value is None or is_name(value):
            return value
        unreadable.append(f"{what}: not readable text of the expected form")
        return None

    found_arch = safe("arch", Arch(None, "unknown"))
    vendor, model = safe("cpu_model", (None, None))
    vendor, model = plain("/proc/cpuinfo (vendor)", vendor), plain("/proc/cpuinfo (model)", model)
    found_virt = safe("virt")
    hostname = host.first_line("/proc/sys/kernel/hostname") or host.first_line("/etc/hostname")
    block = {
        "hostname": plain("hostname", hostname),
        "root": host.label,
        "live": host.live,
        "arch": found_arch[0],
        "arch_source": found_arch[1],
        "kernel": facts.get("osrelease"),
        "os": safe("os_name"),
        "cpu_vendor": vendor,
        "cpu_model": model,
        # None: bare metal shown by the files; "unknown": they cannot tell (hypervisor_source says why)
        "hypervisor": found_virt.vendor if found_virt else None,
        "hypervisor_source": found_virt.source if found_virt else None,
        "kvm_modules": safe("modules", {}),
        "container": getattr(safe("container"), "runtime", None),
    }
    if unreadable:
        block["unreadable"] = sorted(set(unreadable))
    return block


@fact()
def live(host) -> bool:
    """Whether the root is the running system (/), whose kernel, devices and processes can be asked."""
    return host.live
