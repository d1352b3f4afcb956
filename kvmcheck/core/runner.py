# SPDX-License-Identifier: GPL-2.0-or-later
"""Run checks: in a worker thread, a time limit each, a crash becomes an ``error`` result.

A check blocked in the kernel (a read on a hung NFS mount, a KVM_RUN that never
returns) cannot be interrupted from Python, so the runner stops waiting for it
instead: the worker is a daemon thread, left behind when its time is up, and the
run goes on with a new one.  One worker serves every check until then (a thread
per check cost about half a millisecond each, 15 ms a run under a profiler).
"""
from __future__ import annotations

import dataclasses
import datetime
import errno
import fnmatch
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from kvmcheck import __version__
from kvmcheck.facts.context import Context, Settings
from kvmcheck.core.host import Host, OfflineError
from kvmcheck.core.model import DEFAULT_ESSENTIAL, PROBLEMS, Check, Outcome, Report, Result, Status, cause_key
from kvmcheck.core.registry import LoadError, load_checks


class SelectionError(ValueError):
    """--only/--skip patterns that match no check (a typo must not yield an empty report)."""


def select(checks: Sequence[Check], only: Optional[Iterable[str]] = None, skip: Optional[Iterable[str]] = None) -> List[Check]:
    only, skip = list(only or ()), list(skip or ())
    for pattern in only + skip:
        if not any(fnmatch.fnmatchcase(c.id, pattern) for c in checks):
            raise SelectionError(f"no check id matches {pattern!r} (see 'kvmcheck list')")
    chosen = [c for c in checks if not only or any(fnmatch.fnmatchcase(c.id, p) for p in only)]
    return [c for c in chosen if not any(fnmatch.fnmatchcase(c.id, p) for p in skip)]


class Worker:
    """A daemon thread that runs calls one after another, each within a time limit.

    A call that outlives its limit leaves the thread behind, still blocked: call() then returns
    ("timeout", None) and the next call starts a new thread.  Nothing is ever queued behind a stuck call."""

    def __init__(self) -> None:
        self._jobs: Optional["queue.SimpleQueue[Any]"] = None

    def _serve(self, jobs: "queue.SimpleQueue[Any]") -> None:
        while True:
            func, box, done = jobs.get()
            try:
                box.append(("ok", func()))
            except BaseException as exc:  # noqa: B902 - reported, never re-raised in the worker
                import traceback  # only for a check that raised: the module costs a millisecond to import

                box.append(("raised", (exc, traceback.format_exc())))
            done.set()

    def call(self, func: Callable[[], Any], timeout: float) -> Tuple[str, Any]:
        """("ok", value), ("raised", (exc, traceback text)) or ("timeout", None)."""
        if self._jobs is None:
            import queue

            self._jobs = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(self._jobs,), name="kvmcheck-check", daemon=True).start()
        box: List[Tuple[str, Any]] = []
        done = threading.Event()
        self._jobs.put((func, box, done))
        if not done.wait(timeout):
            self._jobs = None  # the thread stays blocked in func: the next call gets a new one
            return "timeout", None
        return box[0]


# Evidence quotes what the host's files hold, and a hostile or damaged root can hold megabytes (a 2 MB
# repository URL, a million mount entries): a fleet report of thousands of hosts must stay small.
MAX_EVIDENCE_TEXT = 2048  # characters of one string
MAX_EVIDENCE_ITEMS = 256  # entries of one list or mapping
MAX_EVIDENCE_DEPTH = 8


