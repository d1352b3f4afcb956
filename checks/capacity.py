# SPDX-License-Identifier: GPL-2.0-or-later
"""Host capacity: online CPUs, memory and swap, and how many guests of a given size fit."""
from __future__ import annotations

from typing import Dict, List, Optional

from kvmcheck.core.model import Outcome
from kvmcheck.core.record import Record
from kvmcheck.core.registry import check
from kvmcheck.facts import memory  # noqa: F401 - the facts judged here
from kvmcheck.facts.memory import CPU_ONLINE, Meminfo, OnlineCpus

GIB = 1 << 30
NO_SWAP = ("No swap: fine for hosts that never overcommit memory; with KSM or ballooning overcommit, a little swap "
           "keeps a burst from reaching the OOM killer.")
TOO_LITTLE = ("After the host's own reserve of {reserve} there is no room for a useful guest; a modern distribution "
              "guest needs 1-2 GiB to install and run. ",
              "Give the host more memory (if it is itself a VM, raise its memory size), or lower min_host_memory_gib "
              "if tiny guests are all you need.")
SHORT_FIX = ("Add CPUs or memory (for a VM host: raise its vCPU count and memory size), bring offline CPUs online "
             "('echo 1 > /sys/devices/system/cpu/cpuN/online'; check maxcpus=/nr_cpus= on the kernel command line), "
             "stop what holds the memory, or size guests smaller.")
FEW_CPUS = ("only {cpus} CPU thread{s} online (minimum {min_cpus}): every vCPU shares it with the host's own work, so "
            "guests run slowly and the host stalls under load")
NO_FIT = "no {guest} guest fits in the {available} available now after the host reserve of {reserve}"
VCPUS_EXCEED = "a {guest} guest has more vCPUs than the {cpus} online CPU threads, so its vCPUs preempt each other"
# why the online list gave no count, by the state of /sys/devices/system/cpu/online
CPU_WHY = {"absent": f"no {CPU_ONLINE}", "denied": f"{CPU_ONLINE} unreadable ({{reason}})",
           "unreadable": f"{CPU_ONLINE} unreadable ({{reason}})", "unparsable": f"{CPU_ONLINE} unparsable ({{reason}})",
           "empty": f"{CPU_ONLINE} is empty"}


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _cpu_source(online: OnlineCpus) -> str:
    """Where the CPU count came from, or why there is none (the evidence's cpu_source)."""
    if online.online_state == "ok":
        return CPU_ONLINE
    why = CPU_WHY[online.online_state].format(reason=online.online_reason)
    return f"/proc/cpuinfo processor entries ({why})" if online.from_cpuinfo else why


class Sizing(Record):
    """The thresholds of the settings, and what fits by them."""

    min_cpus: int
    min_mem: float
    vcpus: int  # of one guest
    memory: float  # of one guest
    reserve: float  # kept back for the host
    by_memory: int
    by_cpu: Optional[int]  # without vCPU overcommit, which is common and usually fine

    @property
    def guest(self) -> str:
        return f"{self.vcpus} vCPU/{self.memory / GIB:g} GiB"


