# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck.pyz (python -m kvmcheck.tools.build): one file that runs kvmcheck where nothing is installed.

Every run here uses a Python that cannot see the test venv: Debian's /usr/bin/python3 with -I -S (isolated mode,
no site-packages at all), or the bullseye chroot's Python 3.9 (tests/test_kickstart.py's cached debootstrap, bound
read-only into a private mount namespace, so the cache is never changed).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import kvmcheck
from conftest import validate_report
from pyz_build import build, kvmcheck_pyz

REPO = Path(__file__).resolve().parent.parent
HOSTS = REPO / "tests" / "hosts"
SYSTEM_PYTHON = "/usr/bin/python3"
ISOLATED = [SYSTEM_PYTHON, "-I", "-S"]  # no PYTHONPATH, no user or system site-packages: only the stdlib

needs_system_python = pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK),
                                         reason=f"needs a system Python at {SYSTEM_PYTHON}")


def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd="/", **kwargs)


def pairs(report):
    return sorted((c["id"], c["status"]) for c in report["checks"])


@pytest.fixture(scope="module")
def pyz():
    return kvmcheck_pyz()


def test_two_builds_are_byte_identical(pyz, tmp_path):
    proc = build(tmp_path / "again.pyz")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "again.pyz").read_bytes() == pyz.read_bytes()


def test_zip_holds_no_compiled_code_and_sorted_fixed_entries(pyz):
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(pyz) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert not [n for n in names if n.endswith((".so", ".pyd"))]  # MarkupSafe's speedups left out
    # bytecode of the building Python beside each source, never alone (other Pythons compile the source)
    pycs = [n for n in names if n.endswith(".pyc")]
    assert "kvmcheck/cli.pyc" in pycs and all(n[:-1] in names for n in pycs)
    with zipfile.ZipFile(pyz) as zf:
        assert zf.read("kvmcheck/cli.pyc")[:4] == importlib.util.MAGIC_NUMBER
    for needed in ("__main__.py", "kvmcheck/cli.py", "kvmcheck/checks/kvm.py", "kvmcheck/reports/text.txt.j2",
                   "kvmcheck/reports/report.schema.json", "kvmcheck/profiles/default.toml", "typer/__init__.py",
                   "click/__init__.py", "jinja2/__init__.py", "markupsafe/_native.py", "cpuinfo/__init__.py",
                   "rich/__init__.py", "tomli/__init__.py", "shellingham/__init__.py"):
        assert needed in names


@needs_system_python
def test_the_isolated_python_has_none_of_the_dependencies():
    for module in ("kvmcheck", "jinja2", "typer", "cpuinfo"):
        proc = run([*ISOLATED, "-c", f"import {module}"])
        assert proc.returncode == 1 and "ModuleNotFoundError" in proc.stderr, module


@needs_system_python
@pytest.mark.parametrize("host", ["prepared-intel-host", "intel-firmware-disabled"])
def test_captured_root_gives_the_installed_kvmcheck_results(pyz, host):
    proc = run([*ISOLATED, str(pyz), "check", "--root", str(HOSTS / host), "-f", "json"])
    assert proc.returncode in (0, 1, 3), proc.stderr
    report = json.loads(proc.stdout)
    validate_report(report)
    expected = kvmcheck.run(str(HOSTS / host)).to_dict()
    assert pairs(report) == pairs(expected)
    assert report["verdict"] == expected["verdict"]


@needs_system_python
@pytest.mark.parametrize("fmt,marker", [("text", "Verdict:"), ("html", "<html"), ("markdown", "| "),
                                        ("junit", "<testsuite"), ("prometheus", "kvmcheck_"), ("nagios", "KVM")])
def test_every_template_loads_from_inside_the_zip(pyz, fmt, marker):
    proc = run([*ISOLATED, str(pyz), "check", "--root", str(HOSTS / "prepared-intel-host"), "-f", fmt])
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert marker in proc.stdout and "Traceback" not in proc.stderr


@needs_system_python
def test_schema_profiles_and_check_list_come_from_the_zip(pyz):
    schema = run([*ISOLATED, str(pyz), "schema"])
    assert schema.returncode == 0 and json.loads(schema.stdout)["$schema"].startswith("https://json-schema.org/")
    profiles = run([*ISOLATED, str(pyz), "profiles"])
    assert profiles.returncode == 0 and "migration-pool" in profiles.stdout, profiles.stderr
    proc = run([*ISOLATED, str(pyz), "check", "--root", str(HOSTS / "prepared-intel-host"),
                "--profile", "migration-pool", "-f", "json"])
    assert proc.returncode in (0, 1, 3), proc.stderr
    config = json.loads(proc.stdout)["config"]
    assert config == {"profile": "migration-pool", "files": [f"{pyz}/kvmcheck/profiles/migration-pool.toml"]}
    listing = run([*ISOLATED, str(pyz), "list"])
    assert listing.returncode == 0 and "kvm.guest-run" in listing.stdout and "cpu.virt-flags" in listing.stdout


@needs_system_python
def test_live_run_of_this_machine(pyz):
    proc = run([*ISOLATED, str(pyz), "check", "-f", "json"])
    assert proc.returncode in (0, 1, 3), proc.stderr
    report = json.loads(proc.stdout)
    validate_report(report)
    assert report["host"]["live"] is True
    assert any(c["id"] == "kvm.guest-run" for c in report["checks"])


@needs_system_python
def test_a_plugin_beside_the_zip_is_discovered(pyz, tmp_path):
    """A plugin distribution on PYTHONPATH (-S: still no site-packages) registers through its entry point."""
    shutil.copytree(REPO / "examples" / "plugin" / "src" / "kvmcheck_example", tmp_path / "kvmcheck_example")
    dist = tmp_path / "kvmcheck_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kvmcheck-example\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[kvmcheck.checks]\nexample = kvmcheck_example.checks\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(tmp_path)}
    proc = run([SYSTEM_PYTHON, "-S", str(pyz), "check", "--root", str(HOSTS / "prepared-intel-host"),
                "--only", "example.*", "-f", "json"], env=env)
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert [c["id"] for c in json.loads(proc.stdout)["checks"]] == ["example.swap"]


def test_bullseye_python_3_9_runs_it(pyz, tmp_path):
    """Debian 11's Python 3.9, chrooted: the oldest Python kvmcheck supports, with nothing installed."""
    from test_kickstart import bullseye_root, needs_tools

    needs_tools("unshare", "chroot", "mount")
    root = bullseye_root()
    share = tmp_path / "share"
    share.mkdir()
    shutil.copy(pyz, share / "kvmcheck.pyz")
    shutil.copytree(HOSTS / "prepared-intel-host", share / "host", symlinks=True)
    script = ('set -e; mount --bind "$2" "$1/mnt"; '
              'chroot "$1" /usr/bin/python3 -c "import sys; print(sys.version_info[:2])"; '
              'chroot "$1" /usr/bin/python3 -I /mnt/kvmcheck.pyz check --root /mnt/host -f json '
              '--output /mnt/report.json || echo "rc=$?"')
    proc = run(["unshare", "--mount", "--propagation", "private", "--kill-child", "/bin/sh", "-c", script, "sh",
                str(root), str(share)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "(3, 9)"
    report = json.loads((share / "report.json").read_text())
    validate_report(report)
    assert pairs(report) == pairs(kvmcheck.run(str(HOSTS / "prepared-intel-host")).to_dict())
