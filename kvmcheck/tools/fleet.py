# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck fleet: aggregate many per-host JSON reports (thousands) into one fleet view.

Reading is the cost: json.loads of a real report (about 28 checks, 25-30 KB with evidence) takes about
0.2 ms, so 10,000 reports are about 2 s of parsing on one CPU.  Large sets are therefore read by a pool of
forked worker processes (one per CPU, at most 8), each of which keeps only what the fleet view needs from a
report (a HostRecord: hostname, generated_at, verdict, (id, status, summary) per check, and per warn, fail
or error result its cause key and measured numbers) and sends that back; whole reports never stay in
memory.  Small sets (fewer than PARALLEL_MIN files) are read in-process.

The inputs are hostile until read: the walk does not follow links to directories and walks a directory
once (by st_dev, st_ino); only regular files are opened, never more than MAX_REPORT_BYTES is read, and
every file that gave no report is listed (unreadable) with the reason, also on stderr.  A report dated in
the future (beyond CLOCK_SKEW) is listed apart and never wins over another report of its host.

The fleet JSON report follows reports/fleet.schema.json (draft 2020-12); ``kvmcheck diff`` compares two of
them.  The text and HTML views are rendered by reports/fleet.txt.j2 and reports/fleet.html.j2 through the
one Jinja environment of kvmcheck.core.render; csv is one row per host x check (stdlib csv).

Progress bar: drawn with rich (already installed: typer depends on it) on stderr, only when stderr is a
terminal, show_progress is true and there are at least PROGRESS_MIN files; rich is imported only then.
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import stat
import sys
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from kvmcheck.core.model import PENDING_KINDS, CRASHES_FIRST, FLEET_SCHEMA_VERSION, READ_REPORT_VERSIONS, SEVERITY, ExitStatus, \
    cause_key, severity

STATUSES = ("pass", "warn", "fail", "skip", "error")
PROBLEMS = tuple(s for s in SEVERITY if s in ("error", "fail", "warn"))  # statuses that name a cause
FLEET_KIND = "kvmcheck-fleet"
HOST_LISTS = tuple(s for s in CRASHES_FIRST if s in ("error", "fail"))  # statuses whose hosts a check names
VERDICTS = ("ready", "not-ready", "unknown")
VERDICT_NAME = {v: v for v in VERDICTS}  # a report's verdict -> the one string object of this module
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
# What a HostRecord keeps, by what the output prints: "texts", every check's summary (csv: one row per host
# and check); "problems", the warn, fail and error results with their cause and summary (the per-host
# problems, the hosts per check and the causes of json, text and html); "values", their measured numbers
# (only json prints them).  Whatever a format does not print is dropped in the worker, never sent.
KEEP_ALL = ("texts", "problems", "values")
# "migration" (kept only when --migration asks): the report's migration block, compact and interned
# (kvmcheck.tools.migration.compact): hosts of one generation share one flag set.
MIGRATION = "migration"
FORMAT_KEEPS = {"csv": ("texts",), "json": ("problems", "values"), "text": ("problems",), "html": ("problems",)}


class Problem(NamedTuple):
    """A warn, fail or error result of one host, as the fleet view keeps it: HostRecord.problems holds these
    fields of all the host's problems one after the other in one flat tuple (a tuple per result costs 80
    bytes more, a NamedTuple per result a tenth of the reading time on a big fleet); problems() reads them."""

    index: int  # position in the report's checks (its layout)
    cause: str  # the check's cause key, else model.cause_key(summary)
    summary: str  # the result's summary
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
    texts: Optional[Tuple[str, ...]]  # every check's summary, only when kept ("texts" in keep: csv), else None
    problems: Tuple[Any, ...]  # the warn, fail and error results, flat: see Problem and problems()
    migration: Any = None  # the compact migration block (tools.migration.MigrationHost), when "migration" is kept
    # The results with a change configured but not yet in effect, flat (index, step) pairs in report order:
    # the fleet counts the hosts waiting for a reboot, a relogin...  Nearly always the one empty tuple.
    waiting: Tuple[Any, ...] = ()


def problems(record: HostRecord) -> Iterator[Tuple[int, str, str, Tuple[Tuple[str, Any], ...], Tuple[str, ...]]]:
    """A record's problems as (index, cause, summary, values, follows) tuples (Problem's fields)."""
    fields = iter(record.problems)
    return zip(fields, fields, fields, fields, fields)


PENDING_STEP = {step: step for step in PENDING_KINDS}  # a report's pending step -> this module's one string


def waiting_by_step(record: HostRecord) -> Dict[str, List[str]]:
    """A record's checks whose change waits for a step, by step (PENDING_KINDS order)."""
    out: Dict[str, List[str]] = {}
    for index, step in zip(record.waiting[::2], record.waiting[1::2]):
        out.setdefault(step, []).append(record.layout[index])
    return {step: out[step] for step in PENDING_KINDS if step in out}


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
    waiting: Dict[str, List[str]]  # step -> the hosts of this group whose change waits for it


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


