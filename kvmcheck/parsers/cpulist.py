# SPDX-License-Identifier: GPL-2.0-or-later
"""Kernel CPU lists (/sys/devices/system/cpu/online, cpuset.cpus, isolcpus=): "0-3,8-11"."""
from __future__ import annotations

import re
from typing import Iterable, List, Tuple

from kvmcheck.parsers import ParseError

# "N", "N-M", and the bitmap_parselist group form "N-M:used/group" (e.g. 0-15:2/4).
_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+)/(\d+))?)?$")
MAX_CPUS = 1 << 16  # far above any NR_CPUS; a bound against "0-4294967295"


def parse_cpulist(text: str) -> Tuple[int, ...]:
    """The CPU numbers of a list, sorted and unique; "" (an empty offline file) is ()."""
    cpus = set()
    body = text.strip()
    if not body:
        return ()
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue  # a trailing comma
        m = _ITEM.match(item)
        if not m:
            raise ParseError(f"not a CPU list item: {item[:40]!r}")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if last < first:
            raise ParseError(f"descending CPU range {item!r}")
        if last >= MAX_CPUS:
            raise ParseError(f"CPU number out of range in {item!r}")
        used, group = (int(m.group(3)), int(m.group(4))) if m.group(3) is not None else (1, 1)
        if not 0 < used <= group:
            raise ParseError(f"bad CPU group {item!r}")
        for cpu in range(first, last + 1):
            if (cpu - first) % group < used:
                cpus.add(cpu)
    return tuple(sorted(cpus))


def format_cpulist(cpus: Iterable[int]) -> str:
    """The kernel's own compact form: (0, 1, 2, 3, 8) -> "0-3,8"."""
    ranges: List[str] = []
    ordered = sorted(set(cpus))
    start = prev = None
    for cpu in ordered + [None]:  # type: ignore[list-item]
        if start is not None and cpu is not None and cpu == prev + 1:  # type: ignore[operator]
            prev = cpu
            continue
        if start is not None:
            ranges.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(ranges)
