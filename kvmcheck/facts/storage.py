# SPDX-License-Identifier: GPL-2.0-or-later
"""Storage for virtual machines as the root shows it: the mount table (else /etc/fstab), SAN block storage
(iSCSI, Fibre Channel, dm-multipath), libvirt's default pool, and bounded statvfs probes of the mounts.

Network and cluster file systems can hang: a stat or statvfs on an NFS mount whose server went away
blocks until the server returns.  So no probe here touches such a mount from kvmcheck's own process:
the statvfs calls run in Host.statvfs_many's abandonable children, all under one deadline, and a mount
that does not answer is recorded as such.  Links of the images path are followed (in this process)
only once its statvfs has answered in time.
"""
from __future__ import annotations

import fnmatch
import xml.etree.ElementTree as ET
from typing import Any, Dict, Optional, Tuple

from kvmcheck.core.host import StatVfs
from kvmcheck.core.record import Record
from kvmcheck.facts import Later, fact, read
from kvmcheck.facts.system import MOUNT_TABLES, is_name, quoted
from kvmcheck.parsers.mounts import Mount, backing_mount, parse_mounts, top_mounts

IMAGES_DIR = "/var/lib/libvirt/images"
DEFAULT_POOL_XML = "/etc/libvirt/storage/default.xml"
FSTAB = "/etc/fstab"
MULTIPATH_CONF = "/etc/multipath.conf"
ISCSI = "/sys/class/iscsi_session"
FC = "/sys/class/fc_host"
BLOCK = "/sys/block"


class StorageMounts(Record):
    """The mounted file systems, else /etc/fstab's (an offline Kickstart target has no /proc)."""

    path: Optional[str]  # where they came from; None when the root has neither
    mounts: Tuple[Mount, ...]
    installed: bool  # a mount table or /etc: a system to judge (not an empty root or a bare /proc+/sys dump)
    fstab: str  # how /etc/fstab was found when it was needed: ok, absent, denied, unreadable; "not read"

    @property
    def live(self) -> bool:
        """A table of mounted file systems (not fstab's wishes): those can be probed."""
        return self.path in MOUNT_TABLES

    @property
    def shared(self) -> Tuple[Mount, ...]:
        """The network and cluster file systems, each mount point once (the top mount)."""
        return tuple(m for m in top_mounts(list(self.mounts)) if m.shared_kind)


class PoolPath(Record):
    """The default pool's target directory: from libvirt's XML, else /var/lib/libvirt/images.

    flaw: why the XML was not used ("unreadable", "malformed", "not-pool", "no-target"; None when it was,
    or when there is none); flaw_detail: the reason, the parser's message, or the target as written.
    """

    path: str
    source: str  # "default" or the pool XML path
    pool_type: str
    state: str  # the XML file: ok, absent, denied or unreadable
    flaw: Optional[str] = None
    flaw_detail: Optional[str] = None


class San(Record):
    iscsi: Tuple[Dict[str, Any], ...]  # {session, target, state}
    fc: Dict[str, str]  # fc_host -> port_state
    mpath: Dict[str, str]  # map name -> dm-N
    mpath_uuids: Dict[str, str]  # map name -> dm uuid
    multipath_conf: str  # /etc/multipath.conf: ok, absent, denied or unreadable

    @property
    def has_multipath_conf(self) -> bool:
        return self.multipath_conf != "absent"  # there, even when not readable as a file

    @property
    def iscsi_up(self) -> Tuple[Dict[str, Any], ...]:
        return tuple(s for s in self.iscsi if s["state"] in (None, "LOGGED_IN"))

    @property
    def fc_online(self) -> Tuple[str, ...]:
        return tuple(h for h, state in self.fc.items() if state == "Online")


class Probe(Record):
    """What one bounded statvfs found: state is ok, absent, timeout or error."""

    state: str
    stat: Optional[StatVfs] = None
    message: str = ""

    @property
    def stuck(self) -> bool:
        return self.state in ("timeout", "error")


class Probes(Record):
    """The statvfs probes of one run: every shared mount point (of a live table) and the images path."""

    timeout: float  # seconds all of them had
    found: Dict[str, Probe]  # path -> what its probe found
    images: Optional[Mount]  # the mount that holds the images path
    images_guessed: bool  # the path did not answer: taken as written, a hung shared mount as the likely holder

    def of(self, path: str) -> Optional[Probe]:
        return self.found.get(path)


# -- the mount table -------------------------------------------------------------------------------
@fact(reads=(FSTAB, "/etc"))
def storage_mounts(host, mounts) -> StorageMounts:
    """The mount table (the shared mounts fact), else /etc/fstab; and whether the root is an installed system."""
    if mounts.path is not None:
        return StorageMounts(mounts.path, tuple(mounts.entries), True, "not read")
    fstab = read(host, FSTAB, limit=16 << 20)  # unreadable counts as none, as it always did
    if fstab.ok:
        return StorageMounts(FSTAB, tuple(parse_mounts(fstab.text)), True, fstab.state)
    return StorageMounts(None, (), host.is_dir("/etc"), fstab.state)


