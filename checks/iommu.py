# SPDX-License-Identifier: GPL-2.0-or-later
"""IOMMU checks: readiness for PCI device assignment (VFIO passthrough)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts import boot as _boot  # noqa: F401 - boot_cmdline, judged here
from kvmcheck.facts.iommu import AcpiTables, IommuGroups, VfioPci
from kvmcheck.facts.system import quoted
from kvmcheck.parsers.cmdline import KernelCmdline
from kvmcheck.parsers.iommu import IommuOptions, class_name, gpus_sharing_groups, iommu_options

# The ACPI table that describes the IOMMU, chosen by the CPU vendor (not by the vmx/svm flag:
# an Intel host with VT-x off may still have VT-d, and the reverse).
VENDOR_TABLE = {
    "GenuineIntel": ("DMAR", "Intel VT-d"),
    "CentaurHauls": ("DMAR", "VT-d"),  # Zhaoxin/Centaur platforms describe their IOMMU with DMAR
    "  Shanghai  ": ("DMAR", "VT-d"),
    "Shanghai": ("DMAR", "VT-d"),
    "AuthenticAMD": ("IVRS", "AMD-Vi (AMD IOMMU)"),
    "HygonGenuine": ("IVRS", "AMD-Vi (Hygon IOMMU)"),
}
FIRMWARE_OPTION = {
    "DMAR": "Intel VT-d (often 'VT for Directed I/O' under Chipset or System Agent configuration)",
    "IVRS": "the AMD IOMMU (often 'IOMMU' or 'AMD-Vi' under NBIO/North Bridge configuration, set to Enabled, "
            "not Auto)",
}
MAX_EVIDENCE_GROUPS = 64
IOMMU_ARGS = ("intel_iommu", "amd_iommu", "iommu")  # the parameters whose pending change this check reports


REGENERATE_GRUB = {"debian": "update-grub", "ubuntu": "update-grub", "suse": "grub2-mkconfig -o /boot/grub2/grub.cfg",
                   "arch": "grub-mkconfig -o /boot/grub/grub.cfg"}
DMAR_BROKEN = ("intel_iommu=on is already on the command line, so the kernel tried and failed: it may lack "
               "CONFIG_INTEL_IOMMU, or the DMAR table is broken (see 'dmesg | grep -i -e DMAR -e IOMMU').")
DMAR_BROKEN_FIX = ("Look for DMAR errors in the kernel log, update the firmware, and use a distribution kernel "
                   "(built with CONFIG_INTEL_IOMMU); then reboot.")
VT_D_OFF_BY_DEFAULT = ("No intel_iommu= option is given and this kernel keeps VT-d off by default "
                       "(CONFIG_INTEL_IOMMU_DEFAULT_ON is not set).")
VT_D_MAYBE_OFF = "No intel_iommu= option is given; many distribution kernels keep VT-d off unless asked."
GPU_SHARING = ("{names}. VFIO assigns whole IOMMU groups: every other endpoint in the group must be unbound "
               "from its host driver and given to the same guest (bridges and the GPU's own functions such as "
               "its HDMI audio do not count). Groups are formed by PCIe topology and ACS support.")
GPU_SHARING_FIX = ("Move the GPU to a slot wired to the CPU (its own root port) rather than the chipset, enable ACS "
                   "in the firmware if offered, or assign the whole group to one guest. The pcie_acs_override kernel "
                   "patch fakes isolation and gives up the protection the IOMMU offers.")
NO_VFIO_FIX = ("Install the distribution's full kernel modules package (linux-modules-extra on Ubuntu, "
               "kernel-modules on RHEL/Fedora) for the running kernel, or build with CONFIG_VFIO_PCI.")
ARM64_UNDECODED = ("but kvmcheck does not decode IORT or device tree bindings, so it cannot say whether an SMMU is "
                   "there and merely lacks its driver (arm-smmu, arm-smmu-v3) or is absent. With an SMMU and its "
                   "driver, /sys/kernel/iommu_groups fills up and this check passes.")
NO_VIOMMU = ("There is no ACPI {table} table and no IOMMU group. Device assignment in a VM needs a virtual IOMMU "
             "(QEMU -device intel-iommu or virtio-iommu, libvirt <iommu model='intel'/>) and the devices passed "
             "to the VM first; most clouds offer neither. Check the physical host instead.")
AMD_VI_FAILED = ("The AMD IOMMU is on by default whenever IVRS is present and nothing on the command line disables "
                 "it, yet there are no IOMMU groups. The kernel may lack CONFIG_AMD_IOMMU, or its initialization "
                 "failed (look for 'AMD-Vi' errors in 'dmesg'), often because of a firmware IVRS bug.")
AMD_VI_FAILED_FIX = ("Check 'dmesg | grep -i AMD-Vi', update the firmware, and set the firmware's IOMMU option to "
                     "Enabled rather than Auto; no kernel option is needed for AMD-Vi.")
OTHER_ARCH = ("kvmcheck reads no firmware table on this architecture; s390 zPCI and POWER PowerNV hosts get "
              "IOMMU groups as soon as PCI functions are online.")


def _evidence(vendor: Optional[str], units: Tuple[str, ...], cmdline: Optional[KernelCmdline], opts: IommuOptions,
              virt: Any) -> Dict[str, Any]:
    return {
        "vendor_id": vendor, "iommu_units": list(units),
        "cmdline": list(opts.given) if cmdline is not None else None,
        "options": {"intel_iommu": opts.intel_iommu, "amd_iommu_off": opts.amd_iommu_off,
                    "iommu_off": opts.iommu_off, "passthrough": opts.passthrough},
        "in_guest": virt.in_guest,
    }


def _grub_fix(distro_family: Optional[str], add: str = "", remove: str = "") -> str:
    """How to change the kernel command line on this distribution, persistently."""
    if distro_family == "rhel":
        args = []
        if remove:
            args.append(f'--remove-args="{remove}"')
        if add:
            args.append(f'--args="{add}"')
        return f"'grubby --update-kernel=ALL {' '.join(args)}', then reboot"
    where = "GRUB_CMDLINE_LINUX in /etc/default/grub"
    regen = REGENERATE_GRUB.get(distro_family or "", "update-grub or grub2-mkconfig")
    change = " and ".join(p for p in (f"remove '{remove}'" if remove else "", f"add '{add}'" if add else "") if p)
    return f"{change} in {where}, run '{regen}', then reboot"


def _vfio(vfio: VfioPci) -> Tuple[Optional[bool], str]:
    """Is vfio-pci available (loaded, built in, or installed for the running release)? None: cannot tell."""
    if vfio.loaded:
        return True, "loaded (/sys/module/vfio_pci)"
    base = vfio.modules_dir
    if base is None:
        return None, "unknown: /lib/modules for the running kernel is not in this root"
    if vfio.module_file:
        return True, f"installed ({base}/kernel/drivers/vfio/pci)"
    builtin = vfio.builtin_text
    if "vfio-pci.ko" in builtin or "vfio_pci.ko" in builtin:
        return True, "built into the kernel"
    # Without modules.dep we cannot tell an unpopulated capture from a kernel without VFIO.
    if vfio.modules_dep or builtin:
        return False, f"not in {base} (neither a module nor built in)"
    return None, f"unknown: {base} has no modules.dep"


def _groups_found(found: IommuGroups, virt: Any, vfio_pci: VfioPci, evidence: Dict[str, Any]) -> Outcome:
    """The verdict when the kernel made IOMMU groups: a GPU that cannot be assigned alone, no vfio-pci, or pass."""
    groups, classes = found.groups, found.classes
    shared = {g: [f"{d} ({class_name(classes.get(d))})" for d in devs] for g, devs in groups.items() if len(devs) > 1}
    gpus = {d: g for g, devs in groups.items() for d in devs if (classes.get(d) or 0) >> 16 == 0x03}
    evidence.update(group_count=len(groups), gpus=gpus,
                    shared_groups=dict(list(shared.items())[:MAX_EVIDENCE_GROUPS]),
                    shared_groups_total=len(shared))
    where = f" (a virtual IOMMU inside this {virt.vendor} VM)" if virt.in_guest else ""
    vfio, vfio_how = _vfio(vfio_pci)
    evidence.update(vfio_pci=vfio, vfio_pci_source=vfio_how)
    sharing = gpus_sharing_groups(groups, classes)
    if sharing:
        names = "; ".join(
            f"GPU {s.address} shares IOMMU group {s.group} with "
            + ", ".join(f"{o} ({class_name(classes.get(o))})" for o in s.others) for s in sharing)
        evidence["gpus_sharing"] = {s.address: list(s.others) for s in sharing}
        return Outcome.warned(f"IOMMU active{where}, but {len(sharing)} GPU(s) cannot be assigned alone",
                              GPU_SHARING.format(names=names), GPU_SHARING_FIX, **evidence)
    if vfio is False:
        return Outcome.warned(
            f"IOMMU active{where} ({len(groups)} groups), but vfio-pci is missing",
            f"The kernel created {len(groups)} IOMMU groups, but the vfio-pci driver that device assignment "
            f"binds devices to is {vfio_how}.", NO_VFIO_FIX, **evidence)
    mode = {True: "; host DMA in passthrough (iommu=pt) mode", False: ""}.get(evidence["options"].get("passthrough"), "")
    detail = (f"{len(groups)} IOMMU groups, {len(shared)} of them shared by more than one device{mode}; vfio-pci "
              f"{vfio_how}. PCI devices can be assigned to guests with VFIO.")
    if gpus:
        detail += " GPUs: " + ", ".join(f"{d} (group {g})" for d, g in gpus.items()) + ", each in a group of its own."
    return Outcome.passed(f"IOMMU active{where}: {len(groups)} IOMMU groups, device assignment possible",
                          detail, **evidence)


def _arm64(tables: AcpiTables, device_tree: Tuple[str, ...], evidence: Dict[str, Any]) -> Outcome:
    iort = "IORT" in tables.present
    evidence.update(iort=iort, device_tree_iommus=list(device_tree))
    found = ("an ACPI IORT table" if iort else "") or (
        f"device tree IOMMU nodes ({', '.join(device_tree)})" if device_tree else "")
    return Outcome.skipped(
        "arm64: no IOMMU groups; whether the platform has a usable SMMU is unknown",
        (f"The firmware provides {found}, " if found else "Neither an ACPI IORT table nor device tree IOMMU "
         "nodes were found, ") + ARM64_UNDECODED, **evidence)


def _vt_d_off(opts: IommuOptions, default_on: Optional[bool], distro_family: Optional[str], name: str,
              evidence: Dict[str, Any]) -> Outcome:
    """DMAR in the firmware, no IOMMU groups: what keeps VT-d off in the kernel, and the fix."""
    disabled_by = evidence["disabled_by"]
    evidence["config_intel_iommu_default_on"] = default_on
    if disabled_by:
        why = f"The kernel command line has {disabled_by}, which switches it off."
        fix = _grub_fix(distro_family, add="intel_iommu=on", remove=disabled_by)
    elif opts.intel_iommu is True:
        why, fix = DMAR_BROKEN, DMAR_BROKEN_FIX
    else:
        why = VT_D_OFF_BY_DEFAULT if default_on is False else VT_D_MAYBE_OFF
        fix = _grub_fix(distro_family, add="intel_iommu=on")
    return Outcome.warned(
        f"{name} is in the firmware (ACPI DMAR) but not enabled in the kernel",
        f"The firmware describes the IOMMU, yet the kernel created no IOMMU groups. {why} Without it PCI "
        "devices cannot be passed through to guests.",
        f"Add intel_iommu=on to the kernel command line: {fix}. (iommu=pt is optional: it only keeps host "
        "devices out of IOMMU translation for speed.)", **evidence)


def _amd_vi_off(distro_family: Optional[str], name: str, evidence: Dict[str, Any]) -> Outcome:
    """IVRS in the firmware, no IOMMU groups: AMD-Vi is on by default, so an option disabled it or it failed."""
    disabled_by = evidence["disabled_by"]
    if disabled_by:
        return Outcome.warned(
            f"{name} is in the firmware (ACPI IVRS) but disabled by {disabled_by}",
            f"The AMD IOMMU is on by default whenever the firmware provides IVRS; {disabled_by} on the kernel "
            "command line switched it off, so there are no IOMMU groups and no device assignment.",
            f"Remove {disabled_by}: {_grub_fix(distro_family, remove=disabled_by)}. Nothing needs to be added: "
            "AMD-Vi needs no option to be on.", **evidence)
    return Outcome.warned(f"{name} is in the firmware (ACPI IVRS) but the kernel did not enable it",
                          AMD_VI_FAILED, AMD_VI_FAILED_FIX, **evidence)


def _no_groups_x86(vendor: Optional[str], tables: AcpiTables, virt: Any, evidence: Dict[str, Any]) -> Optional[Outcome]:
    """x86 without IOMMU groups, before the command line is asked: an unknown vendor, a VM without a virtual
    IOMMU, a root without ACPI tables, or firmware without the vendor's table (None: the table is there)."""
    if vendor not in VENDOR_TABLE:
        return Outcome.skipped(f"unknown x86 CPU vendor {quoted(vendor)}: which IOMMU table to expect is unknown",
                               "kvmcheck knows Intel and Zhaoxin (DMAR) and AMD and Hygon (IVRS).", **evidence)
    table, name = VENDOR_TABLE[vendor]
    has_table = table in tables.present
    evidence.update(firmware_table=table, firmware_table_present=has_table)
    if virt.in_guest and not has_table:
        return Outcome.skipped(
            f"this {virt.vendor or 'virtual'} VM has no virtual IOMMU: device assignment inside it is not possible",
            NO_VIOMMU.format(table=table), **evidence)
    if not tables.available:
        return Outcome.skipped("ACPI tables are not available in this root",
                               f"/sys/firmware/acpi/tables is missing, so the {table} table cannot be looked for.",
                               **evidence)
    if not has_table:
        return Outcome.warned(
            f"no ACPI {table} table: {name} is off in firmware or absent; device assignment not possible",
            f"The firmware publishes no {table} table, so the kernel has no IOMMU to use. Guests run fine, but "
            "PCI devices cannot be passed through to them (VFIO).",
            f"Enable {FIRMWARE_OPTION[table]} in the firmware setup, save and reboot. If the option does not "
            "exist, the platform has no IOMMU.", **evidence)
    return None


