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
    virtualizes: Optional[bool] = None  # cpu.virt-flags decided the CPU offers hardware virtualization (or not)


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
        libvirt=(block.get("libvirt") or {}).get("version"), storage=storage, kvm_works=block.get("kvm_works"),
        virtualizes=block.get("cpu_virtualizes"))


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
    oldest_qemu: Optional[str] = None  # the oldest QEMU of the pool (None: some host's is unknown)


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
    if h.virtualizes is False:
        return "its CPU offers no hardware virtualization to this kernel (cpu.virt-flags failed): it cannot take guests"
    return None


def _common(sets: Sequence[Optional[FrozenSet[Any]]]) -> Optional[FrozenSet[Any]]:
    """What every set holds; None when some host did not say.  Interned sets are intersected once each."""
    distinct = dict.fromkeys(sets)
    if not distinct or None in distinct:
        return None
    return frozenset.intersection(*distinct)  # type: ignore[arg-type]


def qemu_release(version: Optional[str]) -> Tuple[int, ...]:
    """A QEMU version's major.minor: what its machine types are named after (pc-q35-7.2), and the part a
    package version (1:7.2+dfsg-7) and QEMU's own (7.2.22) have in common."""
    return version_key(version)[:2]


def pool_of(vendor: str, members: Sequence[MigrationHost]) -> Pool:
    """The pool of members (one vendor).  Linear in the hosts: the flag sets are compared once per distinct set
    (hosts of one generation share one interned set), and the flags a host alone lacks are those every other
    host has: held by exactly len(members) - 1 hosts and not by it."""
    hosts_of: Dict[FrozenSet[str], int] = {}
    for h in members:
        hosts_of[h.flags] = hosts_of.get(h.flags, 0) + 1
    baseline = frozenset.intersection(*hosts_of)
    held: Dict[str, int] = {}
    for flags, n in hosts_of.items():
        for f in flags - baseline:
            held[f] = held.get(f, 0) + n
    others_all = frozenset(f for f, n in held.items() if n == len(members) - 1)
    newest_qemu = max((qemu_release(h.qemu) for h in members), default=())
    known = [h.qemu for h in members if qemu_release(h.qemu)]
    oldest = min(known, key=qemu_release) if len(known) == len(members) else None
    costs = []
    for h in members:
        regained = tuple(sorted(others_all - h.flags)) if others_all and len(members) > 1 else ()
        older = h.qemu if h.qemu and qemu_release(h.qemu) < newest_qemu else None
        if regained or older:
            costs.append(Cost(h.name, regained, older))
    costs.sort(key=lambda c: (-len(c.flags), c.host))
    order = {name: i for i, (name, _, _) in enumerate(MODELS)}
    model_of = {flags: newest_model(vendor, flags) for flags in hosts_of}
    by_model: Dict[str, List[str]] = {}
    for h in members:
        by_model.setdefault(model_of[h.flags], []).append(h.name)
    generations = tuple((m, tuple(sorted(names))) for m, names in sorted(by_model.items(),
                                                                            key=lambda kv: order.get(kv[0], -1)))
    return Pool(vendor, generations, tuple(sorted(h.name for h in members)), baseline, newest_model(vendor, baseline),
                _common([h.machine_types for h in members]), _common([h.storage for h in members]) or frozenset(),
                tuple(costs), oldest)


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
            "newest_machine_types": sorted(newest_machine_types(p.machine_types)) if p.machine_types is not None
            else None,
            "oldest_qemu": p.oldest_qemu,
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


# --- what the fleet keeps of a report's migration block ---------------------------------------------------
MAX_FLAGS = 512  # a real x86 CPU has about 150 normalized flags; a hostile report may list millions
MAX_NAME = 64  # characters of a flag, machine type or version
MAX_ITEMS = 256  # machine types or shared mounts kept per host
X86 = ("x86_64", "i686", "i386")


def _names(value: Any, limit: int = MAX_ITEMS) -> Optional[FrozenSet[str]]:
    if type(value) is not list:
        return None
    return frozenset(v for v in value[:limit] if type(v) is str and 0 < len(v) <= MAX_NAME)


def _text(value: Any, limit: int = MAX_NAME) -> Optional[str]:
    return value[:limit] if type(value) is str and value else None


