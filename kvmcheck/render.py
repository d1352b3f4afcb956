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
import re
import textwrap
from typing import Any, Dict, Optional

from .model import Report

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
from .model import NAGIOS_STATES  # noqa: E402 - re-exported for templates and callers


def nagios_code(report: Report) -> int:
    """Nagios plugin semantics (Report.nagios_code): CRITICAL not ready, UNKNOWN unknown, WARNING a ready
    host with warnings, else OK."""
    return report.nagios_code


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


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


def wrap(text: Any, indent: int, width: int = 100, hanging: Optional[int] = None) -> str:
    """Paragraphs of text, each filled to width, indented; continuation lines by hanging (default indent)."""
    return "\n".join(
        textwrap.fill(p, width=width, initial_indent=" " * indent,
                      subsequent_indent=" " * (indent if hanging is None else hanging),
                      break_on_hyphens=False, break_long_words=False)
        for p in str(text).splitlines() if p.strip()
    )


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


_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


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
    from . import report_file, reports_dir

    if os.path.normpath(search_path) == os.path.normpath(reports_dir()) and not os.path.isdir(search_path):
        def load(name: str):  # type: ignore[no-untyped-def]
            try:
                return report_file(name)
            except OSError:  # jinja2 turns None into TemplateNotFound
                return None

        return jinja2.FunctionLoader(load)
    return jinja2.FileSystemLoader(search_path)


def _environment(color: bool, search_path: str, xml: bool = False):  # type: ignore[no-untyped-def]
    import jinja2

    env = jinja2.Environment(
        # In XML output every printed value loses the characters XML 1.0 forbids, before escaping.
        finalize=xml_text if xml else None,
        loader=_loader(jinja2, search_path),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "xml.j2", "html", "xml"),
                                            default_for_string=False, default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,  # a line holding only a tag prints nothing
        lstrip_blocks=True,
    )

    def paint(status: str, text: str) -> str:
        return f"\033[{COLORS.get(status, '0')}m{text}\033[0m" if color else text

    env.filters["paint"] = paint
    env.filters["verdict_paint"] = lambda ok, text: paint("pass" if ok else "fail", text)
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


def template_context(report: Report, quiet: bool = False) -> Dict[str, Any]:
    data: Dict[str, Any] = report.to_dict()
    code = report.nagios_code
    rank = {"fail": 0, "error": 1, "warn": 2}
    # What to do: root causes first, then what follows from them (whose fix points to the cause), each
    # most severe first; ignored results are shown but need nothing.
    problems = sorted((c for c in data["checks"] if c["status"] in rank and not c.get("ignored")),
                      key=lambda c: (bool(c.get("caused_by")), rank[c["status"]]))
    return {
        "problems": problems, "quiet": quiet, "by_id": {c["id"]: c for c in data["checks"]},
        "report": data, "host": data["host"], "checks": data["checks"], "summary": data["summary"],
        "verdict": data["verdict"], "nagios": {"code": code, "state": NAGIOS_STATES[code]},
        "width": max([len(c["id"]) for c in data["checks"]] + [10]),
    }


def render_template(report: Report, path: str, color: bool = False, quiet: bool = False) -> str:
    """Render a template file (a built-in one or a user's --template) with the documented context."""
    folder, name = os.path.split(os.path.abspath(path))
    xml = name.endswith((".xml", ".xml.j2"))
    return _environment(color, folder, xml).get_template(name).render(**template_context(report, quiet))


def render(report: Report, fmt: str, color: bool = False, template: Optional[str] = None,
           quiet: bool = False) -> str:
    """quiet: the text format's verdict block only (the verdict, why, and the checks to fix first)."""
    if template is not None:
        return render_template(report, template, color, quiet)
    if fmt == "json":
        return render_json(report)
    if fmt not in TEMPLATES:
        raise ValueError(f"unknown format {fmt!r}")
    from . import reports_dir

    return render_template(report, os.path.join(reports_dir(), TEMPLATES[fmt]), color, quiet)


def render_text(report: Report, color: bool = False) -> str:
    return render(report, "text", color)
