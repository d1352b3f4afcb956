# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck.pyz built once per test process (python -m kvmcheck.tools.build) for the tests that run it."""
from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_BUILT = {}


def build(output: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmcheck.tools.build", "-o", str(output)], capture_output=True, text=True,
                          timeout=600)


def kvmcheck_pyz() -> Path:
    """The path of a freshly built kvmcheck.pyz; skips when pip cannot get the dependencies' wheels."""
    if "path" not in _BUILT:
        folder = Path(tempfile.mkdtemp(prefix="kvmcheck-test-pyz-"))
        atexit.register(shutil.rmtree, folder, True)  # gone when the test process ends
        proc = build(folder / "kvmcheck.pyz")
        if proc.returncode != 0:
            _BUILT["path"] = None
            _BUILT["error"] = proc.stderr[-2000:]
        else:
            _BUILT["path"] = folder / "kvmcheck.pyz"
    if _BUILT["path"] is None:
        pytest.skip("cannot build kvmcheck.pyz (pip needs a package index or --find-links for the dependencies' "
                    f"wheels):\n{_BUILT['error']}")
    return _BUILT["path"]
