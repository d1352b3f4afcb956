# SPDX-License-Identifier: GPL-2.0-or-later
"""Host memory features for guests: Kernel Samepage Merging and huge pages (static pools and THP)."""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List

from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts import boot as _boot  # noqa: F401 - boot_cmdline (memory.hugepages: command-line pools)
from kvmcheck.facts import memory, sysctl  # noqa: F401 - the facts judged here (sysctl: memory.overcommit)
from kvmcheck.facts.memory import KSM, THP, Ksm, Meminfo, Thp
from kvmcheck.facts.system import quoted

KSM_STATES = {0: "stopped", 1: "running", 2: "stopped (pages unmerged)"}
NO_KSM = ("not in this kernel (no /sys/kernel/mm/ksm): no page merging between guests",
          "The kernel was built without CONFIG_KSM. Guests run normally; only the memory saving from merging "
          "identical pages is unavailable.")
CROSS_NODE = ("merge_across_nodes=1: pages are merged across NUMA nodes, which can place a guest's memory on a "
              "remote node; set it to 0 on multi-socket hosts that pin guests to nodes.")
KSMTUNED_IDLE = "ksmtuned starts merging only under memory pressure, so 'stopped' is its idle state."
NOTHING_STARTS_KSM = "Nothing starts KSM here (no ksm/ksmtuned service); that is fine unless you overcommit memory."
POOLS_TOO_BIG = ("The pools hold {held} of {total}: little is left for the host and for guests without hugepage "
                 "backing.")
POOLS_RESERVED = ("Pooled pages serve only guests with hugetlbfs backing (libvirt <memoryBacking><hugepages/>); "
                  "free pool pages are not available to anything else.")
DEFRAG_ALWAYS = ("THP defrag 'always' stalls allocations for direct compaction; 'madvise' or 'defer+madvise' is the "
                 "usual choice.")
NO_THP = ("The kernel was built without transparent huge pages (no /sys/kernel/mm/transparent_hugepage); guests get "
          "huge pages only from static pools.")
THP_OFF_POOL = "THP is off; guests must use the static pool (hugetlbfs backing) to get huge pages."
THP_OFF = (
    "transparent huge pages are off (never) and there is no static huge page pool",
    "Guest RAM is backed by base pages only: every guest TLB miss walks both page tables in 4 KiB steps, which costs "
    "memory-heavy guests several to tens of percent. QEMU only needs THP 'madvise', which leaves other programs "
    "alone.",
    "'echo madvise > /sys/kernel/mm/transparent_hugepage/enabled' now; keep it with transparent_hugepage=madvise on "
    "the kernel command line (remove transparent_hugepage=never, or choose a tuned profile such as virtual-host). "
    "Or reserve a static pool for the guests.")


def _mib(nbytes: float) -> str:
    return f"{nbytes / (1 << 20):.0f} MiB" if nbytes < (1 << 30) else f"{nbytes / (1 << 30):.1f} GiB"


def _ksm_state(ksm: Ksm, page_size, evidence: Dict[str, object]) -> str:  # type: ignore[no-untyped-def]
    run = ksm.values["run"]
    state = KSM_STATES.get(run, f"run={run}") if run is not None else f"state unreadable ({KSM}/run)"
    sharing = ksm.values["pages_sharing"] or 0
    if sharing:
        saved = sharing * page_size.get()
        evidence["saved_bytes"] = saved
        state += f", {sharing} pages merged into {ksm.values['pages_shared'] or 0} (about {_mib(saved)} saved)"
    return state


def _ksm_notes(ksm: Ksm, units: Dict[str, str]) -> List[str]:
    run = ksm.values["run"]
    notes = [CROSS_NODE] if ksm.values["merge_across_nodes"] == 1 and run == 1 else []
    if units:
        notes.append("Services: " + ", ".join(f"{u} {s}" for u, s in units.items()) + ".")
        if run != 1 and units.get("ksmtuned") == "enabled":  # never true: the keys end in .service (kept as is)
            notes.append(KSMTUNED_IDLE)
    elif run != 1:
        notes.append(NOTHING_STARTS_KSM)
    return notes


@check("memory.ksm", "Kernel Samepage Merging (KSM)")
def memory_ksm(ksm_units, ksm, sysfs_mm, base_page_size) -> Outcome:
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
    evidence: Dict[str, object] = {"services": ksm_units}
    if not ksm.supported and not sysfs_mm:
        return Outcome.skipped("no /sys/kernel/mm in this root", "The root holds no sysfs to tell KSM by.", **evidence)
    if not ksm.supported:
        return Outcome.passed(*NO_KSM, supported=False, **evidence)
    evidence.update(supported=True, **{k: v for k, v in ksm.values.items() if v is not None})
    state = _ksm_state(ksm, base_page_size, evidence)
    return Outcome.passed(f"KSM {state}", " ".join(_ksm_notes(ksm, ksm_units)), **evidence)


