# SPDX-License-Identifier: GPL-2.0-or-later
"""/proc/cpuinfo, whose layout differs on every architecture.

x86 repeats a ``flags`` line per CPU; arm64 and LoongArch say ``Features``;
s390 has one global ``features`` line then ``processor N: ...`` lines; RISC-V
has ``isa`` (and ``hart isa`` since Linux 6.8); POWER ends with a trailer
(``platform``, ``machine``); sparc64 has no ``processor`` lines at all.  So
the parser keeps every ``key : value`` pair in order, keys lower-cased, and
lets callers ask by key.
"""
from __future__ import annotations

import re
from typing import FrozenSet, List, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

_SPACES = pattern(r"\s+")


class CpuInfo(Record):
    entries: Tuple[Tuple[str, str], ...]

    def values(self, key: str) -> List[str]:
        return [v for k, v in self.entries if k == key]

    def first(self, key: str) -> Optional[str]:
        for k, v in self.entries:
            if k == key:
                return v
        return None

    def word_sets(self, *keys: str) -> List[FrozenSet[str]]:
        """One set of whole words per line with any of these keys (x86: one per CPU)."""
        return [frozenset(v.split()) for k, v in self.entries if k in keys]

    @property
    def x86_flags(self) -> List[FrozenSet[str]]:
        return self.word_sets("flags")

    def all_have(self, word: str, *keys: str) -> Optional[bool]:
        """True if every line of these keys lists word, False if none does, None if no such line."""
        sets = self.word_sets(*keys)
        if not sets:
            return None
        return all(word in s for s in sets)

    def any_has(self, word: str, *keys: str) -> bool:
        return any(word in s for s in self.word_sets(*keys))

    @property
    def x86_32bit_kernel(self) -> bool:
        """Printed by a 32-bit x86 kernel: only show_cpuinfo_misc() under CONFIG_X86_32
        (arch/x86/kernel/cpu/proc.c, and arch/i386 before 2.6.24) writes fdiv_bug, hlt_bug and f00f_bug."""
        return any(k in ("fdiv_bug", "hlt_bug", "f00f_bug") for k, _ in self.entries)

    @property
    def s390_versions(self) -> Tuple[str, ...]:
        """The ``version = XX`` of each s390 ``processor N: version = FF, identification = ...`` line."""
        found = []
        for k, v in self.entries:
            if k.startswith("processor ") and k[10:].isdigit():
                m = re.match(r"version = ([0-9A-Fa-f]{2})\b", v)
                if m:
                    found.append(m.group(1).upper())
        return tuple(found)

    @property
    def cpu_count(self) -> int:
        # "processor : 0" (most), "processor 0: ..." (s390); not armv7's "Processor : ARMv7 Processor rev 4".
        return sum(1 for k, v in self.entries if (k == "processor" and v.isdigit()) or re.fullmatch(r"processor \d+", k))


def parse_cpuinfo(text: str) -> CpuInfo:
    entries = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue  # blank separators, sparc64's bare "State:" header is kept (it has a colon)
        key = _SPACES.sub(" ", key.strip().lower())
        if key:
            entries.append((key, value.strip()))
    return CpuInfo(tuple(entries))


def riscv_extensions(isa: str) -> FrozenSet[str]:
    """Single-letter extensions of a RISC-V ISA string such as ``rv64imafdch_zicsr_sstc``.

    Multi-letter extensions follow the first underscore; the single letters
    come right after the ``rv32``/``rv64`` base.  ``g`` is shorthand for imafd
    plus Zicsr/Zifencei, never for the hypervisor extension ``h``.
    """
    isa = isa.strip().lower()
    m = re.match(r"rv(?:32|64|128)([a-z]*)", isa)
    if not m:
        return frozenset()
    letters = set(m.group(1))
    if "g" in letters:
        letters |= set("imafd")
    return frozenset(letters)
