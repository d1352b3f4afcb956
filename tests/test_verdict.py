# SPDX-License-Identifier: GPL-2.0-or-later
"""The verdict rests on evidence: ready, not-ready or unknown; one cause, one failure; a last screen to act on.

Exit statuses: 0 ready, 1 not ready, 2 usage, 3 unknown (Nagios: 3 UNKNOWN).  Every run here is a real
kvmcheck process on a captured root, on this machine, or on this machine as a second user (nobody).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import validate_report

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]
READY, NOT_READY, USAGE, UNKNOWN = 0, 1, 2, 3


def kvmcheck(*args, cli=CLI, prefix=()):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(list(prefix) + cli + list(args), capture_output=True, text=True, env=env, timeout=180,
                          cwd="/")


def report_of(proc) -> dict:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return validate_report(json.loads(proc.stdout))


def statuses(report: dict) -> dict:
    return {c["id"]: c for c in report["checks"]}


# --- a root with nothing to judge ---------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["empty", "scratch"])
def test_a_root_without_a_system_is_unknown_in_every_format(tmp_path, content):
    root = tmp_path / "root"
    root.mkdir()
    if content == "scratch":  # what /tmp or a home directory given by mistake holds
        (root / "notes.txt").write_text("hello\n")
        (root / "build").mkdir()
        (root / "build" / "out.log").write_text("x\n")
    text = kvmcheck("check", "--root", str(root), "--no-color")
    assert text.returncode == UNKNOWN, text.stderr
    head = "\n".join(text.stdout.splitlines()[:4])
    assert "this root holds no installed system" in head  # named in the first lines
    assert "Verdict: UNKNOWN" in text.stdout and "Verdict: READY" not in text.stdout

    data = report_of(kvmcheck("check", "--root", str(root), "-f", "json"))
    assert data["verdict"] == "unknown" and data["verdict_reason"].startswith("this root holds no installed system")
    assert data["fix_first"] == ["cpu.virt-flags", "kvm.modules", "kvm.device"]  # what a verdict would need

    nagios = kvmcheck("check", "--root", str(root), "-f", "nagios")
    assert nagios.returncode == UNKNOWN
    assert nagios.stdout.startswith("KVMCHECK UNKNOWN - unknown (no installed system under the root): ")

    # --exit-zero is for report-only runs (a Kickstart %post): the report still says unknown.
    quiet = kvmcheck("check", "--root", str(root), "--exit-zero", "-q")
    assert quiet.returncode == READY and quiet.stdout.startswith("Verdict: UNKNOWN")


def test_a_selection_of_no_check_is_a_usage_error():
    proc = kvmcheck("check", "--only", "cpu.*", "--skip", "cpu.*")
    assert (proc.returncode, proc.stdout) == (USAGE, "")
    assert "leaves no check to run" in proc.stderr and "Traceback" not in proc.stderr
    nagios = kvmcheck("check", "--only", "cpu.*", "--skip", "cpu.*", "-f", "nagios")
    assert nagios.returncode == UNKNOWN and nagios.stdout.startswith("KVMCHECK UNKNOWN - usage error")


def test_a_bad_profile_gives_nagios_one_status_line():
    proc = kvmcheck("check", "-f", "nagios", "--profile", "no-such-profile")
    assert proc.returncode == UNKNOWN
    assert proc.stdout.splitlines() == [proc.stdout.splitlines()[0]]
    assert proc.stdout.startswith("KVMCHECK UNKNOWN - configuration error: --profile: no profile 'no-such-profile'")


# --- essential checks without evidence ------------------------------------------------------------------------

def without_kvm_node(root: Path) -> Path:
    """The same captured host, but /dev was not captured: nothing says whether /dev/kvm is usable."""
    shutil.rmtree(root / "dev")
    return root


def test_an_essential_check_without_evidence_makes_the_verdict_unknown(host_root, tmp_path):
    full = host_root("amd-baremetal-svm")
    assert kvmcheck("check", "--root", str(full)).returncode == READY  # the whole capture proves it

    root = without_kvm_node(full)
    proc = kvmcheck("check", "--root", str(root), "-f", "json")
    data = report_of(proc)
    assert proc.returncode == UNKNOWN
    assert (data["verdict"], data["undecided"], data["fix_first"]) == ("unknown", ["kvm.device"], ["kvm.device"])
    assert statuses(data)["kvm.device"]["status"] == "skip"
    assert data["verdict_reason"].startswith("no evidence from kvm.device (skip: ")
    # On an offline root the guest cannot run: that is no gap in the evidence.
    assert statuses(data)["kvm.guest-run"]["status"] == "skip" and "kvm.guest-run" not in data["undecided"]

    text = kvmcheck("check", "--root", str(root), "--no-color").stdout
    tail = text[text.rindex("Verdict: "):]
    assert tail.startswith("Verdict: UNKNOWN") and "No evidence from:\n  - kvm.device: " in tail

    # A profile declares its own essential chain.
    conf = tmp_path / "essential.toml"
    conf.write_text('[verdict]\nessential = ["cpu.virt-flags", "kvm.modules"]\n')
    own = report_of(kvmcheck("check", "--root", str(root), "--config", str(conf), "-f", "json"))
    assert (own["verdict"], own["essential"], own["undecided"]) == ("ready", ["cpu.virt-flags", "kvm.modules"], [])


def test_verdict_essential_is_validated(host_root, tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text('[verdict]\nessential = ["kvm.devise"]\n')
    proc = kvmcheck("check", "--root", str(host_root("pvm-host")), "--config", str(conf))
    assert proc.returncode == USAGE and proc.stdout == ""
    assert "verdict.essential names 'kvm.devise', which is not a check id" in proc.stderr


# --- one cause, one failure -----------------------------------------------------------------------------------

def test_a_consequence_names_its_cause_and_the_fix_list_shows_each_fix_once(host_root):
    data = report_of(kvmcheck("check", "--root", str(host_root("intel-firmware-disabled")), "-f", "json"))
    by = statuses(data)
    assert [(i, by[i]["status"]) for i in ("firmware.vt-enabled", "cpu.virt-flags", "kvm.modules")] == [
        ("firmware.vt-enabled", "fail"), ("cpu.virt-flags", "fail"), ("kvm.modules", "fail")]
    assert "caused_by" not in by["firmware.vt-enabled"]
    assert by["cpu.virt-flags"]["caused_by"] == ["firmware.vt-enabled"]
    assert by["kvm.modules"]["caused_by"] == ["cpu.virt-flags", "firmware.vt-enabled"]
    assert by["kvm.modules"]["remediation"] == ("See cpu.virt-flags and firmware.vt-enabled, whose fixes come first: "
                                                "this finding follows from them.")
    assert data["fix_first"] == ["firmware.vt-enabled"]


def test_caused_by_keeps_only_causes_that_found_a_problem(host_root):
    """A bare-metal host with VT enabled: kvm.modules has nothing to blame on cpu.virt-flags."""
    root = host_root("amd-baremetal-svm")
    shutil.rmtree(root / "sys" / "module" / "kvm_amd")
    by = statuses(report_of(kvmcheck("check", "--root", str(root), "-f", "json")))
    assert (by["cpu.virt-flags"]["status"], by["kvm.modules"]["status"]) == ("pass", "fail")
    assert "caused_by" not in by["kvm.modules"]


# --- this machine ---------------------------------------------------------------------------------------------

def _live_kvm():
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this machine: the live chain cannot be shown")


def test_live_as_root_acceleration_follows_from_the_missing_vt_flags():
    _live_kvm()
    if os.geteuid() != 0:
        pytest.skip("needs root, to open /dev/kvm as the test guest does")
    data = report_of(kvmcheck("check", "-f", "json"))
    by = statuses(data)
    if by["cpu.virt-flags"]["status"] != "fail":
        pytest.skip(f"this machine's CPU shows VT-x/AMD-V ({by['cpu.virt-flags']['summary']}): no cause to follow")
    accel = by["kvm.acceleration"]
    if accel["status"] != "fail":
        pytest.skip(f"kvm.acceleration is {accel['status']} here: {accel['summary']}")
    assert accel["caused_by"] == ["cpu.virt-flags"]
    assert accel["remediation"] == "See cpu.virt-flags, whose fix comes first: this finding follows from it."
    assert "kvm.acceleration" not in data["fix_first"] and data["fix_first"][0] == "cpu.virt-flags"
    assert data["verdict"] == "not-ready"


@pytest.fixture(scope="session")
def nobody_python():
    """A Python that nobody can run, with kvmcheck installed from this checkout (the test runner's own
    interpreter may live under /root, which nobody cannot read)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1) to run kvmcheck as a second user")
    base = next((p for p in ("/usr/bin/python3", sys.executable) if os.path.exists(p)), None)
    where = Path(tempfile.mkdtemp(prefix="kvmcheck-nobody-", dir="/var/tmp"))
    try:
        where.chmod(0o755)
        venv = where / "venv"
        made = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot make a virtual environment with {base}: {made.stderr.strip()[-200:]}")
        src = where / "src"
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "tests"))
        pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)],
                             capture_output=True, text=True, timeout=600)
        if pip.returncode != 0:
            pytest.skip(f"cannot install kvmcheck for {base}: {pip.stderr.strip()[-300:]}")
        python = str(venv / "bin" / "python")
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c",
                                "import kvmcheck"], capture_output=True, text=True, cwd="/")
        if probe.returncode != 0:
            pytest.skip(f"{base} cannot run as nobody here: {probe.stderr.strip()[-200:]}")
        yield python
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_live_as_a_second_user_the_guest_checks_are_blocked_by_the_device(nobody_python):
    _live_kvm()
    if os.stat("/dev/kvm").st_mode & 0o006:
        pytest.skip("/dev/kvm is world read/write here: nobody can use it, nothing is blocked")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    cli = [nobody_python, "-c", "from kvmcheck.cli import main; main()"]
    proc = kvmcheck("check", "-f", "json", cli=cli, prefix=as_nobody)
    data = report_of(proc)
    by = statuses(data)
    assert (by["kvm.device"]["status"], by["kvm.device"]["summary"]) == ("fail", "the invoking user cannot open /dev/kvm")
    for dependent in ("kvm.guest-run", "kvm.acceleration"):
        assert (by[dependent]["status"], by[dependent]["blocked_by"]) == ("skip", ["kvm.device"]), by[dependent]
        assert by[dependent]["summary"] == "blocked by kvm.device"
    assert "kvm.device" in data["fix_first"] and "kvm.guest-run" not in data["undecided"]
    assert proc.returncode == NOT_READY

    text = kvmcheck("check", "--no-color", cli=cli, prefix=as_nobody).stdout
    todo = text[text.index("What to do"):text.index("\nVerdict: ")]
    assert todo.count(by["kvm.device"]["remediation"][:60]) == 1  # the device's fix, once
    assert "FAIL kvm.guest-run" not in todo and "FAIL kvm.acceleration" not in todo
    assert "kvm.guest-run: blocked by kvm.device" in text[text.index("Not checked:"):]


# --- a last screen to act on ------------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", ["intel-firmware-disabled", "pvm-host", "live"])
def test_the_last_screen_of_a_terminal_holds_the_verdict_and_what_to_fix_first(host_root, scenario):
    args = [] if scenario == "live" else ["--root", str(host_root(scenario))]
    text = kvmcheck("check", "--no-color", *args).stdout
    last_screen = text.splitlines()[-24:]  # an 80x24 terminal
    verdict_at = next(i for i, line in enumerate(last_screen) if line.startswith("Verdict: "))
    block = last_screen[verdict_at:]
    assert all(len(line) <= 80 for line in block), block
    data = report_of(kvmcheck("check", "-f", "json", *args))
    if data["verdict"] == "not-ready":
        assert "Fix first:" in block
        listed = [line.split(":", 1)[0].strip(" -") for line in block if line.startswith("  - ")]
        assert listed == data["fix_first"]
    quiet = kvmcheck("check", "--no-color", "-q", *args).stdout
    assert quiet.splitlines() == block  # -q prints exactly the verdict block


def test_quiet_is_for_the_text_format():
    proc = kvmcheck("check", "-q", "-f", "json")
    assert proc.returncode == USAGE and "Traceback" not in proc.stderr and proc.stdout == ""
