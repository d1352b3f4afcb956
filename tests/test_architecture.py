# SPDX-License-Identifier: GPL-2.0-or-later
"""The structure the code keeps (issue 15): facts apart from judges, one of each, a layout that shows it.

Measured on the source, so a change that breaks a rule fails here with the place named.
"""
from __future__ import annotations

import ast
import statistics
from pathlib import Path

TREE = Path(__file__).resolve().parent.parent
CHECKS = sorted((TREE / "checks").glob("*.py"))
ENGINE = TREE / "kvmcheck"
OS_ERRORS = {"OSError", "IOError", "EnvironmentError", "PermissionError", "FileNotFoundError", "NotADirectoryError",
             "IsADirectoryError", "BlockingIOError", "TimeoutError", "ConnectionError", "InterruptedError",
             "ChildProcessError", "ProcessLookupError", "FileExistsError"}


def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _is_check(node: ast.AST) -> bool:
    return isinstance(node, ast.FunctionDef) and any(
        isinstance(d, ast.Call) and getattr(d.func, "id", getattr(d.func, "attr", "")) == "check"
        for d in node.decorator_list)


def check_lengths() -> dict:
    """{module:function: lines from def to its last line, docstring included} of every @check function."""
    return {f"{path.name}:{node.name}": node.end_lineno - node.lineno + 1
            for path in CHECKS for node in _parsed(path).body if _is_check(node)}


def test_checks_are_short():
    lengths = check_lengths()
    assert len(lengths) >= 30
    assert statistics.median(lengths.values()) <= 40, sorted(lengths.items(), key=lambda kv: -kv[1])[:10]
    assert {name: n for name, n in lengths.items() if n > 80} == {}


def test_no_function_in_checks_is_long():
    """Splitting a check into one long helper is no gain: every function under checks/ stays within 80 lines."""
    long = {f"{p.name}:{n.name}": n.end_lineno - n.lineno + 1 for p in CHECKS for n in ast.walk(_parsed(p))
            if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 80}
    assert long == {}


def test_checks_never_touch_the_host_nor_catch_os_errors():
    """Facts own the Host and every OSError; a check judges what they found."""
    found = []
    for path in CHECKS:
        for node in ast.walk(_parsed(path)):
            if isinstance(node, ast.Attribute) and node.attr == "host":
                found.append(f"{path.name}:{node.lineno}: .host")
            if isinstance(node, ast.arg) and node.arg in ("host", "ctx", "facts"):
                found.append(f"{path.name}:{node.lineno}: parameter {node.arg}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if any(n.endswith(("core.host", "facts.context")) or n in ("Host", "Context") for n in names):
                    found.append(f"{path.name}:{node.lineno}: imports the Host or the Context")
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
                caught = {getattr(t, "id", getattr(t, "attr", "")) for t in types}
                if caught & OS_ERRORS or "Exception" in caught or "BaseException" in caught:
                    found.append(f"{path.name}:{node.lineno}: except {', '.join(sorted(caught))}")
            if isinstance(node, ast.ExceptHandler) and node.type is None:
                found.append(f"{path.name}:{node.lineno}: bare except")
    assert found == []


def test_six_modules_or_fewer_stay_loose_in_the_package():
    loose = sorted(p.name for p in ENGINE.glob("*.py"))
    assert len(loose) <= 6, loose
    for package in ("core", "facts", "tools", "parsers"):
        assert (ENGINE / package / "__init__.py").is_file()


def test_exit_statuses_are_defined_once():
    """One ExitStatus (kvmcheck.core.status, re-exported by kvmcheck.core.model); nothing else names an exit code
    by number."""
    defined = [str(p.relative_to(TREE)) for p in ENGINE.rglob("*.py") if "class ExitStatus" in p.read_text()]
    assert defined == ["kvmcheck/core/status.py"]
    numeric = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(_parsed(path)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "Exit", "SystemExit", "exit", "_exit") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, int) and node.args[0].value != 0:
                numeric.append(f"{path.relative_to(TREE)}:{node.lineno}")
            for kw in getattr(node, "keywords", []) if isinstance(node, ast.Call) else []:
                if kw.arg == "code" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, int) \
                        and kw.value.value != 0:
                    numeric.append(f"{path.relative_to(TREE)}:{node.lineno}")
    assert numeric == []
