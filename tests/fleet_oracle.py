# SPDX-License-Identifier: GPL-2.0-or-later
"""The fleet view as kvmcheck built it before it streamed (kvmcheck/tools/fleet.py at commit eb90434, reading,
aggregating and rendering only): every report read into a list, then aggregated, then rendered whole.
tests/test_fleet_stream.py compares the streaming fleet's outputs with this one's, byte for byte.
Frozen: do not change it to follow the module."""
from __future__ import annotations

import datetime
import gc
import json
import os
import stat
import sys
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from kvmcheck.core.model import CRASHES_FIRST, FLEET_SCHEMA_VERSION, READ_REPORT_VERSIONS, SEVERITY, ExitStatus, \
    cause_key, severity

STATUSES = ("pass", "warn", "fail", "skip", "error")
PROBLEMS = tuple(s for s in SEVERITY if s in ("error", "fail", "warn"))  # statuses that name a cause
FLEET_KIND = "kvmcheck-fleet"
HOST_LISTS = tuple(s for s in CRASHES_FIRST if s in ("error", "fail"))  # statuses whose hosts a check names
VERDICTS = ("ready", "not-ready", "unknown")
PARALLEL_MIN = 256  # fewer files than this: read in-process (forking costs more than it saves)
PROGRESS_MIN = 200  # fewer files than this: no progress bar (it would only flicker)
CHUNK = 128  # files per task sent to a worker
MAX_WORKERS = 8
TEXT_HOSTS = 6  # host names listed per line in the text view before "(+N more)"
# A real report is 25-30 KB; the runner bounds evidence, so even a damaged root's report stays far below
# this.  Anything larger is refused before it is read: json.loads needs several times a file's size.
MAX_REPORT_BYTES = 16 * 2**20
# A report generated more than this many seconds after the fleet view's "now" has a clock in the future
# (or a forged time): it is listed apart and never preferred over a report with a believable time.
# 10 minutes covers the skew of hosts whose NTP is a little off.
CLOCK_SKEW = 600.0
MAX_VALUES = 16  # evidence numbers kept per host and cause
MAX_VALUE_KEY = 80  # evidence keys are identifiers: a longer one is not kept
STDERR_REFUSED = 20  # refused files named on stderr before "... and N more"


class Problem(NamedTuple):
    """A warn, fail or error result of one host, as the fleet view keeps it (stored as a plain tuple of
    these fields: a NamedTuple per result costs a tenth of the reading time on a big fleet)."""

    index: int  # position in the report's checks (its Layout)
    cause: str  # the check's cause key, else model.cause_key(summary)
    values: Tuple[Tuple[str, Any], ...]  # the scalar evidence values of the result (measurements)
    follows: Tuple[str, ...]  # the result's caused_by: the checks whose finding this one follows from


class HostRecord(NamedTuple):
    """What the fleet view keeps of one readable host report."""

    path: str
    hostname: Optional[str]
    generated_at: str
    when: float  # generated_at in Unix seconds
    verdict: str
    layout: Tuple[str, ...]  # check ids, in report order (one shared tuple per distinct layout)
    codes: str  # one STATUS_CODE letter per check
    texts: Tuple[Optional[str], ...]  # summaries (None where not kept)
    problems: Tuple[Tuple[int, str, Tuple[Tuple[str, Any], ...], Tuple[str, ...]], ...]  # see Problem


class Refused(NamedTuple):
    """A file or argument that gave no report, and why."""

    path: str
    reason: str


Record = Any  # HostRecord or Refused


class _CauseGroup(NamedTuple):
    """The hosts of one (check, status, cause), gathered while the fleet view is built."""

    hosts: List[str]  # host names
    texts: List[Optional[str]]  # their summaries
    values: List[Tuple[Tuple[str, Any], ...]]  # their measured values
    follows: Dict[str, None]  # what they follow from (ordered set)


class Refusal(Exception):
    """A file that is not read at all (not a regular file, too large): the reason, for the unreadable list."""


