# SPDX-License-Identifier: GPL-2.0-or-later
"""memory.overcommit: the sysctl.d parser, the facts on captured roots, the judge table-driven, and this machine."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import kvmcheck
from kvmcheck.checks.memory import memory_overcommit
from kvmcheck.core.host import Host
from kvmcheck.core.settings import Settings
from kvmcheck.facts import Facts, Readout
from kvmcheck.facts.sysctl import Overcommit
from kvmcheck.parsers.meminfo import parse_meminfo
from kvmcheck.parsers.sysctl import Setting, configured, effective_files, parse_sysctl_conf

GIB = 1024 ** 3


# -- the parser ----------------------------------------------------------------------------------------------
def test_sysctl_lines_comments_separators_and_ignore_prefix():
    text = "# comment\n; also a comment\nvm.swappiness=10\n -vm/overcommit_memory = 2 \nnot an assignment\n= 3\n"
    assert parse_sysctl_conf(text) == [("vm.swappiness", "10", 3), ("vm.overcommit_memory", "2", 4)]


def test_sysctl_d_order_shadowing_and_last_assignment():
    files = effective_files({"/etc/sysctl.d": ["60-a.conf", "README"], "/usr/lib/sysctl.d": ["60-a.conf", "10-b.conf"],
                             "/run/sysctl.d": ["70-c.conf"]})
    # /etc's 60-a.conf hides /usr/lib's; order is by file name across directories
    assert files == ["/usr/lib/sysctl.d/10-b.conf", "/etc/sysctl.d/60-a.conf", "/run/sysctl.d/70-c.conf"]
    got = configured([("/a", "vm.x = 1\n"), ("/b", "vm.x = 2\nvm.y=3\n")])
    assert got == {"vm.x": Setting("2", "/b", 1), "vm.y": Setting("3", "/b", 2)}


# -- the facts on captured roots ------------------------------------------------------------------------------
def gather(root):
    return Facts(Host(str(root))).get("overcommit")


def test_running_values_and_what_boot_would_set(host_root):
    facts = gather(host_root("mem-overcommit-strict"))
    assert facts.running["vm.overcommit_memory"] == Readout("/proc/sys/vm/overcommit_memory", "ok", "2\n")
    assert facts.meminfo.get("CommitLimit") == 8151972 * 1024
    assert facts.configured["vm.overcommit_memory"].path == "/etc/sysctl.d/60-hardening.conf"


def test_an_etc_file_shadows_the_vendor_file_of_the_same_name(host_root):
    facts = gather(host_root("mem-overcommit-configured"))
    assert facts.running["vm.overcommit_memory"].state == "absent"
    assert facts.configured["vm.overcommit_memory"] == Setting("2", "/etc/sysctl.d/60-hardening.conf", 2)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a file to another user")
def test_a_file_nobody_may_read_is_denied_not_absent(host_root):
    root = host_root("mem-overcommit-strict")
    os.chmod(root / "proc/sys/vm/overcommit_memory", 0o000)
    for folder in (root, *root.parents):
        if str(folder) in ("/", "/tmp"):
            break
        os.chmod(folder, 0o755)
    code = ("import sys; from kvmcheck.core.host import Host; from kvmcheck.facts import Facts; "
            "import kvmcheck.checks.memory; "
            "print(Facts(Host(sys.argv[1])).get('overcommit').running['vm.overcommit_memory'].state)")
    proc = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", sys.executable,
                           "-c", code, str(root)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.strip() == "denied", proc.stderr
    report = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", sys.executable,
                             "-m", "kvmcheck", "check", "--root", str(root), "--only", "memory.overcommit", "-f",
                             "json"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert '"status": "skip"' in report.stdout and "Permission denied" in report.stdout, report.stderr


# -- the judge, table-driven -----------------------------------------------------------------------------------
def facts_of(mode=None, at_boot=None, limit_gib=None, committed_gib=None):
    running = {"vm.overcommit_memory": Readout("/proc/sys/vm/overcommit_memory", "ok", f"{mode}\n")
               if mode is not None else Readout("/proc/sys/vm/overcommit_memory", "absent")}
    meminfo = None
    if limit_gib is not None:
        meminfo = parse_meminfo(f"MemTotal: 16777216 kB\nCommitLimit: {int(limit_gib * 1048576)} kB\n"
                                f"Committed_AS: {int(committed_gib * 1048576)} kB\n")
    boot = {"vm.overcommit_memory": Setting(at_boot, "/etc/sysctl.d/60-x.conf", 3)} if at_boot else {}
    return Overcommit(running, meminfo, boot)


@pytest.mark.parametrize("facts, status, words", [
    (facts_of("0"), "pass", "heuristic overcommit"),
    (facts_of("1"), "pass", "always overcommit"),
    (facts_of("2", limit_gib=8, committed_gib=7.5), "fail", "not one 2 GiB guest fits"),
    (facts_of("2", limit_gib=32, committed_gib=4), "warn", "leaves 28.0 GiB to commit"),
    (facts_of("2"), "warn", "strict accounting"),  # no meminfo: the mode alone
    (facts_of(None, at_boot="2"), "warn", "/etc/sysctl.d/60-x.conf:3"),  # offline: what boot sets
    (facts_of(None, at_boot="0"), "pass", "heuristic"),
    (facts_of(None), "skip", "not set by sysctl.d"),
    (facts_of("7"), "skip", "not 0, 1 or 2"),
])
def test_judge(facts, status, words):
    out = memory_overcommit.func(overcommit=facts, settings=Settings())
    assert (out.status.value, words in out.summary) == (status, True), out.summary
    if status in ("warn", "fail"):
        assert "sysctl -w vm.overcommit_memory=0" in out.remediation


def test_the_guest_size_setting_moves_the_line():
    facts = facts_of("2", limit_gib=10, committed_gib=6)
    assert memory_overcommit.func(overcommit=facts, settings=Settings(guest_memory_gib=2)).status.value == "warn"
    assert memory_overcommit.func(overcommit=facts, settings=Settings(guest_memory_gib=8)).status.value == "fail"


# -- end to end -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, status", [("mem-overcommit-strict", "fail"), ("mem-overcommit-configured", "warn"),
                                          ("mem-ksm-off", "skip")])
def test_captured_roots(host_root, name, status):
    result = kvmcheck.run(str(host_root(name)), only=["memory.overcommit"]).checks[0]
    assert (result.id, result.status.value) == ("memory.overcommit", status)


def test_this_machine_agrees_with_its_own_files():
    """The live verdict follows what /proc/sys/vm/overcommit_memory holds now (read here by the test itself)."""
    with open("/proc/sys/vm/overcommit_memory") as fh:
        mode = fh.read().strip()
    result = kvmcheck.run("/", only=["memory.overcommit"]).checks[0]
    assert result.evidence["mode"] == mode
    assert result.status.value in {"0": ("pass",), "1": ("pass",), "2": ("warn", "fail")}[mode]