def _hugepage_lines(meminfo: Meminfo) -> Dict[str, int]:
    """The HugePages_*, Hugepagesize and Hugetlb lines of /proc/meminfo ({} when it could not be read)."""
    mem = meminfo.info
    return {k: v for k, v in (mem.fields.items() if mem else ()) if k.startswith(("HugePages_", "Hugepagesize",
                                                                                  "Hugetlb"))}


def _no_sysfs(lines: Dict[str, int]) -> str:
    return "Without sysfs neither the THP mode nor the per-size pools can be read" + (
        " (/proc/meminfo: " + ", ".join(f"{k} {v}" for k, v in lines.items()) + ")." if lines else ".")


def _add_default_pool(pools: Dict[str, Dict[str, int]], lines: Dict[str, int]) -> None:
    """Old kernels (or a capture without sysfs): only the default-size pool, from /proc/meminfo."""
    if not pools and lines.get("HugePages_Total"):
        kib = lines.get("Hugepagesize", 0) // 1024
        label = f"{kib // (1 << 20)}G" if kib >= 1 << 20 else f"{kib // 1024}M"
        pools[label] = {"kib": kib, "total": lines["HugePages_Total"], "free": lines.get("HugePages_Free", 0)}


def _pool_text(reserved: Dict[str, Dict[str, int]]) -> str:
    return ", ".join(f"{k} pool {p['total']} pages ({p['free']} free, {_mib(p['total'] * p['kib'] * 1024)})"
                     for k, p in sorted(reserved.items(), key=lambda kv: kv[1]["kib"])) or "no static pool"


def _pool_notes(reserved: Dict[str, Dict[str, int]], meminfo: Meminfo, thp: Thp) -> List[str]:
    notes: List[str] = []
    reserved_bytes = sum(p["total"] * p["kib"] * 1024 for p in reserved.values())
    if reserved and meminfo.info is not None and reserved_bytes > 0.9 * meminfo.info.total:
        notes.append(POOLS_TOO_BIG.format(held=_mib(reserved_bytes), total=_mib(meminfo.info.total)))
    if reserved:
        notes.append(POOLS_RESERVED)
    if thp.defrag == "always" and thp.mode in ("always", "madvise"):
        notes.append(DEFRAG_ALWAYS)
    return notes


def _shown(value: str) -> str:
    """A sysctl value as a report shows it: as is when plain (a number, a word), else quoted (a file may hold
    anything)."""
    return value if value and len(value) <= 40 and all(c.isalnum() or c in "._-" for c in value) else quoted(value, 40)


def _sysctl_value(text: str) -> object:
    """A sysctl value to compare: a number as a number, else its words (sysctl(8) ignores the spacing)."""
    words = " ".join(text.split())
    return int(words) if words.lstrip("-").isdigit() else words


def awaiting_sysctl(outcome: Outcome, found, shortfall: str = "") -> Outcome:  # type: ignore[no-untyped-def]
    """The outcome, pending reboot when sysctl.d sets a key to another value than the running kernel holds
    and its file is not older than this boot (then it was applied, and the value changed since)."""
    steps, seen = [], {}
    for key, setting in found.configured.items():
        running = found.running[key]
        if not running.ok:
            continue
        now = (running.text or "").strip()
        applied = found.booted is not None and found.changed.get(setting.path, found.booted + 1) <= found.booted
        differs = _sysctl_value(setting.value) != _sysctl_value(now)
        seen[key] = {"configured": setting.value, "at": f"{setting.path}:{setting.line}", "running": now,
                     "pending": differs and not applied}
        if differs and not applied:
            steps.append(f"{key}={_shown(setting.value)} in {setting.path}, {_shown(now)} now")
    if not seen:
        return outcome
    outcome = replace(outcome, evidence=dict(outcome.evidence, sysctl=seen))
    if not steps:
        return outcome
    return outcome.awaiting("reboot", f"configured, not yet in effect: {'; '.join(steps)}: run 'sysctl --system'"
                            f"{shortfall} or reboot")


HUGEPAGE_SHORTFALL = " (allocation may fall short on fragmented memory)"