# -- libvirt's default pool ----------------------------------------------------------------------------
@fact(reads=(DEFAULT_POOL_XML,))
def default_pool(host) -> PoolPath:
    """The default pool's target path from /etc/libvirt/storage/default.xml, else /var/lib/libvirt/images."""
    xml = read(host, DEFAULT_POOL_XML, limit=1 << 20)
    if xml.state in ("denied", "unreadable"):
        return PoolPath(IMAGES_DIR, "default", "dir", xml.state, "unreadable", xml.reason)
    if not xml.ok:
        return PoolPath(IMAGES_DIR, "default", "dir", xml.state)
    try:
        root = ET.fromstring(xml.text)
    except ET.ParseError as exc:
        return PoolPath(IMAGES_DIR, "default", "dir", xml.state, "malformed", str(exc))
    if root.tag != "pool":
        return PoolPath(IMAGES_DIR, "default", "dir", xml.state, "not-pool")
    pool_type = root.get("type", "dir")
    target = (root.findtext("target/path") or "").strip()
    if not target.startswith("/"):
        return PoolPath(IMAGES_DIR, "default", pool_type, xml.state, "no-target", target)
    return PoolPath(target, DEFAULT_POOL_XML, pool_type, xml.state)


# -- SAN block storage -------------------------------------------------------------------------------
def _shown(name: Optional[str]) -> Optional[str]:
    """A name read from sysfs, quoted and cut when it is not one (control characters, undecodable bytes)."""
    if name is None or is_name(name, 128):
        return name
    return quoted(name)


@fact(reads=(ISCSI, f"{ISCSI}/*/targetname", f"{ISCSI}/*/state", FC, f"{FC}/*/port_state", BLOCK,
             f"{BLOCK}/dm-*/dm", f"{BLOCK}/dm-*/dm/uuid", f"{BLOCK}/dm-*/dm/name", MULTIPATH_CONF))
def san(host) -> San:
    """iSCSI sessions, Fibre Channel ports and dm-multipath maps (a dm device whose uuid starts 'mpath-')."""
    iscsi = []
    for s in host.listdir(ISCSI):
        base = f"{ISCSI}/{s}"
        iscsi.append({"session": s, "target": _shown(host.first_line(f"{base}/targetname")),
                      "state": host.first_line(f"{base}/state") or None})
    fc = {h: host.first_line(f"{FC}/{h}/port_state") or "unknown" for h in host.listdir(FC)}
    mpath, uuids = {}, {}
    for dm in host.listdir(BLOCK):  # host.glob would ask for /sys on the way
        if not fnmatch.fnmatchcase(dm, "dm-*"):
            continue
        uuid = host.first_line(f"{BLOCK}/{dm}/dm/uuid") or ""
        if uuid.startswith("mpath-"):
            name = _shown(host.first_line(f"{BLOCK}/{dm}/dm/name")) or dm
            mpath[name], uuids[name] = dm, uuid
    conf = read(host, MULTIPATH_CONF, limit=1 << 20)
    return San(tuple(iscsi), fc, mpath, uuids, conf.state)


# -- probing without hanging -----------------------------------------------------------------------
def probe_timeout(settings) -> float:  # type: ignore[no-untyped-def]
    """Seconds all probes of one check may take: well inside the check's own time limit (the runner's)."""
    limit = float(settings.check_timeout or 5.0)
    return max(0.2, min(2.0, 0.4 * limit))


@fact(reads=(IMAGES_DIR,))
def storage_probes(host, settings, storage_mounts, default_pool) -> Later:
    """Later: Probes, made once per run for storage.shared and storage.images-dir alike.

    statvfs of every shared mount point of a live table and of the images path, in one batch: following
    the path's links stats every component, and one of them may be a hung mount (a link onto NFS, say).
    Reads the mount points and the pool's path, wherever the table and the XML put them.
    """
    def probe() -> Probes:
        timeout = probe_timeout(settings)
        paths = [m.target for m in storage_mounts.shared] if storage_mounts.live else []
        found: Dict[str, Probe] = {}
        for path, value in host.statvfs_many(paths + [default_pool.path], timeout).items():
            if isinstance(value, TimeoutError):
                found[path] = Probe("timeout", message=f"no answer within {timeout:g} s")
            elif isinstance(value, OSError):
                found[path] = Probe("error", message=value.strerror or str(value))
            elif value is None:
                found[path] = Probe("absent")
            else:
                found[path] = Probe("ok", value)  # type: ignore[arg-type]
        backing, guessed = _images_mount(host, storage_mounts, default_pool.path, found)
        return Probes(timeout, found, backing, guessed)

    return Later(probe)


def _host_path(host, path: str) -> str:  # type: ignore[no-untyped-def]
    """path with symlinks inside the root followed, as the root sees it (for the mount-table lookup)."""
    real = host.resolve(path)
    root = host.root.rstrip("/")
    rest = real[len(root):] if real.startswith(root + "/") or real == root else path
    return rest or "/"


def _images_mount(host, table: StorageMounts, path: str,  # type: ignore[no-untyped-def]
                  probes: Dict[str, Probe]) -> Tuple[Optional[Mount], bool]:
    """The mount that holds path, and whether that is a guess.

    Links are followed (in kvmcheck's process) only once the child's statvfs has resolved the path
    in time.  Otherwise the path is taken as written, and a hung shared mount is the likely holder.
    """
    mounts = list(table.mounts)
    p = probes.get(path)
    if p is not None and p.state in ("ok", "absent"):
        return backing_mount(mounts, _host_path(host, path)), False
    literal = backing_mount(mounts, path)
    stuck = [m for m in top_mounts(mounts) if m.shared_kind and probes.get(m.target, Probe("ok")).stuck]
    if literal is None or literal in stuck or not stuck:
        return literal, True
    return stuck[0], True


@fact(reads=(IMAGES_DIR,))
def images_node(host, default_pool) -> Later:
    """Later: what the images path is, asked only once its statvfs answered ("directory", "file",
    "dangling link"); a stat of a path on a mount that may hang is not made before."""
    def kind() -> str:
        path = default_pool.path
        if host.is_dir(path):
            return "directory"
        return "file" if host.exists(path) else "dangling link"

    return Later(kind)
