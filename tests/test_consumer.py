# SPDX-License-Identifier: GPL-2.0-or-later
"""The stack as its real consumer: kvm.consumer, qemu.accel, libvirt.daemon, container.kvm-access, and the
Host methods they added (xattr, converse), against this machine's real QEMU, libvirt and /dev/kvm."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time

import pytest

from kvmcheck.checks import consumer
from kvmcheck.facts import Facts
from kvmcheck.facts import consumer as consumer_facts
from kvmcheck.facts.context import Context
from kvmcheck.core.host import Host
from kvmcheck.parsers.container import detect_container
from kvmcheck.parsers.posix_acl import may_access, parse_posix_acl

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="dropping to QEMU's user and changing /dev/kvm need root")
needs_qemu = pytest.mark.skipif(not os.path.exists("/usr/bin/qemu-system-x86_64"),
                                reason="qemu-system-x86 is not installed (.ci/apt-packages)")
needs_libvirt_user = pytest.mark.skipif(
    not os.path.exists("/etc/libvirt/qemu.conf") or subprocess.run(["id", "libvirt-qemu"], capture_output=True).returncode,
    reason="libvirt-daemon-system (the libvirt-qemu user and qemu.conf) is not installed")
needs_kvm = pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm on this machine")


@contextlib.contextmanager
def kvm_mode(mode: int, gid: int):
    """/dev/kvm with this mode and group for the block; the old ones restored afterwards, whatever happens."""
    st = os.stat("/dev/kvm")
    try:
        os.chown("/dev/kvm", 0, gid)
        os.chmod("/dev/kvm", mode)
        yield
    finally:
        os.chown("/dev/kvm", st.st_uid, st.st_gid)
        os.chmod("/dev/kvm", st.st_mode & 0o7777)


def children() -> set:
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as fh:
        return set(fh.read().split())


# -- kvm.consumer ----------------------------------------------------------------------------------------
@needs_root
@needs_kvm
@needs_libvirt_user
def test_consumer_fails_naming_libvirt_qemu_at_0600_and_passes_at_0660_kvm():
    import grp

    kvm_gid = grp.getgrnam("kvm").gr_gid
    with kvm_mode(0o600, 0):
        out = consumer.kvm_consumer(Context(Host()))
    assert (out.status.value, out.evidence["proof"]["errno"]) == ("fail", "EACCES")
    assert "libvirt-qemu cannot open /dev/kvm" in out.summary
    assert 'GROUP="kvm", MODE="0660"' in out.remediation
    with kvm_mode(0o660, kvm_gid):
        out = consumer.kvm_consumer(Context(Host()))
    assert (out.status.value, out.evidence["proof"]["step"]) == ("pass", "ok"), out


@needs_root
@needs_kvm
@needs_libvirt_user
def test_the_probe_never_changes_the_parents_identity_nor_leaves_a_child():
    before = (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups()))
    kids = children()
    who = Facts(Host()).get("qemu_identity").identity
    assert who is not None and who.uid != 0
    step, _ = consumer_facts.prove_as(Host(), who)
    assert step in ("ok", "open")
    assert (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups())) == before
    assert children() == kids


def test_identity_counts_the_primary_group_and_the_configured_one(tmp_path):
    """Debian: libvirt-qemu's primary group kvm, listed nowhere in /etc/group, still opens a 0660 root:kvm node."""
    (tmp_path / "etc/libvirt").mkdir(parents=True)
    (tmp_path / "etc/os-release").write_text("ID=debian\n")
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/bash\nlibvirt-qemu:x:64055:108::/:/usr/sbin/nologin\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nkvm:x:108:\nlibvirt-qemu:x:64055:libvirt-qemu\n")
    (tmp_path / "etc/libvirt/qemu.conf").write_text('#user = "libvirt-qemu"\n#group = "libvirt-qemu"\n')
    who, why = Facts(Host(str(tmp_path))).get("qemu_identity")[:2]
    assert (who.user, who.uid, who.gid, who.groups) == ("libvirt-qemu", 64055, 64055, (108, 64055)), why
    (tmp_path / "etc/libvirt/qemu.conf").write_text('user = "qemu"\n')
    who, why = Facts(Host(str(tmp_path))).get("qemu_identity")[:2]
    assert who is None and "not in /etc/passwd" in why


