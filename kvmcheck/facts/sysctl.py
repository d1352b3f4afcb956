# SPDX-License-Identifier: GPL-2.0-or-later
"""Kernel tunables: what /proc/sys holds now, and what sysctl.d will set at the next boot."""
from __future__ import annotations

from typing import Dict, Optional

from kvmcheck.core.record import Record
from kvmcheck.facts import Readout, fact, read
from kvmcheck.parsers.meminfo import MemInfo, parse_meminfo
from kvmcheck.parsers.sysctl import SYSCTL_CONF, SYSCTL_DIRS, Setting, configured, effective_files

OVERCOMMIT_KEYS = ("vm.overcommit_memory", "vm.overcommit_ratio", "vm.overcommit_kbytes")


class SysctlConfig(Record):
    """sysctl.d(5) as applied at boot: key -> winning Setting; unreadable: 'PATH: reason' of files skipped."""

    settings: Dict[str, Setting]
    unreadable: tuple


class Overcommit(Record):
    """The kernel's virtual-memory accounting: the running values (Readouts of /proc/sys/vm/*, by key),
    /proc/meminfo (None when absent or unreadable) and the values sysctl.d configures."""

    running: Dict[str, Readout]
    meminfo: Optional[MemInfo]
    configured: Dict[str, Setting]


@fact(reads=tuple(f"{d}/*.conf" for d in SYSCTL_DIRS) + SYSCTL_DIRS + (SYSCTL_CONF,))
def sysctl_config(host) -> SysctlConfig:
    listings, texts, unreadable = {}, [], []
    for directory in SYSCTL_DIRS:
        try:
            listings[directory] = host.listdir(directory)
        except OSError as exc:  # a directory this user may not list: its files are unknown, and named
            unreadable.append(f"{directory}: {exc.strerror or exc}")
    for path in effective_files(listings) + [SYSCTL_CONF]:
        found = read(host, path, limit=1 << 20)
        if found.ok:
            texts.append((path, found.text))
        elif found.state != "absent":
            unreadable.append(f"{path}: {found.reason}")
    return SysctlConfig(configured(texts), tuple(unreadable))


@fact(reads=tuple("/proc/sys/" + key.replace(".", "/") for key in OVERCOMMIT_KEYS) + ("/proc/meminfo",))
def overcommit(host, sysctl_config) -> Overcommit:
    running = {key: read(host, "/proc/sys/" + key.replace(".", "/"), limit=4096) for key in OVERCOMMIT_KEYS}
    mem = read(host, "/proc/meminfo")
    meminfo = None
    if mem.ok:
        try:
            meminfo = parse_meminfo(mem.text or "")
        except ValueError:  # ParseError: a damaged capture; the judge goes by the mode alone
            meminfo = None
    wanted = {k: v for k, v in sysctl_config.settings.items() if k in OVERCOMMIT_KEYS}
    return Overcommit(running, meminfo, wanted)
