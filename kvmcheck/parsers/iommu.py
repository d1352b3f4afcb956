# SPDX-License-Identifier: GPL-2.0-or-later
"""IOMMU facts: the kernel command line options that switch it, PCI classes, and group sharing.

Option semantics come from Documentation/admin-guide/kernel-parameters.txt and
the parsers behind them: ``intel_iommu=`` takes a comma list (on, off, igfx_off,
sm_on, ...), ``amd_iommu=off`` disables AMD-Vi, x86 ``iommu=off`` (no_iommu)
disables both, ``iommu=pt`` / ``iommu.passthrough=1`` only make host DMA
identity-mapped (device assignment still works).  Repeated options: the last wins.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .cmdline import KernelCmdline

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

_PCI_ADDR = pattern(r"^([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")
# Bridges stay with the host (pcieport) and never block assigning the devices behind them.
BRIDGE_CLASSES = (0x0604, 0x0609)  # PCI-to-PCI bridge, semi-transparent PCI-to-PCI bridge
_TRUE = ("1", "y", "on", "yes", "true")
_FALSE = ("0", "n", "off", "no", "false")


def _bool(value: Optional[str]) -> Optional[bool]:
    if value is None:
        return None
    v = value.strip().lower()
    if v.startswith(_TRUE):
        return True
    if v.startswith(_FALSE):
        return False
    return None


class IommuOptions(Record):
    intel_iommu: Optional[bool]  # intel_iommu=on -> True, =off -> False, not given -> None (kernel default)
    amd_iommu_off: bool  # amd_iommu=off
    amd_iommu_on: bool  # amd_iommu=on (not a documented value; AMD-Vi is on by default anyway)
    iommu_off: bool  # x86 iommu=off: no IOMMU of any vendor
    passthrough: Optional[bool]  # iommu=pt / iommu=nopt / iommu.passthrough=
    given: Tuple[str, ...]  # the IOMMU options as written, for evidence

    def disabled_by(self, vendor_table: str) -> Optional[str]:
        """The option that switches off the IOMMU that firmware table describes (DMAR, IVRS), or None."""
        if self.iommu_off:
            return "iommu=off"
        if vendor_table == "DMAR" and self.intel_iommu is False:
            return "intel_iommu=off"
        if vendor_table == "IVRS" and self.amd_iommu_off:
            return "amd_iommu=off"
        return None


def iommu_options(cmdline: KernelCmdline) -> IommuOptions:
    intel: Optional[bool] = None
    amd_off = amd_on = iommu_off = False
    passthrough: Optional[bool] = None
    given: List[str] = []
    for name, value in cmdline.params:
        key = name.replace("-", "_")
        if key not in ("intel_iommu", "amd_iommu", "iommu", "iommu.passthrough"):
            continue
        given.append(name if value is None else f"{name}={value}")
        items = [i.strip().lower() for i in (value or "").split(",") if i.strip()]
        if key == "intel_iommu":
            for item in items:
                if item == "on":
                    intel = True
                elif item == "off":
                    intel = False
        elif key == "amd_iommu":
            for item in items:
                if item == "off":
                    amd_off, amd_on = True, False
                elif item == "on":
                    amd_off, amd_on = False, True
        elif key == "iommu":
            for item in items:
                if item == "off":
                    iommu_off = True
                elif item in ("force", "on"):
                    iommu_off = False
                elif item == "pt":
                    passthrough = True
                elif item == "nopt":
                    passthrough = False
        else:
            passthrough = _bool(value) if value is not None else passthrough
    return IommuOptions(intel, amd_off, amd_on, iommu_off, passthrough, tuple(given))


def pci_slot(address: str) -> Optional[str]:
    """'0000:01:00.1' -> '0000:01:00' (domain, bus, device); None for a non-PCI name."""
    m = _PCI_ADDR.match(address)
    if not m:
        return None
    return f"{m.group(1)}:{m.group(2)}:{m.group(3)}".lower()


def parse_pci_class(text: Optional[str]) -> Optional[int]:
    """The 24-bit class code from a sysfs 'class' file ('0x030000'), or None."""
    if not text:
        return None
    try:
        return int(text.strip().split()[0], 16)
    except (ValueError, IndexError):
        return None


def is_gpu(pci_class: Optional[int]) -> bool:
    return pci_class is not None and pci_class >> 16 == 0x03  # display controller: VGA, 3D, other


def is_bridge(pci_class: Optional[int]) -> bool:
    return pci_class is not None and pci_class >> 8 in BRIDGE_CLASSES


class SharedGpu(Record):
    address: str
    group: str
    others: Tuple[str, ...]  # devices that must go to the guest (or to vfio) along with it


def gpus_sharing_groups(groups: Mapping[str, Sequence[str]], classes: Mapping[str, Optional[int]]) -> List[SharedGpu]:
    """GPUs whose IOMMU group holds devices other than bridges and the GPU's own functions.

    VFIO assigns whole groups: every endpoint in the group must be bound to vfio
    (and is lost to the host).  A GPU's own functions on the same slot (HDMI audio,
    USB-C controller) travel with it anyway, and bridges stay with the host.
    """
    found = []
    for group in sorted(groups, key=lambda g: (len(g), g)):
        members = list(groups[group])
        for dev in members:
            if not is_gpu(classes.get(dev)):
                continue
            slot = pci_slot(dev)
            others = tuple(
                d for d in members
                if d != dev and not is_bridge(classes.get(d)) and (slot is None or pci_slot(d) != slot)
            )
            if others:
                found.append(SharedGpu(dev, group, others))
    return found


def class_name(pci_class: Optional[int]) -> str:
    """A short label for evidence: 'VGA', 'audio', 'bridge', ... or the hex code."""
    if pci_class is None:
        return "unknown"
    names: Dict[int, str] = {0x0300: "VGA", 0x0302: "3D controller", 0x0380: "display", 0x0403: "HD audio",
                             0x0604: "PCI bridge", 0x0600: "host bridge", 0x0601: "ISA bridge", 0x0200: "Ethernet",
                             0x0108: "NVMe", 0x0106: "SATA", 0x0c03: "USB", 0x0c05: "SMBus", 0x0c80: "serial bus"}
    return names.get(pci_class >> 8, f"0x{pci_class:06x}")
