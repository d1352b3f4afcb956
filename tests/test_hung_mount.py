# SPDX-License-Identifier: GPL-2.0-or-later
"""A real hung mount: a FUSE file system whose statfs and lookups never answer, like a dead NFS server.

kvmcheck must finish within the check's time limit, name the mount, and exit.
Needs /dev/fuse, libfuse (Debian: fuse3 + libfuse3-3, see .ci/apt-packages), mfusepy, and root.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

CHECK_TIMEOUT = 3  # --timeout: the runner's limit for each check

# The FUSE daemon, run as its own process so the test can kill it: the mount's root answers getattr
# (so it can be mounted and looked at), everything below it and every statfs waits forever.
DAEMON = textwrap.dedent('''
    import stat, sys, threading
    import mfusepy as fuse

    class Stale(fuse.Operations):
        def getattr(self, path, fh=None):
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
            threading.Event().wait()

        def statfs(self, path):
            threading.Event().wait()

        def readdir(self, path, fh):
            threading.Event().wait()

    fuse.FUSE(Stale(), sys.argv[1], foreground=True, nothreads=False)
''')


def _fuse_unavailable():
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is absent (no fuse module, or a container without the device)"
    if os.geteuid() != 0:
        return "mounting FUSE here needs root"
    probe = subprocess.run([sys.executable, "-c", "import mfusepy"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"mfusepy or libfuse is not installed ({last}); apt-get install fuse3 libfuse3-3, pip install mfusepy"
    return None


def _mounted(path: Path) -> bool:
    # Read the table instead of stat()ing the mount point: that could hang on this very mount.
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f if len(line.split()) > 4)


@pytest.fixture
def stale_mount(hung_at):
    """The FUSE daemon at ROOT/mnt/stale: (root, daemon), killed and unmounted afterwards (see hung_at)."""
    return hung_at("mnt/stale")


def _kvmcheck(root: Path, only: str, daemon):
    """check --root ROOT --only ONLY as JSON, through _cli (a hang kills the FUSE daemon, then fails)."""
    return _cli(["check", "--root", str(root), "--only", only, "--timeout", str(CHECK_TIMEOUT), "--format", "json"],
                daemon, CHECK_TIMEOUT)


def _results(proc):
    assert proc.returncode in (0, 1, 3), proc.stderr
    data = json.loads(proc.stdout)
    return {r["id"]: r for r in data["checks"]}


def test_nfs_mount_that_never_answers_is_named_and_the_run_finishes(stale_mount):
    root, daemon = stale_mount
    (root / "proc").mkdir()
    (root / "proc/mounts").write_text("/dev/sda1 / ext4 rw,relatime 0 0\n"
                                      "server:/export /mnt/stale nfs4 rw,vers=4.2,hard 0 0\n")
    (root / "etc").mkdir()
    (root / "var/lib/libvirt").mkdir(parents=True)
    # The images directory is a link onto the dead mount: even following it would hang.
    (root / "var/lib/libvirt/images").symlink_to("/mnt/stale/images")

    proc, elapsed = _kvmcheck(root, "storage.*", daemon)
    print(f"wall time {elapsed:.2f} s")
    assert elapsed < CHECK_TIMEOUT + 1, f"took {elapsed:.2f} s"
    results = _results(proc)
    shared, images = results["storage.shared"], results["storage.images-dir"]
    assert (shared["status"], images["status"]) == ("fail", "fail")
    assert "/mnt/stale" in shared["summary"] and "server:/export" in shared["summary"]
    assert shared["evidence"]["stuck"] == ["/mnt/stale"]
    assert "'umount -f -l /mnt/stale'" in shared["remediation"]  # the path kvmcheck found, ready to paste
    assert "/mnt/stale" in images["summary"] and "does not answer" in images["summary"]
    assert proc.returncode == 1


def test_images_dir_alone_on_a_mount_whose_statfs_never_returns(stale_mount):
    root, daemon = stale_mount
    (root / "proc").mkdir()
    (root / "proc/mounts").write_text("/dev/sda1 / ext4 rw 0 0\nnas:/vm /mnt/stale fuse.glusterfs rw 0 0\n")
    (root / "etc/libvirt/storage").mkdir(parents=True)
    (root / "etc/libvirt/storage/default.xml").write_text(
        "<pool type='dir'><name>default</name><target><path>/mnt/stale</path></target></pool>")

    proc, elapsed = _kvmcheck(root, "storage.images-dir", daemon)  # no storage.shared probe to lean on
    print(f"wall time {elapsed:.2f} s")
    assert elapsed < CHECK_TIMEOUT + 1, f"took {elapsed:.2f} s"
    images = _results(proc)["storage.images-dir"]
    assert images["status"] == "fail"
    assert images["summary"] == "/mnt/stale does not answer (GlusterFS nas:/vm on /mnt/stale)"
    assert images["evidence"]["state"] == "timeout"


# -- issue 14 item 4: a hung mount inside --root, and the snapshot command ----------------------------------
@pytest.fixture
def hung_at(tmp_path):
    """hung_at("etc/modprobe.d") -> (root, daemon): the FUSE daemon above mounted at ROOT/<that path>."""
    reason = _fuse_unavailable()
    if reason:
        pytest.skip(reason)
    mounted = []

    def start(rel: str):
        root = tmp_path / "root"
        mountpoint = root / rel
        mountpoint.mkdir(parents=True)
        script = tmp_path / "stale_fuse.py"
        script.write_text(DAEMON)
        log = open(tmp_path / "daemon.log", "w")
        daemon = subprocess.Popen([sys.executable, str(script), str(mountpoint)], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        mounted.append((mountpoint, daemon, log))
        deadline = time.monotonic() + 15
        while not _mounted(mountpoint):
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"could not mount a FUSE file system here: {(tmp_path / 'daemon.log').read_text()[-300:]}")
            time.sleep(0.05)
        return root, daemon

    yield start
    for mountpoint, daemon, log in mounted:
        try:
            os.killpg(daemon.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        daemon.wait(timeout=10)
        log.close()
        for argv in (["fusermount3", "-u", "-z", str(mountpoint)], ["umount", "-l", str(mountpoint)]):
            if _mounted(mountpoint) and shutil.which(argv[0]):
                subprocess.run(argv, capture_output=True, timeout=10)
        assert not _mounted(mountpoint), f"{mountpoint} is still mounted"


def _cli(argv, daemon, limit):
    """Run kvmcheck; the run counts as finished when it has exited AND closed its stdout (a '| cat' would
    wait for that).  If it hangs, the FUSE daemon is killed first (that frees it), then the test fails."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", "from kvmcheck.cli import main; main()"] + argv,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=limit * 5)
    except subprocess.TimeoutExpired:
        os.killpg(daemon.pid, signal.SIGKILL)
        proc.kill()
        proc.communicate(timeout=30)
        pytest.fail(f"kvmcheck {argv[0]} hung on the stale mount for {time.monotonic() - start:.1f} s")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), time.monotonic() - start


