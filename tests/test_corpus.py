# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck against lscpu's own verdicts on 22 real machines (../shared/corpus/lscpu)."""
from __future__ import annotations

import pytest

import kvmcheck
from conftest import CORPUS, corpus_dumps, needs_corpus

pytestmark = needs_corpus
DUMPS = corpus_dumps()
# lscpu's names -> what kvmcheck reports in host.hypervisor
LSCPU_VENDOR = {"IBM": "IBM ", "pHyp": "PowerVM", "KVM": "KVM", "Oracle": "Oracle"}
# Where kvmcheck's cpu.virt-flags must differ from lscpu's silence, and why.
NON_X86_VERDICT = {
    "s390-lpar-drawer": "pass",
    # Kernels older than 4.5 never list 'sie'; these dumps have sched_mc_power_savings (gone in 3.5).
    "s390-lpar": "skip", "s390-zvm": "skip", "s390-kvm": "skip",
    "s390-nested-virt": "fail",  # a >= 4.15 kernel (vulnerabilities/) in a KVM guest without sie: no nested KVM
    "loongarch-loongson_3a5000_hv": "pass",  # has lvz, which lscpu does not look for
    "loongarch-kvm_on_loongson_3c6000": "fail",  # a guest CPU without lvz
    "rv64-linux": "fail", "rv64-milkvpioneer": "fail", "rv64-visionfive2": "fail",  # no H extension
    "ppc64-POWER7-64cpu": "fail",  # a PowerVM LPAR: KVM-HV needs bare-metal PowerNV
    "ppc64-POWER7": "fail",  # pSeries platform: an LPAR too
    "ppc-qemu": "fail", "armv7": "fail", "sparc64": "fail",  # not KVM host architectures
    "arm-A510-A710-A715-X3": "skip",  # arm64: cpuinfo cannot tell, and the dump has no /dev/kvm
}


@pytest.mark.parametrize("row", DUMPS, ids=[r["dump"] for r in DUMPS])
def test_virt_flags_and_hypervisor_agree_with_lscpu(row):
    report = kvmcheck.run(str(CORPUS / row["dump"]), only=["cpu.virt-flags"])
    (result,) = report.checks
    if row["virtualization"]:
        assert result.status.value == "pass", result.summary
        expected_ext = {"VT-x": "vmx", "AMD-V": "svm"}[row["virtualization"]]
        assert result.evidence["extension"] == expected_ext
    elif row["arch"] == "x86_64":
        assert result.status.value == "fail", result.summary
    else:
        assert result.status.value == NON_X86_VERDICT[row["dump"]], result.summary
    hv = report.host["hypervisor"]
    if row["hypervisor_vendor"]:
        assert hv is not None and hv.startswith(LSCPU_VENDOR[row["hypervisor_vendor"]]), hv
    else:
        # lscpu misses the LoongArch KVM guest (virtio PCI only) and the QEMU PowerMac; kvmcheck does too,
        # since neither dump carries any hypervisor evidence kvmcheck reads.
        assert hv is None, hv
    assert report.host["arch"] == row["arch"]


def test_every_core_check_completes_on_every_dump():
    for row in DUMPS:
        report = kvmcheck.run(str(CORPUS / row["dump"]))
        bad = [(r.id, r.summary) for r in report.checks if r.status.value == "error"]
        assert not bad, (row["dump"], bad)


def test_zvm_and_nested_kvm_names():
    names = {d: kvmcheck.run(str(CORPUS / d), only=["cpu.virt-flags"]).host["hypervisor"]
             for d in ("s390-zvm", "s390-nested-virt", "s390-lpar", "vbox-win", "ppc64-POWER7-64cpu")}
    assert names == {"s390-zvm": "IBM z/VM 6.1.0", "s390-nested-virt": "KVM", "s390-lpar": "IBM PR/SM",
                     "vbox-win": "Oracle", "ppc64-POWER7-64cpu": "PowerVM"}
