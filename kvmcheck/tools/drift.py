# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck diff OLD NEW: what changed between two reports of one host, or two fleet reports.

The kind is detected from the shape: a host report (schema_version 1 or 2, "host" object, "checks" list)
or a fleet report ("kind": "kvmcheck-fleet", schema_version 1 or 2, from ``kvmcheck fleet --format
json``).  Both must be the same kind.  The output follows reports/diff.schema.json.

Host reports, per check id (statuses ranked by how bad the finding is: pass < warn < fail):
  regression         pass -> warn or fail, warn -> fail, and skip or error -> warn or fail (a check that
                     now runs and finds a problem); the verdict ready or unknown -> not-ready
  fix                fail -> warn or pass, warn -> pass; the verdict not-ready or unknown -> ready
  no longer checked  anything -> skip or error, or the check is gone: the evidence is lost, which is
                     never a fix (fail -> skip says nothing about the failure) and not a finding either;
                     the verdict ready or not-ready -> unknown is listed the same way
  changed            skip <-> error, skip or error -> pass (now checked, nothing found)
  new checks         with their status
Fleet reports: hosts added and removed, hosts newly not ready (regressions), newly ready (fixes) and
newly unknown (lost evidence), per host the checks that regressed, and per check the change of the host
counts per status; a check regressed when more hosts than before have it at warn-or-fail or at fail.
More errors or skips are listed, not counted as a regression.

Exit status (model.ExitStatus): 1 when anything regressed (for drift alerts from cron or CI), else 0; 2
when an input cannot be read (not a regular file, larger than fleet.MAX_REPORT_BYTES), is not JSON, is
not a kvmcheck report, is malformed (the message names the file and the field), or the two are of
different kinds (or the format is not text/json).

Inputs are checked by a small structural validator of exactly the fields diff reads (validate_host,
validate_fleet), not by jsonschema: that is not a run-time dependency, and importing it would cost more
than the whole diff.  The shipped schemas say the same and more; the tests validate real output with them.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional, Tuple

from kvmcheck.tools.fleet import FLEET_KIND, STATUSES, VERDICTS, Refusal, read_bytes
from kvmcheck.core.model import DIFF_SCHEMA_VERSION, READ_FLEET_VERSIONS, READ_REPORT_VERSIONS, SEVERITY, ExitStatus

# How bad a finding is (model.SEVERITY's findings, least severe 0); skip and error found nothing about the
# host (they are handled apart).
FINDING = {s: i for i, s in enumerate(reversed([s for s in SEVERITY if s in ("pass", "warn", "fail")]))}
UNDECIDED = ("skip", "error")
WORSE_LEVELS = (("warn-or-fail", ("warn", "fail")), ("fail", ("fail",)))
PROBLEM_STATUSES = ("warn", "fail", "error")


class Unreadable(Exception):
    pass


# --- validating inputs ---------------------------------------------------------------------------------
def _need(ok: bool, path: str, field: str, what: str) -> None:
    if not ok:
        raise Unreadable(f"{path}: malformed report: {field}: {what}")


def _is_int(value: Any) -> bool:
    return type(value) is int and value >= 0


def _text(value: Any) -> bool:
    return isinstance(value, str)


def validate_host(path: str, doc: Dict[str, Any]) -> None:
    """The fields diff reads of a host report: raise Unreadable naming the first bad one."""
    _need(isinstance(doc.get("host"), dict), path, "host", "not an object")
    name = doc["host"].get("hostname")
    _need(name is None or _text(name), path, "host.hostname", "not a string or null")
    _need(doc.get("generated_at") is None or _text(doc["generated_at"]), path, "generated_at", "not a string")
    _need(doc.get("verdict") in VERDICTS, path, "verdict",
          f"{str(doc.get('verdict'))[:40]!r} is not one of {', '.join(VERDICTS)}")
    _need(isinstance(doc.get("checks"), list), path, "checks", "not a list")
    for i, c in enumerate(doc["checks"]):
        _need(isinstance(c, dict), path, f"checks[{i}]", "not an object")
        _need(_text(c.get("id")), path, f"checks[{i}].id", "not a string")
        _need(c.get("status") in STATUSES, path, f"checks[{i}].status",
              f"{str(c.get('status'))[:40]!r} is not one of {', '.join(STATUSES)}")
        _need(c.get("summary") is None or _text(c["summary"]), path, f"checks[{i}].summary", "not a string")