def _sizing(settings, mem, cpus: Optional[int]) -> Sizing:  # type: ignore[no-untyped-def]
    vcpus = max(1, int(settings.guest_vcpus))
    memory = max(1.0, settings.guest_memory_gib * GIB)
    reserve = max(settings.host_reserve_gib * GIB, mem.total * settings.host_reserve_percent / 100)
    return Sizing(int(settings.min_host_cpus), settings.min_host_memory_gib * GIB, vcpus, memory, reserve,
                  max(0, int((mem.available - reserve) // memory)), cpus // vcpus if cpus else None)


def _facts_text(mem, online: OnlineCpus) -> str:  # type: ignore[no-untyped-def]
    cpus, cpu_list = online.count, online.cpulist
    cpu_text = f"{cpus} CPU{'s' if cpus != 1 else ''} online" if cpus else "CPUs unknown"
    if cpu_list and cpu_list != f"0-{cpus - 1}" and cpus:  # type: ignore[operator]
        cpu_text += f" ({cpu_list})"
    swap = f"swap {_gib(mem.swap_total)}" if mem.swap_total else "no swap"
    return (f"{cpu_text}, {_gib(mem.total)} RAM ({_gib(mem.available)} available"
            + (", estimated" if mem.available_estimated else "") + f"), {swap}")


def _notes(mem, online: OnlineCpus, live: bool, root_label: str) -> List[str]:  # type: ignore[no-untyped-def]
    notes: List[str] = []
    if not live:
        notes.append(f"Values as captured in /proc of {root_label}, not of this machine.")
    if online.count is None:
        notes.append(f"The CPU count is unknown: {_cpu_source(online)}.")
    if not mem.swap_total:
        notes.append(NO_SWAP)
    return notes


def _shortfalls(cpus: Optional[int], mem, size: Sizing) -> Dict[str, str]:  # type: ignore[no-untyped-def]
    """cause key -> what falls short (few CPUs, no guest fits, a guest wider than the host)."""
    found: Dict[str, str] = {}
    if cpus is not None and cpus < size.min_cpus:
        found["few-cpus"] = FEW_CPUS.format(cpus=cpus, s="s" if cpus != 1 else "", min_cpus=size.min_cpus)
    if size.by_memory == 0:
        found["no-guest-fits"] = NO_FIT.format(guest=size.guest, available=_gib(mem.available),
                                               reserve=_gib(size.reserve))
    if cpus is not None and size.min_cpus <= cpus < size.vcpus:
        found["vcpus-exceed-cpus"] = VCPUS_EXCEED.format(guest=size.guest, cpus=cpus)
    return found


def _no_meminfo(meminfo: Meminfo) -> Outcome:
    if meminfo.state == "absent":
        return Outcome.skipped("no /proc/meminfo in this root",
                               "Memory and CPUs are properties of a running system; an offline root has none.")
    if meminfo.state == "unparsable":
        return Outcome.skipped(f"/proc/meminfo unparsable: {meminfo.reason}")
    return Outcome.skipped(f"/proc/meminfo unreadable ({meminfo.reason})")  # denied or unreadable


def _evidence(mem, online: OnlineCpus, size: Sizing, live: bool) -> Dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "cpus_online": online.count, "cpu_source": _cpu_source(online), "online_list": online.cpulist,
        "mem_total": mem.total, "mem_available": mem.available, "mem_available_estimated": mem.available_estimated,
        "swap_total": mem.swap_total, "swap_free": mem.swap_free, "host_reserve": int(size.reserve),
        "guest": {"vcpus": size.vcpus, "memory": int(size.memory)},
        "guests_fit": size.by_memory, "guests_fit_by_memory": size.by_memory, "guests_fit_by_cpu": size.by_cpu,
        "live": live}


@check("capacity.resources", "CPU and memory capacity for guests")
def capacity_resources(meminfo, online_cpus, live, root_label, settings) -> Outcome:
    """Enough online CPUs and memory to run guests, and how many guests of a typical size fit now.

    What: online CPU threads (/sys/devices/system/cpu/online, else the processor entries of
    /proc/cpuinfo), MemTotal, MemAvailable (MemFree + Buffers + Cached before Linux 3.14) and swap
    from /proc/meminfo.  Thresholds (Settings): min_host_cpus 2, min_host_memory_gib 2, guest_vcpus
    2, guest_memory_gib 2, host_reserve_gib 1 and host_reserve_percent 10 (the larger is kept back
    for the host).  MemTotal below the minimum fails.  Fewer CPUs than the minimum, no room for one
    guest in the memory available now, or more vCPUs per guest than online CPUs, warns.  Guests
    that fit: (available - reserve) / guest size; vCPUs are commonly overcommitted, so the count
    without overcommit is only shown.  No /proc/meminfo (an offline root): skip.

    Why: guest RAM is real host memory (overcommitting it ends in swapping or the OOM killer), and a
    guest with as many vCPUs as the host has threads competes with the host for every one of them.

    Fix: add memory or CPUs (for a VM host, give it more), stop what uses the memory, or size guests
    smaller.  Offline CPUs come back with 'echo 1 > /sys/devices/system/cpu/cpuN/online' (and check
    for maxcpus= or nr_cpus= on the kernel command line).
    """
    if meminfo.state != "ok":
        return _no_meminfo(meminfo)
    mem, cpus = meminfo.info, online_cpus.count
    size = _sizing(settings, mem, cpus)
    evidence = _evidence(mem, online_cpus, size, live)
    facts, notes = _facts_text(mem, online_cpus), " ".join(_notes(mem, online_cpus, live, root_label))
    if mem.total < size.min_mem:
        return Outcome.failed(f"only {_gib(mem.total)} of memory (minimum {_gib(size.min_mem)}): {facts}",
                              TOO_LITTLE[0].format(reserve=_gib(size.reserve)) + notes, TOO_LITTLE[1],
                              **evidence).keyed("too-little-memory")
    fit = f"room for {size.by_memory} guest{'s' if size.by_memory != 1 else ''} of {size.guest} by memory"
    short = _shortfalls(cpus, mem, size)
    if short:
        return Outcome.warned(f"{facts}; {fit}", "; ".join(p[0].upper() + p[1:] for p in short.values()) + ". "
                              + notes, SHORT_FIX, **evidence).keyed("+".join(short))
    cpu_note = f" ({size.by_cpu} without vCPU overcommit)" if size.by_cpu is not None and size.by_cpu < size.by_memory \
        else ""
    return Outcome.passed(f"{facts}; {fit}{cpu_note}", notes, **evidence)
