# SPDX-License-Identifier: GPL-2.0-or-later
"""/etc/passwd and /etc/group (the files only; NSS sources such as LDAP are not seen)."""
from __future__ import annotations

from typing import Dict, List, Tuple

from kvmcheck.core.record import Record


class User(Record):
    name: str
    uid: int
    gid: int
    shell: str


class Group(Record):
    name: str
    gid: int
    members: Tuple[str, ...]


def parse_passwd(text: str) -> List[User]:
    users = []
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 7 and not line.startswith(("#", "+", "-")):
            try:
                users.append(User(f[0], int(f[2]), int(f[3]), f[6].strip()))
            except ValueError:
                continue  # a malformed uid; skip the line as login(1) would
    return users


def parse_group(text: str) -> Dict[int, Group]:
    groups: Dict[int, Group] = {}
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 4 and not line.startswith(("#", "+", "-")):
            try:
                gid = int(f[2])
            except ValueError:
                continue
            members = tuple(m.strip() for m in f[3].split(",") if m.strip())
            groups.setdefault(gid, Group(f[0], gid, members))
    return groups
