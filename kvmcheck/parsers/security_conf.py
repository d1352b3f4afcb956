# SPDX-License-Identifier: GPL-2.0-or-later
"""libvirt's .conf files (qemu.conf's security_driver and security_default_confined) and
/etc/selinux/config.  Pure text in, data out."""
from __future__ import annotations

from typing import Dict, List, Tuple

from kvmcheck.core.record import Record


class Setting(Record):
    value: str
    line: int
    text: str


def parse_libvirt_conf(text: str, keys: Tuple[str, ...]) -> Dict[str, Setting]:
    """The last assignment of each key in a libvirt .conf file (KEY = "str" | NUM | [ "list", ... ])."""
    found: Dict[str, Setting] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        first = lines[i].split("#", 1)[0]
        parts = [first]
        # A list may span lines until its closing bracket.  Only each new line is searched for it:
        # rescanning the joined text made an unclosed '[' quadratic in the file's length.
        if "[" in first and "]" not in first:
            while i + 1 < len(lines):
                i += 1
                parts.append(lines[i].split("#", 1)[0])
                if "]" in parts[-1]:
                    break
        stmt = " ".join(parts)
        i += 1
        key, sep, value = stmt.partition("=")
        key = key.strip()
        if sep and key in keys:
            found[key] = Setting(value.strip(), start + 1, " ".join(stmt.split()))
    return found


def drivers(value: str) -> List[str]:
    """security_driver's value as a list of names: "selinux" or [ "selinux", "dac" ]."""
    return [w.strip().strip('"').strip("'") for w in value.strip().strip("[]").split(",") if w.strip()]


def parse_selinux_config(text: str) -> Dict[str, Setting]:
    found: Dict[str, Setting] = {}
    for num, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = Setting(value.strip().strip('"').lower(), num, line)
    return found
