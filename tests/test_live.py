# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck on the machine running the tests, judged against what the test reads for itself."""
from __future__ import annotations

import os
import stat

import pytest

import kvmcheck

CORE = ["cpu.virt-flags", "cpu.64bit", "firmware.vt-enabled", "kernel.version", "kvm.modules", "kvm.device"]


def _flags():
    with open("/proc/cpuinfo") as fh:
        return {w for line in fh if line.startswith(("flags", "Features", "features")) for w in line.split(":", 1)[1].split()}


@pytest.fixture(scope="module")
def live():
    report = kvmcheck.run("/", only=CORE)
    return report, {r.id: r for r in report.checks}


def test_live_run_has_no_errors_and_reads_the_running_kernel(live):
    report, results = live
    assert [r.id for r in report.checks if r.status.value == "error"] == []
    assert report.host["kernel"] == os.uname().release
    assert report.host["arch"] == os.uname().machine
    assert results["kernel.version"].evidence["release"] == os.uname().release


@pytest.mark.skipif(not os.path.isdir("/sys/module/kvm_pvm") or bool(_flags() & {"vmx", "svm"}),
                    reason="needs a host whose /dev/kvm comes from kvm_pvm without vmx/svm (the development VM)")
def test_pvm_development_vm_is_explained(live):
    report, results = live
    virt = results["cpu.virt-flags"]
    assert virt.status.value == "fail"
    assert "PVM" in virt.summary and "Only PVM-enabled guest kernels run well" in virt.detail
    assert results["kvm.modules"].status.value == "pass" and "kvm_pvm" in results["kvm.modules"].summary
    assert report.verdict == "not-ready"
    if "hypervisor" in _flags():
        assert report.host["hypervisor"] is not None
        assert results["firmware.vt-enabled"].status.value == "skip"


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="/dev/kvm is absent on this machine")
def test_dev_kvm_matches_what_stat_says(live):
    _, results = live
    st = os.stat("/dev/kvm")
    dev = results["kvm.device"]
    assert dev.evidence["mode"] == f"{stat.S_IMODE(st.st_mode):04o}"
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    assert dev.evidence["accessible"] is usable
    if not usable:
        assert dev.status.value == "fail"
    elif os.geteuid() == 0 and not stat.S_IMODE(st.st_mode) & 0o066:
        assert dev.status.value == "warn"  # root-only node: QEMU's own user is locked out