def read_report(path: str, keep: Sequence[str] = KEEP_ALL, cache: Optional[Dict[Any, Any]] = None) -> Record:
    """One file -> a HostRecord keeping what keep names (see FORMAT_KEEPS); every problem becomes
    Refused(path, reason), never an exception."""
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
    return summarize(path, doc, keep, cache)


STATUS_CODE = {"pass": "p", "warn": "w", "fail": "f", "skip": "s", "error": "e"}
CODE_STATUS = {v: k for k, v in STATUS_CODE.items()}


def _values(evidence: Any, cache: Optional[Dict[Any, Any]] = None) -> Tuple[Tuple[str, Any], ...]:
    """The numbers in a result's evidence (its measurements: rates, sizes, counts), at most MAX_VALUES.
    Strings (paths, device names) are left to the summary, nested data is left out; NaN and infinities
    (json.loads accepts them) would make the fleet report invalid JSON.  type() is exact: bool is no number."""
    if type(evidence) is not dict:
        return ()
    cache = {} if cache is None else cache
    out = tuple((cache.setdefault(k, k), v) for k, v in evidence.items()
                if (type(v) is int or (type(v) is float and v - v == 0)) and len(k) <= MAX_VALUE_KEY)[:MAX_VALUES]
    # Equal measurements are one object per chunk; only whole numbers: 1.0 == 1 and -0.0 == 0.0, but JSON
    # writes them apart.
    return cache.setdefault(out, out) if all(type(v) is int for _, v in out) else out


class Malformed(ValueError):
    """A report whose structure is not what its schema says: the message names the field."""


def summarize(path: str, doc: Any, keep: Sequence[str] = KEEP_ALL, cache: Optional[Dict[Any, Any]] = None) -> Record:
    """Keep only what the fleet view needs from a parsed report, and of that only what keep names (see
    FORMAT_KEEPS), or say why it is not a usable report.

    Equal layouts and texts are one object through cache, so that a chunk of results pickles each of
    them once and the parent process holds each once per chunk."""
    cache = {} if cache is None else cache
    summaries, details, measured = "texts" in keep, "problems" in keep, "values" in keep
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
        ids: List[str] = []
        codes: List[str] = []
        texts: List[str] = []
        problems: List[Any] = []
        waiting: Tuple[Any, ...] = ()
        try:
            for c in checks:
                cid, status, summary = c["id"], c["status"], c["summary"]
                code = STATUS_CODE.get(status) if type(status) is str else None
                if type(cid) is not str or code is None or type(summary) is not str:
                    raise Malformed("bad id, status or summary")
                ids.append(cid)
                codes.append(code)
                step = c.get("pending")
                if step is not None and type(step) is str and step in PENDING_STEP:
                    waiting += (len(ids) - 1, PENDING_STEP[step])
                if summaries:
                    texts.append(cache.setdefault(summary, summary))
                if code in "wfe" and details:
                    summary = cache.setdefault(summary, summary)
                    # The summary with its numbers masked: the key of a report without cause keys
                    # (schema_version 1, or a check that gave none), as the runner derives it.  A summary
                    # without numbers measured nothing: its evidence is not kept.
                    # keyed (None, summary): no tuple of strings (a caused_by, a layout) can equal it
                    masked = cache.get((None, summary))
                    if masked is None:
                        masked = cache[(None, summary)] = cause_key(summary) or "(no summary)"
                    key = c.get("cause")
                    key = cache.setdefault(key[:200], key[:200]) if type(key) is str and key else masked
                    values = _values(c.get("evidence"), cache) if measured and masked != summary else ()
                    follows = c.get("caused_by") or ()
                    follows = tuple(f[:200] for f in follows[:8] if type(f) is str) if type(follows) is list else ()
                    problems += (len(ids) - 1, key, summary, values, cache.setdefault(follows, follows))
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
    migration = None
    if MIGRATION in keep:
        from kvmcheck.tools.migration import compact

        migration = compact(doc.get("migration"), host.get("arch") if isinstance(host, dict) else None, cache)
    return HostRecord(path, hostname or None, generated_at, when, VERDICT_NAME[verdict], layout, "".join(codes),
                      tuple(texts) if summaries else None, tuple(problems), migration, waiting)


def _worker_started() -> None:
    """A worker's signals go back to their default actions: the handlers kvmcheck.core.signals installs are
    inherited, and a signal caught by a Python handler is run only between bytecodes, so a SIGTERM from
    Pool.terminate arriving just before the worker blocked on the task queue's lock was never acted on and
    the pool's join waited for ever.  The kernel's default action has no such window."""
    import signal

    from kvmcheck.core.signals import SIGNALS

    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)


def _read_chunk(paths: Sequence[str], keep: Sequence[str] = KEEP_ALL) -> List[Record]:
    # Parsed reports hold no reference cycles: reference counting frees them, the cyclic GC only costs time.
    enabled = gc.isenabled()
    gc.disable()
    cache: Dict[Any, Any] = {}
    try:
        return [read_report(p, keep, cache) for p in paths]
    finally:
        if enabled:
            gc.enable()


