# SPDX-License-Identifier: GPL-2.0-or-later
"""Third-party plugins (docs/plugins.md): discovered, listed, run and explained; broken ones reported.

The example plugin (examples/plugin) is installed for real, by pip from its own pyproject.toml, but
into a temporary directory that only the kvmcheck subprocesses of these tests see (PYTHONPATH).
Installed into the test environment itself, its check would run in every other test's report and
change what they assert (the README's checks table, the prepared host's verdict).  The broken
plugins are installed the same way by hand: a *.dist-info directory with METADATA and
entry_points.txt beside their modules, which is all importlib.metadata looks for.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmcheck.facts.context import Context
from kvmcheck.core.host import Host
from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import load_checks

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "plugin"
EXAMPLE_HOSTS = EXAMPLE / "tests" / "hosts"
DOCS = REPO / "docs" / "plugins.md"
EXIT_READY, EXIT_NOT_READY, EXIT_UNKNOWN = 0, 1, 3


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """examples/plugin installed by pip into a private directory (from a copy: no build/ in the tree)."""
    work = tmp_path_factory.mktemp("example-plugin")
    src = work / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    site = work / "site"
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-cache-dir",
            "--disable-pip-version-check", "--target", str(site)]
    proc = None
    if importlib.util.find_spec("setuptools") is not None:  # build offline with the setuptools at hand, if it can
        proc = subprocess.run(argv + ["--no-build-isolation", "--no-index", str(src)],
                              capture_output=True, text=True, timeout=300)
    if proc is None or proc.returncode != 0:  # (setuptools < 70.1 without wheel cannot): pip's isolated build
        shutil.rmtree(site, ignore_errors=True)
        proc = subprocess.run(argv + [str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(site.glob("kvmcheck_example_plugin-1.0.0.dist-info"))
    return site


def install_fake_distribution(site: Path, name: str, entry_points: dict, modules: dict) -> None:
    """What pip would leave behind: the modules, and NAME-VERSION.dist-info with METADATA and entry_points.txt."""
    dist = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[kvmcheck.checks]\n{eps}")
    for rel, text in modules.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


CRASHING_CHECK = '''
from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check


@check("broken.crashes", "A plugin check that raises", reads=("/proc/swaps",))
def crashes(ctx):
    """What: nothing.  Why: to prove a crash is contained.  Fix: none."""
    ctx.host.read_optional("/proc/swaps")
    raise RuntimeError("plugin bug: swaps table exploded")
'''


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    """One distribution with two entry points: a module that cannot be imported, and a check that raises."""
    site = tmp_path_factory.mktemp("broken-plugin")
    install_fake_distribution(
        site, "kvmcheck-broken-plugin",
        {"broken_import": "kvmcheck_broken.missing_dependency", "broken_check": "kvmcheck_broken.crashing"},
        {"kvmcheck_broken/__init__.py": "",
         "kvmcheck_broken/missing_dependency.py": "import kvmcheck_no_such_module  # noqa: F401\n",
         "kvmcheck_broken/crashing.py": CRASHING_CHECK},
    )
    return site


def kvmcheck(*args: str, sites=()) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(s) for s in sites] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("NO_COLOR", None)
    return subprocess.run([sys.executable, "-c", "from kvmcheck.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, cwd=str(REPO), timeout=120)


def root_copy(name: str, dest: Path) -> Path:
    root = dest / name
    shutil.copytree(EXAMPLE_HOSTS / name, root, symlinks=True)
    return root


def by_id(report: dict) -> dict:
    return {r["id"]: r for r in report["checks"]}


# --- the good plugin ------------------------------------------------------------------------------
def test_the_installed_plugin_is_listed_after_the_builtins_with_its_source(example_site):
    builtin_ids = [c.id for c in load_checks()[0]]
    proc = kvmcheck("list", "-f", "json", sites=[example_site])
    assert (proc.returncode, proc.stderr) == (0, "")
    listed = json.loads(proc.stdout)
    assert [c["id"] for c in listed] == builtin_ids + ["example.swap"]
    assert listed[-1] == {"id": "example.swap", "title": "Swap space for guest memory overcommit",
                          "reads": ["/proc/swaps"], "source": "kvmcheck_example.checks"}
    text = kvmcheck("list", sites=[example_site]).stdout
    assert re.search(r"^example\.swap +Swap space for guest memory overcommit$", text, re.M)
    assert "example.swap" not in kvmcheck("list").stdout  # the test environment itself is untouched


@pytest.mark.parametrize("root, status, summary, code", [
    ("swap-partition", "pass", "7.9 GiB of swap (/dev/dm-1), 0.1 GiB used", EXIT_READY),
    ("swap-none", "warn", "no swap: under memory pressure the OOM killer ends a guest", EXIT_READY),
    ("swap-nearly-full", "warn", "swap 95% used (5.7 GiB of 6.0 GiB)", EXIT_READY),
])
def test_the_plugin_check_runs_on_a_captured_root(example_site, tmp_path, root, status, summary, code):
    proc = kvmcheck("check", "--root", str(root_copy(root, tmp_path)), "--only", "example.*", "-f", "json",
                    sites=[example_site])
    assert proc.returncode == code, proc.stderr
    report = json.loads(proc.stdout)
    assert [(r["id"], r["status"], r["summary"]) for r in report["checks"]] == [("example.swap", status, summary)]
    if status == "warn":  # a plugin's warning is a warning like any other: --strict makes it blocking
        strict = kvmcheck("check", "--root", str(tmp_path / root), "--only", "example.*", "--strict",
                          sites=[example_site])
        assert strict.returncode == EXIT_NOT_READY
        assert summary in strict.stdout


def test_the_text_report_shows_the_plugin_result(example_site, tmp_path):
    proc = kvmcheck("check", "--root", str(root_copy("swap-none", tmp_path)), "--only", "example.*", "--no-color",
                    sites=[example_site])
    assert proc.returncode == EXIT_READY
    assert "example.swap" in proc.stdout and "no swap" in proc.stdout and "mkswap" in proc.stdout


def test_explain_prints_the_plugin_docstring(example_site):
    proc = kvmcheck("explain", "example.swap", sites=[example_site])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("example.swap: Swap space for guest memory overcommit\n\n"
                          "The host has active swap, and it is not nearly full.\n")
    assert "What: the active swap areas in /proc/swaps" in out and "Why:" in out and "Fix:" in out
    assert out.rstrip().endswith("Reads: /proc/swaps")
    assert kvmcheck("explain", "example.swap").returncode == 2  # not installed: unknown id, a usage error


def test_the_example_plugins_own_tests_pass_against_the_installed_copy(example_site):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(example_site)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(EXAMPLE),
                           "-c", str(EXAMPLE / "pyproject.toml"), str(EXAMPLE / "tests"),
                           "-W", "ignore::DeprecationWarning"],
                          capture_output=True, text=True, env=env, cwd=str(EXAMPLE), timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", proc.stdout) and " failed" not in proc.stdout


# --- broken plugins -------------------------------------------------------------------------------
def test_list_reports_a_plugin_that_cannot_be_imported_and_lists_everything_else(example_site, broken_site):
    proc = kvmcheck("list", "-f", "json", sites=[example_site, broken_site])
    assert proc.returncode == 0
    ids = [c["id"] for c in json.loads(proc.stdout)]
    assert ids == [c.id for c in load_checks()[0]] + ["broken.crashes", "example.swap"]  # plugins by entry-point name
    assert proc.stderr.splitlines() == [
        "kvmcheck: plugin broken_import = kvmcheck_broken.missing_dependency: "
        "ModuleNotFoundError: No module named 'kvmcheck_no_such_module'"]


def test_an_import_error_and_a_crashing_check_are_errors_and_the_run_completes(example_site, broken_site, tmp_path):
    root = root_copy("swap-partition", tmp_path)
    proc = kvmcheck("check", "--root", str(root), "--only", "example.*", "--only", "broken.*", "-f", "json",
                    sites=[example_site, broken_site])
    assert proc.returncode == EXIT_UNKNOWN, proc.stderr  # an error decided nothing: no verdict
    report = json.loads(proc.stdout)
    results = by_id(report)
    assert list(results) == ["plugin.broken_import", "broken.crashes", "example.swap"]
    load = results["plugin.broken_import"]
    assert load["status"] == "error"
    assert load["summary"] == ("plugin could not be loaded: "
                               "ModuleNotFoundError: No module named 'kvmcheck_no_such_module'")
    assert "kvmcheck_broken.missing_dependency" in load["detail"]
    crash = results["broken.crashes"]
    assert (crash["status"], crash["summary"]) == ("error",
                                                   "the check crashed: RuntimeError: plugin bug: swaps table exploded")
    assert "Traceback" not in crash["detail"]
    assert results["example.swap"]["status"] == "pass"  # the checks after the broken ones still ran
    assert report["verdict"] == "unknown" and report["summary"]["error"] == 2
    assert report["undecided"] == ["plugin.broken_import", "broken.crashes"]


def test_a_full_run_with_broken_plugins_still_runs_every_builtin_check(example_site, broken_site, tmp_path):
    root = root_copy("swap-partition", tmp_path)
    proc = kvmcheck("check", "--root", str(root), "-f", "json", "--timeout", "10", sites=[example_site, broken_site])
    assert proc.returncode == EXIT_UNKNOWN, proc.stderr
    ids = [r["id"] for r in json.loads(proc.stdout)["checks"]]
    assert ids == ["plugin.broken_import"] + [c.id for c in load_checks()[0]] + ["broken.crashes", "example.swap"]
    debug = kvmcheck("check", "--root", str(root), "--only", "broken.*", "--debug", "-f", "json", sites=[broken_site])
    crash = by_id(json.loads(debug.stdout))["broken.crashes"]
    assert "Traceback" in crash["detail"] and "crashing.py" in crash["detail"]


def test_exit_zero_and_nagios_treat_a_broken_plugin_like_any_error(broken_site, tmp_path):
    root = root_copy("swap-partition", tmp_path)
    assert kvmcheck("check", "--root", str(root), "--only", "broken.*", "--exit-zero",
                    sites=[broken_site]).returncode == EXIT_READY
    nagios = kvmcheck("check", "--root", str(root), "--only", "broken.*", "-f", "nagios", sites=[broken_site])
    assert nagios.returncode == 3  # UNKNOWN: a broken plugin decided nothing about the host
    assert "plugin.broken_import" in nagios.stdout


def test_the_example_plugin_reads_only_through_the_host_seam():
    from test_engine import FORBIDDEN, _imports_and_calls

    sources = sorted((EXAMPLE / "src").rglob("*.py"))
    assert sources
    assert [f"{p}:{line}: {what}" for p in sources for line, what in _imports_and_calls(p) if what in FORBIDDEN] == []


# --- docs/plugins.md stays true -------------------------------------------------------------------
def test_every_context_and_host_method_the_sdk_documents_exists():
    text = DOCS.read_text()
    ctx_names = set(re.findall(r"\bctx\.(\w+)\(", text))
    host_names = set(re.findall(r"\bctx\.host\.(\w+)\b", text))
    assert {"cpuinfo", "modules", "kernel_config", "cmdline"} <= ctx_names
    assert {"read_text", "read_optional", "first_line", "listdir", "glob", "node", "exists"} <= host_names
    ctx = Context(Host("/"))
    for name in ctx_names:
        assert callable(getattr(ctx, name, None)), f"docs/plugins.md documents ctx.{name}() which does not exist"
    for name in host_names:
        assert hasattr(ctx.host, name), f"docs/plugins.md documents ctx.host.{name} which does not exist"
    for name in set(re.findall(r"\bOutcome\.(\w+)\(", text)):
        assert callable(getattr(Outcome, name, None)), f"docs/plugins.md documents Outcome.{name}()"
    assert (REPO / "examples/plugin/src/kvmcheck_example/checks.py").read_text().count("@check(") == 1
    assert 'example = "kvmcheck_example.checks"' in (EXAMPLE / "pyproject.toml").read_text()
