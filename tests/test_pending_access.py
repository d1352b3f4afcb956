# SPDX-License-Identifier: GPL-2.0-or-later
"""Configured, not yet in effect (issue 20) for access and tunables: a user added to a group who still runs
without it (relogin), libvirt's configuration changed after its daemon started (service-restart), and a
sysctl.d value the running kernel does not hold (reboot, or 'sysctl --system').

The live tests are real: the kernel's credentials come from setpriv(1), the account files, /dev/kvm and
sysctl.d that kvmcheck reads are the host's own as seen from a private mount namespace (unshare(1)) in
which the test bind-mounts its copies over them, so nothing on this machine changes and nothing is mocked.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kvmcheck
from conftest import materialize
from kvmcheck.checks.consumer import kvm_consumer, libvirt_daemon
from kvmcheck.checks.kvm import awaiting_login, kvm_device
from kvmcheck.checks.memory import awaiting_sysctl, memory_hugepages
from kvmcheck.core.host import Node
from kvmcheck.core.model import Outcome
from kvmcheck.facts import Later, Readout
from kvmcheck.facts.consumer import (GroupsInEffect, Identity, LibvirtAnswers, ProcessInfo, QemuIdentity,
                                     StaleConfig, StaleMembership, groups_in_effect)
from kvmcheck.facts.kvm import Accounts
from kvmcheck.facts.sysctl import SysctlKeys
from kvmcheck.parsers.accounts import parse_group, parse_passwd
from kvmcheck.parsers.procfs import parse_btime, parse_stat_starttime, parse_status
from kvmcheck.parsers.sysctl import Setting

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


def later(value):
    return Later(lambda: value)


# -- the parsers ---------------------------------------------------------------------------------------------
STATUS = ("Name:\tlibvirtd\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t812\nPid:\t812\nUid:\t0\t0\t0\t0\n"
          "Gid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t108 4 24 \nVmPeak:\t 1441580 kB\n")


def test_status_gives_name_effective_ids_and_sorted_groups():
    assert parse_status(STATUS) == ("libvirtd", 0, 0, (4, 24, 108))
    setuid = STATUS.replace("Uid:\t0\t0\t0\t0", "Uid:\t1000\t0\t0\t0")  # real 1000, effective 0
    assert parse_status(setuid).uid == 0


def test_status_of_a_kernel_thread_has_no_groups_and_a_damaged_one_is_refused():
    assert parse_status("Name:\tkworker/0:1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n").groups == ()
    assert parse_status("Name:\tx\nUid:\t0\tzero\t0\t0\nGid:\t0\t0\t0\t0\n") is None
    assert parse_status("Name:\tx\nGid:\t0\t0\t0\t0\n") is None
    assert parse_status("") is None


def test_stat_starttime_is_counted_after_the_last_parenthesis():
    fields = " ".join(str(n) for n in range(3, 53)).replace("3", "S", 1)  # state, then fields 4..52
    assert parse_stat_starttime(f"812 (libvirtd) {fields}") == 22
    assert parse_stat_starttime(f"812 (a) (b c) {fields}") == 22  # comm may hold ") (" and spaces
    assert parse_stat_starttime("812 (libvirtd) S 1 2") is None
    assert parse_stat_starttime("no parenthesis at all") is None


def test_btime():
    assert parse_btime("cpu  1 2 3\nintr 5\nbtime 1764820000\nprocesses 9\n") == 1764820000
    assert parse_btime("cpu  1 2 3\n") is None
    assert parse_btime("btime soon\n") is None


# -- group membership: the comparison -----------------------------------------------------------------------
GROUP = "root:x:0:\nkvm:x:108:alice\nlibvirt:x:107:\nalice:x:1000:\nbob:x:1001:\nkvmusers:x:109:\n"
PASSWD = ("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"
          "bob:x:1001:109::/home/bob:/bin/bash\nlibvirt-qemu:x:64055:108::/var/lib/libvirt:/usr/sbin/nologin\n")
ACCOUNTS = Accounts(Readout("/etc/group", "ok"), Readout("/etc/passwd", "ok"), parse_group(GROUP),
                    tuple(parse_passwd(PASSWD)))


def proc(pid, name, uid, groups, gid=None):
    return ProcessInfo(pid, name, uid, uid if gid is None else gid, tuple(groups))


def never():
    def fail():
        raise AssertionError("the processes were read though no other login user is in the group")
    return Later(fail)


def test_the_invoking_user_listed_in_the_group_but_running_without_it_is_stale():
    found = groups_in_effect(ACCOUNTS, 108, (1000, (1000,)), never())
    assert found == GroupsInEffect("kvm", True, "", (StaleMembership("alice", "kvm", True, ()),))
    assert groups_in_effect(ACCOUNTS, 108, (1000, (108, 1000)), never()).stale == ()


def test_as_root_other_login_users_processes_are_compared_and_qemus_user_is_not():
    running = later((proc(40, "bash", 1000, [1000]), proc(41, "libvirtd", 1000, [1000]),
                     proc(42, "bash", 1000, [108, 1000]), proc(50, "qemu-system-x86", 64055, [])))
    found = groups_in_effect(ACCOUNTS, 108, (0, (0,)), running)
    assert found.stale == (StaleMembership("alice", "kvm", False, ((40, "bash"), (41, "libvirtd"))),)


def test_a_primary_group_from_passwd_is_a_membership_too():
    running = later((proc(60, "bash", 1001, [1001], gid=1001),))  # bob's primary group is 109 in /etc/passwd
    assert groups_in_effect(ACCOUNTS, 109, (0, (0,)), running).stale == (
        StaleMembership("bob", "kvmusers", False, ((60, "bash"),)),)
    assert groups_in_effect(ACCOUNTS, 109, (0, (0,)), later((proc(60, "bash", 1001, [], gid=109),))).stale == ()


def test_offline_or_without_a_group_nothing_is_compared():
    assert groups_in_effect(ACCOUNTS, 108, None, never()) == GroupsInEffect(
        "kvm", False, "an offline root: the groups of its processes cannot be read")
    assert groups_in_effect(ACCOUNTS, None, (1000, (1000,)), never()).compared is False


# -- group membership: the judges ---------------------------------------------------------------------------
KVM_0660 = Node("char", 0o660, 0, 108, 10, 232)
STALE_ALICE = GroupsInEffect("kvm", True, "", (StaleMembership("alice", "kvm", True, ()),))
RELOGIN_ALICE = ("configured, not yet in effect: alice was added to kvm in /etc/group; log out and in again (or "
                 "run 'newgrp kvm'), and restart services running as alice")


def kvm_open(euid, accessible):
    from kvmcheck.facts.kvm import KvmOpen

    return later(KvmOpen(euid, accessible, None))


@pytest.mark.parametrize("live, euid, accessible, in_effect, expected", [
    (True, 1000, False, STALE_ALICE, ("fail", "relogin", RELOGIN_ALICE)),
    (True, 1000, True, GroupsInEffect("kvm", True, ""), ("pass", None, "")),  # in effect: no pending
    # as root: bob, outside kvm, is locked out (warn); alice's bash still runs without kvm
    (True, 0, True, GroupsInEffect("kvm", True, "", (StaleMembership("alice", "kvm", False, ((40, "bash"),)),)),
     ("warn", "relogin", RELOGIN_ALICE + " (bash (40) still run without it)")),
    (False, 0, True, GroupsInEffect("kvm", False, "an offline root: the groups of its processes cannot be read"),
     ("warn", None, "")),
])
def test_kvm_device_is_pending_relogin_on_any_status(live, euid, accessible, in_effect, expected):
    out = kvm_device.func(kvm_node=KVM_0660, live=live, devtmpfs_nodes=later(()), accounts=ACCOUNTS,
                          kvm_open=kvm_open(euid, accessible), kvm_group_in_effect=later(in_effect))
    assert (out.status.value, out.pending, out.pending_note) == expected
    assert out.evidence["membership"]["compared"] is in_effect.compared


def test_the_note_names_at_most_three_processes_of_a_user():
    many = GroupsInEffect("kvm", True, "", (StaleMembership("alice", "kvm", False, tuple(
        (pid, "sleep") for pid in range(1, 6))),))
    note = awaiting_login(Outcome.passed("x"), many).pending_note
    assert note.endswith("(sleep (1), sleep (2), sleep (3) and 2 more still run without it)")


QEMU_CONF_LATE = StaleConfig("/etc/libvirt/qemu.conf", "virtqemud", 812, 1764820800.0, 1764824400.0)
LIBVIRTD_CONF_LATE = StaleConfig("/etc/libvirt/libvirtd.conf", "libvirtd", 700, 1764820800.0, 1764824400.0)
RESTART = ("configured, not yet in effect: /etc/libvirt/qemu.conf changed after virtqemud (pid 812) started at "
           "2025-12-04 04:00:00 UTC: systemctl restart virtqemud")
ANSWERS = LibvirtAnswers(False, False, 0.02, (0, ""), ("x86_64",), None, {"domain": "kvm"}, None, None, None,
                         False, None, False)


@pytest.mark.parametrize("stale, group, expected", [
    ((), GroupsInEffect("libvirt", True, ""), ("pass", None, "")),
    ((QEMU_CONF_LATE,), GroupsInEffect("libvirt", True, ""), ("pass", "service-restart", RESTART)),
    ((), GroupsInEffect("libvirt", True, "", (StaleMembership("alice", "libvirt", True, ()),)),
     ("pass", "relogin", RELOGIN_ALICE.replace("kvm", "libvirt"))),
    # both: the later step, with both in the note
    ((QEMU_CONF_LATE,), GroupsInEffect("libvirt", True, "", (StaleMembership("alice", "libvirt", True, ()),)),
     ("pass", "relogin", RESTART + "; " + RELOGIN_ALICE.replace("kvm", "libvirt").split(": ", 1)[1])),
])
def test_libvirt_daemon_pending(stale, group, expected):
    out = libvirt_daemon.func(libvirt_socket="/run/libvirt/virtqemud-sock-ro", libvirt_answers=later(ANSWERS),
                              consumer_lockout=later(None), live=True, libvirt_stale_config=later(stale),
                              libvirt_group_in_effect=later(group))
    assert (out.status.value, out.pending, out.pending_note) == expected


def identity():
    who = Identity("libvirt-qemu", 64055, 64055, (64055,), "/etc/libvirt/qemu.conf user")
    return QemuIdentity(who, "", True, {0: "root", 108: "kvm", 64055: "libvirt-qemu"}, "ok")


@pytest.mark.parametrize("mode, gid, stale, expected", [
    # qemu.conf changed after the daemon started: the finding may be what the change fixes
    (0o600, 0, (QEMU_CONF_LATE,), ("fail", "service-restart")),
    (0o600, 0, (LIBVIRTD_CONF_LATE,), ("fail", None)),  # not a file kvm.consumer judges
    (0o666, 0, (QEMU_CONF_LATE,), ("pass", None)),  # no finding to wait on
    (0o600, 0, None, ("fail", None)),  # offline: nothing compared
])
def test_kvm_consumer_finding_pending_a_changed_qemu_conf(mode, gid, stale, expected):
    rw = bool(mode & 0o006)
    devices = {"/dev/kvm": {"present": True, "mode": f"{mode:04o}", "owner": 0, "group": "root", "rw": rw},
               "/dev/vhost-net": {"present": False, "kind": None}, "/dev/net/tun": {"present": False, "kind": None}}
    out = kvm_consumer.func(libvirt_daemon_installed=True, qemu_identity=identity(), consumer_devices=devices,
                            consumer_proof=later(None), live=stale is not None, libvirt_stale_config=later(stale))
    assert (out.status.value, out.pending) == expected


# -- sysctl: the judge ----------------------------------------------------------------------------------------
def keys(running, value, changed=None, booted=None, path="/etc/sysctl.d/80-hugepages.conf"):
    return SysctlKeys({"vm.nr_hugepages": Readout("/proc/sys/vm/nr_hugepages", "ok", running)},
                      {"vm.nr_hugepages": Setting(value, path, 2)}, booted,
                      {path: changed} if changed is not None else {})


@pytest.mark.parametrize("found, pending", [
    (keys("0\n", "1024"), "reboot"),
    (keys("1024\n", " 1024 "), None),  # the same number, spacing aside
    (keys("0\n", "1024", changed=1000.0, booted=2000), None),  # applied at this boot; changed since (or fell short)
    (keys("0\n", "1024", changed=3000.0, booted=2000), "reboot"),  # written after this boot
    (SysctlKeys({"vm.nr_hugepages": Readout("/proc/sys/vm/nr_hugepages", "absent")},
                {"vm.nr_hugepages": Setting("1024", "/etc/sysctl.conf", 1)}, None, {}), None),  # nothing running
])
def test_sysctl_pending(found, pending):
    out = awaiting_sysctl(Outcome.passed("x"), found)
    assert out.pending == pending
    if found.running["vm.nr_hugepages"].ok:
        assert out.evidence["sysctl"]["vm.nr_hugepages"]["pending"] is (pending is not None)
    else:
        assert "sysctl" not in out.evidence


def test_a_hostile_value_is_quoted_in_the_note():
    out = awaiting_sysctl(Outcome.passed("x"), keys("0\n", "1\x1b[2J"))
    assert "\x1b" not in out.pending_note and "vm.nr_hugepages='1\\x1b[2J' in" in out.pending_note


def test_no_configured_key_leaves_the_outcome_as_it_was():
    from kvmcheck.facts.memory import Meminfo, Thp

    assert memory_hugepages.func(hugepage_pools={}, meminfo=Meminfo("absent"), thp=Thp(None, None, None, False),
                                 sysfs_mm=False,
                                 hugepage_sysctl=SysctlKeys({}, {}, None, {})).evidence.get("sysctl") is None


# -- the captured roots: exact (id, status, pending) ---------------------------------------------------------
HUGEPAGES_NOTE = ("configured, not yet in effect: vm.nr_hugepages=1024 in /etc/sysctl.d/80-hugepages.conf, 0 now: "
                  "run 'sysctl --system' (allocation may fall short on fragmented memory) or reboot")
OVERCOMMIT_NOTE = ("configured, not yet in effect: vm.overcommit_memory=2 in /etc/sysctl.d/60-hardening.conf, 0 now: "
                   "run 'sysctl --system' or reboot")
ROOTS = {
    # sysctl.d asks for 1024 pages of 2 MiB, the kernel holds none: nobody ran 'sysctl --system'
    "pending-hugepages-sysctl": [("memory.hugepages", "pass", "reboot")],
    # the twin: the pool was allocated
    "pending-hugepages-applied": [("memory.hugepages", "pass", None)],
    # the vendor's 1024 is hidden by /etc's file of the same name, which asks for 0: nothing pending
    "pending-hugepages-shadowed": [("memory.hugepages", "pass", None)],
    # CIS hardening's strict accounting written to sysctl.d, the kernel still in heuristic mode
    "pending-overcommit-sysctl": [("memory.overcommit", "pass", "reboot")],
    # the twin: in effect, and not one guest fits
    "pending-overcommit-applied": [("memory.overcommit", "fail", None)],
    # alice is in kvm in /etc/group; an offline root cannot say what her processes hold: nothing pending
    "pending-relogin-offline": [("kvm.device", "pass", None)],
}


@pytest.mark.parametrize("name", sorted(ROOTS))
def test_roots(name, tmp_path):
    root = materialize(name, tmp_path)
    expected = ROOTS[name]
    report = kvmcheck.run(str(root), only=[i for i, _, _ in expected])
    assert [(r.id, r.status.value, r.pending) for r in report.checks] == expected
    got = {r.id: r for r in report.checks}
    if name == "pending-hugepages-sysctl":
        assert got["memory.hugepages"].pending_note == HUGEPAGES_NOTE
        assert report.pending == {"reboot": ["memory.hugepages"]}
        assert report.to_dict()["pending"] == {"reboot": ["memory.hugepages"]}
    if name == "pending-overcommit-sysctl":
        assert got["memory.overcommit"].pending_note == OVERCOMMIT_NOTE
    if name == "pending-relogin-offline":
        assert got["kvm.device"].evidence["membership"] == {
            "group": "kvm", "compared": False, "why": "an offline root: the groups of its processes cannot be read"}


# -- live: a real second user, the host's files seen through a private mount namespace ------------------------
ALICE_UID = 4242  # a uid no account on this machine has: the test gives it one in its own /etc/passwd
# Run as root inside 'unshare --mount': bind-mount each copy over the host's file (and, when asked, a
# /dev/kvm node of the test's mode and group, made on a tmpfs of the namespace), then exec the command.
SETUP = r"""
import json, os, subprocess, sys
plan = json.loads(sys.argv[1])
if plan.get("kvm"):
    fs = plan["kvm"]["dir"]
    subprocess.run(["mount", "-t", "tmpfs", "kvmcheck-test", fs], check=True)
    node = os.path.join(fs, "kvm")
    os.mknod(node, 0o20000 | 0o600, os.makedev(10, 232))
    os.chmod(node, int(plan["kvm"]["mode"], 8))
    os.chown(node, 0, plan["kvm"]["gid"])
    plan["binds"].append([node, "/dev/kvm"])
