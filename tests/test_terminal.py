# SPDX-License-Identifier: GPL-2.0-or-later
"""The text report as a person reads it: in a real terminal (tmux) of 80 and 120 columns, no line is longer
than the window, and no fix command is split across lines; progress on stderr only on a terminal."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from kvmcheck.core.render import _SPAN, wrap

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")


def tmux_run(args, columns: int, tmp_path) -> list:
    """The lines kvmcheck printed in a tmux window `columns` wide (joined: a line the terminal had to wrap
    comes back as one line longer than the window)."""
    session = f"kvmcheck-test-{os.getpid()}-{columns}"
    done = tmp_path / f"done-{columns}"
    command = " ".join(["NO_COLOR=1", *[f"'{a}'" for a in CLI + list(args)], ";", "touch", str(done)])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(columns), "-y", "50", "sh", "-c",
                    command + "; sleep 60"], check=True, env=dict(os.environ, TMUX=""))
    try:
        deadline = time.monotonic() + 120  # a hang guard
        while not done.exists():
            assert time.monotonic() < deadline, "kvmcheck did not finish in tmux"
            time.sleep(0.05)
        pane = subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", session],
                              capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    return pane.rstrip("\n").splitlines()


def logical_lines(lines: list) -> list:
    """Lines with shell continuations (a trailing ' \\') joined, as a shell would read them."""
    out, pending = [], ""
    for line in lines:
        if line.endswith(" \\"):
            pending += line[:-2].strip() + " "
            continue
        out.append(pending + line.strip() if pending else line)
        pending = ""
    return out


def commands(report: dict) -> list:
    """Every quoted span in the fixes: the commands (and names) a reader copies whole."""
    return sorted({m.group()[1:-1] for c in report["checks"] for m in _SPAN.finditer(c.get("remediation") or "")})


@needs_tmux
@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("scenario", ["pvm-host", "intel-firmware-disabled", "live"])
def test_no_line_is_longer_than_the_window_and_no_command_is_split(host_root, tmp_path, columns, scenario):
    args = ["check"] + ([] if scenario == "live" else ["--root", str(host_root(scenario))])
    lines = tmux_run(args, columns, tmp_path)
    assert any(line.startswith("Verdict: ") for line in lines), lines[-10:]
    too_long = [line for line in lines if len(line) > columns]
    assert too_long == []
    report = json.loads(subprocess.run(CLI + args + ["-f", "json"], capture_output=True, text=True).stdout)
    joined = logical_lines(lines)
    spans = commands(report)
    assert spans, "the scenario has fixes with commands"
    split = [s for s in spans if not any(s in line for line in joined)]
    assert split == []


def test_the_width_comes_from_columns_when_not_on_a_terminal(host_root):
    root = str(host_root("pvm-host"))
    for columns in ("60", "100"):
        out = subprocess.run(CLI + ["check", "--root", root], capture_output=True, text=True,
                             env=dict(os.environ, COLUMNS=columns)).stdout
        assert max(len(line) for line in out.splitlines()) <= int(columns)
        assert max(len(line) for line in out.splitlines()) > int(columns) - 10  # the width is used, not 80
    narrow = subprocess.run(CLI + ["check", "--root", root], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "COLUMNS"}).stdout
    assert max(len(line) for line in narrow.splitlines()) <= 80  # the default


def test_wrap_keeps_quoted_commands_whole_and_sets_long_ones_apart():
    fix = ("Reload the modules ('modprobe -r kvm_intel kvm; modprobe kvm_intel', or kvm_amd) so the driver "
           "backs the node. Install them: 'apt-get update && apt-get install qemu-system-x86 "
           "libvirt-daemon-system virtinst ovmf qemu-utils libvirt-clients'. libvirt's daemon is next.")
    text = wrap(fix, 6, 60)
    lines = text.splitlines()
    assert all(len(line) <= 60 for line in lines)
    assert any("'modprobe -r kvm_intel kvm; modprobe kvm_intel'," in line for line in lines)
    # Longer than a line: unquoted on lines of its own, continued with a backslash at spaces.
    joined = logical_lines(lines)
    assert "apt-get update && apt-get install qemu-system-x86 libvirt-daemon-system virtinst ovmf qemu-utils " \
           "libvirt-clients" in joined
    assert any(line.endswith(" \\") for line in lines)
    assert "libvirt's daemon is next." in " ".join(lines)  # an apostrophe opens no span
    assert wrap("table cell text " * 8, 20, 60, used=20).splitlines()[1].startswith(" " * 20)


def test_progress_goes_to_a_terminal_only(host_root, tmp_path):
    """On a pipe, stderr stays empty (Kickstart logs, Ansible); on a terminal a run that takes more than
    half a second shows which check is running, on one stderr line cleared at the end."""
    import socket

    script = shutil.which("script")
    if script is None:
        pytest.skip("script(1) is needed to give kvmcheck a terminal")
    # A slow check for real: --online probes each repository, and this one listens but never answers, so
    # repos.configured waits for its 3 s limit.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        root = host_root("pkg-debian12-deb822")
        sources = root / "etc/apt/sources.list.d/debian.sources"
        port = silent.getsockname()[1]
        sources.write_text(re.sub(r"http://[^ \n]+", f"http://127.0.0.1:{port}/debian", sources.read_text()))
        args = ["check", "--root", str(root), "--only", "repos.configured", "--online"]
        piped = subprocess.run(CLI + args, capture_output=True, text=True, timeout=120)
        assert piped.stderr == "" and "Verdict: " in piped.stdout

        typescript = tmp_path / "typescript"
        cmd = " ".join(f"'{a}'" for a in CLI + args + ["-o", str(tmp_path / "r.txt")])
        subprocess.run([script, "-q", "-e", "-c", cmd, str(typescript)], capture_output=True, timeout=120)
    finally:
        silent.close()
    seen = typescript.read_bytes().decode("utf-8", "replace")
    lines = [line for line in re.split(r"[\r\n]", seen) if "kvmcheck: check " in line]
    assert lines and all("kvmcheck: check 1: repos.configured" in line for line in lines), seen[-500:]
    last = seen.rindex("kvmcheck: check ")
    assert "\r\x1b[K" in seen[last:]  # the line is cleared at the end


def test_narrow_windows_keep_rows_in_their_column_and_words_unchanged():
    # A row whose id column leaves no room: the summary starts on the next line at the hanging indent.
    assert wrap("6.18.44-fc-v1252 (>= 2.6.20)", 33, 40, 9, 33).splitlines() == ["", " " * 9 + "6.18.44-fc-v1252 (>= 2.6.20)"]
    # A long word that is no quoted command is cut at the width, with nothing added (no shell continuation).
    text = wrap("off (mitigations=auto,no_guest_host,no_guest_guest), so", 6, 40)
    assert "\\" not in text and all(len(line) <= 40 for line in text.splitlines())
    assert "".join(line.strip() for line in text.splitlines()).startswith("off(mitigations=auto,no_guest_host,no_guest_guest),")
