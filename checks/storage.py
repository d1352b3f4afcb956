# SPDX-License-Identifier: GPL-2.0-or-later
"""Storage for virtual machines: shared storage for live migration, and the images directory.

Network and cluster file systems can hang; the probes that could (statvfs of the mounts and of the
images path) are made by the facts (kvmcheck.facts.storage) in abandonable children under one
deadline, once per run for both checks.  A mount that does not answer is named, and the run goes on.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from kvmcheck.checks.libvirt import install_hint
from kvmcheck.core.model import Outcome, Status, cause_key
from kvmcheck.core.record import Record
from kvmcheck.core.registry import check
from kvmcheck.facts import storage  # noqa: F401 - the facts judged here
from kvmcheck.facts.storage import DEFAULT_POOL_XML, IMAGES_DIR, MULTIPATH_CONF, PoolPath, Probe, Probes, San
from kvmcheck.parsers.mounts import Mount

DIR_POOLS = ("dir", "fs", "netfs")  # pool types whose target path is a directory of image files
GIB = 1 << 30
HOLDS = " (holds the images directory)"
NO_SHARED = (
    "no shared storage: live migration would have to copy disks",
    "No network or cluster file system is mounted, and no iSCSI session, Online Fibre Channel port or multipath map "
    "exists. A stand-alone host needs none. ",
    "To live-migrate guests, give every host the same shared storage: an NFS export mounted at the same path (with "
    "'_netdev' in /etc/fstab), or iSCSI/Fibre Channel LUNs with multipath and a cluster file system or LVM, then a "
    "libvirt pool on it. Otherwise migrate with 'virsh migrate --copy-storage-all'.")
BRING_BACK = ("Bring the server back (check 'rpcinfo -p SERVER', 'showmount -e SERVER' or the SMB/Ceph/Gluster service "
              "and the network), or detach {them} with {commands} and remount.")
REQUIRED_FIX = ("Mount the cluster's shared storage ({kinds}) on this host at the same path as on the other hosts "
                "(with '_netdev' in /etc/fstab), or log in to its iSCSI/FC LUNs, then define the libvirt pool on it.")
POOL_FLAWS = {"unreadable": "{xml} cannot be read ({detail})", "malformed": "{xml} is not well-formed XML ({detail})",
              "not-pool": "{xml} is not a <pool> definition",
              "no-target": "{xml} has no absolute <target><path> ({detail!r})"}
_ORDER = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2}


class Issue(Record):
    status: Status
    summary: str
    detail: str
    remediation: str


def describe(m: Mount) -> str:
    kind = m.shared_kind or m.fstype
    vers = m.option("vers") or m.option("nfsvers")
    if kind == "NFS" and vers:
        kind = f"NFSv{vers}"
    return f"{kind} {m.source} on {m.target}"


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def mpath_of(m: Mount, s: San) -> Optional[str]:
    """The multipath map a mount's block device is, if any."""
    base = m.source.rsplit("/", 1)[-1]
    for name, dm in s.mpath.items():
        if base in (name, dm, f"dm-name-{name}", f"dm-uuid-{s.mpath_uuids[name]}"):
            return name
    return None


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


# -- storage.shared ---------------------------------------------------------------------------------
def _row(m: Mount, p: Optional[Probe], backing: Optional[Mount]) -> Dict[str, Any]:
    row = {"source": m.source, "target": m.target, "fstype": m.fstype, "state": p.state if p else "not probed",
           "backs_images": m is backing}
    if p and p.stat:
        row.update(free_bytes=p.stat.free_bytes, total_bytes=p.stat.total_bytes)
    if p and p.message:
        row["message"] = p.message
    return row


def _working(mounts: Tuple[Mount, ...], probes: Probes, s: San, mpath: Optional[str]) -> List[str]:
    """The shared storage that answers, each named as the summary shows it."""
    found = [describe(m) + (HOLDS if m is probes.images else "") for m in mounts
             if not (probes.of(m.target) and probes.of(m.target).stuck)]  # type: ignore[union-attr]
    found += [f"iSCSI session {x['session']} to {x['target'] or 'an unnamed target'}" for x in s.iscsi_up]
    found += [f"Fibre Channel port {h} Online" for h in s.fc_online]
    found += [f"multipath map {name} ({dm})" + (HOLDS if name == mpath else "") for name, dm in s.mpath.items()]
    return found