for source, target in plan["binds"]:
    subprocess.run(["mount", "--bind", source, target], check=True)
os.execvp(plan["argv"][0], plan["argv"])
"""


def namespaced(argv, binds, kvm=None):
    """argv run in a private mount namespace where binds (source, target) cover the host's files."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("needs root, unshare(1) and setpriv(1)")
    plan = {"binds": [[str(s), t] for s, t in binds], "argv": list(argv), "kvm": kvm}
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", SETUP,
                           json.dumps(plan)], capture_output=True, text=True, timeout=300, cwd="/")
    if proc.returncode not in (0, 1, 3) or not proc.stdout.startswith("{"):
        pytest.skip(f"cannot run in a private mount namespace here: {proc.stderr.strip()[-300:]}")
    return {c["id"]: c for c in json.loads(proc.stdout)["checks"]}


def accounts_with_alice(tmp_path, group_name):
    """Copies of /etc/group and /etc/passwd where alice (ALICE_UID, a login shell) is listed in group_name."""
    import grp

    try:
        gid = grp.getgrnam(group_name).gr_gid
    except KeyError:
        pytest.skip(f"no {group_name} group on this machine")
    lines = []
    for line in Path("/etc/group").read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == group_name:
            fields[3] = ",".join([m for m in fields[3].split(",") if m] + ["alice"])
            line = ":".join(fields)
        lines.append(line)
    (tmp_path / "group").write_text("\n".join(lines + [f"alice:x:{ALICE_UID}:"]) + "\n")
    (tmp_path / "passwd").write_text(Path("/etc/passwd").read_text().rstrip("\n")
                                     + f"\nalice:x:{ALICE_UID}:{ALICE_UID}:Alice:/home/alice:/bin/bash\n")
    return gid, [(tmp_path / "group", "/etc/group"), (tmp_path / "passwd", "/etc/passwd")]


