# SPDX-License-Identifier: GPL-2.0-or-later
"""Mount tables: /proc/mounts (/proc/self/mounts), /etc/fstab and /proc/self/mountinfo.

The kernel writes a space, tab, newline and backslash inside a field as the
octal escapes ``\\040``, ``\\011``, ``\\012`` and ``\\134`` (fstab(5) asks for
the same), so a mount point with a space arrives as ``/srv/vm\\040images``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

_OCTAL = pattern(r"\\([0-7]{3})")

# File system types that several hosts can mount at once: what live migration without
# copying disks needs.  Value: the name an operator knows it by.
SHARED_FSTYPES: Dict[str, str] = {
    "nfs": "NFS", "nfs4": "NFSv4",
    "cifs": "CIFS/SMB", "smb3": "CIFS/SMB", "smbfs": "CIFS/SMB",
    "glusterfs": "GlusterFS", "fuse.glusterfs": "GlusterFS",
    "ceph": "CephFS", "fuse.ceph": "CephFS", "fuse.ceph-fuse": "CephFS",
    "ocfs2": "OCFS2", "gfs2": "GFS2",
    "lustre": "Lustre", "gpfs": "GPFS", "beegfs": "BeeGFS",
}


def unescape(field: str) -> str:
    """Undo the kernel's octal escapes (``\\040`` -> space); anything else is kept as it is."""
    if "\\" not in field:
        return field
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)) if int(m.group(1), 8) < 256 else m.group(0), field)


class Mount(Record):
    source: str  # "server:/export", "/dev/mapper/mpatha", "UUID=..." (fstab)
    target: str  # the mount point, unescaped
    fstype: str
    options: Tuple[str, ...]
    line: int  # 1-based line in the table

    @property
    def shared_kind(self) -> Optional[str]:
        """"NFS", "CIFS/SMB", ... for a file system several hosts can share, else None."""
        return SHARED_FSTYPES.get(self.fstype)

    def option(self, name: str) -> Optional[str]:
        """The value of name=value in the options, "" for a bare flag, None when absent."""
        for opt in self.options:
            key, sep, value = opt.partition("=")
            if key == name:
                return value if sep else ""
        return None


def _normalize_target(target: str) -> str:
    if target in ("none", "swap") or not target.startswith("/"):
        return target
    parts = [p for p in target.split("/") if p and p != "."]
    return "/" + "/".join(parts)


def parse_mounts(text: str, comments: bool = True) -> List[Mount]:
    """Lines of /proc/mounts or /etc/fstab: source, target, type, options[, freq, passno].

    Blank lines are skipped, and so are lines with fewer than three fields.
    comments: '#' starts a comment line (fstab); the kernel's tables have no
    comments, and a source may begin with '#' there (the kernel escapes only
    blanks, tab, newline and backslash), so they pass comments=False.  Swap
    entries of fstab are kept (target "none" or "swap"); :func:`backing_mount`
    never matches them.
    """
    mounts = []
    for num, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or (comments and line.startswith("#")):
            continue
        fields = line.split()
        if len(fields) < 3:
            continue
        options = tuple(o for o in unescape(fields[3]).split(",") if o) if len(fields) > 3 else ("defaults",)
        mounts.append(Mount(unescape(fields[0]), _normalize_target(unescape(fields[1])), unescape(fields[2]),
                            options, num))
    return mounts


def parse_mountinfo(text: str) -> List[Mount]:
    """Lines of /proc/self/mountinfo (proc(5)): the optional fields end at a lone "-"."""
    mounts = []
    for num, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if sep < 6 or len(fields) < sep + 3:
            continue
        options = tuple(o for o in (fields[5] + "," + (fields[sep + 3] if len(fields) > sep + 3 else "")).split(",")
                        if o)
        mounts.append(Mount(unescape(fields[sep + 2]), _normalize_target(unescape(fields[4])),
                            unescape(fields[sep + 1]), options, num))
    return mounts


def _under(path: str, mount_point: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point + "/")


def backing_mount(mounts: Sequence[Mount], path: str) -> Optional[Mount]:
    """The mount that holds path: the longest mount-point prefix; the later of two at one point wins."""
    path = _normalize_target(path)
    best: Optional[Mount] = None
    for m in mounts:
        if not m.target.startswith("/") or not _under(path, m.target):
            continue
        if best is None or len(m.target) >= len(best.target):
            best = m
    return best


def top_mounts(mounts: Sequence[Mount]) -> List[Mount]:
    """One mount per mount point: the visible (last) one, in the order of those last lines."""
    top: Dict[str, Mount] = {}
    for m in mounts:
        top.pop(m.target, None)
        top[m.target] = m
    return list(top.values())
