# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 14 items 2, 3, 16a and 16b, the review's attacks replayed: every file kvmcheck writes (check -o,
fleet -o, snapshot -o) is written atomically and link-safely, and -o names a regular file.

The real thing: a second user (nobody, through setpriv) planting links, a tmpfs that fills up, real FIFOs,
device and procfs paths.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import as_nobody

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]

NOBODY = 65534

# What must never reach a terminal from data: C0 but tab/newline, DEL, C1, bidi embeddings/overrides/isolates.


def run(args, timeout=120, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture
def shared_dir():
    """A directory nobody owns and can write (a node_exporter textfile directory), reachable by nobody
    (pytest's tmp_path is below a 0700 directory)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the attacks are a second user's against root's kvmcheck")
    folder = Path(tempfile.mkdtemp(prefix="kvmcheck-textfile-", dir="/tmp"))
    os.chmod(folder, 0o755)
    os.chown(folder, NOBODY, NOBODY)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def plant_link(target: Path, link: Path) -> None:
    """nobody creates link -> target (a real second user, as the attacker)."""
    argv = as_nobody([sys.executable, "-c", "import os, sys; os.symlink(sys.argv[1], sys.argv[2])",
                      str(target), str(link)])
    subprocess.run(argv, check=True, capture_output=True, timeout=60, cwd="/")


def root_victim(tmp_path: Path) -> Path:
    victim = tmp_path / "root-only" / "shadow"
    victim.parent.mkdir()
    victim.write_text("root:secret:19000::::::\n")
    os.chmod(victim, 0o600)
    return victim


# --- items 2 + 3: one atomic, link-safe writer -----------------------------------------------------------------
def test_predictable_prometheus_temporary_planted_by_nobody_is_not_followed(host_root, tmp_path, shared_dir):
    """The review's attack: kvmcheck wrote '.node.prom.<pid>.tmp' with open('w') and chmod'ed it by name, so a
    link planted there by the textfile directory's owner made root overwrite and chmod 0644 any file. The
    child's pid is known after the fork; nobody plants the link before the child runs kvmcheck."""
    root, victim = host_root("pvm-host"), root_victim(tmp_path)
    target = shared_dir / "node.prom"
    plant_argv = as_nobody([sys.executable, "-c", "pass"])  # skip before forking if nobody cannot run Python
    assert plant_argv
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: kvmcheck, once the trap is set
        code = 70
        try:
            os.close(ready_w)
            os.read(ready_r, 1)
            sys.argv = ["kvmcheck", "check", "--root", str(root), "-f", "prometheus", "-o", str(target)]
            from kvmcheck.cli import main

            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 70
        finally:
            os._exit(code)
    os.close(ready_r)
    try:
        plant_link(victim, shared_dir / f".node.prom.{pid}.tmp")
    finally:
        os.write(ready_w, b"go")
        os.close(ready_w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) in (0, 1)
    assert victim.read_text() == "root:secret:19000::::::\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    st = os.lstat(target)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == 0
    assert "kvmcheck_ready" in target.read_text()
    assert os.readlink(shared_dir / f".node.prom.{pid}.tmp") == str(victim)  # nobody's link: not ours to touch


@pytest.mark.parametrize("fmt", ["text", "json", "prometheus"])
def test_output_that_is_a_link_planted_by_nobody_is_refused(host_root, tmp_path, shared_dir, fmt):
    """open('w') followed a link at the target itself: root's report overwrote the link's target."""
    root, victim = host_root("pvm-host"), root_victim(tmp_path)
    target = shared_dir / "report.out"
    plant_link(victim, target)
    proc = run(["check", "--root", root, "-f", fmt, "-o", target])
    assert proc.returncode == 2, proc.stderr
    assert str(target) in proc.stderr and "symbolic link" in proc.stderr and "Traceback" not in proc.stderr
    assert victim.read_text() == "root:secret:19000::::::\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_a_link_planted_after_the_check_is_replaced_not_followed(tmp_path, shared_dir):
    """The race behind the usage error: a link appearing between the check and the write is replaced by the
    rename, never written through (the writer, called as check() calls it)."""
    from kvmcheck.cli import _write_output

    victim = root_victim(tmp_path)
    target = shared_dir / "node.prom"
    plant_link(victim, target)
    _write_output(str(target), "kvmcheck_ready 1\n")
    assert victim.read_text() == "root:secret:19000::::::\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert not target.is_symlink() and target.read_text() == "kvmcheck_ready 1\n"


def _json_report(host_root, tmp_path) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    proc = run(["check", "--root", host_root("pvm-host"), "-f", "json", "-o", folder / "pvm.json"])
    assert proc.returncode in (0, 1), proc.stderr
    return folder


def _command(kind, host_root, tmp_path, target):
    if kind == "check":
        return ["check", "--root", host_root("pvm-host"), "-o", target]
    if kind == "fleet":
        return ["fleet", _json_report(host_root, tmp_path), "-o", target, "--no-progress"]
    return ["snapshot", "--root", host_root("pvm-host"), "-o", target]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs mounted for the test (skips where mounting is not permitted)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("kind", ["check", "fleet", "snapshot"])
def test_enospc_leaves_the_previous_report_intact(kind, host_root, tmp_path, tiny_tmpfs):
    """The old writer truncated first: a full disk left an empty report where yesterday's was."""
    target = tiny_tmpfs / ("report.tar.gz" if kind == "snapshot" else "report.out")
    target.write_bytes(b"yesterday's complete report\n")
    filler = tiny_tmpfs / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill the file system to the last byte
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 512)
    proc = run(_command(kind, host_root, tmp_path, target))
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert target.read_bytes() == b"yesterday's complete report\n"
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["filler", target.name]  # no temporary left


