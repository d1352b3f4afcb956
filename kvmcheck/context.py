# SPDX-License-Identifier: GPL-2.0-or-later
"""What a check is handed: the Host, the settings, and host facts parsed once per run.

Facts are memoized without locks on purpose: functools.cached_property (before
Python 3.12) takes a class-wide lock, so one check stuck on a hung mount would
stall every later check that asks for any fact.  Computing a fact twice is
harmless; hanging the run is not.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Optional, Tuple

from .host import Host
from .parsers import ParseError
from .parsers.cpuinfo import CpuInfo, parse_cpuinfo
from .parsers.hypervisor import VirtFacts, VirtInputs, detect_hypervisor
from .parsers.kernel_log import KernelLogFacts, parse_kernel_log
from .parsers.kernel_version import KernelVersion, parse_kernel_release

if TYPE_CHECKING:  # pragma: no cover
    from .parsers.cmdline import KernelCmdline
    from .parsers.container import ContainerFacts
    from .parsers.kconfig import KConfig
    from .parsers.mounts import Mount

# Log files a captured or Kickstart root may hold, newest information first.
OFFLINE_LOGS = ("/var/log/dmesg", "/var/log/kern.log", "/var/log/messages", "/var/log/syslog", "/var/log/boot.log")
DMI_FIELDS = ("sys_vendor", "product_name", "bios_vendor", "board_vendor")
MOUNT_TABLES = ("/proc/self/mounts", "/proc/mounts")
KVM_MODULES = ("kvm", "kvm_intel", "kvm_amd", "kvm_pvm", "kvm_hv", "kvm_pr")

# uname -m and uname -r as the kernel prints them (utsname fields hold at most 64 bytes)
_MACHINE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_RELEASE = re.compile(r"[^\s/\x00-\x1f\x7f\ufffd]{1,64}")


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


@dataclass
class Settings:
    min_kernel: str = "2.6.20"  # the first release with KVM (February 2007)
    check_timeout: float = 5.0
    online: bool = False  # --online: checks may reach the network (repository URLs)
    images_min_free_gib: float = 20.0  # storage.images-dir warns below this
    # capacity.resources: the host's floor, and the guest size used to count how many fit
    min_host_cpus: int = 2
    min_host_memory_gib: float = 2.0
    guest_vcpus: int = 2
    guest_memory_gib: float = 2.0
    host_reserve_gib: float = 1.0  # kept back for the host: the larger of this and host_reserve_percent
    host_reserve_percent: float = 10.0
    # From the configuration's [require] and [accept] tables (kvmcheck.config)
    required_shared_storage: Tuple[str, ...] = ()  # storage.shared fails unless one of these types is there
    required_packages: Tuple[str, ...] = ()  # packages.virt fails unless all are installed
    required_repos: Tuple[str, ...] = ()  # repos.configured fails unless each matches an enabled source
    accept_software_kvm: bool = False  # cpu.virt-flags: KVM through PVM (kvm_pvm) passes


class Context:
    def __init__(self, host: Host, settings: Optional[Settings] = None) -> None:
        self.host = host
        self.settings = settings or Settings()
        self._memo: Dict[str, Any] = {}

    def _get(self, key: str, compute):  # type: ignore[no-untyped-def]
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    # -- CPU -------------------------------------------------------------------
    def cpuinfo(self) -> Optional[CpuInfo]:
        """Parsed /proc/cpuinfo, or None when the root has none (PermissionError propagates)."""
        def load() -> Optional[CpuInfo]:
            text = self.host.read_optional("/proc/cpuinfo")
            return None if text is None else parse_cpuinfo(text)
        return self._get("cpuinfo", load)

    def arch(self) -> Tuple[Optional[str], str]:
        """(uname -m, how it was found)."""
        def load() -> Tuple[Optional[str], str]:
            if self.host.live:
                return self.host.machine(), "uname"
            arch = self.host.first_line("/proc/sys/kernel/arch")  # Linux >= 6.1
            if arch and _MACHINE.fullmatch(arch):
                return arch, "/proc/sys/kernel/arch"
            # Anything else there is not a machine name (a damaged capture): go by /proc/cpuinfo.
            cpu = self.cpuinfo()
            guess = arch_from_cpuinfo(cpu) if cpu else None
            return guess, "inferred from /proc/cpuinfo" if guess else "unknown"
        return self._get("arch", load)

    def cpu_arch(self) -> Optional[str]:
        """The CPU's architecture (x86_64 for a long-mode CPU under a 32-bit kernel); else the kernel's."""
        cpu = self.cpuinfo()
        arch = self.arch()[0]
        return cpu_arch_from_cpuinfo(cpu, arch) if cpu else arch

    def family(self) -> str:
        return arch_family(self.arch()[0])

    def x86_flags_first_cpu(self) -> FrozenSet[str]:
        cpu = self.cpuinfo()
        sets = cpu.x86_flags if cpu else []
        return sets[0] if sets else frozenset()

    def in_guest(self) -> bool:
        return self.virt().in_guest

    # -- kernel ------------------------------------------------------------------
    def osrelease_text(self) -> Optional[str]:
        """The first line of /proc/sys/kernel/osrelease as it is (None when missing or unreadable)."""
        return self._get("osrelease_text", lambda: self.host.first_line("/proc/sys/kernel/osrelease"))

    def osrelease(self) -> Optional[str]:
        """The kernel release (uname -r); None when the root has none, or what it holds cannot be one.

        Checks build paths from it (/lib/modules/RELEASE, /boot/config-RELEASE), so a blank, a '/',
        a control character or more than the kernel's 64 bytes disqualify it.
        """
        text = self.osrelease_text()
        return text if text and _RELEASE.fullmatch(text) and text not in (".", "..") else None

    def kernel_version(self) -> Optional[KernelVersion]:
        def load() -> Optional[KernelVersion]:
            rel = self.osrelease()
            try:
                return parse_kernel_release(rel) if rel else None
            except ParseError:
                return None
        return self._get("kernel_version", load)

    def cmdline(self) -> Optional["KernelCmdline"]:
        """The kernel command line (/proc/cmdline), parsed; None when the root has none or it is unreadable."""
        def load() -> Optional["KernelCmdline"]:
            from .parsers.cmdline import parse_cmdline

            try:
                text = self.host.read_optional("/proc/cmdline", limit=65536)
            except OSError:
                return None
            return None if text is None else parse_cmdline(text)
        return self._get("cmdline", load)

    def kernel_config(self) -> Tuple[Optional["KConfig"], Optional[str], List[str]]:
        """The running kernel's build configuration from /boot/config-RELEASE: (config, path, notes).

        An offline root without /proc tries the kernels installed under /lib/modules, newest first.
        /proc/config.gz is gzip-compressed and not read (the notes say so).
        """
        def load() -> Tuple[Optional["KConfig"], Optional[str], List[str]]:
            from .parsers.kconfig import parse_kconfig

            host, notes = self.host, []
            rel = self.osrelease()
            if rel:
                candidates = [f"/boot/config-{rel}"]
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
                        return config, path, notes
                    notes.append(f"{path} holds no CONFIG_ lines.")
            if host.exists("/proc/config.gz"):
                notes.append("/proc/config.gz exists but is gzip-compressed; kvmcheck reads text only.")
            return None, None, notes
        return self._get("kernel_config", load)

    def kernel_log(self) -> Tuple[KernelLogFacts, List[str]]:
        """Facts from the kernel log, and where they came from ([] when no log could be read)."""
        def load() -> Tuple[KernelLogFacts, List[str]]:
            texts, sources = [], []
            if self.host.live:
                try:
                    texts.append(self.host.kernel_log())
                    sources.append("/dev/kmsg")
                except OSError:
                    pass  # dmesg_restrict or no /dev/kmsg: fall back to the log files
            if not sources:
                for path in OFFLINE_LOGS:
                    try:
                        text = self.host.read_optional(path)
                    except OSError:
                        continue
                    if text is not None:
                        texts.append(text)
                        sources.append(path)
            return parse_kernel_log("\n".join(texts)), sources
        return self._get("kernel_log", load)

    def module_state(self, name: str) -> Optional[str]:
        """"loaded" (a .ko), "built-in", or None when /sys/module does not show the module."""
        if not self.host.is_dir(f"/sys/module/{name}"):
            return None
        # Only loadable modules have initstate (kernel/module/sysfs.c).
        return "loaded" if self.host.exists(f"/sys/module/{name}/initstate") else "built-in"

    def modules(self) -> Dict[str, str]:
        """KVM-related modules present: name -> "loaded" (a .ko) or "built-in"."""
        def load() -> Dict[str, str]:
            states = {name: self.module_state(name) for name in KVM_MODULES}
            return {name: state for name, state in states.items() if state}
        return self._get("modules", load)

    def mounts(self) -> Tuple[Optional[str], List["Mount"]]:
        """The mounted file systems: (the table read, its entries); (None, []) when no table is readable."""
        def load() -> Tuple[Optional[str], List["Mount"]]:
            from .parsers.mounts import parse_mounts

            problems = self._memo.setdefault("mount_table_problems", [])
            for path in MOUNT_TABLES:
                try:
                    text = self.host.read_optional(path, limit=16 << 20)
                except OSError as exc:  # unreadable or not a file: try the next source
                    problems.append(f"{path}: {exc.strerror or exc}")
                    continue
                if text is not None:
                    return path, parse_mounts(text, comments=False)
            return None, []
        return self._get("mounts", load)

    def mount_table_problems(self) -> List[str]:
        """Why mount tables present in the root could not be read ("PATH: reason"); [] when none failed."""
        self.mounts()
        return list(self._memo.get("mount_table_problems", []))

    # -- virtualization context --------------------------------------------------------
    def cpuid(self, leaf: int, subleaf: int = 0) -> Optional[Tuple[int, int, int, int]]:
        """Raw CPUID (eax, ebx, ecx, edx) of CPU 0 through /dev/cpu/0/cpuid; None when not available."""
        if not self.host.live or self.family() != "x86":
            return None
        try:
            raw = self.host.read_device_at("/dev/cpu/0/cpuid", leaf | (subleaf << 32), 16)
        except OSError:
            return None  # the cpuid driver is not loaded, or we are not root
        if len(raw) != 16:
            return None
        return struct.unpack("<4I", raw)  # type: ignore[return-value]

    def virt(self) -> VirtFacts:
        return self._get("virt", self._detect_virt)

    def _detect_virt(self) -> VirtFacts:
        host = self.host
        cpu = self.cpuinfo()
        signature = None
        leaf1 = self.cpuid(1)
        if leaf1 and leaf1[2] & (1 << 31):  # CPUID.1:ECX[31], the hypervisor-present bit
            regs = self.cpuid(0x40000000)
            if regs:
                signature = struct.pack("<3I", *regs[1:]).decode("latin-1")
        dt = {}
        for name in ("compatible", "ibm,partition-name", "hmc-managed?"):
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
        try:
            boot_hv = self.kernel_log()[0].hypervisor
        except OSError:
            boot_hv = None
        inputs = VirtInputs(
            x86_flags=self.x86_flags_first_cpu(),
            cpuid_signature=signature,
            dmi=dmi,
            sysinfo=host.read_optional("/proc/sysinfo"),
            pci_devices=host.read_optional("/proc/bus/pci/devices"),
            xen_capabilities=host.read_optional("/proc/xen/capabilities"),
            has_proc_xen=host.exists("/proc/xen"),
            has_iseries=host.exists("/proc/iSeries"),
            device_tree=dt,
            clocksources=host.first_line("/sys/devices/system/clocksource/clocksource0/available_clocksource"),
            boot_log_hypervisor=boot_hv,
            osrelease=self.osrelease(),
            family=self.family(),
            xen_guest_type=host.first_line("/sys/hypervisor/guest_type"),
            hypervisor_type=host.first_line("/sys/hypervisor/type"),
            s390_versions=cpu.s390_versions if cpu else (),
            ppc_platform=cpu.first("platform") if cpu else None,
            ppc_machine=cpu.first("machine") if cpu else None,
        )
        return detect_hypervisor(inputs)

    # -- the report's host block -----------------------------------------------------------
    def os_name(self) -> Optional[Dict[str, str]]:
        """The report's host.os block ({id, name, version, like}) from os-release, else from the
        release file of a distribution older than os-release; None when neither says.

        Read through the Host (kvmcheck.parsers.os_release tells why not the distro package)."""
        def load() -> Optional[Dict[str, str]]:
            from .parsers.os_release import LEGACY_RELEASE_FILES, legacy_identity, os_identity, parse_os_release

            # os-release(5): /etc/os-release first, /usr/lib/os-release when /etc has none.
            for path in ("/etc/os-release", "/usr/lib/os-release"):
                try:
                    text = self.host.read_optional(path, limit=65536)
                except OSError:
                    continue  # a FIFO, a directory, unreadable: try the next source
                if text is not None:
                    found = os_identity(parse_os_release(text))
                    if found:
                        return found
            for path, *_ in LEGACY_RELEASE_FILES:
                try:
                    text = self.host.read_optional(path, limit=4096)
                except OSError:
                    continue
                found = legacy_identity(path, text) if text is not None else None
                if found:
                    return found
            return None
        return self._get("os", load)

    def distro_family(self) -> Optional[str]:
        """debian, ubuntu, rhel (Fedora, CentOS, Rocky, Alma, Oracle, Amazon), suse, arch, or None (unknown).

        From os-release ID and ID_LIKE, so derivatives (Mint: ID_LIKE="ubuntu debian") land with their parent.
        """
        try:
            info = self.os_name() or {}
        except OSError:
            return None  # an unreadable os-release makes the advice generic, not the check fail
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

    def cpu_model(self) -> Tuple[Optional[str], Optional[str]]:
        cpu = self.cpuinfo()
        if cpu is None:
            return None, None
        vendor = cpu.first("vendor_id") or cpu.first("cpu implementer") or cpu.first("mvendorid")
        model = (
            cpu.first("model name") or cpu.first("cpu model") or cpu.first("uarch") or cpu.first("cpu")
            or (cpu.first("processor") if not (cpu.first("processor") or "0").isdigit() else None)
        )
        return vendor, model

    def container(self) -> "ContainerFacts":
        """Whether this root's processes run in a container, and under which runtime (see parsers.container)."""
        def load() -> "ContainerFacts":
            from .parsers.container import detect_container

            host = self.host
            markers = [p for p in ("/.dockerenv", "/run/.containerenv") if host.exists(p)]
            cgroup = host.read_optional("/proc/1/cgroup", limit=1 << 16)
            mountinfo = host.read_optional("/proc/self/mountinfo", limit=4 << 20)
            return detect_container(cgroup, mountinfo, markers)
        return self._get("container", load)

    def host_facts(self) -> Dict[str, Any]:
        """The report's host block; a fact whose files cannot be read or understood is null, named in "unreadable"."""
        host = self.host
        unreadable: List[str] = []

        def safe(compute, default=None):  # type: ignore[no-untyped-def]
            try:
                return compute()
            except OSError as exc:
                unreadable.append(f"{exc.filename or '?'}: {exc.strerror or exc}")
            except ValueError as exc:  # ParseError: text of an unexpected form (a damaged root)
                what = getattr(compute, "__name__", "?")
                unreadable.append(f"{what}: not readable text of the expected form ({exc})")
            return default

        def plain(what: str, value: Optional[str]) -> Optional[str]:
            """value, unless it is no name at all (control characters, undecodable bytes, a 2 MB line)."""
            if value is None or is_name(value):
                return value
            unreadable.append(f"{what}: not readable text of the expected form")
            return None

        arch, arch_source = safe(self.arch, (None, "unknown"))
        vendor, model = safe(self.cpu_model, (None, None))
        vendor, model = plain("/proc/cpuinfo (vendor)", vendor), plain("/proc/cpuinfo (model)", model)
        virt = safe(self.virt)
        hostname = host.first_line("/proc/sys/kernel/hostname") or host.first_line("/etc/hostname")
        facts = {
            "hostname": plain("hostname", hostname),
            "root": host.label,
            "live": host.live,
            "arch": arch,
            "arch_source": arch_source,
            "kernel": self.osrelease(),
            "os": safe(self.os_name),
            "cpu_vendor": vendor,
            "cpu_model": model,
            # None: bare metal shown by the files; "unknown": they cannot tell (hypervisor_source says why)
            "hypervisor": virt.vendor if virt else None,
            "hypervisor_source": virt.source if virt else None,
            "kvm_modules": safe(self.modules, {}),
            "container": getattr(safe(self.container), "runtime", None),
        }
        if unreadable:
            facts["unreadable"] = sorted(set(unreadable))
        return facts