@check("iommu.enabled", "IOMMU enabled for device assignment")
def iommu_enabled(cpuinfo, family, cmdline, virt, iommu_units, iommu_groups, acpi_iommu_tables, vfio_pci,
                  device_tree_iommus, intel_iommu_default_on, distro_family, boot_cmdline=None) -> Outcome:
    """The IOMMU is on, so PCI devices (GPUs, NICs, NVMe) can be assigned to guests with VFIO.

    What: the firmware table for the CPU vendor (Intel DMAR, AMD IVRS, arm64
    IORT), the kernel's /sys/class/iommu units and /sys/kernel/iommu_groups,
    the IOMMU options on /proc/cmdline (intel_iommu=, amd_iommu=, iommu=), and
    the vfio-pci driver.  Each GPU must sit in an IOMMU group of its own
    (bridges and its own audio/USB functions aside) to be assigned alone.
    Options the boot loader's default entry or /etc/default/grub sets
    differently from /proc/cmdline are reported as pending (reboot, or
    regenerate the boot loader's configuration first).

    Why: device assignment needs the IOMMU to confine the device's DMA to the
    guest's memory.  It is optional: guests run fine without it, so a missing
    IOMMU is a warning, never a failure.

    Fix: enable VT-d or the AMD IOMMU in the firmware setup; on Intel add
    intel_iommu=on to the kernel command line (AMD-Vi is on by default, so
    remove amd_iommu=off or iommu=off if present); reboot.
    """
    outcome = _iommu(cpuinfo, family, cmdline, virt, iommu_units, iommu_groups, acpi_iommu_tables, vfio_pci,
                     device_tree_iommus, intel_iommu_default_on, distro_family)
    pending = boot_cmdline.pending(IOMMU_ARGS) if boot_cmdline is not None else None  # None: judged alone
    return outcome.awaiting(*pending) if pending else outcome


