# SPDX-License-Identifier: GPL-2.0-or-later
"""Storage for virtual machines: shared storage for live migration, and the images directory.

Network and cluster file systems can hang: a stat or statvfs on an NFS mount
whose server went away blocks until the server returns.  So nothing here
touches such a mount from the check's own thread: every probe runs in a daemon
thread with a deadline, and the statvfs itself in Host.statvfs's abandonable
child process.  A mount that does not answer is named, and the run goes on.
"""
from __future__ import annotations

import weakref
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from kvmcheck.checks.libvirt import install_hint
from kvmcheck.facts.context import MOUNT_TABLES, Context, is_name, quoted
from kvmcheck.core.host import StatVfs
from kvmcheck.core.model import Outcome, Status, cause_key
from kvmcheck.parsers.mounts import Mount, backing_mount, parse_mounts, top_mounts
from kvmcheck.core.registry import check

IMAGES_DIR = "/var/lib/libvirt/images"
DEFAULT_POOL_XML = "/etc/libvirt/storage/default.xml"
FSTAB = "/etc/fstab"
MULTIPATH_CONF = "/etc/multipath.conf"
DIR_POOLS = ("dir", "fs", "netfs")  # pool types whose target path is a directory of image files
GIB = 1 << 30


# -- probing without hanging -----------------------------------------------------------------------

class Probe(NamedTuple):
    """What one bounded statvfs found: state is ok, absent, timeout or error."""

    state: str
    stat: Optional[StatVfs] = None
    message: str = ""

    @property
    def stuck(self) -> bool:
        return self.state in ("timeout", "error")


# Probes already made in this run (storage.shared's), so that storage.images-dir does not wait a
# second time on a mount known not to answer.
_PROBES: "weakref.WeakKeyDictionary[Context, Dict[str, Probe]]" = weakref.WeakKeyDictionary()


def probe_timeout(ctx: Context) -> float:
    """Seconds all probes of one check may take: well inside the check's own time limit (the runner's)."""
    limit = float(ctx.settings.check_timeout or 5.0)
    return max(0.2, min(2.0, 0.4 * limit))


def probe(ctx: Context, paths: List[str], timeout: float) -> Dict[str, Probe]:
    """statvfs of each path in an abandonable child (Host.statvfs_many), all under one deadline.

    Nothing here stats a path of a possibly hung mount in kvmcheck's own process: a FUSE or
    hard NFS wait there would keep kvmcheck from exiting, whatever thread it sits in.
    """
    found: Dict[str, Probe] = {}
    for path, value in ctx.host.statvfs_many(paths, timeout).items():
        if isinstance(value, TimeoutError):
            found[path] = Probe("timeout", message=f"no answer within {timeout:g} s")
        elif isinstance(value, OSError):
            found[path] = Probe("error", message=value.strerror or str(value))
        elif value is None:
            found[path] = Probe("absent")
        else:
            found[path] = Probe("ok", value)  # type: ignore[arg-type]
    return found


# -- what the root holds ---------------------------------------------------------------------------

class MountTable(NamedTuple):
    path: Optional[str]  # where it came from; None when the root has none
    mounts: List[Mount]

    @property
    def live(self) -> bool:
        """A table of mounted file systems (not fstab's wishes): those can be probed."""
        return self.path in MOUNT_TABLES


def mount_table(ctx: Context) -> MountTable:
    """The mounted file systems, or else /etc/fstab (an offline Kickstart target has no /proc)."""
    path, mounts = ctx.mounts()
    if path is not None:
        return MountTable(path, mounts)
    try:
        text = ctx.host.read_optional(FSTAB, limit=16 << 20)
    except OSError:
        text = None
    return MountTable(FSTAB, parse_mounts(text)) if text is not None else MountTable(None, [])


def has_system(ctx: Context, table: MountTable) -> bool:
    """False for an empty root or a bare /proc+/sys dump: nothing storage-related to judge."""
    return table.path is not None or ctx.host.is_dir("/etc")


class PoolPath(NamedTuple):
    path: str
    source: str  # "default" or the pool XML path
    pool_type: str
    problem: Optional[str] = None  # a malformed pool definition


