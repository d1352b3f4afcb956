# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck against lscpu's own verdicts on 22 real machines (../shared/corpus/lscpu)."""
from __future__ import annotations

from pathlib import Path

import pytest

import kvmcheck
from conftest import CORPUS, corpus_dumps, needs_corpus
from kvmcheck.facts.context import arch_family

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

# Where lscpu names no hypervisor: bare metal that the files show (x86 flags without 'hypervisor'), a pSeries
# LPAR whose IBM model names PowerVM (lscpu looks only at the device tree), and else "unknown": lscpu also
# misses the LoongArch KVM guest (virtio PCI only) and the QEMU PowerMac, and nothing in those files tells.
NO_LSCPU_VENDOR = {"vmware_fpe": None, "x86_64-64cpu": None, "x86_64-64cpu-linux6.2": None,
                   "x86_64-dell_e4310": None, "x86_64-epyc_7451": None, "ppc64-POWER7": "PowerVM"}


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
        assert hv == NO_LSCPU_VENDOR.get(row["dump"], "unknown"), (hv, report.host["hypervisor_source"])
    assert report.host["arch"] == row["arch"]


def test_every_core_check_completes_on_every_dump():
    roots = [CORPUS / row["dump"] for row in DUMPS] + [MACHINES / row["machine"] for row in MACHINE_ROWS]
    for root in roots:
        report = kvmcheck.run(str(root))
        bad = [(r.id, r.summary) for r in report.checks if r.status.value == "error"]
        assert not bad, (root.name, bad)


def test_zvm_and_nested_kvm_names():
    names = {d: kvmcheck.run(str(CORPUS / d), only=["cpu.virt-flags"]).host["hypervisor"]
             for d in ("s390-zvm", "s390-nested-virt", "s390-lpar", "vbox-win", "ppc64-POWER7-64cpu")}
    assert names == {"s390-zvm": "IBM z/VM 6.1.0", "s390-nested-virt": "KVM", "s390-lpar": "IBM PR/SM",
                     "vbox-win": "Oracle", "ppc64-POWER7-64cpu": "PowerVM"}


# --- tests/data/machines: 38 more real captures, verdicts from lscpu and vendor documents ----------------
MACHINES = Path(__file__).resolve().parent / "data" / "machines"
MACHINE_ROWS = [dict(zip(("machine", "arch", "virt_flags", "hypervisor", "cpu_64bit", "evidence"), line.split("\t")))
                for line in (MACHINES / "expected.tsv").read_text().splitlines()[1:]]


@pytest.mark.parametrize("row", MACHINE_ROWS, ids=[r["machine"] for r in MACHINE_ROWS])
def test_captured_machines_agree_with_independent_verdicts(row):
    report = kvmcheck.run(str(MACHINES / row["machine"]), only=["cpu.virt-flags", "cpu.64bit"])
    status = {r.id: r.status.value for r in report.checks}
    assert status["cpu.virt-flags"] == row["virt_flags"], (report.checks, row["evidence"])
    if row["cpu_64bit"] != "-":
        assert status["cpu.64bit"] == row["cpu_64bit"], row["evidence"]
    assert report.host["hypervisor"] == (None if row["hypervisor"] == "-" else row["hypervisor"]), (
        report.host["hypervisor_source"], row["evidence"])
    assert arch_family(report.host["arch"]) == arch_family(row["arch"])
    if arch_family(row["arch"]) == "x86":
        assert report.host["arch"] == row["arch"]  # the kernel's, not the CPU's


def test_every_machine_directory_has_an_expected_verdict():
    assert sorted(r["machine"] for r in MACHINE_ROWS) == sorted(p.name for p in MACHINES.iterdir() if p.is_dir())


def test_xen_pv_guest_with_leaked_vmx_fails_and_names_xen():
    # A 32-bit PV domU whose flags carry the host's vmx: lscpu prints "Virtualization: VT-x", yet the guest
    # kernel is deprivileged under Xen and cannot use it.
    report = kvmcheck.run(str(MACHINES / "ul-i386-xenpara"), only=["cpu.virt-flags", "cpu.64bit"])
    virt, bits = report.checks
    assert [(virt.id, virt.status.value), (bits.id, bits.status.value)] == [
        ("cpu.virt-flags", "fail"), ("cpu.64bit", "fail")]
    assert "Xen PV guest" in virt.summary and virt.evidence["xen"] == "pv"
    assert report.host["hypervisor"] == "Xen" and "PV domU" in report.host["hypervisor_source"]
    assert bits.summary == "32-bit kernel on a 64-bit CPU"
    assert (bits.evidence["cpu_arch"], bits.evidence["kernel_arch"]) == ("x86_64", "i686")


def test_xen_hvm_guest_is_judged_by_its_flags():
    # An HVM domU (the Xen platform PCI device) is a normal guest: no vmx, so no nested virtualization.
    report = kvmcheck.run(str(MACHINES / "ul-x86_64-xenfull"), only=["cpu.virt-flags"])
    (virt,) = report.checks
    assert (virt.status.value, report.host["hypervisor"]) == ("fail", "Xen")
    assert "nestedhvm=1" in virt.remediation


def test_s390_guest_listing_hwcaps_newer_than_sie_fails():
    report = kvmcheck.run(str(MACHINES / "ins-s390x-z15-8561"), only=["cpu.virt-flags"])
    (virt,) = report.checks
    assert (virt.id, virt.status.value) == ("cpu.virt-flags", "fail")
    assert report.host["hypervisor"] == "unknown"
    assert "version FF" in report.host["hypervisor_source"]
    assert "kvm nested=1" in virt.remediation and "z/VM" in virt.remediation


def test_s390_kvm_guest_without_sie_names_the_kvm_fix():
    report = kvmcheck.run(str(CORPUS / "s390-nested-virt"), only=["cpu.virt-flags"])
    (virt,) = report.checks
    assert (virt.status.value, report.host["hypervisor"]) == ("fail", "KVM")
    assert virt.remediation.startswith("On the KVM host, enable nested virtualization")


@pytest.mark.parametrize("machine, vendor", [("ins-power7-8231-E2D", "PowerVM"), ("pyc-rhel_7_3_ppc64le", "KVM")])
def test_pseries_check_and_host_facts_agree(machine, vendor):
    report = kvmcheck.run(str(MACHINES / machine), only=["cpu.virt-flags"])
    (virt,) = report.checks
    assert (virt.status.value, report.host["hypervisor"], virt.evidence["hypervisor"]) == ("fail", vendor, vendor)
    assert {"PowerVM": "a PowerVM logical partition", "KVM": "a KVM guest"}[vendor] in virt.summary