def as_alice(groups):
    return ["setpriv", f"--reuid={ALICE_UID}", f"--regid={ALICE_UID}",
            "--clear-groups" if not groups else "--groups=" + ",".join(map(str, groups))]


@pytest.mark.parametrize("holds_kvm, expected", [(False, ("fail", "relogin")), (True, ("pass", None))])
def test_live_the_invoking_user_added_to_kvm_but_not_logged_in_again(tmp_path, holds_kvm, expected):
    gid, binds = accounts_with_alice(tmp_path, "kvm")
    (tmp_path / "fs").mkdir()
    argv = as_alice([gid] if holds_kvm else []) + CLI + ["check", "--only", "kvm.device", "-f", "json"]
    got = namespaced(argv, binds, kvm={"dir": str(tmp_path / "fs"), "mode": "0660", "gid": gid})["kvm.device"]
    assert (got["status"], got.get("pending")) == expected
    assert got["evidence"]["invoking_uid"] == ALICE_UID
    if not holds_kvm:
        assert got["pending_note"] == RELOGIN_ALICE
        assert got["evidence"]["membership"]["not_in_effect"] == [
            {"user": "alice", "this_process": True, "processes": []}]


@pytest.mark.parametrize("holds_kvm", [False, True])
def test_live_as_root_another_users_running_session_without_the_group(tmp_path, holds_kvm):
    gid, binds = accounts_with_alice(tmp_path, "kvm")
    (tmp_path / "fs").mkdir()
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv(1)")
    session = subprocess.Popen(as_alice([gid] if holds_kvm else []) + ["sleep", "300"])
    try:
        argv = CLI + ["check", "--only", "kvm.device", "-f", "json"]
        got = namespaced(argv, binds, kvm={"dir": str(tmp_path / "fs"), "mode": "0660", "gid": gid})["kvm.device"]
    finally:
        session.kill()
        session.wait()
    # root passes or warns (this machine's other login users may be locked out): the pending step is the point
    assert got["status"] in ("pass", "warn") and got["evidence"]["invoking_uid"] == 0
    if holds_kvm:
        assert got.get("pending") is None and got["evidence"]["membership"]["not_in_effect"] == []
    else:
        assert got["pending"] == "relogin"
        assert got["pending_note"] == RELOGIN_ALICE + f" (sleep ({session.pid}) still run without it)"