# --- finding files -------------------------------------------------------------------------------------
def find_reports(paths: Iterable[str]) -> Tuple[List[str], List[Record], int]:
    """Arguments -> (report files, Refused records, count of ignored files).

    A file argument is read whatever its name (a symbolic link to a regular file too: the operator named
    it); a directory is searched recursively for *.json files, other files in it are ignored (and
    counted).  The walk never follows a symbolic link to a directory (`ln -s . loop` would count every
    report again, two such links make it exponential): such a link is listed as refused, name its target
    as an argument to include it.  A directory reached twice (a bind mount of itself) is walked once, by
    (st_dev, st_ino).  What is not a regular file (a FIFO would block the read, /dev/zero never ends) or
    is larger than MAX_REPORT_BYTES is refused here, before anything opens it."""
    files: List[str] = []
    bad: List[Record] = []
    ignored = 0
    seen = set()
    for arg in paths:
        try:
            st = os.stat(arg)
        except OSError as exc:
            reason = "no such file or directory" if isinstance(exc, FileNotFoundError) else \
                f"cannot read: {exc.strerror or exc}"
            bad.append(Refused(arg, reason))
            continue
        if not stat.S_ISDIR(st.st_mode):
            reason = refuse_mode(st.st_mode, st.st_size)
            if reason:
                bad.append(Refused(arg, reason))
            else:
                files.append(arg)
            continue
        stack = [(arg, (st.st_dev, st.st_ino))]
        while stack:
            folder, ident = stack.pop()
            if ident in seen:
                continue
            seen.add(ident)
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as exc:
                bad.append(Refused(folder, f"cannot list directory: {exc.strerror or exc}"))
                continue
            subdirs = []
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        subdirs.append((entry.path, (st.st_dev, st.st_ino)))
                        continue
                    link = entry.is_symlink()
                    if link and entry.is_dir():
                        bad.append(Refused(entry.path, "refused: a symbolic link to a directory is not "
                                                       "followed (name its target as an argument)"))
                        continue
                    if not entry.name.endswith(".json") or entry.name.startswith("."):
                        ignored += 1
                        continue
                    # d_type answers for a plain entry; a link (or a file system without d_type) needs a stat.
                    if link or not entry.is_file(follow_symlinks=False):
                        st = entry.stat()
                        reason = refuse_mode(st.st_mode, st.st_size)
                        if reason:
                            bad.append(Refused(entry.path, reason))
                            continue
                except OSError as exc:
                    bad.append(Refused(entry.path, f"cannot read: {exc.strerror or exc}"))
                    continue
                files.append(entry.path)
            stack.extend(reversed(subdirs))
    return files, bad, ignored


def _worker_count(files: int) -> int:
    if files < PARALLEL_MIN:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS, files // (CHUNK // 2)))


def read_chunks(files: Sequence[str], workers: Optional[int] = None,
                advance: Optional[Callable[[int], None]] = None,
                pool_started: Optional[Callable[[], None]] = None,
                keep: Sequence[str] = KEEP_ALL) -> Iterator[List[Record]]:
    """Read every file (in a pool of forked workers when there are many), yielding the records of each
    chunk of CHUNK files as soon as it is read, in whatever order the workers finish; advance(n) after each
    n files.  The caller folds a chunk in and lets it go: the records of all files are never held at once."""
    import functools

    task = functools.partial(_read_chunk, keep=tuple(keep))
    workers = _worker_count(len(files)) if workers is None else workers
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    pool = None
    if workers > 1 and len(chunks) > 1:
        import multiprocessing

        if "fork" in multiprocessing.get_all_start_methods():
            try:
                pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_started)
            except OSError:  # no /dev/shm, process limit: read in-process instead
                pool = None
    if pool_started is not None:
        pool_started()  # the progress bar's refresh thread starts only now, after the fork
    if pool is None:
        for chunk in chunks:
            part = task(chunk)
            if advance:
                advance(len(chunk))
            yield part
        return
    done = False
    try:
        for part in pool.imap_unordered(task, chunks):
            if advance:
                advance(len(part))
            yield part
        pool.close()  # the workers, idle, leave when they read the end of the task queue: no signal needed
        done = True
    finally:
        if not done:
            pool.terminate()
        pool.join()


def read_all(files: Sequence[str], workers: Optional[int] = None,
             advance: Optional[Callable[[int], None]] = None,
             pool_started: Optional[Callable[[], None]] = None, keep: Sequence[str] = KEEP_ALL) -> List[Record]:
    """Every file's record in one list (read_chunks joined: for a few files; a fleet folds chunks instead)."""
    return [rec for part in read_chunks(files, workers, advance, pool_started, keep) for rec in part]


