# SPDX-License-Identifier: GPL-2.0-or-later
"""Host memory features for guests: Kernel Samepage Merging and huge pages (static pools and THP)."""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from kvmcheck.facts.context import Context
from kvmcheck.core.model import Outcome
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.meminfo import MemInfo, parse_meminfo
from kvmcheck.core.registry import check
from kvmcheck.facts import sysctl  # noqa: F401 - the facts memory.overcommit judges

KSM = "/sys/kernel/mm/ksm"
THP = "/sys/kernel/mm/transparent_hugepage"
HUGEPAGES = "/sys/kernel/mm/hugepages"
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system", "/run/systemd/system")
KSM_UNITS = ("ksm.service", "ksmtuned.service")  # RHEL/Fedora: ksm starts KSM at boot, ksmtuned adjusts it
_SELECTED = re.compile(r"\[([^\]]+)\]")
# mm/huge_memory.c: the words the kernel prints in transparent_hugepage/enabled and defrag
THP_MODES = ("always", "madvise", "never")
THP_DEFRAG_MODES = ("always", "defer", "defer+madvise", "madvise", "never")


def _int(ctx: Context, path: str) -> Optional[int]:
    value = ctx.host.first_line(path)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _mib(nbytes: float) -> str:
    return f"{nbytes / (1 << 20):.0f} MiB" if nbytes < (1 << 30) else f"{nbytes / (1 << 30):.1f} GiB"


def _page_size(ctx: Context) -> int:
    """The base page size KSM counts in: nothing in sysfs says, so 64 KiB on POWER (its usual size) and
    4 KiB elsewhere (arm64 kernels built for 64 KiB pages make the saving estimate 16 times too low)."""
    return 65536 if ctx.family() == "ppc64" else 4096


def _unit_state(ctx: Context, unit: str) -> Optional[str]:
    """"enabled" (a *.wants link in /etc/systemd/system), "masked", "installed", or None (no unit file)."""
    host = ctx.host
    masked = host.node(f"/etc/systemd/system/{unit}")
    if masked is not None and host.first_line(f"/etc/systemd/system/{unit}") is None \
            and masked.kind in ("char", "link"):
        return "masked"  # a link to /dev/null
    if any(host.glob(f"/etc/systemd/system/*.wants/{unit}")):
        return "enabled"
    if any(host.exists(f"{d}/{unit}") for d in UNIT_DIRS):
        return "installed"
    return None


@check("memory.ksm", "Kernel Samepage Merging (KSM)", reads=(
    "/sys/kernel/mm/ksm/*", "/etc/systemd/system/*.wants/ksm*.service", "/usr/lib/systemd/system/ksm*.service",
    "/lib/systemd/system/ksm*.service", "/etc/systemd/system/ksm*.service",
))
def memory_ksm(ctx: Context) -> Outcome:
    """Whether the kernel has KSM, whether it is running, and what it saves (informational).

    What: /sys/kernel/mm/ksm: run (0 stopped, 1 merging, 2 stopped and
    unmerged), pages_shared, pages_sharing, merge_across_nodes; and the ksm
    and ksmtuned services (installed, enabled through a *.wants link in
    /etc/systemd/system, or masked).  A kernel without KSM, running or not,
    is a pass with a note: KSM is a density option, not a requirement.  A
    root without /sys/kernel/mm (no sysfs captured) is a skip.

    Why: QEMU marks guest RAM mergeable, so with KSM running, identical pages
    of many similar guests are stored once: more guests fit, at the cost of
    CPU for scanning and of memory-deduplication side channels between guests.

    Fix: to use it, 'echo 1 > /sys/kernel/mm/ksm/run' or enable ksmtuned
    ('systemctl enable --now ksm ksmtuned' on RHEL/Fedora, the ksmtuned
    package on Debian/Ubuntu).  To rule out cross-guest side channels, keep it
    stopped ('echo 2 > /sys/kernel/mm/ksm/run' also unmerges).
    """
    host = ctx.host
    units = {u: s for u in KSM_UNITS for s in [_unit_state(ctx, u)] if s}
    evidence: Dict[str, object] = {"services": units}
    if not host.is_dir(KSM):
        if not host.is_dir("/sys/kernel/mm"):
            return Outcome.skipped("no /sys/kernel/mm in this root", "The root holds no sysfs to tell KSM by.",
                                   **evidence)
        return Outcome.passed("not in this kernel (no /sys/kernel/mm/ksm): no page merging between guests",
                              "The kernel was built without CONFIG_KSM. Guests run normally; only the memory "
                              "saving from merging identical pages is unavailable.", supported=False, **evidence)
    values = {name: _int(ctx, f"{KSM}/{name}") for name in
              ("run", "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "merge_across_nodes",
               "full_scans", "sleep_millisecs", "pages_to_scan")}
    evidence.update(supported=True, **{k: v for k, v in values.items() if v is not None})
    run = values["run"]
    state = {0: "stopped", 1: "running", 2: "stopped (pages unmerged)"}.get(run, f"run={run}") \
        if run is not None else f"state unreadable ({KSM}/run)"
    notes: List[str] = []
    sharing = values["pages_sharing"] or 0
    if sharing:
        saved = sharing * _page_size(ctx)
        evidence["saved_bytes"] = saved
        state += f", {sharing} pages merged into {values['pages_shared'] or 0} (about {_mib(saved)} saved)"
    if values["merge_across_nodes"] == 1 and run == 1:
        notes.append("merge_across_nodes=1: pages are merged across NUMA nodes, which can place a guest's memory on "
                     "a remote node; set it to 0 on multi-socket hosts that pin guests to nodes.")
    if units:
        notes.append("Services: " + ", ".join(f"{u} {s}" for u, s in units.items()) + ".")
        if run != 1 and units.get("ksmtuned") == "enabled":
            notes.append("ksmtuned starts merging only under memory pressure, so 'stopped' is its idle state.")
    elif run != 1:
        notes.append("Nothing starts KSM here (no ksm/ksmtuned service); that is fine unless you overcommit memory.")
    return Outcome.passed(f"KSM {state}", " ".join(notes), **evidence)


