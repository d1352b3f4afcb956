# SPDX-License-Identifier: GPL-2.0-or-later
"""Runner, registry and the engine's promises: crashes and hangs become results, the seam holds."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kvmcheck
from kvmcheck.facts.context import Context
from kvmcheck.core.host import Host
from kvmcheck.core.model import Outcome, Status
from kvmcheck.core.registry import check, load_checks
from kvmcheck.core.runner import SelectionError, run_check, select

REPO = Path(__file__).resolve().parents[1]
CORE_IDS = ["cpu.virt-flags", "cpu.64bit", "firmware.vt-enabled", "kernel.version", "kvm.modules", "kvm.device"]


def test_builtin_checks_register_through_entry_points():
    checks, errors = load_checks()
    assert errors == []
    ids = [c.id for c in checks]
    assert ids[: len(CORE_IDS)] == CORE_IDS or set(CORE_IDS) <= set(ids)
    assert len(ids) == len(set(ids))
    for c in checks:
        assert c.source.startswith("kvmcheck.checks."), c.source
        assert "What" in c.doc and "Why" in c.doc and "Fix" in c.doc, f"{c.id} needs What/Why/Fix docs"
        assert c.reads, f"{c.id} must declare what it reads"


def test_a_crashing_check_becomes_an_error_and_the_run_goes_on(tmp_path):
    @check("test.crash", "crashes")
    def crash(ctx):
        """What/Why/Fix."""
        raise ZeroDivisionError("boom")

    result = run_check(crash, Context(Host(str(tmp_path))), timeout=2)
    assert (result.id, result.status, result.summary) == ("test.crash", Status.ERROR,
                                                          "the check crashed: ZeroDivisionError: boom")
    assert "Traceback" not in result.detail
    debug = run_check(crash, Context(Host(str(tmp_path))), timeout=2, debug=True)
    assert "Traceback" in debug.detail and "ZeroDivisionError" in debug.detail


def test_a_hung_check_is_abandoned_after_its_time_limit(tmp_path):
    @check("test.hang", "hangs")
    def hang(ctx):
        time.sleep(30)
        return Outcome.passed("never")

    start = time.monotonic()
    result = run_check(hang, Context(Host(str(tmp_path))), timeout=0.3)
    assert time.monotonic() - start < 2
    assert (result.status, result.summary) == (Status.ERROR, "did not finish within 0.3 s")


def test_selection_globs_and_typos():
    checks, _ = load_checks()
    assert [c.id for c in select(checks, only=["cpu.*"])] == ["cpu.virt-flags", "cpu.64bit", "cpu.vulnerabilities"]
    assert "kvm.device" not in [c.id for c in select(checks, skip=["kvm.dev*"])]
    with pytest.raises(SelectionError):
        select(checks, only=["cpu.virt-flag"])  # a typo must not produce an empty, "ready" report


def test_check_ids_must_be_dotted_lowercase():
    with pytest.raises(ValueError):
        check("CPU001", "bad id")


def test_report_schema_and_verdict(tmp_path):
    report = kvmcheck.run(str(tmp_path), only=["kernel.version"])
    data = report.to_dict()
    assert list(data) == ["schema_version", "tool", "generated_at", "host", "verdict", "verdict_reason", "strict",
                          "essential", "undecided", "fix_first", "summary", "checks", "migration"]
    assert data["schema_version"] == 2 and data["tool"]["name"] == "kvmcheck"
    assert data["summary"] == {"pass": 0, "warn": 0, "fail": 0, "skip": 1, "error": 0}
    assert data["verdict"] == "unknown" and data["verdict_reason"].startswith("this root holds no installed system")
    assert list(data["checks"][0]) == ["id", "title", "status", "summary", "detail", "remediation", "evidence",
                                       "duration_ms", "cause"]
    json.dumps(data)


def test_strict_makes_warnings_blocking(host_root):
    root = host_root("pvm-host")
    assert kvmcheck.run(str(root), only=["kvm.device"]).verdict == "ready"  # a warn alone
    assert kvmcheck.run(str(root), only=["kvm.device"], strict=True).verdict == "not-ready"


def _imports_and_calls(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, "import " + alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, "import " + node.module.split(".")[0]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            yield node.lineno, "open()"


FORBIDDEN = {"import os", "import glob", "import subprocess", "import pathlib", "import shutil", "import io",
             "import fcntl", "import socket", "open()"}


@pytest.mark.parametrize("folder", ["checks", "kvmcheck/parsers"])
def test_checks_and_parsers_do_no_io_of_their_own(folder):
    offenders = [f"{p.relative_to(REPO)}:{line}: {what}" for p in sorted((REPO / folder).glob("*.py"))
                 for line, what in _imports_and_calls(p) if what in FORBIDDEN]
    assert offenders == []


def test_the_guard_catches_a_leak(tmp_path):
    leaky = tmp_path / "leaky.py"
    leaky.write_text("import os\nfrom subprocess import run\nopen('/proc/cpuinfo')\n")
    assert [w for _, w in _imports_and_calls(leaky) if w in FORBIDDEN] == ["import os", "import subprocess", "open()"]


def test_engine_path_imports_neither_typer_nor_jinja2(tmp_path):
    code = ("import sys, kvmcheck; r = kvmcheck.run(sys.argv[1]); r.to_dict(); "
            "print(sorted(m for m in ('typer', 'jinja2', 'click', 'rich', 'cpuinfo', 'psutil', 'distro', "
            "'importlib.metadata') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("make", ["fifo", "directory"])
def test_garbage_where_cpuinfo_belongs_is_a_clear_skip(tmp_path, make):
    import os

    (tmp_path / "proc").mkdir()
    target = tmp_path / "proc/cpuinfo"
    os.mkfifo(target) if make == "fifo" else target.mkdir()
    report = kvmcheck.run(str(tmp_path), only=["cpu.virt-flags"])
    (r,) = report.checks
    assert (r.status, r.evidence["path"]) == (Status.SKIP, "/proc/cpuinfo")
    assert r.summary.startswith("cannot read /proc/cpuinfo")
    reason = "not a regular file" if make == "fifo" else "is a directory"
    assert report.host["unreadable"] == [f"/proc/cpuinfo: {reason}"]


def test_builtin_modules_are_the_entry_points_pyproject_declares():
    """Built-ins are imported from BUILTIN_ORDER without importlib.metadata: the list must stay the
    one pyproject.toml declares, or a check module would be installed yet never run."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    from kvmcheck.core.registry import BUILTIN_ORDER, ENTRY_POINT_GROUP

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][ENTRY_POINT_GROUP]
    assert sorted(declared) == sorted(BUILTIN_ORDER)
    assert all(value == f"kvmcheck.checks.{name}" for name, value in declared.items())


