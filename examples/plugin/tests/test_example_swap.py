# SPDX-License-Identifier: GPL-2.0-or-later
"""example.swap against the captured roots in tests/hosts, through kvmcheck's own Host and runner.

Run from examples/plugin after 'python3 -m pip install -e .[test]' (or with kvmcheck's tests, which
install this package into a temporary directory and run these tests against that install).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HOSTS = HERE / "hosts"

try:
    import kvmcheck_example.checks  # noqa: F401  (installed)
except ImportError:  # a source checkout that was not installed: test the source
    sys.path.insert(0, str(HERE.parent / "src"))

from kvmcheck.context import Context  # noqa: E402
from kvmcheck.host import Host  # noqa: E402
from kvmcheck.model import Check, Status  # noqa: E402
from kvmcheck.registry import checks_from  # noqa: E402
from kvmcheck.runner import run_check  # noqa: E402
from kvmcheck_example import checks  # noqa: E402


def materialize(name: str, dest: Path) -> Path:
    """A private copy of tests/hosts/NAME (a check may not write, but a test must not trust that)."""
    root = dest / name
    shutil.copytree(HOSTS / name, root, symlinks=True)
    return root


def run(root: Path):
    return run_check(checks.swap, Context(Host(str(root))), timeout=5)


def test_the_module_registers_exactly_one_documented_check():
    found = checks_from(checks)
    assert [c.id for c in found] == ["example.swap"]
    c = found[0]
    assert isinstance(c, Check) and c.source == "kvmcheck_example.checks"
    assert c.reads == ("/proc/swaps",)
    for part in ("What:", "Why:", "Fix:"):
        assert part in c.doc


def test_a_swap_partition_passes(tmp_path):
    r = run(materialize("swap-partition", tmp_path))
    assert (r.status, r.summary) == (Status.PASS, "7.9 GiB of swap (/dev/dm-1), 0.1 GiB used")
    assert r.evidence["areas"] == [{"path": "/dev/dm-1", "type": "partition", "size_kib": 8257532,
                                    "used_kib": 102400, "priority": -2}]


def test_no_swap_warns_with_a_fix(tmp_path):
    r = run(materialize("swap-none", tmp_path))
    assert r.status == Status.WARN
    assert r.summary == "no swap: under memory pressure the OOM killer ends a guest"
    assert "mkswap" in r.remediation and r.evidence == {"areas": []}


def test_nearly_full_swap_warns_and_escaped_paths_are_decoded(tmp_path):
    r = run(materialize("swap-nearly-full", tmp_path))
    assert r.status == Status.WARN
    assert r.summary == "swap 95% used (5.7 GiB of 6.0 GiB)"
    assert [a["path"] for a in r.evidence["areas"]] == ["/dev/zram0", "/var/lib/swap area"]
    assert r.evidence["areas"][1]["type"] == "file"


def test_an_offline_root_without_proc_is_skipped(tmp_path):
    r = run(tmp_path)
    assert (r.status, r.summary) == (Status.SKIP, "no /proc/swaps in this root")


def test_a_garbled_file_is_skipped_not_a_crash(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "swaps").write_text("Filename Type Size Used Priority\n/dev/sda2 partition lots 0 -2\n")
    assert run(tmp_path).status == Status.SKIP


def test_an_unreadable_file_is_a_skip_through_the_runner(tmp_path):
    (tmp_path / "proc").mkdir()
    swaps = tmp_path / "proc" / "swaps"
    swaps.write_text("")
    swaps.chmod(0)
    try:
        swaps.open("rb").close()
    except PermissionError:
        pass
    else:  # root reads it anyway
        pytest.skip("file permissions do not apply to this user (root)")
    r = run(tmp_path)
    assert (r.status, r.summary) == (Status.SKIP, "permission denied reading /proc/swaps")


@pytest.mark.parametrize("text, expected", [
    ("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n", []),
    ("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
     "/swap\\134x\\011y                          file\t\t1024\t\t0\t\t-2\n",
     [checks.SwapArea("/swap\\x\ty", "file", 1024, 0, -2)]),
])
def test_parse_proc_swaps(text, expected):
    assert checks.parse_proc_swaps(text) == expected