def _shared_notes(table, s: San, images: PoolPath, backing: Optional[Mount],  # type: ignore[no-untyped-def]
                  mpath: Optional[str]) -> str:
    notes = []
    down = [f"{x['session']} ({x['state']})" for x in s.iscsi if x not in s.iscsi_up]
    if down:
        notes.append("iSCSI sessions not logged in: " + ", ".join(down) + ".")
    fc_down = [f"{h} ({state})" for h, state in s.fc.items() if state != "Online"]
    if fc_down:
        notes.append("Fibre Channel ports not Online, not counted: " + ", ".join(fc_down) + ".")
    if s.has_multipath_conf and not s.mpath:
        notes.append(f"{MULTIPATH_CONF} exists but no multipath map is active.")
    if table.path and not table.live:
        notes.append(f"No mount table in this root; read {table.path} (what would be mounted at boot).")
    if backing is not None and not backing.shared_kind and not mpath and images.pool_type in DIR_POOLS:
        notes.append(f"The images directory {images.path} is on local storage ({backing.fstype} {backing.source} "
                     f"on {backing.target}).")
    return " ".join(notes)


def _no_table(installed: bool, s: San) -> Outcome:
    if not installed:
        return Outcome.skipped("no mount table and no /etc in this root: nothing to judge", mount_table=None)
    return Outcome.skipped("no mount table in this root (neither /proc/mounts nor /etc/fstab)",
                           f"{MULTIPATH_CONF} exists, but no multipath map is active." if s.has_multipath_conf else "",
                           mount_table=None)


def _found_kinds(mounts: Tuple[Mount, ...], s: San) -> set:
    kinds = set().union(*(_kinds(m) for m in mounts))
    return kinds | {k for k, there in (("iscsi", s.iscsi_up), ("fc", s.fc_online), ("multipath", s.mpath)) if there}


def _not_answering(stuck: List[Mount], probes: Probes, found: List[str], notes: str, evidence: dict) -> Outcome:
    whats = "; ".join(f"{m.target}: {probes.found[m.target].message}" for m in stuck)
    held = any(m is probes.images for m in stuck)
    return Outcome.failed(
        f"shared mount not answering: {', '.join(describe(m) for m in stuck)}",
        f"statvfs did not succeed ({whats}). Processes that touch it hang"
        + (", and it holds the images directory: guests with disks there stall" if held else "") + ". "
        + (f"Working shared storage: {'; '.join(found)}. " if found else "") + notes,
        BRING_BACK.format(them="it" if len(stuck) == 1 else "them",
                          commands=", ".join(f"'umount -f -l {m.target}'" for m in stuck)),
        stuck=[m.target for m in stuck], **evidence)


def _not_required(wanted: Tuple[str, ...], found: List[str], notes: str, evidence: dict) -> Outcome:
    return Outcome.failed(
        f"none of the required shared storage ({', '.join(wanted)}): "
        + ("; ".join(found) if found else "no shared storage"),
        f"The configuration requires one of: {', '.join(wanted)} ([require] shared_storage). "
        + (f"Found: {'; '.join(found)}. " if found else "No shared storage was found. ") + notes,
        REQUIRED_FIX.format(kinds=" or ".join(wanted)), **evidence)


@check("storage.shared", "Shared storage for live migration")
def shared(storage_mounts, san, default_pool, storage_probes, settings) -> Outcome:
    """Is there storage that other hosts can reach too, so that guests can live-migrate?

    What: network and cluster file systems in the mount table (NFS, CIFS/SMB, GlusterFS, CephFS,
    OCFS2, GFS2, Lustre, GPFS, BeeGFS; /etc/fstab offline), logged-in iSCSI sessions, Online Fibre
    Channel ports and dm-multipath maps, and which holds the images directory.  Every mount is
    probed with statvfs under a time limit: one that does not answer fails the check.

    Why: live migration without copying disks needs the guest's disks on storage both hosts see; a
    stand-alone host needs none (a warning).  A hung mount is worse than none: libvirt, QEMU, df and
    backups hang on it.

    Fix: mount the shared export on every host at the same path ('_netdev' in /etc/fstab), or log
    in to the iSCSI target ('iscsiadm -m node -L all') with multipath; then define a pool on it.
    A mount that does not answer: bring its server back or 'umount -f -l MOUNTPOINT'.
    """
    table, s = storage_mounts, san
    if table.path is None and not s.iscsi and not s.fc and not s.mpath:
        return _no_table(table.installed, s)
    mounts, probes = table.shared, storage_probes.get()
    backing = probes.images
    mpath = mpath_of(backing, s) if backing else None
    found = _working(mounts, probes, s, mpath)
    notes = _shared_notes(table, s, default_pool, backing, mpath)
    evidence = dict(mount_table=table.path, mounts=[_row(m, probes.of(m.target), backing) for m in mounts],
                    iscsi_sessions=list(s.iscsi), fc_hosts=s.fc, multipath_maps=s.mpath,
                    multipath_conf=s.has_multipath_conf, images_dir=default_pool.path,
                    images_mount=backing.target if backing else None, probe_timeout_s=probes.timeout)
    stuck = [m for m in mounts if probes.of(m.target) and probes.found[m.target].stuck]
    if stuck:
        return _not_answering(stuck, probes, found, notes, evidence)
    wanted = settings.required_shared_storage  # the configuration's [require] shared_storage
    if wanted:
        kinds = _found_kinds(mounts, s)  # the stuck ones have failed above
        evidence.update(required_types=list(wanted), found_types=sorted(kinds))
        if not kinds & set(wanted):
            return _not_required(wanted, found, notes, evidence)
    if found:
        return Outcome.passed("shared storage: " + "; ".join(found), notes, **evidence)
    return Outcome.warned(NO_SHARED[0], NO_SHARED[1] + notes, NO_SHARED[2], **evidence)


