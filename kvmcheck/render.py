# SPDX-License-Identifier: GPL-2.0-or-later
"""Render a Report: JSON directly, everything else through a Jinja template in kvmcheck.reports.

jinja2 is imported only here, and only when a template is rendered (about 45 ms).
"""
from __future__ import annotations

import json
import textwrap
from typing import Any, Dict

from .model import Report

COLORS = {"pass": "32", "warn": "33", "fail": "31", "error": "35", "skip": "2"}


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False, default=str) + "\n"


def _environment(color: bool):  # type: ignore[no-untyped-def]
    import jinja2

    from . import reports_dir

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(reports_dir()),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "xml.j2"), default=False),
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
    env.filters["wrap"] = lambda s, indent: "\n".join(
        textwrap.fill(p, width=100, initial_indent=" " * indent, subsequent_indent=" " * indent)
        for p in str(s).splitlines() if p.strip()
    )
    return env


def render_text(report: Report, color: bool = False) -> str:
    data: Dict[str, Any] = report.to_dict()
    width = max([len(c["id"]) for c in data["checks"]] + [10])
    template = _environment(color).get_template("text.txt.j2")
    return template.render(r=data, h=data["host"], width=width)


def render(report: Report, fmt: str, color: bool = False) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "text":
        return render_text(report, color)
    raise ValueError(f"unknown format {fmt!r}")


