# SPDX-License-Identifier: GPL-2.0-or-later
"""Per-process files of procfs (proc(5)): /proc/PID/status, /proc/PID/stat, and /proc/stat's boot time."""
from __future__ import annotations

from typing import Optional, Tuple

from kvmcheck.core.record import Record


class ProcStatus(Record):
    """What /proc/PID/status says of a process's identity."""

    name: str  # task->comm, as /proc/PID/comm holds it (15 bytes at most; escaped by the kernel)
    uid: int  # effective uid (the second of Uid's four fields), the one access checks use
    gid: int  # effective gid
    groups: Tuple[int, ...]  # supplementary groups (Groups:), sorted


def parse_status(text: str) -> Optional[ProcStatus]:
    """The Name, Uid, Gid and Groups lines of /proc/PID/status; None when one of Name, Uid or Gid is missing
    or not numbers (a damaged capture).  A kernel thread has an empty Groups line; so has a process that
    dropped every supplementary group."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Uid", "Gid", "Groups"):
            fields[key] = value.strip()
    try:
        uid = int(fields["Uid"].split()[1])  # real, effective, saved, filesystem
        gid = int(fields["Gid"].split()[1])
        groups = tuple(sorted({int(g) for g in fields.get("Groups", "").split()}))
    except (KeyError, IndexError, ValueError):
        return None
    if "Name" not in fields:
        return None
    return ProcStatus(fields["Name"], uid, gid, groups)


def parse_stat_starttime(text: str) -> Optional[int]:
    """Field 22 of /proc/PID/stat, starttime: clock ticks after boot at which the process started.

    The second field, (comm), may itself hold spaces and parentheses, so the fields are counted after
    the last ')': state is field 3, starttime field 22, the 20th after it."""
    _, sep, rest = text.rpartition(")")
    words = rest.split()
    if not sep or len(words) < 20:
        return None
    try:
        return int(words[19])
    except ValueError:
        return None


def parse_btime(text: str) -> Optional[int]:
    """The 'btime' line of /proc/stat: when the system booted, in seconds since the epoch."""
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "btime":
            try:
                return int(words[1])
            except ValueError:
                return None
    return None
