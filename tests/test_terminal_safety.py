# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 14 item 11: strings from files and reports are shown escaped, never obeyed, on a terminal
(text, Markdown and Nagios reports, fleet text, diff text); kvmcheck's own colours survive.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import materialize

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


ESC = "\x1b]0;PWNED\x07\x1b[2J\x9b31m\u202e"  # OSC title + BEL, clear screen, C1 CSI, right-to-left override
# What must never reach a terminal from data: C0 but tab/newline, DEL, C1, bidi embeddings/overrides/isolates.
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def run(args, timeout=120, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


# --- item 11: terminal escape injection -------------------------------------------------------------------------
def _inject(old: str, new: str):
    def edit(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)
    return edit


# (captured root, file in it, edit, the formats in which that file's text is reported)
HOSTILE = {
    "repository URL": ("pkg-debian12-deb822", "etc/apt/sources.list.d/debian.sources",
                       _inject("http://deb.debian.org/debian\n", f"http://deb.debian.org/debian{ESC}\n"),
                       ("text", "markdown")),
    "NFS mount source": ("storage-nfs4", "proc/mounts", _inject("nas01:/vm", "nas01:/vm" + ESC.replace(" ", "")),
                         ("text", "markdown")),
    "modprobe.d line": ("mem-ksm-off", "etc/modprobe.d/cis-hardening.conf",
                        _inject("install kvm_intel /bin/false", f"install kvm_intel /bin/false {ESC}"),
                        ("text", "markdown", "nagios")),
    "vulnerability text": ("vuln-one-vulnerable", "sys/devices/system/cpu/vulnerabilities/spectre_v2",
                           lambda text: f"Vulnerable{ESC}\n", ("text", "markdown")),
}


def hostile_root(case: str, tmp_path: Path) -> Path:
    host, rel, edit, _ = HOSTILE[case]
    root = materialize(host, tmp_path)
    path = root / rel
    path.write_text(edit(path.read_text()))
    (root / "proc/sys/kernel").mkdir(parents=True, exist_ok=True)
    return root


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("fmt", ["text", "markdown", "nagios"])
def test_hostile_file_contents_are_shown_escaped_never_obeyed(case, fmt, tmp_path):
    root = hostile_root(case, tmp_path)
    proc = subprocess.run(CLI + ["check", "--root", str(root), "-f", fmt], capture_output=True, timeout=120)
    out = proc.stdout.decode("utf-8")
    assert proc.returncode in (0, 1, 2, 3) and out, proc.stderr
    assert FORBIDDEN.findall(out) == []
    if fmt in HOSTILE[case][3]:  # the text reached the report, shown escaped
        assert "\\x1b]0;PWNED\\x07\\x1b[2J\\x9b31m\\u202e" in out


def test_kvmchecks_own_colours_survive_and_data_cannot_colour(tmp_path):
    import kvmcheck
    from kvmcheck.core.render import render

    report = kvmcheck.run(str(hostile_root("modprobe.d line", tmp_path)))
    out = render(report, "text", color=True)
    escapes = re.findall("\x1b(.{0,6})", out)
    assert escapes and all(re.match(r"\[\d+m", e) for e in escapes)  # SGR colours only: kvmcheck's own
    assert "\x1b[31mFAIL \x1b[0m" in out  # the paint filter still colours a failure
    # the verdict block is a macro: its colour must not be escaped a second time when the block is printed
    assert "Verdict: \x1b[31mNOT READY\x1b[0m" in out
    assert "\\x1b[31m" not in out and "\\x1b[0m" not in out
    assert FORBIDDEN.findall(re.sub(r"\x1b\[\d+m", "", out)) == []


def _hostile_reports(tmp_path: Path):
    import kvmcheck

    base = kvmcheck.run(str(materialize("mem-ksm-off", tmp_path))).to_dict()
    old = json.loads(json.dumps(base))
    old["host"]["hostname"] = "web1"
    new = json.loads(json.dumps(base))
    new["host"]["hostname"] = "web1"
    new["verdict"] = "ready" if base["verdict"] != "ready" else "not-ready"
    new["checks"][0]["id"] += ESC  # a check id from a hostile report
    new["checks"][1]["status"] = "fail"
    new["checks"][1]["summary"] = "regressed" + ESC
    folder = tmp_path / "reports"
    (folder / "old").mkdir(parents=True)
    (folder / "new").mkdir()
    (folder / "old" / "web1.json").write_text(json.dumps(old))
    (folder / "new" / "web1.json").write_text(json.dumps(new))
    evil = json.loads(json.dumps(new))
    evil["host"]["hostname"] = "evil" + ESC
    (folder / "new" / "evil.json").write_text(json.dumps(evil))
    bad_verdict = json.loads(json.dumps(new))
    bad_verdict["verdict"] = "not-ready -> " + ESC + " ready"  # the review's diff attack
    (folder / "verdict.json").write_text(json.dumps(bad_verdict))
    return folder


def test_fleet_text_on_hostile_reports(tmp_path):
    folder = _hostile_reports(tmp_path)
    proc = subprocess.run(CLI + ["fleet", str(folder / "new"), str(folder / "verdict.json"), "--no-progress"],
                          capture_output=True, timeout=120)
    out = proc.stdout.decode("utf-8")
    assert proc.returncode == 1 and FORBIDDEN.findall(out) == []
    assert "cpu.virt-flags\\x1b]0;PWNED" in out or "\\x1b]0;PWNED" in out  # the hostile id, escaped


def test_diff_text_on_hostile_reports(tmp_path):
    folder = _hostile_reports(tmp_path)
    for new in (folder / "new" / "web1.json", folder / "verdict.json", folder / "new" / "evil.json"):
        proc = subprocess.run(CLI + ["diff", str(folder / "old" / "web1.json"), str(new)], capture_output=True,
                              timeout=120)
        out = proc.stdout.decode("utf-8") + proc.stderr.decode("utf-8")
        assert proc.returncode in (0, 1, 2) and out
        assert FORBIDDEN.findall(out) == [], out
        assert "\\x1b]0;PWNED\\x07\\x1b[2J\\x9b31m\\u202e" in out


def test_the_sanitizer():
    from kvmcheck.core.terminal import Painted, one_line, paint, terminal_text

    assert terminal_text("a\x1b[2Jb\x07c\x9bd\x7fe\u202ef\tg\nh\ri") == "a\\x1b[2Jb\\x07c\\x9bd\\x7fe\\u202ef\tg\nh\\ri"
    assert one_line("a\nb\tc") == "a\\nb\\tc"
    assert terminal_text(terminal_text("x\x1by")) == "x\\x1by"  # twice is once
    assert terminal_text("ünïcode ✓ 日本") == "ünïcode ✓ 日本"
    painted = paint("31", "bad\x1b]0;x\x07", True)
    assert isinstance(painted, Painted) and painted == "\x1b[31mbad\\x1b]0;x\\x07\x1b[0m"
    assert terminal_text(painted) is painted


def _archive_with_hostile_device(folder: Path, also_member: bool) -> Path:
    """A snapshot archive whose DEVICES file names a device path holding terminal escapes (not a path where a
    check expects a device: refused with a note quoting it); when also_member, the archive also holds that path
    as a FIFO member: the archive is then refused, and the refusal quotes the path."""
    import io
    import tarfile

    evil = "dev/kvm" + ESC.replace(" ", "")
    path = folder / "hostile.tar"
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("proc/sys/kernel/osrelease", b"6.1.0-18-amd64\n")
        add("DEVICES", f"{evil} c 10 232 0660 0 0\n".encode())
        if also_member:
            fifo = tarfile.TarInfo(evil)
            fifo.type = tarfile.FIFOTYPE
            tar.addfile(fifo)
    os.chmod(path, 0o644)
    return path


def test_nagios_usage_error_quoting_an_archive_is_one_clean_line(tmp_path):
    archive = _archive_with_hostile_device(tmp_path, also_member=True)
    proc = subprocess.run(CLI + ["check", "--root", str(archive), "-f", "nagios"], capture_output=True, timeout=120)
    out = proc.stdout.decode("utf-8")
    assert proc.returncode == 3 and len(out.splitlines()) == 1
    assert out.startswith("KVMCHECK UNKNOWN - usage error: ") and "device and FIFO members are refused" in out
    assert FORBIDDEN.findall(out) == [] and "\\x1b]0;PWNED" in out


def test_archive_notes_on_stderr_are_sanitized(tmp_path):
    """As nobody, the device nodes an archive lists cannot be created: the note naming them quotes the archive."""
    import tempfile

    from conftest import as_nobody

    folder = Path(tempfile.mkdtemp(prefix="kvmcheck-archive-", dir="/tmp"))
    try:
        os.chmod(folder, 0o755)
        archive = _archive_with_hostile_device(folder, also_member=False)
        proc = subprocess.run(as_nobody(CLI + ["check", "--root", str(archive), "--only", "kernel.version"]),
                              capture_output=True, timeout=120, cwd="/")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    err = proc.stderr.decode("utf-8")
    assert proc.returncode in (0, 1, 3), err
    assert "not created" in err and "\\x1b]0;PWNED" in err and FORBIDDEN.findall(err) == []


def test_usage_error_quoting_an_archive_is_sanitized(tmp_path):
    archive = _archive_with_hostile_device(tmp_path, also_member=True)
    proc = subprocess.run(CLI + ["check", "--root", str(archive)], capture_output=True, timeout=120)
    err = proc.stderr.decode("utf-8")
    assert proc.returncode == 2 and "device and FIFO members are refused" in err and "Traceback" not in err
    assert FORBIDDEN.findall(err) == [] and "\\x1b]0;PWNED" in err
