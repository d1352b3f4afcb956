# SPDX-License-Identifier: GPL-2.0-or-later
"""Pure parsers: text in, dataclass out.  No file system, no commands, no Host.

A parser skips lines it does not understand and raises :class:`ParseError`
only when the input as a whole is unusable.
"""
from __future__ import annotations


class ParseError(ValueError):
    """The text cannot be understood at all; the message says why."""


class pattern:  # noqa: N801 - used like re.compile, which it stands for
    """re.compile(regex, flags) on first use: a module's patterns cost nothing until a branch needs them.

    Compiling every module's regular expressions at import cost about 4 ms of every run, most of them for
    branches (a distribution, a kernel, a log format) that the run never takes.  Every attribute (match,
    search, sub, finditer, pattern...) is the compiled pattern's; the first use keeps its methods on the
    instance, so a loop over a log's lines calls them as directly as a compiled pattern's."""

    _METHODS = ("match", "fullmatch", "search", "sub", "subn", "split", "findall", "finditer")

    def __init__(self, regex: str, flags: int = 0) -> None:
        self._source = (regex, flags)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        import re

        compiled = re.compile(*self._source)
        for method in self._METHODS:
            setattr(self, method, getattr(compiled, method))
        return getattr(compiled, name)
