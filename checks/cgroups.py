# SPDX-License-Identifier: GPL-2.0-or-later
"""Control groups: the controllers libvirt's QEMU driver uses to confine and account guests."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from kvmcheck.facts.context import Context
from kvmcheck.core.model import Outcome
from kvmcheck.parsers.cgroups import (CgroupLayout, CgroupMount, ProcCgroup, cgroup_layout,
                                      parse_controller_list, parse_proc_cgroups,
                                      parse_proc_self_cgroup)
from kvmcheck.core.registry import check

# What libvirt's QEMU driver uses (virt-host-validate WARNs for each), in its order; "blkio" is "io" on v2.
NEEDED = ("cpu", "cpuacct", "cpuset", "memory", "devices", "blkio")
# Informational: pids caps a guest's threads, freezer is used by LXC (QEMU pauses vCPUs itself).
OPTIONAL = ("pids", "freezer")
V2_NAME = {"blkio": "io"}
KCONFIG = {
    "cpu": "CONFIG_CGROUP_SCHED (CONFIG_FAIR_GROUP_SCHED)", "cpuacct": "CONFIG_CGROUP_CPUACCT",
    "cpuset": "CONFIG_CPUSETS", "memory": "CONFIG_MEMCG", "devices": "CONFIG_CGROUP_DEVICE",
    "blkio": "CONFIG_BLK_CGROUP", "pids": "CONFIG_CGROUP_PIDS", "freezer": "CONFIG_CGROUP_FREEZER",
}


def _label(name: str, v2: bool) -> str:
    return f"{name} ({V2_NAME[name]} on cgroup v2)" if v2 and name in V2_NAME else name


def _kernel_at_least(ctx: Context, version: Tuple[int, int]) -> Optional[bool]:
    kv = ctx.kernel_version()
    return None if kv is None else kv.version[:2] >= version


def _v2_devices(ctx: Context) -> Tuple[Optional[bool], str]:
    """Whether the cgroup v2 BPF device controller is there, and on what basis.

    virt-host-validate asks the kernel (BPF_PROG_QUERY for BPF_CGROUP_DEVICE), which needs
    privilege; kvmcheck does no bpf(2), so it reads the kernel configuration or the version.
    """
    release = ctx.osrelease()
    config, path, _ = ctx.kernel_config() if release else (None, None, [])
    if config is not None:
        value = config.get("CONFIG_CGROUP_BPF")
        if value == "y":
            return True, f"CONFIG_CGROUP_BPF=y in {path}"
        return False, f"CONFIG_CGROUP_BPF {'is not set' if value in (None, 'n') else '=' + value} in {path}"
    note = " (/proc/config.gz is compressed and not read)" if ctx.host.exists("/proc/config.gz") else ""
    newer = _kernel_at_least(ctx, (4, 15))
    if newer:
        return True, (f"assumed from cgroup v2 and kernel {release} >= 4.15, which brought the BPF device "
                      f"controller; only root's BPF_PROG_QUERY (as virt-host-validate does) could confirm it{note}")
    if newer is False:
        return False, f"kernel {release} predates the cgroup v2 BPF device controller (4.15)"
    return None, f"unknown: no kernel release or configuration to read{note}; only root's BPF_PROG_QUERY could tell"


def _v2_freezer(ctx: Context, mount: CgroupMount) -> Tuple[Optional[bool], str]:
    files = ctx.host.glob(f"{mount.target}/*/cgroup.freeze")
    if files:
        return True, f"core cgroup v2 freezer: {files[0]} exists"
    newer = _kernel_at_least(ctx, (5, 2))
    if newer:
        return True, f"core cgroup v2 freezer: kernel {ctx.osrelease()} >= 5.2 (cgroup.freeze in non-root cgroups)"
    if newer is False:
        return False, f"kernel {ctx.osrelease()} predates the cgroup v2 freezer (5.2)"
    return None, "unknown: no non-root cgroup.freeze and no kernel release to read"


def _why_missing(name: str, layout: CgroupLayout, table: Dict[str, ProcCgroup], v2: bool) -> str:
    row = table.get(V2_NAME.get(name, name) if v2 else name) or table.get(name)
    if name == "devices" and v2:
        return "the BPF device controller of cgroup v2 is not in this kernel (CONFIG_CGROUP_BPF)"
    if not table:
        return "not offered by any mounted hierarchy"
    if row is None:
        return f"not in this kernel ({KCONFIG.get(name, name)})"
    if not row.enabled:
        return f"disabled on the kernel command line (cgroup_disable={row.name})"
    if v2:
        return "compiled in but not offered in cgroup.controllers (still bound to a cgroup v1 hierarchy?)"
    return "compiled in but not mounted"


def _fix(missing: List[str], reasons: Dict[str, str], mode: str) -> str:
    steps = []
    disabled = [n for n in missing if "cgroup_disable" in reasons[n]]
    absent = [n for n in missing if "not in this kernel" in reasons[n]]
    unmounted = [n for n in missing if n not in disabled and n not in absent]
    if disabled:
        steps.append("remove " + ", ".join(f"cgroup_disable={n}" for n in disabled) + " from the kernel command "
                     "line (GRUB_CMDLINE_LINUX in /etc/default/grub, or 'grubby --update-kernel ALL --remove-args "
                     "...'), then reboot")
    if absent:
        steps.append("boot a kernel built with " + ", ".join(
            "CONFIG_CGROUP_BPF" if (n == "devices" and mode == "v2") else KCONFIG[n].split(" ")[0] for n in absent)
            + " (every distribution kernel has them)")
    if unmounted and mode == "v2":
        steps.append("a controller still held by a cgroup v1 mount is not offered to cgroup v2: unmount that v1 "
                     "hierarchy or boot with systemd.unified_cgroup_hierarchy=1 (and without cgroup_no_v1=... "
                     "exceptions)")
    elif unmounted:
        steps.append("mount each one, e.g. 'mkdir -p /sys/fs/cgroup/NAME && mount -t cgroup -o NAME cgroup "
                     "/sys/fs/cgroup/NAME' (systemd mounts every compiled-in controller at boot), or move to the "
                     "unified hierarchy with systemd.unified_cgroup_hierarchy=1 on the kernel command line (libvirt "
                     ">= 5.0 supports cgroup v2)")
    return "; ".join(s[0].upper() + s[1:] for s in steps) + ". Then restart libvirtd/virtqemud."


@check("cgroups.controllers", "cgroup controllers for guests", reads=(
    "/proc/self/mounts", "/proc/mounts", "/proc/cgroups", "/proc/self/cgroup", "/sys/fs/cgroup/cgroup.controllers",
    "/sys/fs/cgroup/cgroup.subtree_control", "/sys/fs/cgroup/*/cgroup.freeze", "/sys/fs/cgroup/*/cgroup.controllers",
    "/sys/fs/cgroup/*/cgroup.subtree_control",  # a hybrid layout's cgroup2 mount (/sys/fs/cgroup/unified)
    "/boot/config-*",
    "/proc/sys/kernel/osrelease",
))
def cgroups_controllers(ctx: Context) -> Outcome:
    """The cgroup controllers libvirt's QEMU driver uses are mounted.

    What: the cgroup (v1) and cgroup2 mounts of /proc/self/mounts; on cgroup v2
    the root's cgroup.controllers (and cgroup.subtree_control); /proc/cgroups
    for controllers compiled in or disabled at boot.  Needed: cpu, cpuacct
    (synthesised on v2 from the core cpu.stat), cpuset, memory, devices (on v2
    the BPF device controller: root-only to probe, so decided from
    CONFIG_CGROUP_BPF in /boot/config-RELEASE or from kernel >= 4.15), and
    blkio (io on v2).  pids and freezer (v2: the core cgroup.freeze, kernel
    >= 5.2) are informational.  A hybrid layout (v1 controllers plus a
    controller-less cgroup2 at /sys/fs/cgroup/unified) is read the way libvirt
    does: the empty cgroup2 is ignored.  Evidence names each controller's source.

    Why: libvirt puts every guest into its own cgroup under machine.slice for
    CPU shares and pinning (cpu, cpuset), memory limits, disk I/O throttling
    (blkio/io), statistics (cpuacct) and the device ACL that keeps QEMU from
    opening host disks (devices).  A missing controller disables that feature,
    or makes domains using it fail to start.

    Fix: on cgroup v1 mount the controller (systemd mounts them at boot) or boot
    with systemd.unified_cgroup_hierarchy=1; remove cgroup_disable=NAME from the
    kernel command line; use a kernel built with the controller.
    """
    host = ctx.host
    table_path, mounts = ctx.mounts()
    if table_path is None:
        problems = ctx.mount_table_problems()
        if problems and not host.live:
            return Outcome.skipped(f"mount table unreadable ({problems[-1]})",
                                   "The cgroup layout is set up at boot; it cannot be told without a readable mount "
                                   f"table. {'; '.join(problems)}.", unreadable=problems)
        if not host.live:
            return Outcome.skipped("no /proc/mounts in this root",
                                   "The cgroup layout is set up at boot; an offline root without a captured mount "
                                   "table cannot tell.")
        return Outcome.warned("no mount table readable", "Neither /proc/self/mounts nor /proc/mounts could be read, "
                              "so no cgroup hierarchy can be found.", "Mount procfs ('mount -t proc proc /proc').")
    layout = cgroup_layout(mounts)
    try:
        table = parse_proc_cgroups(host.read_optional("/proc/cgroups") or "")
    except OSError:
        table = {}
    evidence: Dict[str, object] = {
        "mount_table": table_path,
        "mounts": [f"{m.target} {'cgroup2' if m.version == 2 else 'cgroup'}"
                   + (f" {','.join(m.controllers)}" if m.controllers else "")
                   + (f" name={m.name}" if m.name else "") for m in layout.mounts],
    }
    try:
        placement = parse_proc_self_cgroup(host.read_optional("/proc/self/cgroup") or "")
    except OSError:
        placement = []
    if placement:
        evidence["placement"] = [f"{p.hierarchy}:{','.join(p.controllers)}:{p.path}" for p in placement]
    if not layout.mounts:
        return Outcome.warned(
            "no cgroup file system is mounted",
            f"{table_path} has no cgroup or cgroup2 mount, so libvirt cannot place guests in cgroups: no CPU, "
            "memory or I/O limits, no device ACL for QEMU.",
            "systemd mounts cgroups at boot; under another init (or in a container) mount the unified hierarchy: "
            "'mount -t cgroup2 none /sys/fs/cgroup' (kernel >= 4.15), then restart libvirtd/virtqemud.", **evidence)

    found: Dict[str, str] = {}
    for name, m in layout.v1_controllers().items():
        found[name] = f"cgroup v1 mount {m.target} ({table_path} line {m.line})"
    unknown: Dict[str, str] = {}
    missing_reason: Dict[str, str] = {}
    active: Optional[CgroupMount] = None
    empty_v2: List[str] = []
    unreadable_v2: List[str] = []
    v2_controllers: Tuple[str, ...] = ()
    for m in layout.v2:
        try:
            ctl_text = host.read_optional(f"{m.target}/cgroup.controllers")
        except OSError:
            ctl_text = None
        if ctl_text is None:
            unreadable_v2.append(m.target)
            continue
        ctl = parse_controller_list(ctl_text)
        if ctl:
            active, v2_controllers = m, ctl
            break
        empty_v2.append(m.target)
    source_v2 = None
    if active is None and unreadable_v2 and not found:
        # A captured root without /sys/fs/cgroup: fall back to what /proc/cgroups says is compiled in.
        target = unreadable_v2[0]
        active = next(m for m in layout.v2 if m.target == target)
        if table:
            v2_controllers = tuple(r.name for r in table.values() if r.enabled and r.hierarchy == 0)
            source_v2 = f"/proc/cgroups (enabled, no v1 hierarchy; {target}/cgroup.controllers not readable)"
        else:
            msg = (f"cgroup v2 is mounted at {target}, but neither its cgroup.controllers nor /proc/cgroups can be "
                   "read")
            if not host.live:
                return Outcome.skipped(msg + " in this root", "The controllers cannot be told offline.", **evidence)
            return Outcome.warned(msg, "The controllers offered to guests cannot be told.",
                                  "Run kvmcheck as root, or check that /sys/fs/cgroup is mounted sysfs-style.",
                                  **evidence)
    if active is not None:
        evidence["v2_controllers"] = list(v2_controllers)
        source_v2 = source_v2 or f"{active.target}/cgroup.controllers"
        try:
            subtree = host.read_optional(f"{active.target}/cgroup.subtree_control")
        except OSError:
            subtree = None
        if subtree is not None:
            evidence["subtree_control"] = list(parse_controller_list(subtree))
        for name in NEEDED + OPTIONAL:
            if name not in found and V2_NAME.get(name, name) in v2_controllers:
                found[name] = source_v2
        if "cpuacct" not in found:
            found["cpuacct"] = "synthesized on cgroup v2: the core cpu.stat of every cgroup provides it"
        if "devices" not in found:
            present, basis = _v2_devices(ctx)
            evidence["devices_basis"] = basis
            if present:
                found["devices"] = "cgroup v2 BPF device controller: " + basis
            elif present is None:
                unknown["devices"] = basis
            else:
                missing_reason["devices"] = basis
        if "freezer" not in found:
            present, basis = _v2_freezer(ctx, active)
            if present:
                found["freezer"] = basis
            elif present is None:
                unknown["freezer"] = basis
            else:
                missing_reason["freezer"] = basis
    if empty_v2:
        evidence["ignored_empty_cgroup2"] = empty_v2
    if unreadable_v2 and (active is None or active.target not in unreadable_v2):
        evidence["unreadable_cgroup2"] = unreadable_v2
    v1_used = any(m.controllers for m in layout.v1)
    mode = "hybrid" if (v1_used and layout.v2) else ("v2" if active is not None else "v1")
    v2 = mode == "v2"
    evidence["layout"] = mode
    evidence["controllers"] = {n: found.get(n) or unknown.get(n) and f"unknown: {unknown[n]}"
                               for n in NEEDED + OPTIONAL}

    for name in NEEDED + OPTIONAL:
        if name not in found and name not in unknown and name not in missing_reason:
            missing_reason[name] = _why_missing(name, layout, table, v2)
    missing = [n for n in NEEDED if n in missing_reason]
    optional_missing = [n for n in OPTIONAL if n in missing_reason]
    if missing or optional_missing:
        evidence["missing"] = {n: missing_reason[n] for n in missing + optional_missing}

    where = {"v2": f"cgroup v2 at {active.target}" if active else "cgroup v2",
             "v1": "cgroup v1", "hybrid": "hybrid cgroup v1/v2"}[mode]
    notes = []
    if empty_v2:
        notes.append(f"The cgroup2 mount at {', '.join(empty_v2)} has no controllers (systemd's own process "
                     "tracking); libvirt ignores it, and so does this check.")
    if mode == "hybrid" and active is not None:
        notes.append(f"The cgroup2 mount at {active.target} holds {', '.join(v2_controllers)}; the rest are on v1.")
    if unknown:
        notes.append("Could not tell: " + "; ".join(f"{n}: {r}" for n, r in unknown.items()) + ".")
    if "devices_basis" in evidence and "devices" in found:
        notes.append(f"devices: {evidence['devices_basis']}.")
    if optional_missing:
        notes.append("Informational: " + "; ".join(f"{_label(n, v2)} missing ({missing_reason[n]})"
                                                   for n in optional_missing)
                     + ". pids only caps a guest's thread count and freezer is used by libvirt's LXC driver, not "
                     "by QEMU guests.")
    if missing:
        names = ", ".join(_label(n, v2) for n in missing)
        detail = (f"{where}: libvirt's QEMU driver uses {names}, which "
                  f"{'is' if len(missing) == 1 else 'are'} missing: "
                  + "; ".join(f"{n}: {missing_reason[n]}" for n in missing)
                  + ". Guests still start, but without the matching limits, pinning, statistics or device ACL "
                  "(and domains that ask for them fail).")
        return Outcome.warned(f"{where}: missing {names}", " ".join([detail] + notes),
                              _fix(missing, missing_reason, mode), **evidence)
    have = [_label(n, v2) if not v2 else V2_NAME.get(n, n) for n in NEEDED + OPTIONAL if n in found]
    summary = f"{where}: {', '.join(have)}"
    if optional_missing:
        summary += f" ({', '.join(optional_missing)} missing: informational)"
    return Outcome.passed(summary, " ".join(notes), **evidence)
