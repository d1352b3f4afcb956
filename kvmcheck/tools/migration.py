# SPDX-License-Identifier: GPL-2.0-or-later
"""Live-migration pools across a fleet: which hosts can take which guests, and why not.

Input: the ``migration`` block of each host report (kvmcheck.facts.migration gathers it): the CPU (vendor,
family/model/stepping, microcode, normalized flags), kernel, QEMU version and machine types, libvirt
version, shared storage, NUMA nodes and whether /dev/kvm ran a guest.  Output: pools, their baselines and
what each host costs its pool; and, for two hosts, whether a guest can move from one to the other.

The rules, so that an operator can check them by hand:
- Only x86 hosts are pooled (the named CPU models are x86's); a host whose report has no CPU flags, or whose
  /dev/kvm did not run a guest, is in no pool, with that reason.
- Hosts of one CPU vendor form one pool; vendors never share a pool (a guest's CPUID vendor cannot change).
- A pool's baseline is the intersection of its hosts' flags, and its named model the newest model of
  kvmcheck.tools.cpu_models that the baseline covers: a guest given that model runs on every host of the pool.
- A host's cost is what the pool would gain without it: the flags only it lacks, and an older QEMU (whose
  machine types limit the pool's).
- Machine types: those every host's QEMU offers (unknown for a host whose report did not list them).
  Shared storage: the (source, mount point) pairs every host mounts; none in common means storage must
  move with the guest (virsh migrate --copy-storage-all).
"""
from __future__ import annotations

import re
from typing import Any, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from kvmcheck.tools.cpu_models import BY_NAME, MODEL_FLAGS, MODELS, newest_model

# Guest-visible instruction-set extensions newer than the named-model table, kept in the normalized flags
# (Linux names): prefixes and single names.
GUEST_PREFIXES = ("avx512", "amx_", "avx_")
GUEST_EXTRA = frozenset({"hle", "rtm", "sha_ni", "vaes", "gfni", "vpclmulqdq", "rdpid", "fsrm", "serialize",
                         "movdiri", "movdir64b", "waitpkg", "cldemote", "tsxldtrk", "xsaves", "clzero",
                         "tsc_adjust", "f16c", "rdrand", "rdseed", "adx", "sha", "fma4", "xop", "tbm", "lzcnt"})
_VERSION = re.compile(r"\d+")


def normalized_flags(flags: Iterable[str]) -> Tuple[str, ...]:
    """The flags that decide what a guest can be given, sorted: those some named model needs, and newer
    guest-visible extensions.  Dropped: host-only and Linux-synthetic flags (hypervisor, constant_tsc,
    nonstop_tsc, rep_good, cpuid, xtopology ...), power management, virtualization (vmx, svm, ept ...) and
    speculation control (their presence in /proc/cpuinfo depends on the kernel, not the CPU alone)."""
    return tuple(sorted({f for f in flags if f in MODEL_FLAGS or f in GUEST_EXTRA or f.startswith(GUEST_PREFIXES)}))


def version_key(version: Optional[str]) -> Tuple[int, ...]:
    """'7.2.22' -> (7, 2, 22); a Debian '1:7.2+dfsg-7' -> (7, 2); None or junk -> ()."""
    if not version:
        return ()
    text = version.split(":", 1)[-1]
    return tuple(int(n) for n in _VERSION.findall(text.split("+")[0].split("-")[0])[:4])


class MigrationHost(NamedTuple):
    name: str
    arch: Optional[str]
    vendor: Optional[str]
    flags: FrozenSet[str]
    qemu: Optional[str]
    machine_types: Optional[FrozenSet[str]]  # None: not listed in the report
    libvirt: Optional[str]
    storage: FrozenSet[Tuple[str, str]]  # (source, mount point) of shared storage
    kvm_works: Optional[bool]