# -- storage.images-dir -----------------------------------------------------------------------------
def _pool_issue(pool: PoolPath) -> List[Issue]:
    if not pool.flaw:
        return []
    problem = POOL_FLAWS[pool.flaw].format(xml=DEFAULT_POOL_XML, detail=pool.flaw_detail or "empty")
    return [Issue(Status.WARN, f"the default pool definition is broken: {problem}",
                  f"libvirt cannot load the default pool from it, so {pool.path} (the packaged default) is judged "
                  "instead.",
                  f"Fix or recreate {DEFAULT_POOL_XML}: 'virsh pool-define-as default dir --target {IMAGES_DIR}', "
                  "'virsh pool-autostart default', 'virsh pool-start default'.")]


def _missing(pool: PoolPath, distro_family: Optional[str]) -> Issue:
    if pool.source == DEFAULT_POOL_XML:
        return Issue(Status.WARN, f"{pool.path} (the default pool's directory) does not exist",
                     f"libvirt is installed ({DEFAULT_POOL_XML}), but the default pool cannot start without its "
                     "directory.",
                     "'virsh pool-build default && virsh pool-start default' creates it (or 'mkdir -p "
                     f"{pool.path}' with mode 0711, owner root).")
    return Issue(Status.WARN, f"{pool.path} does not exist: libvirt is not installed",
                 "This directory comes with libvirt; without it virt-install and virt-manager have no default "
                 "place for guest disks.",
                 f"Install libvirt, which creates the directory and the default pool: {install_hint(distro_family)}.")


def _space(path: str, st, on: str, where: str, threshold: float) -> List[Issue]:  # type: ignore[no-untyped-def]
    """What the statvfs of the images directory says: read-only, or too little free space."""
    if st.read_only:
        return [Issue(Status.FAIL, f"{path} is on a read-only file system ({on})",
                      "New disks cannot be created and guests cannot write to images there.",
                      f"Remount it read-write ('mount -o remount,rw {where}') after finding why it is read-only "
                      "(dmesg: file system errors turn ext4 read-only).")]
    if st.free_bytes < threshold * GIB:
        return [Issue(Status.WARN, f"only {gib(st.free_bytes)} free for guest images in {path} "
                                   f"(want {threshold:g} GiB)",
                      f"{gib(st.free_bytes)} free of {gib(st.total_bytes)} on {on}. Thin qcow2 disks grow as guests "
                      "write; a full file system pauses every guest on it.",
                      "Free space there, grow the file system, or point the default pool at a bigger one "
                      "('virsh pool-edit default', then 'virsh pool-build default').")]
    return []


def _images_issues(pool: PoolPath, found: Probe, on: str, where: str, threshold: float,
                   distro_family: Optional[str]) -> List[Issue]:
    """What is wrong with the images directory, by what its probe found."""
    path = pool.path
    if found.state == "error":  # it answered, with an error: a link loop, a damaged or stale file system
        return [Issue(Status.FAIL, f"{path} cannot be examined (statvfs failed)",
                      f"statvfs of {path} failed: {found.message}. File system: {on}.",
                      f"Look at {path} ('ls -ld {path}', 'stat -f {path}'): it must be a directory on a working "
                      "file system.")]
    if found.stuck:
        return [Issue(Status.FAIL, f"{path} does not answer ({on})",
                      f"statvfs of {path} failed: {found.message}. Guests with disks there stall, and libvirt hangs "
                      "refreshing the pool.",
                      "Bring the storage server back or detach the mount with "
                      f"'umount -f -l {where}', then remount it.")]
    if found.state == "absent":
        return [_missing(pool, distro_family)]
    if found.state == "notdir":
        return [Issue(Status.FAIL, f"{path} is a {found.message}, not a directory", "libvirt cannot create guest "
                      "disks in it.", f"Move it aside and recreate the directory ('mkdir -p {path}'), or point the "
                      "default pool elsewhere ('virsh pool-edit default').")]
    return _space(path, found.stat, on, where, threshold) if found.stat is not None else []