def _meminfo(ctx: Context) -> Optional[MemInfo]:
    try:
        text = ctx.host.read_optional("/proc/meminfo")
    except OSError:
        return None
    if text is None:
        return None
    try:
        return parse_meminfo(text)
    except ParseError:
        return None


def _selected(text: Optional[str], known: Tuple[str, ...]) -> Optional[str]:
    """"always [madvise] never" -> "madvise"; a bare single word (some backports) is taken as is.

    Only a mode in known counts: anything else there is not a THP setting (a damaged capture).
    """
    if not text:
        return None
    m = _SELECTED.search(text)
    words = text.split()
    mode = m.group(1) if m else words[0] if len(words) == 1 else None
    return mode if mode in known else None


@check("memory.hugepages", "Huge pages for guest memory", reads=(
    "/sys/kernel/mm/hugepages/hugepages-*/nr_hugepages", "/sys/kernel/mm/hugepages/hugepages-*/free_hugepages",
    "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/mm/transparent_hugepage/defrag", "/proc/meminfo",
))
def memory_hugepages(ctx: Context) -> Outcome:
    """Static huge page pools (2 MiB, 1 GiB, ...) and the transparent huge page (THP) mode.

    What: every /sys/kernel/mm/hugepages/hugepages-SIZE pool (nr_hugepages,
    free_hugepages), the HugePages_* lines of /proc/meminfo, and
    /sys/kernel/mm/transparent_hugepage/enabled and defrag.  THP "always" or
    "madvise" pass: QEMU asks for huge pages on guest RAM with
    madvise(MADV_HUGEPAGE), so madvise is enough.  THP "never" is a warning
    unless a static pool exists (then guests are expected to use hugetlbfs
    through <memoryBacking><hugepages/>).  A kernel without THP is a pass
    with a note.  A root without /sys/kernel/mm is a skip.

    Why: huge pages cut the two-level (guest and host) page-walk cost of TLB
    misses; without them memory-heavy guests lose several percent to tens of
    percent of performance.

    Fix: 'echo madvise > /sys/kernel/mm/transparent_hugepage/enabled', and
    transparent_hugepage=madvise on the kernel command line to keep it (or
    remove transparent_hugepage=never; tuned profiles can set it too).  For
    static pools: 'sysctl vm.nr_hugepages=N', or hugepagesz=1G hugepages=N
    on the command line for 1 GiB pages.
    """
    host = ctx.host
    pools: Dict[str, Dict[str, int]] = {}
    for path in host.glob(f"{HUGEPAGES}/hugepages-*kB"):
        size = path.rsplit("-", 1)[-1]
        try:
            kib = int(size[:-2])
        except ValueError:
            continue
        label = f"{kib // (1 << 20)}G" if kib >= 1 << 20 else f"{kib // 1024}M" if kib >= 1024 else f"{kib}K"
        total = _int(ctx, f"{path}/nr_hugepages")
        free = _int(ctx, f"{path}/free_hugepages")
        pools[label] = {"kib": kib, "total": total if total is not None else 0, "free": free if free is not None else 0}
    mem = _meminfo(ctx)
    meminfo = {k: v for k, v in (mem.fields.items() if mem else ()) if k.startswith(("HugePages_", "Hugepagesize",
                                                                                      "Hugetlb"))}
    thp_enabled_text = host.first_line(f"{THP}/enabled")
    thp = _selected(thp_enabled_text, THP_MODES)
    defrag = _selected(host.first_line(f"{THP}/defrag"), THP_DEFRAG_MODES)
    evidence: Dict[str, object] = {"pools": pools, "meminfo": meminfo, "thp": thp, "thp_defrag": defrag}
    if not host.is_dir("/sys/kernel/mm"):
        return Outcome.skipped("no /sys/kernel/mm in this root",
                               "Without sysfs neither the THP mode nor the per-size pools can be read"
                               + (" (/proc/meminfo: " + ", ".join(f"{k} {v}" for k, v in meminfo.items()) + ")."
                                  if meminfo else "."), **evidence)
    if not pools and meminfo.get("HugePages_Total"):
        # Old kernels (or a capture without sysfs): only the default-size pool, from /proc/meminfo.
        kib = meminfo.get("Hugepagesize", 0) // 1024
        label = f"{kib // (1 << 20)}G" if kib >= 1 << 20 else f"{kib // 1024}M"
        pools[label] = {"kib": kib, "total": meminfo["HugePages_Total"], "free": meminfo.get("HugePages_Free", 0)}
    reserved = {k: p for k, p in pools.items() if p["total"]}
    pool_text = ", ".join(f"{k} pool {p['total']} pages ({p['free']} free, {_mib(p['total'] * p['kib'] * 1024)})"
                          for k, p in sorted(reserved.items(), key=lambda kv: kv[1]["kib"])) or "no static pool"
    reserved_bytes = sum(p["total"] * p["kib"] * 1024 for p in reserved.values())
    notes: List[str] = []
    if reserved and mem is not None and reserved_bytes > 0.9 * mem.total:
        notes.append(f"The pools hold {_mib(reserved_bytes)} of {_mib(mem.total)}: little is left for the host and "
                     "for guests without hugepage backing.")
    if reserved:
        notes.append("Pooled pages serve only guests with hugetlbfs backing (libvirt <memoryBacking><hugepages/>); "
                     "free pool pages are not available to anything else.")
    if defrag == "always" and thp in ("always", "madvise"):
        notes.append("THP defrag 'always' stalls allocations for direct compaction; 'madvise' or 'defer+madvise' is "
                     "the usual choice.")
    if thp is None:
        if thp_enabled_text is not None or host.is_dir(THP):
            return Outcome.passed(f"THP mode unreadable ({THP}/enabled); {pool_text}", " ".join(notes), **evidence)
        notes.insert(0, "The kernel was built without transparent huge pages (no /sys/kernel/mm/transparent_hugepage); "
                        "guests get huge pages only from static pools.")
        return Outcome.passed(f"no THP in this kernel; {pool_text}", " ".join(notes), **evidence)
    if thp == "never" and not reserved:
        return Outcome.warned(
            "transparent huge pages are off (never) and there is no static huge page pool",
            "Guest RAM is backed by base pages only: every guest TLB miss walks both page tables in 4 KiB steps, "
            "which costs memory-heavy guests several to tens of percent. QEMU only needs THP 'madvise', which "
            "leaves other programs alone.",
            "'echo madvise > /sys/kernel/mm/transparent_hugepage/enabled' now; keep it with "
            "transparent_hugepage=madvise on the kernel command line (remove transparent_hugepage=never, or choose "
            "a tuned profile such as virtual-host). Or reserve a static pool for the guests.", **evidence)
    if thp == "never":
        notes.insert(0, "THP is off; guests must use the static pool (hugetlbfs backing) to get huge pages.")
    return Outcome.passed(f"THP {thp}" + (f" (defrag {defrag})" if defrag else "") + f"; {pool_text}",
                          " ".join(notes), **evidence)


