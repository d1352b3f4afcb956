# SPDX-License-Identifier: GPL-2.0-or-later
"""sysctl.d(5) configuration: which value each key will get at boot, and from which file."""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

from kvmcheck.core.record import Record

# Searched in this order; a file name found in an earlier directory hides the same name in a later one
# (systemd-sysctl and procps 'sysctl --system' agree on both).
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
# procps reads it after every sysctl.d file; systemd reaches it through /etc/sysctl.d/99-sysctl.conf.
SYSCTL_CONF = "/etc/sysctl.conf"


class Setting(Record):
    value: str
    path: str  # the file whose line wins
    line: int


def normalize_key(key: str) -> str:
    """sysctl(8) accepts '/' or '.' as the separator: vm/overcommit_memory is vm.overcommit_memory."""
    return key.strip().lstrip("-").strip().replace("/", ".")


def parse_sysctl_conf(text: str) -> List[Tuple[str, str, int]]:
    """(key, value, line number) of each assignment, in file order; comments (# or ;) and junk skipped.

    A leading '-' (ignore a failure to set it) still sets the key, so it counts."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = normalize_key(key)
        if key:
            out.append((key, value.strip(), number))
    return out


def effective_files(listings: Dict[str, Sequence[str]]) -> List[str]:
    """The *.conf files sysctl.d(5) applies, in order: by file name across SYSCTL_DIRS, earlier directory winning
    a shared name.  listings: directory -> the names in it."""
    chosen: Dict[str, str] = {}
    for directory in SYSCTL_DIRS:
        for name in listings.get(directory, ()):
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = f"{directory}/{name}"
    return [chosen[name] for name in sorted(chosen)]


def configured(files: Iterable[Tuple[str, str]]) -> Dict[str, Setting]:
    """key -> the Setting that wins: (path, text) pairs in the order they are applied, the last assignment wins."""
    found: Dict[str, Setting] = {}
    for path, text in files:
        for key, value, line in parse_sysctl_conf(text):
            found[key] = Setting(value, path, line)
    return found