# --- aggregating ---------------------------------------------------------------------------------------
def _host_name(record: HostRecord) -> str:
    if record.hostname:
        return record.hostname
    name = os.path.basename(record.path)
    return name[:-5] if name.endswith(".json") else name


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")


CODES = tuple(STATUS_CODE[s] for s in STATUSES)  # the status letters in STATUSES order
CODE_INDEX = {code: i for i, code in enumerate(CODES)}
COUNT_BATCH = 2048  # status strings of one layout gathered before they are counted into the per-check counts


class Lazy:
    """A list of the fleet report made item by item each time it is iterated, from the kept records: the
    hosts and causes of 100,000 reports are written out one by one, never held as dicts all at once.  len()
    and truth are known beforehand; render_json writes it as it writes a list."""

    def __init__(self, length: int, make: Callable[[], Iterable[Any]]) -> None:
        self.length, self.make = length, make

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Any]:
        return iter(self.make())


class Fleet:
    """The fleet view being folded, one record at a time as it is read (add).

    It holds the newest report of each host as its compact HostRecord (problems only, interned texts, no
    pass or skip summaries unless the csv view asked for them), the files that gave no report, the dropped
    duplicates, and counters folded in as records arrive: verdicts, and the hosts per status of each check
    (the status letters of COUNT_BATCH hosts with one layout are joined into one string, and a stride slice,
    one check's column, is counted by str.count in C rather than host by host).  A report replaced by a
    newer one of its host has its counts taken back.  What must follow host-name order (the hosts, the
    failing hosts of each check, the hosts of each cause, stale and future reports) is made by report()
    from the kept records, in one pass that gathers references, not copies.

    now is fixed when the fleet view starts: a report is "future" when it was generated more than CLOCK_SKEW
    after it, and any report with a believable time wins over a future one, whatever the order of arrival."""

    def __init__(self, max_age: Optional[float] = 24.0, now: Optional[float] = None, migration: bool = False) -> None:
        self.now = datetime.datetime.now(datetime.timezone.utc).timestamp() if now is None else now
        self.max_age = max_age
        self.limit = max_age * 3600.0 if max_age is not None and max_age > 0 else None
        self.horizon = self.now + CLOCK_SKEW
        self.files = 0
        self.ignored = 0
        self.newest: Dict[str, HostRecord] = {}
        self.dropped: Dict[str, List[str]] = {}
        self.unreadable: List[Dict[str, str]] = []
        self.verdicts = dict.fromkeys(VERDICTS, 0)
        self.counts: Dict[str, List[int]] = {}  # check id -> hosts per status, in STATUSES order
        self.pending: Dict[Tuple[str, ...], List[str]] = {}  # layout -> status strings not counted yet
        self.waiting = dict.fromkeys(PENDING_KINDS, 0)  # step -> hosts with a change waiting for it
        # --migration: the report gets the pools section; compact blocks from every chunk interned here
        self.migration = migration
        self.interned: Dict[Any, Any] = {}

    def add(self, rec: Record) -> None:
        """Fold one record in."""
        if type(rec) is Refused:
            self.unreadable.append({"file": rec.path, "reason": rec.reason})
            return
        name = _host_name(rec)
        old = self.newest.get(name)
        if old is not None:
            # Keep the newest believable report; on a tie the later path, so that the choice does not depend
            # on read order.  A report from the future loses to any other (a forged time must not win forever).
            horizon = self.horizon
            if (rec.when <= horizon, rec.when, rec.path) <= (old.when <= horizon, old.when, old.path):
                self.dropped.setdefault(name, []).append(rec.path)
                return
            self._take_back(old)
            self.dropped.setdefault(name, []).append(old.path)
        if rec.migration is not None:  # one object per kind of host across chunks (each worker interned its own)
            rec = rec._replace(migration=self._intern(rec.migration))
        self.newest[name] = rec
        self.verdicts[rec.verdict] += 1
        for step in set(rec.waiting[1::2]):
            self.waiting[step] += 1
        rows = self.pending.get(rec.layout)
        if rows is None:
            rows = self.pending[rec.layout] = []
        rows.append(rec.codes)
        if len(rows) >= COUNT_BATCH:
            self._count(rec.layout, rows)

    def _intern(self, block: Any) -> Any:
        found = self.interned.get(block)
        if found is None:
            intern = self.interned.setdefault
            block = block._replace(flags=intern(block.flags, block.flags), storage=intern(block.storage, block.storage),
                                   machine_types=block.machine_types and intern(block.machine_types, block.machine_types))
            found = self.interned[block] = block
        return found

    def migration_hosts(self) -> List[Any]:
        """Every host's migration data with its name (tools.migration.MigrationHost), in host-name order."""
        from kvmcheck.tools.migration import named

        return named((name, self.newest[name].migration) for name in sorted(self.newest))

    def add_all(self, records: Iterable[Record]) -> "Fleet":
        for rec in records:
            self.add(rec)
        return self

    def _counts(self, cid: str) -> List[int]:
        counts = self.counts.get(cid)
        if counts is None:
            counts = self.counts[cid] = [0] * len(STATUSES)
        return counts

    def _count(self, layout: Tuple[str, ...], rows: List[str]) -> None:
        joined, width = "".join(rows), len(layout)
        rows.clear()
        for i, cid in enumerate(layout):
            column = joined[i::width]
            counts = self._counts(cid)
            for j, code in enumerate(CODES):
                counts[j] += column.count(code)

    def _take_back(self, old: HostRecord) -> None:
        """Undo what add counted of a record a newer report of its host replaces (its letters may still wait
        in pending: they are added when counted, so the sum comes right either way)."""
        self.verdicts[old.verdict] -= 1
        for step in set(old.waiting[1::2]):
            self.waiting[step] -= 1
        for cid, code in zip(old.layout, old.codes):
            self._counts(cid)[CODE_INDEX[code]] -= 1

    def stale(self, rec: HostRecord) -> bool:
        return self.limit is not None and self.now - rec.when > self.limit

    def report(self) -> Dict[str, Any]:
        """The fleet report (a dict following reports/fleet.schema.json), its hosts and causes Lazy: made
        again, one by one, each time they are iterated.  materialize() turns it into plain lists."""
        from kvmcheck import __version__

        for layout, rows in self.pending.items():
            if rows:
                self._count(layout, rows)
        now, horizon, newest = self.now, self.horizon, self.newest
        names = sorted(newest)
        layouts: Dict[Tuple[str, ...], None] = {}
        failing: Dict[str, Dict[str, List[str]]] = {}  # check -> status -> hosts (error and fail)
        causes: Dict[Tuple[str, str, str], _CauseGroup] = {}  # by (check, status, cause)
        stale: List[Dict[str, Any]] = []
        future: List[Dict[str, Any]] = []
        for name in names:
            rec = newest[name]
            layout, codes = rec.layout, rec.codes
            if layout not in layouts:
                layouts[layout] = None
            if self.stale(rec):
                stale.append({"host": name, "file": rec.path, "generated_at": rec.generated_at,
                              "age_hours": round((now - rec.when) / 3600.0, 2)})
            if rec.when > horizon:
                future.append({"host": name, "file": rec.path, "generated_at": rec.generated_at,
                               "ahead_hours": -round((now - rec.when) / 3600.0, 2)})
            for index, key, text, values, follows in problems(rec):
                cid, status = layout[index], CODE_STATUS[codes[index]]
                if status != "warn":
                    failing.setdefault(cid, {}).setdefault(status, []).append(name)
                group = causes.get((cid, status, key))
                if group is None:
                    group = causes[(cid, status, key)] = _CauseGroup([], [], [], {}, {})
                group.hosts.append(name)
                if rec.waiting:
                    steps = dict(zip(rec.waiting[::2], rec.waiting[1::2]))
                    if index in steps:
                        group.waiting.setdefault(steps[index], []).append(name)
                group.texts.append(text)
                group.values.append(values)
                if follows:
                    group.follows.update(dict.fromkeys(follows))

        checks: Dict[str, Dict[str, Any]] = {}
        for layout in layouts:
            for cid in layout:
                if cid not in checks:
                    lists = failing.get(cid, {})
                    checks[cid] = {"id": cid, "counts": dict(zip(STATUSES, self.counts[cid])),
                                   "hosts": {s: lists.get(s, []) for s in HOST_LISTS}}
        # Root causes first (one cause, one finding: what follows from another is listed after it, and says so).
        order = sorted(causes, key=lambda k: (bool(causes[k].follows), severity(k[1]), -len(causes[k].hosts),
                                              k[0], k[2]))

        def make_hosts() -> Iterator[Dict[str, Any]]:
            for name in names:
                rec = newest[name]
                layout, codes = rec.layout, rec.codes
                problem_map: Dict[str, str] = {}
                for index, *_ in problems(rec):
                    problem_map[layout[index]] = CODE_STATUS[codes[index]]
                row = {"host": name, "file": rec.path, "generated_at": rec.generated_at,
                       "age_hours": round((now - rec.when) / 3600.0, 2), "verdict": rec.verdict,
                       "stale": self.stale(rec), "future": rec.when > horizon,
                       "summary": {status: codes.count(code) for status, code in STATUS_CODE.items()},
                       "problems": problem_map}
                if rec.waiting:
                    row["pending"] = waiting_by_step(rec)
                yield row

        def make_causes() -> Iterator[Dict[str, Any]]:
            for cid, status, key in order:
                names_seen, texts_seen, values_seen, follows_seen, waiting_seen = causes[(cid, status, key)]
                cause = _cause(cid, status, key, names_seen, texts_seen, values_seen, follows_seen)
                if waiting_seen:  # how many of its hosts have the fix configured, waiting for a step
                    cause["pending"] = {step: waiting_seen[step] for step in PENDING_KINDS if step in waiting_seen}
                yield cause

        self.unreadable.sort(key=lambda u: u["file"])
        duplicates = [{"host": name, "kept": newest[name].path, "dropped": sorted(paths)}
                      for name, paths in sorted(self.dropped.items())]
        totals = {
            "files": self.files, "hosts": len(names), "ready": self.verdicts["ready"],
            "not_ready": self.verdicts["not-ready"], "unknown": self.verdicts["unknown"],
            "stale": len(stale), "future": len(future), "unreadable": len(self.unreadable),
            "duplicates": sum(len(p) for p in self.dropped.values()), "ignored": self.ignored,
        }
        if any(self.waiting.values()):  # hosts waiting for a reboot, a relogin...: present when there are
            totals["pending"] = {step: n for step, n in self.waiting.items() if n}
        report = {
            "kind": FLEET_KIND,
            "schema_version": FLEET_SCHEMA_VERSION,
            "tool": {"name": "kvmcheck", "version": __version__},
            "generated_at": _iso(now),
            "max_age_hours": self.max_age if self.limit is not None else None,
            "clock_skew_seconds": CLOCK_SKEW,
            "totals": totals,
            "hosts": Lazy(len(names), make_hosts),
            "checks": list(checks.values()),
            "causes": Lazy(len(order), make_causes),
            "stale": stale,
            "future": future,
            "unreadable": self.unreadable,
            "duplicates": duplicates,
        }
        if self.migration:
            from kvmcheck.tools.migration import section

            report["migration"] = section(self.migration_hosts())
        return report