def host_from_report(report: Dict[str, Any], name: Optional[str] = None) -> MigrationHost:
    """The MigrationHost of one JSON report (its host block and its migration block)."""
    host = report.get("host") or {}
    block = report.get("migration") or {}
    cpu = block.get("cpu") or {}
    qemu = block.get("qemu") or {}
    machines = qemu.get("machine_types")
    storage = frozenset((str(s.get("source")), str(s.get("target"))) for s in block.get("shared_storage") or ()
                        if isinstance(s, dict))
    return MigrationHost(
        name=name or host.get("hostname") or "?", arch=host.get("arch"), vendor=cpu.get("vendor"),
        flags=frozenset(cpu.get("flags") or ()), qemu=qemu.get("version"),
        machine_types=frozenset(machines) if isinstance(machines, list) else None,
        libvirt=(block.get("libvirt") or {}).get("version"), storage=storage, kvm_works=block.get("kvm_works"))


class Cost(NamedTuple):
    host: str
    flags: Tuple[str, ...]  # flags the pool would regain without this host
    older_qemu: Optional[str]  # this host's QEMU, when older than the pool's newest


class Pool(NamedTuple):
    vendor: str
    generations: Tuple[Tuple[str, Tuple[str, ...]], ...]  # (newest model a host runs, its hosts), oldest first
    hosts: Tuple[str, ...]
    baseline: FrozenSet[str]  # flags every host offers
    model: str  # the newest named model the baseline covers ("" when none)
    machine_types: Optional[FrozenSet[str]]  # offered by every host (None: some host did not say)
    storage: FrozenSet[Tuple[str, str]]  # mounted by every host
    costs: Tuple[Cost, ...]  # hosts that lower the pool, most flags first


class Outside(NamedTuple):
    host: str
    reason: str


def _why_outside(h: MigrationHost) -> Optional[str]:
    if h.arch and h.arch not in ("x86_64", "i686", "i386"):
        return f"pools are computed for x86 hosts (named CPU models); this host is {h.arch}"
    if not h.vendor or not h.flags:
        return "its report has no CPU flags (no /proc/cpuinfo, or a report older than the migration block)"
    if h.kvm_works is False:
        return "/dev/kvm did not run a guest (kvm.guest-run): it cannot take guests"
    return None


def _common(sets: Sequence[Optional[FrozenSet[Any]]]) -> Optional[FrozenSet[Any]]:
    if not sets or any(s is None for s in sets):
        return None
    out = sets[0]
    for s in sets[1:]:
        out = out & s  # type: ignore[operator]
    return out


def pool_of(vendor: str, members: Sequence[MigrationHost]) -> Pool:
    baseline = frozenset.intersection(*(h.flags for h in members))
    newest_qemu = max((version_key(h.qemu) for h in members), default=())
    costs = []
    for h in members:
        others = [o.flags for o in members if o is not h]
        without = frozenset.intersection(*others) if others else h.flags
        regained = tuple(sorted(without - h.flags))
        older = h.qemu if h.qemu and version_key(h.qemu) < newest_qemu else None
        if regained or older:
            costs.append(Cost(h.name, regained, older))
    costs.sort(key=lambda c: (-len(c.flags), c.host))
    order = {name: i for i, (name, _, _) in enumerate(MODELS)}
    by_model: Dict[str, List[str]] = {}
    for h in members:
        by_model.setdefault(newest_model(vendor, h.flags), []).append(h.name)
    generations = tuple((m, tuple(sorted(names))) for m, names in sorted(by_model.items(),
                                                                            key=lambda kv: order.get(kv[0], -1)))
    return Pool(vendor, generations, tuple(sorted(h.name for h in members)), baseline, newest_model(vendor, baseline),
                _common([h.machine_types for h in members]), _common([h.storage for h in members]) or frozenset(),
                tuple(costs))


def pools(hosts: Iterable[MigrationHost]) -> Tuple[List[Pool], List[Outside]]:
    """The fleet's pools (largest first) and the hosts in none, with the reason."""
    by_vendor: Dict[str, List[MigrationHost]] = {}
    outside = []
    for h in hosts:
        why = _why_outside(h)
        if why:
            outside.append(Outside(h.name, why))
        else:
            by_vendor.setdefault(h.vendor or "", []).append(h)
    found = [pool_of(vendor, members) for vendor, members in by_vendor.items()]
    found.sort(key=lambda p: (-len(p.hosts), p.vendor))
    return found, sorted(outside)


