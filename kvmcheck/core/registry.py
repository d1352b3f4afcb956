# SPDX-License-Identifier: GPL-2.0-or-later
"""Check registration: the @check decorator and discovery through entry points.

Built-in checks and third-party ones are declared the same way, in the
``kvmcheck.checks`` entry-point group.  An entry point names a module (every
check defined in it is taken, in definition order) or a single check object.
The built-in modules (BUILTIN_ORDER, the same list as pyproject.toml's) are
imported directly, and importlib.metadata is asked for plugins only when some
other distribution declares the group (see _plugins_declared).
"""
from __future__ import annotations

import inspect
import re
from typing import Callable, Iterable, List, Tuple

from kvmcheck.core.model import Check, Outcome
from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

ENTRY_POINT_GROUP = "kvmcheck.checks"
# Report order of the built-in modules: from the hardware up to a running guest.
BUILTIN_ORDER = ("cpu", "firmware", "kernel", "kvm", "guest", "iommu", "secure_guest", "cgroups", "security",
                 "memory", "capacity", "paravirt", "packages", "storage", "libvirt", "network", "consumer")
_ID = pattern(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)+$")


def check(id: str, title: str, reads: Iterable[str] = (), requires: Iterable[str] = (),
          live_only: bool = False) -> Callable[[Callable[..., Outcome]], Check]:
    """Declare a check: a public dotted id, a title, and (through its parameters) the facts it judges.

    A built-in check is a judge: its parameters name facts (kvmcheck.facts) and, optionally,
    ``settings``; it never sees the Host, and what it reads is the union of its facts' reads.  A check
    of one parameter named ``ctx`` (the plugin SDK, docs/plugins.md) gets the Context instead and
    declares its own reads.

    requires: checks that must not have failed for this one to run its probe (when one did, this
    check reports skip, blocked by it).  live_only: the check needs the running kernel, so on an
    offline root it has nothing to decide and is no gap in the evidence for a verdict.

    The function's docstring is the user documentation shown by
    ``kvmcheck explain ID``: what it checks, why it matters, how to fix it.
    """
    if not _ID.match(id):
        raise ValueError(f"check id {id!r} is not a lowercase dotted name such as 'cpu.virt-flags'")

    def wrap(func: Callable[..., Outcome]) -> Check:
        from kvmcheck.facts import FACTS, HOST, SETTINGS, reads_of
        from kvmcheck.facts import system  # noqa: F401 - the facts every check may name

        from kvmcheck.facts import parameter_names

        doc = inspect.cleandoc(func.__doc__ or "")
        params = parameter_names(func)
        if params == ("ctx",):
            facts: Tuple[str, ...] = ()
            declared = tuple(reads)
        else:
            if HOST in params or FACTS in params:
                raise ValueError(f"check {id!r}: a check judges facts and never gets the Host; "
                                 "gather what it needs in a fact (kvmcheck.facts)")
            facts = tuple(p for p in params if p != SETTINGS)
            try:
                declared = tuple(dict.fromkeys(tuple(reads) + reads_of(facts)))
            except LookupError as exc:
                raise ValueError(f"check {id!r}: {exc}") from None
        return Check(id=id, title=title, reads=declared, func=func, doc=doc, source=func.__module__,
                     requires=tuple(requires), live_only=live_only, facts=facts)

    return wrap


class LoadError(Record):
    entry_point: str
    message: str


class _Builtin:
    """A built-in check module, loaded like an entry point without asking importlib.metadata."""

    def __init__(self, name: str) -> None:
        self.name, self.value = name, f"kvmcheck.checks.{name}"

    def load(self) -> object:
        import importlib

        return importlib.import_module(self.value)


def _plugins_declared() -> bool:
    """Whether a distribution other than kvmcheck on sys.path may declare the kvmcheck.checks group.

    importlib.metadata is the authority on entry points, but importing it and letting it read every
    installed distribution costs 40-200 ms, the largest part of a run's start-up, on every host of a
    fleet that has no plugin at all.  So the *.dist-info/*.egg-info directories on sys.path are
    scanned first for an entry_points.txt that names the group; only then is importlib.metadata
    asked.  Anything this scan cannot see into (a zip on sys.path) answers "maybe".
    """
    import os
    import sys

    for entry in sys.path:
        try:
            listing = os.scandir(entry or ".")
        except NotADirectoryError:
            return True  # a zip or egg file: importlib.metadata can look inside, this scan cannot
        except OSError:
            continue
        with listing:
            for item in listing:
                name = item.name
                for suffix in (".dist-info", ".egg-info"):
                    if name.endswith(suffix):
                        break
                else:
                    continue
                if re.sub(r"[-_.]+", "-", name[: -len(suffix)].split("-")[0]).lower() == "kvmcheck":
                    continue  # kvmcheck's own entry points are the built-ins, loaded directly
                try:
                    with open(os.path.join(item.path, "entry_points.txt"), encoding="utf-8", errors="replace") as fh:
                        text = fh.read(1 << 20)
                except OSError:  # none (most distributions), or an egg-info that is a single file
                    continue
                if any(line.strip() == f"[{ENTRY_POINT_GROUP}]" for line in text.splitlines()):
                    return True
    return False


def _entry_points():  # type: ignore[no-untyped-def]
    """The built-in modules, then the group's entry points from importlib.metadata if any plugin may exist."""
    builtins = [_Builtin(name) for name in BUILTIN_ORDER]
    if not _plugins_declared():
        return builtins
    from importlib import metadata

    eps = metadata.entry_points()
    if hasattr(eps, "select"):  # Python >= 3.10
        return builtins + list(eps.select(group=ENTRY_POINT_GROUP))
    return builtins + list(eps.get(ENTRY_POINT_GROUP, ()))  # Python 3.9 returns a dict


def checks_from(obj: object) -> List[Check]:
    if isinstance(obj, Check):
        return [obj]
    if inspect.ismodule(obj):
        return [v for v in vars(obj).values() if isinstance(v, Check)]
    if isinstance(obj, (list, tuple)):
        return [c for c in obj if isinstance(c, Check)]
    return []


def load_checks() -> Tuple[List[Check], List[LoadError]]:
    """Every registered check (built-ins first, then plugins by name) and what failed to load."""
    checks: List[Check] = []
    errors: List[LoadError] = []
    seen = {}
    def order(ep):  # type: ignore[no-untyped-def]
        builtin = ep.value.startswith("kvmcheck.checks.")
        rank = BUILTIN_ORDER.index(ep.name) if builtin and ep.name in BUILTIN_ORDER else len(BUILTIN_ORDER)
        return (not builtin, rank, ep.name)

    eps = sorted(_entry_points(), key=order)
    for ep in eps:
        if ep.value in seen:
            continue  # the same distribution seen twice on sys.path (an editable install and a copy)
        seen[ep.value] = ep.name
        try:
            found = checks_from(ep.load())
        except Exception as exc:  # a broken plugin must not stop the run
            errors.append(LoadError(f"{ep.name} = {ep.value}", f"{type(exc).__name__}: {exc}"))
            continue
        if not found:
            errors.append(LoadError(f"{ep.name} = {ep.value}", "defines no check"))
        for c in found:
            if any(c.id == other.id for other in checks):
                errors.append(LoadError(f"{ep.name} = {ep.value}", f"duplicate check id {c.id!r} ignored"))
                continue
            checks.append(c)
    return checks, errors
