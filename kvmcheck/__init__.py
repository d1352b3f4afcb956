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


def _tree_packages() -> None:
    """Run from a source tree, kvmcheck.checks and kvmcheck.reports are that tree's checks/ and reports/.

    The design card keeps checks/ and reports/ at the top of the tree; installed, they are ordinary
    subpackages (pyproject.toml's package-dir).  Without this, an editable install of one checkout
    answers "kvmcheck.checks" for any other checkout on sys.path, and two checkouts mix silently.
    Appending the tree to __path__ makes Python find them beside this package first.
    """
    import os

    here = os.path.dirname(__file__)
    tree = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "checks")) and os.path.isfile(os.path.join(tree, "checks", "__init__.py")) \
            and os.path.isfile(os.path.join(tree, "pyproject.toml")):
        __path__.append(tree)  # type: ignore[name-defined]  # noqa: F821 - a package's own __path__


_tree_packages()

# The plugin SDK's import paths (docs/plugins.md, "Compatibility"), kept while the code lives in core/ and
# facts/: importing one gives the very module below, so a plugin and kvmcheck share one set of classes.
_SDK_PATHS = {
    "kvmcheck.model": "kvmcheck.core.model",
    "kvmcheck.registry": "kvmcheck.core.registry",
    "kvmcheck.runner": "kvmcheck.core.runner",
    "kvmcheck.host": "kvmcheck.core.host",
    "kvmcheck.context": "kvmcheck.facts.context",
}


class _SdkPaths:
    """A finder and loader for _SDK_PATHS, asked only after the ordinary finders found nothing."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name not in _SDK_PATHS:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(name, cls())

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return None  # the default module, replaced in exec_module

    def exec_module(self, module):  # type: ignore[no-untyped-def]
        import importlib
        import sys

        # The import system returns what sys.modules holds under the name once exec_module returns.
        sys.modules[module.__name__] = importlib.import_module(_SDK_PATHS[module.__name__])


def _install_sdk_paths() -> None:
    import sys

    if not any(isinstance(f, type) and f.__name__ == "_SdkPaths" for f in sys.meta_path):
        sys.meta_path.append(_SdkPaths)


_install_sdk_paths()

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from kvmcheck.core.model import Report


def run(root: str = "/", only: Any = None, skip: Any = None, **options: Any) -> "Report":
    """Run the checks against root ("/" for this host) and return a Report."""
    from kvmcheck.core.runner import run as _run

    return _run(root, only, skip, **options)


def reports_dir() -> str:
    """Directory of the Jinja templates (package kvmcheck.reports, mapped from reports/).

    Inside kvmcheck.pyz this is a path into the zip, not a real directory: read the files through
    report_file() (or render's loader), which work in both cases.
    """
    import os

    from kvmcheck import reports  # type: ignore[attr-defined]

    return os.path.dirname(reports.__file__)


def report_file(name: str) -> str:
    """The text of a file of kvmcheck.reports (a template or a schema), from a directory or from a zip."""
    from importlib import resources

    return resources.files("kvmcheck.reports").joinpath(name).read_text(encoding="utf-8")


__all__ = ["run", "__version__"]