def test_check_root_with_a_hung_modprobe_d_finishes_and_exits(hung_at):
    root, daemon = hung_at("etc/modprobe.d")
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vmx lm\n")
    proc, elapsed = _cli(["check", "--root", str(root), "--only", "k*", "--timeout", str(CHECK_TIMEOUT),
                          "--format", "json"], daemon, CHECK_TIMEOUT)
    print(f"wall time {elapsed:.2f} s")
    assert elapsed < CHECK_TIMEOUT + 1, f"took {elapsed:.2f} s"
    results = _results(proc)
    blacklist = results["kernel.modules-blacklist"]
    assert (blacklist["id"], blacklist["status"]) == ("kernel.modules-blacklist", "skip")
    assert "/etc/modprobe.d" in blacklist["summary"] and "hung network or FUSE mount" in blacklist["summary"]


@pytest.mark.parametrize("where", ["root", "inside"])
def test_snapshot_with_a_hung_mount_finishes(hung_at, tmp_path, where):
    # "root": the whole --root is the hung mount; "inside": a declared directory of the root is.
    root, daemon = hung_at("" if where == "root" else "etc/modprobe.d")
    if where == "inside":
        (root / "etc/os-release").write_text("ID=rhel\n")
    out = tmp_path / "snap.tar.gz"
    proc, elapsed = _cli(["snapshot", "--root", str(root), "--output", str(out)], daemon, CHECK_TIMEOUT)
    print(f"wall time {elapsed:.2f} s")
    assert elapsed < CHECK_TIMEOUT + 1, f"took {elapsed:.2f} s"
    assert proc.returncode == 0, proc.stderr
    import tarfile

    with tarfile.open(out) as tar:
        manifest = tar.extractfile("MANIFEST").read().decode()
    assert "hung network or FUSE mount" in manifest


