# SPDX-License-Identifier: GPL-2.0-or-later
"""Which hypervisor, if any, this host runs under: lscpu's method, from text already read.

The file-based order follows util-linux sys-utils/lscpu-virt.c (so verdicts on a
``--sysroot`` tree agree with lscpu's): PowerPC device tree, /proc/xen, PCI
graphics ids, /proc/sysinfo.  Then the sources lscpu uses live (the CPUID
hypervisor signature, DMI), and two that kvmcheck adds because they survive
where DMI is absent (Firecracker and other microVMs have no SMBIOS): the
clock sources the kernel registered and its "Hypervisor detected" boot line.

Beyond lscpu, each architecture's own cpuinfo evidence: the s390 ``version``
of each processor line, the POWER ``platform``/``machine`` trailer, and Xen's
role (dom0, PV or HVM guest).  The vendor is None only for bare metal with
positive evidence (an x86 flags line without the CPUID hypervisor bit, a
PowerNV platform); UNKNOWN when the files cannot tell.
"""
from __future__ import annotations

import re
from types import MappingProxyType
from typing import Dict, FrozenSet, Mapping, Optional, Tuple

from kvmcheck.core.record import Record

# CPUID leaf 0x40000000 EBX:ECX:EDX signatures (each hypervisor's documentation).
CPUID_SIGNATURES = {
    "KVMKVMKVM": "KVM",
    "Linux KVM Hv": "KVM",  # KVM with Hyper-V enlightenments (QEMU hv-* flags) for Windows guests
    "Microsoft Hv": "Microsoft",
    "VMwareVMware": "VMware",
    "XenVMMXenVMM": "Xen",
    "VBoxVBoxVBox": "Oracle",
    "bhyve bhyve": "bhyve",
    "ACRNACRNACRN": "ACRN",
    "QNXQVMBSQG": "QNX",
    "UnisysSpar64": "Unisys s-Par",
    " lrpepyh vr": "Parallels",
    "TCGTCGTCGTCG": "QEMU (TCG)",
}

# PCI vendor:device of emulated graphics, as lscpu-virt.c matches them.
PCI_GRAPHICS = {"58530001": "Xen", "15ad0710": "VMware", "80eebeef": "Oracle"}

# Clock sources only a hypervisor registers (drivers/clocksource, arch/x86/kernel/kvmclock.c ...).
CLOCKSOURCES = {"kvm-clock": "KVM", "hyperv_clocksource_tsc_page": "Microsoft", "xen": "Xen"}


# host.hypervisor when the files read cannot tell bare metal from a guest, or the guest's hypervisor.
UNKNOWN = "unknown"

# The default of a mapping field: shared by every instance, so read-only (nothing mutates these).
_NO_ENTRIES: Mapping[str, str] = MappingProxyType({})


class VirtInputs(Record):
    """Everything the decision reads; None means the file was absent."""

    x86_flags: FrozenSet[str] = frozenset()
    cpuid_signature: Optional[str] = None
    dmi: Mapping[str, str] = _NO_ENTRIES
    sysinfo: Optional[str] = None
    pci_devices: Optional[str] = None
    xen_capabilities: Optional[str] = None
    has_proc_xen: bool = False
    has_iseries: bool = False
    device_tree: Mapping[str, str] = _NO_ENTRIES  # name -> content, NULs kept
    clocksources: Optional[str] = None
    boot_log_hypervisor: Optional[str] = None
    osrelease: Optional[str] = None
    family: str = "unknown"  # context.arch_family of the kernel
    xen_guest_type: Optional[str] = None  # /sys/hypervisor/guest_type (Linux >= 4.15): PV, HVM, PVH
    hypervisor_type: Optional[str] = None  # /sys/hypervisor/type: "xen" on x86 and arm64 Xen guests and dom0
    s390_versions: Tuple[str, ...] = ()  # "version = XX" of each s390 "processor N:" line
    ppc_platform: Optional[str] = None  # POWER cpuinfo trailer
    ppc_machine: Optional[str] = None


class VirtFacts(Record):
    vendor: Optional[str]  # None: bare metal, with positive evidence; UNKNOWN: the files cannot tell
    source: str  # which evidence decided
    in_guest: bool  # True also when the vendor is unknown but a guest is certain
    xen: Optional[str] = None  # "dom0", "pv" (a paravirtualized domU), "hvm" (HVM/PVH domU), None otherwise


def _pci_ids(text: str) -> Tuple[str, ...]:
    ids = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and re.fullmatch(r"[0-9a-fA-F]{8}", f[1]):
            ids.append(f[1].lower())
    return tuple(ids)