# --- reading one report ---------------------------------------------------------------------------------
def parse_time(text: str) -> float:
    """ISO 8601 (what generated_at holds) -> Unix seconds; a trailing Z and naive times are read as UTC."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    stamp = datetime.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def _json_error(data: bytes, exc: json.JSONDecodeError) -> str:
    # The scanner reports a string cut off by the end of the file at the string's start.
    if exc.pos >= len(data.rstrip()) or exc.msg.startswith("Unterminated string"):
        return f"truncated JSON: the document ends after {len(data)} bytes ({exc.msg})"
    return f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def refuse_mode(mode: int, size: int) -> Optional[str]:
    """Why a file with this st_mode and st_size is not read, or None."""
    if not stat.S_ISREG(mode):
        return f"refused: {_kind(mode)}, not a regular file"
    if size > MAX_REPORT_BYTES:
        return f"refused: {size} bytes, larger than a report can be ({MAX_REPORT_BYTES // 2**20} MiB)"
    return None


def read_bytes(path: str) -> bytes:
    """A report file's bytes, never more than MAX_REPORT_BYTES: OSError, or Refusal for what is not a
    regular file or is too large.

    Opened with O_NONBLOCK (a FIFO swapped in after the walk's check opens at once instead of waiting
    for a writer) and O_NOCTTY, judged by fstat of the open file (what is read is what was checked), and
    read through os.read into one buffer: a file that grows while it is read is cut at the limit."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        reason = refuse_mode(st.st_mode, st.st_size)
        if reason:
            raise Refusal(reason)
        parts = [os.read(fd, st.st_size + 1 if st.st_size > 0 else 65536)]
        total = len(parts[0])
        while parts[-1]:
            if total > MAX_REPORT_BYTES:
                raise Refusal(f"refused: grew past {MAX_REPORT_BYTES // 2**20} MiB while it was read")
            parts.append(os.read(fd, 65536))
            total += len(parts[-1])
        return b"".join(parts)
    finally:
        os.close(fd)


def read_report(path: str, summaries: bool = True, cache: Optional[Dict[Any, Any]] = None) -> Record:
    """One file -> a HostRecord; every problem becomes Refused(path, reason), never an exception.

    summaries=False keeps the summary text of warn, fail and error results only (all the text, json and
    html views need); the csv view needs all of them."""
    try:
        data = read_bytes(path)
    except Refusal as exc:
        return Refused(path, str(exc))
    except OSError as exc:
        return Refused(path, f"cannot read: {exc.strerror or exc}")
    if not data.strip():
        return Refused(path, "empty file")
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        return Refused(path, _json_error(data, exc))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return Refused(path, f"not JSON: {type(exc).__name__}")
    return summarize(path, doc, summaries, cache)


STATUS_CODE = {"pass": "p", "warn": "w", "fail": "f", "skip": "s", "error": "e"}
CODE_STATUS = {v: k for k, v in STATUS_CODE.items()}


def _values(evidence: Any) -> Tuple[Tuple[str, Any], ...]:
    """The numbers in a result's evidence (its measurements: rates, sizes, counts), at most MAX_VALUES.
    Strings (paths, device names) are left to the summary, nested data is left out; NaN and infinities
    (json.loads accepts them) would make the fleet report invalid JSON.  type() is exact: bool is no number."""
    if type(evidence) is not dict:
        return ()
    out = tuple((k, v) for k, v in evidence.items()
                if (type(v) is int or (type(v) is float and v - v == 0)) and len(k) <= MAX_VALUE_KEY)
    return out[:MAX_VALUES]


class Malformed(ValueError):
    """A report whose structure is not what its schema says: the message names the field."""


