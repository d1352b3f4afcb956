# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck fleet: aggregate many per-host JSON reports (thousands) into one fleet view.

Reading is the cost: json.loads of a real report (about 28 checks, 25-30 KB with evidence) takes about
0.2 ms, so 10,000 reports are about 2 s of parsing on one CPU.  Large sets are therefore read by a pool of
forked worker processes (one per CPU, at most 8), each of which keeps only what the fleet view needs from a
report (hostname, generated_at, verdict, and (id, status, summary) per check) and sends that back; whole
reports never stay in memory.  Small sets (fewer than PARALLEL_MIN files) are read in-process.

The fleet JSON report follows reports/fleet.schema.json (draft 2020-12); ``kvmcheck diff`` compares two of
them.  The text and HTML views are rendered by reports/fleet.txt.j2 and reports/fleet.html.j2 through the
one Jinja environment of kvmcheck.render; csv is one row per host x check (stdlib csv).

Progress bar: drawn with rich (already installed: typer depends on it) on stderr, only when stderr is a
terminal, show_progress is true and there are at least PROGRESS_MIN files; rich is imported only then.
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

STATUSES = ("pass", "warn", "fail", "skip", "error")
PROBLEMS = ("error", "fail", "warn")  # statuses that name a cause, most severe first
SEVERITY = {"error": 0, "fail": 1, "warn": 2}
FLEET_KIND = "kvmcheck-fleet"
FLEET_SCHEMA_VERSION = 1
REPORT_SCHEMA_VERSION = 1
PARALLEL_MIN = 256  # fewer files than this: read in-process (forking costs more than it saves)
PROGRESS_MIN = 200  # fewer files than this: no progress bar (it would only flicker)
CHUNK = 128  # files per task sent to a worker
MAX_WORKERS = 8
TEXT_HOSTS = 6  # host names listed per line in the text view before "(+N more)"

EXIT_OK, EXIT_NOT_OK, EXIT_USAGE = 0, 1, 2

# A read report: ("ok", path, hostname or None, generated_at, unix time, verdict, ((id, status, summary), ...))
# or ("bad", path, reason).
Record = Tuple[Any, ...]


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


def read_report(path: str, summaries: bool = True, cache: Optional[Dict[Any, Any]] = None) -> Record:
    """One file -> a compact record; every problem becomes ("bad", path, reason), never an exception.

    summaries=False keeps the summary text of warn, fail and error results only (all the text, json and
    html views need); the csv view needs all of them."""
    try:
        data = _read_bytes(path)
    except OSError as exc:
        return ("bad", path, f"cannot read: {exc.strerror or exc}")
    if not data.strip():
        return ("bad", path, "empty file")
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        return ("bad", path, _json_error(data, exc))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return ("bad", path, f"not JSON: {type(exc).__name__}")
    return summarize(path, doc, summaries, cache)