def pool_path(ctx: Context) -> PoolPath:
    """The default pool's target path from libvirt's XML, else /var/lib/libvirt/images."""
    try:
        text = ctx.host.read_optional(DEFAULT_POOL_XML, limit=1 << 20)
    except OSError as exc:
        return PoolPath(IMAGES_DIR, "default", "dir", f"{DEFAULT_POOL_XML} cannot be read ({exc.strerror})")
    if text is None:
        return PoolPath(IMAGES_DIR, "default", "dir")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        return PoolPath(IMAGES_DIR, "default", "dir", f"{DEFAULT_POOL_XML} is not well-formed XML ({exc})")
    if root.tag != "pool":
        return PoolPath(IMAGES_DIR, "default", "dir", f"{DEFAULT_POOL_XML} is not a <pool> definition")
    pool_type = root.get("type", "dir")
    target = (root.findtext("target/path") or "").strip()
    if not target.startswith("/"):
        return PoolPath(IMAGES_DIR, "default", pool_type,
                        f"{DEFAULT_POOL_XML} has no absolute <target><path> ({target or 'empty'!r})")
    return PoolPath(target, DEFAULT_POOL_XML, pool_type)


def host_path(ctx: Context, path: str) -> str:
    """path with symlinks inside the root followed, as the root sees it (for the mount-table lookup)."""
    real = ctx.host.resolve(path)
    root = ctx.host.root.rstrip("/")
    rest = real[len(root):] if real.startswith(root + "/") or real == root else path
    return rest or "/"


def describe(m: Mount) -> str:
    kind = m.shared_kind or m.fstype
    vers = m.option("vers") or m.option("nfsvers")
    if kind == "NFS" and vers:
        kind = f"NFSv{vers}"
    return f"{kind} {m.source} on {m.target}"


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


class San(NamedTuple):
    iscsi: List[Dict[str, Any]]
    fc: Dict[str, str]
    mpath: Dict[str, str]  # map name -> dm-N
    mpath_uuids: Dict[str, str]  # map name -> dm uuid
    multipath_conf: bool

    @property
    def iscsi_up(self) -> List[Dict[str, Any]]:
        return [s for s in self.iscsi if s["state"] in (None, "LOGGED_IN")]

    @property
    def fc_online(self) -> List[str]:
        return [h for h, state in self.fc.items() if state == "Online"]


def _shown(name: Optional[str]) -> Optional[str]:
    """A name read from sysfs, quoted and cut when it is not one (control characters, undecodable bytes)."""
    if name is None or is_name(name, 128):
        return name
    return quoted(name)


def san(ctx: Context) -> San:
    host = ctx.host
    iscsi = []
    for s in host.listdir("/sys/class/iscsi_session"):
        base = f"/sys/class/iscsi_session/{s}"
        iscsi.append({"session": s, "target": _shown(host.first_line(f"{base}/targetname")),
                      "state": host.first_line(f"{base}/state") or None})
    fc = {h: host.first_line(f"/sys/class/fc_host/{h}/port_state") or "unknown"
          for h in host.listdir("/sys/class/fc_host")}
    mpath, uuids = {}, {}
    for d in host.glob("/sys/block/dm-*"):
        uuid = host.first_line(f"{d}/dm/uuid") or ""
        if uuid.startswith("mpath-"):
            dm = d.rsplit("/", 1)[-1]
            name = _shown(host.first_line(f"{d}/dm/name")) or dm
            mpath[name], uuids[name] = dm, uuid
    try:
        conf = host.read_optional(MULTIPATH_CONF, limit=1 << 20) is not None
    except OSError:
        conf = True  # it is there, only not readable as a file
    return San(iscsi, fc, mpath, uuids, conf)


def mpath_of(m: Mount, s: San) -> Optional[str]:
    """The multipath map a mount's block device is, if any."""
    base = m.source.rsplit("/", 1)[-1]
    for name, dm in s.mpath.items():
        if base in (name, dm, f"dm-name-{name}", f"dm-uuid-{s.mpath_uuids[name]}"):
            return name
    return None


