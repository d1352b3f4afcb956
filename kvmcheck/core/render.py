# SPDX-License-Identifier: GPL-2.0-or-later
"""Render a Report: JSON directly, every other format through one Jinja environment.

Templates live in kvmcheck.reports (``reports/`` in the source tree), one per format,
named ``<format>.<ext>.j2``.  Jinja chooses autoescaping from the end of the template
name, so the HTML and XML templates end in ``.html.j2`` / ``.xml.j2`` and those two
suffixes are what turns escaping on.  A user's own template (``--template FILE``)
gets the same context and filters, escaped when its name ends in .html/.xml(.j2).

The context every template sees (documented in README):

- ``report``: the whole JSON report as a dict (schema_version, tool, generated_at,
  host, verdict, strict, summary, checks)
- ``host``, ``checks``, ``summary``, ``verdict``: shortcuts into it
- ``nagios``: {"code": 0-3, "state": "OK"|"WARNING"|"CRITICAL"|"UNKNOWN"}
- ``problems``: the fail, error and warn results that are not ignored, most severe first

jinja2 is imported only here, and only when a template is rendered (about 45 ms).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from kvmcheck.core.model import PENDING_KINDS, PROBLEMS, Report, severity
from kvmcheck.parsers import pattern

PROBLEM_VALUES = frozenset(s.value for s in PROBLEMS)  # the statuses listed under "what to do"

COLORS = {"pass": "32", "warn": "33", "fail": "31", "error": "35", "skip": "2"}

# --format value -> template file in kvmcheck.reports
TEMPLATES = {
    "text": "text.txt.j2",
    "html": "html.html.j2",
    "markdown": "markdown.md.j2",
    "junit": "junit.xml.j2",
    "prometheus": "prometheus.prom.j2",
    "nagios": "nagios.txt.j2",
}
FORMATS = ("text", "json") + tuple(f for f in TEMPLATES if f != "text")
from kvmcheck.core.model import NAGIOS_STATES  # noqa: E402 - re-exported for templates and callers


def nagios_code(report: Report) -> int:
    """Nagios plugin semantics (Report.nagios_code): CRITICAL not ready, UNKNOWN unknown, WARNING a ready
    host with warnings, else OK."""
    return report.nagios_code


_SENTENCE_END = pattern(r"(?<=[.!?])\s+(?=[A-Z(])")


def first_sentence(text: str) -> str:
    """The first sentence of a fix: the step to take first.  A full stop inside quotes (a command such
    as 'modprobe kvm_intel'. or a path) does not end it."""
    quoted = False
    for i, ch in enumerate(text):
        if ch == "'":  # an apostrophe inside a word (libvirt's) neither opens nor closes a quote
            before = text[i - 1] if i else " "
            after = text[i + 1] if i + 1 < len(text) else " "
            if not quoted and not before.isalnum():
                quoted = True
            elif quoted and not after.isalnum():
                quoted = False
        if not quoted and ch in ".!?" and _SENTENCE_END.match(text, i + 1):
            return text[: i + 1]
    return text


# A quoted span ('modprobe kvm_intel', 'Intel Virtualization Technology (VT-x)'): a command or a name that a
# reader copies whole.  The quote must open after a non-word character and close before one, so the
# apostrophe of "libvirt's" neither opens nor closes a span.
_SPAN = pattern(r"(?<![\w'])'[^'\n]+'(?![\w'])")
MIN_WIDTH = 40


def _tokens(paragraph: str) -> List[str]:
    """Words, with every quoted span kept whole inside its word ("('modprobe kvm_intel'," is one token)."""
    protected = _SPAN.sub(lambda m: m.group().replace(" ", "\0"), paragraph.replace("\0", " "))
    return [word.replace("\0", " ") for word in protected.split()]


def _long_command(token: str, width: int, indent: int) -> List[str]:
    """A quoted command longer than a line: on lines of its own, unquoted, continued with a backslash at
    spaces, so that copying the lines into a shell runs it whole."""
    body = token.strip(".,;:()")
    if body.startswith("'") and body.endswith("'"):
        body = body[1:-1]
    lines: List[str] = []
    line = " " * indent
    room = max(width - indent - 4, 8)
    words = [w[i:i + room] for w in body.split(" ") for i in range(0, max(len(w), 1), room)]  # a 200-byte path
    for word in words:
        if line.strip() and len(line) + 1 + len(word) + 2 > width:
            lines.append(line + " \\")
            line = " " * (indent + 2) + word
        else:
            line = (line + " " + word) if line.strip() else line + word
    lines.append(line)
    return lines


def wrap(text: Any, indent: int, width: int = 100, hanging: Optional[int] = None, used: Optional[int] = None) -> str:
    """Paragraphs of text filled to width, never breaking inside a quoted span (a command or a name).

    indent: the first line's indent; hanging: the others' (default indent); used: characters already on the
    first line (a table row's status and id): that line then gets no indent of its own.  A token that does
    not fit on a line of its own is set apart on its own lines (see _long_command).
    """
    width = max(int(width), MIN_WIDTH)
    hang = indent if hanging is None else hanging
    lines: List[str] = []  # finished lines, each with its indent (the very first without, when used is given)
    for paragraph in str(text).splitlines():
        if not paragraph.strip():
            continue
        first = not lines
        at = used if (first and used is not None) else indent  # where this paragraph's first line starts
        prefix = "" if (first and used is not None) else " " * indent
        line = ""
        for token in _tokens(paragraph):
            candidate = f"{line} {token}" if line else token
            if at + len(candidate) <= width:
                line = candidate
                continue
            if line or not lines:  # nothing fits on a table row's first line: it ends there (used columns)
                lines.append(prefix + line)
            at, prefix, line = hang, " " * hang, ""
            if hang + len(token) <= width:
                line = token
            elif _SPAN.search(token):  # a quoted command longer than any line: on lines of its own
                lines.extend(_long_command(token, width, max(2, min(hang, 4))))
            else:  # one long word (a path, a URL, a list without spaces): cut at the width, nothing added
                room = max(width - hang, 8)
                lines.extend(" " * hang + token[i:i + room] for i in range(0, len(token), room))
        if line:
            lines.append(prefix + line)
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False, default=str) + "\n"


def prom_label(value: Any) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped (text exposition format)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def nagios_text(value: Any) -> str:
    """Plugin output is one line, and '|' starts the performance data: keep both out of text."""
    return " ".join(str(value).split()).replace("|", "/")


def unix_seconds(iso: str) -> float:
    """An ISO 8601 time stamp (the report's generated_at) as Unix seconds."""
    import datetime

    return datetime.datetime.fromisoformat(iso).timestamp()


_XML_FORBIDDEN = pattern("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(value: Any) -> str:
    """Drop the characters XML 1.0 forbids (control characters but tab, LF, CR): autoescaping leaves them,
    and one in a hostname would make the whole JUnit file unreadable to Jenkins."""
    if hasattr(value, "__html__"):  # already-escaped Markup (a macro's output): clean it, keep it Markup
        return type(value)(_XML_FORBIDDEN.sub("", str(value)))  # type: ignore[return-value]
    return _XML_FORBIDDEN.sub("", str(value))


def md_cell(value: Any) -> str:
    """Text for a Markdown table cell: '|' escaped, HTML special characters escaped (renderers pass
    inline HTML through, and host data must not become markup), line breaks as <br>."""
    import html

    return "<br>".join(html.escape(str(value), quote=False).replace("|", "\\|").splitlines())


def _loader(jinja2, search_path: str):  # type: ignore[no-untyped-def]
    """Files from search_path; the built-in templates from inside the zip when kvmcheck runs as kvmcheck.pyz."""
    from kvmcheck import report_file, reports_dir

    if os.path.normpath(search_path) == os.path.normpath(reports_dir()) and not os.path.isdir(search_path):
        def load(name: str):  # type: ignore[no-untyped-def]
            try:
                return report_file(name)
            except OSError:  # jinja2 turns None into TemplateNotFound
                return None

        return jinja2.FunctionLoader(load)
    return jinja2.FileSystemLoader(search_path)


# Formats read on a terminal: every printed value goes through the one terminal sanitizer (kvmcheck.core.terminal) as
# the environment's finalize, so no template can forget it. Not HTML/JUnit (escaped, and xml_text drops the
# characters XML forbids), not Prometheus (node_exporter reads it; prom_label escapes what its format needs).
TERMINAL_FORMATS = ("text", "markdown", "nagios")


def _finalizer(xml: bool, terminal: bool):  # type: ignore[no-untyped-def]
    if xml:
        return xml_text
    if terminal:
        from kvmcheck.core.terminal import terminal_text

        return terminal_text
    return None


class TemplateUsageError(Exception):
    """A user's --template is wrong (syntax, unknown name, forbidden by the sandbox): file and line named."""


def _environment(color: bool, search_path: str, xml: bool = False, terminal: bool = False,
                 sandboxed: bool = False):  # type: ignore[no-untyped-def]
    import jinja2

    if sandboxed:
        # A user's template: Jinja's immutable sandbox refuses attributes that reach Python internals
        # (cycler.__init__.__globals__.os) and methods that change data; see _SafeSandbox for the limits.
        cls = _sandbox_class()
    else:
        # The built-in templates are part of the installation kvmcheck trusts (like its own code): the plain
        # environment, which is also what the fleet view of 10,000 hosts is timed with.
        cls = jinja2.Environment
    env = cls(
        # XML output: every printed value loses the characters XML 1.0 forbids, before escaping.
        # Terminal formats: every printed value has its control characters shown escaped.
        finalize=_finalizer(xml, terminal),
        loader=_loader(jinja2, search_path),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "xml.j2", "html", "xml"),
                                            default_for_string=False, default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,  # a line holding only a tag prints nothing
        lstrip_blocks=True,
    )
    from kvmcheck.core.terminal import paint as _paint

    def paint(status: str, text: str) -> str:
        # the text is sanitized inside; the colour escapes are kvmcheck's own and survive finalize
        return _paint(COLORS.get(status, "0"), text, color)

    env.filters["paint"] = paint
    env.filters["verdict_paint"] = lambda ok, text: paint("pass" if ok else "fail", text)
    if not sandboxed:
        from kvmcheck.core.terminal import Painted

        # A built-in template's macro output: each value in it went through finalize already (and its colours
        # are kvmcheck's own), so finalizing the whole again would show those colours as \x1b text.  Never
        # offered to a user's template, where it would let a file's bytes reach the terminal raw.
        env.filters["finalized"] = Painted
    env.filters["ljust"] = lambda s, n: str(s).ljust(n)
    env.filters["wrap"] = wrap
    env.filters["first_sentence"] = first_sentence
    env.filters["prom_label"] = prom_label
    env.filters["nagios_text"] = nagios_text
    env.filters["unix_seconds"] = unix_seconds
    env.filters["md_cell"] = md_cell
    env.filters["xml_text"] = xml_text
    env.filters["tojson_compact"] = lambda v: json.dumps(v, sort_keys=True, default=str)
    return env


# Bounds on what a user's template may build: the sandbox stops code, these stop a one-line template from
# making a multi-gigabyte string or number ({{ "x" * 10**10 }}) as root.
MAX_TEMPLATE_REPEAT = 1 << 20
MAX_TEMPLATE_POWER = 1 << 10


def _sandbox_class():  # type: ignore[no-untyped-def]
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class _SafeSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):  # type: ignore[no-untyped-def]
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    sized = isinstance(seq, (str, list, tuple)) and isinstance(n, int)
                    if sized and len(seq) * n > MAX_TEMPLATE_REPEAT:
                        raise SecurityError(f"a repetition of more than {MAX_TEMPLATE_REPEAT} items is refused")
            elif isinstance(right, int) and abs(right) > MAX_TEMPLATE_POWER:
                raise SecurityError(f"an exponent above {MAX_TEMPLATE_POWER} is refused")
            return super().call_binop(context, operator, left, right)

    return _SafeSandbox


def template_context(report: Report, quiet: bool = False, columns: int = 80, verbose: bool = False) -> Dict[str, Any]:
    data: Dict[str, Any] = report.to_dict()
    code = report.nagios_code
    # What to do: root causes first, then what follows from them (whose fix points to the cause), each
    # most severe first; ignored results are shown but need nothing.
    problems = sorted((c for c in data["checks"] if c["status"] in PROBLEM_VALUES and not c.get("ignored")),
                      key=lambda c: (bool(c.get("caused_by")), severity(c["status"])))
    return {
        "problems": problems, "quiet": quiet, "by_id": {c["id"]: c for c in data["checks"]},
        "columns": max(int(columns), MIN_WIDTH), "verbose": verbose,
        "report": data, "host": data["host"], "checks": data["checks"], "summary": data["summary"],
        "verdict": data["verdict"], "nagios": {"code": code, "state": NAGIOS_STATES[code]},
        "width": max([len(c["id"]) for c in data["checks"]] + [10]),
        "pending_kinds": PENDING_KINDS,
    }


def render_template(report: Report, path: str, color: bool = False, quiet: bool = False, columns: int = 80,
                    verbose: bool = False, terminal: bool = False, user: bool = False) -> str:
    """Render a template file (a built-in one or a user's --template) with the documented context."""
    folder, name = os.path.split(os.path.abspath(path))
    xml = name.endswith((".xml", ".xml.j2"))
    env = _environment(color, folder, xml, terminal=terminal, sandboxed=user)
    context = template_context(report, quiet, columns, verbose)
    if not user:
        return env.get_template(name).render(**context)
    return _render_user(env, path, name, context)


def _template_line(exc: BaseException, filename: str) -> Optional[int]:
    """The template line an exception was raised at: Jinja rewrites tracebacks so that template frames
    carry the template's file name and line (jinja2.debug)."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render_user(env: Any, path: str, name: str, context: Dict[str, Any]) -> str:
    import jinja2
    from jinja2.sandbox import SecurityError

    filename = os.path.abspath(path)
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        where = f"{exc.filename or path}:{exc.lineno}"
        raise TemplateUsageError(f"{where}: syntax error: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateUsageError(f"{path}:{_template_line(exc, filename) or '?'}: refused by the template "
                                 f"sandbox: {exc} (README, 'Report formats': what a template may use)") from None
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError,
            RecursionError, MemoryError) as exc:
        raise TemplateUsageError(f"{path}:{_template_line(exc, filename) or '?'}: "
                                 f"{type(exc).__name__}: {exc}") from None


def render(report: Report, fmt: str, color: bool = False, template: Optional[str] = None,
           quiet: bool = False, columns: int = 80, verbose: bool = False) -> str:
    """quiet: the text format's verdict block only (the verdict, why, and the checks to fix first);
    columns: the text format's line width; verbose: the text format also shows each check's evidence."""
    if template is not None:
        # A user's template prints to a terminal unless it builds HTML, XML or Prometheus text (escaped by
        # their own filters): sanitized like the built-in text formats.
        terminal = not template.endswith((".html", ".html.j2", ".htm", ".xml", ".xml.j2", ".prom", ".prom.j2"))
        return render_template(report, template, color, quiet, columns, verbose, terminal=terminal,
                               user=True)
    if fmt == "json":
        return render_json(report)
    if fmt not in TEMPLATES:
        raise ValueError(f"unknown format {fmt!r}")
    from kvmcheck import reports_dir

    return render_template(report, os.path.join(reports_dir(), TEMPLATES[fmt]), color, quiet, columns, verbose,
                           terminal=fmt in TERMINAL_FORMATS)


def render_text(report: Report, color: bool = False) -> str:
    return render(report, "text", color)