@check("memory.hugepages", "Huge pages for guest memory")
def memory_hugepages(hugepage_pools, meminfo, thp, sysfs_mm, hugepage_sysctl, boot_cmdline=None) -> Outcome:
    """Static huge page pools (2 MiB, 1 GiB, ...) and the transparent huge page (THP) mode.

    What: each /sys/kernel/mm/hugepages/hugepages-SIZE pool, the HugePages_* lines of /proc/meminfo,
    and transparent_hugepage/enabled and defrag.  THP "always" or "madvise" pass (QEMU asks with
    madvise(MADV_HUGEPAGE)); "never" warns unless a static pool exists for hugetlbfs backing.  A
    kernel without THP passes with a note; a root without /sys/kernel/mm is a skip.
    vm.nr_hugepages (and vm.nr_overcommit_hugepages, vm.hugetlb_shm_group) set by sysctl.d to
    another value than /proc/sys holds is pending ('sysctl --system' or a reboot).

    Why: huge pages cut the two-level (guest and host) page-walk cost of TLB misses; without them
    memory-heavy guests lose several to tens of percent of performance.

    Fix: 'echo madvise > /sys/kernel/mm/transparent_hugepage/enabled', kept with
    transparent_hugepage=madvise on the kernel command line.  Static pools: 'sysctl
    vm.nr_hugepages=N', or hugepagesz=1G hugepages=N on the command line.
    """
    outcome = awaiting_sysctl(_hugepages(hugepage_pools, meminfo, thp, sysfs_mm), hugepage_sysctl, HUGEPAGE_SHORTFALL)
    # hugepagesz=, hugepages=, default_hugepagesz= in the boot loader's entry or /etc/default/grub, not in effect
    pending = boot_cmdline.pending(("hugepages",)) if boot_cmdline is not None else None  # None: judged alone
    return outcome.awaiting(*pending) if pending else outcome


def _hugepages(hugepage_pools, meminfo, thp, sysfs_mm) -> Outcome:  # type: ignore[no-untyped-def]
    """memory.hugepages as the pools and the THP mode show it."""
    pools = {k: dict(p) for k, p in hugepage_pools.items()}  # the fact stays as it was gathered
    lines = _hugepage_lines(meminfo)
    evidence: Dict[str, object] = {"pools": pools, "meminfo": lines, "thp": thp.mode, "thp_defrag": thp.defrag}
    if not sysfs_mm:
        return Outcome.skipped("no /sys/kernel/mm in this root", _no_sysfs(lines), **evidence)
    _add_default_pool(pools, lines)
    reserved = {k: p for k, p in pools.items() if p["total"]}
    pool_text = _pool_text(reserved)
    notes = _pool_notes(reserved, meminfo, thp)
    if thp.mode is None and thp.present:
        return Outcome.passed(f"THP mode unreadable ({THP}/enabled); {pool_text}", " ".join(notes), **evidence)
    if thp.mode is None:
        return Outcome.passed(f"no THP in this kernel; {pool_text}", " ".join([NO_THP] + notes), **evidence)
    if thp.mode == "never" and not reserved:
        return Outcome.warned(*THP_OFF, **evidence)
    if thp.mode == "never":
        notes.insert(0, THP_OFF_POOL)
    return Outcome.passed(f"THP {thp.mode}" + (f" (defrag {thp.defrag})" if thp.defrag else "") + f"; {pool_text}",
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

    What: vm.overcommit_memory from /proc/sys/vm/overcommit_memory; on an
    offline root, the value sysctl.d and /etc/sysctl.conf set at boot.
    Under strict accounting (2), the room left to commit (CommitLimit minus
    Committed_AS in /proc/meminfo) is compared with one guest's memory.

    Why: under strict accounting the kernel refuses QEMU's reservation of a
    guest's RAM beyond CommitLimit, and the guest does not start.

    Fix: 'sysctl -w vm.overcommit_memory=0' now, and keep it at boot with
    'vm.overcommit_memory = 0' in /etc/sysctl.d/99-kvm-overcommit.conf (or
    remove the line that sets 2); where strict accounting is policy, raise
    vm.overcommit_ratio or add swap.  A value sysctl.d sets that the
    running kernel does not hold yet is pending ('sysctl --system' or a
    reboot).
    """
    return awaiting_sysctl(_overcommit(overcommit, settings), overcommit)


def _overcommit(overcommit, settings) -> Outcome:  # type: ignore[no-untyped-def]
    """memory.overcommit as the running mode (else the configured one) and the commit room show it."""
    running = overcommit.running["vm.overcommit_memory"]
    if running.state in ("denied", "unreadable"):
        return Outcome.skipped(f"cannot read {running.path}: {running.reason}")
    mode, where = _overcommit_mode(overcommit)
    evidence = {"mode": mode, "source": where,
                "configured": getattr(overcommit.configured.get("vm.overcommit_memory"), "value", None)}
    if mode is None:
        return Outcome.skipped("no vm.overcommit_memory here: not in /proc/sys/vm, not set by sysctl.d", **evidence)
    if mode not in OVERCOMMIT_MODES:
        return Outcome.skipped(f"vm.overcommit_memory holds {quoted(mode, 20)}, not 0, 1 or 2", **evidence)
    if mode != "2":
        return Outcome.passed(f"{OVERCOMMIT_MODES[mode]}, read from {where}", **evidence)
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
