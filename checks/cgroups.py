# SPDX-License-Identifier: GPL-2.0-or-later
"""Control groups: the controllers libvirt's QEMU driver uses to confine and account guests."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from kvmcheck.core.model import Outcome, Status
from kvmcheck.core.record import Record
from kvmcheck.core.registry import check
from kvmcheck.facts import Readout
from kvmcheck.facts import cgroups  # noqa: F401 - the facts judged here
from kvmcheck.parsers.cgroups import CgroupLayout, ProcCgroup

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
RESTART = "Then restart libvirtd/virtqemud."

NO_MOUNT_TABLE = {
    "unreadable": "The cgroup layout is set up at boot; it cannot be told without a readable mount table. {}.",
    "offline": ("no /proc/mounts in this root", "The cgroup layout is set up at boot; an offline root without a "
                "captured mount table cannot tell."),
    "live": ("no mount table readable", "Neither /proc/self/mounts nor /proc/mounts could be read, so no cgroup "
             "hierarchy can be found.", "Mount procfs ('mount -t proc proc /proc')."),
}
NO_CGROUPS = (
    "no cgroup file system is mounted",
    "{} has no cgroup or cgroup2 mount, so libvirt cannot place guests in cgroups: no CPU, memory or I/O limits, "
    "no device ACL for QEMU.",
    "systemd mounts cgroups at boot; under another init (or in a container) mount the unified hierarchy: "
    "'mount -t cgroup2 none /sys/fs/cgroup' (kernel >= 4.15), then restart libvirtd/virtqemud.")
V2_UNREADABLE = ("cgroup v2 is mounted at {}, but neither its cgroup.controllers nor /proc/cgroups can be read",
                 "The controllers cannot be told offline.", "The controllers offered to guests cannot be told.",
                 "Run kvmcheck as root, or check that /sys/fs/cgroup is mounted sysfs-style.")
DENIED = ("The user running kvmcheck may not read {}, so which cgroup controllers guests get cannot be told.",
          "Run kvmcheck as root ('sudo kvmcheck'), or let this user read {}.")
FIX = {
    "disabled": ("remove {} from the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, or 'grubby "
                 "--update-kernel ALL --remove-args ...'), then reboot"),
    "absent": "boot a kernel built with {} (every distribution kernel has them)",
    "unmounted-v2": ("a controller still held by a cgroup v1 mount is not offered to cgroup v2: unmount that v1 "
                     "hierarchy or boot with systemd.unified_cgroup_hierarchy=1 (and without cgroup_no_v1=... "
                     "exceptions)"),
    "unmounted": ("mount each one, e.g. 'mkdir -p /sys/fs/cgroup/NAME && mount -t cgroup -o NAME cgroup "
                  "/sys/fs/cgroup/NAME' (systemd mounts every compiled-in controller at boot), or move to the "
                  "unified hierarchy with systemd.unified_cgroup_hierarchy=1 on the kernel command line (libvirt "
                  ">= 5.0 supports cgroup v2)"),
}
MISSING_EFFECT = (". Guests still start, but without the matching limits, pinning, statistics or device ACL "
                  "(and domains that ask for them fail).")
OPTIONAL_NOTE = (". pids only caps a guest's thread count and freezer is used by libvirt's LXC driver, not by "
                 "QEMU guests.")


class Survey(Record):
    """What the judge found: each controller's source, or why it is missing or cannot be told."""

    mode: str  # "v1", "v2" or "hybrid"
    where: str  # the layout in words, for the summary
    active: Optional[str]  # the cgroup2 mount holding controllers
    v2_controllers: Tuple[str, ...]
    found: Dict[str, str]
    unknown: Dict[str, str]
    missing: Dict[str, str]  # reason, for every controller (needed or optional) neither found nor unknown
    empty_v2: List[str]
    denied: List[Readout]  # files that could show a controller not found, and could not be read


def _label(name: str, v2: bool) -> str:
    return f"{name} ({V2_NAME[name]} on cgroup v2)" if v2 and name in V2_NAME else name


def _failed(files: List[Readout]) -> List[Readout]:
    return [f for f in files if f is not None and f.state in ("denied", "unreadable")]


def _unread(f: Readout) -> str:
    return f"permission denied reading {f.path}" if f.state == "denied" else f"cannot read {f.path}: {f.reason}"


def _cannot_tell(files: List[Readout], evidence: dict) -> Outcome:
    """A denied file is no missing controller: the verdict waits for someone who may read it."""
    paths = ", ".join(f.path for f in files)
    evidence["unreadable"] = [f"{f.path}: {f.reason}" for f in files]
    return Outcome(Status.SKIP, "; ".join(_unread(f) for f in files), DENIED[0].format(paths),
                   DENIED[1].format(paths), evidence)


