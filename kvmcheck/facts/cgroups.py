# SPDX-License-Identifier: GPL-2.0-or-later
"""Control groups as the root shows them: the cgroup mounts, /proc/cgroups, the cgroup2 mount libvirt would
use (its cgroup.controllers, cgroup.subtree_control, cgroup.freeze files), /proc/self/cgroup, and the kernel
configuration's CONFIG_CGROUP_BPF.  Each file keeps why it was not read: absent, denied or unreadable."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Readout, fact, read
from kvmcheck.facts import system  # noqa: F401 - mounts, osrelease, kernel_config are declared there
from kvmcheck.parsers.cgroups import (CgroupLayout, CgroupMount, Membership, ProcCgroup, cgroup_layout,
                                      parse_controller_list, parse_proc_cgroups, parse_proc_self_cgroup)

PROC_CGROUPS = "/proc/cgroups"
PROC_SELF_CGROUP = "/proc/self/cgroup"
CONFIG_GZ = "/proc/config.gz"


class CgroupTable(Record):
    """/proc/cgroups: each controller compiled in, the v1 hierarchy it is bound to (0: none), enabled at boot."""

    file: Readout
    rows: Dict[str, ProcCgroup]  # {} unless file.ok


class Placement(Record):
    """/proc/self/cgroup: the cgroups this process is in."""

    file: Readout
    rows: Tuple[Membership, ...]  # () unless file.ok


class V2Mount(Record):
    mount: CgroupMount
    file: Readout  # its cgroup.controllers
    controllers: Tuple[str, ...]  # () unless file.ok


class CgroupV2(Record):
    """The cgroup2 mounts, and the one libvirt uses.

    visited: the cgroup2 mounts in table order up to the first that offers controllers (libvirt stops there).
    active: that one; when none offers any and no cgroup v1 mount carries a controller, the first whose
    cgroup.controllers could not be read (a captured root without /sys), else None.
    """

    visited: Tuple[V2Mount, ...]
    active: Optional[V2Mount]
    subtree_control: Optional[Readout]  # of the active mount
    freeze_files: Tuple[str, ...]  # ACTIVE/*/cgroup.freeze (the core v2 freezer), when no v1 mount has freezer
    freeze_listing: Optional[str]  # why ACTIVE could not be listed for them; None when it was (or not needed)


class BpfConfig(Record):
    """CONFIG_CGROUP_BPF (the cgroup v2 device controller) in the running kernel's configuration."""

    value: Optional[str]  # "y", "n", None when the configuration does not set it
    path: Optional[str]  # the configuration read; None when there is none (then value is None)
    config_gz: bool  # /proc/config.gz exists (compressed: not read), asked only when path is None


@fact(reads=(PROC_CGROUPS,))
def proc_cgroups(host) -> CgroupTable:
    found = read(host, PROC_CGROUPS)
    return CgroupTable(found, parse_proc_cgroups(found.text) if found.ok and found.text else {})


@fact(reads=(PROC_SELF_CGROUP,))
def cgroup_placement(host) -> Placement:
    found = read(host, PROC_SELF_CGROUP)
    return Placement(found, tuple(parse_proc_self_cgroup(found.text)) if found.ok and found.text else ())


@fact()
def cgroup_mounts(mounts) -> CgroupLayout:
    """The cgroup (v1) and cgroup2 entries of the mount table, in table order."""
    return cgroup_layout(mounts.entries)


# Where cgroup2 is mounted on every distribution (a hybrid layout's at /sys/fs/cgroup/unified); the freezer
# glob stats each directory on the way.
V2_READS = ("/sys", "/sys/fs", "/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/cgroup.controllers",
            "/sys/fs/cgroup/cgroup.subtree_control", "/sys/fs/cgroup/*/cgroup.freeze",
            "/sys/fs/cgroup/*/cgroup.controllers", "/sys/fs/cgroup/*/cgroup.subtree_control")


@fact(reads=V2_READS)
def cgroup_v2(host, cgroup_mounts) -> CgroupV2:
    visited = []
    active: Optional[V2Mount] = None
    for m in cgroup_mounts.v2:
        found = read(host, f"{m.target}/cgroup.controllers")
        here = V2Mount(m, found, parse_controller_list(found.text or "") if found.ok else ())
        visited.append(here)
        if here.controllers:
            active = here
            break
    v1 = cgroup_mounts.v1_controllers()
    if active is None and not v1:
        active = next((v for v in visited if not v.file.ok), None)
    if active is None:
        return CgroupV2(tuple(visited), None, None, (), None)
    subtree = read(host, f"{active.mount.target}/cgroup.subtree_control")
    files: Tuple[str, ...] = ()
    listing = None
    if "freezer" not in v1:
        try:
            files = tuple(host.glob(f"{active.mount.target}/*/cgroup.freeze"))
        except OSError as exc:
            listing = f"{exc.filename or active.mount.target}: {exc.strerror or exc}"
    return CgroupV2(tuple(visited), active, subtree, files, listing)


@fact(reads=(CONFIG_GZ,), uses=("kernel_config",))
def cgroup_bpf(host, osrelease, facts) -> BpfConfig:
    """From /boot/config-RELEASE of the running release only (no release: no configuration to trust)."""
    found = facts.get("kernel_config") if osrelease else None
    if found is not None and found.config is not None:
        return BpfConfig(found.config.get("CONFIG_CGROUP_BPF"), found.path, False)
    try:
        gz = host.exists(CONFIG_GZ)
    except OSError:
        gz = False  # /proc itself cannot be searched: nothing there to mention
    return BpfConfig(None, None, gz)
