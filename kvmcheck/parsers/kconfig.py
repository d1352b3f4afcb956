# SPDX-License-Identifier: GPL-2.0-or-later
"""A kernel build configuration (/boot/config-RELEASE, the text of /proc/config.gz)."""
from __future__ import annotations

from typing import Dict, Optional

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

_SET = pattern(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = pattern(r"^#\s*(CONFIG_[A-Za-z0-9_]+) is not set\s*$")


class KConfig(Record):
    """Option -> value: "y", "m", "n" (written as '# CONFIG_X is not set'), a number or a string (unquoted)."""

    options: Dict[str, str]

    def get(self, name: str) -> Optional[str]:
        """The value, or None when the file does not mention the option (for a full config: it does not exist
        on this architecture or version, which the kernel treats as n)."""
        if not name.startswith("CONFIG_"):
            name = "CONFIG_" + name
        return self.options.get(name)

    def enabled(self, name: str) -> Optional[bool]:
        """True for y or m, False for n, None when not mentioned."""
        value = self.get(name)
        return None if value is None else value in ("y", "m")

    def __bool__(self) -> bool:
        return bool(self.options)


def parse_kconfig(text: str) -> KConfig:
    """CONFIG_X=y|m|n|123|"string" and '# CONFIG_X is not set'; comments and junk are skipped.

    A later line wins, as in Kconfig itself.  Text without a single option gives an empty (false) KConfig.
    """
    options: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        m = _SET.match(line)
        if m:
            value = m.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            options[m.group(1)] = value
            continue
        m = _UNSET.match(line)
        if m:
            options[m.group(1)] = "n"
    return KConfig(options)
