# SPDX-License-Identifier: GPL-2.0-or-later
"""The source tree and the installed package agree: checks/ and reports/ are kvmcheck.checks and kvmcheck.reports
of the tree they sit in, even when an editable install of another checkout is on the same Python."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROBE = "import kvmcheck, kvmcheck.checks, kvmcheck.reports; print(kvmcheck.__file__, kvmcheck.checks.__file__, " \
        "kvmcheck.reports.__file__)"


def checkout(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout: cannot copy the tracked tree")
    for name in files.stdout.splitlines():
        if name.startswith(("kvmcheck/", "checks/", "reports/")) or name in ("pyproject.toml", "README.md"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_two_checkouts_on_one_python_do_not_mix(tmp_path):
    first, second = checkout(tmp_path / "first"), checkout(tmp_path / "second")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps",
                              "-e", str(first)], capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        pytest.skip(f"no editable install (it needs setuptools >= 64 from the package index): {install.stderr[-300:]}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # The editable install answers for the first checkout ...
    out = subprocess.run([python, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, env=env).stdout.split()
    assert out and all(path.startswith(str(first)) for path in out), out
    # ... and a second checkout run from its own directory is that checkout, checks and reports included.
    out = subprocess.run([python, "-c", PROBE], cwd=second, capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(second)}).stdout.split()
    assert out and all(path.startswith(str(second)) for path in out), out


def test_an_installed_copy_holds_checks_and_reports_inside_the_package():
    import kvmcheck
    import kvmcheck.checks
    import kvmcheck.reports

    package = Path(kvmcheck.__file__).parent
    for sub in (kvmcheck.checks, kvmcheck.reports):
        where = Path(sub.__file__).parent
        assert where in (package / where.name, REPO / where.name), where
    if (package.parent / "pyproject.toml").is_file():
        assert (REPO / "checks") == Path(kvmcheck.checks.__file__).parent
    assert sys.modules["kvmcheck.checks"] is kvmcheck.checks