def _cause(cid: str, status: str, key: str, names: List[str], texts: List[str],
           values: List[Tuple[Tuple[str, Any], ...]], follows: Dict[str, None]) -> Dict[str, Any]:
    # One summary for the group: the hosts' own text when they all say the same (then there is no
    # measurement to tell them apart, and "measured" is empty); else the masked key, and "measured"
    # keeps each host's own summary and the numbers of its evidence.
    first = texts[0]
    if all(t == first for t in texts):
        shared, measured = first, []
    else:
        shared = cause_key(first)
        measured = [{"host": host, "summary": text, "values": dict(vals)} if vals else
                    {"host": host, "summary": text} for host, text, vals in zip(names, texts, values)]
    return {"check": cid, "status": status, "cause": key, "summary": shared, "count": len(names), "hosts": names,
            "measured": measured, "follows_from": sorted(follows)}


def materialize(fleet: Dict[str, Any]) -> Dict[str, Any]:
    """The fleet report with its Lazy lists made into lists (what the API and the tests look into)."""
    return {key: list(value) if type(value) is Lazy else value for key, value in fleet.items()}


def aggregate(records: Iterable[Record], max_age: Optional[float] = 24.0, now: Optional[float] = None,
              files: int = 0, ignored: int = 0) -> Dict[str, Any]:
    """Records -> the fleet report (a dict following reports/fleet.schema.json, every list a list).

    max_age is in hours; None or <= 0 turns the staleness test off.  now defaults to the current time.
    A report dated more than CLOCK_SKEW after now is "future": listed apart, counted, and in duplicate
    resolution any report with a believable time wins over it."""
    view = Fleet(max_age, now).add_all(records)
    view.files, view.ignored = files, ignored
    return materialize(view.report())


