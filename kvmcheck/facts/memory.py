# SPDX-License-Identifier: GPL-2.0-or-later
"""Memory and CPU capacity as the root shows them: /proc/meminfo, the online CPUs, KSM, huge page pools,
transparent huge pages and the KSM services (judged by checks/memory.py and checks/capacity.py)."""
from __future__ import annotations

import fnmatch
from typing import Dict, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Later, fact, read
from kvmcheck.facts import system  # noqa: F401 - cpuinfo, the fact online_cpus falls back on
from kvmcheck.parsers import ParseError, pattern
from kvmcheck.parsers.meminfo import MemInfo, parse_meminfo

MEMINFO = "/proc/meminfo"
CPU_ONLINE = "/sys/devices/system/cpu/online"
MM = "/sys/kernel/mm"
KSM = "/sys/kernel/mm/ksm"
THP = "/sys/kernel/mm/transparent_hugepage"
HUGEPAGES = "/sys/kernel/mm/hugepages"
KSM_VALUES = ("run", "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "merge_across_nodes",
              "full_scans", "sleep_millisecs", "pages_to_scan")
ETC_UNITS = "/etc/systemd/system"
UNIT_DIRS = (ETC_UNITS, "/usr/lib/systemd/system", "/lib/systemd/system", "/run/systemd/system")
KSM_UNITS = ("ksm.service", "ksmtuned.service")  # RHEL/Fedora: ksm starts KSM at boot, ksmtuned adjusts it
# mm/huge_memory.c: the words the kernel prints in transparent_hugepage/enabled and defrag
THP_MODES = ("always", "madvise", "never")
THP_DEFRAG_MODES = ("always", "defer", "defer+madvise", "madvise", "never")
_SELECTED = pattern(r"\[([^\]]+)\]")


class Meminfo(Record):
    """/proc/meminfo: state is ok (info holds it), absent, denied, unreadable or unparsable (reason says why)."""

    state: str
    info: Optional[MemInfo] = None
    reason: Optional[str] = None


class OnlineCpus(Record):
    """The online CPUs: count and list from /sys/devices/system/cpu/online, else the count of /proc/cpuinfo.

    online_state: ok, absent, denied, unreadable, unparsable or empty (online_reason says why);
    from_cpuinfo: the count came from /proc/cpuinfo's processor entries instead.
    """

    count: Optional[int]
    cpulist: Optional[str]
    online_state: str
    online_reason: Optional[str] = None
    from_cpuinfo: bool = False


class Ksm(Record):
    """Kernel Samepage Merging in sysfs: whether the kernel has it, and its counters (None: absent or not a
    number; the names that could not be read at all are in unreadable, with denied or unreadable)."""

    supported: bool
    values: Dict[str, Optional[int]]
    unreadable: Dict[str, str]


class Thp(Record):
    """Transparent huge pages: the modes selected in enabled and defrag (None when absent or not a mode)."""

    enabled_text: Optional[str]  # the first line of transparent_hugepage/enabled as it is
    mode: Optional[str]
    defrag: Optional[str]
    present: bool  # the file or the directory exists: the kernel has THP


# -- /proc/meminfo and the CPUs -------------------------------------------------------------------------
@fact(reads=(MEMINFO,))
def meminfo(host) -> Meminfo:
    """/proc/meminfo parsed, or why not (absent in an offline root, denied, unreadable, unparsable)."""
    try:
        text = host.read_optional(MEMINFO)
    except OSError as exc:
        return Meminfo("denied" if isinstance(exc, PermissionError) else "unreadable", None,
                       str(exc.strerror or exc))
    if text is None:
        return Meminfo("absent")
    try:
        return Meminfo("ok", parse_meminfo(text))
    except ParseError as exc:
        return Meminfo("unparsable", None, str(exc))


@fact(reads=(CPU_ONLINE,), uses=("cpuinfo",))
def online_cpus(host, facts) -> OnlineCpus:
    """The online CPUs; when the sysfs list cannot say, the processor entries of /proc/cpuinfo."""
    from kvmcheck.parsers.cpulist import format_cpulist, parse_cpulist

    try:
        text = host.read_optional(CPU_ONLINE, limit=65536)
    except OSError as exc:
        text, state, reason = None, "denied" if isinstance(exc, PermissionError) else "unreadable", \
            str(exc.strerror or exc)
    else:
        state, reason = "absent", None
    if text is not None:
        try:
            cpus = parse_cpulist(text)
        except ParseError as exc:
            state, reason = "unparsable", str(exc)
        else:
            if cpus:
                return OnlineCpus(len(cpus), format_cpulist(cpus), "ok")
            state = "empty"
    try:
        cpu = facts.get("cpuinfo")
    except OSError:
        cpu = None
    if cpu is not None and cpu.cpu_count:
        return OnlineCpus(cpu.cpu_count, None, state, reason, from_cpuinfo=True)
    return OnlineCpus(None, None, state, reason)


@fact()
def root_label(host) -> str:
    """What the report calls the root (its path, or the archive a snapshot was unpacked from)."""
    return host.label


# -- sysfs: KSM, huge pages -----------------------------------------------------------------------------
@fact(reads=(MM,))
def sysfs_mm(host) -> bool:
    """Whether the root holds /sys/kernel/mm (a capture without sysfs does not)."""
    return host.is_dir(MM)


