# SPDX-License-Identifier: GPL-2.0-or-later
"""Host capacity: online CPUs, memory and swap, and how many guests of a given size fit."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from kvmcheck.facts.context import Context
from kvmcheck.core.model import Outcome
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.cpulist import format_cpulist, parse_cpulist
from kvmcheck.parsers.meminfo import parse_meminfo
from kvmcheck.core.registry import check

GIB = 1 << 30
def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def online_cpus(ctx: Context) -> Tuple[Optional[int], str, Optional[str]]:
    """(number of online CPUs, where it came from, the online list) or (None, reason, None)."""
    try:
        text = ctx.host.read_optional("/sys/devices/system/cpu/online", limit=65536)
    except OSError as exc:
        text, why = None, f"/sys/devices/system/cpu/online unreadable ({exc.strerror or exc})"
    else:
        why = "no /sys/devices/system/cpu/online"
    if text is not None:
        try:
            cpus = parse_cpulist(text)
        except ParseError as exc:
            why = f"/sys/devices/system/cpu/online unparsable ({exc})"
        else:
            if cpus:
                return len(cpus), "/sys/devices/system/cpu/online", format_cpulist(cpus)
            why = "/sys/devices/system/cpu/online is empty"
    try:
        cpu = ctx.cpuinfo()
    except OSError:
        cpu = None
    if cpu is not None and cpu.cpu_count:
        return cpu.cpu_count, f"/proc/cpuinfo processor entries ({why})", None
    return None, why, None


@check("capacity.resources", "CPU and memory capacity for guests", reads=(
    "/sys/devices/system/cpu/online", "/proc/meminfo", "/proc/cpuinfo",
))
def capacity_resources(ctx: Context) -> Outcome:
    """Enough online CPUs and memory to run guests, and how many guests of a typical size fit now.

    What: online CPU threads (/sys/devices/system/cpu/online, else the
    processor entries of /proc/cpuinfo), MemTotal, MemAvailable (MemFree +
    Buffers + Cached before Linux 3.14) and swap from /proc/meminfo, read
    through the root like every other file, so a live run sees live values.
    Thresholds (Settings): min_host_cpus 2, min_host_memory_gib 2,
    guest_vcpus 2, guest_memory_gib 2, host_reserve_gib 1 and
    host_reserve_percent 10 (the larger is kept back for the host).
    MemTotal below the minimum fails: no useful guest fits beside the host.
    Fewer CPUs than the minimum, or no room for one guest in the memory
    available now, or a guest size with more vCPUs than online CPUs, warns.
    Guests that fit: memory available minus the reserve, divided by the
    guest size (memory is the hard limit; vCPUs are commonly overcommitted,
    so the count without overcommit is only shown).  No /proc/meminfo (an
    offline root): skip.

    Why: guest RAM is real host memory (overcommitting it ends in swapping
    or the OOM killer), and a guest with as many vCPUs as the host has
    threads competes with the host for every one of them.

    Fix: add memory or CPUs (or, for a VM host, give it more), stop what
    uses the memory, or size guests smaller.  Offline CPUs come back with
    'echo 1 > /sys/devices/system/cpu/cpuN/online' (and check for maxcpus=
    or nr_cpus= on the kernel command line).
    """
    try:
        text = ctx.host.read_optional("/proc/meminfo")
    except OSError as exc:
        return Outcome.skipped(f"/proc/meminfo unreadable ({exc.strerror or exc})")
    if text is None:
        return Outcome.skipped("no /proc/meminfo in this root",
                               "Memory and CPUs are properties of a running system; an offline root has none.")
    try:
        mem = parse_meminfo(text)
    except ParseError as exc:
        return Outcome.skipped(f"/proc/meminfo unparsable: {exc}")
    cpus, cpu_source, cpu_list = online_cpus(ctx)
    s = ctx.settings
    min_cpus = int(s.min_host_cpus)
    min_mem = s.min_host_memory_gib * GIB
    g_vcpus = max(1, int(s.guest_vcpus))
    g_mem = max(1.0, s.guest_memory_gib * GIB)
    reserve = max(s.host_reserve_gib * GIB, mem.total * s.host_reserve_percent / 100)
    by_memory = max(0, int((mem.available - reserve) // g_mem))
    by_cpu = cpus // g_vcpus if cpus else None  # without vCPU overcommit, which is common and usually fine
    fit = by_memory
    evidence: Dict[str, object] = {
        "cpus_online": cpus, "cpu_source": cpu_source, "online_list": cpu_list,
        "mem_total": mem.total, "mem_available": mem.available, "mem_available_estimated": mem.available_estimated,
        "swap_total": mem.swap_total, "swap_free": mem.swap_free, "host_reserve": int(reserve),
        "guest": {"vcpus": g_vcpus, "memory": int(g_mem)},
        "guests_fit": fit, "guests_fit_by_memory": by_memory, "guests_fit_by_cpu": by_cpu,
        "live": ctx.host.live,
    }
    guest = f"{g_vcpus} vCPU/{g_mem / GIB:g} GiB"
    cpu_text = f"{cpus} CPU{'s' if cpus != 1 else ''} online" if cpus else "CPUs unknown"
    if cpu_list and cpu_list != f"0-{cpus - 1}" and cpus:  # type: ignore[operator]
        cpu_text += f" ({cpu_list})"
    swap = f"swap {_gib(mem.swap_total)}" if mem.swap_total else "no swap"
    facts = (f"{cpu_text}, {_gib(mem.total)} RAM ({_gib(mem.available)} available"
             + (", estimated" if mem.available_estimated else "") + f"), {swap}")
    notes: List[str] = []
    if not ctx.host.live:
        notes.append(f"Values as captured in /proc of {ctx.host.label}, not of this machine.")
    if cpus is None:
        notes.append(f"The CPU count is unknown: {cpu_source}.")
    if not mem.swap_total:
        notes.append("No swap: fine for hosts that never overcommit memory; with KSM or ballooning overcommit, "
                     "a little swap keeps a burst from reaching the OOM killer.")
    if mem.total < min_mem:
        return Outcome.failed(
            f"only {_gib(mem.total)} of memory (minimum {_gib(min_mem)}): {facts}",
            f"After the host's own reserve of {_gib(reserve)} there is no room for a useful guest; a modern "
            f"distribution guest needs 1-2 GiB to install and run. " + " ".join(notes),
            "Give the host more memory (if it is itself a VM, raise its memory size), or lower "
            "min_host_memory_gib if tiny guests are all you need.", **evidence).keyed("too-little-memory")
    problems: List[str] = []
    if cpus is not None and cpus < min_cpus:
        problems.append(f"only {cpus} CPU thread{'s' if cpus != 1 else ''} online (minimum {min_cpus}): every vCPU "
                        "shares it with the host's own work, so guests run slowly and the host stalls under load")
    if by_memory == 0:
        problems.append(f"no {guest} guest fits in the {_gib(mem.available)} available now after the host "
                        f"reserve of {_gib(reserve)}")
    if cpus is not None and cpus < g_vcpus and cpus >= min_cpus:
        problems.append(f"a {guest} guest has more vCPUs than the {cpus} online CPU threads, so its vCPUs "
                        "preempt each other")
    if problems:
        return Outcome.warned(
            f"{facts}; room for {fit} guest{'s' if fit != 1 else ''} of {guest} by memory",
            "; ".join(p[0].upper() + p[1:] for p in problems) + ". " + " ".join(notes),
            "Add CPUs or memory (for a VM host: raise its vCPU count and memory size), bring offline CPUs online "
            "('echo 1 > /sys/devices/system/cpu/cpuN/online'; check maxcpus=/nr_cpus= on the kernel command line), "
            "stop what holds the memory, or size guests smaller.", **evidence).keyed("+".join(
                tag for tag, hit in (("few-cpus", cpus is not None and cpus < min_cpus), ("no-guest-fits", by_memory == 0),
                                     ("vcpus-exceed-cpus", cpus is not None and min_cpus <= cpus < g_vcpus)) if hit))
    cpu_note = f" ({by_cpu} without vCPU overcommit)" if by_cpu is not None and by_cpu < by_memory else ""
    return Outcome.passed(f"{facts}; room for {fit} guest{'s' if fit != 1 else ''} of {guest} by memory{cpu_note}",
                          " ".join(notes), **evidence)