def test_host_operations_under_a_hung_mount_are_abandoned_once(hung_at):
    from kvmcheck.core.host import Host

    root, _ = hung_at("etc/modprobe.d")
    (root / "etc/os-release").write_text("ID=rhel\n")
    host = Host(str(root))
    start = time.monotonic()
    with pytest.raises(TimeoutError) as first:
        host.listdir("/etc/modprobe.d")
    assert time.monotonic() - start < host.blocking_timeout + 1
    assert str(first.value) == ("[Errno 110] no answer within 2 s from /etc/modprobe.d (a hung network or FUSE "
                                "mount): '/etc/modprobe.d'")
    again = time.monotonic()
    for call in (lambda: host.read_text("/etc/modprobe.d/kvm.conf"), lambda: host.stat("/etc/modprobe.d"),
                 lambda: host.resolve("/etc/modprobe.d/x")):
        with pytest.raises(TimeoutError, match="did not answer before"):
            call()
    assert time.monotonic() - again < 1  # the mount is not asked again
    assert host.read_text("/etc/os-release") == "ID=rhel\n"  # beside the mount, in this process as before


def test_remote_mounts_from_mountinfo():
    from kvmcheck.core.host import remote_mounts

    table = ("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
             "30 22 0:40 / /mnt/nas\\040share rw - nfs4 srv:/x rw,vers=4.2\n"
             "31 22 0:41 / /srv/fuse rw shared:9 master:2 - fuse.sshfs u@h: rw\n"
             "32 22 0:42 / /tmp rw - tmpfs tmpfs rw\n"
             "garbage\n")
    assert remote_mounts(table) == ["/mnt/nas share", "/srv/fuse"]


# The live snapshot: a FUSE file system that never answers mounted at a path the checks declare
# (/run/modprobe.d), inside a private mount namespace so that nothing else on this machine sees it.
LIVE_SNAPSHOT = textwrap.dedent('''
    import os, subprocess, sys, time
    daemon_py, output = sys.argv[1:3]
    subprocess.run(["mount", "-t", "tmpfs", "kvmcheck-test", "/run"], check=True)  # this namespace's /run only
    os.mkdir("/run/modprobe.d")
    daemon = subprocess.Popen([sys.executable, daemon_py, "/run/modprobe.d"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 15
    while not any(l.split()[4] == "/run/modprobe.d" for l in open("/proc/self/mountinfo")):
        if daemon.poll() is not None or time.monotonic() > deadline:
            print("SKIP could not mount FUSE in a mount namespace"); sys.exit(0)
        time.sleep(0.05)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", "from kvmcheck.cli import main; main()", "snapshot",
                             "--output", output], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=20)
        print("ELAPSED", time.monotonic() - start, "RC", proc.returncode, "ERR", err.strip()[-300:])
    except subprocess.TimeoutExpired:
        print("HUNG", time.monotonic() - start)
    finally:
        os.killpg(daemon.pid, 9)  # aborts the connection: whatever waited on it fails and ends
        daemon.wait()
        proc.kill()
        proc.communicate()
''')


def test_live_snapshot_with_a_hung_mount_at_a_declared_path_finishes(tmp_path):
    reason = _fuse_unavailable()
    if reason:
        pytest.skip(reason)
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount in a private mount namespace")
    (tmp_path / "stale_fuse.py").write_text(DAEMON)
    (tmp_path / "driver.py").write_text(LIVE_SNAPSHOT)
    out = tmp_path / "live.tar.gz"
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           str(tmp_path / "driver.py"), str(tmp_path / "stale_fuse.py"), str(out)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"no private mount namespace here: {proc.stderr.strip()[:200]}")
    print(proc.stdout)
    assert proc.stdout.startswith("ELAPSED"), proc.stdout + proc.stderr
    elapsed, rc = float(proc.stdout.split()[1]), int(proc.stdout.split()[3])
    assert rc == 0, proc.stdout
    assert elapsed < CHECK_TIMEOUT + 4, f"took {elapsed:.2f} s"  # a whole live snapshot, plus one abandoned wait
    import tarfile

    with tarfile.open(out) as tar:
        manifest = tar.extractfile("MANIFEST").read().decode()
    assert "/run/modprobe.d" in manifest and "hung network or FUSE mount" in manifest
