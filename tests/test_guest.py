"""Tests for checks/guest.py (kvm.guest-run, kvm.acceleration): real runs on
/dev/kvm when accessible, offline roots, errno advice, and real error paths on
a FIFO, a regular file, an exhausted descriptor table and an unprivileged user.
No mocks of fcntl or open."""
from __future__ import annotations

import ast
import errno
import json
import os
import subprocess
import sys

import pytest

import kvmcheck
from kvmcheck.core import kvmapi
from kvmcheck.checks import guest as g
from kvmcheck.facts import guest as fg
from kvmcheck.facts.context import Context
from kvmcheck.core.host import Host, NotRegularFileError
from kvmcheck.core.model import Status
from kvmcheck.core.runner import run_check
from conftest import KVM_PATH, FdStarved, kvm_mappings, needs_kvm, open_fds

needs_x86 = pytest.mark.skipif(not kvmapi.X86, reason="guest programs are x86 real-mode code")
IDS = ["kvm.guest-run", "kvm.acceleration"]


def live_ctx() -> Context:
    return Context(Host("/"))


# --- the real machine ------------------------------------------------------------

@needs_kvm
def test_real_run_on_this_machine():
    before = open_fds()
    report = kvmcheck.run(only=IDS)
    got = {r.id: r for r in report.checks}
    assert sorted(got) == sorted(IDS)
    run = got["kvm.guest-run"]
    assert run.status == Status.PASS, (run.summary, run.detail)
    ev = run.evidence
    assert ev["api_version"] == 12
    assert {"user_memory", "irqchip", "nr_vcpus", "max_vcpus", "vcpu_mmap_size"} <= set(ev["capabilities"])
    if kvmapi.X86:
        assert ev["executed"] and ev["value"] == ev["expected"] == kvmapi.guest_expected(*ev["inputs"])
        assert ev["port"] == kvmapi.RESULT_PORT and ev["exits"] == ["KVM_EXIT_IO", "KVM_EXIT_HLT"]
    else:
        assert not ev["executed"] and "not probed" in run.summary

    acc = got["kvm.acceleration"]
    ev = acc.evidence
    if not kvmapi.X86:
        assert acc.status == Status.SKIP
    elif os.path.isdir("/sys/module/kvm_pvm"):
        assert (acc.id, acc.status) == ("kvm.acceleration", Status.FAIL)
        assert "PVM" in acc.detail and "kvm_pvm" in acc.detail
        assert "PVM sandboxes" in acc.remediation
        assert ev["accelerated"] is False and ev["provider"] == "kvm_pvm"
    else:
        assert acc.status == (Status.PASS if ev["accelerated"] else Status.FAIL)
    if kvmapi.X86:
        assert ev["completed"] and ev["iterations"] == ev["requested"] > 0
        assert ev["instructions_per_second"] == pytest.approx(ev["iterations"] / ev["elapsed_s"], rel=1e-3)
        assert ev["threshold"] == kvmapi.ACCELERATED_MIN_PER_SECOND
        assert ev["accelerated"] == (ev["instructions_per_second"] >= ev["threshold"])
        assert set(ev["nested"]) <= {"kvm_intel", "kvm_amd"}
        assert acc.duration_ms < 1500
    assert open_fds() == before and kvm_mappings() == []


def test_offline_root_skips_both(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vmx lm\n")
    report = kvmcheck.run(root=str(tmp_path), only=IDS)
    assert sorted((r.id, r.status, r.summary) for r in report.checks) == sorted(
        (i, Status.SKIP, "offline root") for i in IDS)


def test_checks_are_registered_with_docs_and_reads():
    assert g.guest_run.id == "kvm.guest-run" and g.acceleration.id == "kvm.acceleration"
    for c in (g.guest_run, g.acceleration):
        assert KVM_PATH in c.reads
        assert all(word in c.doc for word in ("What:", "Why:", "Fix:"))
    assert "/sys/module/kvm_intel/parameters/nested" in g.acceleration.reads
    assert "/sys/module/kvm_amd/parameters/nested" in g.acceleration.reads


def test_no_direct_device_access_in_module():
    tree = ast.parse(open(g.__file__).read())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"os", "glob", "subprocess", "fcntl"}
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "open" not in calls