def bounded_evidence(evidence: Any) -> dict:
    """A copy of a check's evidence with every string, list and mapping cut to the limits above
    (a cut is marked: "... (N more characters)", or a last item "... (N more)")."""
    def cut(value: Any, depth: int) -> Any:
        if isinstance(value, str):
            if len(value) <= MAX_EVIDENCE_TEXT:
                return value
            return value[:MAX_EVIDENCE_TEXT] + f"... ({len(value) - MAX_EVIDENCE_TEXT} more characters)"
        if isinstance(value, dict):
            if depth >= MAX_EVIDENCE_DEPTH:
                return "... (nested too deep)"
            items = list(value.items())
            out = {str(k)[:MAX_EVIDENCE_TEXT]: cut(v, depth + 1) for k, v in items[:MAX_EVIDENCE_ITEMS]}
            if len(items) > MAX_EVIDENCE_ITEMS:
                out["..."] = f"{len(items) - MAX_EVIDENCE_ITEMS} more"
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            if depth >= MAX_EVIDENCE_DEPTH:
                return "... (nested too deep)"
            items = list(value) if not isinstance(value, (set, frozenset)) else sorted(value, key=str)
            out_list = [cut(v, depth + 1) for v in items[:MAX_EVIDENCE_ITEMS]]
            if len(items) > MAX_EVIDENCE_ITEMS:
                out_list.append(f"... ({len(items) - MAX_EVIDENCE_ITEMS} more)")
            return out_list
        return value

    return cut(dict(evidence), 0)


def run_check(check: Check, ctx: Context, timeout: float, debug: bool = False,
              worker: Optional[Worker] = None) -> Result:
    start = time.perf_counter()
    kind, value = (worker or Worker()).call(lambda: check(ctx), timeout)
    elapsed = (time.perf_counter() - start) * 1000
    if kind == "ok" and isinstance(value, Outcome):
        o = value
        return Result(check.id, check.title, o.status, o.summary, o.detail, o.remediation,
                      bounded_evidence(o.evidence), elapsed, cause=o.cause or cause_key(o.summary),
                      caused_by=[c for c in dict.fromkeys(o.caused_by) if c != check.id],  # candidates, see run()
                      pending=o.pending, pending_note=o.pending_note)
    result = _failed_run(check, kind, value, timeout, elapsed, debug)
    return dataclasses.replace(result, cause=cause_key(result.summary))


def _failed_run(check: Check, kind: str, value: Any, timeout: float, elapsed: float, debug: bool) -> Result:
    """The result of a check that gave no outcome: it hung, raised, or returned something else."""
    if kind == "timeout":
        return Result(
            check.id, check.title, Status.ERROR, f"did not finish within {timeout:g} s",
            "The check was still waiting (a hung mount, a stuck device or command) when its time ran out; "
            "kvmcheck stopped waiting and went on.",
            "Find what blocks (for example 'cat /proc/mounts', 'dmesg'), or raise --timeout.",
            {"timeout_s": timeout}, elapsed,
        )
    if kind == "raised" and isinstance(value[0], OfflineError):
        return Result(check.id, check.title, Status.SKIP, "needs the running kernel (offline root)",
                      str(value[0]), None, {}, elapsed)
    if kind == "raised" and isinstance(value[0], OSError) and value[0].filename:
        return _unreadable(check, value[0], elapsed)
    if kind == "raised":
        exc, tb = value
        detail = tb if debug else f"{type(exc).__name__}: {exc}"
        return Result(
            check.id, check.title, Status.ERROR, f"the check crashed: {type(exc).__name__}: {exc}",
            detail, "This is a kvmcheck bug: please report it with the output of --debug.", {}, elapsed,
        )
    return Result(check.id, check.title, Status.ERROR, "the check returned no outcome",
                  f"returned {value!r}", "This is a kvmcheck bug.", {}, elapsed)


def blocked_result(check: Check, blockers: List[Result]) -> Result:
    """A check whose prerequisite failed: its probe would fail for the same reason, so it does not run."""
    ids = list(dict.fromkeys(b for r in blockers for b in (r.blocked_by or [r.id])))
    first = blockers[0]
    lead = first.id if not first.blocked_by else ids[0]
    return Result(
        check.id, check.title, Status.SKIP, f"blocked by {', '.join(ids)}",
        f"Not run: {lead} failed ({first.summary if not first.blocked_by else 'see it'}), and this check "
        "would fail for the same reason. Fix that first; this check runs again then.",
        None, {}, 0.0, cause="blocked", blocked_by=ids)


def prefetched(checks: Sequence[Check]) -> List[str]:
    """The probes to start as the run begins (@fact(prefetch=True)) that the selected checks name."""
    from kvmcheck.facts import gatherer

    return list(dict.fromkeys(f for c in checks for f in c.facts if gatherer(f).prefetch))