@pytest.mark.parametrize("kind", ["check", "fleet", "snapshot"])
def test_a_reader_never_sees_a_partial_report(kind, host_root, tmp_path):
    """A reader that opened the report before a run (node_exporter, tail) keeps reading the old whole file:
    the target is replaced by a new inode, never truncated and rewritten in place."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / ("report.tar.gz" if kind == "snapshot" else "report.out")
    target.write_bytes(b"the previous report\n")
    os.chmod(target, 0o640)
    before = target.stat()
    with open(target, "rb") as reader:
        proc = run(_command(kind, host_root, tmp_path, target))
        assert proc.returncode in (0, 1), proc.stderr
        assert reader.read() == b"the previous report\n"
    after = target.stat()
    assert after.st_ino != before.st_ino and after.st_size > 0
    # an existing report keeps its mode (the operator's 0640); a snapshot is always 0600
    assert stat.S_IMODE(after.st_mode) == (0o600 if kind == "snapshot" else 0o640)
    assert sorted(p.name for p in out.iterdir()) == [target.name]


def test_a_new_report_is_0644_whatever_the_umask(host_root, tmp_path):
    target = tmp_path / "node.prom"
    proc = subprocess.run(CLI + ["check", "--root", str(host_root("pvm-host")), "-f", "prometheus", "-o", str(target)],
                          capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o077))
    assert proc.returncode in (0, 1), proc.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # node_exporter runs as its own user


# --- item 16a: -o is a regular file or a new file in an existing directory --------------------------------------
def _refused_paths(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {
        "procfs file": ("/proc/sys/vm/drop_caches", "kernel interface"),
        "new file in procfs": ("/proc/kvmcheck-report", "kernel interface"),
        "new file in sysfs": ("/sys/kernel/kvmcheck-report", "kernel interface"),
        "device": ("/dev/null", "character device"),
        "FIFO": (str(fifo), "a FIFO"),  # the old writer blocked forever opening it
        "directory": (str(tmp_path), "a directory"),
        "missing directory": (str(tmp_path / "no" / "such" / "r.txt"), "does not exist"),
    }


@pytest.mark.parametrize("case", ["procfs file", "new file in procfs", "new file in sysfs", "device", "FIFO",
                                  "directory", "missing directory"])
def test_output_must_be_a_regular_file(case, host_root, tmp_path):
    path, why = _refused_paths(tmp_path)[case]
    proc = run(["check", "--root", host_root("pvm-host"), "-o", path], timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert path in proc.stderr and why in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_nagios_output_refused_is_one_unknown_line(host_root, tmp_path):
    proc = run(["check", "--root", host_root("pvm-host"), "-f", "nagios", "-o", "/proc/sys/vm/drop_caches"])
    assert proc.returncode == 3
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("KVMCHECK UNKNOWN - usage error: ")
    assert "/proc/sys/vm/drop_caches" in lines[0] and "kernel interface" in lines[0]


@pytest.mark.parametrize("kind", ["fleet", "snapshot"])
def test_fleet_and_snapshot_outputs_are_checked_too(kind, host_root, tmp_path):
    target = "/proc/kvmcheck.tar.gz" if kind == "snapshot" else "/dev/null"
    proc = run(_command(kind, host_root, tmp_path, target), timeout=60)
    assert proc.returncode == 2 and target in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# --- item 16b: stale temporaries of a SIGKILLed run -------------------------------------------------------------
def test_stale_temporaries_of_our_pattern_are_cleaned_and_nothing_else(host_root, tmp_path, shared_dir):
    victim = root_victim(tmp_path)
    old = time.time() - 2 * 3600
    names = {
        "stale": ".node.prom.0123456789ab.kvmcheck-tmp",  # ours, root's, two hours old: removed
        "legacy": ".node.prom.4242.tmp",  # the earlier writer's name for this target, as SIGKILL left it
        "fresh": ".node.prom.ba9876543210.kvmcheck-tmp",  # a run writing right now: kept
        "nobodys": ".node.prom.aaaaaaaaaaaa.kvmcheck-tmp",  # another user's file: kept
        "link": ".node.prom.bbbbbbbbbbbb.kvmcheck-tmp",  # a link (to root's file): kept, never followed
        "near-miss": ".node.prom.abc.kvmcheck-tmp",  # not our exact pattern: kept
        "other-legacy": ".other.prom.4242.tmp",  # the earlier name, but not of this target: kept
    }
    for key, name in names.items():
        path = shared_dir / name
        if key == "link":
            plant_link(victim, path)
            os.utime(path, (old, old), follow_symlinks=False)
            continue
        path.write_text("half a report\n")
        if key == "nobodys":
            os.chown(path, NOBODY, NOBODY)
        if key != "fresh":
            os.utime(path, (old, old))
    os.utime(victim, (old, old))
    proc = run(["check", "--root", host_root("pvm-host"), "-f", "prometheus", "-o", shared_dir / "node.prom"])
    assert proc.returncode in (0, 1), proc.stderr
    left = {p.name for p in shared_dir.iterdir()}
    assert left == {"node.prom"} | {names[k] for k in ("fresh", "nobodys", "link", "near-miss", "other-legacy")}
    assert victim.read_text() == "root:secret:19000::::::\n"