def compact(block: Any, arch: Any, cache: Optional[Dict[Any, Any]] = None) -> Optional[MigrationHost]:
    """A report's migration block as the fleet keeps it: a MigrationHost without its name (the fleet names it),
    each part interned through cache, so that hosts of one kind (the same CPU, QEMU and storage) share one
    object: a fleet of 10,000 hosts of a few generations holds a few flag sets, not 10,000.  A block that is
    not what the schema says keeps only its well-formed parts; no block at all (a report of an earlier
    kvmcheck) is None."""
    if type(block) is not dict:
        return None
    cache = {} if cache is None else cache
    intern = cache.setdefault

    def text(value: Any) -> Optional[str]:
        found = _text(value)
        return None if found is None else intern(found, found)

    def part(key: str) -> Dict[str, Any]:
        value = block.get(key)
        return value if type(value) is dict else {}

    cpu, qemu = part("cpu"), part("qemu")
    flags = _names(cpu.get("flags"), MAX_FLAGS) or frozenset()
    machines = _names(qemu.get("machine_types"))
    mounts = block.get("shared_storage")
    storage = frozenset((m["source"][:4096], m["target"][:4096]) for m in mounts[:MAX_ITEMS]
                        if type(m) is dict and type(m.get("source")) is str and type(m.get("target")) is str) \
        if type(mounts) is list else frozenset()
    works, virtualizes = block.get("kvm_works"), block.get("cpu_virtualizes")
    host = MigrationHost("", text(arch), text(cpu.get("vendor")), intern(flags, flags), text(qemu.get("version")),
                         None if machines is None else intern(machines, machines), text(part("libvirt").get("version")),
                         intern(storage, storage), works if type(works) is bool else None,
                         virtualizes if type(virtualizes) is bool else None)
    return intern(host, host)


def named(hosts: Iterable[Tuple[str, Optional[MigrationHost]]]) -> List[MigrationHost]:
    """(host name, compact block or None) -> MigrationHosts with their names; a host without a block gets an
    empty one (in no pool: its report has no CPU flags)."""
    blank = MigrationHost("", None, None, frozenset(), None, None, None, frozenset(), None)
    return [(block or blank)._replace(name=name) for name, block in hosts]


# --- kvmcheck fleet --migration --explain A B ------------------------------------------------------------
def _flag_list(flags: Sequence[str], limit: int = 24) -> str:
    shown = ", ".join(flags[:limit])
    return shown + (f" (+{len(flags) - limit} more)" if len(flags) > limit else "")


def move_reasons(m: Move, a: str, b: str) -> List[str]:
    """Why a move cannot be made, one phrase per obstacle (empty when it can)."""
    out = list(m.blockers)
    if m.missing_flags and not m.blockers:
        what = f"the {m.model} model" if m.mode == "baseline" else f"{a}'s CPU"
        out.append(f"{b} lacks {len(m.missing_flags)} flag{'s' if len(m.missing_flags) != 1 else ''} of {what}: "
                   f"{_flag_list(m.missing_flags)}")
    if m.machine_types:
        out.append(f"{b}'s QEMU does not offer the machine type{'s' if len(m.machine_types) != 1 else ''} "
                   f"{', '.join(m.machine_types)} that a guest defined on {a} gets (define the guest with a "
                   f"machine type both offer)")
    if m.storage:
        out.append(f"{b} does not mount {a}'s shared storage " + ", ".join(f"{s} at {t}" for s, t in m.storage) +
                   " (migrate with --copy-storage-all, or mount it at the same path)")
    return out


def explain_text(a: MigrationHost, b: MigrationHost, pool: Optional[Pool], moves: Sequence[Move]) -> str:
    from kvmcheck.core.terminal import one_line

    name_a, name_b = one_line(a.name), one_line(b.name)
    lines = [f"kvmcheck fleet: can a guest move from {name_a} to {name_b}?"]
    for m in moves:
        mode = "host-model / host-passthrough" if m.mode == "host-model" else \
            f"the pool's baseline model ({m.model})" if m.model else "the pool's baseline model"
        lines.append(f"  {mode}: {'yes' if m.possible else 'no'}")
        lines.extend(f"      {one_line(r)}" for r in move_reasons(m, a.name, b.name))
        if m.possible and m.machine_types is None:
            lines.append(f"      (machine types not compared: a report does not list its QEMU's; QEMU "
                         f"{one_line(a.qemu or 'unknown')} on {name_a}, {one_line(b.qemu or 'unknown')} on {name_b})")
    if pool is not None:
        lines.append(f"Pool: {pool.vendor}, {len(pool.hosts)} hosts, baseline model {pool.model or 'none'}")
    return "\n".join(lines) + "\n"


def explain_fleet(hosts: Sequence[MigrationHost], name_a: str, name_b: str, fmt: str) -> Tuple[int, List[str]]:
    """(exit status, output pieces) of --explain: 0 when a guest can move from a to b in both CPU modes, 1 when
    not in one of them, 2 when a host is not in the fleet (named on stderr)."""
    import json
    import sys

    by_name = {h.name: h for h in hosts}
    missing = [n for n in (name_a, name_b) if n not in by_name]
    if missing:
        from kvmcheck.core.terminal import one_line

        sys.stderr.write("kvmcheck fleet: no report of " + ", ".join(one_line(n) for n in missing) +
                         " among the fleet's hosts\n")
        return 2, []
    found, _ = pools(hosts)
    a, b = by_name[name_a], by_name[name_b]
    pool = pool_holding(found, name_a, name_b)
    moves = explain(a, b, pool)
    status = 0 if all(m.possible for m in moves) else 1
    if fmt == "json":
        doc = explain_section(a, b, pool)
        for m, out in zip(moves, doc["moves"]):
            out["reasons"] = move_reasons(m, a.name, b.name)
        return status, [json.dumps(doc, indent=2, ensure_ascii=False) + "\n"]
    return status, [explain_text(a, b, pool, moves)]