def run_order(checks: Sequence[Check]) -> List[Check]:
    """checks, each after the selected checks it requires (otherwise in the given order)."""
    by_id = {c.id: c for c in checks}
    done: Dict[str, None] = {}

    def visit(c: Check, path: Tuple[str, ...]) -> None:
        if c.id in done or c.id in path:  # a cycle is a registration mistake: the given order breaks it
            return
        for dep in c.requires:
            if dep in by_id:
                visit(by_id[dep], path + (c.id,))
        done[c.id] = None

    for c in checks:
        visit(c, ())
    return [by_id[i] for i in done]


def attribute_causes(results: Sequence[Result]) -> List[Result]:
    """The results, each keeping of its candidate causes those that found a problem in this run; a finding
    that follows from another points to it instead of repeating its fix.  Two findings naming each other
    keep the earlier one (in report order, from the hardware up) as the cause.  New Results: the given
    ones are not edited."""
    current = {r.id: r for r in results}  # attributed already when earlier in the report, else as given
    out: List[Result] = []
    for r in results:
        kept = [c for c in r.caused_by if c in current and current[c].status in PROBLEMS
                and not current[c].ignored and r.id not in current[c].caused_by] if r.status in PROBLEMS else []
        if kept:
            causes = " and ".join(kept)
            one = len(kept) == 1
            r = dataclasses.replace(r, caused_by=kept, remediation=(
                f"See {causes}, whose {'fix comes' if one else 'fixes come'} first: this finding follows from "
                f"{'it' if one else 'them'}."))
        elif r.caused_by:
            r = dataclasses.replace(r, caused_by=[])
        current[r.id] = r
        out.append(r)
    return out


def _unreadable(check: Check, exc: OSError, elapsed: float) -> Result:
    """A file the check needed could not be read: a fact about the host, not a kvmcheck bug."""
    path = exc.filename
    evidence = {"path": path, "errno": errno.errorcode.get(exc.errno or 0, str(exc.errno))}
    if isinstance(exc, PermissionError):
        return Result(check.id, check.title, Status.SKIP, f"permission denied reading {path}",
                      f"The user running kvmcheck may not read {path}, so this cannot be judged.",
                      f"Run kvmcheck as root ('sudo kvmcheck'), or let this user read {path}.", evidence, elapsed)
    return Result(check.id, check.title, Status.SKIP, f"cannot read {path}: {exc.strerror}",
                  f"{path} exists but is not readable as a file ({exc.strerror}); the root may be damaged or "
                  "hold something else at that path.", None, evidence, elapsed)


def _load_error_result(err: LoadError) -> Result:
    name = err.entry_point.split("=", 1)[0].strip()
    return Result(
        f"plugin.{name}", f"Check plugin {name}", Status.ERROR, f"plugin could not be loaded: {err.message}",
        f"Entry point {err.entry_point} in group kvmcheck.checks failed to load.",
        "Reinstall or remove the plugin package that provides this entry point.", {}, 0.0,
    )


HOST_FIELDS = ("hostname", "root", "live", "arch", "arch_source", "kernel", "os", "cpu_vendor", "cpu_model",
               "hypervisor", "hypervisor_source", "kvm_modules", "container", "unreadable", "error")


def host_facts(ctx: Context, timeout: float, worker: Optional[Worker] = None) -> dict:
    kind, value = (worker or Worker()).call(ctx.host_facts, timeout)
    if kind == "ok":
        return value
    reason = "timed out" if kind == "timeout" else f"{type(value[0]).__name__}: {value[0]}"
    # Every field the templates and the schema know, null: a report whose header could not be
    # gathered still renders in every format.
    facts: dict = dict.fromkeys(HOST_FIELDS)
    facts.update(root=ctx.host.label, live=ctx.host.live, kvm_modules={}, unreadable=[],
                 error=f"host facts unavailable ({reason})")
    return facts


def migration_facts(ctx: Context, results: Dict[str, Result], timeout: float,
                    worker: Optional[Worker] = None) -> Optional[dict]:
    """The report's migration block (kvmcheck.facts.migration), or None when it could not be gathered in time
    or a fact it rests on raised (a damaged root): the report is never lost for it."""
    from kvmcheck.facts.migration import report_block

    kind, value = (worker or Worker()).call(lambda: report_block(ctx.facts, results), timeout)
    return value if kind == "ok" else None