def sysinfo_hypervisor(text: str) -> Optional[str]:
    """IBM Z: the innermost ``VMnn Control Program`` names the hypervisor; else the LPAR's PR/SM."""
    if "LPAR" not in text and "VM00" not in text:
        return None
    # The value is stripped in Python: the pattern's old "(.+?)\s*$" tail backtracked quadratically
    # over a long run of blanks inside the value.
    programs = [p.strip() for p in re.findall(r"^VM\d\d Control Program:(.*)$", text, re.MULTILINE)]
    programs = [p for p in programs if p]
    if programs:
        first = re.sub(r"\s+", " ", programs[0])  # VM00 is the level this Linux runs in
        if "KVM" in first:
            return "KVM"
        return "IBM " + first
    return "IBM PR/SM"


def _dmi_vendor(dmi: Dict[str, str], flagged: bool, cpuid_bit_exists: bool = True) -> Optional[str]:
    text = " ".join(dmi.get(k, "") for k in ("sys_vendor", "product_name", "bios_vendor", "board_vendor"))
    if "innotek" in text or "VirtualBox" in text:
        return "Oracle"
    if "VMware" in text:
        return "VMware"
    if "Microsoft Corporation" in text and "Virtual Machine" in text:
        return "Microsoft"
    if "Parallels" in text:
        return "Parallels"
    if re.search(r"\bXen\b", text):
        return "Xen"
    if "Hitachi" in text and "LPAR" in text:
        return "Hitachi"
    # Clouds whose DMI names the provider, not the hypervisor.  They count only with the
    # CPUID hypervisor bit, because EC2 ".metal" instances keep "Amazon EC2" on bare metal.
    if flagged and re.search(r"QEMU|\bKVM\b|Amazon EC2|Google|OpenStack|Red Hat|Nutanix|Alibaba", text):
        return "KVM"
    # Only x86 has a CPUID hypervisor bit; on arm64 (SMBIOS) QEMU's own strings stand alone, a cloud's do not
    # (Graviton ".metal" instances say "Amazon EC2" too).
    if not cpuid_bit_exists and re.search(r"QEMU|\bKVM\b", text):
        return "KVM"
    return None


def detect_hypervisor(inp: VirtInputs) -> VirtFacts:
    dt = inp.device_tree
    if inp.has_iseries:
        return VirtFacts("OS/400", "/proc/iSeries", True)
    compatible = dt.get("compatible", "")
    if "ibm,powernv" in compatible:
        return VirtFacts(None, "device-tree compatible ibm,powernv", False)
    if "ibm,partition-name" in dt and "hmc-managed?" in dt:
        return VirtFacts("PowerVM", "device-tree ibm,partition-name + hmc-managed?", True)
    if "qemu,pseries" in compatible:
        return VirtFacts("KVM", "device-tree compatible qemu,pseries", True)
    if "linux,dummy-virt" in compatible:  # QEMU's arm/riscv 'virt' machine (hw/arm/virt.c, hw/riscv/virt.c)
        return VirtFacts("KVM", "device-tree compatible linux,dummy-virt (QEMU virt machine)", True)
    if inp.has_proc_xen or inp.xen_guest_type or (inp.hypervisor_type or "").strip() == "xen":
        return _xen(inp)
    if inp.pci_devices:
        for pci in _pci_ids(inp.pci_devices):
            if pci in PCI_GRAPHICS:
                return VirtFacts(PCI_GRAPHICS[pci], f"PCI device {pci[:4]}:{pci[4:]}", True)
    if inp.sysinfo is not None:
        vendor = sysinfo_hypervisor(inp.sysinfo)
        if vendor:
            return VirtFacts(vendor, "/proc/sysinfo", True)
    if inp.family == "s390":
        return _s390_cpuinfo(inp.s390_versions)
    if inp.ppc_platform == "pSeries":
        return _pseries(inp.ppc_machine or "")
    if inp.osrelease and "microsoft" in inp.osrelease.lower():
        return VirtFacts("Microsoft", "osrelease names Microsoft (WSL)", True)
    flagged = "hypervisor" in inp.x86_flags
    if inp.cpuid_signature is not None:
        sig = inp.cpuid_signature.strip("\0").strip()
        for known, vendor in CPUID_SIGNATURES.items():
            if sig.startswith(known.strip()):
                return VirtFacts(vendor, f"CPUID 0x40000000 signature {sig!r}", True)
    vendor = _dmi_vendor(inp.dmi, flagged, cpuid_bit_exists=inp.family in ("x86", "unknown"))
    if vendor:
        return VirtFacts(vendor, "DMI " + ", ".join(f"{k}={v!r}" for k, v in sorted(inp.dmi.items())), True)
    if inp.clocksources:
        for word in inp.clocksources.split():
            if word in CLOCKSOURCES:
                return VirtFacts(CLOCKSOURCES[word], f"clock source {word}", True)
    if inp.boot_log_hypervisor:
        # arch/x86/kernel/cpu/hypervisor.c names: "KVM", "Microsoft Hyper-V", "VMware", "Xen HVM", "ACRN", ...
        name = inp.boot_log_hypervisor
        for prefix, vendor in (("Microsoft", "Microsoft"), ("Xen", "Xen"), ("VMware", "VMware"), ("KVM", "KVM")):
            if name.startswith(prefix):
                name = vendor
        return VirtFacts(name, "kernel log 'Hypervisor detected'", True)
    if flagged:
        return VirtFacts(UNKNOWN, "CPU flag 'hypervisor' (vendor not identified)", True)
    if inp.x86_flags:
        # Every hypervisor Linux knows sets CPUID.1:ECX[31], printed as 'hypervisor' since Linux 2.6.28.
        return VirtFacts(None, "x86 flags without the CPUID hypervisor bit", False)
    if inp.ppc_platform == "PowerNV":  # OPAL firmware, no hypervisor below Linux (arch/powerpc/platforms/powernv)
        return VirtFacts(None, "cpuinfo platform PowerNV", False)
    where = "" if inp.family in (None, "", "unknown") else f" on {inp.family}"
    return VirtFacts(UNKNOWN, f"nothing read tells bare metal from a guest{where}", False)