def _examined(found: Probe, node) -> Probe:  # type: ignore[no-untyped-def]
    """The probe, or "notdir" with what is there when the path answered but is no directory (a stat is
    safe once it answered: images_node is asked only then)."""
    if found.state == "ok" and node.get() != "directory":
        return Probe("notdir", found.stat, node.get())
    return found


def _key(summary: str) -> str:
    """The cause key: summaries quote sizes and mount sources."""
    return ("read-only" if " is on a read-only file system " in summary else
            "low-free-space" if " free for guest images in " in summary else
            "not-answering" if " does not answer " in summary else cause_key(summary))


def _verdict(issues: List[Issue], backing: Optional[Mount], on: str, evidence: dict) -> Outcome:
    """The worst issue leads; the others follow in the detail, and every fix is given."""
    issues = sorted(issues, key=lambda i: -_ORDER[i.status])
    status, summary, _, remediation = issues[0]
    detail = " ".join(i.detail for i in issues) + (f" File system: {on}." if backing is not None else "")
    if len(issues) > 1:
        detail += " Also: " + "; ".join(i.summary for i in issues[1:]) + "."
        remediation = " ".join(i.remediation for i in issues)
    make = Outcome.failed if status == Status.FAIL else Outcome.warned
    outcome = make(summary, detail, remediation, **evidence).keyed(_key(summary))
    if len(issues) == 1 and summary.endswith("libvirt is not installed"):
        return outcome.because("packages.virt")  # the directory comes with the package
    return outcome


@check("storage.images-dir", "Directory for guest disk images")
def images_dir(storage_mounts, default_pool, storage_probes, images_node, distro_family, settings) -> Outcome:
    """Does the default pool's directory exist, what holds it, and how much room is left?

    What: <target><path> of /etc/libvirt/storage/default.xml, else /var/lib/libvirt/images; the
    file system that holds it; its free space by statvfs under a time limit: below the threshold
    (20 GiB) warns; a read-only file system or one that does not answer fails.

    Why: virt-install, virt-manager and 'virsh vol-create' put new disks there; thin qcow2 images
    grow as guests write, and a full file system pauses every guest on it.

    Fix: install libvirt if the directory is missing (its package creates it); free space, grow the
    file system, or point the pool elsewhere ('virsh pool-edit default', 'virsh pool-build default').
    """
    pool, threshold = default_pool, settings.images_min_free_gib
    evidence: Dict[str, Any] = dict(path=pool.path, pool_source=pool.source, pool_type=pool.pool_type,
                                    mount_table=storage_mounts.path, min_free_gib=threshold)
    if not storage_mounts.installed:
        return Outcome.skipped("no /etc and no mount table in this root: not an installed system", **evidence)
    if pool.pool_type not in DIR_POOLS:
        return Outcome.skipped(f"the default pool is a {pool.pool_type} pool, not a directory",
                               f"{DEFAULT_POOL_XML} defines a {pool.pool_type!r} pool on {pool.path}; its space is "
                               "managed by that back end.", **evidence)
    probes = storage_probes.get()
    backing = probes.images
    if backing is not None:
        evidence.update(mount=backing.target, fstype=backing.fstype, device=backing.source,
                        shared=bool(backing.shared_kind))
    on = describe(backing) if backing else "a file system the root's mount table does not show"
    found = _examined(probes.found[pool.path], images_node)
    evidence["state"] = found.state
    if found.state == "ok":
        evidence.update(free_bytes=found.stat.free_bytes, total_bytes=found.stat.total_bytes,
                        read_only=found.stat.read_only)
    where = backing.target if backing else pool.path
    issues = _pool_issue(pool) + _images_issues(pool, found, on, where, threshold, distro_family)
    if not issues:
        return Outcome.passed(f"{pool.path}: {gib(found.stat.free_bytes)} free of {gib(found.stat.total_bytes)} on "
                              f"{on}", ("Shared storage: guests here can live-migrate without copying disks."
                                        if backing is not None and backing.shared_kind else ""), **evidence)
    return _verdict(issues, backing, on, evidence)
