# SPDX-License-Identifier: GPL-2.0-or-later
"""Paravirtual I/O: the host's vhost drivers, and the virtio/kvm-clock/hotplug build options of its kernel."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from kvmcheck.facts.context import Context
from kvmcheck.facts.drivers import VHOST_NET, Driver, availability, driver_facts, modules_dep
from kvmcheck.core.model import Outcome
from kvmcheck.parsers.kconfig import KConfig
from kvmcheck.core.registry import check

VHOST_VSOCK = Driver("/dev/vhost-vsock", (10, 241), "vhost-vsock", "vhost_vsock",
                      "kernel/drivers/vhost/vhost_vsock.ko", "CONFIG_VHOST_VSOCK", "vhost-vsock")
# vhost-scsi has no device node: targets are set up through configfs (targetcli).
VHOST_SCSI = Driver("", (0, 0), "", "vhost_scsi", "kernel/drivers/vhost/vhost_scsi.ko", "CONFIG_VHOST_SCSI", "")
VHOST = ((VHOST_NET, "virtio-net data path in the kernel (see network.vhost-net)"),
         (VHOST_VSOCK, "virtio-vsock host side (guest agents, systemd-ssh-proxy, Kata)"),
         (VHOST_SCSI, "vhost-scsi targets (rarely used)"))
# Options that matter when this host is itself a guest (nested KVM): the guest side of paravirtualization.
GUEST_OPTIONS = ("CONFIG_KVM_GUEST", "CONFIG_PARAVIRT", "CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_NET", "CONFIG_VIRTIO_BLK",
                 "CONFIG_SCSI_VIRTIO", "CONFIG_VIRTIO_BALLOON", "CONFIG_HOTPLUG_CPU", "CONFIG_HOTPLUG_PCI",
                 "CONFIG_HOTPLUG_PCI_PCIE", "CONFIG_MEMORY_HOTPLUG")
GUEST_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "virtio_balloon", "virtio_console")


def _config(ctx: Context) -> Tuple[Optional[KConfig], Optional[str], List[str]]:
    return ctx.kernel_config()


def _state(ctx: Context, dev: Driver, dep: Dict[str, List[str]],
           config: Optional[KConfig]) -> Tuple[Optional[str], bool, Dict[str, object]]:
    """(how the driver is available or None, whether its absence is known, facts)."""
    facts = driver_facts(ctx, dev)
    if dev.misc == "":
        facts.pop("registered", None)  # no misc device: /proc/misc says nothing about it
    if dev.module in dep:
        facts["modules_dep"] = dep[dev.module]
    value = config.get(dev.config) if config is not None else None
    if value is not None:
        facts["config_value"] = value
    avail = availability(facts)
    if avail is None and facts.get("modules_dep"):
        avail = "installed as a module (modules.dep)"
    if avail is None and value == "m" and "kernels" not in facts:
        # Built as a module; with no modules.builtin record of the kernel the installed files cannot be listed.
        avail = "a module of this kernel build (config)"
    # Absent from a /proc/misc the root holds is absent, live or captured, as network.vhost-net judges it:
    # a snapshot's /proc/misc is the running kernel's, read when the snapshot was taken.
    known_absent = avail is None and (
        "kernels" in facts or value == "n" or "modules_dep" in facts or facts.get("registered") is False)
    return avail, known_absent, facts


@check("paravirt.virtio", "vhost drivers and paravirtualization in the kernel build", reads=(
    "/sys/module/vhost*", "/proc/misc", "/lib/modules/*/modules.dep", "/lib/modules/*/modules.builtin",
    "/lib/modules/*/kernel/drivers/vhost/*", "/boot/config-*", "/proc/config.gz", "/sys/module/virtio*",
))
def paravirt_virtio(ctx: Context) -> Outcome:
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
    config, config_path, notes = _config(ctx)
    dep = modules_dep(ctx)
    states = {dev.module: _state(ctx, dev, dep, config) for dev, _ in VHOST}
    evidence: Dict[str, object] = {m: facts for m, (_, _, facts) in states.items()}
    evidence["config"] = config_path
    knows = config is not None or bool(dep) or any(
        avail or absent or "sys_module" in facts for avail, absent, facts in states.values())
    if not knows:
        return Outcome.skipped(
            "nothing readable about the kernel's vhost drivers",
            "No /sys/module/vhost*, no /proc/misc entry, no /lib/modules/RELEASE/modules.dep or modules.builtin, "
            "and no /boot/config-RELEASE in this root. " + " ".join(notes), **evidence)
    parts, missing_optional = [], []
    for dev, role in VHOST:
        avail, absent, _ = states[dev.module]
        if avail:
            parts.append(f"{dev.module} {avail.replace('built into the kernel', 'built in')}")
        elif absent:
            parts.append(f"{dev.module} missing")
            if dev is not VHOST_NET:
                missing_optional.append(f"{dev.module} ({role})")
        else:
            parts.append(f"{dev.module} unknown")
    if missing_optional:
        notes.append("Optional and missing: " + "; ".join(missing_optional) + ".")
    try:
        nested = ctx.in_guest()
    except OSError:
        nested = False
    evidence["host_is_guest"] = nested
    if config is not None:
        guest_opts = {o: config.get(o) or "n" for o in GUEST_OPTIONS}
        evidence["guest_options"] = guest_opts
        if nested:
            off = [o for o in GUEST_OPTIONS if guest_opts[o] == "n"]
            notes.append("This host is itself a guest; its kernel build "
                         + (f"lacks {', '.join(off)}" if off else "has kvm-clock, virtio and hotplug support")
                         + f" ({config_path}).")
            if "CONFIG_KVM_GUEST" in off:
                notes.append("Without CONFIG_KVM_GUEST there is no kvm-clock or paravirtual spinlocks under the "
                             "outer hypervisor (if that hypervisor is KVM).")
    elif nested:
        seen = [m for m in GUEST_MODULES if ctx.host.is_dir(f"/sys/module/{m}")]
        evidence["guest_modules"] = seen
        notes.append("This host is itself a guest; virtio drivers in /sys/module: " + (", ".join(seen) or "none")
                     + " (no kernel config to tell kvm-clock and hotplug support).")
    summary = ", ".join(parts) + (f" ({config_path})" if config_path else "")
    net_avail, net_absent, net_facts = states["vhost_net"]
    if net_absent:
        return Outcome.warned(
            summary,
            "The kernel has no vhost_net" + (f" ({net_facts['config']})" if "config" in net_facts else "")
            + ": QEMU moves virtio-net packets in userspace, with more CPU per packet and higher latency "
            "(the same cause as network.vhost-net). " + " ".join(notes),
            "'modprobe vhost_net'; if there is no such module, install the distribution's full kernel modules "
            "package (linux-modules-extra, kernel-modules) or a kernel built with CONFIG_VHOST_NET=m.", **evidence,
        ).because("network.vhost-net")
    return Outcome.passed(summary, " ".join(notes), **evidence)