def _iommu(cpuinfo: Any, family: str, cmdline: Optional[KernelCmdline], virt: Any, iommu_units: Tuple[str, ...],
           iommu_groups: IommuGroups, acpi_iommu_tables: AcpiTables, vfio_pci: VfioPci, device_tree_iommus: Any,
           intel_iommu_default_on: Any, distro_family: Optional[str]) -> Outcome:
    if cpuinfo is None:
        return Outcome.skipped("no /proc/cpuinfo in this root", "The CPU vendor decides which firmware table to look for.")
    vendor = cpuinfo.first("vendor_id")
    opts = iommu_options(cmdline or KernelCmdline(()))
    evidence = _evidence(vendor, iommu_units, cmdline, opts, virt)
    if iommu_groups.groups:
        return _groups_found(iommu_groups, virt, vfio_pci, evidence)
    evidence["group_count"] = 0
    if family == "arm64":
        return _arm64(acpi_iommu_tables, device_tree_iommus.get(), evidence)
    if family != "x86":
        return Outcome.skipped(f"{family if family != 'unknown' else 'architecture unknown'}: no IOMMU groups "
                               "(no PCI devices, or IOMMU support not in this kernel)", OTHER_ARCH, **evidence)
    missing = _no_groups_x86(vendor, acpi_iommu_tables, virt, evidence)
    if missing:
        return missing
    table, name = VENDOR_TABLE[vendor]
    evidence["disabled_by"] = opts.disabled_by(table)
    if table == "DMAR":
        return _vt_d_off(opts, intel_iommu_default_on.get(), distro_family, name, evidence)
    return _amd_vi_off(distro_family, name, evidence)  # AMD and Hygon: AMD-Vi is on by default with IVRS