def exit_code(fleet: Dict[str, Any]) -> int:
    """1 (ExitStatus.NOT_READY) unless every host is ready on a believable, fresh, readable report."""
    t = fleet["totals"]
    troubled = t["not_ready"] or t.get("unknown") or t["stale"] or t.get("future") or t["unreadable"]
    return int(ExitStatus.NOT_READY if troubled else ExitStatus.READY)


# --- rendering -----------------------------------------------------------------------------------------
_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)
WRITE_BATCH = 512  # hosts rendered into one piece of csv output
PIECE = 2**20  # characters of output gathered into one piece before it is written (a single item may be longer)


def json_pieces(fleet: Dict[str, Any]) -> Iterator[str]:
    """render_json's text in pieces of about PIECE characters, made as they are written."""
    encode = _ENCODER.encode
    yield "{\n"
    items = list(fleet.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, (list, Lazy)) and value:
            yield f"  {json.dumps(key)}: [\n    "
            batch: List[str] = []
            size, first = 0, True
            for item in value:
                batch.append(encode(item))
                size += len(batch[-1])
                if size >= PIECE:
                    yield ("" if first else ",\n    ") + ",\n    ".join(batch)
                    size, first, batch = 0, False, []
            if batch:
                yield ("" if first else ",\n    ") + ",\n    ".join(batch)
            yield f"\n  ]{comma}\n"
        else:
            yield f"  {json.dumps(key)}: {encode(list(value) if type(value) is Lazy else value)}{comma}\n"
    yield "}\n"


def render_json(fleet: Dict[str, Any]) -> str:
    """One line per top-level field and per list item: readable, diffable, and written by the C encoder
    (json.dumps with indent= falls back to the pure-Python one, several times slower on a big fleet)."""
    return "".join(json_pieces(fleet))