def test_acl_decides_like_the_kernel():
    import struct

    def acl(*entries):
        return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)

    # 0600 root:root plus user:64055:rw- and mask rw- (what 'setfacl -m u:libvirt-qemu:rw /dev/kvm' leaves)
    entries = parse_posix_acl(acl((1, 6, 0xFFFFFFFF), (2, 6, 64055), (4, 0, 0xFFFFFFFF), (0x10, 6, 0xFFFFFFFF),
                                  (0x20, 0, 0xFFFFFFFF)))
    assert may_access(6, 0o660, 0, 0, 64055, frozenset({64055}), entries)
    assert not may_access(6, 0o660, 0, 0, 1000, frozenset({1000}), entries)
    # the mask limits a named entry: mask r-- takes the write away
    masked = parse_posix_acl(acl((1, 6, 0), (2, 6, 64055), (4, 0, 0), (0x10, 4, 0), (0x20, 0, 0)))
    assert not may_access(6, 0o640, 0, 0, 64055, frozenset({64055}), masked)
    assert not may_access(6, 0o600, 0, 0, 64055, frozenset({108}))
    assert may_access(6, 0o660, 0, 108, 64055, frozenset({108}))


@pytest.mark.skipif(shutil.which("setfacl") is None, reason="setfacl (the acl package) is not installed")
def test_xattr_reads_a_real_acl(tmp_path):
    f = tmp_path / "node"
    f.write_text("")
    os.chmod(f, 0o600)
    subprocess.run(["setfacl", "-m", "u:12345:rw", str(f)], check=True)
    raw = Host(str(tmp_path)).xattr("/node", "system.posix_acl_access")
    entries = parse_posix_acl(raw)
    assert "user:12345:rw-" in [e.text() for e in entries]
    assert may_access(6, 0o660, 0, 0, 12345, frozenset(), entries)
    assert Host(str(tmp_path)).xattr("/missing", "system.posix_acl_access") is None


# -- Host.converse ---------------------------------------------------------------------------------------
def test_converse_writes_lines_and_reads_answers():
    res = Host().converse(["sh", "-c", "read a; read b; echo \"$b $a\"; echo note >&2"], ["one", "two"])
    assert (res.returncode, res.stdout, res.stderr) == (0, "two one\n", "note\n")


def test_converse_kills_at_the_deadline_and_a_flood():
    kids = children()
    with pytest.raises(TimeoutError):
        Host().converse(["sleep", "30"], [], timeout=0.3)
    res = Host().converse(["yes"], [], limit=1000)
    assert (res.returncode, len(res.stdout)) == (-9, 1000)
    assert children() == kids


def test_converse_is_live_only(tmp_path):
    from kvmcheck.core.host import OfflineError

    with pytest.raises(OfflineError):
        Host(str(tmp_path)).converse(["cat"], ["x"])


# -- qemu.accel ------------------------------------------------------------------------------------------
@needs_root
@needs_kvm
@needs_qemu
def test_qemu_accel_passes_as_root_here():
    out = consumer.qemu_accel(Context(Host()))
    assert out.status.value == "pass", out
    assert out.evidence["kvm"] == {"enabled": True, "present": True}
    assert out.evidence["default_machines"] == ["pc-i440fx-*", "pc-q35-*"]


# -- containers ------------------------------------------------------------------------------------------
DOCKER_V2 = ("1 0 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/AB:/var/lib/"
             "docker/overlay2/l/CD,upperdir=/var/lib/docker/overlay2/x/diff,workdir=/var/lib/docker/overlay2/x/work\n"
             "2 1 8:1 /var/lib/docker/containers/0123abcd/resolv.conf /etc/resolv.conf rw - ext4 /dev/sda1 rw\n"
             "3 1 8:1 /var/lib/docker/containers/0123abcd/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n")