def _read_bytes(path: str) -> bytes:
    """The whole file, through os.open/os.read: no buffered file object per report."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        parts = [os.read(fd, size + 1 if size > 0 else 65536)]
        while parts[-1]:
            parts.append(os.read(fd, 65536))
        return b"".join(parts)
    finally:
        os.close(fd)


STATUS_CODE = {"pass": "p", "warn": "w", "fail": "f", "skip": "s", "error": "e"}
CODE_STATUS = {v: k for k, v in STATUS_CODE.items()}


def summarize(path: str, doc: Any, summaries: bool = True, cache: Optional[Dict[Any, Any]] = None) -> Record:
    """Keep only what the fleet view needs from a parsed report (or say why it is not a usable report).

    -> ("ok", path, hostname or None, generated_at, Unix time, verdict, ids, statuses, summaries): ids is
    a tuple of check ids, statuses a string of one letter per check (STATUS_CODE), summaries a tuple
    (None where not kept).  Equal ids tuples and texts are one object through cache, so that a chunk of
    results pickles each of them once and the parent process holds each once."""
    cache = {} if cache is None else cache
    if not isinstance(doc, dict):
        return ("bad", path, f"not a kvmcheck report: the JSON is a {type(doc).__name__}, not an object")
    if doc.get("kind") == FLEET_KIND:
        return ("bad", path, "a fleet report, not a host report")
    version = doc.get("schema_version")
    if version is None:
        return ("bad", path, "not a kvmcheck report: no schema_version")
    if type(version) is not int or version != REPORT_SCHEMA_VERSION:
        return ("bad", path, f"schema_version {version!r} is not supported (this kvmcheck reads "
                             f"{REPORT_SCHEMA_VERSION})")
    try:
        host = doc["host"]
        hostname = host.get("hostname") if isinstance(host, dict) else None
        if hostname is not None and not isinstance(hostname, str):
            raise TypeError("host.hostname is not a string")
        generated_at = doc["generated_at"]
        if not isinstance(generated_at, str):
            raise TypeError("generated_at is not a string")
        try:
            when = parse_time(generated_at)
        except ValueError:
            raise ValueError(f"generated_at {generated_at[:40]!r} is not an ISO 8601 time") from None
        verdict = doc["verdict"]
        if verdict not in ("ready", "not-ready"):
            raise ValueError(f"verdict {verdict!r} is neither ready nor not-ready")
        ids, codes, texts = [], [], []
        for c in doc["checks"]:
            cid, status, summary = c["id"], c["status"], c["summary"]
            code = STATUS_CODE.get(status) if isinstance(status, str) else None
            if not isinstance(cid, str) or code is None or not isinstance(summary, str):
                raise ValueError(f"check {str(cid)[:60]!r}: bad id, status or summary")
            ids.append(cid)
            codes.append(code)
            if summaries or code in "wfe":
                texts.append(cache.setdefault(summary, summary))
            else:
                texts.append(None)
    except KeyError as exc:
        return ("bad", path, f"malformed report: no {exc.args[0]!r}")
    except (TypeError, ValueError, AttributeError) as exc:
        return ("bad", path, f"malformed report: {exc}")
    layout = tuple(ids)
    layout = cache.setdefault(layout, layout)
    return ("ok", path, hostname or None, generated_at, when, verdict, layout, "".join(codes), tuple(texts))


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


# --- finding files -------------------------------------------------------------------------------------
def find_reports(paths: Iterable[str]) -> Tuple[List[str], List[Record], int]:
    """Arguments -> (report files, records for arguments that cannot be read, count of ignored files).

    A file argument is read whatever its name; a directory is searched recursively for *.json files
    (os.scandir), other files in it are ignored (and counted)."""
    files: List[str] = []
    bad: List[Record] = []
    ignored = 0
    for arg in paths:
        if os.path.isdir(arg):
            stack = [arg]
            while stack:
                folder = stack.pop()
                try:
                    entries = sorted(os.scandir(folder), key=lambda e: e.name)
                except OSError as exc:
                    bad.append(("bad", folder, f"cannot list directory: {exc.strerror or exc}"))
                    continue
                subdirs = []
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    if is_dir:
                        subdirs.append(entry.path)
                    elif entry.name.endswith(".json") and not entry.name.startswith("."):
                        files.append(entry.path)
                    else:
                        ignored += 1
                stack.extend(reversed(subdirs))
        elif os.path.exists(arg):
            files.append(arg)
        else:
            bad.append(("bad", arg, "no such file or directory"))
    return files, bad, ignored


def _worker_count(files: int) -> int:
    if files < PARALLEL_MIN:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS, files // (CHUNK // 2)))


def read_all(files: Sequence[str], workers: Optional[int] = None,
             advance: Optional[Callable[[int], None]] = None,
             pool_started: Optional[Callable[[], None]] = None, summaries: bool = True) -> List[Record]:
    """Read every file (in a pool of forked workers when there are many); advance(n) after each n files."""
    import functools

    task = functools.partial(_read_chunk, summaries=summaries)
    workers = _worker_count(len(files)) if workers is None else workers
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    records: List[Record] = []
    pool = None
    if workers > 1 and len(chunks) > 1:
        import multiprocessing

        if "fork" in multiprocessing.get_all_start_methods():
            try:
                pool = multiprocessing.get_context("fork").Pool(workers)
            except OSError:  # no /dev/shm, process limit: read in-process instead
                pool = None
    if pool_started is not None:
        pool_started()  # the progress bar's refresh thread starts only now, after the fork
    if pool is None:
        for chunk in chunks:
            records.extend(task(chunk))
            if advance:
                advance(len(chunk))
        return records
    try:
        for part in pool.imap_unordered(task, chunks):
            records.extend(part)
            if advance:
                advance(len(part))
    finally:
        pool.terminate()
        pool.join()
    return records


# --- aggregating ---------------------------------------------------------------------------------------
def _host_name(record: Record) -> str:
    if record[2]:
        return record[2]
    name = os.path.basename(record[1])
    return name[:-5] if name.endswith(".json") else name


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")


def aggregate(records: Iterable[Record], max_age: Optional[float] = 24.0, now: Optional[float] = None,
              files: int = 0, ignored: int = 0) -> Dict[str, Any]:
    """Records -> the fleet report (a dict following reports/fleet.schema.json).

    max_age is in hours; None or <= 0 turns the staleness test off.  now defaults to the current time."""
    from . import __version__

    now = datetime.datetime.now(datetime.timezone.utc).timestamp() if now is None else now
    limit = max_age * 3600.0 if max_age is not None and max_age > 0 else None

    unreadable: List[Dict[str, str]] = []
    newest: Dict[str, Record] = {}
    dropped: Dict[str, List[str]] = {}
    for rec in records:
        if rec[0] != "ok":
            unreadable.append({"file": rec[1], "reason": rec[2]})
            continue
        name = _host_name(rec)
        old = newest.get(name)
        if old is None:
            newest[name] = rec
            continue
        # Keep the newest report; on a tie the later path, so that the choice does not depend on read order.
        if (rec[4], rec[1]) > (old[4], old[1]):
            newest[name], rec = rec, old
        dropped.setdefault(name, []).append(rec[1])

    kept = [newest[name] for name in sorted(newest)]
    # Hosts per status per check: the status letters of all hosts with one check list, joined into one
    # string; a stride slice is one check's column, counted by str.count in C rather than host by host.
    layouts: Dict[Tuple[str, ...], List[str]] = {}
    for rec in kept:
        layouts.setdefault(rec[6], []).append(rec[7])
    checks: Dict[str, Dict[str, Any]] = {}
    for layout, rows in layouts.items():
        joined, width = "".join(rows), len(layout)
        for i, cid in enumerate(layout):
            column = joined[i::width]
            entry = checks.get(cid)
            if entry is None:
                entry = checks[cid] = {"id": cid, "counts": dict.fromkeys(STATUSES, 0),
                                       "hosts": {"error": [], "fail": []}}
            counts = entry["counts"]
            for code, status in CODE_STATUS.items():
                counts[status] += column.count(code)
    del layouts

    hosts: List[Dict[str, Any]] = []
    causes: Dict[Tuple[str, str, str], List[str]] = {}
    stale: List[Dict[str, Any]] = []
    ready = 0
    for rec in kept:
        _, path, _, generated_at, when, verdict, layout, codes, texts = rec
        name = _host_name(rec)
        age = round((now - when) / 3600.0, 2)
        is_stale = limit is not None and now - when > limit
        problems: Dict[str, str] = {}
        for i, code in enumerate(codes):
            if code in "wfe":
                cid, status = layout[i], CODE_STATUS[code]
                problems[cid] = status
                if code != "w":
                    checks[cid]["hosts"][status].append(name)
                key = (cid, status, texts[i])
                group = causes.get(key)
                if group is None:
                    causes[key] = [name]
                else:
                    group.append(name)
        ready += verdict == "ready"
        summary = {status: codes.count(code) for status, code in STATUS_CODE.items()}
        hosts.append({"host": name, "file": path, "generated_at": generated_at, "age_hours": age,
                      "verdict": verdict, "stale": is_stale, "summary": summary, "problems": problems})
        if is_stale:
            stale.append({"host": name, "file": path, "generated_at": generated_at, "age_hours": age})

    cause_list = [{"check": cid, "status": status, "summary": summary, "count": len(names), "hosts": names}
                  for (cid, status, summary), names in causes.items()]
    cause_list.sort(key=lambda c: (SEVERITY[c["status"]], -c["count"], c["check"], c["summary"]))
    unreadable.sort(key=lambda u: u["file"])
    duplicates = [{"host": name, "kept": newest[name][1], "dropped": sorted(paths)}
                  for name, paths in sorted(dropped.items())]
    return {
        "kind": FLEET_KIND,
        "schema_version": FLEET_SCHEMA_VERSION,
        "tool": {"name": "kvmcheck", "version": __version__},
        "generated_at": _iso(now),
        "max_age_hours": max_age if limit is not None else None,
        "totals": {
            "files": files, "hosts": len(hosts), "ready": ready, "not_ready": len(hosts) - ready,
            "stale": len(stale), "unreadable": len(unreadable),
            "duplicates": sum(len(p) for p in dropped.values()), "ignored": ignored,
        },
        "hosts": hosts,
        "checks": list(checks.values()),
        "causes": cause_list,
        "stale": stale,
        "unreadable": unreadable,
        "duplicates": duplicates,
    }


def exit_code(fleet: Dict[str, Any]) -> int:
    t = fleet["totals"]
    return EXIT_NOT_OK if t["not_ready"] or t["stale"] or t["unreadable"] else EXIT_OK


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


def render_csv(fleet: Dict[str, Any], records: Dict[str, Record]) -> str:
    """One row per host x check (a long table: filter and pivot it in a spreadsheet), then one row per
    unreadable file with status "unreadable" and the reason as summary."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for h in fleet["hosts"]:
        rec = records[h["host"]]
        head = (h["host"], h["file"], h["generated_at"], h["verdict"], "yes" if h["stale"] else "no")
        writer.writerows(head + (cid, CODE_STATUS[code], text) for cid, code, text in zip(rec[6], rec[7], rec[8]))
    for u in fleet["unreadable"]:
        writer.writerow(("", u["file"], "", "", "", "", "unreadable", u["reason"]))
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
    from . import reports_dir
    from .render import _environment

    env = _environment(color, reports_dir(), terminal=fmt == "text")  # text: every value sanitized (finalize)
    env.filters["plain"] = plain
    name = {"text": "fleet.txt.j2", "html": "fleet.html.j2"}[fmt]
    return env.get_template(name).render(fleet=fleet, totals=fleet["totals"], chart=chart(fleet),
                                         limit=TEXT_HOSTS)