# --- errno advice (pure) -------------------------------------------------------------

@pytest.mark.parametrize("code,words", [
    (errno.EACCES, ["usermod -aG kvm", "udev", "kvm.device"]),
    (errno.EPERM, ["usermod -aG kvm", "udev"]),
    (errno.ENOENT, ["kvm.modules", "firmware.vt-enabled"]),
    (errno.ENXIO, ["Reload the KVM modules"]),
    (errno.ENODEV, ["Reload the KVM modules"]),
    (errno.EMFILE, ["ulimit -n", "LimitNOFILE"]),
    (errno.ENFILE, ["fs.file-max"]),
    (errno.ENOTTY, ["impostor", "kvm.modules"]),
    (errno.EINVAL, ["impostor"]),
    (errno.ENOMEM, ["dmesg"]),
])
@pytest.mark.parametrize("filename", [KVM_PATH, None], ids=["open", "ioctl"])
def test_explain_open_error(code, words, filename):
    name = errno.errorcode[code]
    err = OSError(code, os.strerror(code), filename) if filename else OSError(code, os.strerror(code))
    out = g.explain_open_error(fg.kvm_error(err))
    assert out.status == Status.FAIL
    assert name in out.summary
    assert out.evidence["errno"] == name
    assert out.evidence["stage"] == ("open" if filename else "ioctl")
    assert out.detail and out.remediation
    for w in words:
        assert w in out.remediation


def test_explain_not_a_character_device():
    out = g.explain_open_error(fg.kvm_error(NotRegularFileError(errno.ENODEV, "not a character device", KVM_PATH)))
    assert out.status == Status.FAIL and "not a character device" in out.summary and "ENODEV" in out.summary
    assert "rm /dev/kvm" in out.remediation


# --- real error paths on real descriptors ---------------------------------------------

@pytest.fixture
def fake_fds(tmp_path):
    regular = tmp_path / "not-kvm"
    regular.write_bytes(b"\0" * 64)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fds = [os.open(regular, os.O_RDWR), os.open(fifo, os.O_RDWR | os.O_NONBLOCK)]
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.parametrize("probe,judge", [(fg.guest_probe, g.judge_guest),
                                         (fg.loop_probe, lambda p: g.judge_loop(p, HW))], ids=["guest", "loop"])
def test_probe_on_non_kvm_fd_names_enotty(fake_fds, probe, judge):
    before = open_fds()
    for fd in fake_fds:
        if probe is fg.loop_probe and not kvmapi.X86:
            continue  # measure_loop attempts nothing off x86
        out = judge(probe(fd))
        assert out.status == Status.FAIL
        assert out.evidence["errno"] in ("ENOTTY", "EINVAL") and out.evidence["errno"] in out.summary
        assert out.evidence["stage"] == "ioctl"
        assert os.fstat(fd)  # the probe leaves the caller's fd open
    assert open_fds() == before


@needs_kvm
@pytest.mark.parametrize("free", [0, 1, 2], ids=["open", "create_vm", "create_vcpu"])
@pytest.mark.parametrize("chk", [g.guest_run, g.acceleration], ids=lambda c: c.id)
def test_emfile_fails_cleanly_without_leak(free, chk):
    if chk is g.acceleration and not kvmapi.X86:
        pytest.skip("measure_loop creates nothing off x86")
    ctx = live_ctx()
    ctx.family(), ctx.modules(), ctx.cpuinfo(), ctx.virt()  # facts first: they need fds too
    before = open_fds()
    with FdStarved(free):
        result = run_check(chk, ctx, timeout=10)
    assert (result.id, result.status) == (chk.id, Status.FAIL), result.summary
    assert "EMFILE" in result.summary and result.evidence["errno"] == "EMFILE"
    assert result.evidence["stage"] == ("open" if free == 0 else "ioctl")
    assert "ulimit -n" in result.remediation
    assert open_fds() == before and kvm_mappings() == []
    # still usable afterwards (a fresh run: a run's facts, the failed probe among them, are kept for that run)
    assert run_check(g.guest_run, live_ctx(), timeout=10).status == Status.PASS


