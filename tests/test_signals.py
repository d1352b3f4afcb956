# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 14 item 9: SIGTERM, SIGHUP and SIGINT sent to a real kvmcheck process clean up (the archive's
private directory, the output's temporary) and exit 128+N without a traceback.
"""
from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import HOSTS, materialize

SCRIPT = [sys.executable, "-c", "from kvmcheck.core.signals import main; main()"]  # what the console script runs


# --- item 9: signals --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_archive(tmp_path_factory):
    """A snapshot of pvm-host plus 15,000 small files: unpacking takes long enough to be interrupted."""
    folder = tmp_path_factory.mktemp("archive")
    root = materialize("pvm-host", folder)
    path = folder / "big.tar"
    with tarfile.open(path, "w") as tar:
        for item in sorted(root.rglob("*")):
            if item.is_file() and not item.is_symlink() and not stat.S_ISCHR(item.lstat().st_mode):
                tar.add(item, arcname=str(item.relative_to(root)), recursive=False)
        data = b"x" * 512
        for i in range(15_000):
            info = tarfile.TarInfo(f"var/cache/filler/{i // 1000}/f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _default_signals() -> None:
    """In the child: the dispositions a login shell gives (this test runner may ignore SIGHUP, as nohup does,
    and kvmcheck keeps a signal its caller ignores ignored)."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def _signal_state(pid: int) -> int:
    """The SigCgt mask of a process (which signals it catches)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    return 0


def _wait_for(predicate, proc, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if predicate():
            return True
        time.sleep(0.002)
    return False


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_signal_while_unpacking_removes_the_private_directory(signame, big_archive, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    signum = getattr(signal, signame)
    proc = subprocess.Popen(SCRIPT + ["check", "--root", str(big_archive)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, TMPDIR=str(tmpdir)),
                            preexec_fn=_default_signals)
    try:
        # the private directory exists and files are being unpacked into it
        unpacking = _wait_for(lambda: any(tmpdir.glob("kvmcheck-snapshot-*/root/var/cache/filler/0/*")), proc)
        assert unpacking, "kvmcheck finished before the archive was seen unpacking"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert b"Traceback" not in err and f"stopped by {signame}".encode() in err
    assert list(tmpdir.iterdir()) == []


def test_sigint_during_startup_prints_no_traceback(tmp_path):
    """As soon as the handlers are in place (SIGHUP and SIGTERM caught: the console script installs them
    before importing the command line), Ctrl-C while typer and the rest are still being imported."""
    proc = subprocess.Popen(SCRIPT + ["check", "--root", str(HOSTS / "pvm-host")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_default_signals)
    try:
        wanted = (1 << (signal.SIGHUP - 1)) | (1 << (signal.SIGTERM - 1))
        assert _wait_for(lambda: _signal_state(proc.pid) & wanted == wanted, proc), "handlers never installed"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err and b"stopped by SIGINT" in err


def test_signal_while_writing_removes_the_temporary(tmp_path):
    """A real SIGTERM to a real process in the middle of the output writer's block."""
    target = tmp_path / "node.prom"
    target.write_text("previous\n")
    code = ("import os, signal, sys\n"
            "from kvmcheck.core.output import atomic_writer\n"
            "from kvmcheck.core.signals import guarded\n"
            "def write():\n"
            "    with atomic_writer(sys.argv[1]) as fh:\n"
            "        fh.write(b'half a rep')\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        fh.write(b'ort\\n')\n"
            "guarded(write)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.prom"] and target.read_text() == "previous\n"


def test_a_signal_the_caller_ignores_stays_ignored(big_archive, tmp_path):
    """nohup kvmcheck ...: SIGHUP is ignored when kvmcheck starts, and the run goes on to its report (and still
    removes the archive's private directory at the end)."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()

    def nohup() -> None:
        _default_signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = subprocess.Popen(SCRIPT + ["check", "--root", str(big_archive), "-f", "json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, TMPDIR=str(tmpdir)), preexec_fn=nohup)
    try:
        assert _wait_for(lambda: any(tmpdir.glob("kvmcheck-snapshot-*/root/var/cache/filler/0/*")), proc)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 1), err
    assert out.startswith(b"{") and b"stopped by" not in err
    assert list(tmpdir.iterdir()) == []


def test_nagios_stopped_by_a_signal_still_prints_one_status_line(big_archive, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen(SCRIPT + ["check", "--root", str(big_archive), "-f", "nagios"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, TMPDIR=str(tmpdir)),
                            preexec_fn=_default_signals)
    try:
        assert _wait_for(lambda: any(tmpdir.glob("kvmcheck-snapshot-*/root/var/cache/filler/0/*")), proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # A plugin answers 0-3 whatever happened: UNKNOWN, one line (without -f nagios: 128+N, as above).
    assert proc.returncode == 3 and b"Traceback" not in err
    assert out == b"KVMCHECK UNKNOWN - stopped: kvmcheck was stopped by SIGTERM before its verdict\n"
    assert list(tmpdir.iterdir()) == []
