# SPDX-License-Identifier: GPL-2.0-or-later
"""The command line as operators and scripts use it: exit codes, formats, --output, no writes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from kvmcheck import __version__

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


def kvmcheck(*args, env=None):
    full_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=full_env, timeout=120)


def test_ready_host_exits_0_and_not_ready_exits_1(host_root):
    ok = kvmcheck("check", "--root", str(host_root("amd-baremetal-svm")))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Verdict: READY" in ok.stdout
    bad = kvmcheck("check", "--root", str(host_root("intel-firmware-disabled")))
    assert bad.returncode == 1
    assert "Verdict: NOT READY" in bad.stdout


def test_text_report_puts_root_causes_first_and_each_fix_once(host_root):
    out = kvmcheck("check", "--root", str(host_root("intel-firmware-disabled")), "--only", "cpu.*",
                   "--only", "firmware.*", "--only", "kvm.modules").stdout
    table, tail = out.split("What to do, root causes first, most severe first:", 1)
    assert table.index("PASS   cpu.64bit") < table.index("FAIL   firmware.vt-enabled")  # the table keeps check order
    # Firmware locked VT off: the missing vmx flag and the missing kvm_intel follow from it.
    assert tail.index("FAIL firmware.vt-enabled") < tail.index("FAIL cpu.virt-flags") < tail.index("FAIL kvm.modules")
    assert tail.count("Fix: Reboot into the BIOS/UEFI setup") == 1
    assert "Fix: See firmware.vt-enabled, whose fix comes first" in tail
    verdict = tail[tail.index("Verdict: NOT READY"):]
    assert "Fix first:\n  - firmware.vt-enabled: Reboot into the BIOS/UEFI setup" in verdict
    assert "cpu.virt-flags" not in verdict.split("Fix first:", 1)[1]
    assert "\x1b[" not in out  # not a terminal: no colour codes


def test_usage_errors_exit_2_and_never_report_an_empty_host(tmp_path):
    assert kvmcheck("check", "--root", str(tmp_path / "typo")).returncode == 2
    typo = kvmcheck("check", "--root", str(tmp_path), "--only", "cpu.virt-flag")
    assert (typo.returncode, typo.stdout) == (2, "")
    assert "no check id matches 'cpu.virt-flag'" in typo.stderr
    assert kvmcheck("check", "--format", "yaml").returncode == 2
    assert kvmcheck("check", "--min-kernel", "banana").returncode == 2
    assert kvmcheck("explain", "no.such-check").returncode == 2
    assert "Traceback" not in typo.stderr


def test_json_report_is_the_documented_schema(host_root):
    root = host_root("pvm-host")
    proc = kvmcheck("check", "--root", str(root), "--format", "json")
    data = json.loads(proc.stdout)
    from conftest import validate_report

    validate_report(data)
    assert proc.returncode == 1
    assert data["verdict"] == "not-ready" and data["schema_version"] == 2
    assert data["host"]["hypervisor"] == "KVM" and data["host"]["arch"] == "x86_64"
    statuses = {c["id"]: c["status"] for c in data["checks"]}
    assert statuses["cpu.virt-flags"] == "fail" and statuses["kvm.modules"] == "pass"


def test_output_file_receives_the_report_and_stdout_stays_empty(host_root, tmp_path):
    target = tmp_path / "report.json"
    proc = kvmcheck("check", "--root", str(host_root("arm64-kvm")), "-f", "json", "-o", str(target))
    assert (proc.returncode, proc.stdout) == (0, "")
    assert json.loads(target.read_text())["verdict"] == "ready"


def test_no_color_is_honoured_even_on_a_terminal(host_root):
    # script(1) gives the CLI a real pty; NO_COLOR must still win.
    if not os.path.exists("/usr/bin/script"):
        pytest.skip("script(1) (util-linux) is needed to give the CLI a terminal")
    root = host_root("amd-baremetal-svm")
    cmd = " ".join(CLI[:2]) + f" '{CLI[2]}' check --root {root}"
    colored = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60)
    assert "\x1b[32m" in colored.stdout
    plain = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, NO_COLOR="1"))
    assert "\x1b[" not in plain.stdout and "PASS" in plain.stdout


def test_list_and_explain():
    listing = kvmcheck("list", "--format", "json")
    ids = [c["id"] for c in json.loads(listing.stdout)]
    assert {"cpu.virt-flags", "cpu.64bit", "firmware.vt-enabled", "kvm.modules", "kvm.device",
            "kernel.version"} <= set(ids)
    explained = kvmcheck("explain", "firmware.vt-enabled")
    assert explained.returncode == 0
    assert "IA32_FEATURE_CONTROL" in explained.stdout and "Fix:" in explained.stdout




@pytest.mark.parametrize("where", ["live", "captured"])
def test_nothing_is_written_except_the_output_file(where, host_root, tmp_path):
    out = tmp_path / "out" / "report.txt"
    out.parent.mkdir()
    args = ["check", "--output", str(out)] + ([] if where == "live" else ["--root", str(host_root("pvm-host"))])
    from conftest import run_audited

    proc, seen = run_audited(args)
    # /dev/kvm is opened read-write to issue ioctls; opening a device node writes nothing to the host.
    # The report goes to a new temporary beside it (opened by name relative to the directory's descriptor, then
    # as a file object on that descriptor: the digit entry), fchmod'ed on the descriptor, renamed over it.
    writes = [w for w in seen["writes"] if w != "/dev/kvm" and not os.path.basename(w).isdigit()]
    assert seen["exit"] in (0, 1)
    assert len(writes) == 1 and re.fullmatch(r"\.report\.txt\.[0-9a-f]{12}\.kvmcheck-tmp", os.path.basename(writes[0]))
    assert [[os.path.basename(a), os.path.basename(b)] for a, b in seen["renames"]] == [[os.path.basename(writes[0]), "report.txt"]]
    assert [m[0] for m in seen["mutations"]] == ["os.chmod"] and seen["mutations"][0][1].isdigit()
    assert all(cmd[:2] != ["/bin/sh", "-c"] for cmd in seen["commands"])  # never through a shell
    assert out.read_text().startswith("kvmcheck ")


def test_unprivileged_run_answers_every_check_and_names_permissions():
    from conftest import as_nobody

    proc = subprocess.run(as_nobody(CLI + ["check", "--format", "json"]), capture_output=True, text=True, timeout=120, cwd="/",
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    assert [c["id"] for c in report["checks"] if c["status"] == "error"] == []
    dev = next(c for c in report["checks"] if c["id"] == "kvm.device")
    if os.path.exists("/dev/kvm") and not os.stat("/dev/kvm").st_mode & 0o006:
        assert dev["status"] == "fail" and dev["summary"] == "the invoking user cannot open /dev/kvm"
        assert "usermod -aG" in dev["remediation"]


@pytest.mark.parametrize("scenario", ["amd-baremetal-svm", "intel-firmware-disabled", "pvm-host"])
def test_text_layout_has_single_blank_lines_between_sections(host_root, scenario):
    out = kvmcheck("check", "--root", str(host_root(scenario))).stdout
    assert "\n\n\n" not in out
    verdict_block = out[out.rindex("\n\nVerdict: ") + 2:]  # the report ends with the verdict block
    assert verdict_block.count("\n\n") == 0 and out.endswith("\n") and not out.endswith("\n\n")
    assert out.splitlines()[1].startswith("CPU: ")  # the header keeps one fact per line


def test_bare_kvmcheck_runs_check_with_its_defaults():
    """`kvmcheck` alone is `kvmcheck check`: through main() (the console script) and through the typer app as
    typer's CliRunner invokes it. It used to call check() without its context: TypeError."""
    proc = kvmcheck()
    assert proc.returncode in (0, 1, 3), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert re.search(r"^Verdict: ", proc.stdout, re.M), proc.stdout
    from typer.testing import CliRunner

    from kvmcheck.cli import app

    result = CliRunner().invoke(app, [])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 3) and re.search(r"^Verdict: ", result.output, re.M), result.output