def _no_mount_table(mounts, live: bool) -> Outcome:
    problems = list(mounts.problems)
    if problems and not live:
        return Outcome.skipped(f"mount table unreadable ({problems[-1]})",
                               NO_MOUNT_TABLE["unreadable"].format("; ".join(problems)), unreadable=problems)
    if not live:
        return Outcome.skipped(*NO_MOUNT_TABLE["offline"])
    return Outcome.warned(*NO_MOUNT_TABLE["live"])


def _base_evidence(mounts, layout: CgroupLayout, placement) -> Dict[str, object]:
    evidence: Dict[str, object] = {
        "mount_table": mounts.path,
        "mounts": [f"{m.target} {'cgroup2' if m.version == 2 else 'cgroup'}"
                   + (f" {','.join(m.controllers)}" if m.controllers else "")
                   + (f" name={m.name}" if m.name else "") for m in layout.mounts],
    }
    if placement.rows:
        evidence["placement"] = [f"{p.hierarchy}:{','.join(p.controllers)}:{p.path}" for p in placement.rows]
    return evidence


def _at_least(kernel_version, version: Tuple[int, int]) -> Optional[bool]:
    return None if kernel_version is None else kernel_version.version[:2] >= version


def _v2_devices(bpf, osrelease, kernel_version) -> Tuple[Optional[bool], str]:
    """Whether the cgroup v2 BPF device controller is there, and on what basis.

    virt-host-validate asks the kernel (BPF_PROG_QUERY for BPF_CGROUP_DEVICE), which needs
    privilege; kvmcheck does no bpf(2), so it reads the kernel configuration or the version.
    """
    if bpf.path is not None:
        if bpf.value == "y":
            return True, f"CONFIG_CGROUP_BPF=y in {bpf.path}"
        return False, f"CONFIG_CGROUP_BPF {'is not set' if bpf.value in (None, 'n') else '=' + bpf.value} in {bpf.path}"
    note = " (/proc/config.gz is compressed and not read)" if bpf.config_gz else ""
    newer = _at_least(kernel_version, (4, 15))
    if newer:
        return True, (f"assumed from cgroup v2 and kernel {osrelease} >= 4.15, which brought the BPF device "
                      f"controller; only root's BPF_PROG_QUERY (as virt-host-validate does) could confirm it{note}")
    if newer is False:
        return False, f"kernel {osrelease} predates the cgroup v2 BPF device controller (4.15)"
    return None, f"unknown: no kernel release or configuration to read{note}; only root's BPF_PROG_QUERY could tell"


def _v2_freezer(v2, osrelease, kernel_version) -> Tuple[Optional[bool], str]:
    if v2.freeze_files:
        return True, f"core cgroup v2 freezer: {v2.freeze_files[0]} exists"
    newer = _at_least(kernel_version, (5, 2))
    if newer:
        return True, f"core cgroup v2 freezer: kernel {osrelease} >= 5.2 (cgroup.freeze in non-root cgroups)"
    if newer is False:
        return False, f"kernel {osrelease} predates the cgroup v2 freezer (5.2)"
    if v2.freeze_listing:
        return None, f"unknown: {v2.freeze_listing} (listing it for cgroup.freeze) and no kernel release to read"
    return None, "unknown: no non-root cgroup.freeze and no kernel release to read"


def _why_missing(name: str, table: Dict[str, ProcCgroup], v2: bool) -> str:
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
    disabled = [n for n in missing if "cgroup_disable" in reasons[n]]
    absent = [n for n in missing if "not in this kernel" in reasons[n]]
    unmounted = [n for n in missing if n not in disabled and n not in absent]
    steps = []
    if disabled:
        steps.append(FIX["disabled"].format(", ".join(f"cgroup_disable={n}" for n in disabled)))
    if absent:
        steps.append(FIX["absent"].format(", ".join(
            "CONFIG_CGROUP_BPF" if (n == "devices" and mode == "v2") else KCONFIG[n].split(" ")[0] for n in absent)))
    if unmounted:
        steps.append(FIX["unmounted-v2" if mode == "v2" else "unmounted"])
    return "; ".join(s[0].upper() + s[1:] for s in steps) + ". " + RESTART


def _v2_probe(name: str, probe: Tuple[Optional[bool], str], found: dict, unknown: dict, missing: dict,
              prefix: str = "") -> None:
    present, basis = probe
    (found if present else unknown if present is None else missing)[name] = (prefix + basis) if present else basis


