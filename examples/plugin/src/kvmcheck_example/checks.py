# SPDX-License-Identifier: GPL-2.0-or-later
"""example.swap: does this KVM host have swap, and is it nearly full?

A complete third-party check: it reads only through ``ctx.host`` (so it works on the live
host, on ``--root DIR`` and on captured test roots alike), parses with a pure function, and
returns an ``Outcome``.  Registered through the ``kvmcheck.checks`` entry point in this
package's pyproject.toml.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List

from kvmcheck.context import Context
from kvmcheck.model import Outcome
from kvmcheck.registry import check

SWAPS = "/proc/swaps"
NEARLY_FULL = 0.9  # warn when this share of all swap is in use
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class SwapArea:
    path: str
    kind: str  # "partition" (any block device, zram included) or "file"
    size_kib: int
    used_kib: int
    priority: int


def parse_proc_swaps(text: str) -> List[SwapArea]:
    """The areas listed in /proc/swaps (mm/swapfile.c, swap_show()).

    The kernel escapes space, tab, newline and backslash in the path as \\ooo, so the
    last four fields are split off from the right and the rest is the path.
    Raises ValueError on a line that is not in that format.
    """
    areas = []
    for line in text.splitlines()[1:]:  # the first line is the header
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 5:
            raise ValueError(f"not a /proc/swaps line: {line!r}")
        path = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), " ".join(fields[:-4]))
        kind, size, used, prio = fields[-4:]
        areas.append(SwapArea(path, kind, int(size), int(used), int(prio)))
    return areas


def _gib(kib: int) -> str:
    return f"{kib / (1 << 20):.1f} GiB"


@check("example.swap", "Swap space for guest memory overcommit", reads=(SWAPS,))
def swap(ctx: Context) -> Outcome:
    """The host has active swap, and it is not nearly full.

    What: the active swap areas in /proc/swaps (partitions, swap files,
    zram devices), their total size and how much of it is in use.  A root
    without /proc (an offline or Kickstart target) is skipped: swap is a
    property of the running system.

    Why: guest RAM is ordinary anonymous memory of the QEMU processes.  With
    no swap, the moment guests and host together want more than the RAM
    (memory overcommit, KSM pages unmerging, a balloon deflating, a burst
    in the page cache of the host) the kernel's OOM killer ends the largest
    process, which is a guest, without warning.  With swap the host slows
    down instead, and the pressure shows up in monitoring.  Swap that is
    more than 90% used means that this is already happening.

    Fix: add swap, for example a swap file: 'fallocate -l 8G /swapfile &&
    chmod 600 /swapfile && mkswap /swapfile && swapon /swapfile', and the
    line '/swapfile none swap defaults 0 0' in /etc/fstab; or compressed
    swap in RAM with zram (zram-generator on Fedora/RHEL, zram-tools on
    Debian/Ubuntu).  For swap that is nearly full: add memory, start fewer
    guests or give them less memory.
    """
    text = ctx.host.read_optional(SWAPS)  # PermissionError propagates: the runner turns it into a skip
    if text is None:
        return Outcome.skipped(f"no {SWAPS} in this root", "Swap is a property of the running system.")
    try:
        areas = parse_proc_swaps(text)
    except ValueError as exc:
        return Outcome.skipped(f"{SWAPS} cannot be parsed", str(exc))
    if not areas:
        return Outcome.warned(
            "no swap: under memory pressure the OOM killer ends a guest",
            "No swap area is active.  When guests and the host want more memory than the RAM, the kernel "
            "kills the largest process, which is a guest, instead of paging out.",
            "Add swap: 'fallocate -l 8G /swapfile && chmod 600 /swapfile && mkswap /swapfile && swapon /swapfile' "
            "and '/swapfile none swap defaults 0 0' in /etc/fstab, or zram (zram-generator, zram-tools).",
            areas=[],
        )
    size = sum(a.size_kib for a in areas)
    used = sum(a.used_kib for a in areas)
    evidence = {"areas": [{"path": a.path, "type": a.kind, "size_kib": a.size_kib, "used_kib": a.used_kib,
                           "priority": a.priority} for a in areas],
                "size_kib": size, "used_kib": used}
    names = ", ".join(a.path for a in areas)
    if size and used >= NEARLY_FULL * size:
        return Outcome.warned(
            f"swap {used * 100 // size}% used ({_gib(used)} of {_gib(size)})",
            f"Swap areas: {names}.  Guests are already being paged out; when swap runs out, the OOM killer "
            "ends a guest.",
            "Add memory or swap, start fewer guests, or give them less memory.",
            **evidence,
        )
    return Outcome.passed(f"{_gib(size)} of swap ({names}), {_gib(used)} used", **evidence)
