# SPDX-License-Identifier: GPL-2.0-or-later
"""Kernel tunables: what /proc/sys holds now, and what sysctl.d will set at the next boot."""
from __future__ import annotations

from typing import Dict, Optional

from kvmcheck.core.record import Record
from kvmcheck.facts import Readout, fact, read
from kvmcheck.parsers.meminfo import MemInfo, parse_meminfo
from kvmcheck.parsers.sysctl import SYSCTL_CONF, SYSCTL_DIRS, Setting, configured, effective_files

OVERCOMMIT_KEYS = ("vm.overcommit_memory", "vm.overcommit_ratio", "vm.overcommit_kbytes")
HUGEPAGE_KEYS = ("vm.nr_hugepages", "vm.nr_overcommit_hugepages", "vm.hugetlb_shm_group")


class SysctlConfig(Record):
    """sysctl.d(5) as applied at boot: key -> winning Setting; unreadable: 'PATH: reason' of files skipped."""

    settings: Dict[str, Setting]
    unreadable: tuple


class Overcommit(Record):
    """The kernel's virtual-memory accounting: the running values (Readouts of /proc/sys/vm/*, by key),
    /proc/meminfo (None when absent or unreadable) and the values sysctl.d configures, with the boot time
    and the files' modification times that tell whether a configured value was applied (see SysctlKeys)."""

    running: Dict[str, Readout]
    meminfo: Optional[MemInfo]
    configured: Dict[str, Setting]
    booted: Optional[int] = None
    changed: Dict[str, float] = {}


class SysctlKeys(Record):
    """Some keys as the running kernel holds them (Readouts of /proc/sys, by key) and as sysctl.d sets them at
    boot, with what tells whether a configured value was already applied at this boot: the boot time
    (/proc/stat btime, live only) and the modification time of each file whose line wins."""

    running: Dict[str, Readout]
    configured: Dict[str, Setting]
    booted: Optional[int]  # seconds since the epoch; None offline or unreadable
    changed: Dict[str, float]  # path -> mtime, for the files in configured


def sysctl_keys(host, sysctl_config: SysctlConfig, keys) -> SysctlKeys:  # type: ignore[no-untyped-def]
    from kvmcheck.parsers.procfs import parse_btime

    running = {key: read(host, "/proc/sys/" + key.replace(".", "/"), limit=4096) for key in keys}
    wanted = {k: v for k, v in sysctl_config.settings.items() if k in keys}
    stat = read(host, "/proc/stat", limit=1 << 20, live_only=True)
    booted = parse_btime(stat.text or "") if stat.ok else None
    changed = {}
    for setting in wanted.values():
        try:
            st = host.stat(setting.path)
        except OSError:  # read a moment ago; gone or closed since: its age is unknown
            st = None
        if st is not None:
            changed[setting.path] = st.st_mtime
    return SysctlKeys(running, wanted, booted, changed)


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


@fact(reads=tuple("/proc/sys/" + key.replace(".", "/") for key in OVERCOMMIT_KEYS) + ("/proc/meminfo", "/proc/stat"))
def overcommit(host, sysctl_config) -> Overcommit:
    keys = sysctl_keys(host, sysctl_config, OVERCOMMIT_KEYS)
    running = keys.running
    mem = read(host, "/proc/meminfo")
    meminfo = None
    if mem.ok:
        try:
            meminfo = parse_meminfo(mem.text or "")
        except ValueError:  # ParseError: a damaged capture; the judge goes by the mode alone
            meminfo = None
    return Overcommit(running, meminfo, keys.configured, keys.booted, keys.changed)


@fact(reads=tuple("/proc/sys/" + key.replace(".", "/") for key in HUGEPAGE_KEYS) + ("/proc/stat",))
def hugepage_sysctl(host, sysctl_config) -> SysctlKeys:
    """vm.nr_hugepages, vm.nr_overcommit_hugepages and vm.hugetlb_shm_group, running and configured."""
    return sysctl_keys(host, sysctl_config, HUGEPAGE_KEYS)