def test_python_m_kvmcheck_is_the_program():
    helped = subprocess.run([sys.executable, "-m", "kvmcheck", "--help"], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: kvmcheck "), helped.stdout + helped.stderr
    version = subprocess.run([sys.executable, "-m", "kvmcheck", "--version"], capture_output=True, text=True,
                             timeout=120)
    assert (version.returncode, version.stdout) == (0, f"kvmcheck {__version__}\n")
    # The console script answers --version before importing typer, with the very same line.
    fast = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['kvmcheck', '--version']; "
                           "from kvmcheck.core.signals import main; main(); sys.stderr.write(str('typer' in sys.modules))"],
                          capture_output=True, text=True, timeout=120)
    assert (fast.returncode, fast.stdout, fast.stderr) == (0, version.stdout, "False")


def test_check_options_work_without_the_command(host_root):
    """The bare `kvmcheck` runs check, so `kvmcheck --root R -f json` is `kvmcheck check --root R -f json`;
    --version and --help stay the program's own."""
    root = str(host_root("intel-baremetal-vmx"))
    short = kvmcheck("--root", root, "--only", "cpu.*", "-f", "json")
    full = kvmcheck("check", "--root", root, "--only", "cpu.*", "-f", "json")
    assert short.returncode == full.returncode
    pairs = [[(c["id"], c["status"]) for c in json.loads(p.stdout)["checks"]] for p in (short, full)]
    assert pairs[0] == pairs[1] and pairs[0][0][0] == "cpu.virt-flags"
    assert kvmcheck("--version").stdout.startswith("kvmcheck ")
    assert "Commands" in kvmcheck("--help").stdout
    bad = kvmcheck("--no-such-option")
    assert bad.returncode == 2 and "No such option" in bad.stderr