# -- memory.overcommit ----------------------------------------------------------------------------------------
OVERCOMMIT_MODES = {"0": "heuristic overcommit (the kernel's default)", "1": "always overcommit",
                    "2": "strict accounting (no overcommit)"}
OVERCOMMIT_WHY = ("QEMU reserves each guest's whole RAM when the guest starts. Under strict accounting the kernel "
                  "refuses reservations beyond CommitLimit (swap plus vm.overcommit_ratio percent of RAM, 50 by "
                  "default), so guests fail to start with 'Cannot allocate memory' while RAM is still free.")
OVERCOMMIT_FIX = ("Unless strict accounting is a deliberate policy: 'sysctl -w vm.overcommit_memory=0', and keep it at "
                  "boot: {boot}. If it is policy, raise vm.overcommit_ratio or add swap so CommitLimit covers the "
                  "guests.")


def _overcommit_fix(overcommit) -> str:
    at_boot = overcommit.configured.get("vm.overcommit_memory")
    boot = "put 'vm.overcommit_memory = 0' in /etc/sysctl.d/99-kvm-overcommit.conf"
    if at_boot and at_boot.value == "2":
        boot = f"remove the vm.overcommit_memory line at {at_boot.path}:{at_boot.line}, or {boot}"
    return OVERCOMMIT_FIX.format(boot=boot)


