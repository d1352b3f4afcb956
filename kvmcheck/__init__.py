# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck: can this machine run KVM guests well, and if not, exactly why and what to do.

Public API::

    import kvmcheck
    report = kvmcheck.run(root="/", only=None, skip=None)
    report.verdict, report.to_dict()

The engine imports neither typer nor jinja2; only the CLI and renderers do.
"""
from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .model import Report


def run(root: str = "/", only: Any = None, skip: Any = None, **options: Any) -> "Report":
    """Run the checks against root ("/" for this host) and return a Report."""
    from .runner import run as _run

    return _run(root, only, skip, **options)


def reports_dir() -> str:
    """Directory of the Jinja templates (package kvmcheck.reports, mapped from reports/).

    Inside kvmcheck.pyz this is a path into the zip, not a real directory: read the files through
    report_file() (or render's loader), which work in both cases.
    """
    import os

    from . import reports  # type: ignore[attr-defined]

    return os.path.dirname(reports.__file__)


def report_file(name: str) -> str:
    """The text of a file of kvmcheck.reports (a template or a schema), from a directory or from a zip."""
    from importlib import resources

    return resources.files("kvmcheck.reports").joinpath(name).read_text(encoding="utf-8")


__all__ = ["run", "__version__"]
