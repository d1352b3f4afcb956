# SPDX-License-Identifier: GPL-2.0-or-later
"""The one sanitizer for text that reaches a terminal (text, Markdown and Nagios reports, fleet and diff text).

Every string in a report came from a file someone else wrote (a captured root, an archive, a report handed to
fleet or diff). A terminal obeys what it prints: ESC starts CSI/OSC sequences (clear the screen, set the
window title, OSC 52 writes the clipboard, OSC 8 hides links), C1 controls (0x80-0x9f) do the same on
terminals that read 8-bit controls, CR and BS overwrite what was printed, and the bidirectional overrides
make text read in another order than it is stored ("Trojan Source"). So every such character is shown
escaped (``\\x1b``, ``\\u202e``), never obeyed. Newline and tab are kept where a caller says text may span
lines (a check's detail); a one-line field passes newlines=False.

Backslash is not escaped: sanitizing twice gives the same text (a template value can pass through a filter
and the environment's finalize), at the cost that a file holding the four characters ``\\x1b`` prints the
same as one holding ESC, which is what a reader needs to know anyway.

kvmcheck's own colour codes are not data: ``paint`` sanitizes its text, then wraps it in escapes and returns
``Painted``, which the sanitizer passes through untouched.
"""
from __future__ import annotations

import re
from typing import Any

from kvmcheck.parsers import pattern

# C0 controls but tab and newline, DEL, C1 controls, and the Unicode bidi embeddings, overrides and isolates
# (plus the line and paragraph separators, which some terminals and editors take as line breaks).
_UNSAFE = pattern("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ONE_LINE = pattern("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


class Painted(str):
    """Text kvmcheck itself wrapped in colour escapes, its data already sanitized: passed through as is."""

    __slots__ = ()


def _escape(m: "re.Match[str]") -> str:
    ch = m.group(0)
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def terminal_text(value: Any, newlines: bool = True) -> Any:
    """value as text a terminal shows but does not obey; Painted text (kvmcheck's colours) is returned as is.

    newlines=True keeps newline and tab (multi-line fields); False escapes them too (a name, an id).
    """
    if isinstance(value, Painted):
        return value
    text = value if isinstance(value, str) else str(value)
    return (_UNSAFE if newlines else _UNSAFE_ONE_LINE).sub(_escape, text)


def one_line(value: Any) -> str:
    """A field that must stay on one line (a host name, a check id, a verdict): newlines escaped too."""
    return terminal_text(value, newlines=False)


def paint(code: str, text: Any, color: bool) -> str:
    """text in SGR colour code (e.g. "31"), its characters sanitized; plain sanitized text when color is off."""
    safe = terminal_text(text)
    return Painted(f"\033[{code}m{safe}\033[0m") if color else safe
