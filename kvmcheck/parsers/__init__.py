# SPDX-License-Identifier: GPL-2.0-or-later
"""Pure parsers: text in, dataclass out.  No file system, no commands, no Host.

A parser skips lines it does not understand and raises :class:`ParseError`
only when the input as a whole is unusable.
"""
from __future__ import annotations


class ParseError(ValueError):
    """The text cannot be understood at all; the message says why."""