def validate_fleet(path: str, doc: Dict[str, Any]) -> None:
    """The fields diff reads of a fleet report: raise Unreadable naming the first bad one."""
    _need(doc.get("generated_at") is None or _text(doc["generated_at"]), path, "generated_at", "not a string")
    totals = doc.get("totals")
    _need(isinstance(totals, dict), path, "totals", "not an object")
    for key in ("hosts", "ready", "not_ready", "unknown"):
        _need(totals.get(key) is None or _is_int(totals[key]), path, f"totals.{key}",
              "not a non-negative integer")
    _need(isinstance(doc.get("hosts"), list), path, "hosts", "not a list")
    for i, h in enumerate(doc["hosts"]):
        _need(isinstance(h, dict), path, f"hosts[{i}]", "not an object")
        _need(_text(h.get("host")), path, f"hosts[{i}].host", "not a string")
        _need(h.get("verdict") in VERDICTS, path, f"hosts[{i}].verdict",
              f"{str(h.get('verdict'))[:40]!r} is not one of {', '.join(VERDICTS)}")
        problems = h.get("problems")
        _need(problems is None or isinstance(problems, dict), path, f"hosts[{i}].problems", "not an object")
        for cid, status in (problems or {}).items():
            _need(status in PROBLEM_STATUSES, path, f"hosts[{i}].problems[{cid[:60]!r}]",
                  f"{str(status)[:40]!r} is not one of {', '.join(PROBLEM_STATUSES)}")
    _need(isinstance(doc.get("checks"), list), path, "checks", "not a list")
    for i, c in enumerate(doc["checks"]):
        _need(isinstance(c, dict), path, f"checks[{i}]", "not an object")
        _need(_text(c.get("id")), path, f"checks[{i}].id", "not a string")
        _need(isinstance(c.get("counts"), dict), path, f"checks[{i}].counts", "not an object")
        for s in STATUSES:
            n = c["counts"].get(s, 0)
            _need(_is_int(n), path, f"checks[{i}].counts.{s}", "not a non-negative integer")