class Move(NamedTuple):
    """Whether a guest can move from one host to another in one CPU mode, and what stands in the way."""

    mode: str  # "host-model" (host-passthrough alike) or "baseline"
    possible: bool
    missing_flags: Tuple[str, ...]  # flags the guest's CPU has that the target lacks
    machine_types: Optional[Tuple[str, ...]]  # the source's newest machine types the target lacks (None: unknown)
    storage: Tuple[Tuple[str, str], ...]  # the source's shared storage the target does not mount
    model: str  # the named CPU model a baseline guest is given ("" for host-model)
    blockers: Tuple[str, ...]  # what rules the move out before flags are compared


_MACHINE = re.compile(r"^(?P<family>[a-z0-9-]+?)-(?P<version>\d+(?:\.\d+)*)$")


def newest_machine_types(types: FrozenSet[str]) -> FrozenSet[str]:
    """The newest versioned machine type of each family (pc-q35-7.2, pc-i440fx-7.2): what a new guest gets."""
    newest: Dict[str, Tuple[Tuple[int, ...], str]] = {}
    for name in types:
        m = _MACHINE.match(name)
        if m:
            key = tuple(int(n) for n in m.group("version").split("."))
            if m.group("family") not in newest or key > newest[m.group("family")][0]:
                newest[m.group("family")] = (key, name)
    return frozenset(name for _, name in newest.values())


def explain(a: MigrationHost, b: MigrationHost, pool: Optional[Pool]) -> List[Move]:
    """Can a guest move from a to b: a guest started with host-model (or host-passthrough) on a, and a guest
    given the pool's baseline model.  A guest is assumed to use a's newest machine types."""
    blockers = []
    if (a.vendor or "?") != (b.vendor or "?"):
        blockers.append(f"different CPU vendors ({a.vendor} and {b.vendor}): no CPU model moves between them")
    for h in (a, b):
        why = _why_outside(h)
        if why:
            blockers.append(f"{h.name}: {why}")
    lacking = None
    if a.machine_types is not None and b.machine_types is not None:
        lacking = tuple(sorted(newest_machine_types(a.machine_types) - b.machine_types))
    storage = tuple(sorted(a.storage - b.storage))
    clear = not blockers and not lacking and not storage
    host_missing = tuple(sorted(a.flags - b.flags))
    moves = [Move("host-model", clear and not host_missing, host_missing, lacking, storage, "", tuple(blockers))]
    model = pool.model if pool and a.name in pool.hosts and b.name in pool.hosts else ""
    base_missing = tuple(sorted(BY_NAME.get(model, frozenset()) - b.flags))
    base_blockers = tuple(blockers) + (() if model else ("no pool holds both hosts with a named model",))
    moves.append(Move("baseline", clear and bool(model) and not base_missing, base_missing, lacking, storage, model,
                      base_blockers))
    return moves


# --- the fleet view's migration section ---------------------------------------------------------------------
def section(hosts: Iterable[MigrationHost]) -> Dict[str, Any]:
    """The fleet JSON's "migration" object (reports/fleet.schema.json, $defs/migration)."""
    found, outside = pools(hosts)
    return {
        "pools": [{
            "vendor": p.vendor,
            "hosts": list(p.hosts),
            "model": p.model or None,
            "generations": [{"model": m or None, "hosts": list(names)} for m, names in p.generations],
            "baseline_flags": sorted(p.baseline),
            "machine_types": sorted(p.machine_types) if p.machine_types is not None else None,
            "shared_storage": [{"source": s, "target": t} for s, t in sorted(p.storage)],
            "costs": [{"host": c.host, "flags": list(c.flags), "older_qemu": c.older_qemu} for c in p.costs],
        } for p in found],
        "outside": [{"host": o.host, "reason": o.reason} for o in outside],
    }


def explain_section(a: MigrationHost, b: MigrationHost, pool: Optional[Pool]) -> Dict[str, Any]:
    return {"from": a.name, "to": b.name, "moves": [{
        "mode": m.mode, "possible": m.possible, "model": m.model or None, "missing_flags": list(m.missing_flags),
        "machine_types": list(m.machine_types) if m.machine_types is not None else None,
        "shared_storage": [{"source": s, "target": t} for s, t in m.storage], "blockers": list(m.blockers),
    } for m in explain(a, b, pool)]}


def pool_holding(found: Sequence[Pool], *names: str) -> Optional[Pool]:
    return next((p for p in found if all(n in p.hosts for n in names)), None)