def images_mount(ctx: Context, table: MountTable, path: str, probes: Dict[str, Probe]) -> Tuple[Optional[Mount], bool]:
    """The mount that holds path, and whether that is a guess.

    Links are followed (in kvmcheck's process) only once the child's statvfs has resolved the path
    in time.  Otherwise the path is taken as written, and a hung shared mount is the likely holder.
    """
    p = probes.get(path)
    if p is not None and p.state in ("ok", "absent"):
        return backing_mount(table.mounts, host_path(ctx, path)), False
    literal = backing_mount(table.mounts, path)
    stuck = [m for m in top_mounts(table.mounts) if m.shared_kind and probes.get(m.target, Probe("ok")).stuck]
    if literal is None or literal in stuck or not stuck:
        return literal, True
    return stuck[0], True


def _kinds(m: Mount) -> set:
    """The words of [require] shared_storage (kvmcheck.core.config.SHARED_STORAGE_TYPES) that describe m."""
    fs = m.fstype
    vers = m.option("vers") or m.option("nfsvers") or ""
    if fs in ("nfs", "nfs4"):
        return {"nfs", "nfs4"} if fs == "nfs4" or vers.startswith("4") else {"nfs"}
    if fs in ("cifs", "smb3", "smbfs"):
        return {"cifs", "smb"}
    if fs in ("ceph", "fuse.ceph", "fuse.ceph-fuse"):
        return {"ceph", "cephfs"}
    if fs == "fuse.glusterfs":
        return {"glusterfs"}
    return {fs}


# -- the checks ------------------------------------------------------------------------------------

@check("storage.shared", "Shared storage for live migration",
       reads=MOUNT_TABLES + (FSTAB, "/sys/class/iscsi_session", "/sys/class/fc_host", "/sys/block/dm-*/dm",
                             MULTIPATH_CONF, DEFAULT_POOL_XML))