CSV_FIELDS = ("host", "file", "generated_at", "verdict", "stale", "check", "status", "summary")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: one starting with =, +, -, @, tab or CR would be read as a
    formula (=HYPERLINK(...) in a hostname), so it gets a leading single quote (OWASP's rule)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_pieces(hosts: Iterable[Tuple[str, str, str, str, bool, HostRecord]],
               unreadable: Iterable[Dict[str, str]]) -> Iterator[str]:
    """render_csv's text in pieces of WRITE_BATCH hosts; hosts gives (host, file, generated_at, verdict,
    stale, record) in host order."""
    import csv
    import io

    buf = io.StringIO()
    # RFC 4180 line ends: the writer quotes a field holding any character of the line terminator, so with
    # "\n" alone a CR in a summary went out unquoted and split the row in every reader.
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    for n, (host, file, generated_at, verdict, stale, rec) in enumerate(hosts, 1):
        head = tuple(map(csv_cell, (host, file, generated_at, verdict)))
        head += ("yes" if stale else "no",)
        writer.writerows(head + (csv_cell(cid), CODE_STATUS[code], csv_cell(text))
                         for cid, code, text in zip(rec.layout, rec.codes, rec.texts))
        if n % WRITE_BATCH == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    for u in unreadable:
        writer.writerow(("", csv_cell(u["file"]), "", "", "", "", "unreadable", csv_cell(u["reason"])))
    yield buf.getvalue()


def render_csv(fleet: Dict[str, Any], records: Dict[str, Record]) -> str:
    """One row per host x check (a long table: filter and pivot it in a spreadsheet), then one row per
    unreadable file with status "unreadable" and the reason as summary.  Every cell goes through
    csv_cell: all of them come from reports or file names, none can be trusted.  The records must keep
    "texts" (every summary)."""
    hosts = ((h["host"], h["file"], h["generated_at"], h["verdict"], h["stale"], records[h["host"]])
             for h in fleet["hosts"])
    return "".join(csv_pieces(hosts, fleet["unreadable"]))


def fleet_csv_pieces(view: Fleet, fleet: Dict[str, Any]) -> Iterator[str]:
    """The csv view of a folded fleet, straight from its records (its report's hosts are not made)."""
    hosts = ((name, rec.path, rec.generated_at, rec.verdict, view.stale(rec), rec)
             for name, rec in ((name, view.newest[name]) for name in sorted(view.newest)))
    return csv_pieces(hosts, fleet["unreadable"])


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
    return "".join(template_pieces(fleet, fmt, color))


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


def report_refused(unreadable: Sequence[Dict[str, str]], stream: Any = None) -> None:
    """Name the files that gave no report on stderr (the first STDERR_REFUSED; all are in the report)."""
    from kvmcheck.core.terminal import one_line

    stream = sys.stderr if stream is None else stream
    for u in unreadable[:STDERR_REFUSED]:
        stream.write(f"kvmcheck fleet: skipped {one_line(u['file'])}: {one_line(u['reason'])}\n")
    if len(unreadable) > STDERR_REFUSED:
        stream.write(f"kvmcheck fleet: ... and {len(unreadable) - STDERR_REFUSED} more files that gave no "
                     "report (see the unreadable list)\n")


# --- the command ---------------------------------------------------------------------------------------
def collect(paths: Sequence[str], max_age: Optional[float] = 24.0, show_progress: bool = False,
            workers: Optional[int] = None, now: Optional[float] = None,
            keep: Sequence[str] = KEEP_ALL) -> Fleet:
    """Find and read, folding each chunk of records into the fleet view as it arrives -> the Fleet.
    The caller disables the cyclic GC (build and fleet_command do): see build."""
    files, bad, ignored = find_reports(paths)
    view = Fleet(max_age, now, migration=MIGRATION in keep)
    view.files, view.ignored = len(files), ignored
    bar = progress_bar(len(files), show_progress)
    try:
        for part in read_chunks(files, workers, advance=bar.advance, pool_started=bar.start, keep=keep):
            view.add_all(part)
    finally:
        bar.stop()
    view.add_all(bad)
    return view


class _NoGC:
    """Many small containers and no cycles: the cyclic GC would only rescan them again and again."""

    def __enter__(self) -> None:
        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            gc.enable()


def build(paths: Sequence[str], max_age: Optional[float] = 24.0, show_progress: bool = False,
          workers: Optional[int] = None, now: Optional[float] = None,
          keep: Sequence[str] = KEEP_ALL) -> Tuple[Dict[str, Any], Dict[str, Record]]:
    """Find, read and aggregate: -> (fleet report with every list made, the kept record per host name).
    For the API and the tests; fleet_command writes a big fleet out as it makes it instead."""
    with _NoGC():
        view = collect(paths, max_age, show_progress, workers, now, keep)
        return materialize(view.report()), view.newest


