# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck diff OLD NEW: what changed between two reports of one host, or two fleet reports.

The kind is detected from the shape: a host report (schema_version 1, "host" object, "checks" list) or
a fleet report ("kind": "kvmcheck-fleet", from ``kvmcheck fleet --format json``).  Both must be the same
kind.

Host reports, per check id:
  regression  pass/skip -> warn or fail, warn -> fail, anything -> error; also the verdict ready -> not-ready
  fix         the reverse (warn/fail -> pass/skip, fail -> warn, error -> anything)
  changed     other status changes (pass <-> skip)
  new / removed checks (with their status in the report that has them)
Fleet reports: hosts added and removed, hosts newly not ready (regressions) and newly ready (fixes), and
per check the change of the host counts per status; a check regressed when more hosts than before have it
at warn-or-worse, at fail-or-worse or at error.

Exit status: 1 when anything regressed (for drift alerts from cron or CI), else 0; 2 when an input cannot
be read, is not a kvmcheck report, or the two are of different kinds (or the format is not text/json).
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional, Tuple

from .fleet import FLEET_KIND, REPORT_SCHEMA_VERSION, STATUSES

EXIT_SAME, EXIT_REGRESSED, EXIT_UNREADABLE = 0, 1, 2
RANK = {"pass": 0, "skip": 0, "warn": 1, "fail": 2, "error": 3}
WORSE_LEVELS = (("warn-or-worse", ("warn", "fail", "error")), ("fail-or-worse", ("fail", "error")),
                ("error", ("error",)))


class Unreadable(Exception):
    pass


