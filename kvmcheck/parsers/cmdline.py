# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel command line (/proc/cmdline, GRUB_CMDLINE_LINUX), split the way the kernel splits it."""
from __future__ import annotations

from typing import List, Optional, Tuple

from kvmcheck.core.record import Record


def _key(name: str) -> str:
    """The kernel compares parameter names with '-' and '_' alike (kernel/params.c parameq)."""
    return name.replace("-", "_")


class KernelCmdline(Record):
    params: Tuple[Tuple[str, Optional[str]], ...]  # (name, value or None for a bare flag), in order
    init_args: Tuple[str, ...] = ()  # what follows "--": arguments for init, not kernel parameters

    def get_all(self, name: str) -> List[Optional[str]]:
        """Every value given for name, in order (None for a bare 'name')."""
        key = _key(name)
        return [v for n, v in self.params if _key(n) == key]

    def get(self, name: str) -> Optional[str]:
        """The last value given for name (the one most parameters honour), or None."""
        values = [v for v in self.get_all(name) if v is not None]
        return values[-1] if values else None

    def has(self, name: str) -> bool:
        return bool(self.get_all(name))

    def list_values(self, name: str) -> List[str]:
        """Comma-separated values of every occurrence joined (modprobe.blacklist=a,b modprobe.blacklist=c)."""
        out: List[str] = []
        for value in self.get_all(name):
            out.extend(v.strip() for v in (value or "").split(",") if v.strip())
        return out


def _words(text: str) -> List[str]:
    """Split on whitespace outside double quotes; quotes are dropped (kernel/params.c next_arg)."""
    words, cur, quoted, started = [], [], False, False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            started = True
            continue
        if ch.isspace() and not quoted:
            if started:
                words.append("".join(cur))
            cur, started = [], False
            continue
        cur.append(ch)
        started = True
    if started:
        words.append("".join(cur))
    return words


def parse_cmdline(text: str) -> KernelCmdline:
    """``a b=c d="e f" -- init args``; NULs (as in /proc/PID/cmdline) count as spaces."""
    params: List[Tuple[str, Optional[str]]] = []
    words = _words(text.replace("\0", " "))
    for i, word in enumerate(words):
        if word == "--":
            return KernelCmdline(tuple(params), tuple(words[i + 1:]))
        name, sep, value = word.partition("=")
        if not name:
            continue
        params.append((name, value if sep else None))
    return KernelCmdline(tuple(params))
