# SPDX-License-Identifier: GPL-2.0-or-later
"""Confinement to --root, built from the attacks of the security review (issue 14).

* a race: ROOT/etc swapped between a directory and a link to the outside while kvmcheck reads;
* device nodes of an offline root (a snapshot's DEVICES manifest, a bind-mounted /dev): never opened;
* the rpm database: read without running rpm on an offline root, nothing written outside.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kvmcheck
from kvmcheck.host import Host

SECRET = "OUTSIDE-SECRET"
READS = 20_000  # the review saw 36,471 escapes in 84,754 reads: a few thousand reads meet the race many times
RUNS = 40  # one CLI report in 40 named the outside in the review
CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


SWAPPER = """
import os, sys
root, outside, stop = sys.argv[1:4]
etc, real = os.path.join(root, "etc"), os.path.join(root, "etc.real")
swaps = 0
print("swapping", flush=True)
while not os.path.exists(stop):
    os.rename(etc, real)
    os.symlink(outside, etc)  # absolute: outside the root, as the kernel reads it
    os.unlink(etc)
    os.rename(real, etc)
    swaps += 1
print(swaps)
"""


class Swapper:
    """Swap ROOT/etc between its real directory and an absolute symlink to an outside directory, in a loop,
    from another process (as the attacker did: a thread of ours would mostly wait for the GIL)."""

    def __init__(self, root: Path, outside: Path) -> None:
        self.stop = root.parent / "stop-swapping"
        self.argv = [sys.executable, "-c", SWAPPER, str(root), str(outside), str(self.stop)]
        self.swaps = 0

    def __enter__(self) -> "Swapper":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "swapping\n"  # the race is on before the first read
        return self

    def __exit__(self, *exc) -> None:
        self.stop.touch()
        out, _ = self.proc.communicate(timeout=30)
        self.swaps = int(out.strip() or 0)


@pytest.fixture
def swapped_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('NAME="Inside"\nID=rhel\nVERSION_ID=9.4\n')
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "os-release").write_text(f'NAME="{SECRET}"\nID=debian\nVERSION_ID=12\n')
    (outside / "hostname").write_text(f"{SECRET}\n")
    return root, outside


def test_swapping_etc_for_a_link_out_never_leaks_a_read(swapped_root):
    root, outside = swapped_root
    host = Host(str(root))
    seen = {"inside": 0, "missing": 0, "other error": 0}
    leaked = []
    with Swapper(root, outside) as swapper:
        for _ in range(READS):
            try:
                text = host.read_text("/etc/os-release")
                # Every other kind of lookup, too: each one walks the same racing component.
                names = host.listdir("/etc")
            except FileNotFoundError:  # ROOT/etc is the link (its target is not in the root) or not there
                seen["missing"] += 1
                continue
            except OSError:  # the old code could meet a link that was a directory again when read (EINVAL)
                seen["other error"] += 1
                continue
            if SECRET in text or "hostname" in names:
                leaked.append(text)
            else:
                seen["inside"] += 1
    print(f"{swapper.swaps} swaps, {seen}")
    assert swapper.swaps > 100, "the swapper barely ran: the race was not exercised"
    assert seen["inside"] > 0
    assert leaked == []


def test_stat_and_statvfs_follow_the_same_lookup(swapped_root):
    root, outside = swapped_root
    (outside / "only-outside").write_text("x")
    host = Host(str(root))
    with Swapper(root, outside) as swapper:
        found = [p for p in ("/etc/only-outside",) * 3000 if host.stat(p) is not None or host.lstat(p) is not None]
        found += [p for p in ("/etc/only-outside",) * 50 if host.statvfs(p) is not None]
    assert swapper.swaps > 10
    assert found == []


def test_cli_report_under_the_race_never_names_the_outside(swapped_root):
    root, outside = swapped_root
    with Swapper(root, outside):
        for _ in range(RUNS):  # in this process: the report's host block reads /etc/os-release and hostname
            report = json.dumps(kvmcheck.run(str(root), only=["kernel.version"]).to_dict())
            assert SECRET not in report
        proc = subprocess.run(CLI + ["check", "--root", str(root), "--only", "kernel.*", "--format", "json"],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert json.loads(proc.stdout)["checks"]


def test_live_root_still_follows_proc_and_sys_links():
    host = Host("/")
    assert host.read_text("/proc/self/status").startswith("Name:")  # /proc/self -> PID, followed by hand
    assert int(host.first_line("/proc/sys/kernel/pid_max") or 0) > 0
    assert host.node("/proc/self").kind == "dir"
    assert host.lstat("/proc/self") is not None and host.readlink("/proc/self") == str(os.getpid())