def test_live_this_machine_as_it_is_agrees_with_what_the_test_reads():
    """Without a namespace: kvm.device is pending only when this process lacks a group /etc/group gives it."""
    report = kvmcheck.run(only=["kvm.device"])
    got = report.checks[0]
    membership = got.evidence.get("membership")
    if membership is None or not membership["compared"]:
        assert got.pending is None
        return
    mine = [s for s in membership["not_in_effect"] if s["this_process"]]
    if mine:
        assert got.pending == "relogin"
    assert (got.pending is None) == (membership["not_in_effect"] == [])


def sysctl_d_with(tmp_path, value, mtime=None):
    """A copy of /etc/sysctl.d with one more file, sorted last, that sets vm.nr_hugepages."""
    copy = tmp_path / "sysctl.d"
    shutil.copytree("/etc/sysctl.d", copy, symlinks=True)
    conf = copy / "zz-kvmcheck-test.conf"
    conf.write_text(f"vm.nr_hugepages = {value}\n")
    if mtime is not None:
        os.utime(conf, (mtime, mtime))
    return [(copy, "/etc/sysctl.d")]


def running_hugepages() -> int:
    if any("nr_hugepages" in line for line in Path("/etc/sysctl.conf").read_text().splitlines()
           if not line.lstrip().startswith(("#", ";"))) if Path("/etc/sysctl.conf").exists() else False:
        pytest.skip("/etc/sysctl.conf sets vm.nr_hugepages and comes after every sysctl.d file")
    return int(Path("/proc/sys/vm/nr_hugepages").read_text())


