# SPDX-License-Identifier: GPL-2.0-or-later
"""cgroups.controllers and security.svirt as judges of fact records (no root needed), and their facts on
captured roots: a file that cannot be read is kept apart from one that is absent (issue 15).

The permission-denied cases run as nobody (setpriv): root reads a file whatever its mode.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvmcheck.checks.cgroups import cgroups_controllers
from kvmcheck.checks.security import security_svirt
from kvmcheck.core.host import Host
from kvmcheck.facts import Readout
from kvmcheck.facts.cgroups import BpfConfig, CgroupTable, CgroupV2, Placement, V2Mount, cgroup_v2, proc_cgroups
from kvmcheck.facts.security import AppArmorFiles, LsmRuntime, QemuConf, lsm_runtime
from kvmcheck.facts.system import MountTable
from kvmcheck.parsers.cgroups import cgroup_layout, parse_controller_list, parse_proc_cgroups
from kvmcheck.parsers.kernel_version import parse_kernel_release
from kvmcheck.parsers.mounts import parse_mounts
from kvmcheck.parsers.security_conf import Setting

from conftest import as_nobody, materialize

# --- cgroups.controllers, judged from records -----------------------------------------------------------
V1_ALL = "".join(f"cgroup /sys/fs/cgroup/{c} cgroup rw,{c} 0 0\n" for c in
                 ("cpu,cpuacct", "cpuset", "memory", "devices", "blkio", "pids", "freezer"))
V1_NO_MEMORY = V1_ALL.replace("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n", "")
TABLE = ("#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\ncpuacct\t2\t1\t1\ncpuset\t3\t1\t1\n"
         "memory\t0\t1\t0\ndevices\t6\t1\t1\nblkio\t8\t1\t1\npids\t5\t1\t1\nfreezer\t4\t1\t1\n")
HYBRID = V1_NO_MEMORY + "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
V2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n"


def ok(path, text):
    return Readout(path, "ok", text)


def denied(path):
    return Readout(path, "denied", reason="Permission denied")


def absent(path):
    return Readout(path, "absent")


def table(readout):
    return CgroupTable(readout, parse_proc_cgroups(readout.text) if readout.ok else {})


def v2(layout, *files, subtree=None, freeze=()):
    """CgroupV2 as the fact builds it, from the cgroup.controllers readout of each cgroup2 mount."""
    visited = [V2Mount(m, f, parse_controller_list(f.text or "") if f.ok else ()) for m, f in zip(layout.v2, files)]
    active = next((v for v in visited if v.controllers), None)
    if active is None and not layout.v1_controllers():
        active = next((v for v in visited if not v.file.ok), None)
    return CgroupV2(tuple(visited), active, subtree if active else None, tuple(freeze), None)


def judge_cgroups(mounts, proc=ok("/proc/cgroups", TABLE), v2_files=(), placement=absent("/proc/self/cgroup"),
                  live=False, subtree=None):
    entries = tuple(parse_mounts(mounts, comments=False)) if mounts is not None else ()
    layout = cgroup_layout(entries)
    return cgroups_controllers.func(
        mounts=MountTable("/proc/self/mounts" if mounts is not None else None, entries, ()), cgroup_mounts=layout,
        cgroup_v2=v2(layout, *v2_files, subtree=subtree), proc_cgroups=table(proc),
        cgroup_placement=Placement(placement, ()), cgroup_bpf=BpfConfig("y", "/boot/config-6.1.0", False),
        osrelease="6.1.0", kernel_version=parse_kernel_release("6.1.0"), live=live)


CONTROLLERS = "cpuset cpu io memory pids\n"
CGROUP_CASES = {
    "no mount table, offline": (dict(mounts=None), "skip", "no /proc/mounts in this root"),
    "no mount table, live": (dict(mounts=None, live=True), "warn", "no mount table readable"),
    "no cgroup mount": (dict(mounts="proc /proc proc rw 0 0\n"), "warn", "no cgroup file system is mounted"),
    "v1, all": (dict(mounts=V1_ALL), "pass",
                "cgroup v1: cpu, cpuacct, cpuset, memory, devices, blkio, pids, freezer"),
    "v1, memory disabled at boot": (dict(mounts=V1_NO_MEMORY), "warn", "cgroup v1: missing memory"),
    "v1, memory unmounted, /proc/cgroups absent": (
        dict(mounts=V1_NO_MEMORY, proc=absent("/proc/cgroups")), "warn", "cgroup v1: missing memory"),
    # The defect of issue 15: a denied /proc/cgroups read as absent named a wrong cause and fix.
    "v1, memory unmounted, /proc/cgroups denied": (
        dict(mounts=V1_NO_MEMORY, proc=denied("/proc/cgroups")), "skip", "permission denied reading /proc/cgroups"),
    "v1, all, /proc/cgroups denied": (dict(mounts=V1_ALL, proc=denied("/proc/cgroups")), "pass",
                                      "cgroup v1: cpu, cpuacct, cpuset, memory, devices, blkio, pids, freezer"),
    "v2": (dict(mounts=V2, v2_files=[ok("/sys/fs/cgroup/cgroup.controllers", CONTROLLERS)]), "pass",
           "cgroup v2 at /sys/fs/cgroup: cpu, cpuacct, cpuset, memory, devices, io, pids, freezer"),
    "v2, controllers and /proc/cgroups denied": (
        dict(mounts=V2, v2_files=[denied("/sys/fs/cgroup/cgroup.controllers")], proc=denied("/proc/cgroups")),
        "skip", "permission denied reading /sys/fs/cgroup/cgroup.controllers; permission denied reading /proc/cgroups"),
    "v2, controllers and /proc/cgroups absent, offline": (
        dict(mounts=V2, v2_files=[absent("/sys/fs/cgroup/cgroup.controllers")], proc=absent("/proc/cgroups")),
        "skip", "cgroup v2 is mounted at /sys/fs/cgroup, but neither its cgroup.controllers nor /proc/cgroups can "
        "be read in this root"),
    "v2, controllers denied, /proc/cgroups bound to v1": (
        dict(mounts=V2, v2_files=[denied("/sys/fs/cgroup/cgroup.controllers")]), "skip",
        "permission denied reading /sys/fs/cgroup/cgroup.controllers"),
    "hybrid, cgroup2 denied, memory on neither": (
        dict(mounts=HYBRID, v2_files=[denied("/sys/fs/cgroup/unified/cgroup.controllers")]), "skip",
        "permission denied reading /sys/fs/cgroup/unified/cgroup.controllers"),
    "hybrid, cgroup2 empty, memory disabled": (
        dict(mounts=HYBRID, v2_files=[ok("/sys/fs/cgroup/unified/cgroup.controllers", "")]), "warn",
        "hybrid cgroup v1/v2: missing memory"),
}


@pytest.mark.parametrize("case", sorted(CGROUP_CASES))
def test_cgroups_judge(case):
    kwargs, status, summary = CGROUP_CASES[case]
    o = judge_cgroups(**kwargs)
    assert (o.status.value, o.summary) == (status, summary)
    if status in ("warn", "skip") and "permission denied" in summary:
        assert o.remediation and "Run kvmcheck as root" in o.remediation
        assert o.evidence["unreadable"]


def test_cgroups_judge_denied_files_that_decide_nothing_stay_evidence():
    """All needed controllers found: a denied /proc/self/cgroup or subtree_control changes no verdict."""
    o = judge_cgroups(V2, v2_files=[ok("/sys/fs/cgroup/cgroup.controllers", CONTROLLERS)],
                      placement=denied("/proc/self/cgroup"), subtree=denied("/sys/fs/cgroup/cgroup.subtree_control"))
    assert o.status.value == "pass" and "subtree_control" not in o.evidence and "placement" not in o.evidence
    assert o.evidence["unreadable"] == ["/proc/self/cgroup: Permission denied",
                                        "/sys/fs/cgroup/cgroup.subtree_control: Permission denied"]
    o = judge_cgroups(V1_ALL.replace("cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n", ""),
                      proc=denied("/proc/cgroups"))
    assert o.status.value == "pass"
    assert o.evidence["controllers"]["pids"] == "unknown: permission denied reading /proc/cgroups"


def test_cgroups_judge_v1_reason_comes_from_proc_cgroups():
    o = judge_cgroups(V1_NO_MEMORY)
    assert o.evidence["missing"] == {"memory": "disabled on the kernel command line (cgroup_disable=memory)"}
    assert "cgroup_disable=memory" in o.remediation
    o = judge_cgroups(V1_NO_MEMORY, proc=absent("/proc/cgroups"))
    assert o.evidence["missing"] == {"memory": "not offered by any mounted hierarchy"}


# --- cgroup facts on captured roots, as nobody --------------------------------------------------------------
def as_nobody_json(code, *args):
    proc = subprocess.run(as_nobody([sys.executable, "-c", code, *args]), capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


STATES = """
import json, sys
from kvmcheck.core.host import Host
from kvmcheck.facts.cgroups import cgroup_mounts, cgroup_v2, proc_cgroups
from kvmcheck.facts.system import mounts
host = Host(sys.argv[1])
v2 = cgroup_v2(host, cgroup_mounts(mounts(host)))
print(json.dumps({"proc_cgroups": proc_cgroups(host).file.state,
                  "controllers": [v.file.state for v in v2.visited]}))
