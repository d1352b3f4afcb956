# SPDX-License-Identifier: GPL-2.0-or-later
"""cgroups.controllers, security.svirt and kvm.nested: exact (id, status) pairs on captured roots.

Roots are offline, so the runtime branches (/sys/fs/selinux/enforce, loaded AppArmor profiles, a live
mount table) are also run with the root's Host marked live ("as if booted"): the checks read only files.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import kvmcheck
from kvmcheck.facts.context import Context
from kvmcheck.core.host import Host
from kvmcheck.parsers.cgroups import (parse_cgroup_mounts, parse_controller_list,
                                      parse_proc_cgroups, parse_proc_self_cgroup)
from kvmcheck.core.registry import load_checks
from kvmcheck.core.runner import run_check

IDS = ["cgroups.controllers", "security.svirt", "kvm.nested"]


def statuses(root, only):
    report = kvmcheck.run(str(root), only=[only])
    results = {r.id: r for r in report.checks}
    r = results[only]
    assert r.summary
    if r.status.value in ("warn", "fail"):
        assert r.detail and r.remediation, (only, r.summary)
    return r


def as_if_live(root, check_id):
    """Run one check on a root whose Host claims to be the running system (files only, no probes)."""
    host = Host(str(root))
    host.live = True
    checks, _ = load_checks()
    r = run_check(next(c for c in checks if c.id == check_id), Context(host), 5.0)
    assert r.summary
    if r.status.value in ("warn", "fail"):
        assert r.detail and r.remediation, (check_id, r.summary)
    return r


# --- cgroups.controllers ------------------------------------------------------------------------
CGROUPS = {
    "cg-v1": "pass",  # CentOS 7: every controller on its own v1 mount, cpu,cpuacct co-mounted
    "cg-v1-no-memory": "warn",  # cgroup_disable=memory, pids not in the kernel
    "cg-v2": "pass",  # unified, CONFIG_CGROUP_BPF=y in /boot/config
    "cg-v2-no-bpf": "warn",  # no BPF device controller, memory disabled at boot
    "cg-v2-old": "pass",  # 4.18: no pids offered, no freezer (informational only)
    "cg-hybrid": "pass",  # v1 controllers + empty cgroup2 at /sys/fs/cgroup/unified (Ubuntu 20.04 style)
    "cg-hybrid-fc": "pass",  # this Firecracker build VM: v1 controllers, hugetlb alone on cgroup2
    "cg-hybrid-systemd-only": "warn",  # name=systemd + empty cgroup2: no controller mounted at all
    "cg-none": "warn",  # a mount table without cgroups
    "cg-offline-bare": "skip",  # no /proc in the root
    "prepared-intel-host": "pass",
}


@pytest.mark.parametrize("name", sorted(CGROUPS))
def test_cgroups_statuses(host_root, name):
    assert statuses(host_root(name), "cgroups.controllers").status.value == CGROUPS[name]


@pytest.mark.parametrize("name,status", [("cg-none", "warn"), ("cg-offline-bare", "warn"), ("cg-v2", "pass"),
                                         ("cg-hybrid", "pass"), ("cg-v1-no-memory", "warn")])
def test_cgroups_as_if_live(host_root, name, status):
    # Live, a missing mount table is a broken /proc (warn), not an offline root (skip).
    assert as_if_live(host_root(name), "cgroups.controllers").status.value == status


def test_cgroups_v1_sources(host_root):
    r = statuses(host_root("cg-v1"), "cgroups.controllers")
    ev = r.evidence
    assert ev["layout"] == "v1"
    assert ev["controllers"]["cpu"] == ev["controllers"]["cpuacct"] == \
        "cgroup v1 mount /sys/fs/cgroup/cpu,cpuacct (/proc/mounts line 6)"
    assert ev["controllers"]["devices"].startswith("cgroup v1 mount /sys/fs/cgroup/devices")
    assert "missing" not in ev
    assert r.summary == "cgroup v1: cpu, cpuacct, cpuset, memory, devices, blkio, pids, freezer"


def test_cgroups_v1_missing_memory_names_reason_and_fix(host_root):
    r = statuses(host_root("cg-v1-no-memory"), "cgroups.controllers")
    assert r.summary == "cgroup v1: missing memory"
    assert "cgroup_disable=memory" in r.detail and "cgroup_disable=memory" in r.remediation
    assert r.evidence["missing"]["pids"] == "not in this kernel (CONFIG_CGROUP_PIDS)"
    assert "Informational: pids missing" in r.detail


def test_cgroups_v2_sources_and_devices_basis(host_root):
    r = statuses(host_root("cg-v2"), "cgroups.controllers")
    ev = r.evidence
    assert ev["layout"] == "v2"
    assert ev["controllers"]["memory"] == "/sys/fs/cgroup/cgroup.controllers"
    assert ev["controllers"]["blkio"] == "/sys/fs/cgroup/cgroup.controllers"  # offered as io
    assert ev["controllers"]["cpuacct"].startswith("synthesized on cgroup v2")
    assert ev["devices_basis"] == "CONFIG_CGROUP_BPF=y in /boot/config-6.1.0-18-amd64"
    assert ev["controllers"]["freezer"] == "core cgroup v2 freezer: /sys/fs/cgroup/system.slice/cgroup.freeze exists"
    assert ev["subtree_control"] == ["cpuset", "cpu", "io", "memory", "pids"]
    assert ev["placement"] == ["0::/user.slice/user-1000.slice/session-3.scope"]
    assert r.summary == "cgroup v2 at /sys/fs/cgroup: cpu, cpuacct, cpuset, memory, devices, io, pids, freezer"


def test_cgroups_v2_without_bpf_and_memory(host_root):
    r = statuses(host_root("cg-v2-no-bpf"), "cgroups.controllers")
    assert r.summary == "cgroup v2 at /sys/fs/cgroup: missing memory, devices"
    assert r.evidence["missing"]["devices"] == "CONFIG_CGROUP_BPF is not set in /boot/config-6.1.0-18-amd64"
    assert "cgroup_disable=memory" in r.remediation


def test_cgroups_v2_old_kernel_is_informational(host_root):
    r = statuses(host_root("cg-v2-old"), "cgroups.controllers")
    assert r.summary.endswith("(pids, freezer missing: informational)")
    assert "predates the cgroup v2 freezer (5.2)" in r.evidence["missing"]["freezer"]
    assert "kernel 4.18.0-25-generic >= 4.15" in r.evidence["devices_basis"]
    assert "only root's BPF_PROG_QUERY" in r.evidence["devices_basis"]


def test_cgroups_hybrid_ignores_empty_cgroup2(host_root):
    r = statuses(host_root("cg-hybrid"), "cgroups.controllers")
    assert r.evidence["layout"] == "hybrid"
    assert r.evidence["ignored_empty_cgroup2"] == ["/sys/fs/cgroup/unified"]
    assert "libvirt ignores it" in r.detail
    assert all(v.startswith("cgroup v1 mount") for v in r.evidence["controllers"].values())
    fc = statuses(host_root("cg-hybrid-fc"), "cgroups.controllers")
    assert fc.evidence["v2_controllers"] == ["hugetlb"]
    assert fc.evidence["controllers"]["devices"] == "cgroup v1 mount /sys/fs/cgroup/devices (/proc/mounts line 6)"


def test_cgroups_systemd_only_hierarchy_names_everything(host_root):
    r = statuses(host_root("cg-hybrid-systemd-only"), "cgroups.controllers")
    assert r.summary == "cgroup v1: missing cpu, cpuacct, cpuset, memory, devices, blkio"
    assert "compiled in but not mounted" in r.detail
    assert "systemd.unified_cgroup_hierarchy=1" in r.remediation


def test_cgroups_none_and_offline_bare(host_root):
    r = statuses(host_root("cg-none"), "cgroups.controllers")
    assert r.summary == "no cgroup file system is mounted"
    assert "mount -t cgroup2" in r.remediation
    assert statuses(host_root("cg-offline-bare"), "cgroups.controllers").summary == "no /proc/mounts in this root"


def _v1_controllers_mounted(text):
    found = set()
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] == "cgroup":
            found |= set(f[3].split(","))
    return found


def test_cgroups_live():
    text = Path("/proc/self/mounts").read_text()
    r = {c.id: c for c in kvmcheck.run("/", only=["cgroups.controllers"]).checks}["cgroups.controllers"]
    v1 = _v1_controllers_mounted(text)
    has_v2 = any(line.split()[2:3] == ["cgroup2"] for line in text.splitlines())
    needed = {"cpu", "cpuacct", "cpuset", "memory", "devices", "blkio"}
    if not v1 and not has_v2:
        assert r.status.value == "warn"
    elif v1 and needed <= v1:
        # This Firecracker VM: every needed controller on v1, plus a cgroup2 at /sys/fs/cgroup/unified.
        assert r.status.value == "pass"
        assert r.evidence["layout"] == ("hybrid" if has_v2 else "v1")
        for name in needed:
            assert r.evidence["controllers"][name].startswith("cgroup v1 mount"), name
    else:
        assert r.status.value in ("pass", "warn")


def test_cgroup_parsers():
    layout = parse_cgroup_mounts("cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"
                                 "cgroup /sys/fs/cgroup/systemd cgroup rw,xattr,name=systemd 0 0\n"
                                 "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n"
                                 "tmpfs /run tmpfs rw 0 0\n")
    assert [(m.target, m.controllers, m.name) for m in layout.v1] == [
        ("/sys/fs/cgroup/cpu,cpuacct", ("cpu", "cpuacct"), None), ("/sys/fs/cgroup/systemd", (), "systemd")]
    assert [m.target for m in layout.v2] == ["/sys/fs/cgroup/unified"]
    table = parse_proc_cgroups("#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t3\t0\ncpu\t2\t1\t1\nbad\n")
    assert (table["memory"].enabled, table["cpu"].hierarchy) == (False, 2)
    assert parse_controller_list("cpuset cpu io\n") == ("cpuset", "cpu", "io")
    assert parse_controller_list("\n") == ()
    rows = parse_proc_self_cgroup("4:memory:/a\n1:name=systemd:/\n0::/init.scope\ngarbage\n")
    assert [(r.hierarchy, r.controllers, r.path) for r in rows] == [
        (4, ("memory",), "/a"), (1, ("name=systemd",), "/"), (0, (), "/init.scope")]


# --- security.svirt -----------------------------------------------------------------------------
SVIRT_OFFLINE = {
    "sec-selinux-enforcing": "pass",
    "sec-selinux-permissive": "warn",
    "sec-selinux-disabled": "warn",
    "sec-apparmor-libvirt": "pass",
    "sec-apparmor-no-libvirt": "warn",
    "sec-apparmor-disabled": "warn",
    "sec-apparmor-complain": "pass",  # complain mode is runtime state: offline cannot see it
    "sec-driver-none": "warn",
    "sec-none": "warn",
    "cg-none": "skip",  # not an installed system tree
    "prepared-intel-host": "pass",
}
SVIRT_LIVE = {
    "sec-selinux-enforcing": "pass",
    "sec-selinux-permissive": "warn",
    "sec-selinux-disabled": "warn",
    "sec-apparmor-libvirt": "pass",
    "sec-apparmor-no-libvirt": "warn",
    "sec-apparmor-disabled": "warn",
    "sec-apparmor-complain": "warn",
    "sec-driver-none": "warn",
    "sec-none": "warn",
}


@pytest.mark.parametrize("name", sorted(SVIRT_OFFLINE))
def test_svirt_offline(host_root, name):
    r = statuses(host_root(name), "security.svirt")
    assert r.status.value == SVIRT_OFFLINE[name]
    if name.startswith("sec-") and name != "sec-driver-none":
        assert "Runtime state unknown (offline root)" in r.detail


@pytest.mark.parametrize("name", sorted(SVIRT_LIVE))
def test_svirt_as_if_live(host_root, name):
    assert as_if_live(host_root(name), "security.svirt").status.value == SVIRT_LIVE[name]


def test_svirt_messages(host_root):
    r = statuses(host_root("sec-driver-none"), "security.svirt")
    assert r.evidence["security_driver"] == '/etc/libvirt/qemu.conf:7: security_driver = "none"'
    assert "line 7" in r.detail and "Delete line 7 of /etc/libvirt/qemu.conf" in r.remediation
    permissive = host_root("sec-selinux-permissive")
    r = statuses(permissive, "security.svirt")
    assert r.summary == "SELinux configured permissive" and "SELINUX=enforcing" in r.remediation  # RHEL fix
    r = as_if_live(permissive, "security.svirt")
    assert r.summary == "SELinux permissive: guests are not confined" and "setenforce 1" in r.remediation
    r = as_if_live(host_root("sec-selinux-disabled"), "security.svirt")
    assert r.summary == "no SELinux or AppArmor: guests are not confined"
    r = as_if_live(host_root("sec-none"), "security.svirt")
    assert "apt install apparmor" in r.remediation  # Debian's fix
    r = as_if_live(host_root("sec-apparmor-libvirt"), "security.svirt")
    assert r.summary == "AppArmor enabled with libvirt's profiles (usr.sbin.libvirtd)"
    assert r.evidence["loaded_daemon_profiles"] == ["/usr/sbin/libvirtd (enforce)"]
    r = as_if_live(host_root("sec-apparmor-complain"), "security.svirt")
    assert "complain" in r.summary and "aa-enforce /etc/apparmor.d/usr.sbin.libvirtd" in r.remediation
    r = as_if_live(host_root("sec-apparmor-disabled"), "security.svirt")
    assert r.summary == "AppArmor enabled, but libvirt's AppArmor profile is disabled"
    assert "disabled" in r.summary and "rm /etc/apparmor.d/disable/usr.sbin.libvirtd" in r.remediation
    r = statuses(host_root("sec-apparmor-no-libvirt"), "security.svirt")
    assert "not installed" in r.summary and "libvirt-daemon-system" in r.remediation


@pytest.mark.parametrize("line,status,words", [
    ('security_driver = [ "selinux", "dac" ]\n', "pass", "SELinux"),
    ('security_driver = [\n  "apparmor",\n]\n', "warn", "leaves out selinux"),
    ("security_default_confined = 0\n", "warn", "unconfined by default"),
    ('#security_driver = "none"\n', "pass", "SELinux"),
])
def test_svirt_qemu_conf_variants(host_root, line, status, words):
    root = host_root("sec-selinux-enforcing")
    with (root / "etc/libvirt/qemu.conf").open("a") as f:
        f.write(line)
    r = as_if_live(root, "security.svirt")
    assert (r.status.value, words in r.summary) == (status, True), r.summary


def test_svirt_live():
    r = {c.id: c for c in kvmcheck.run("/", only=["security.svirt"]).checks}["security.svirt"]
    enforce = Path("/sys/fs/selinux/enforce")
    aa = Path("/sys/module/apparmor/parameters/enabled")
    selinux_on = enforce.exists() and enforce.read_text().strip() == "1"
    apparmor_on = aa.exists() and aa.read_text().strip() in ("Y", "1")
    if not selinux_on and not apparmor_on and not enforce.exists():
        # This Firecracker VM: no LSM at all.
        assert (r.status.value, r.summary) == ("warn", "no SELinux or AppArmor: guests are not confined")
    else:
        assert r.status.value in ("pass", "warn")


# --- kvm.nested ---------------------------------------------------------------------------------
NESTED = {
    "intel-baremetal-vmx": "pass",  # kvm_intel nested=Y
    "amd-baremetal-svm": "pass",  # kvm_amd nested=1
    "s390x-lpar": "pass",  # kvm nested=0: disabled, informational
    "pvm-host": "skip",  # kvm_pvm has no nested switch
    "cloud-vm-no-nested": "skip",  # no vendor module
    "old-32bit-kernel": "skip",
    "prepared-intel-host": "pass",
}


@pytest.mark.parametrize("name", sorted(NESTED))
def test_nested_statuses(host_root, name):
    assert statuses(host_root(name), "kvm.nested").status.value == NESTED[name]


def test_nested_values(host_root):
    root = host_root("intel-baremetal-vmx")
    param = root / "sys/module/kvm_intel/parameters/nested"
    assert statuses(root, "kvm.nested").summary == "enabled (kvm_intel nested=Y)"
    param.write_text("N\n")
    r = statuses(root, "kvm.nested")
    assert r.summary == "disabled (fine unless guests run hypervisors) (kvm_intel nested=N)"
    assert "options kvm_intel nested=1" in r.detail and "/etc/modprobe.d/kvm.conf" in r.detail
    (root / "etc/modprobe.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/modprobe.d/kvm.conf").write_text("options kvm_intel nested=1\n")
    r = statuses(root, "kvm.nested")
    assert "configured but not in effect" in r.detail
    param.unlink()
    r = statuses(root, "kvm.nested")
    assert (r.status.value, r.summary) == ("skip", "kvm_intel has no nested parameter "
                                                   "(/sys/module/kvm_intel/parameters/nested is absent)")
    amd = host_root("amd-baremetal-svm")
    (amd / "sys/module/kvm_amd/parameters/nested").write_text("0\n")
    assert statuses(amd, "kvm.nested").summary.startswith("disabled")


def test_nested_pvm_and_arm64(host_root):
    r = statuses(host_root("pvm-host"), "kvm.nested")
    assert "kvm_pvm" in r.summary
    arm = host_root("arm64-kvm")
    assert statuses(arm, "kvm.nested").status.value == "skip"  # no /proc/cmdline captured
    (arm / "proc").mkdir(exist_ok=True)
    (arm / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/vda2 kvm-arm.mode=nested\n")
    assert statuses(arm, "kvm.nested").summary == "enabled (kvm-arm.mode=nested)"


def test_nested_live():
    r = {c.id: c for c in kvmcheck.run("/", only=["kvm.nested"]).checks}["kvm.nested"]
    vendor = [m for m in ("kvm_intel", "kvm_amd") if os.path.isdir(f"/sys/module/{m}")]
    if not vendor and os.path.isdir("/sys/module/kvm_pvm"):
        assert r.status.value == "skip" and "kvm_pvm" in r.summary  # this Firecracker VM
    elif vendor and os.path.exists(f"/sys/module/{vendor[0]}/parameters/nested"):
        assert r.status.value == "pass"
    else:
        assert r.status.value == "skip"


def test_libvirt_conf_lists_span_lines_and_an_unclosed_one_is_linear():
    """A list may continue over lines (comments inside); an unclosed '[' takes the rest of the file, in
    one pass: rescanning the joined text each line once made 80,000 such lines take seconds."""
    import time

    from kvmcheck.parsers.security_conf import parse_libvirt_conf

    keys = ("security_driver", "b")
    found = parse_libvirt_conf('a = 1\nsecurity_driver = [ "selinux",\n # c\n "dac" ] # x\nb=2\n', keys)
    assert found["security_driver"].value == '[ "selinux",    "dac" ]' and found["security_driver"].line == 2
    assert found["b"].value == "2" and found["b"].line == 5
    text = "security_driver = [\n" + '"x",\n' * 400_000
    start = time.perf_counter()
    found = parse_libvirt_conf(text, keys)
    # A hang guard, not a speed test: the linear pass takes a fraction of a second, the quadratic one minutes.
    assert time.perf_counter() - start < 10
    assert found["security_driver"].value.count('"x"') == 400_000 and "b" not in found


def test_libvirts_profiles_alone_do_not_make_apparmor_configured(host_root):
    """Debian's libvirt-daemon-system ships /etc/apparmor.d/usr.sbin.libvirtd whether or not AppArmor is installed
    (this development machine after 'apt-get install libvirt-daemon-system'): without AppArmor's parser nothing
    loads them, so an offline audit must warn as the live run does, not pass on the profile files."""
    root = host_root("sec-apparmor-libvirt")
    (root / "usr" / "sbin" / "apparmor_parser").unlink()
    r = statuses(root, "security.svirt")
    assert (r.status.value, r.summary) == ("warn", "neither SELinux nor AppArmor is configured")
