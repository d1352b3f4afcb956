# SPDX-License-Identifier: GPL-2.0-or-later
"""Kernel CPU lists (/sys/devices/system/cpu/online, cpuset.cpus, isolcpus=): "0-3,8-11"."""
from __future__ import annotations

from itertools import compress
from typing import Iterable, List, Tuple

from kvmcheck.parsers import ParseError, pattern

# "N", "N-M", and the bitmap_parselist group form "N-M:used/group" (e.g. 0-15:2/4).
_ITEM = pattern(r"^(\d+)(?:-(\d+)(?::(\d+)/(\d+))?)?$")
MAX_CPUS = 1 << 16  # far above any NR_CPUS; a bound against "0-4294967295"
# CPUs a whole list may name, counting overlaps again.  The kernel never repeats a CPU, so a real
# list names at most MAX_CPUS; without a bound, "0-65535," repeated over a megabyte is hours of work.
MAX_WORK = 64 * MAX_CPUS
_ONES = memoryview(b"\1" * MAX_CPUS)


def parse_cpulist(text: str) -> Tuple[int, ...]:
    """The CPU numbers of a list, sorted and unique; "" (an empty offline file) is ()."""
    body = text.strip()
    if not body:
        return ()
    items = []
    work = 0
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue  # a trailing comma
        m = _ITEM.match(item)
        if not m:
            raise ParseError(f"not a CPU list item: {item[:40]!r}")
        # Longer numbers are out of range anyway; and int() refuses (or takes quadratic time on)
        # thousands of digits, which would escape as a plain ValueError.
        if any(g is not None and len(g) > 6 for g in m.groups()):
            raise ParseError(f"CPU number out of range in {item[:40]!r}")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if last < first:
            raise ParseError(f"descending CPU range {item[:40]!r}")
        if last >= MAX_CPUS:
            raise ParseError(f"CPU number out of range in {item[:40]!r}")
        used, group = (int(m.group(3)), int(m.group(4))) if m.group(3) is not None else (1, 1)
        if not 0 < used <= group:
            raise ParseError(f"bad CPU group {item[:40]!r}")
        work += last - first + 1
        if work > MAX_WORK:
            raise ParseError(f"CPU list names more than {MAX_WORK} CPUs, overlaps counted: not a kernel CPU list")
        items.append((first, last, used, group))
    if not items:
        return ()
    # A bitmap filled with slice assignments: linear in the list, not in the CPUs times the items.
    bits = bytearray(max(last for _, last, _, _ in items) + 1)
    for first, last, used, group in items:
        if used == group:
            bits[first:last + 1] = _ONES[:last + 1 - first]
        elif used <= (last - first) // group + 1:  # fewer offsets than groups: one strided slice per offset
            for off in range(first, min(first + used, last + 1)):
                bits[off:last + 1:group] = _ONES[:len(range(off, last + 1, group))]
        else:  # fewer groups than offsets: one contiguous slice per group
            for start in range(first, last + 1, group):
                end = min(start + used, last + 1)
                bits[start:end] = _ONES[:end - start]
    return tuple(compress(range(len(bits)), bits))


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