@pytest.mark.skipif(not os.path.exists(KVM_PATH), reason="/dev/kvm absent")
def test_unprivileged_user_gets_eacces_advice():
    from conftest import as_nobody

    st = os.stat(KVM_PATH)
    if st.st_mode & 0o006:
        pytest.skip("/dev/kvm is world read/write here; nobody can open it")
    argv = as_nobody([sys.executable, "-c", "from kvmcheck.cli import main; main()",
                      "check", "--only", "kvm.guest-run", "--format", "json"])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    [res] = report["checks"]
    assert (res["id"], res["status"]) == ("kvm.guest-run", "fail")
    assert "EACCES" in res["summary"] and res["evidence"]["errno"] == "EACCES"
    assert "usermod -aG kvm" in res["remediation"]


# --- acceleration verdicts on constructed LoopRun values ----------------------------------

class _Virt:
    def __init__(self, in_guest: bool, vendor):
        self.in_guest, self.vendor = in_guest, vendor


def _loop(iterations, elapsed, completed=True, reason="", requested=None):
    rate = iterations / elapsed if elapsed else 0.0
    return kvmapi.LoopRun(iterations=iterations, elapsed_s=elapsed, per_second=rate, completed=completed,
                          exits=2, reason=reason, accelerated=rate >= kvmapi.ACCELERATED_MIN_PER_SECOND,
                          requested=requested or iterations)


PVM = {"provider": "kvm_pvm", "modules": ["kvm", "kvm_pvm"], "nested": {}, "host_virt_flags": []}
HW = {"provider": "kvm_intel", "modules": ["kvm", "kvm_intel"], "nested": {"kvm_intel": "Y"},
      "host_virt_flags": ["vmx"]}


def test_assess_accelerated_passes_with_rate_and_nested():
    out = g.assess_loop(_loop(300_000, 0.0006), HW, lambda: pytest.fail("virt asked on the fast path"))
    assert out.status == Status.PASS and "5e+08" in out.summary
    assert "kvm_intel nested=Y" in out.detail
    assert out.evidence["instructions_per_second"] == 500_000_000 and out.evidence["accelerated"] is True


def test_assess_pvm_names_pvm_and_missing_nesting():
    out = g.assess_loop(_loop(120_000, 0.1), PVM, lambda: _Virt(True, "KVM"))
    assert out.status == Status.FAIL and "1.2e+06" in out.summary
    assert "PVM" in out.detail and "shadow paging" in out.detail and "without nested virtualization" in out.detail
    assert "bare metal" in out.remediation and "PVM sandboxes" in out.remediation
    assert out.evidence["in_guest"] is True and out.evidence["hypervisor"] == "KVM"


def test_assess_bare_metal_slow_without_pvm():
    out = g.assess_loop(_loop(120_000, 0.1), HW, lambda: _Virt(False, None))
    assert out.status == Status.FAIL and "PVM" not in out.detail and "PVM sandboxes" not in out.remediation


def test_assess_partial_slow_rate_is_conclusive():
    loop = _loop(50_000, 1.0, completed=False, reason="loop did not finish within 1.00 s budget",
                 requested=300_000)
    out = g.assess_loop(loop, PVM, lambda: _Virt(True, "KVM"))
    assert out.status == Status.FAIL and "partial" in out.detail and out.evidence["completed"] is False


def test_assess_partial_fast_or_empty_is_inconclusive():
    for loop in (_loop(300_000_000, 1.0, completed=False, reason="loop did not finish within 1.00 s budget",
                       requested=0xFFFFFFFF),
                 _loop(0, 0.0, completed=False, reason="loop did not finish within 1.00 s budget", requested=10)):
        out = g.assess_loop(loop, HW)
        assert out.status == Status.WARN and "inconclusive" in out.summary


def test_assess_guest_failure_and_non_x86():
    bad = _loop(0, 0.0, completed=False, reason="KVM_EXIT_SHUTDOWN: the guest triple-faulted", requested=10)
    out = g.assess_loop(bad, HW)
    assert out.status == Status.FAIL and "triple-faulted" in out.summary
    other = _loop(0, 0.0, completed=False, reason="loop timing is only probed on x86 (aarch64)", requested=10)
    assert g.assess_loop(other, HW).status == Status.SKIP