"""
CHECK = """
import json, sys
import kvmcheck
r = {c.id: c for c in kvmcheck.run(sys.argv[1], only=["cgroups.controllers"]).checks}["cgroups.controllers"]
print(json.dumps([r.status.value, r.summary, r.evidence.get("missing")]))
"""


def test_cgroup_facts_keep_denied_apart_from_absent(public_tmp):
    root = materialize("cg-v1-no-memory", public_tmp)
    (root / "proc/cgroups").chmod(0)
    assert as_nobody_json(STATES, str(root)) == {"proc_cgroups": "denied", "controllers": []}
    # Before issue 15 this was warn "missing memory: not offered by any mounted hierarchy", with a wrong fix.
    assert as_nobody_json(CHECK, str(root)) == ["skip", "permission denied reading /proc/cgroups", None]
    (root / "proc/cgroups").unlink()
    assert proc_cgroups(Host(str(root))).file.state == "absent"
    assert as_nobody_json(CHECK, str(root)) == ["warn", "cgroup v1: missing memory", {
        "memory": "not offered by any mounted hierarchy", "pids": "not offered by any mounted hierarchy"}]


def test_cgroup_v2_fact_keeps_denied_apart_from_absent(public_tmp):
    root = materialize("cg-v2", public_tmp)
    controllers = root / "sys/fs/cgroup/cgroup.controllers"
    controllers.chmod(0)
    assert as_nobody_json(STATES, str(root)) == {"proc_cgroups": "absent", "controllers": ["denied"]}
    controllers.unlink()
    host = Host(str(root))
    from kvmcheck.facts.cgroups import cgroup_mounts
    from kvmcheck.facts.system import mounts

    found = cgroup_v2(host, cgroup_mounts(mounts(host)))
    assert [v.file.state for v in found.visited] == ["absent"]
    assert found.active is found.visited[0]  # a captured root without /sys: judged from /proc/cgroups


# --- security.svirt, judged from records ------------------------------------------------------------------------
NO_AA = AppArmorFiles((), (), (), False)
LIBVIRT_AA = AppArmorFiles(("usr.sbin.libvirtd",), ("abstractions/libvirt-qemu",), (), True)
OFFLINE = LsmRuntime(None, None, None, None, None)
CONF = QemuConf(True, None, None)


def runtime(enforce=None, aa=None, lsm=None, aa_fs=None, profiles=None):
    def f(path, text):
        return absent(path) if text is None else ok(path, text)
    return LsmRuntime(f("/sys/fs/selinux/enforce", enforce), f("/sys/module/apparmor/parameters/enabled", aa),
                      f("/sys/kernel/security/lsm", lsm), aa_fs,
                      None if profiles is None else f("/sys/kernel/security/apparmor/profiles", profiles))


def judge_svirt(conf=CONF, sel=None, aa=NO_AA, rt=OFFLINE, os_release=True, family=None):
    return security_svirt.func(qemu_conf=conf, selinux_config=sel, apparmor_files=aa, lsm_runtime=rt,
                               has_os_release=os_release, distro_family=family, live=rt is not OFFLINE)


ENFORCING = Setting("enforcing", 7, "SELINUX=enforcing")
PERMISSIVE = Setting("permissive", 7, "SELINUX=permissive")
SVIRT_CASES = {
    "driver none": (dict(conf=QemuConf(True, Setting('"none"', 3, 'security_driver = "none"'), None)), "warn",
                    "sVirt is switched off in qemu.conf"),
    "default unconfined": (dict(conf=QemuConf(True, None, Setting("0", 4, "security_default_confined = 0"))), "warn",
                           "guests are unconfined by default (qemu.conf)"),
    "offline enforcing": (dict(sel=ENFORCING), "pass", "SELinux configured enforcing"),
    "offline enforcing, driver apparmor": (
        dict(sel=ENFORCING, conf=QemuConf(True, Setting('"apparmor"', 3, 'security_driver = "apparmor"'), None)),
        "warn", "qemu.conf's security_driver leaves out selinux"),
    "offline permissive": (dict(sel=PERMISSIVE), "warn", "SELinux configured permissive"),
    "offline apparmor": (dict(aa=LIBVIRT_AA), "pass", "AppArmor configured with libvirt's profiles (usr.sbin.libvirtd)"),
    "offline apparmor, profiles without a parser": (dict(aa=LIBVIRT_AA._replace(installed=False)), "warn",
                                                    "neither SELinux nor AppArmor is configured"),
    "offline apparmor, no libvirt profiles": (dict(aa=AppArmorFiles((), (), (), True)), "warn",
                                              "AppArmor installed, but libvirt's AppArmor profiles are not installed"),
    "offline apparmor, profile disabled": (
        dict(aa=LIBVIRT_AA._replace(disabled=("usr.sbin.libvirtd",))), "warn",
        "AppArmor configured, but libvirt's AppArmor profile is disabled"),
    "offline, not a system tree": (dict(conf=QemuConf(False, None, None), os_release=False), "skip",
                                   "no SELinux or AppArmor configuration in this root"),
    "offline, nothing": (dict(), "warn", "neither SELinux nor AppArmor is configured"),
    "live enforcing": (dict(sel=ENFORCING, rt=runtime(enforce="1")), "pass", "SELinux enforcing"),
    "live enforcing, configured permissive": (dict(sel=PERMISSIVE, rt=runtime(enforce="1")), "warn",
                                              "SELinux enforcing now, but configured permissive"),
    "live permissive": (dict(rt=runtime(enforce="0")), "warn", "SELinux permissive: guests are not confined"),
    "live apparmor": (dict(aa=LIBVIRT_AA, rt=runtime(aa="Y", aa_fs=True, profiles="/usr/sbin/libvirtd (enforce)\n")),
                      "pass", "AppArmor enabled with libvirt's profiles (usr.sbin.libvirtd)"),
    "live apparmor, complain": (
        dict(aa=LIBVIRT_AA, rt=runtime(aa="Y", aa_fs=True, profiles="/usr/sbin/libvirtd (complain)\n")), "warn",
        "libvirt's AppArmor profile is in complain mode"),
    "live apparmor, profiles unreadable": (
        dict(aa=LIBVIRT_AA, rt=runtime(aa="Y", aa_fs=True)._replace(
            loaded_profiles=denied("/sys/kernel/security/apparmor/profiles"))),
        "pass", "AppArmor enabled with libvirt's profiles (usr.sbin.libvirtd)"),
    "live, none": (dict(rt=runtime()), "warn", "no SELinux or AppArmor: guests are not confined"),
}


@pytest.mark.parametrize("case", sorted(SVIRT_CASES))
def test_svirt_judge(case):
    kwargs, status, summary = SVIRT_CASES[case]
    o = judge_svirt(**kwargs)
    assert (o.status.value, o.summary) == (status, summary)
    if status == "warn":
        assert o.detail and o.remediation


def test_svirt_judge_fix_follows_the_distribution():
    assert "apt install apparmor" in judge_svirt(family="debian").remediation
    assert "setenforce 1" in judge_svirt(family="rhel").remediation
    assert "AppArmor is on by default on Ubuntu" in judge_svirt(family="ubuntu").remediation


def test_lsm_runtime_keeps_denied_apart_from_absent(public_tmp):
    root = materialize("sec-selinux-enforcing", public_tmp)
    enforce = root / "sys/fs/selinux/enforce"
    enforce.chmod(0)
    code = ("import json, sys; from kvmcheck.core.host import Host; from kvmcheck.facts.security import lsm_runtime\n"
            "h = Host(sys.argv[1]); h.live = True; r = lsm_runtime(h)\n"
            "print(json.dumps([r.selinux_enforce.state, r.lsm.state]))")
    assert as_nobody_json(code, str(root)) == ["denied", "ok"]
    enforce.unlink()
    host = Host(str(root))
    host.live = True
    assert lsm_runtime(host).selinux_enforce.state == "absent"
    host.live = False
    assert lsm_runtime(host) == OFFLINE  # the running kernel's files are not read offline


def test_svirt_denied_qemu_conf_is_named_by_the_runner(public_tmp):
    """qemu.conf is 0600 on Debian and Fedora: as a user the check skips naming it, as before issue 15."""
    root = materialize("sec-selinux-enforcing", public_tmp)
    (root / "etc/libvirt/qemu.conf").chmod(0o600)
    code = ("import json, sys, kvmcheck\n"
            "r = {c.id: c for c in kvmcheck.run(sys.argv[1], only=['security.svirt']).checks}['security.svirt']\n"
            "print(json.dumps([r.status.value, r.summary]))")
    assert as_nobody_json(code, str(root)) == ["skip", "permission denied reading /etc/libvirt/qemu.conf"]