def boot_time() -> int:
    return parse_btime(Path("/proc/stat").read_text())


@pytest.mark.parametrize("change, mtime, expected", [
    (1, None, "reboot"),  # written now, after this boot: not applied yet
    (0, None, None),  # the value the kernel holds
    (1, "before boot", None),  # older than this boot: applied then, and changed since (or fell short)
])
def test_live_sysctl_d_against_the_running_kernel(tmp_path, change, mtime, expected):
    value = running_hugepages() + change
    when = boot_time() - 3600 if mtime == "before boot" else None
    got = namespaced(CLI + ["check", "--only", "memory.hugepages", "-f", "json"],
                     sysctl_d_with(tmp_path, value, when))["memory.hugepages"]
    assert got.get("pending") == expected
    assert got["evidence"]["sysctl"]["vm.nr_hugepages"]["configured"] == str(value)
    if expected:
        assert got["pending_note"].startswith(f"configured, not yet in effect: vm.nr_hugepages={value} in "
                                              f"/etc/sysctl.d/zz-kvmcheck-test.conf, {value - change} now: ")


# -- live: a real libvirtd, its configuration changed after it started ----------------------------------------
from test_consumer import libvirtd  # noqa: E402,F401 - the fixture: a libvirtd of this machine, started here


def started_at(pid: int) -> float:
    ticks = parse_stat_starttime(Path(f"/proc/{pid}/stat").read_text())
    return boot_time() + ticks / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("offset, expected", [(5.0, "service-restart"), (-60.0, None)])
def test_live_libvirtd_conf_changed_after_the_daemon_started(libvirtd, tmp_path, offset, expected):
    if not os.path.exists("/etc/libvirt/libvirtd.conf"):
        pytest.skip("no /etc/libvirt/libvirtd.conf")
    # wait (untimed) for the first answer: a fresh daemon probes QEMU before it answers capabilities
    subprocess.run(["virsh", "-r", "capabilities"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120, check=False)
    started = started_at(libvirtd.pid)
    copy = tmp_path / "libvirtd.conf"
    shutil.copy2("/etc/libvirt/libvirtd.conf", copy)
    os.utime(copy, (started + offset, started + offset))
    got = namespaced(CLI + ["check", "--only", "kvm.device", "--only", "libvirt.daemon", "-f", "json"],
                     [(copy, "/etc/libvirt/libvirtd.conf")])["libvirt.daemon"]
    assert got["status"] in ("pass", "warn") and got.get("pending") == expected
    if expected:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
        assert got["pending_note"] == (f"configured, not yet in effect: /etc/libvirt/libvirtd.conf changed after "
                                       f"libvirtd (pid {libvirtd.pid}) started at {when}: systemctl restart libvirtd")
