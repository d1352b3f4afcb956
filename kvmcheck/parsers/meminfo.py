# SPDX-License-Identifier: GPL-2.0-or-later
"""/proc/meminfo: sizes in bytes, hugepage counts as counts."""
from __future__ import annotations

from typing import Dict, Optional

from kvmcheck.core.record import Record
from kvmcheck.parsers import ParseError

_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3}


class MemInfo(Record):
    """Every field of /proc/meminfo: bytes for "kB" fields, plain numbers for counts (HugePages_*)."""

    fields: Dict[str, int]

    def get(self, key: str) -> Optional[int]:
        return self.fields.get(key)

    @property
    def total(self) -> int:
        return self.fields["MemTotal"]

    @property
    def available(self) -> int:
        """MemAvailable (Linux >= 3.14), else the old estimate MemFree + Buffers + Cached."""
        if "MemAvailable" in self.fields:
            return self.fields["MemAvailable"]
        return sum(self.fields.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))

    @property
    def available_estimated(self) -> bool:
        return "MemAvailable" not in self.fields

    @property
    def swap_total(self) -> int:
        return self.fields.get("SwapTotal", 0)

    @property
    def swap_free(self) -> int:
        return self.fields.get("SwapFree", 0)


def parse_meminfo(text: str) -> MemInfo:
    """``Key:   123 kB`` lines; lines that do not fit are skipped.  No MemTotal -> ParseError."""
    fields: Dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        words = rest.split()
        if not sep or not key.strip() or not words or len(words) > 2:
            continue
        unit = words[1].lower() if len(words) == 2 else ""
        if unit not in _UNITS:
            continue
        try:
            number = int(words[0])
        except ValueError:
            continue
        if number < 0:
            continue
        fields[key.strip()] = number * _UNITS[unit]
    if "MemTotal" not in fields:
        raise ParseError("no MemTotal line: not a /proc/meminfo")
    return MemInfo(fields)
