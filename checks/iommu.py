# SPDX-License-Identifier: GPL-2.0-or-later
"""IOMMU checks: readiness for PCI device assignment (VFIO passthrough)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from kvmcheck.facts.context import Context, quoted
from kvmcheck.core.model import Outcome
from kvmcheck.parsers.cmdline import KernelCmdline
from kvmcheck.parsers.iommu import (IommuOptions, class_name, gpus_sharing_groups, iommu_options,
                                    parse_pci_class)
from kvmcheck.core.registry import check

TABLES = "/sys/firmware/acpi/tables"
GROUPS = "/sys/kernel/iommu_groups"
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


def _grub_fix(ctx: Context, add: str = "", remove: str = "") -> str:
    """How to change the kernel command line on this distribution, persistently."""
    fam = ctx.distro_family()
    if fam == "rhel":
        args = []
        if remove:
            args.append(f'--remove-args="{remove}"')
        if add:
            args.append(f'--args="{add}"')
        return f"'grubby --update-kernel=ALL {' '.join(args)}', then reboot"
    where = "GRUB_CMDLINE_LINUX in /etc/default/grub"
    regen = {"debian": "update-grub", "ubuntu": "update-grub", "suse": "grub2-mkconfig -o /boot/grub2/grub.cfg",
             "arch": "grub-mkconfig -o /boot/grub/grub.cfg"}.get(fam or "", "update-grub or grub2-mkconfig")
    change = " and ".join(p for p in (f"remove '{remove}'" if remove else "", f"add '{add}'" if add else "") if p)
    return f"{change} in {where}, run '{regen}', then reboot"


def _groups(ctx: Context) -> Dict[str, List[str]]:
    host = ctx.host
    names = [g for g in host.listdir(GROUPS) if g.isdigit()]
    return {g: host.listdir(f"{GROUPS}/{g}/devices") for g in sorted(names, key=int)}


def _vfio(ctx: Context) -> Tuple[Optional[bool], str]:
    """Is vfio-pci available (loaded, built in, or installed for the running release)? None: cannot tell."""
    host = ctx.host
    if host.is_dir("/sys/module/vfio_pci"):
        return True, "loaded (/sys/module/vfio_pci)"
    release = ctx.osrelease()
    if not release or not host.is_dir(f"/lib/modules/{release}"):
        return None, "unknown: /lib/modules for the running kernel is not in this root"
    base = f"/lib/modules/{release}"
    if host.glob(f"{base}/kernel/drivers/vfio/pci/vfio-pci.ko*") or host.glob(f"{base}/kernel/drivers/vfio/pci/vfio_pci.ko*"):
        return True, f"installed ({base}/kernel/drivers/vfio/pci)"
    try:
        builtin = host.read_optional(f"{base}/modules.builtin") or ""
    except OSError:
        builtin = ""
    if "vfio-pci.ko" in builtin or "vfio_pci.ko" in builtin:
        return True, "built into the kernel"
    # Without modules.dep we cannot tell an unpopulated capture from a kernel without VFIO.
    if host.exists(f"{base}/modules.dep") or builtin:
        return False, f"not in {base} (neither a module nor built in)"
    return None, f"unknown: {base} has no modules.dep"


def _kernel_default(ctx: Context) -> Optional[bool]:
    """CONFIG_INTEL_IOMMU_DEFAULT_ON of the running kernel, when its config is in the root."""
    if not ctx.osrelease():
        return None
    conf, _, _ = ctx.kernel_config()
    if conf is None:
        return None
    if conf.get("CONFIG_INTEL_IOMMU") in (None, "n"):
        return None
    return conf.enabled("CONFIG_INTEL_IOMMU_DEFAULT_ON")


def _device_tree_iommus(ctx: Context) -> List[str]:
    found = []
    for base in ("/proc/device-tree", "/sys/firmware/devicetree/base"):
        for top in ctx.host.listdir(base):
            nodes = [top] + [f"{top}/{n}" for n in ctx.host.listdir(f"{base}/{top}")] if ctx.host.is_dir(f"{base}/{top}") else [top]
            found.extend(n for n in nodes if n.rsplit("/", 1)[-1].split("@")[0] in ("iommu", "smmu"))
        if found:
            break
    return found


def _passthrough_pass(ctx: Context, groups: Dict[str, List[str]], evidence: Dict[str, Any]) -> Outcome:
    host = ctx.host
    classes = {}
    for devs in groups.values():
        for dev in devs:
            classes[dev] = parse_pci_class(host.first_line(f"/sys/bus/pci/devices/{dev}/class"))
    shared = {g: [f"{d} ({class_name(classes.get(d))})" for d in devs] for g, devs in groups.items() if len(devs) > 1}
    gpus = {d: g for g, devs in groups.items() for d in devs if (classes.get(d) or 0) >> 16 == 0x03}
    evidence.update(group_count=len(groups), gpus=gpus,
                    shared_groups=dict(list(shared.items())[:MAX_EVIDENCE_GROUPS]),
                    shared_groups_total=len(shared))
    virt = ctx.virt()
    where = f" (a virtual IOMMU inside this {virt.vendor} VM)" if virt.in_guest else ""
    vfio, vfio_how = _vfio(ctx)
    evidence.update(vfio_pci=vfio, vfio_pci_source=vfio_how)
    sharing = gpus_sharing_groups(groups, classes)
    if sharing:
        names = "; ".join(
            f"GPU {s.address} shares IOMMU group {s.group} with "
            + ", ".join(f"{o} ({class_name(classes.get(o))})" for o in s.others) for s in sharing)
        evidence["gpus_sharing"] = {s.address: list(s.others) for s in sharing}
        return Outcome.warned(
            f"IOMMU active{where}, but {len(sharing)} GPU(s) cannot be assigned alone",
            f"{names}. VFIO assigns whole IOMMU groups: every other endpoint in the group must be unbound "
            "from its host driver and given to the same guest (bridges and the GPU's own functions such as "
            "its HDMI audio do not count). Groups are formed by PCIe topology and ACS support.",
            "Move the GPU to a slot wired to the CPU (its own root port) rather than the chipset, enable ACS "
            "in the firmware if offered, or assign the whole group to one guest. The pcie_acs_override kernel "
            "patch fakes isolation and gives up the protection the IOMMU offers.", **evidence)
    if vfio is False:
        return Outcome.warned(
            f"IOMMU active{where} ({len(groups)} groups), but vfio-pci is missing",
            f"The kernel created {len(groups)} IOMMU groups, but the vfio-pci driver that device assignment "
            f"binds devices to is {vfio_how}.",
            "Install the distribution's full kernel modules package (linux-modules-extra on Ubuntu, "
            "kernel-modules on RHEL/Fedora) for the running kernel, or build with CONFIG_VFIO_PCI.", **evidence)
    mode = {True: "; host DMA in passthrough (iommu=pt) mode", False: ""}.get(evidence["options"].get("passthrough"), "")
    detail = (f"{len(groups)} IOMMU groups, {len(shared)} of them shared by more than one device{mode}; vfio-pci "
              f"{vfio_how}. PCI devices can be assigned to guests with VFIO.")
    if gpus:
        detail += " GPUs: " + ", ".join(f"{d} (group {g})" for d, g in gpus.items()) + ", each in a group of its own."
    return Outcome.passed(f"IOMMU active{where}: {len(groups)} IOMMU groups, device assignment possible",
                          detail, **evidence)


@check("iommu.enabled", "IOMMU enabled for device assignment", reads=(
    "/proc/cpuinfo", "/proc/cmdline", "/sys/firmware/acpi/tables/DMAR", "/sys/firmware/acpi/tables/IVRS",
    "/sys/firmware/acpi/tables/IORT", "/sys/class/iommu", "/sys/kernel/iommu_groups",
    "/sys/bus/pci/devices/*/class", "/sys/module/vfio_pci", "/lib/modules/<release>/kernel/drivers/vfio",
    "/boot/config-<release>", "/proc/device-tree", "/sys/firmware/devicetree/base",
))
def iommu_enabled(ctx: Context) -> Outcome:
    """The IOMMU is on, so PCI devices (GPUs, NICs, NVMe) can be assigned to guests with VFIO.

    What: the firmware table for the CPU vendor (Intel DMAR, AMD IVRS, arm64
    IORT), the kernel's /sys/class/iommu units and /sys/kernel/iommu_groups,
    the IOMMU options on /proc/cmdline (intel_iommu=, amd_iommu=, iommu=), and
    the vfio-pci driver.  Each GPU must sit in an IOMMU group of its own
    (bridges and its own audio/USB functions aside) to be assigned alone.

    Why: device assignment needs the IOMMU to confine the device's DMA to the
    guest's memory.  It is optional: guests run fine without it, so a missing
    IOMMU is a warning, never a failure.

    Fix: enable VT-d or the AMD IOMMU in the firmware setup; on Intel add
    intel_iommu=on to the kernel command line (AMD-Vi is on by default, so
    remove amd_iommu=off or iommu=off if present); reboot.
    """
    cpu = ctx.cpuinfo()
    if cpu is None:
        return Outcome.skipped("no /proc/cpuinfo in this root", "The CPU vendor decides which firmware table to look for.")
    host = ctx.host
    family = ctx.family()
    vendor = cpu.first("vendor_id")
    given = ctx.cmdline()
    cmdline = given or KernelCmdline(())
    opts: IommuOptions = iommu_options(cmdline)
    units = host.listdir("/sys/class/iommu")
    groups = _groups(ctx)
    virt = ctx.virt()
    evidence: Dict[str, Any] = {
        "vendor_id": vendor, "iommu_units": units,
        "cmdline": list(opts.given) if given is not None else None,
        "options": {"intel_iommu": opts.intel_iommu, "amd_iommu_off": opts.amd_iommu_off,
                    "iommu_off": opts.iommu_off, "passthrough": opts.passthrough},
        "in_guest": virt.in_guest,
    }
    if groups:
        return _passthrough_pass(ctx, groups, evidence)
    evidence["group_count"] = 0

    if family == "arm64":
        iort = host.exists(f"{TABLES}/IORT")
        dt = _device_tree_iommus(ctx)
        evidence.update(iort=iort, device_tree_iommus=dt)
        found = ("an ACPI IORT table" if iort else "") or (f"device tree IOMMU nodes ({', '.join(dt)})" if dt else "")
        return Outcome.skipped(
            "arm64: no IOMMU groups; whether the platform has a usable SMMU is unknown",
            (f"The firmware provides {found}, " if found else "Neither an ACPI IORT table nor device tree IOMMU "
             "nodes were found, ")
            + "but kvmcheck does not decode IORT or device tree bindings, so it cannot say whether an SMMU is "
            "there and merely lacks its driver (arm-smmu, arm-smmu-v3) or is absent. With an SMMU and its driver, "
            "/sys/kernel/iommu_groups fills up and this check passes.", **evidence)
    if family != "x86":
        return Outcome.skipped(
            f"{family if family != 'unknown' else 'architecture unknown'}: no IOMMU groups (no PCI devices, or "
            "IOMMU support not in this kernel)",
            "kvmcheck reads no firmware table on this architecture; s390 zPCI and POWER PowerNV hosts get "
            "IOMMU groups as soon as PCI functions are online.", **evidence)
    if vendor not in VENDOR_TABLE:
        return Outcome.skipped(f"unknown x86 CPU vendor {quoted(vendor)}: which IOMMU table to expect is unknown",
                               "kvmcheck knows Intel and Zhaoxin (DMAR) and AMD and Hygon (IVRS).", **evidence)
    table, name = VENDOR_TABLE[vendor]
    has_tables_dir = host.is_dir(TABLES)
    has_table = host.exists(f"{TABLES}/{table}")
    evidence.update(firmware_table=table, firmware_table_present=has_table)
    if virt.in_guest and not has_table:
        return Outcome.skipped(
            f"this {virt.vendor or 'virtual'} VM has no virtual IOMMU: device assignment inside it is not possible",
            f"There is no ACPI {table} table and no IOMMU group. Device assignment in a VM needs a virtual IOMMU "
            "(QEMU -device intel-iommu or virtio-iommu, libvirt <iommu model='intel'/>) and the devices passed "
            "to the VM first; most clouds offer neither. Check the physical host instead.", **evidence)
    if not has_tables_dir:
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

    disabled_by = opts.disabled_by(table)
    evidence["disabled_by"] = disabled_by
    if table == "DMAR":
        default_on = _kernel_default(ctx)
        evidence["config_intel_iommu_default_on"] = default_on
        if disabled_by:
            why = f"The kernel command line has {disabled_by}, which switches it off."
            fix = _grub_fix(ctx, add="intel_iommu=on", remove=disabled_by)
        elif opts.intel_iommu is True:
            why = ("intel_iommu=on is already on the command line, so the kernel tried and failed: it may lack "
                   "CONFIG_INTEL_IOMMU, or the DMAR table is broken (see 'dmesg | grep -i -e DMAR -e IOMMU').")
            fix = ("Look for DMAR errors in the kernel log, update the firmware, and use a distribution kernel "
                   "(built with CONFIG_INTEL_IOMMU); then reboot.")
        else:
            why = ("No intel_iommu= option is given and this kernel keeps VT-d off by default "
                   "(CONFIG_INTEL_IOMMU_DEFAULT_ON is not set)." if default_on is False else
                   "No intel_iommu= option is given; many distribution kernels keep VT-d off unless asked.")
            fix = _grub_fix(ctx, add="intel_iommu=on")
        return Outcome.warned(
            f"{name} is in the firmware (ACPI DMAR) but not enabled in the kernel",
            f"The firmware describes the IOMMU, yet the kernel created no IOMMU groups. {why} Without it PCI "
            "devices cannot be passed through to guests.",
            f"Add intel_iommu=on to the kernel command line: {fix}. (iommu=pt is optional: it only keeps host "
            "devices out of IOMMU translation for speed.)", **evidence)
    # AMD and Hygon: AMD-Vi is enabled by default whenever IVRS is present.
    if disabled_by:
        return Outcome.warned(
            f"{name} is in the firmware (ACPI IVRS) but disabled by {disabled_by}",
            f"The AMD IOMMU is on by default whenever the firmware provides IVRS; {disabled_by} on the kernel "
            "command line switched it off, so there are no IOMMU groups and no device assignment.",
            f"Remove {disabled_by}: {_grub_fix(ctx, remove=disabled_by)}. Nothing needs to be added: "
            "AMD-Vi needs no option to be on.", **evidence)
    return Outcome.warned(
        f"{name} is in the firmware (ACPI IVRS) but the kernel did not enable it",
        "The AMD IOMMU is on by default whenever IVRS is present and nothing on the command line disables "
        "it, yet there are no IOMMU groups. The kernel may lack CONFIG_AMD_IOMMU, or its initialization "
        "failed (look for 'AMD-Vi' errors in 'dmesg'), often because of a firmware IVRS bug.",
        "Check 'dmesg | grep -i AMD-Vi', update the firmware, and set the firmware's IOMMU option to Enabled "
        "rather than Auto; no kernel option is needed for AMD-Vi.", **evidence)