def _survey(layout, v2, table, bpf, osrelease, kernel_version, mounts, live, evidence) -> "Survey | Outcome":
    """Each controller's source, in the order libvirt looks: the v1 mounts, then the active cgroup2."""
    found = {name: f"cgroup v1 mount {m.target} ({mounts.path} line {m.line})"
             for name, m in layout.v1_controllers().items()}
    unknown: Dict[str, str] = {}
    missing: Dict[str, str] = {}
    v2_controllers: Tuple[str, ...] = ()
    active = v2.active
    if active is not None:
        v2_controllers, source = active.controllers, f"{active.mount.target}/cgroup.controllers"
        if not active.file.ok:  # a captured root without /sys: what /proc/cgroups says is compiled in
            if not table.rows:
                return _v2_unreadable(active, table, live, evidence)
            v2_controllers = tuple(r.name for r in table.rows.values() if r.enabled and r.hierarchy == 0)
            source = (f"/proc/cgroups (enabled, no v1 hierarchy; {active.mount.target}/cgroup.controllers not "
                      "readable)")
        evidence["v2_controllers"] = list(v2_controllers)
        if v2.subtree_control is not None and v2.subtree_control.ok:
            evidence["subtree_control"] = list((v2.subtree_control.text or "").split())
        for name in NEEDED + OPTIONAL:
            if name not in found and V2_NAME.get(name, name) in v2_controllers:
                found[name] = source
        found.setdefault("cpuacct", "synthesized on cgroup v2: the core cpu.stat of every cgroup provides it")
        if "devices" not in found:
            probe = _v2_devices(bpf, osrelease, kernel_version)
            evidence["devices_basis"] = probe[1]
            _v2_probe("devices", probe, found, unknown, missing, "cgroup v2 BPF device controller: ")
        if "freezer" not in found:
            _v2_probe("freezer", _v2_freezer(v2, osrelease, kernel_version), found, unknown, missing)
    empty = [v.mount.target for v in v2.visited if v.file.ok and not v.controllers]
    unread = [v.mount.target for v in v2.visited if not v.file.ok]
    if empty:
        evidence["ignored_empty_cgroup2"] = empty
    if unread and (active is None or active.mount.target not in unread):
        evidence["unreadable_cgroup2"] = unread
    mode = "hybrid" if (any(m.controllers for m in layout.v1) and layout.v2) else ("v2" if active else "v1")
    where = {"v2": f"cgroup v2 at {active.mount.target}" if active else "cgroup v2",
             "v1": "cgroup v1", "hybrid": "hybrid cgroup v1/v2"}[mode]
    denied = _failed([table.file] + [v.file for v in v2.visited])
    return Survey(mode, where, active.mount.target if active else None, v2_controllers, found, unknown, missing,
                  empty, denied)


def _v2_unreadable(active, table, live: bool, evidence: dict) -> Outcome:
    """cgroup2 is mounted, and neither its cgroup.controllers nor /proc/cgroups can be read."""
    denied = _failed([active.file, table.file])
    if denied:
        return _cannot_tell(denied, evidence)
    summary = V2_UNREADABLE[0].format(active.mount.target)
    if not live:
        return Outcome.skipped(summary + " in this root", V2_UNREADABLE[1], **evidence)
    return Outcome.warned(summary, V2_UNREADABLE[2], V2_UNREADABLE[3], **evidence)


def _explain_missing(s: Survey, table) -> List[str]:
    """Why each controller neither found nor unknown is missing.  While a file that could show it was not
    readable it is unknown instead: those are returned (a needed one makes the check skip, naming the file)."""
    untold = []
    for name in NEEDED + OPTIONAL:
        if name in s.found or name in s.unknown or name in s.missing:
            continue
        if s.denied:
            s.unknown[name] = "; ".join(_unread(f) for f in s.denied)
            untold.append(name)
        else:
            s.missing[name] = _why_missing(name, table.rows, s.mode == "v2")
    return untold


def _notes(s: Survey, evidence: dict, optional_missing: List[str]) -> List[str]:
    notes = []
    if s.empty_v2:
        notes.append(f"The cgroup2 mount at {', '.join(s.empty_v2)} has no controllers (systemd's own process "
                     "tracking); libvirt ignores it, and so does this check.")
    if s.mode == "hybrid" and s.active is not None:
        notes.append(f"The cgroup2 mount at {s.active} holds {', '.join(s.v2_controllers)}; the rest are on v1.")
    if s.unknown:
        notes.append("Could not tell: " + "; ".join(f"{n}: {r}" for n, r in s.unknown.items()) + ".")
    if "devices_basis" in evidence and "devices" in s.found:
        notes.append(f"devices: {evidence['devices_basis']}.")
    if optional_missing:
        notes.append("Informational: " + "; ".join(f"{_label(n, s.mode == 'v2')} missing ({s.missing[n]})"
                                                   for n in optional_missing) + OPTIONAL_NOTE)
    return notes


