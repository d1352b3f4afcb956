# SPDX-License-Identifier: GPL-2.0-or-later
"""Facts about a host, gathered through the Host once per run and handed to the checks that name them.

A fact is a function decorated with ``@fact(reads=...)`` that returns a typed, immutable record.  Its
parameters name what it is computed from, the way pytest fixtures do: ``host`` (the Host), ``settings``
(the run's Settings) or other facts by name.  Only facts touch the Host, so only facts meet ``OSError``:
each keeps *absent*, *denied*, *unreadable* and *not applicable offline* apart in its record (see
``Readout``), or lets the error propagate when nothing can be judged without the file (the runner turns
that into a ``skip`` that names the file).

A check (a judge, ``kvmcheck.core.registry.check``) names the facts it needs as its parameters; it never
sees the Host.  What a check reads is therefore the union of its facts' ``reads``, transitively, which is
what ``kvmcheck list`` shows, what ``kvmcheck snapshot`` captures, and what the conformance test
(tests/test_conformance.py) holds every check to on every captured root.

Facts are memoized without locks on purpose: functools.cached_property (before Python 3.12) takes a
class-wide lock, so one check stuck on a hung mount would stall every later check that asks for any fact.
Computing a fact twice is harmless; hanging the run is not.  The one exception is a probe the runner
starts early (``@fact(prefetch=True)``, see ``Facts.prefetch``): a check asking for it waits for that
start instead of running the probe a second time, within its own time limit like any wait.
"""
from __future__ import annotations

import errno
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, TypeVar

from kvmcheck.core.record import Record

# Parameter names a fact or a check receives from the run rather than from another fact.
HOST, SETTINGS, FACTS = "host", "settings", "facts"
T = TypeVar("T")


class Gatherer(Record):
    """A registered fact: its name, the paths it reads itself, the facts it is computed from."""

    name: str
    reads: Tuple[str, ...]
    needs: Tuple[str, ...]  # other facts (parameter names other than host, settings and facts)
    uses: Tuple[str, ...]  # facts asked for only when needed, through the facts parameter
    func: Callable[..., Any]
    module: str
    prefetch: bool = False  # a probe the runner starts as the run begins (see Facts.prefetch)


_GATHERERS: Dict[str, Gatherer] = {}


class UnknownFact(LookupError):
    """A check or fact names a parameter that is no registered fact (a typo, or a fact module not imported)."""


def fact(reads: Iterable[str] = (), uses: Iterable[str] = (), name: Optional[str] = None,
         prefetch: bool = False) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Declare a fact: the paths it reads (globs allowed) and, through its parameters, what it needs.

    uses: facts it asks for only on some branches, through a ``facts`` parameter (facts.get(NAME)),
    so that a costly or fallible fact is not gathered when the answer is already known.

    prefetch: the fact is a Later whose probe mostly waits on another process or the kernel (QEMU
    starting, a guest run in a forked child), asked on every live branch of the check that names it.
    On a live root the runner starts it in a background thread as the run begins, so that the wait
    overlaps the checks that read files (see Facts.prefetch).

    The function stays callable as it is, so a test can hand it a Host and other facts directly.
    """
    def wrap(func: Callable[..., T]) -> Callable[..., T]:
        key = name or func.__name__
        params = parameter_names(func)
        needs = tuple(p for p in params if p not in (HOST, SETTINGS, FACTS))
        for need in needs + tuple(uses):
            if need not in _GATHERERS and need != key:
                raise UnknownFact(f"fact {key!r} needs {need!r}, which is not a fact declared before it")
        known = _GATHERERS.get(key)
        if known is not None and (known.module, known.func.__qualname__) != (func.__module__, func.__qualname__):
            raise ValueError(f"fact {key!r} is declared twice: in {known.module} and {func.__module__}")
        _GATHERERS[key] = Gatherer(key, tuple(reads), needs, tuple(uses), func, func.__module__, prefetch)
        func.fact = _GATHERERS[key]  # type: ignore[attr-defined]
        return func

    return wrap


def gatherer(name: str) -> Gatherer:
    try:
        return _GATHERERS[name]
    except KeyError:
        raise UnknownFact(f"no fact is named {name!r}") from None


def reads_of(names: Iterable[str]) -> Tuple[str, ...]:
    """Every path the named facts read, with the facts they are computed from, in a stable order."""
    seen: Dict[str, None] = {}
    out: Dict[str, None] = {}

    def visit(name: str) -> None:
        if name in seen:
            return
        seen[name] = None
        g = gatherer(name)
        for need in g.needs + g.uses:
            visit(need)
        out.update(dict.fromkeys(g.reads))

    for name in names:
        visit(name)
    return tuple(out)


def all_reads() -> Tuple[str, ...]:
    """The paths of every registered fact (import the fact modules first: kvmcheck.core.registry does)."""
    return reads_of(list(_GATHERERS))


class Facts:
    """One run's facts about one root: each computed on first use and kept (see the module's docstring)."""

    def __init__(self, host: Any, settings: Any = None) -> None:
        if settings is None:
            from kvmcheck.core.settings import Settings

            settings = Settings()
        self.host = host
        self.settings = settings
        self._memo: Dict[str, Any] = {}
        self._pending: Dict[str, Any] = {}  # name -> threading.Event of a fact being prefetched

    def get(self, name: str) -> Any:
        if name in self._memo:
            return self._memo[name]
        pending = self._pending.get(name)
        if pending is not None:
            pending.wait()  # the prefetch is computing it (a Later: quickly; its probe runs later)
            if name in self._memo:
                return self._memo[name]
        value = self.call(gatherer(name).func)
        self._memo[name] = value
        return value

    def prefetch(self, names: Iterable[str]) -> Callable[[float], None]:
        """Start the named facts' probes now, each in a daemon thread of its own: the fact is computed (a
        Later), kept, and its probe run, so that a check asking for it later finds it done or waits for it.

        An error is kept in the Later and raised to the check that asks, as if it had run the probe
        itself; a probe no check asks for (its check was blocked) is simply not looked at.  Returns
        finish(timeout): wait at most timeout seconds for the probes (so that no QEMU a probe started
        outlives the run)."""
        import threading

        threads = []

        def work(name: str, ready: Any) -> None:
            try:
                value = self.call(gatherer(name).func)
                self._memo[name] = value
            except BaseException:  # noqa: B902 - the check computes it again and meets the error itself
                return
            finally:
                ready.set()
            if isinstance(value, Later):
                value.settle()

        for name in names:
            if name in self._memo or name in self._pending:
                continue
            ready = self._pending[name] = threading.Event()
            thread = threading.Thread(target=work, args=(name, ready), name=f"kvmcheck-{name}", daemon=True)
            thread.start()
            threads.append(thread)

        def finish(timeout: float) -> None:
            import time

            deadline = time.monotonic() + timeout
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))

        return finish

    def call(self, func: Callable[..., T]) -> T:
        """func with each parameter given: the Host, the settings, or the fact of that name."""
        kwargs = {}
        for param in _parameters(func):
            if param == HOST:
                kwargs[param] = self.host
            elif param == SETTINGS:
                kwargs[param] = self.settings
            elif param == FACTS:
                kwargs[param] = self
            else:
                kwargs[param] = self.get(param)
        return func(**kwargs)


_PARAMETERS: Dict[Callable[..., Any], Tuple[str, ...]] = {}


def _parameters(func: Callable[..., Any]) -> Tuple[str, ...]:
    """func's parameter names, kept (asked once per fact and check of every run)."""
    params = _PARAMETERS.get(func)
    if params is None:
        params = _PARAMETERS[func] = parameter_names(func)
    return params