def test_no_plugin_means_no_importlib_metadata():
    """The start-up saving is real: a run on a host without plugins never imports importlib.metadata."""
    code = ("import sys, kvmcheck; kvmcheck.run(only=['kernel.version']); "
            "print('importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_evidence_is_bounded_whatever_the_host_holds():
    """A 2 MB repository URL or a million mounts in a damaged root must not make a 4 MB report."""
    from kvmcheck.core.runner import MAX_EVIDENCE_ITEMS, MAX_EVIDENCE_TEXT, bounded_evidence

    huge = {"url": "x" * 2_000_000, "mounts": list(range(1_000_000)), "small": [1, "a"], "n": 3,
            "map": {f"k{i}": i for i in range(1000)}, "deep": [[[[[[[[[["bottom"]]]]]]]]]]}
    out = bounded_evidence(huge)
    assert out["url"] == "x" * MAX_EVIDENCE_TEXT + f"... ({2_000_000 - MAX_EVIDENCE_TEXT} more characters)"
    assert out["mounts"][:3] == [0, 1, 2] and out["mounts"][-1] == f"... ({1_000_000 - MAX_EVIDENCE_ITEMS} more)"
    assert len(out["mounts"]) == MAX_EVIDENCE_ITEMS + 1
    assert out["small"] == [1, "a"] and out["n"] == 3
    assert len(out["map"]) == MAX_EVIDENCE_ITEMS + 1 and out["map"]["..."] == f"{1000 - MAX_EVIDENCE_ITEMS} more"
    assert "nested too deep" in json.dumps(out["deep"])
    assert len(json.dumps(out)) < 20_000


def test_results_are_values_configuration_and_causes_make_new_ones(tmp_path):
    import dataclasses

    from kvmcheck.core.config import load
    from kvmcheck.core.model import Result, Status
    from kvmcheck.core.runner import attribute_causes

    (tmp_path / "c.toml").write_text('[severity."kvm.modules"]\nfail = "warn"\n[ignore]\n"cpu.virt-flags" = "lab"\n')
    flags = Result("cpu.virt-flags", "t", Status.FAIL, "no VT-x", "d", "enable it")
    modules = Result("kvm.modules", "t", Status.FAIL, "not loaded", "d", "modprobe", caused_by=["cpu.virt-flags"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        flags.status = Status.PASS
    cfg = load(config=str(tmp_path / "c.toml"), known_ids=["cpu.virt-flags", "kvm.modules"])
    new_flags, new_modules = cfg.apply([flags, modules])
    assert (flags.status, flags.ignored, modules.status) == (Status.FAIL, False, Status.FAIL)  # unchanged
    assert (new_flags.ignored, new_modules.status, new_modules.original_status) == (True, Status.WARN, Status.FAIL)
    caused = Result("kvm.device", "t", Status.FAIL, "no /dev/kvm", "d", "fix", caused_by=["kvm.modules", "gone"])
    attributed = attribute_causes([flags, modules, caused])
    assert [(r.id, r.caused_by) for r in attributed] == [("cpu.virt-flags", []), ("kvm.modules", ["cpu.virt-flags"]),
                                                          ("kvm.device", ["kvm.modules"])]
    assert attribute_causes([new_flags, new_modules])[1].caused_by == []  # an ignored finding explains nothing
    assert caused.caused_by == ["kvm.modules", "gone"] and caused.remediation == "fix"  # the given one is unchanged
    assert attributed[2].remediation.startswith("See kvm.modules, whose fix comes first")