def template_pieces(fleet: Dict[str, Any], fmt: str, color: bool = False,
                    pools_picture: Optional[Dict[str, Any]] = None) -> Iterator[str]:
    """render_template's text in pieces, as Jinja makes it (Template.generate); pools_picture: the geometry of
    the HTML view's migration pools (tools.migration.picture), with --migration."""
    from kvmcheck import reports_dir
    from kvmcheck.core.render import _environment
    from kvmcheck.core.terminal import one_line

    env = _environment(color, reports_dir(), terminal=fmt == "text")  # text: every value sanitized (finalize)
    env.filters["plain"] = one_line  # one line: a hostile hostname's newline or ESC shown escaped, not obeyed
    name = {"text": "fleet.txt.j2", "html": "fleet.html.j2"}[fmt]
    pieces = env.get_template(name).generate(fleet=fleet, totals=fleet["totals"], chart=chart(fleet),
                                             limit=TEXT_HOSTS, pools=pools_picture)
    batch: List[str] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= PIECE:
            yield "".join(batch)
            size, batch = 0, []
    yield "".join(batch)


def fleet_command(paths: Sequence[str], fmt: str = "text", output: Optional[str] = None,
                  max_age: Optional[float] = 24.0, show_progress: bool = True,
                  workers: Optional[int] = None, now: Optional[float] = None, migration: bool = False,
                  explain: Optional[Sequence[str]] = None) -> int:
    """Aggregate JSON reports into a fleet view in fmt (text, json, csv, html), on stdout or into output;
    now (Unix seconds, default the current time) is what report ages are measured from.

    Streamed: each report is folded in as it is read (Fleet), and the output is written piece by piece as
    it is made (the hosts and causes of the report are never all held as dicts, nor the text as a whole);
    only what fmt prints is kept of each report (FORMAT_KEEPS).

    Exit status (model.ExitStatus):
      0  every host is ready, and no report is stale, from the future or unreadable;
      1  a host is not ready or unknown (no evidence for a verdict), or a report is stale (older than
         max_age hours), dated in the future (beyond CLOCK_SKEW) or unreadable: a fleet view built on
         old, forged or missing data is not all-clear, so a cron job alerts on it;
      2  nothing to aggregate (no report found), an unknown format, or the output cannot be written.
    Duplicates (two reports of one host) are not an error: the newest is kept and the others are listed.

    migration: add the live-migration pools (kvmcheck.tools.migration) to the report: its "migration"
    section in json, a section of text and html (with a picture).  explain (two host names, implies
    migration): instead of the fleet view, whether a guest can move from the first host to the second, in
    text or json; exit 0 when it can in both CPU modes, 1 when it cannot in one, 2 for a host not found.
    """
    if fmt not in ("text", "json", "csv", "html"):
        sys.stderr.write(f"kvmcheck fleet: unknown format {fmt!r} (text, json, csv, html)\n")
        return int(ExitStatus.USAGE)
    migration = migration or bool(explain)
    if explain and fmt not in ("text", "json"):
        sys.stderr.write(f"kvmcheck fleet: --explain answers in text or json, not {fmt}\n")
        return int(ExitStatus.USAGE)
    with _NoGC():
        keep = FORMAT_KEEPS[fmt] + ((MIGRATION,) if migration else ())
        view = collect(paths, max_age, show_progress=show_progress, workers=workers, now=now, keep=keep)
        fleet = view.report()
        if not fleet["totals"]["files"] and not fleet["unreadable"]:
            sys.stderr.write("kvmcheck fleet: no JSON report found in " + ", ".join(paths) + "\n")
            return int(ExitStatus.USAGE)
        report_refused(fleet["unreadable"])
        status = None
        if explain:
            from kvmcheck.tools.migration import explain_fleet

            status, pieces = explain_fleet(view.migration_hosts(), explain[0], explain[1], fmt)
        elif fmt == "json":
            pieces = json_pieces(fleet)
        elif fmt == "csv":
            pieces = fleet_csv_pieces(view, fleet)
        else:
            color = (fmt == "text" and output is None and "NO_COLOR" not in os.environ and sys.stdout.isatty()
                     and os.environ.get("TERM") != "dumb")
            picture = None
            if migration and fmt == "html":
                from kvmcheck.tools.migration import picture as pools_picture

                picture = pools_picture(view.migration_hosts(), fleet["migration"])
            pieces = template_pieces(fleet, fmt, color, picture)
        if output is None:
            for piece in pieces:
                sys.stdout.write(piece)
            sys.stdout.flush()
        else:
            from kvmcheck.core.output import atomic_writer

            try:
                with atomic_writer(output) as fh:  # atomic and link-safe, like every file kvmcheck writes
                    for piece in pieces:
                        fh.write(piece.encode("utf-8"))
            except OSError as exc:
                sys.stderr.write(f"kvmcheck fleet: cannot write {output}: {exc.strerror or exc}\n")
                return int(ExitStatus.USAGE)
        return exit_code(fleet) if status is None else status