def summarize(path: str, doc: Any, summaries: bool = True, cache: Optional[Dict[Any, Any]] = None) -> Record:
    """Keep only what the fleet view needs from a parsed report (or say why it is not a usable report).

    Equal layouts and texts are one object through cache, so that a chunk of results pickles each of
    them once and the parent process holds each once."""
    cache = {} if cache is None else cache
    if not isinstance(doc, dict):
        return Refused(path, f"not a kvmcheck report: the JSON is a {type(doc).__name__}, not an object")
    if doc.get("kind") == FLEET_KIND:
        return Refused(path, "a fleet report, not a host report")
    version = doc.get("schema_version")
    if version is None:
        return Refused(path, "not a kvmcheck report: no schema_version")
    if type(version) is not int or version not in READ_REPORT_VERSIONS:
        return Refused(path, f"schema_version {version if type(version) is int else repr(str(version)[:40])} is not supported (this kvmcheck reads "
                             f"{', '.join(map(str, READ_REPORT_VERSIONS))})")
    try:
        host = doc["host"]
        hostname = host.get("hostname") if isinstance(host, dict) else None
        if hostname is not None and not isinstance(hostname, str):
            raise Malformed("host.hostname is not a string")
        generated_at = doc["generated_at"]
        if not isinstance(generated_at, str):
            raise Malformed("generated_at is not a string")
        try:
            when = parse_time(generated_at)
        except (ValueError, OverflowError):
            raise Malformed(f"generated_at {generated_at[:40]!r} is not an ISO 8601 time") from None
        verdict = doc["verdict"]
        if verdict not in VERDICTS or (verdict == "unknown" and version < 2):
            raise Malformed(f"verdict {str(verdict)[:40]!r} is not one of {', '.join(VERDICTS)}")
        checks = doc["checks"]
        if not isinstance(checks, list):
            raise Malformed("checks is not a list")
        ids, codes, texts, problems = [], [], [], []
        try:
            for c in checks:
                cid, status, summary = c["id"], c["status"], c["summary"]
                code = STATUS_CODE.get(status) if type(status) is str else None
                if type(cid) is not str or code is None or type(summary) is not str:
                    raise Malformed("bad id, status or summary")
                ids.append(cid)
                codes.append(code)
                if code in "wfe":
                    texts.append(cache.setdefault(summary, summary))
                    # The summary with its numbers masked: the key of a report without cause keys
                    # (schema_version 1, or a check that gave none), as the runner derives it.  A summary
                    # without numbers measured nothing: its evidence is not kept.
                    masked = cache.get((summary,))
                    if masked is None:
                        masked = cache[(summary,)] = cause_key(summary) or "(no summary)"
                    key = c.get("cause")
                    key = cache.setdefault(key[:200], key[:200]) if type(key) is str and key else masked
                    values = _values(c.get("evidence")) if masked != summary else ()
                    follows = c.get("caused_by") or ()
                    follows = tuple(f[:200] for f in follows[:8] if type(f) is str) if type(follows) is list else ()
                    problems.append((len(ids) - 1, key, values, cache.setdefault(follows, follows)))
                else:
                    texts.append(cache.setdefault(summary, summary) if summaries else None)
        except (KeyError, TypeError, Malformed) as exc:
            # The slow path, only for a bad report: name the check that broke it.
            i = len(ids)
            c = checks[i]
            what = f"checks[{i}] is not an object" if type(c) is not dict else \
                f"checks[{i}] ({str(c.get('id'))[:60]!r}): " + (
                    f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else "bad id, status or summary")
            raise Malformed(what) from None
    except KeyError as exc:
        return Refused(path, f"malformed report: no {exc.args[0]!r}")
    except (Malformed, TypeError, AttributeError) as exc:
        return Refused(path, f"malformed report: {exc}")
    layout = tuple(ids)
    layout = cache.setdefault(layout, layout)
    return HostRecord(path, hostname or None, generated_at, when, verdict, layout, "".join(codes),
                      tuple(texts), tuple(problems))