def _overcommit_mode(overcommit):
    """(mode, where it was found) from the running kernel, else from what sysctl.d sets at boot; (None, None)."""
    running = overcommit.running["vm.overcommit_memory"]
    if running.ok and (running.text or "").strip():
        return (running.text or "").strip(), running.path
    at_boot = overcommit.configured.get("vm.overcommit_memory")
    if at_boot:
        return at_boot.value, f"{at_boot.path}:{at_boot.line}"
    return None, None


@check("memory.overcommit", "Memory overcommit policy")
def memory_overcommit(overcommit, settings) -> Outcome:
    """Guests can reserve their memory under the kernel's overcommit policy.

    What: vm.overcommit_memory in /proc/sys/vm (an offline root: as sysctl.d
    and /etc/sysctl.conf set it at boot); under strict accounting (2),
    CommitLimit minus Committed_AS in /proc/meminfo against one guest's memory.

    Why: under strict accounting the kernel refuses QEMU's reservation of a
    guest's RAM beyond CommitLimit, and the guest does not start.

    Fix: 'sysctl -w vm.overcommit_memory=0' and a sysctl.d drop-in.
    """
    running = overcommit.running["vm.overcommit_memory"]
    if running.state in ("denied", "unreadable"):
        return Outcome.skipped(f"cannot read {running.path}: {running.reason}")
    mode, where = _overcommit_mode(overcommit)
    evidence = {"mode": mode, "source": where,
                "configured": getattr(overcommit.configured.get("vm.overcommit_memory"), "value", None)}
    if mode is None:
        return Outcome.skipped("no vm.overcommit_memory here: not in /proc/sys/vm, not set by sysctl.d", **evidence)
    if mode not in OVERCOMMIT_MODES:
        return Outcome.skipped(f"vm.overcommit_memory holds {mode[:20]!r}, not 0, 1 or 2", **evidence)
    if mode != "2":
        return Outcome.passed(f"{OVERCOMMIT_MODES[mode]} ({where})", **evidence)
    fix = _overcommit_fix(overcommit)
    mem = overcommit.meminfo
    limit, committed = (mem.get("CommitLimit"), mem.get("Committed_AS")) if mem else (None, None)
    if limit is None or committed is None or not running.ok:
        return Outcome.warned(f"{OVERCOMMIT_MODES[mode]} is set ({where})", OVERCOMMIT_WHY, fix, **evidence)
    room, guest = limit - committed, int(settings.guest_memory_gib * 1024 ** 3)
    evidence.update(commit_limit=limit, committed=committed, room=room)
    summary = f"strict accounting leaves {room / 1024 ** 3:.1f} GiB to commit"
    if room < guest:
        return Outcome.failed(f"{summary}: not one {settings.guest_memory_gib:g} GiB guest fits", OVERCOMMIT_WHY, fix,
                              **evidence)
    return Outcome.warned(summary, OVERCOMMIT_WHY, fix, **evidence)