def _verdict(s: Survey, evidence: dict, unreadable: List[Readout]) -> Outcome:
    """Every needed controller found (pass), or the missing ones with their reasons and fixes (warn)."""
    if unreadable:  # evidence only: /proc/self/cgroup, cgroup.subtree_control
        evidence["unreadable"] = [f"{f.path}: {f.reason}" for f in unreadable]
    v2 = s.mode == "v2"
    missing = [n for n in NEEDED if n in s.missing]
    optional_missing = [n for n in OPTIONAL if n in s.missing]
    if missing or optional_missing:
        evidence["missing"] = {n: s.missing[n] for n in missing + optional_missing}
    notes = _notes(s, evidence, optional_missing)
    if missing:
        names = ", ".join(_label(n, v2) for n in missing)
        detail = (f"{s.where}: libvirt's QEMU driver uses {names}, which {'is' if len(missing) == 1 else 'are'} "
                  "missing: " + "; ".join(f"{n}: {s.missing[n]}" for n in missing) + MISSING_EFFECT)
        return Outcome.warned(f"{s.where}: missing {names}", " ".join([detail] + notes),
                              _fix(missing, s.missing, s.mode), **evidence)
    have = [_label(n, v2) if not v2 else V2_NAME.get(n, n) for n in NEEDED + OPTIONAL if n in s.found]
    summary = f"{s.where}: {', '.join(have)}"
    if optional_missing:
        summary += f" ({', '.join(optional_missing)} missing: informational)"
    return Outcome.passed(summary, " ".join(notes), **evidence)


@check("cgroups.controllers", "cgroup controllers for guests")
def cgroups_controllers(mounts, cgroup_mounts, cgroup_v2, proc_cgroups, cgroup_placement, cgroup_bpf, osrelease,
                        kernel_version, live) -> Outcome:
    """The cgroup controllers libvirt's QEMU driver uses are mounted.

    What: the cgroup and cgroup2 mounts of /proc/self/mounts, the cgroup v2
    root's cgroup.controllers, and /proc/cgroups (compiled in, disabled at
    boot).  Needed: cpu, cpuacct (on v2 the core cpu.stat), cpuset, memory,
    devices (on v2 the BPF device controller, root-only to probe: decided from
    CONFIG_CGROUP_BPF in /boot/config-RELEASE or kernel >= 4.15), blkio (io on
    v2); pids and freezer (v2: cgroup.freeze, kernel >= 5.2) are
    informational.  A hybrid layout's empty cgroup2 is ignored, as libvirt
    does.  A file that could show a missing controller but cannot be read
    makes the check skip, naming it.

    Why: libvirt puts every guest into its own cgroup under machine.slice for
    CPU shares and pinning (cpu, cpuset), memory limits, disk I/O throttling
    (blkio/io), statistics (cpuacct) and the device ACL that keeps QEMU from
    opening host disks (devices).  A missing controller disables that feature,
    or makes domains using it fail to start.

    Fix: on cgroup v1 mount the controller (systemd mounts them at boot) or boot
    with systemd.unified_cgroup_hierarchy=1; remove cgroup_disable=NAME from the
    kernel command line; use a kernel built with the controller.
    """
    if mounts.path is None:
        return _no_mount_table(mounts, live)
    evidence = _base_evidence(mounts, cgroup_mounts, cgroup_placement)
    if not cgroup_mounts.mounts:
        return Outcome.warned(NO_CGROUPS[0], NO_CGROUPS[1].format(mounts.path), NO_CGROUPS[2], **evidence)
    survey = _survey(cgroup_mounts, cgroup_v2, proc_cgroups, cgroup_bpf, osrelease, kernel_version, mounts, live,
                     evidence)
    if isinstance(survey, Outcome):
        return survey
    evidence["layout"] = survey.mode
    untold = _explain_missing(survey, proc_cgroups)
    evidence["controllers"] = {n: survey.found.get(n) or survey.unknown.get(n) and f"unknown: {survey.unknown[n]}"
                               for n in NEEDED + OPTIONAL}
    if any(n in NEEDED for n in untold):
        return _cannot_tell(survey.denied, evidence)
    return _verdict(survey, evidence, _failed([cgroup_placement.file, cgroup_v2.subtree_control]))