PODMAN = ("1 0 0:40 / / rw - overlay overlay rw,lowerdir=/var/lib/containers/storage/overlay/l/AB\n"
          "2 1 0:25 /containers/storage/overlay-containers/ab/userdata/hostname /etc/hostname rw - tmpfs tmpfs rw\n")
K8S = ("1 0 0:40 / / rw - overlay overlay rw,lowerdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/s/1\n"
       "2 1 8:1 /var/lib/kubelet/pods/5f0e/etc-hosts /etc/hosts rw - ext4 /dev/sda1 rw\n")


@pytest.mark.parametrize("cgroup, mountinfo, runtime", [
    ("0::/\n", DOCKER_V2, "docker"),
    ("12:devices:/docker/0123abcd\n", "", "docker"),
    ("0::/\n", PODMAN, "podman"),
    ("0::/kubepods.slice/kubepods-besteffort.slice/cri-containerd-1.scope\n", K8S, "kubernetes"),
    ("0::/\n", K8S, "kubernetes"),
    # a Firecracker VM whose image left /.dockerenv: no runtime wrote anything, so no container
    ("5:devices:/\n0::/\n", "22 27 0:21 / / rw - ext4 /dev/vda rw\n", None),
])
def test_container_runtime_from_evidence_a_build_cannot_leave(cgroup, mountinfo, runtime):
    assert detect_container(cgroup, mountinfo, ["/.dockerenv"]).runtime == runtime


def test_this_machine_is_not_a_container_despite_its_dockerenv():
    if not os.path.exists("/.dockerenv"):
        pytest.skip("this machine has no leftover /.dockerenv to be fooled by")
    ctx = Context(Host())
    assert ctx.host_facts()["container"] is None
    out = consumer.container_kvm_access(ctx)
    assert out.status.value == "pass" and "/.dockerenv" in out.detail


@pytest.mark.parametrize("listing, allowed", [
    ("a *:* rwm\n", True), ("c 1:3 rwm\nc 10:232 rwm\n", True), ("c 1:3 rwm\nc 10:200 rwm\n", False),
    ("c 10:232 r\n", False), ("c *:* rw\n", True)])
def test_cgroup_v1_device_list(listing, allowed):
    assert consumer._allows_kvm(listing) is allowed