# What marks a root as holding a system to judge: the top directories of an installed system, or of a
# capture of one (kvmcheck snapshot, the lscpu corpus, a tree of a few captured files).  An empty directory,
# /tmp or a home directory given by mistake has none of them.
SYSTEM_MARKERS = ("/etc", "/usr", "/var", "/proc", "/sys")


def no_system(host: Host) -> Optional[str]:
    """Why an offline root cannot be judged at all (an empty directory, /tmp, a mistyped --root), or None."""
    def present(path: str) -> bool:
        try:
            return host.exists(path)
        except OSError:  # something is there (a symlink loop, a file that cannot be read): not an empty root
            return True

    if host.live or any(present(p) for p in SYSTEM_MARKERS):
        return None
    return (f"this root holds no installed system: {host.root} has none of "
            f"{', '.join(SYSTEM_MARKERS)} (check the --root path)")


def run(
    root: str = "/",
    only: Optional[Iterable[str]] = None,
    skip: Optional[Iterable[str]] = None,
    *,
    timeout: Optional[float] = None,
    strict: bool = False,
    settings: Optional[Settings] = None,
    debug: bool = False,
    progress: Optional[Callable[[Check], None]] = None,
    config: Optional[str] = None,
    profile: Optional[str] = None,
    root_label: Optional[str] = None,
) -> Report:
    """Run the selected checks against root and return the Report (the public API).

    config: a TOML file; profile: a built-in profile name or a path (kvmcheck.core.config).  Without
    config, /etc/kvmcheck/config.toml is read when root is "/" and it exists.  The settings given here are
    the command line's: settings= (the fields it was made with, see Settings.given) and timeout= (each
    check's time limit, check_timeout) win over the configuration file, which wins over the profile, which
    wins over the defaults (kvmcheck.core.settings); nothing is guessed from a value.
    Raises kvmcheck.core.config.ConfigError for a configuration mistake and SelectionError for a selection
    that matches no check, before any check runs.
    root_label: what the report calls the root instead of its path (the archive a snapshot was unpacked from).
    """
    from kvmcheck.core.config import load as load_config

    host = Host(root, label=root_label)
    checks, load_errors = load_checks()
    results = [_load_error_result(e) for e in load_errors]
    cfg = load_config(config, profile, root, [c.id for c in checks] + [r.id for r in results])
    results = cfg.apply(results)  # a plugin that failed to load may be ignored like any check
    command_line = settings.given() if settings is not None else {}
    if timeout is not None:
        command_line["check_timeout"] = timeout
    ctx = Context(host, cfg.settings(command_line))
    limit = ctx.settings.check_timeout
    chosen = select(checks, only, skip)
    if not chosen and not results:
        raise SelectionError("the selection leaves no check to run (--only/--skip exclude each other)")
    done: Dict[str, Result] = {}
    worker = Worker()
    finish_probes = ctx.facts.prefetch(prefetched(chosen)) if host.live else None
    for c in run_order(chosen):
        blockers = [done[d] for d in c.requires
                    if d in done and not done[d].ignored and (done[d].status is Status.FAIL or done[d].blocked_by)]
        if blockers:
            result = blocked_result(c, blockers)
        else:
            if progress:
                progress(c)
            result = run_check(c, ctx, limit, debug, worker)
        done[c.id] = cfg.applied(result)  # severity overrides and ignores count before a dependent check looks
    if finish_probes is not None:
        finish_probes(limit)  # normally done long ago; a probe whose check was blocked ends here, not later
    results = attribute_causes(results + [done[c.id] for c in chosen])  # report order: from the hardware up
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    return Report(__version__, now, host_facts(ctx, limit, worker), results, strict,
                  config=None if cfg.empty else cfg.to_dict(),
                  essential=tuple(cfg.essential) if cfg.essential is not None else DEFAULT_ESSENTIAL,
                  no_system=no_system(host), live=host.live,
                  live_only=tuple(c.id for c in checks if c.live_only),
                  migration=migration_facts(ctx, done, limit, worker))