def plain(value: Any) -> str:
    """A one-line field for a terminal: control characters (an ESC in a hostile hostname) shown as \\xNN, not
    obeyed, through the one sanitizer (kvmcheck.terminal)."""
    from .terminal import one_line

    return one_line(value)


# --- progress ------------------------------------------------------------------------------------------
class _NoProgress:
    def start(self) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def stop(self) -> None:
        pass


class _RichProgress:
    """rich's bar on stderr; transient, so the finished bar leaves no trace above the output."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("reading reports"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True)
        self.task = self.progress.add_task("read", total=total)

    def start(self) -> None:
        self.progress.start()

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def stop(self) -> None:
        self.progress.stop()


def progress_bar(total: int, show: bool, stream: Any = None) -> Any:
    """A bar only when asked, when the stream (stderr) is a terminal, and when there are many files."""
    stream = sys.stderr if stream is None else stream
    if not show or total < PROGRESS_MIN:
        return _NoProgress()
    try:
        if not stream.isatty():
            return _NoProgress()
    except (AttributeError, ValueError):
        return _NoProgress()
    try:
        return _RichProgress(total)
    except ImportError:  # rich comes with typer; without it, no bar rather than no fleet view
        return _NoProgress()


# --- the command ---------------------------------------------------------------------------------------
def build(paths: Sequence[str], max_age: Optional[float] = 24.0, show_progress: bool = False,
          workers: Optional[int] = None, now: Optional[float] = None,
          summaries: bool = True) -> Tuple[Dict[str, Any], Dict[str, Record]]:
    """Find, read and aggregate: -> (fleet report, the kept record per host name).

    summaries=False drops the summaries of pass and skip results while reading (the csv view needs them)."""
    files, bad, ignored = find_reports(paths)
    bar = progress_bar(len(files), show_progress)
    enabled = gc.isenabled()
    gc.disable()  # many small containers and no cycles: the cyclic GC would only rescan them again and again
    try:
        try:
            records = read_all(files, workers, advance=bar.advance, pool_started=bar.start,
                               summaries=summaries)
        finally:
            bar.stop()
        records.extend(bad)
        fleet = aggregate(records, max_age, now=now, files=len(files), ignored=ignored)
        names = {h["file"]: h["host"] for h in fleet["hosts"]}
        kept = {names[r[1]]: r for r in records if r[0] == "ok" and r[1] in names}
    finally:
        if enabled:
            gc.enable()
    return fleet, kept


def fleet_command(paths: Sequence[str], fmt: str = "text", output: Optional[str] = None,
                  max_age: Optional[float] = 24.0, show_progress: bool = True,
                  workers: Optional[int] = None) -> int:
    """Aggregate JSON reports into a fleet view in fmt (text, json, csv, html), on stdout or into output.

    Exit status:
      0  every host is ready, and no report is stale or unreadable;
      1  a host is not ready, or a report is stale (older than max_age hours) or unreadable: a fleet view
         built on old or missing data is not all-clear, so a cron job alerts on it;
      2  nothing to aggregate (no report found), an unknown format, or the output cannot be written.
    Duplicates (two reports of one host) are not an error: the newest is kept and the others are listed.
    """
    if fmt not in ("text", "json", "csv", "html"):
        sys.stderr.write(f"kvmcheck fleet: unknown format {fmt!r} (text, json, csv, html)\n")
        return EXIT_USAGE
    fleet, kept = build(paths, max_age, show_progress=show_progress, workers=workers, summaries=fmt == "csv")
    if not fleet["totals"]["files"] and not fleet["unreadable"]:
        sys.stderr.write("kvmcheck fleet: no JSON report found in " + ", ".join(paths) + "\n")
        return EXIT_USAGE
    if fmt == "json":
        text = render_json(fleet)
    elif fmt == "csv":
        text = render_csv(fleet, kept)
    else:
        color = (fmt == "text" and output is None and "NO_COLOR" not in os.environ and sys.stdout.isatty()
                 and os.environ.get("TERM") != "dumb")
        text = render_template(fleet, fmt, color)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from .output import write_text

        try:
            write_text(output, text)  # atomic and link-safe, like every file kvmcheck writes
        except OSError as exc:
            sys.stderr.write(f"kvmcheck fleet: cannot write {output}: {exc.strerror or exc}\n")
            return EXIT_USAGE
    return exit_code(fleet)