# -- libvirt.daemon: a real libvirtd, started and stopped here --------------------------------------------
@pytest.fixture
def libvirtd(tmp_path):
    """A libvirtd of this machine's own, in the foreground as our child (so it is reaped), stopped by its PID;
    what it left under /run/libvirt is removed when that directory was not there before."""
    if not ROOT or shutil.which("libvirtd") is None or shutil.which("virsh") is None:
        pytest.skip("needs root, libvirtd and virsh (libvirt-daemon-system, libvirt-clients)")
    if os.path.exists("/run/libvirt/libvirt-sock"):
        pytest.skip("a libvirt daemon already runs here: the test starts and stops its own")
    had_run_dir = os.path.exists("/run/libvirt")
    proc = subprocess.Popen(["libvirtd", "--pid-file", str(tmp_path / "libvirtd.pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"PATH": os.environ["PATH"]})
    try:
        for _ in range(200):  # up to 10 s for its sockets: waiting for readiness, nothing is timed
            if os.path.exists("/run/libvirt/libvirt-sock-ro") or proc.poll() is not None:
                break
            time.sleep(0.05)
        if not os.path.exists("/run/libvirt/libvirt-sock-ro"):
            pytest.skip(f"libvirtd did not start: {proc.stderr.read().decode()[-300:] if proc.poll() is not None else 'no socket'}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not had_run_dir:
            shutil.rmtree("/run/libvirt", ignore_errors=True)


IDS = ["kvm.consumer", "qemu.accel", "libvirt.daemon"]


@needs_kvm
@needs_qemu
@needs_libvirt_user
def test_libvirt_daemon_for_real_with_kvm_for_its_user(libvirtd):
    import grp

    import kvmcheck

    with kvm_mode(0o660, grp.getgrnam("kvm").gr_gid):
        # A daemon started with an empty capabilities cache (a fresh machine: CI) probes QEMU on its first
        # call for longer than the check's time here; that first answer is waited for, nothing is timed.
        subprocess.run(["virsh", "-r", "capabilities"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120, check=False)
        report = kvmcheck.run(only=IDS)
    got = {r.id: r for r in report.checks}
    assert {i: got[i].status.value for i in IDS} == {"kvm.consumer": "pass", "qemu.accel": "pass",
                                                     "libvirt.daemon": got["libvirt.daemon"].status.value}
    daemon = got["libvirt.daemon"]
    assert "x86_64" in daemon.evidence["kvm_guest_arches"]
    assert daemon.evidence["domcapabilities"]["domain"] == "kvm"
    default = daemon.evidence["default_network"]
    if default and default["active"] and default["autostart"] and "/var/lib/libvirt/images" in \
            daemon.evidence["pools"].values():
        assert daemon.status.value == "pass"
    else:  # a fresh install: the default network defined but not started, no pool yet
        assert daemon.status.value == "warn"
        assert "'virsh net-autostart default'" in daemon.remediation or "'virsh pool-define-as" in daemon.remediation


@needs_kvm
@needs_qemu
@needs_libvirt_user
def test_libvirt_slow_while_its_qemu_user_is_locked_out_is_blamed_on_kvm_consumer(libvirtd):
    import kvmcheck
    from kvmcheck.facts.context import Settings

    with kvm_mode(0o600, 0):
        # a short check time: libvirt re-probes QEMU for seconds on every call while /dev/kvm is 0600 root:root
        report = kvmcheck.run(only=IDS, settings=Settings(check_timeout=2.0), timeout=2.0)
    got = {r.id: r for r in report.checks}
    assert [(i, got[i].status.value) for i in IDS] == [
        ("kvm.consumer", "fail"), ("qemu.accel", "pass"), ("libvirt.daemon", "warn")]
    assert got["libvirt.daemon"].caused_by == ["kvm.consumer"]
    assert "libvirt-qemu" in got["kvm.consumer"].summary
    assert report.fix_first == ["kvm.consumer"]


# -- captured roots: the offline branches ----------------------------------------------------------------
ALL = ["kvm.consumer", "qemu.accel", "libvirt.daemon", "container.kvm-access"]
# The consumer-* roots hold no /proc: whether they ran in a container is not decided (skip).
EXPECTED = {
    # RHEL 9: qemu (group qemu) is a member of kvm, /dev/kvm 0660 root:kvm; qemu-kvm from the rpm database
    "consumer-rhel9": ({"kvm.consumer": "pass", "qemu.accel": "skip", "libvirt.daemon": "skip",
                        "container.kvm-access": "skip"}, None),
    # Debian 12 whose /dev/kvm stayed 0600 root:root: libvirt-qemu is locked out
    "consumer-debian-locked": ({"kvm.consumer": "fail", "qemu.accel": "skip", "libvirt.daemon": "skip",
                                "container.kvm-access": "skip"}, None),
    # the same, with 'setfacl -m u:libvirt-qemu:rw /dev/kvm'
    "consumer-debian-acl": ({"kvm.consumer": "pass", "qemu.accel": "skip", "libvirt.daemon": "skip",
                             "container.kvm-access": "skip"}, None),
    # Ubuntu without libvirt: whose access will matter is said, nothing is proved
    "consumer-no-libvirt": ({"kvm.consumer": "skip", "qemu.accel": "skip", "libvirt.daemon": "skip",
                             "container.kvm-access": "skip"}, None),
    # docker on cgroup v2 (a cgroup namespace: PID 1's cgroup is /), started without --device /dev/kvm
    "container-docker": ({"kvm.consumer": "skip", "qemu.accel": "skip", "libvirt.daemon": "skip",
                          "container.kvm-access": "fail"}, "docker"),
    # rootless podman with /dev/kvm, cgroup v2: only opening the device decides, which offline cannot
    "container-podman": ({"kvm.consumer": "skip", "qemu.accel": "skip", "libvirt.daemon": "skip",
                          "container.kvm-access": "skip"}, "podman"),
    # a Kubernetes pod on cgroup v1: /dev/kvm mounted in, but the device list lacks c 10:232
    "container-kubernetes": ({"kvm.consumer": "skip", "qemu.accel": "skip", "libvirt.daemon": "skip",
                              "container.kvm-access": "fail"}, "kubernetes"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_captured_roots(host_root, name):
    import kvmcheck

    root = host_root(name)
    report = kvmcheck.run(str(root), only=ALL)
    statuses, container = EXPECTED[name]
    assert {r.id: r.status.value for r in report.checks} == statuses
    assert report.host["container"] == container
    got = {r.id: r for r in report.checks}
    if name == "consumer-debian-locked":
        assert "libvirt-qemu cannot open /dev/kvm" in got["kvm.consumer"].summary
        assert "usermod -aG kvm" not in got["kvm.consumer"].remediation  # its primary group is kvm already
        assert got["qemu.accel"].evidence["packages"] == {"qemu-system-x86": "1:7.2+dfsg-7+deb12u18+b3"}
    if name == "consumer-debian-acl":
        assert "user:64055:rw-" in got["kvm.consumer"].evidence["devices"]["/dev/kvm"]["acl"]
    if name == "consumer-rhel9":
        assert got["kvm.consumer"].evidence["user"] == "qemu"
        assert got["qemu.accel"].evidence["packages"]["qemu-kvm"] == "8.2.0-11.el9_4.3"
    if name == "consumer-no-libvirt":
        assert "libvirt-qemu" in got["kvm.consumer"].detail
    if name == "container-docker":
        assert "'docker run --device /dev/kvm" in got["container.kvm-access"].remediation
    if name == "container-kubernetes":
        assert "10:232" in got["container.kvm-access"].summary


def test_a_hostile_user_name_is_quoted_not_echoed(host_root):
    """qemu.conf names a user whose /etc/passwd name holds a terminal escape: the report quotes it."""
    import kvmcheck

    root = host_root("consumer-debian-locked")
    evil = "libvirt-qemu\x1b]0;pwned\x07"
    (root / "etc/passwd").write_text(f"root:x:0:0:root:/root:/bin/bash\n{evil}:x:64055:108::/:/usr/sbin/nologin\n")
    (root / "etc/libvirt/qemu.conf").write_text(f'user = "{evil}"\n')
    result = kvmcheck.run(str(root), only=["kvm.consumer"]).checks[0]
    assert result.status.value == "fail"
    text = result.summary + result.detail + result.remediation
    assert "\x1b" not in text and "\x07" not in text
    assert ascii(evil) in result.summary


def test_qemu_accel_as_an_unprivileged_user_fails_on_a_root_only_kvm():
    """QEMU started by nobody cannot open /dev/kvm at 0600 root:root: qemu.accel fails with QEMU's own words."""
    import json

    from conftest import as_nobody

    if not (os.path.exists("/usr/bin/qemu-system-x86_64") and os.path.exists("/dev/kvm")):
        pytest.skip("needs qemu-system-x86 and /dev/kvm")
    argv = as_nobody([sys.executable, "-c", "from kvmcheck.cli import main; main()", "check", "--only", "qemu.accel",
                      "-f", "json"])
    with kvm_mode(0o600, 0):
        proc = subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=120)
    result = json.loads(proc.stdout)["checks"][0]
    assert (result["id"], result["status"]) == ("qemu.accel", "fail"), result
    assert "Permission denied" in result["summary"] or "EACCES" in result["summary"], result["summary"]


# -- the parsers ---------------------------------------------------------------------------------------------
def test_qemu_conf_identity_settings_and_shipped_defaults():
    from kvmcheck.parsers.qemu_stack import parse_qemu_conf_defaults, parse_qemu_conf_identity

    text = ('#       user = "qemu"   # A user named "qemu"\n#       user = "+0"     # Super user (uid=0)\n'
            '#user = "libvirt-qemu"\n#group = "libvirt-qemu"\n')
    assert parse_qemu_conf_identity(text) == {}
    assert parse_qemu_conf_defaults(text) == {"user": "libvirt-qemu", "group": "libvirt-qemu"}
    assert parse_qemu_conf_identity(text + 'user = "+0"\ngroup = "kvm"  # trailing comment\n') == \
        {"user": "+0", "group": "kvm"}


def test_root_named_by_uid_in_qemu_conf_passes_without_a_probe(host_root):
    import kvmcheck

    root = host_root("consumer-debian-locked")
    (root / "etc/libvirt/qemu.conf").write_text('user = "+0"\n')
    result = kvmcheck.run(str(root), only=["kvm.consumer"]).checks[0]
    assert (result.status.value, result.evidence["user"]) == ("pass", "root")


def test_qmp_answers_skip_events_and_keep_errors():
    from kvmcheck.parsers.qemu_stack import parse_qmp, qemu_version

    out = ('{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}\n'
           '{"return": {}}\n{"timestamp": {"seconds": 1}, "event": "RESUME"}\n'
           '{"error": {"class": "CommandNotFound", "desc": "The command query-kvm has not been found"}}\n'
           'qemu-system-x86_64: warning: not JSON\n{"return": {"qemu": {"micro": 0, "minor": 2, "major": 8}}}\n')
    answers = parse_qmp(out)
    assert qemu_version(answers.greeting["version"]) == "7.2.22"
    assert answers.returns[0] == {} and answers.returns[1]["error"]["class"] == "CommandNotFound"
    assert qemu_version(answers.returns[2]) == "8.2.0"


def test_virsh_answers():
    from kvmcheck.parsers import ParseError
    from kvmcheck.parsers.qemu_stack import kvm_guest_arches, parse_net_list, pool_target

    nets = parse_net_list(" Name      State      Autostart   Persistent\n----------------------------------------------\n"
                          " default   inactive   no          yes\n isolated  active     yes         yes\n")
    assert [tuple(n) for n in nets] == [("default", False, False, True), ("isolated", True, True, True)]
    caps = ("<capabilities><host/><guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/>"
            "<domain type='kvm'/></arch></guest><guest><arch name='aarch64'><domain type='qemu'/></arch></guest>"
            "</capabilities>")
    assert kvm_guest_arches(caps) == ["x86_64"]
    assert pool_target("<pool type='dir'><name>default</name><target><path>/var/lib/libvirt/images</path>"
                       "</target></pool>") == "/var/lib/libvirt/images"
    with pytest.raises(ParseError):
        kvm_guest_arches('<!DOCTYPE x [<!ENTITY a "aaaa">]><capabilities>&a;</capabilities>')


def test_device_probe_as_is_live_only_and_never_opens_an_offline_node(host_root):
    from kvmcheck.core.host import OfflineError

    root = host_root("consumer-debian-locked")
    with pytest.raises(OfflineError):
        Host(str(root)).device_probe_as("/dev/kvm", 64055, 108, (108,))


def test_a_capture_without_account_files_skips_and_a_missing_user_fails(host_root):
    import kvmcheck

    root = host_root("consumer-rhel9")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")  # the qemu user is gone
    result = kvmcheck.run(str(root), only=["kvm.consumer"]).checks[0]
    assert (result.status.value, "'qemu'" in result.summary) == ("fail", True)
    (root / "etc/passwd").unlink()
    result = kvmcheck.run(str(root), only=["kvm.consumer"]).checks[0]
    assert (result.status.value, result.summary) == ("skip", "no /etc/passwd in this root: QEMU's user cannot be "
                                                              "resolved")