def load(path: str) -> Tuple[str, Dict[str, Any]]:
    """-> ("host" | "fleet", the parsed report); Unreadable with the reason otherwise."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise Unreadable(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Unreadable(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Unreadable(f"{path}: not a kvmcheck report (a JSON {type(doc).__name__})")
    try:
        if doc.get("kind") == FLEET_KIND:
            if doc.get("schema_version") != 1 or not isinstance(doc["hosts"], list) \
                    or not isinstance(doc["checks"], list):
                raise Unreadable(f"{path}: unsupported fleet report (schema_version {doc.get('schema_version')!r})")
            for h in doc["hosts"]:
                str(h["host"]), h["verdict"], dict(h.get("problems") or {})
            for c in doc["checks"]:
                str(c["id"]), [int(c["counts"].get(s, 0)) for s in STATUSES]
            return "fleet", doc
        version = doc.get("schema_version")
        if type(version) is not int or version != REPORT_SCHEMA_VERSION:
            raise Unreadable(f"{path}: schema_version {version!r} is not supported "
                             f"(this kvmcheck reads {REPORT_SCHEMA_VERSION})")
        if not isinstance(doc["checks"], list) or not isinstance(doc["host"], dict):
            raise Unreadable(f"{path}: not a kvmcheck report (no host object or checks list)")
        for c in doc["checks"]:
            if not isinstance(c["id"], str) or c["status"] not in RANK:
                raise Unreadable(f"{path}: malformed check {str(c.get('id'))[:60]!r}")
        return "host", doc
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise Unreadable(f"{path}: malformed report: {type(exc).__name__}: {exc}") from None


def classify(old: str, new: str) -> Optional[str]:
    """A status change -> "regression", "fix" or "changed" (None when equal)."""
    if old == new:
        return None
    if new == "error" or RANK[new] > RANK[old]:
        return "regression"
    if old == "error" or RANK[new] < RANK[old]:
        return "fix"
    return "changed"


def diff_hosts(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    before = {c["id"]: c for c in old["checks"]}
    after = {c["id"]: c for c in new["checks"]}
    out: Dict[str, List[Dict[str, Any]]] = {"regressions": [], "fixes": [], "changed": []}
    for cid, c in after.items():
        if cid in before:
            kind = classify(before[cid]["status"], c["status"])
            if kind:
                out[{"regression": "regressions", "fix": "fixes"}.get(kind, "changed")].append(
                    {"id": cid, "old": before[cid]["status"], "new": c["status"], "summary": c.get("summary", "")})
    for key in ("regressions", "fixes"):
        out[key].sort(key=lambda r: (-RANK[r["new"]] if key == "regressions" else RANK[r["new"]], r["id"]))
    verdict = {"old": old.get("verdict"), "new": new.get("verdict")}
    regressed = bool(out["regressions"]) or (verdict["old"] == "ready" and verdict["new"] == "not-ready")
    return {
        "kind": "host",
        "old": {"host": old["host"].get("hostname"), "generated_at": old.get("generated_at")},
        "new": {"host": new["host"].get("hostname"), "generated_at": new.get("generated_at")},
        "regressed": regressed,
        "verdict": verdict,
        "regressions": out["regressions"],
        "fixes": out["fixes"],
        "changed": out["changed"],
        "new_checks": [{"id": cid, "status": c["status"], "summary": c.get("summary", "")}
                       for cid, c in after.items() if cid not in before],
        "removed_checks": [{"id": cid, "status": c["status"]} for cid, c in before.items() if cid not in after],
    }


def diff_fleets(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    before = {h["host"]: h for h in old["hosts"]}
    after = {h["host"]: h for h in new["hosts"]}
    both = [name for name in after if name in before]
    newly_not_ready, newly_ready, host_regressions = [], [], []
    for name in both:
        was, now = before[name], after[name]
        if was["verdict"] == "ready" and now["verdict"] != "ready":
            newly_not_ready.append(name)
        elif was["verdict"] != "ready" and now["verdict"] == "ready":
            newly_ready.append(name)
        old_problems, new_problems = was.get("problems") or {}, now.get("problems") or {}
        worse = [{"id": cid, "old": old_problems.get(cid, "pass"), "new": status}
                 for cid, status in new_problems.items()
                 if classify(old_problems.get(cid, "pass"), status) == "regression"]
        if worse:
            host_regressions.append({"host": name, "checks": worse})
    counts_before = {c["id"]: c["counts"] for c in old["checks"]}
    counts_after = {c["id"]: c["counts"] for c in new["checks"]}
    checks = []
    for cid in list(counts_after) + [c for c in counts_before if c not in counts_after]:
        a = {s: int(counts_before.get(cid, {}).get(s, 0)) for s in STATUSES}
        b = {s: int(counts_after.get(cid, {}).get(s, 0)) for s in STATUSES}
        if a == b:
            continue
        worse = [label for label, group in WORSE_LEVELS if sum(b[s] for s in group) > sum(a[s] for s in group)]
        checks.append({"id": cid, "old": a, "new": b, "delta": {s: b[s] - a[s] for s in STATUSES},
                       "regressed": bool(worse), "worse": worse,
                       "new_check": cid not in counts_before, "removed_check": cid not in counts_after})
    checks.sort(key=lambda c: (not c["regressed"], c["id"]))
    regressed = bool(newly_not_ready) or any(c["regressed"] for c in checks)
    totals_old, totals_new = old.get("totals", {}), new.get("totals", {})
    return {
        "kind": "fleet",
        "old": {"generated_at": old.get("generated_at"), "totals": totals_old},
        "new": {"generated_at": new.get("generated_at"), "totals": totals_new},
        "regressed": regressed,
        "newly_not_ready": sorted(newly_not_ready),
        "newly_ready": sorted(newly_ready),
        "host_regressions": sorted(host_regressions, key=lambda h: h["host"]),
        "hosts_added": [{"host": n, "verdict": after[n]["verdict"]} for n in sorted(after) if n not in before],
        "hosts_removed": [{"host": n, "verdict": before[n]["verdict"]} for n in sorted(before) if n not in after],
        "checks": checks,
    }


def _plain(value: Any) -> str:
    from .terminal import one_line

    return one_line(value)


def render_text(d: Dict[str, Any]) -> str:
    lines: List[str] = []
    add = lines.append
    if d["kind"] == "host":
        o, n = d["old"], d["new"]
        host = n["host"] if n["host"] == o["host"] else f"{o['host']} -> {n['host']}"
        add(f"kvmcheck diff: host {_plain(host)} ({_plain(o['generated_at'])} -> {_plain(n['generated_at'])})")
        v = d["verdict"]
        add(f"verdict: {v['old']} -> {v['new']}" if v["old"] != v["new"] else f"verdict: {v['new']} (unchanged)")
        for key, title in (("regressions", "Regressions"), ("fixes", "Fixes"), ("changed", "Other changes")):
            if d[key]:
                add(f"\n{title} ({len(d[key])})")
                for r in d[key]:
                    add(f"  {r['id']}: {r['old']} -> {r['new']}  {_plain(r['summary'])}")
        if d["new_checks"]:
            add(f"\nNew checks ({len(d['new_checks'])})")
            for r in d["new_checks"]:
                add(f"  {r['id']}: {r['status']}  {_plain(r['summary'])}")
        if d["removed_checks"]:
            add(f"\nRemoved checks ({len(d['removed_checks'])})")
            for r in d["removed_checks"]:
                add(f"  {r['id']} (was {r['status']})")
        if not (d["regressions"] or d["fixes"] or d["changed"] or d["new_checks"] or d["removed_checks"]):
            add("no status changes")
    else:
        o, n = d["old"]["totals"], d["new"]["totals"]
        add(f"kvmcheck diff: fleet ({_plain(d['old']['generated_at'])} -> {_plain(d['new']['generated_at'])})")
        add(f"hosts: {o.get('hosts')} -> {n.get('hosts')}, ready: {o.get('ready')} -> {n.get('ready')}, "
            f"not ready: {o.get('not_ready')} -> {n.get('not_ready')}")
        if d["newly_not_ready"]:
            add(f"\nRegressions: newly not ready ({len(d['newly_not_ready'])})")
            add("  " + ", ".join(map(_plain, d["newly_not_ready"])))
        worse = [c for c in d["checks"] if c["regressed"]]
        if worse:
            add(f"\nRegressions: checks with more hosts in trouble ({len(worse)})")
            for c in worse:
                add(f"  {c['id']}: " + _deltas(c))
        if d["host_regressions"]:
            add(f"\nHosts with regressed checks ({len(d['host_regressions'])})")
            for h in d["host_regressions"][:50]:
                add(f"  {_plain(h['host'])}: " + ", ".join(f"{r['id']} {r['old']} -> {r['new']}" for r in h["checks"]))
            if len(d["host_regressions"]) > 50:
                add(f"  ... and {len(d['host_regressions']) - 50} more")
        if d["newly_ready"]:
            add(f"\nFixes: newly ready ({len(d['newly_ready'])})")
            add("  " + ", ".join(map(_plain, d["newly_ready"])))
        other = [c for c in d["checks"] if not c["regressed"]]
        if other:
            add(f"\nOther per-check changes ({len(other)})")
            for c in other:
                add(f"  {c['id']}: " + _deltas(c))
        for key, title in (("hosts_added", "Hosts added"), ("hosts_removed", "Hosts removed")):
            if d[key]:
                add(f"\n{title} ({len(d[key])})")
                add("  " + ", ".join(f"{_plain(h['host'])} ({h['verdict']})" for h in d[key]))
        if not (d["checks"] or d["newly_not_ready"] or d["newly_ready"] or d["hosts_added"] or d["hosts_removed"]
                or d["host_regressions"]):
            add("no changes")
    return "\n".join(lines) + "\n"


def _deltas(c: Dict[str, Any]) -> str:
    parts = [f"{s} {c['old'][s]} -> {c['new'][s]}" for s in STATUSES if c["delta"][s]]
    note = " (new check)" if c["new_check"] else " (removed check)" if c["removed_check"] else ""
    return ", ".join(parts) + note


def diff(old_path: str, new_path: str) -> Dict[str, Any]:
    """Load and compare two reports; Unreadable when either cannot be used."""
    kind_old, old = load(old_path)
    kind_new, new = load(new_path)
    if kind_old != kind_new:
        raise Unreadable(f"cannot compare a {kind_old} report ({old_path}) with a {kind_new} report ({new_path})")
    return diff_hosts(old, new) if kind_old == "host" else diff_fleets(old, new)


def diff_command(old: str, new: str, fmt: str = "text") -> int:
    """Print the differences between two reports; exit 1 when anything regressed, 0 otherwise, 2 when an
    input is unreadable, of the wrong kind, or the format is neither text nor json."""
    if fmt not in ("text", "json"):
        sys.stderr.write(f"kvmcheck diff: --format {fmt} is not supported here (text or json)\n")
        return EXIT_UNREADABLE
    try:
        result = diff(old, new)
    except Unreadable as exc:  # the reason may quote a report's content: sanitized like the text output
        from .terminal import terminal_text

        sys.stderr.write(f"kvmcheck diff: {terminal_text(str(exc))}\n")
        return EXIT_UNREADABLE
    if fmt == "json":
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    else:
        from .terminal import terminal_text

        # Verdicts, ids and statuses come from the reports too: the whole text passes the terminal sanitizer
        # (host names and summaries are already one-line through _plain; kvmcheck adds no escapes here).
        sys.stdout.write(terminal_text(render_text(result)))
    return EXIT_REGRESSED if result["regressed"] else EXIT_SAME