def _read_chunk(paths: Sequence[str], summaries: bool = True) -> List[Record]:
    # Parsed reports hold no reference cycles: reference counting frees them, the cyclic GC only costs time.
    enabled = gc.isenabled()
    gc.disable()
    cache: Dict[Any, Any] = {}
    try:
        return [read_report(p, summaries, cache) for p in paths]
    finally:
        if enabled:
            gc.enable()



# --- aggregating ---------------------------------------------------------------------------------------
def _host_name(record: HostRecord) -> str:
    if record.hostname:
        return record.hostname
    name = os.path.basename(record.path)
    return name[:-5] if name.endswith(".json") else name


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")


def aggregate(records: Iterable[Record], max_age: Optional[float] = 24.0, now: Optional[float] = None,
              files: int = 0, ignored: int = 0) -> Dict[str, Any]:
    """Records -> the fleet report (a dict following reports/fleet.schema.json).

    max_age is in hours; None or <= 0 turns the staleness test off.  now defaults to the current time.
    A report dated more than CLOCK_SKEW after now is "future": listed apart, counted, and in duplicate
    resolution any report with a believable time wins over it."""
    from kvmcheck import __version__

    now = datetime.datetime.now(datetime.timezone.utc).timestamp() if now is None else now
    limit = max_age * 3600.0 if max_age is not None and max_age > 0 else None
    horizon = now + CLOCK_SKEW

    unreadable: List[Dict[str, str]] = []
    newest: Dict[str, HostRecord] = {}
    dropped: Dict[str, List[str]] = {}
    for rec in records:
        if type(rec) is Refused:
            unreadable.append({"file": rec.path, "reason": rec.reason})
            continue
        name = _host_name(rec)
        old = newest.get(name)
        if old is None:
            newest[name] = rec
            continue
        # Keep the newest believable report; on a tie the later path, so that the choice does not depend
        # on read order.  A report from the future loses to any other (a forged time must not win forever).
        if (rec.when <= horizon, rec.when, rec.path) > (old.when <= horizon, old.when, old.path):
            newest[name], rec = rec, old
        dropped.setdefault(name, []).append(rec.path)

    kept = [newest[name] for name in sorted(newest)]
    # Hosts per status per check: the status letters of all hosts with one check list, joined into one
    # string; a stride slice is one check's column, counted by str.count in C rather than host by host.
    layouts: Dict[Tuple[str, ...], List[str]] = {}
    for rec in kept:
        layouts.setdefault(rec.layout, []).append(rec.codes)
    checks: Dict[str, Dict[str, Any]] = {}
    for layout, rows in layouts.items():
        joined, width = "".join(rows), len(layout)
        for i, cid in enumerate(layout):
            column = joined[i::width]
            entry = checks.get(cid)
            if entry is None:
                entry = checks[cid] = {"id": cid, "counts": dict.fromkeys(STATUSES, 0),
                                       "hosts": {s: [] for s in HOST_LISTS}}
            counts = entry["counts"]
            for code, status in CODE_STATUS.items():
                counts[status] += column.count(code)
    del layouts

    hosts: List[Dict[str, Any]] = []
    causes: Dict[Tuple[str, str, str], _CauseGroup] = {}  # by (check, status, cause)
    stale: List[Dict[str, Any]] = []
    future: List[Dict[str, Any]] = []
    verdicts = dict.fromkeys(VERDICTS, 0)
    for rec in kept:
        name = _host_name(rec)
        layout, codes, texts = rec.layout, rec.codes, rec.texts
        age = round((now - rec.when) / 3600.0, 2)
        is_future = rec.when > horizon
        is_stale = limit is not None and now - rec.when > limit
        problems: Dict[str, str] = {}
        for index, key, values, follows in rec.problems:
            cid, status = layout[index], CODE_STATUS[codes[index]]
            problems[cid] = status
            if status != "warn":
                checks[cid]["hosts"][status].append(name)
            group = causes.get((cid, status, key))
            if group is None:
                group = causes[(cid, status, key)] = _CauseGroup([], [], [], {})
            group.hosts.append(name)
            group.texts.append(texts[index])
            group.values.append(values)
            group.follows.update(dict.fromkeys(follows))
        verdicts[rec.verdict] += 1
        summary = {status: codes.count(code) for status, code in STATUS_CODE.items()}
        hosts.append({"host": name, "file": rec.path, "generated_at": rec.generated_at, "age_hours": age,
                      "verdict": rec.verdict, "stale": is_stale, "future": is_future, "summary": summary,
                      "problems": problems})
        if is_stale:
            stale.append({"host": name, "file": rec.path, "generated_at": rec.generated_at, "age_hours": age})
        if is_future:
            future.append({"host": name, "file": rec.path, "generated_at": rec.generated_at,
                           "ahead_hours": -age})

    cause_list = []
    for (cid, status, key), (names, texts_seen, values_seen, follows_seen) in causes.items():
        # One summary for the group: the hosts' own text when they all say the same (then there is no
        # measurement to tell them apart, and "measured" is empty); else the masked key, and "measured"
        # keeps each host's own summary and the numbers of its evidence.
        if len(set(texts_seen)) == 1:
            shared, measured = texts_seen[0], []
        else:
            shared = cause_key(texts_seen[0])
            measured = [{"host": host, "summary": text, "values": dict(values)} if values else
                        {"host": host, "summary": text} for host, text, values in zip(names, texts_seen, values_seen)]
        cause_list.append({"check": cid, "status": status, "cause": key, "summary": shared,
                           "count": len(names), "hosts": names, "measured": measured,
                           "follows_from": sorted(follows_seen)})
    # Root causes first (one cause, one finding: what follows from another is listed after it, and says so).
    cause_list.sort(key=lambda c: (bool(c["follows_from"]), severity(c["status"]), -c["count"], c["check"],
                                   c["cause"]))
    unreadable.sort(key=lambda u: u["file"])
    duplicates = [{"host": name, "kept": newest[name].path, "dropped": sorted(paths)}
                  for name, paths in sorted(dropped.items())]
    return {
        "kind": FLEET_KIND,
        "schema_version": FLEET_SCHEMA_VERSION,
        "tool": {"name": "kvmcheck", "version": __version__},
        "generated_at": _iso(now),
        "max_age_hours": max_age if limit is not None else None,
        "clock_skew_seconds": CLOCK_SKEW,
        "totals": {
            "files": files, "hosts": len(hosts), "ready": verdicts["ready"],
            "not_ready": verdicts["not-ready"], "unknown": verdicts["unknown"],
            "stale": len(stale), "future": len(future), "unreadable": len(unreadable),
            "duplicates": sum(len(p) for p in dropped.values()), "ignored": ignored,
        },
        "hosts": hosts,
        "checks": list(checks.values()),
        "causes": cause_list,
        "stale": stale,
        "future": future,
        "unreadable": unreadable,
        "duplicates": duplicates,
    }