def shared(ctx: Context) -> Outcome:
    """Is there storage that other hosts can reach too, so that guests can live-migrate?

    What: network and cluster file systems in the mount table (NFS, NFSv4, CIFS/SMB, GlusterFS,
    CephFS, OCFS2, GFS2, Lustre, GPFS, BeeGFS; /etc/fstab for an offline root without one), and SAN
    block storage: logged-in iSCSI sessions, Fibre Channel ports that are Online, and dm-multipath
    maps.  It says which of them holds the images directory (the default pool).  Every mount is
    probed with statvfs under a time limit: one that does not answer is named and fails the check.

    Why: live migration without copying disks ('virsh migrate --live' without --copy-storage-all)
    needs the guest's disks on storage both hosts see.  A stand-alone host needs none, so its
    absence is only a warning.  A mount that hangs is worse than none: every process that touches
    it (libvirt refreshing a pool, QEMU doing guest I/O, df, backups) hangs with it.

    Fix: mount the shared export on every host at the same path (for example an NFS line in
    /etc/fstab with '_netdev'), or log in to the iSCSI target ('iscsiadm -m node -L all') and use
    multipath for SAN LUNs; then define a pool on it.  For a mount that does not answer: bring its
    server back or detach it ('umount -f -l MOUNTPOINT').
    """
    table = mount_table(ctx)
    s = san(ctx)
    images = pool_path(ctx)
    if table.path is None and not s.iscsi and not s.fc and not s.mpath:
        if not has_system(ctx, table):
            return Outcome.skipped("no mount table and no /etc in this root: nothing to judge", mount_table=None)
        return Outcome.skipped("no mount table in this root (neither /proc/mounts nor /etc/fstab)",
                               (f"{MULTIPATH_CONF} exists, but no multipath map is active."
                                if s.multipath_conf else ""), mount_table=None)
    mounts = [m for m in top_mounts(table.mounts) if m.shared_kind]
    timeout = probe_timeout(ctx)
    # The images path goes into the same batch: following its links stats every component,
    # and one of them may be a hung mount (a link onto NFS, say).
    paths = ([m.target for m in mounts] if table.live else []) + [images.path]
    probes = probe(ctx, paths, timeout)
    _PROBES.setdefault(ctx, {}).update(probes)
    backing, _ = images_mount(ctx, table, images.path, probes)
    backing_mpath = mpath_of(backing, s) if backing else None

    found: List[str] = []
    rows = []
    for m in mounts:
        p = probes.get(m.target)
        row = {"source": m.source, "target": m.target, "fstype": m.fstype,
               "state": p.state if p else "not probed", "backs_images": m is backing}
        if p and p.stat:
            row.update(free_bytes=p.stat.free_bytes, total_bytes=p.stat.total_bytes)
        if p and p.message:
            row["message"] = p.message
        rows.append(row)
        if not (p and p.stuck):
            found.append(describe(m) + (" (holds the images directory)" if m is backing else ""))
    for sess in s.iscsi_up:
        found.append(f"iSCSI session {sess['session']} to {sess['target'] or 'an unnamed target'}")
    for h in s.fc_online:
        found.append(f"Fibre Channel port {h} Online")
    for name, dm in s.mpath.items():
        found.append(f"multipath map {name} ({dm})" + (" (holds the images directory)"
                                                        if name == backing_mpath else ""))
    notes = []
    down = [f"{x['session']} ({x['state']})" for x in s.iscsi if x not in s.iscsi_up]
    if down:
        notes.append("iSCSI sessions not logged in: " + ", ".join(down) + ".")
    fc_down = [f"{h} ({state})" for h, state in s.fc.items() if state != "Online"]
    if fc_down:
        notes.append("Fibre Channel ports not Online, not counted: " + ", ".join(fc_down) + ".")
    if s.multipath_conf and not s.mpath:
        notes.append(f"{MULTIPATH_CONF} exists but no multipath map is active.")
    if table.path and not table.live:
        notes.append(f"No mount table in this root; read {table.path} (what would be mounted at boot).")
    if backing is not None and not backing.shared_kind and not backing_mpath and images.pool_type in DIR_POOLS:
        notes.append(f"The images directory {images.path} is on local storage ({backing.fstype} {backing.source} "
                     f"on {backing.target}).")
    evidence = dict(mount_table=table.path, mounts=rows, iscsi_sessions=s.iscsi, fc_hosts=s.fc,
                    multipath_maps=s.mpath, multipath_conf=s.multipath_conf, images_dir=images.path,
                    images_mount=backing.target if backing else None, probe_timeout_s=timeout)

    stuck = [m for m in mounts if probes.get(m.target) and probes[m.target].stuck]
    if stuck:
        names = ", ".join(f"{describe(m)}" for m in stuck)
        whats = "; ".join(f"{m.target}: {probes[m.target].message}" for m in stuck)
        held = any(m is backing for m in stuck)
        return Outcome.failed(
            f"shared mount not answering: {names}",
            f"statvfs did not succeed ({whats}). Processes that touch it hang"
            + (", and it holds the images directory: guests with disks there stall" if held else "")
            + ". " + (f"Working shared storage: {'; '.join(found)}. " if found else "") + " ".join(notes),
            "Bring the server back (check 'rpcinfo -p SERVER', 'showmount -e SERVER' or the SMB/Ceph/Gluster "
            "service and the network), or detach " + ("it" if len(stuck) == 1 else "them") + " with "
            + ", ".join(f"'umount -f -l {m.target}'" for m in stuck) + " and remount.",
            stuck=[m.target for m in stuck], **evidence)
    wanted = ctx.settings.required_shared_storage  # the configuration's [require] shared_storage
    if wanted:
        kinds = set().union(*(_kinds(m) for m in mounts))  # the stuck ones have failed above
        kinds |= {k for k, there in (("iscsi", s.iscsi_up), ("fc", s.fc_online), ("multipath", s.mpath)) if there}
        evidence.update(required_types=list(wanted), found_types=sorted(kinds))
        if not kinds & set(wanted):
            return Outcome.failed(
                f"none of the required shared storage ({', '.join(wanted)}): "
                + ("; ".join(found) if found else "no shared storage"),
                f"The configuration requires one of: {', '.join(wanted)} ([require] shared_storage). "
                + (f"Found: {'; '.join(found)}. " if found else "No shared storage was found. ") + " ".join(notes),
                f"Mount the cluster's shared storage ({' or '.join(wanted)}) on this host at the same path as on "
                "the other hosts (with '_netdev' in /etc/fstab), or log in to its iSCSI/FC LUNs, then define the "
                "libvirt pool on it.", **evidence)
    if found:
        return Outcome.passed("shared storage: " + "; ".join(found), " ".join(notes), **evidence)
    return Outcome.warned(
        "no shared storage: live migration would have to copy disks",
        "No network or cluster file system is mounted, and no iSCSI session, Online Fibre Channel port or "
        "multipath map exists. A stand-alone host needs none. " + " ".join(notes),
        "To live-migrate guests, give every host the same shared storage: an NFS export mounted at the same "
        "path (with '_netdev' in /etc/fstab), or iSCSI/Fibre Channel LUNs with multipath and a cluster file "
        "system or LVM, then a libvirt pool on it. Otherwise migrate with 'virsh migrate --copy-storage-all'.",
        **evidence)