def _xen(inp: VirtInputs) -> VirtFacts:
    """dom0, a paravirtualized domU, or an HVM/PVH domU: each rules KVM out differently."""
    caps = inp.xen_capabilities or ""
    if "control_d" in caps:  # drivers/xen/xenfs/super.c: "control_d" only in the initial domain
        return VirtFacts("Xen", "/proc/xen/capabilities control_d (Xen dom0)", False, "dom0")
    kind = (inp.xen_guest_type or "").strip().upper()
    if kind == "PV":
        return VirtFacts("Xen", "/sys/hypervisor/guest_type PV (Xen PV domU)", True, "pv")
    if kind in ("HVM", "PVH"):
        return VirtFacts("Xen", f"/sys/hypervisor/guest_type {kind} (Xen domU)", True, "hvm")
    where = "/proc/xen" if inp.has_proc_xen else "/sys/hypervisor/type xen"
    # Before guest_type (Linux 4.15): a PV domU has no PCI bus unless devices are passed through
    # (pcifront), while an HVM domU always has the emulated Xen platform device 5853:0001.
    if inp.pci_devices is not None and not _pci_ids(inp.pci_devices):
        return VirtFacts("Xen", f"{where} without control_d and no PCI devices (Xen PV domU)", True, "pv")
    if inp.pci_devices is not None:
        return VirtFacts("Xen", f"{where} without control_d, with PCI devices (Xen HVM domU)", True, "hvm")
    return VirtFacts("Xen", f"{where} without control_d (Xen domU)", True)


def _s390_cpuinfo(versions: Tuple[str, ...]) -> VirtFacts:
    """IBM Z without /proc/sysinfo: the CPU version byte (Principles of Operation, STIDP): FF in a
    z/VM or KVM guest, the machine's version in an LPAR.  Linux on Z runs at least under PR/SM."""
    if versions and all(v.upper() == "FF" for v in versions):
        return VirtFacts(UNKNOWN, "cpuinfo version FF: a z/VM or KVM guest (no /proc/sysinfo to tell which)", True)
    if versions:
        return VirtFacts("IBM PR/SM", f"cpuinfo version {versions[0]}: an LPAR", True)
    return VirtFacts(UNKNOWN, "IBM Z without /proc/sysinfo or processor versions: LPAR, z/VM or KVM", True)


def _pseries(machine: str) -> VirtFacts:
    """POWER pSeries (PAPR): always a partition; QEMU names itself in 'machine', PowerVM gives an IBM model."""
    # arch/powerpc/kernel/setup-common.c prints the device tree's model as "machine"; QEMU's spapr sets
    # "IBM pSeries (emulated by qemu)", PowerVM firmware the type-model "IBM,8231-E2B".
    if "qemu" in machine.lower():
        return VirtFacts("KVM", f"cpuinfo platform pSeries, machine {machine!r}", True)
    if re.search(r"\bIBM,\w{4}-\w{3}", machine):
        return VirtFacts("PowerVM", f"cpuinfo platform pSeries, machine {machine!r} (a PowerVM LPAR)", True)
    return VirtFacts(UNKNOWN, "cpuinfo platform pSeries: a PowerVM LPAR or a KVM guest", True)
