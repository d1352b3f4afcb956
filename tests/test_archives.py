# SPDX-License-Identifier: GPL-2.0-or-later
"""--root ARCHIVE: the report names the archive."""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

import kvmcheck
from kvmcheck import snapshot
from kvmcheck.snapshot import ArchiveError, open_archive

from conftest import HOSTS

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]
MEASURED = ("free_bytes", "total_bytes")  # statvfs of the test machine's file system, not facts of the root


def kvmcheck_cli(*args, env=None, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def without_measurements(value):
    if isinstance(value, dict):
        return {k: without_measurements(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [without_measurements(v) for v in value]
    return value


def per_check(checks, root: str = ""):
    """id -> (status, evidence without measurements, root paths replaced): from Report.checks or JSON."""
    out = {}
    for r in checks:
        r = r if isinstance(r, dict) else {"id": r.id, "status": r.status.value, "evidence": r.evidence}
        evidence = json.loads(json.dumps(without_measurements(r["evidence"])).replace(root, "ROOT") if root
                              else json.dumps(without_measurements(r["evidence"])))
        out[r["id"]] = (r["status"], evidence)
    return out


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"needs the {tool} command")


# -- the report names the archive ------------------------------------------------------------------------
FORMATS = ("text", "json", "html", "markdown", "junit", "prometheus", "nagios")


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_report_names_the_archive_not_the_private_directory(host_root, tmp_path, fmt):
    root = host_root("pvm-host")
    snapshot.write_archive(snapshot.capture(str(root)), str(tmp_path / "field.tar.gz"))
    # Given relative, from its own directory: the report shows its real path, as for a directory root.
    run = kvmcheck_cli("check", "--root", "field.tar.gz", "--format", fmt, cwd=tmp_path)
    assert run.returncode in (0, 1, 2) and "Traceback" not in run.stderr, run.stderr
    assert "kvmcheck-snapshot-" not in run.stdout  # the private directory is named nowhere
    archive = str(tmp_path / "field.tar.gz")
    if fmt == "json":
        assert json.loads(run.stdout)["host"]["root"] == archive
    elif fmt == "text":
        assert f"Root: {archive} (offline" in run.stdout
    elif fmt in ("html", "markdown", "junit"):
        assert archive in run.stdout
    # prometheus and nagios carry no root