def exit_code(fleet: Dict[str, Any]) -> int:
    """1 (ExitStatus.NOT_READY) unless every host is ready on a believable, fresh, readable report."""
    t = fleet["totals"]
    troubled = t["not_ready"] or t.get("unknown") or t["stale"] or t.get("future") or t["unreadable"]
    return int(ExitStatus.NOT_READY if troubled else ExitStatus.READY)


# --- rendering -----------------------------------------------------------------------------------------
_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)


def render_json(fleet: Dict[str, Any]) -> str:
    """One line per top-level field and per list item: readable, diffable, and written by the C encoder
    (json.dumps with indent= falls back to the pure-Python one, several times slower on a big fleet)."""
    out = ["{"]
    items = list(fleet.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, list) and value:
            body = ",\n    ".join(map(_ENCODER.encode, value))
            out.append(f"  {json.dumps(key)}: [\n    {body}\n  ]{comma}")
        else:
            out.append(f"  {json.dumps(key)}: {_ENCODER.encode(value)}{comma}")
    out.append("}")
    return "\n".join(out) + "\n"


CSV_FIELDS = ("host", "file", "generated_at", "verdict", "stale", "check", "status", "summary")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: one starting with =, +, -, @, tab or CR would be read as a
    formula (=HYPERLINK(...) in a hostname), so it gets a leading single quote (OWASP's rule)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def render_csv(fleet: Dict[str, Any], records: Dict[str, Record]) -> str:
    """One row per host x check (a long table: filter and pivot it in a spreadsheet), then one row per
    unreadable file with status "unreadable" and the reason as summary.  Every cell goes through
    csv_cell: all of them come from reports or file names, none can be trusted."""
    import csv
    import io

    buf = io.StringIO()
    # RFC 4180 line ends: the writer quotes a field holding any character of the line terminator, so with
    # "\n" alone a CR in a summary went out unquoted and split the row in every reader.
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    for h in fleet["hosts"]:
        rec = records[h["host"]]
        head = tuple(map(csv_cell, (h["host"], h["file"], h["generated_at"], h["verdict"])))
        head += ("yes" if h["stale"] else "no",)
        writer.writerows(head + (csv_cell(cid), CODE_STATUS[code], csv_cell(text))
                         for cid, code, text in zip(rec.layout, rec.codes, rec.texts))
    for u in fleet["unreadable"]:
        writer.writerow(("", csv_cell(u["file"]), "", "", "", "", "unreadable", csv_cell(u["reason"])))
    return buf.getvalue()


def chart(fleet: Dict[str, Any], width: int = 520, bar: int = 18, gap: int = 6) -> Dict[str, Any]:
    """Geometry of the HTML view's SVG bar chart: hosts with error, fail and warn per check, stacked."""
    rows = [c for c in fleet["checks"] if c["counts"]["error"] + c["counts"]["fail"] + c["counts"]["warn"]]
    rows.sort(key=lambda c: (-(c["counts"]["error"] + c["counts"]["fail"]), -c["counts"]["warn"], c["id"]))
    top = max([sum(c["counts"][s] for s in PROBLEMS) for c in rows] + [1])
    label = 190
    out = []
    for i, c in enumerate(rows):
        x, segs = label, []
        for status in PROBLEMS:
            n = c["counts"][status]
            if n:
                w = max(1.0, round(n * width / top, 1))
                segs.append({"status": status, "x": x, "width": w, "count": n})
                x += w
        out.append({"id": c["id"], "y": i * (bar + gap), "segments": segs, "end": x,
                    "total": sum(c["counts"][s] for s in PROBLEMS)})
    return {"rows": out, "width": label + width + 70, "height": max(1, len(out)) * (bar + gap), "bar": bar,
            "label": label}


def render_template(fleet: Dict[str, Any], fmt: str, color: bool = False) -> str:
    from kvmcheck import reports_dir
    from kvmcheck.core.render import _environment
    from kvmcheck.core.terminal import one_line

    env = _environment(color, reports_dir(), terminal=fmt == "text")  # text: every value sanitized (finalize)
    env.filters["plain"] = one_line  # one line: a hostile hostname's newline or ESC shown escaped, not obeyed
    name = {"text": "fleet.txt.j2", "html": "fleet.html.j2"}[fmt]
    return env.get_template(name).render(fleet=fleet, totals=fleet["totals"], chart=chart(fleet),
                                         limit=TEXT_HOSTS)



def build(paths, max_age=24.0, now=None, summaries=True):
    """The old path: every record in one list, then aggregate, then the kept records by host name."""
    from kvmcheck.tools.fleet import find_reports, Refused as NewRefused

    files, bad, ignored = find_reports(paths)
    records = _read_chunk(files, summaries) + [Refused(r.path, r.reason) for r in bad if type(r) is NewRefused]
    fleet = aggregate(records, max_age, now=now, files=len(files), ignored=ignored)
    names = {h["file"]: h["host"] for h in fleet["hosts"]}
    return fleet, {names[r.path]: r for r in records if type(r) is HostRecord and r.path in names}
