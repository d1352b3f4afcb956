# SPDX-License-Identifier: GPL-2.0-or-later
"""Paravirtual I/O: the host's vhost drivers, and the virtio/kvm-clock/hotplug build options of its kernel."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from kvmcheck.core.model import Outcome
from kvmcheck.checks.network import availability
from kvmcheck.core.registry import check
from kvmcheck.facts import paravirt  # noqa: F401 - the facts judged here
from kvmcheck.facts.drivers import VHOST_NET, VHOST_SCSI, VHOST_VSOCK, DriverFacts
from kvmcheck.parsers.kconfig import KConfig

VHOST = ((VHOST_NET, "virtio-net data path in the kernel (see network.vhost-net)"),
         (VHOST_VSOCK, "virtio-vsock host side (guest agents, systemd-ssh-proxy, Kata)"),
         (VHOST_SCSI, "vhost-scsi targets (rarely used)"))
# Options that matter when this host is itself a guest (nested KVM): the guest side of paravirtualization.
GUEST_OPTIONS = ("CONFIG_KVM_GUEST", "CONFIG_PARAVIRT", "CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_NET", "CONFIG_VIRTIO_BLK",
                 "CONFIG_SCSI_VIRTIO", "CONFIG_VIRTIO_BALLOON", "CONFIG_HOTPLUG_CPU", "CONFIG_HOTPLUG_PCI",
                 "CONFIG_HOTPLUG_PCI_PCIE", "CONFIG_MEMORY_HOTPLUG")
NOTHING_KNOWN = ("No /sys/module/vhost*, no /proc/misc entry, no /lib/modules/RELEASE/modules.dep or modules.builtin, "
                 "and no /boot/config-RELEASE in this root. ")
NO_KVM_GUEST = ("Without CONFIG_KVM_GUEST there is no kvm-clock or paravirtual spinlocks under the outer hypervisor "
                "(if that hypervisor is KVM).")
NO_VHOST_NET_WHY = (": QEMU moves virtio-net packets in userspace, with more CPU per packet and higher latency "
                    "(the same cause as network.vhost-net). ")
NO_VHOST_NET_FIX = ("'modprobe vhost_net'; if there is no such module, install the distribution's full kernel modules "
                    "package (linux-modules-extra, kernel-modules) or a kernel built with CONFIG_VHOST_NET=m.")


def _state(drv: DriverFacts, dep: Tuple[str, ...]) -> Tuple[Optional[str], bool, Dict[str, object]]:
    """(how the driver is available or None, whether its absence is known, its evidence)."""
    evidence = drv.evidence()
    if dep:
        evidence["modules_dep"] = list(dep)
    avail = availability(drv)
    if avail is None and dep:
        avail = "installed as a module (modules.dep)"
    if avail is None and drv.config_value == "m" and not drv.kernels:
        # Built as a module; with no modules.builtin record of the kernel the installed files cannot be listed.
        avail = "a module of this kernel build (config)"
    # Absent from a /proc/misc the root holds is absent, live or captured, as network.vhost-net judges it:
    # a snapshot's /proc/misc is the running kernel's, read when the snapshot was taken.
    known_absent = avail is None and (
        bool(drv.kernels) or drv.config_value == "n" or bool(dep) or drv.registered is False)
    return avail, known_absent, evidence


def _guest_notes(config: Optional[KConfig], path: Optional[str], nested: bool, guest_modules,  # type: ignore[no-untyped-def]
                 evidence: dict) -> List[str]:
    """What the kernel build (or, without it, /sys/module) says of the host's own virtio side."""
    if config is not None:
        options = {o: config.get(o) or "n" for o in GUEST_OPTIONS}
        evidence["guest_options"] = options
        if not nested:
            return []
        off = [o for o in GUEST_OPTIONS if options[o] == "n"]
        return ["This host is itself a guest; its kernel build "
                + (f"lacks {', '.join(off)}" if off else "has kvm-clock, virtio and hotplug support")
                + f" ({path})."] + ([NO_KVM_GUEST] if "CONFIG_KVM_GUEST" in off else [])
    if not nested:
        return []
    seen = list(guest_modules.get())
    evidence["guest_modules"] = seen
    return ["This host is itself a guest; virtio drivers in /sys/module: " + (", ".join(seen) or "none")
            + " (no kernel config to tell kvm-clock and hotplug support)."]