_ORDER = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2}


@check("storage.images-dir", "Directory for guest disk images",
       reads=(DEFAULT_POOL_XML, IMAGES_DIR) + MOUNT_TABLES + (FSTAB,))
def images_dir(ctx: Context) -> Outcome:
    """Does the default pool's directory exist, what holds it, and how much room is left?

    What: the default storage pool's directory: <target><path> of /etc/libvirt/storage/default.xml,
    else /var/lib/libvirt/images.  It says which file system holds it (the mount table's longest
    mount-point prefix), and measures free space with statvfs under a time limit: below the
    threshold (default 20 GiB) is a warning; a read-only file system or one that does not answer
    fails.

    Why: virt-install, virt-manager and 'virsh vol-create' put new disks there.  Thin qcow2 images
    grow as guests write, and a full file system pauses every guest on it (I/O error, paused).

    Fix: install libvirt if the directory is missing (its package creates it and the default pool);
    free space or grow the file system; or point the default pool at a bigger file system
    ('virsh pool-edit default', <target><path>) and 'virsh pool-build default'.
    """
    table = mount_table(ctx)
    pool = pool_path(ctx)
    threshold = ctx.settings.images_min_free_gib
    evidence: Dict[str, Any] = dict(path=pool.path, pool_source=pool.source, pool_type=pool.pool_type,
                                    mount_table=table.path, min_free_gib=threshold)
    if not has_system(ctx, table):
        return Outcome.skipped("no /etc and no mount table in this root: not an installed system", **evidence)
    if pool.pool_type not in DIR_POOLS:
        return Outcome.skipped(f"the default pool is a {pool.pool_type} pool, not a directory",
                               f"{DEFAULT_POOL_XML} defines a {pool.pool_type!r} pool on {pool.path}; its space is "
                               "managed by that back end.", **evidence)
    issues: List[Tuple[Status, str, str, str]] = []  # status, summary, detail, remediation
    if pool.problem:
        issues.append((Status.WARN, f"the default pool definition is broken: {pool.problem}",
                       f"libvirt cannot load the default pool from it, so {pool.path} (the packaged default) "
                       "is judged instead.",
                       f"Fix or recreate {DEFAULT_POOL_XML}: 'virsh pool-define-as default dir --target "
                       f"{IMAGES_DIR}', 'virsh pool-autostart default', 'virsh pool-start default'."))
    timeout = probe_timeout(ctx)
    memo = _PROBES.get(ctx, {})
    if pool.path in memo:
        probes = dict(memo)  # storage.shared probed it, and every shared mount, a moment ago
    else:
        shared_points = [m.target for m in top_mounts(table.mounts) if m.shared_kind] if table.live else []
        probes = probe(ctx, [pool.path] + shared_points, timeout)
    backing, _ = images_mount(ctx, table, pool.path, probes)
    if backing is not None:
        evidence.update(mount=backing.target, fstype=backing.fstype, device=backing.source,
                        shared=bool(backing.shared_kind))
    on = describe(backing) if backing else "a file system the root's mount table does not show"
    found = probes[pool.path]
    if found.state == "ok" and not ctx.host.is_dir(pool.path):  # it answered: a stat is safe now
        found = Probe("notdir", found.stat, "file" if ctx.host.exists(pool.path) else "dangling link")
    evidence["state"] = found.state
    if found.state == "error":  # it answered, with an error: a link loop, a damaged or stale file system
        issues.append((Status.FAIL, f"{pool.path} cannot be examined (statvfs failed)",
                       f"statvfs of {pool.path} failed: {found.message}. File system: {on}.",
                       f"Look at {pool.path} ('ls -ld {pool.path}', 'stat -f {pool.path}'): it must be a directory "
                       "on a working file system."))
    elif found.stuck:
        issues.append((Status.FAIL, f"{pool.path} does not answer ({on})",
                       f"statvfs of {pool.path} failed: {found.message}. Guests with disks there stall, and "
                       "libvirt hangs refreshing the pool.",
                       "Bring the storage server back or detach the mount with "
                       f"'umount -f -l {backing.target if backing else pool.path}', then remount it."))
    elif found.state == "absent":
        if pool.source == DEFAULT_POOL_XML:
            issues.append((Status.WARN, f"{pool.path} (the default pool's directory) does not exist",
                           f"libvirt is installed ({DEFAULT_POOL_XML}), but the default pool cannot start "
                           "without its directory.",
                           "'virsh pool-build default && virsh pool-start default' creates it (or 'mkdir -p "
                           f"{pool.path}' with mode 0711, owner root)."))
        else:
            issues.append((Status.WARN, f"{pool.path} does not exist: libvirt is not installed",
                           "This directory comes with libvirt; without it virt-install and virt-manager have "
                           "no default place for guest disks.",
                       f"Install libvirt, which creates the directory and the default pool: {install_hint(ctx.distro_family())}."))
    elif found.state == "notdir":
        issues.append((Status.FAIL, f"{pool.path} is a {found.message}, not a directory",
                       "libvirt cannot create guest disks in it.",
                       f"Move it aside and recreate the directory ('mkdir -p {pool.path}'), or point the "
                       "default pool elsewhere ('virsh pool-edit default')."))
    elif found.stat is not None:
        st = found.stat
        evidence.update(free_bytes=st.free_bytes, total_bytes=st.total_bytes, read_only=st.read_only)
        if st.read_only:
            issues.append((Status.FAIL, f"{pool.path} is on a read-only file system ({on})",
                           "New disks cannot be created and guests cannot write to images there.",
                           f"Remount it read-write ('mount -o remount,rw {backing.target if backing else pool.path}') "
                           "after finding why it is "
                           "read-only (dmesg: file system errors turn ext4 read-only)."))
        elif st.free_bytes < threshold * GIB:
            issues.append((Status.WARN, f"only {gib(st.free_bytes)} free for guest images in {pool.path} "
                           f"(want {threshold:g} GiB)",
                           f"{gib(st.free_bytes)} free of {gib(st.total_bytes)} on {on}. Thin qcow2 disks grow "
                           "as guests write; a full file system pauses every guest on it.",
                           "Free space there, grow the file system, or point the default pool at a bigger one "
                           "('virsh pool-edit default', then 'virsh pool-build default')."))
    if not issues:
        st = found.stat
        assert st is not None
        return Outcome.passed(f"{pool.path}: {gib(st.free_bytes)} free of {gib(st.total_bytes)} on {on}",
                              ("Shared storage: guests here can live-migrate without copying disks."
                               if backing is not None and backing.shared_kind else ""), **evidence)
    issues.sort(key=lambda i: -_ORDER[i[0]])
    status, summary, _, remediation = issues[0]
    detail = " ".join(i[2] for i in issues)
    if backing is not None:
        detail += f" File system: {on}."
    if len(issues) > 1:
        detail += " Also: " + "; ".join(i[1] for i in issues[1:]) + "."
        remediation = " ".join(i[3] for i in issues)
    make = Outcome.failed if status == Status.FAIL else Outcome.warned
    outcome = make(summary, detail, remediation, **evidence).keyed(  # summaries quote sizes and mount sources
        "read-only" if " is on a read-only file system " in summary else
        "low-free-space" if " free for guest images in " in summary else
        "not-answering" if " does not answer " in summary else cause_key(summary))
    if len(issues) == 1 and summary.endswith("libvirt is not installed"):
        return outcome.because("packages.virt")  # the directory comes with the package
    return outcome
