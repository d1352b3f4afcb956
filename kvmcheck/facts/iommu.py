# SPDX-License-Identifier: GPL-2.0-or-later
"""The IOMMU as the kernel and firmware show it: units, groups and their PCI devices, the ACPI tables that
describe an IOMMU, device tree IOMMU nodes, the vfio-pci driver, and the kernel's VT-d default."""
from __future__ import annotations

import fnmatch
from typing import Dict, FrozenSet, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Later, Readout, fact, read
from kvmcheck.facts import system  # noqa: F401 - the shared facts these are computed from (declared first)

TABLES = "/sys/firmware/acpi/tables"
IOMMU_TABLES = ("DMAR", "IVRS", "IORT")  # Intel VT-d, AMD-Vi, arm64 SMMU
GROUPS = "/sys/kernel/iommu_groups"
DEVICE_TREES = ("/proc/device-tree", "/sys/firmware/devicetree/base")
VFIO_DIR = "kernel/drivers/vfio/pci"


@fact(reads=("/sys/class/iommu",))
def iommu_units(host) -> Tuple[str, ...]:
    """The IOMMU units the kernel drives (/sys/class/iommu: dmar0, ivhd0, smmu3.0x...)."""
    return tuple(host.listdir("/sys/class/iommu"))


class IommuGroups(Record):
    groups: Dict[str, Tuple[str, ...]]  # group number -> its devices, in numeric order of the groups
    classes: Dict[str, Optional[int]]  # device -> its PCI class code (None: no class file, or not one)


@fact(reads=(GROUPS, f"{GROUPS}/*/devices", "/sys/bus/pci/devices/*/class"))
def iommu_groups(host) -> IommuGroups:
    """/sys/kernel/iommu_groups and the PCI class of each device in a group (errors propagate: the runner
    names the directory that could not be listed)."""
    from kvmcheck.parsers.iommu import parse_pci_class

    names = [g for g in host.listdir(GROUPS) if g.isdigit()]
    groups = {g: tuple(host.listdir(f"{GROUPS}/{g}/devices")) for g in sorted(names, key=int)}
    classes = {dev: parse_pci_class(host.first_line(f"/sys/bus/pci/devices/{dev}/class"))
               for devs in groups.values() for dev in devs}
    return IommuGroups(groups, classes)


class AcpiTables(Record):
    available: bool  # /sys/firmware/acpi/tables exists in this root
    present: FrozenSet[str]  # which of IOMMU_TABLES it holds


@fact(reads=(TABLES,) + tuple(f"{TABLES}/{t}" for t in IOMMU_TABLES))
def acpi_iommu_tables(host) -> AcpiTables:
    return AcpiTables(host.is_dir(TABLES), frozenset(t for t in IOMMU_TABLES if host.exists(f"{TABLES}/{t}")))


@fact(reads=DEVICE_TREES + tuple(f"{base}/*" for base in DEVICE_TREES))
def device_tree_iommus(host) -> Later:
    """Later: the device tree nodes named iommu or smmu (top level and one below), from the first device
    tree that has any; () when none does."""
    def find() -> Tuple[str, ...]:
        found = []
        for base in DEVICE_TREES:
            for top in host.listdir(base):
                nodes = [top] + [f"{top}/{n}" for n in host.listdir(f"{base}/{top}")] \
                    if host.is_dir(f"{base}/{top}") else [top]
                found.extend(n for n in nodes if n.rsplit("/", 1)[-1].split("@")[0] in ("iommu", "smmu"))
            if found:
                break
        return tuple(found)

    return Later(find)


class VfioPci(Record):
    """Where vfio-pci is, for the running kernel: loaded, or in its /lib/modules/RELEASE."""

    loaded: bool  # /sys/module/vfio_pci
    modules_dir: Optional[str]  # /lib/modules/RELEASE of the running kernel; None when this root lacks it
    module_file: bool = False  # vfio-pci.ko* or vfio_pci.ko* under its kernel/drivers/vfio/pci
    builtin: Optional[Readout] = None  # its modules.builtin
    modules_dep: bool = False  # its modules.dep exists

    @property
    def builtin_text(self) -> str:
        """modules.builtin, or "" when absent or unreadable."""
        return (self.builtin.text or "") if self.builtin is not None and self.builtin.ok else ""


@fact(reads=("/sys/module/vfio_pci", "/lib/modules/*", f"/lib/modules/*/{VFIO_DIR}", "/lib/modules/*/modules.builtin",
             "/lib/modules/*/modules.dep"))
def vfio_pci(host, osrelease) -> VfioPci:
    loaded = host.is_dir("/sys/module/vfio_pci")
    if not osrelease or not host.is_dir(f"/lib/modules/{osrelease}"):
        return VfioPci(loaded, None)
    base = f"/lib/modules/{osrelease}"
    # One listing, not Host.glob, which looks at every component on the way ("/lib" among them: a declared read
    # of "/lib" would make kvmcheck snapshot capture the whole tree).
    module = any(fnmatch.fnmatchcase(n, "vfio-pci.ko*") or fnmatch.fnmatchcase(n, "vfio_pci.ko*")
                 for n in host.listdir(f"{base}/{VFIO_DIR}"))
    return VfioPci(loaded, base, module, read(host, f"{base}/modules.builtin"), host.exists(f"{base}/modules.dep"))


@fact(uses=("osrelease", "kernel_config"))
def intel_iommu_default_on(facts) -> Later:
    """Later: CONFIG_INTEL_IOMMU_DEFAULT_ON of the running kernel (True/False); None when its config is not
    in this root or it has no CONFIG_INTEL_IOMMU."""
    def ask() -> Optional[bool]:
        if not facts.get("osrelease"):
            return None
        conf = facts.get("kernel_config").config
        if conf is None or conf.get("CONFIG_INTEL_IOMMU") in (None, "n"):
            return None
        return conf.enabled("CONFIG_INTEL_IOMMU_DEFAULT_ON")

    return Later(ask)