def load(path: str) -> Tuple[str, Dict[str, Any]]:
    """-> ("host" | "fleet", the parsed report); Unreadable with the reason otherwise.  The file is read
    as fleet reads a report: a regular file of at most MAX_REPORT_BYTES (a FIFO or /dev/zero is refused
    before it is read)."""
    try:
        data = read_bytes(path)
    except Refusal as exc:
        raise Unreadable(f"{path}: {exc}") from None
    except OSError as exc:
        raise Unreadable(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Unreadable(f"{path}: not JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise Unreadable(f"{path}: not a kvmcheck report (a JSON {type(doc).__name__})")
    version = doc.get("schema_version")
    shown = version if type(version) is int else repr(str(version)[:40])
    if doc.get("kind") == FLEET_KIND:
        if type(version) is not int or version not in READ_FLEET_VERSIONS:
            raise Unreadable(f"{path}: fleet report schema_version {shown} is not supported "
                             f"(this kvmcheck reads {', '.join(map(str, READ_FLEET_VERSIONS))})")
        validate_fleet(path, doc)
        return "fleet", doc
    if type(version) is not int or version not in READ_REPORT_VERSIONS:
        raise Unreadable(f"{path}: schema_version {shown} is not supported "
                         f"(this kvmcheck reads {', '.join(map(str, READ_REPORT_VERSIONS))})")
    validate_host(path, doc)
    return "host", doc


# --- comparing -----------------------------------------------------------------------------------------
def classify(old: Optional[str], new: Optional[str]) -> Optional[str]:
    """A status change (None: the check is absent) -> "regression", "fix", "no-longer-checked" or
    "changed"; None when equal or when a check appears (new checks are listed apart)."""
    if old == new or old is None:
        return None
    if new is None:
        return "no-longer-checked"
    if new in UNDECIDED:
        return "changed" if old in UNDECIDED else "no-longer-checked"
    if old in UNDECIDED:
        return "regression" if FINDING[new] else "changed"
    return "regression" if FINDING[new] > FINDING[old] else "fix"


def classify_verdict(old: Any, new: Any) -> Optional[str]:
    """A verdict change -> "regression" (to not-ready), "fix" (to ready), "no-longer-checked" (to
    unknown: the evidence for either verdict is lost), or None."""
    if old == new or old not in VERDICTS or new not in VERDICTS:
        return None
    return {"not-ready": "regression", "ready": "fix", "unknown": "no-longer-checked"}[new]


SECTIONS = {"regression": "regressions", "fix": "fixes", "no-longer-checked": "no_longer_checked",
            "changed": "changed"}


def diff_hosts(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    before = {c["id"]: c for c in old["checks"]}
    after = {c["id"]: c for c in new["checks"]}
    out: Dict[str, List[Dict[str, Any]]] = {key: [] for key in SECTIONS.values()}
    for cid in list(after) + [cid for cid in before if cid not in after]:
        was, now = before.get(cid), after.get(cid)
        kind = classify(was and was["status"], now and now["status"])
        if kind:
            out[SECTIONS[kind]].append({"id": cid, "old": was["status"], "new": now and now["status"],
                                        "summary": (now or was).get("summary") or ""})
    out["regressions"].sort(key=lambda r: (-FINDING[r["new"]], r["id"]))
    out["fixes"].sort(key=lambda r: (FINDING[r["new"]], r["id"]))
    verdict = {"old": old["verdict"], "new": new["verdict"],
               "change": classify_verdict(old["verdict"], new["verdict"])}
    return {
        "kind": "host",
        "schema_version": DIFF_SCHEMA_VERSION,
        "old": {"host": old["host"].get("hostname"), "generated_at": old.get("generated_at")},
        "new": {"host": new["host"].get("hostname"), "generated_at": new.get("generated_at")},
        "regressed": bool(out["regressions"]) or verdict["change"] == "regression",
        "verdict": verdict,
        "regressions": out["regressions"],
        "fixes": out["fixes"],
        "no_longer_checked": out["no_longer_checked"],
        "changed": out["changed"],
        "new_checks": [{"id": cid, "status": c["status"], "summary": c.get("summary") or ""}
                       for cid, c in after.items() if cid not in before],
    }


def diff_fleets(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
    before = {h["host"]: h for h in old["hosts"]}
    after = {h["host"]: h for h in new["hosts"]}
    both = [name for name in after if name in before]
    verdict_changes: Dict[str, List[str]] = {"regression": [], "fix": [], "no-longer-checked": []}
    host_regressions = []
    for name in both:
        was, now = before[name], after[name]
        change = classify_verdict(was["verdict"], now["verdict"])
        if change:
            verdict_changes[change].append(name)
        # A fleet report keeps the warn, fail and error results per host: a check absent there passed or
        # was skipped, which for a regression is the same (neither was a finding).
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
        a = {s: counts_before.get(cid, {}).get(s, 0) for s in STATUSES}
        b = {s: counts_after.get(cid, {}).get(s, 0) for s in STATUSES}
        if a == b:
            continue
        worse = [label for label, group in WORSE_LEVELS if sum(b[s] for s in group) > sum(a[s] for s in group)]
        checks.append({"id": cid, "old": a, "new": b, "delta": {s: b[s] - a[s] for s in STATUSES},
                       "regressed": bool(worse), "worse": worse,
                       "new_check": cid not in counts_before, "removed_check": cid not in counts_after})
    checks.sort(key=lambda c: (not c["regressed"], c["id"]))
    regressed = bool(verdict_changes["regression"] or host_regressions) or any(c["regressed"] for c in checks)
    return {
        "kind": "fleet",
        "schema_version": DIFF_SCHEMA_VERSION,
        "old": {"generated_at": old.get("generated_at"), "totals": old["totals"]},
        "new": {"generated_at": new.get("generated_at"), "totals": new["totals"]},
        "regressed": regressed,
        "newly_not_ready": sorted(verdict_changes["regression"]),
        "newly_ready": sorted(verdict_changes["fix"]),
        "newly_unknown": sorted(verdict_changes["no-longer-checked"]),
        "host_regressions": sorted(host_regressions, key=lambda h: h["host"]),
        "hosts_added": [{"host": n, "verdict": after[n]["verdict"]} for n in sorted(after) if n not in before],
        "hosts_removed": [{"host": n, "verdict": before[n]["verdict"]} for n in sorted(before) if n not in after],
        "checks": checks,
    }


def render_text(d: Dict[str, Any]) -> str:
    from kvmcheck.core.terminal import one_line  # host names, ids and summaries come from the reports: one line, no escapes

    lines: List[str] = []
    add = lines.append
    if d["kind"] == "host":
        o, n = d["old"], d["new"]
        def named(host: Any) -> str:
            return one_line(host) if host else "(no hostname)"

        host = named(n["host"]) if n["host"] == o["host"] else f"{named(o['host'])} -> {named(n['host'])}"
        add(f"kvmcheck diff: host {host} ({one_line(o['generated_at'])} -> {one_line(n['generated_at'])})")
        if n["host"] != o["host"]:
            add("note: the two reports name different hosts; this compares two machines, not one over time")
        v = d["verdict"]
        note = {"regression": " (regression)", "fix": " (fixed)",
                "no-longer-checked": " (evidence lost: not a fix)"}.get(v["change"] or "", "")
        add(f"verdict: {v['old']} -> {v['new']}{note}" if v["old"] != v["new"] else f"verdict: {v['new']} (unchanged)")
        for key, title in (("regressions", "Regressions"), ("fixes", "Fixes"),
                           ("no_longer_checked", "No longer checked (evidence lost: not a fix)"),
                           ("changed", "Other changes")):
            if d[key]:
                add(f"\n{title} ({len(d[key])})")
                for r in d[key]:
                    new = r["new"] or "gone (check no longer in the report)"
                    add(f"  {one_line(r['id'])}: {r['old']} -> {new}  {one_line(r['summary'])}")
        if d["new_checks"]:
            add(f"\nNew checks ({len(d['new_checks'])})")
            for r in d["new_checks"]:
                add(f"  {one_line(r['id'])}: {r['status']}  {one_line(r['summary'])}")
        if not (d["regressions"] or d["fixes"] or d["no_longer_checked"] or d["changed"] or d["new_checks"]):
            add("no status changes")
    else:
        o, n = d["old"]["totals"], d["new"]["totals"]
        add(f"kvmcheck diff: fleet ({one_line(d['old']['generated_at'])} -> {one_line(d['new']['generated_at'])})")
        add(f"hosts: {o.get('hosts')} -> {n.get('hosts')}, ready: {o.get('ready')} -> {n.get('ready')}, "
            f"not ready: {o.get('not_ready')} -> {n.get('not_ready')}, "
            f"unknown: {o.get('unknown', 0)} -> {n.get('unknown', 0)}")
        if d["newly_not_ready"]:
            add(f"\nRegressions: newly not ready ({len(d['newly_not_ready'])})")
            add("  " + ", ".join(map(one_line, d["newly_not_ready"])))
        worse = [c for c in d["checks"] if c["regressed"]]
        if worse:
            add(f"\nRegressions: checks with more hosts in trouble ({len(worse)})")
            for c in worse:
                add(f"  {one_line(c['id'])}: " + _deltas(c))
        if d["host_regressions"]:
            add(f"\nHosts with regressed checks ({len(d['host_regressions'])})")
            for h in d["host_regressions"][:50]:
                add(f"  {one_line(h['host'])}: " + ", ".join(f"{one_line(r['id'])} {r['old']} -> {r['new']}" for r in h["checks"]))
            if len(d["host_regressions"]) > 50:
                add(f"  ... and {len(d['host_regressions']) - 50} more")
        if d["newly_unknown"]:
            add(f"\nNo longer checked: newly unknown, the evidence for a verdict is lost ({len(d['newly_unknown'])})")
            add("  " + ", ".join(map(one_line, d["newly_unknown"])))
        if d["newly_ready"]:
            add(f"\nFixes: newly ready ({len(d['newly_ready'])})")
            add("  " + ", ".join(map(one_line, d["newly_ready"])))
        other = [c for c in d["checks"] if not c["regressed"]]
        if other:
            add(f"\nOther per-check changes ({len(other)})")
            for c in other:
                add(f"  {one_line(c['id'])}: " + _deltas(c))
        for key, title in (("hosts_added", "Hosts added"), ("hosts_removed", "Hosts removed")):
            if d[key]:
                add(f"\n{title} ({len(d[key])})")
                add("  " + ", ".join(f"{one_line(h['host'])} ({h['verdict']})" for h in d[key]))
        if not (d["checks"] or d["newly_not_ready"] or d["newly_ready"] or d["newly_unknown"] or d["hosts_added"]
                or d["hosts_removed"] or d["host_regressions"]):
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
    input is unreadable, refused, malformed, of the wrong kind, or the format is neither text nor json."""
    if fmt not in ("text", "json"):
        sys.stderr.write(f"kvmcheck diff: --format {fmt} is not supported here (text or json)\n")
        return int(ExitStatus.USAGE)
    try:
        result = diff(old, new)
    except Unreadable as exc:  # the reason may quote a report's content: sanitized like the text output
        from kvmcheck.core.terminal import terminal_text

        sys.stderr.write(f"kvmcheck diff: {terminal_text(str(exc))}\n")
        return int(ExitStatus.USAGE)
    if fmt == "json":
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    else:
        from kvmcheck.core.terminal import terminal_text

        # Verdicts, ids and statuses come from the reports too: the whole text passes the terminal sanitizer
        # (host names and summaries are already one-line through terminal.one_line; kvmcheck adds no escapes here).
        sys.stdout.write(terminal_text(render_text(result)))
    return int(ExitStatus.NOT_READY if result["regressed"] else ExitStatus.READY)