@check("paravirt.virtio", "vhost drivers and paravirtualization in the kernel build")
def paravirt_virtio(vhost_net_driver, vhost_vsock_driver, vhost_scsi_driver, modules_dep, kernel_config,
                    host_is_guest, guest_modules) -> Outcome:
    """The host kernel's vhost drivers, and its virtio, kvm-clock and hotplug options when it is itself a guest.

    What: vhost_net, vhost_vsock and vhost_scsi loaded or built in
    (/sys/module, /proc/misc, modules.builtin), installed for the running
    kernel (/lib/modules/RELEASE/modules.dep or the .ko file), or set in
    /boot/config-RELEASE (y, m or not set).  The config also gives
    CONFIG_KVM_GUEST, CONFIG_PARAVIRT, the virtio guest drivers and
    CONFIG_HOTPLUG_CPU/HOTPLUG_PCI/MEMORY_HOTPLUG, reported when the host is
    itself a guest (nested KVM), the only time its own virtio side matters.
    /proc/config.gz is gzip and is not read.  vhost_net known to be missing
    warns; vhost_vsock and vhost_scsi are optional and only noted.  Nothing
    readable about the kernel's modules: skip.

    Why: vhost moves virtio data in the host kernel instead of QEMU's
    userspace loop; vhost_vsock serves virtio-vsock sockets (guest agents,
    ssh over vsock).  A nested host without CONFIG_KVM_GUEST has no kvm-clock
    and no paravirtual spinlocks or TLB flush.

    Fix: 'modprobe vhost_net' / 'modprobe vhost_vsock'; a kernel without them
    needs the distribution's full modules package (linux-modules-extra,
    kernel-modules) or a build with CONFIG_VHOST_NET=m and
    CONFIG_VHOST_VSOCK=m.
    """
    drivers = {VHOST_NET: vhost_net_driver, VHOST_VSOCK: vhost_vsock_driver, VHOST_SCSI: vhost_scsi_driver}
    states = {dev.module: _state(drivers[dev], modules_dep.get(dev.module, ())) for dev, _ in VHOST}
    evidence: Dict[str, object] = {m: found for m, (_, _, found) in states.items()}
    evidence["config"] = kernel_config.path
    notes = list(kernel_config.notes)
    if kernel_config.config is None and not modules_dep and not any(
            avail or absent or "sys_module" in found for avail, absent, found in states.values()):
        return Outcome.skipped("nothing readable about the kernel's vhost drivers", NOTHING_KNOWN + " ".join(notes),
                               **evidence)
    parts, missing_optional = [], []
    for dev, role in VHOST:
        avail, absent, _ = states[dev.module]
        parts.append(f"{dev.module} " + (avail.replace("built into the kernel", "built in") if avail else
                                         "missing" if absent else "unknown"))
        if absent and dev is not VHOST_NET:
            missing_optional.append(f"{dev.module} ({role})")
    if missing_optional:
        notes.append("Optional and missing: " + "; ".join(missing_optional) + ".")
    evidence["host_is_guest"] = host_is_guest
    notes += _guest_notes(kernel_config.config, kernel_config.path, host_is_guest, guest_modules, evidence)
    summary = ", ".join(parts) + (f" ({kernel_config.path})" if kernel_config.path else "")
    if states["vhost_net"][1]:
        config = vhost_net_driver.config
        return Outcome.warned(
            summary, "The kernel has no vhost_net" + (f" ({config})" if vhost_net_driver.config_value is not None
                                                      else "") + NO_VHOST_NET_WHY + " ".join(notes),
            NO_VHOST_NET_FIX, **evidence).because("network.vhost-net")
    return Outcome.passed(summary, " ".join(notes), **evidence)
