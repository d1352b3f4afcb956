# SPDX-License-Identifier: GPL-2.0-or-later
"""POSIX access ACLs (the system.posix_acl_access xattr) and the kernel's access decision for one identity."""
from __future__ import annotations

import struct
from typing import FrozenSet, List, Optional

from . import ParseError

from kvmcheck.core.record import Record

# include/uapi/linux/posix_acl_xattr.h and include/uapi/linux/posix_acl.h
ACL_XATTR_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


class AclEntry(Record):
    tag: int
    perm: int  # rwx as 4/2/1
    id: Optional[int]  # uid or gid for USER and GROUP entries

    def text(self) -> str:
        """getfacl's form: user:64055:rw-, group::---, mask::rw-."""
        perms = "".join(c if self.perm & bit else "-" for c, bit in (("r", 4), ("w", 2), ("x", 1)))
        kind = {USER_OBJ: "user", USER: "user", GROUP_OBJ: "group", GROUP: "group", MASK: "mask", OTHER: "other"}
        return f"{kind.get(self.tag, '?')}:{'' if self.id is None else self.id}:{perms}"


def parse_posix_acl(data: bytes) -> List[AclEntry]:
    """The entries of a system.posix_acl_access value: a le32 version 2, then (le16 tag, le16 perm, le32 id)."""
    if len(data) < 4 or (len(data) - 4) % 8:
        raise ParseError(f"a POSIX ACL xattr is 4 + 8n bytes, not {len(data)}")
    (version,) = struct.unpack_from("<I", data)
    if version != ACL_XATTR_VERSION:
        raise ParseError(f"POSIX ACL xattr version {version}, expected {ACL_XATTR_VERSION}")
    entries = []
    for off in range(4, len(data), 8):
        tag, perm, ident = struct.unpack_from("<HHI", data, off)
        entries.append(AclEntry(tag, perm & 7, ident if tag in (USER, GROUP) else None))
    return entries


def may_access(want: int, mode: int, owner: int, group: int, uid: int, gids: FrozenSet[int],
               acl: Optional[List[AclEntry]] = None) -> bool:
    """Whether uid with groups gids gets want (4/2/1 bits) on a node, as fs/namei.c and fs/posix_acl.c decide.

    Root bypasses permission bits (CAP_DAC_OVERRIDE) for read and write.  Without an ACL: the owner's,
    else the group's, else others' bits.  With one: the owner entry; else a named user entry (masked);
    else any matching group entry that grants (masked), and if groups matched but none grants, denied;
    else other.
    """
    if uid == 0:
        return True
    if not acl:
        if uid == owner:
            bits = (mode >> 6) & 7
        elif group in gids:
            bits = (mode >> 3) & 7
        else:
            bits = mode & 7
        return bits & want == want
    mask = next((e.perm for e in acl if e.tag == MASK), 7)
    for e in acl:
        if e.tag == USER_OBJ and uid == owner:
            return e.perm & want == want
    for e in acl:
        if e.tag == USER and e.id == uid:
            return e.perm & mask & want == want
    matched = False
    for e in acl:
        if (e.tag == GROUP_OBJ and group in gids) or (e.tag == GROUP and e.id in gids):
            matched = True
            if e.perm & mask & want == want:
                return True
    if matched:
        return False
    return next((e.perm for e in acl if e.tag == OTHER), 0) & want == want