@fact(reads=(KSM, f"{KSM}/*"))
def ksm(host) -> Ksm:
    """/sys/kernel/mm/ksm: run, pages_shared, pages_sharing, ... (no directory: a kernel without CONFIG_KSM)."""
    if not host.is_dir(KSM):
        return Ksm(False, {}, {})
    values: Dict[str, Optional[int]] = {}
    unreadable: Dict[str, str] = {}
    for name in KSM_VALUES:
        found = read(host, f"{KSM}/{name}", limit=4096)
        if found.state in ("denied", "unreadable"):
            unreadable[name] = found.state
        values[name] = _int(found.text)
    return Ksm(True, values, unreadable)


@fact(uses=("family",))
def base_page_size(facts) -> Later:
    """Later: the base page size KSM counts in, asked only when pages were merged.  Nothing in sysfs says,
    so 64 KiB on POWER (its usual size) and 4 KiB elsewhere (arm64 kernels built for 64 KiB pages make a
    saving estimate 16 times too low)."""
    return Later(lambda: 65536 if facts.get("family") == "ppc64" else 4096)


@fact(reads=(ETC_UNITS, f"{ETC_UNITS}/*.wants/ksm*.service") + tuple(f"{d}/ksm*.service" for d in UNIT_DIRS))
def ksm_units(host) -> Dict[str, str]:
    """The ksm and ksmtuned services: unit -> "enabled" (a *.wants link in /etc/systemd/system), "masked"
    (a link to /dev/null) or "installed"; units without a unit file are left out."""
    states = {unit: _unit_state(host, unit) for unit in KSM_UNITS}
    return {unit: state for unit, state in states.items() if state}


def _unit_state(host, unit: str) -> Optional[str]:  # type: ignore[no-untyped-def]
    masked = host.node(f"{ETC_UNITS}/{unit}")
    if masked is not None and host.first_line(f"{ETC_UNITS}/{unit}") is None and masked.kind in ("char", "link"):
        return "masked"  # a link to /dev/null
    if _wanted(host, unit):
        return "enabled"
    if any(host.exists(f"{d}/{unit}") for d in UNIT_DIRS):
        return "installed"
    return None


def _wanted(host, unit: str) -> bool:  # type: ignore[no-untyped-def]
    """Whether a /etc/systemd/system/*.wants directory holds unit (a link, dangling or not): what
    host.glob(ETC_UNITS/*.wants/unit) found, without asking for /etc and /etc/systemd on the way."""
    for name in host.listdir(ETC_UNITS):
        if fnmatch.fnmatchcase(name, "*.wants"):
            path = f"{ETC_UNITS}/{name}/{unit}"
            if host.stat(path) is not None or _lexists(host, path):
                return True
    return False


def _lexists(host, path: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        return host.lstat(path) is not None
    except OSError:
        return False


@fact(reads=(HUGEPAGES, f"{HUGEPAGES}/hugepages-*/nr_hugepages", f"{HUGEPAGES}/hugepages-*/free_hugepages"))
def hugepage_pools(host) -> Dict[str, Dict[str, int]]:
    """The static huge page pools: label ("2M", "1G") -> {kib, total, free} (a count that cannot be read is 0).

    In the order of their directory names (hugepages-1048576kB before hugepages-2048kB)."""
    pools: Dict[str, Dict[str, int]] = {}
    for name in host.listdir(HUGEPAGES):  # host.glob would ask for /sys and /sys/kernel on the way
        if not fnmatch.fnmatchcase(name, "hugepages-*kB"):
            continue
        path = f"{HUGEPAGES}/{name}"
        size = name.rsplit("-", 1)[-1]
        try:
            kib = int(size[:-2])
        except ValueError:
            continue
        total = _int(host.first_line(f"{path}/nr_hugepages"))
        free = _int(host.first_line(f"{path}/free_hugepages"))
        pools[size_label(kib)] = {"kib": kib, "total": total if total is not None else 0,
                                  "free": free if free is not None else 0}
    return pools


def size_label(kib: int) -> str:
    return f"{kib // (1 << 20)}G" if kib >= 1 << 20 else f"{kib // 1024}M" if kib >= 1024 else f"{kib}K"


@fact(reads=(THP, f"{THP}/enabled", f"{THP}/defrag"))
def thp(host) -> Thp:
    """The transparent huge page modes (mm/huge_memory.c prints 'always [madvise] never')."""
    text = host.first_line(f"{THP}/enabled")
    defrag = selected(host.first_line(f"{THP}/defrag"), THP_DEFRAG_MODES)
    mode = selected(text, THP_MODES)
    present = text is not None or host.is_dir(THP)
    return Thp(text, mode, defrag, present)


def selected(text: Optional[str], known: Tuple[str, ...]) -> Optional[str]:
    """"always [madvise] never" -> "madvise"; a bare single word (some backports) is taken as is.

    Only a mode in known counts: anything else there is not a THP setting (a damaged capture).
    """
    if not text:
        return None
    m = _SELECTED.search(text)
    words = text.split()
    mode = m.group(1) if m else words[0] if len(words) == 1 else None
    return mode if mode in known else None


def _int(text: Optional[str]) -> Optional[int]:
    """The number on the first line of a sysfs value (None when absent or not a number)."""
    if text is None:
        return None
    try:
        return int(text.split("\n", 1)[0].strip())
    except ValueError:
        return None