# --- the fleet HTML's picture of the pools ---------------------------------------------------------------
# One colour per pool, in pool order (largest first): fixed here, never taken from a report.
PALETTE = ("#1f6feb", "#d4600f", "#2f8a3e", "#8250df", "#bf3989", "#0a7b83", "#9a6700", "#57606a")
MATRIX_MAX = 60  # hosts up to which the host x host matrix is drawn (beyond, the grouped chart alone says it)


def picture(hosts: Sequence[MigrationHost], migration: Dict[str, Any], width: int = 520, bar: int = 20,
            gap: int = 8, cell: int = 14) -> Dict[str, Any]:
    """Geometry of the fleet HTML's pools: a grouped bar per pool (its hosts by generation, oldest lightest)
    and, for fleets of at most MATRIX_MAX hosts, the host x host matrix: row A, column B coloured in A's
    pool colour when a host-model guest moves from A to B, lighter when only a guest with the pool's model
    does, grey when neither (the reason in the cell's title)."""
    label = 260
    top = max([len(p["hosts"]) for p in migration["pools"]] + [len(migration["outside"]), 1])
    rows = []
    for i, p in enumerate(migration["pools"]):
        colour, x, segments = PALETTE[i % len(PALETTE)], float(label), []
        count = len(p["generations"])
        for j, g in enumerate(p["generations"]):
            w = max(2.0, round(len(g["hosts"]) * width / top, 1))
            segments.append({"x": x, "width": w, "count": len(g["hosts"]), "model": g["model"] or "no named model",
                             "opacity": round(0.35 + 0.65 * (j + 1) / count, 2)})
            x += w
        rows.append({"y": i * (bar + gap), "colour": colour, "segments": segments, "end": x,
                     "label": f"{p['vendor']} · {p['model'] or 'no named model'}", "count": len(p["hosts"])})
    if migration["outside"]:
        w = max(2.0, round(len(migration["outside"]) * width / top, 1))
        rows.append({"y": len(rows) * (bar + gap), "colour": "#afb8c1", "end": label + w, "label": "in no pool",
                     "count": len(migration["outside"]),
                     "segments": [{"x": label, "width": w, "count": len(migration["outside"]), "model": "in no pool",
                                   "opacity": 1}]})
    out: Dict[str, Any] = {"rows": rows, "label": label, "bar": bar, "width": label + width + 70,
                           "height": max(1, len(rows)) * (bar + gap), "matrix": None}
    if len(hosts) <= MATRIX_MAX and migration["pools"]:
        # cells as large as a 480-pixel square allows (36 at most): a matrix of a few hosts is read at a glance
        out["matrix"] = _matrix(hosts, max(cell, min(36, 480 // max(1, len(hosts)))))
    return out


def _matrix(hosts: Sequence[MigrationHost], cell: int) -> Dict[str, Any]:
    found, _ = pools(hosts)
    order = {name: i for i, (name, _, _) in enumerate(MODELS)}
    pool_index, rank = {}, {}
    for i, p in enumerate(found):
        for model, names in p.generations:
            for n in names:
                pool_index[n], rank[n] = i, order.get(model, -1)
    ordered = sorted(hosts, key=lambda h: (pool_index.get(h.name, len(found)), -rank.get(h.name, -1), h.name))
    label = 8 + 7 * min(32, max(len(h.name) for h in ordered))
    cells = []
    for r, a in enumerate(ordered):
        for c, b in enumerate(ordered):
            i = pool_index.get(a.name)
            pool = found[i] if i is not None and pool_index.get(b.name) == i else None
            if a is b:
                kind, title = ("self", f"{a.name}") if pool else ("none", f"{a.name}: in no pool")
            else:
                host_model, baseline = explain(a, b, pool)
                kind = "host-model" if host_model.possible else "baseline" if baseline.possible else "none"
                why = move_reasons(host_model, a.name, b.name) if kind == "baseline" else \
                    move_reasons(baseline, a.name, b.name) or move_reasons(host_model, a.name, b.name)
                title = f"{a.name} → {b.name}: " + {
                    "host-model": "a host-model guest moves (and a baseline one)",
                    "baseline": f"only a guest with the {baseline.model} model moves; host-model: ",
                    "none": "no guest moves: "}[kind] + ("; ".join(why) if kind != "host-model" else "")
            cells.append({"x": label + c * cell, "y": label + r * cell, "kind": kind, "title": title[:600],
                          # grey when no guest moves, even inside a pool (the legend says so)
                          "colour": PALETTE[i % len(PALETTE)] if pool is not None and kind != "none" else "#d0d7de"})
    return {"names": [{"name": h.name[:32], "at": label + i * cell + cell // 2} for i, h in enumerate(ordered)],
            "cells": cells, "cell": cell, "label": label, "size": label + len(ordered) * cell + 4}
