# SPDX-License-Identifier: GPL-2.0-or-later
"""Control-group layout: the cgroup lines of /proc/self/mounts (or /proc/mounts), the
/proc/cgroups table of cgroup v1, a cgroup v2 ``cgroup.controllers`` or
``cgroup.subtree_control`` file, and /proc/self/cgroup.  Pure text in, data out.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from .mounts import Mount, parse_mounts

from kvmcheck.core.record import Record

# Controllers a cgroup v1 mount can carry (the option words of a "cgroup" mount that name one).
V1_CONTROLLERS = frozenset({
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio", "perf_event",
    "net_prio", "hugetlb", "pids", "rdma", "misc", "debug",
})


class CgroupMount(Record):
    target: str
    version: int  # 1 or 2
    controllers: Tuple[str, ...]  # v1: from the mount options; v2: () (see cgroup.controllers)
    name: Optional[str]  # v1 named hierarchy ("systemd" for name=systemd)
    line: int


class CgroupLayout(Record):
    v1: Tuple[CgroupMount, ...]
    v2: Tuple[CgroupMount, ...]

    @property
    def mounts(self) -> Tuple[CgroupMount, ...]:
        return self.v1 + self.v2

    def v1_controllers(self) -> Dict[str, CgroupMount]:
        """Controller -> the first v1 mount carrying it."""
        found: Dict[str, CgroupMount] = {}
        for m in self.v1:
            for c in m.controllers:
                found.setdefault(c, m)
        return found


def parse_cgroup_mounts(text: str) -> CgroupLayout:
    """The cgroup (v1) and cgroup2 lines of a mount table, in table order."""
    return cgroup_layout(parse_mounts(text, comments=False))


def cgroup_layout(mounts: Sequence[Mount]) -> CgroupLayout:
    """The cgroup (v1) and cgroup2 entries of parsed mounts, in table order."""
    v1: List[CgroupMount] = []
    v2: List[CgroupMount] = []
    for m in mounts:
        if m.fstype == "cgroup":
            ctrl = tuple(o for o in m.options if o in V1_CONTROLLERS)
            name = m.option("name")
            v1.append(CgroupMount(m.target, 1, ctrl, name or None, m.line))
        elif m.fstype == "cgroup2":
            v2.append(CgroupMount(m.target, 2, (), None, m.line))
    return CgroupLayout(tuple(v1), tuple(v2))


class ProcCgroup(Record):
    name: str
    hierarchy: int  # 0: not bound to a v1 hierarchy (unmounted, or on cgroup v2)
    num_cgroups: int
    enabled: bool  # False: disabled at boot (cgroup_disable=NAME)


def parse_proc_cgroups(text: str) -> Dict[str, ProcCgroup]:
    """/proc/cgroups: ``#subsys_name hierarchy num_cgroups enabled`` rows, keyed by name."""
    rows: Dict[str, ProcCgroup] = {}
    for raw in text.splitlines():
        fields = raw.split()
        if not fields or fields[0].startswith("#") or len(fields) < 4:
            continue
        try:
            rows[fields[0]] = ProcCgroup(fields[0], int(fields[1]), int(fields[2]), fields[3] == "1")
        except ValueError:
            continue
    return rows


def parse_controller_list(text: str) -> Tuple[str, ...]:
    """cgroup.controllers or cgroup.subtree_control: space-separated names ("" for none)."""
    return tuple(text.split())


class Membership(Record):
    hierarchy: int  # 0 is the cgroup v2 entry
    controllers: Tuple[str, ...]  # () for v2; may hold "name=systemd"
    path: str


def parse_proc_self_cgroup(text: str) -> List[Membership]:
    """/proc/self/cgroup: ``ID:controller,list:/path`` lines (``0::/path`` for cgroup v2)."""
    rows = []
    for raw in text.splitlines():
        parts = raw.strip().split(":", 2)
        if len(parts) != 3:
            continue
        try:
            hid = int(parts[0])
        except ValueError:
            continue
        rows.append(Membership(hid, tuple(c for c in parts[1].split(",") if c), parts[2]))
    return rows
