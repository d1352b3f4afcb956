# SPDX-License-Identifier: GPL-2.0-or-later
"""The evidence behind issue 17's classes, parser by parser: Xen roles, s390 versions, pSeries, 32-bit x86 kernels."""
from __future__ import annotations

from pathlib import Path

import pytest

from kvmcheck.facts.context import arch_from_cpuinfo, cpu_arch_from_cpuinfo
from kvmcheck.parsers.cpuinfo import parse_cpuinfo
from kvmcheck.parsers.hypervisor import UNKNOWN, VirtFacts, VirtInputs, detect_hypervisor

MACHINES = Path(__file__).resolve().parent / "data" / "machines"


def cpuinfo(machine: str):
    return parse_cpuinfo((MACHINES / machine / "proc" / "cpuinfo").read_text())


def test_a_32bit_kernel_is_told_from_its_64bit_cpu():
    cpu = cpuinfo("ul-i386-intels5000phb")  # fdiv_bug lines, lm in the flags
    assert cpu.x86_32bit_kernel
    assert (arch_from_cpuinfo(cpu), cpu_arch_from_cpuinfo(cpu, "i686")) == ("i686", "x86_64")
    cpu = cpuinfo("ul-x86_64-dellr710")
    assert not cpu.x86_32bit_kernel
    assert (arch_from_cpuinfo(cpu), cpu_arch_from_cpuinfo(cpu, "x86_64")) == ("x86_64", "x86_64")


def test_s390_processor_versions():
    assert cpuinfo("ins-s390x-z15-8561").s390_versions == ("FF", "FF")
    lpar = parse_cpuinfo("vendor_id       : IBM/S390\nprocessor 0: version = 00,  identification = 0BE3A7,  machine = 8561\n")
    assert lpar.s390_versions == ("00",)
    assert detect_hypervisor(VirtInputs(family="s390", s390_versions=("00",))) == VirtFacts(
        "IBM PR/SM", "cpuinfo version 00: an LPAR", True)


def test_s390_is_never_bare_metal():
    facts = detect_hypervisor(VirtInputs(family="s390"))
    assert (facts.vendor, facts.in_guest) == (UNKNOWN, True)


def test_sysinfo_names_the_s390_hypervisor_before_the_version_byte():
    sysinfo = "LPAR Number:          41\nVM00 Name:            KVMguest\nVM00 Control Program: KVM/Linux       \n"
    facts = detect_hypervisor(VirtInputs(family="s390", s390_versions=("FF",), sysinfo=sysinfo))
    assert facts == VirtFacts("KVM", "/proc/sysinfo", True)


@pytest.mark.parametrize("machine, vendor", [
    ("CHRP IBM pSeries (emulated by qemu)", "KVM"),
    ("CHRP IBM,8231-E2D", "PowerVM"),
    ("CHRP IBM,9009-42A", "PowerVM"),
    ("", UNKNOWN),
])
def test_pseries_machine_line(machine, vendor):
    facts = detect_hypervisor(VirtInputs(family="ppc64", ppc_platform="pSeries", ppc_machine=machine))
    assert (facts.vendor, facts.in_guest) == (vendor, True)


def test_powernv_platform_is_bare_metal():
    assert detect_hypervisor(VirtInputs(family="ppc64", ppc_platform="PowerNV")) == VirtFacts(
        None, "cpuinfo platform PowerNV", False)


@pytest.mark.parametrize("guest_type, role", [("PV", "pv"), ("HVM", "hvm"), ("PVH", "hvm")])
def test_xen_guest_type_decides_the_role(guest_type, role):
    # /sys/hypervisor/guest_type (Linux >= 4.15) wins over the PCI heuristic
    facts = detect_hypervisor(VirtInputs(has_proc_xen=True, xen_capabilities="", xen_guest_type=guest_type + "\n",
                                         pci_devices="0018\t58530001\t0\n"))
    assert (facts.vendor, facts.in_guest, facts.xen) == ("Xen", True, role)


def test_xen_pv_and_hvm_before_guest_type():
    pv = detect_hypervisor(VirtInputs(has_proc_xen=True, xen_capabilities="", pci_devices=""))
    hvm = detect_hypervisor(VirtInputs(has_proc_xen=True, xen_capabilities="", pci_devices="0018\t58530001\t0\n"))
    assert (pv.xen, hvm.xen) == ("pv", "hvm")


def test_xen_dom0_runs_under_xen_but_is_no_guest():
    facts = detect_hypervisor(VirtInputs(has_proc_xen=True, xen_capabilities="control_d\n", pci_devices=""))
    assert (facts.vendor, facts.in_guest, facts.xen) == ("Xen", False, "dom0")


def test_other_architectures_without_evidence_are_unknown():
    for family in ("arm64", "arm", "riscv", "loongarch", "sparc", "ia64", "ppc"):
        facts = detect_hypervisor(VirtInputs(family=family))
        assert (facts.vendor, facts.in_guest) == (UNKNOWN, False), family


def test_arm64_qemu_dmi_and_device_tree_name_kvm():
    dmi = {"sys_vendor": "QEMU", "product_name": "KVM Virtual Machine"}
    assert detect_hypervisor(VirtInputs(family="arm64", dmi=dmi)).vendor == "KVM"
    graviton_metal = {"sys_vendor": "Amazon EC2", "product_name": "c6g.metal"}
    assert detect_hypervisor(VirtInputs(family="arm64", dmi=graviton_metal)).vendor == UNKNOWN
    dt = {"compatible": "linux,dummy-virt\0"}
    assert detect_hypervisor(VirtInputs(family="arm64", device_tree=dt)).vendor == "KVM"


def test_sys_hypervisor_type_xen_alone_names_xen():
    facts = detect_hypervisor(VirtInputs(family="arm64", hypervisor_type="xen\n"))
    assert (facts.vendor, facts.in_guest) == ("Xen", True)