def parameter_names(func: Callable[..., Any]) -> Tuple[str, ...]:
    """The names of func's parameters, as inspect.signature gives them.

    A plain function's are read off its code object: importing inspect (with ast, dis and tokenize) and
    building ~150 signatures cost a few milliseconds of every run.  Anything else (a decorated function
    that names what it wraps, a partial, a method, *args) goes to inspect.signature."""
    code = getattr(func, "__code__", None)
    if code is None or hasattr(func, "__wrapped__") or code.co_flags & 0x0C:  # CO_VARARGS | CO_VARKEYWORDS
        import inspect

        return tuple(inspect.signature(func).parameters)
    return code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]


class Readout(Record):
    """One file as a fact sees it: its text, or why there is none.

    state: "ok" (text holds it), "absent" (no such file in this root), "denied" (EACCES/EPERM),
    "unreadable" (exists but cannot be read as a file: a directory, a FIFO, an I/O error; reason says
    which) or "offline" (a file of the running kernel asked of an offline root).
    """

    path: str
    state: str
    text: Optional[str] = None
    reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def read(host: Any, path: str, limit: Optional[int] = None, live_only: bool = False) -> Readout:
    """Read path through the Host into a Readout: the one place the common OSError cases are told apart."""
    if live_only and not host.live:
        return Readout(path, "offline", reason="a file of the running kernel; this root is offline")
    try:
        text = host.read_optional(path) if limit is None else host.read_optional(path, limit=limit)
    except PermissionError as exc:
        return Readout(path, "denied", reason=exc.strerror or "permission denied")
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0) or str(exc)
        return Readout(path, "unreadable", reason=reason)
    if text is None:
        return Readout(path, "absent")
    return Readout(path, "ok", text)


class Later:
    """A fact's value gathered only when a check asks for it: a costly probe (py-cpuinfo re-executes
    Python, a guest run) that only one branch of a judgement needs.  get() computes once and keeps it
    (an exception too: it is raised again to every caller).  The first caller computes; one asking
    meanwhile from another thread (a prefetched probe, Facts.prefetch) waits for that answer."""

    __slots__ = ("_compute", "_claim", "_ready", "_outcome")

    def __init__(self, compute: Callable[[], Any]) -> None:
        import threading

        self._compute = compute
        self._claim = threading.Lock()  # taken once, by the caller that computes, and never released
        self._ready = threading.Event()
        self._outcome: Tuple[bool, Any] = (False, None)

    def settle(self) -> None:
        """Compute the value unless another caller is already at it (for a background start)."""
        if self._claim.acquire(blocking=False):
            try:
                self._outcome = (True, self._compute())
            except BaseException as exc:  # noqa: B902 - kept, and raised to every caller of get()
                self._outcome = (False, exc)
            finally:
                self._ready.set()

    def get(self) -> Any:
        self.settle()
        self._ready.wait()
        ok, value = self._outcome
        if not ok:
            raise value
        return value


def covers(declared: Iterable[str], path: str) -> bool:
    """Whether a read of path is among the declared reads: a path, a glob whose wildcards stay within one
    path component (as Host.glob and kvmcheck snapshot expand them), or 'DIR/**' for everything under DIR."""
    import fnmatch

    parts = path.split("/")
    for pattern in declared:
        if pattern == path:
            return True
        if pattern.endswith("/**"):
            if path == pattern[:-3] or path.startswith(pattern[:-2]):
                return True
            continue
        wanted = pattern.split("/")
        if len(wanted) == len(parts) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted)):
            return True
    return False
