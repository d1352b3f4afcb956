# SPDX-License-Identifier: GPL-2.0-or-later
"""iommu.enabled, secure-guest.support and cpu.vulnerabilities: every branch on captured roots, the parsers,
the lscpu corpus, and the live host."""
from __future__ import annotations

import os
import shutil

import pytest

import kvmcheck
from conftest import CORPUS, needs_corpus
from kvmcheck.parsers.cmdline import parse_cmdline
from kvmcheck.parsers.iommu import gpus_sharing_groups, iommu_options, parse_pci_class, pci_slot
from kvmcheck.parsers.vulnerabilities import (MITIGATED, NOT_AFFECTED, OTHER, UNKNOWN, VULNERABLE,
                                              parse_vulnerabilities, parse_vulnerability)

MINE = ["iommu.enabled", "secure-guest.support", "cpu.vulnerabilities"]


def run_on(root, only=MINE):
    report = kvmcheck.run(str(root), only=only)
    return {r.id: r for r in report.checks}


def statuses(results):
    return {i: r.status.value for i, r in results.items()}


EXPECTED = {
    "iommu-intel-gpu-isolated": {"iommu.enabled": "pass", "secure-guest.support": "pass", "cpu.vulnerabilities": "skip"},
    "iommu-intel-gpu-shared": {"iommu.enabled": "warn", "secure-guest.support": "pass", "cpu.vulnerabilities": "skip"},
    "iommu-intel-off": {"iommu.enabled": "warn", "secure-guest.support": "pass", "cpu.vulnerabilities": "skip"},
    "iommu-amd-off": {"iommu.enabled": "warn", "secure-guest.support": "pass", "cpu.vulnerabilities": "skip"},
    "iommu-no-table": {"iommu.enabled": "warn", "secure-guest.support": "pass", "cpu.vulnerabilities": "skip"},
    "iommu-arm64": {"iommu.enabled": "skip", "secure-guest.support": "skip", "cpu.vulnerabilities": "skip"},
    "cloud-vm-no-nested": {"iommu.enabled": "skip", "secure-guest.support": "pass", "cpu.vulnerabilities": "skip"},
    "intel-baremetal-vmx": {"iommu.enabled": "skip", "secure-guest.support": "pass", "cpu.vulnerabilities": "skip"},
    "sev-enabled": {"iommu.enabled": "skip", "secure-guest.support": "pass", "cpu.vulnerabilities": "skip"},
    "sev-disabled-kvm": {"iommu.enabled": "skip", "secure-guest.support": "pass", "cpu.vulnerabilities": "skip"},
    "tdx-enabled": {"iommu.enabled": "skip", "secure-guest.support": "pass", "cpu.vulnerabilities": "skip"},
    "s390x-lpar": {"iommu.enabled": "skip", "secure-guest.support": "skip", "cpu.vulnerabilities": "skip"},
    "vuln-mitigated": {"iommu.enabled": "skip", "secure-guest.support": "pass", "cpu.vulnerabilities": "pass"},
    "vuln-smt-vulnerable": {"iommu.enabled": "skip", "secure-guest.support": "pass", "cpu.vulnerabilities": "warn"},
    "vuln-one-vulnerable": {"iommu.enabled": "skip", "secure-guest.support": "pass", "cpu.vulnerabilities": "warn"},
    "prepared-intel-host": {"iommu.enabled": "pass", "secure-guest.support": "pass", "cpu.vulnerabilities": "pass"},
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_exact_statuses(host_root, scenario):
    results = run_on(host_root(scenario))
    assert statuses(results) == EXPECTED[scenario], {i: r.summary for i, r in results.items()}
    for r in results.values():
        assert r.summary
        if r.status.value in ("warn", "fail"):
            assert r.detail and r.remediation, (scenario, r.id)
        else:
            assert r.remediation is None, (scenario, r.id)


# --- iommu.enabled ------------------------------------------------------------------------------
def test_isolated_gpu_passes_with_groups_as_evidence(host_root):
    r = run_on(host_root("iommu-intel-gpu-isolated"), ["iommu.enabled"])["iommu.enabled"]
    assert r.evidence["group_count"] == 6
    assert r.evidence["gpus"] == {"0000:01:00.0": "1"}
    assert r.evidence["iommu_units"] == ["dmar0", "dmar1"]
    assert r.evidence["options"]["intel_iommu"] is True and r.evidence["options"]["passthrough"] is True
    assert r.evidence["shared_groups"]["1"] == ["0000:00:01.0 (PCI bridge)", "0000:01:00.0 (VGA)",
                                                "0000:01:00.1 (HD audio)"]
    assert r.evidence["vfio_pci"] is True
    assert "gpus_sharing" not in r.evidence


def test_gpu_sharing_a_group_is_named(host_root):
    r = run_on(host_root("iommu-intel-gpu-shared"), ["iommu.enabled"])["iommu.enabled"]
    # The NIC behind the neighbouring root port shares group 3; bridges and the GPU's own audio do not count.
    assert r.evidence["gpus_sharing"] == {"0000:03:00.0": ["0000:02:00.0"]}
    assert "0000:03:00.0" in r.detail and "0000:02:00.0 (Ethernet)" in r.detail
    assert "0000:01:00.0" not in r.evidence["gpus"]  # an NVMe drive in that root, not a GPU


def test_intel_iommu_off_gives_the_exact_fix(host_root):
    r = run_on(host_root("iommu-intel-off"), ["iommu.enabled"])["iommu.enabled"]
    assert r.evidence["disabled_by"] == "intel_iommu=off"
    assert "'grubby --update-kernel=ALL --remove-args=\"intel_iommu=off\" --args=\"intel_iommu=on\"'" in r.remediation


def test_amd_iommu_off_says_what_disabled_it_without_folklore(host_root):
    r = run_on(host_root("iommu-amd-off"), ["iommu.enabled"])["iommu.enabled"]
    assert "amd_iommu=off" in r.summary
    assert "update-grub" in r.remediation  # Ubuntu root
    text = r.detail + r.remediation
    assert "iommu=1" not in text and "iommu=pt" not in text and "amd_iommu=on" not in text


def test_no_table_warns_to_enable_vt_d_in_firmware(host_root):
    r = run_on(host_root("iommu-no-table"), ["iommu.enabled"])["iommu.enabled"]
    assert "no ACPI DMAR table" in r.summary and "VT-d" in r.remediation
    assert r.evidence["firmware_table_present"] is False


def test_vendor_decides_the_table_not_the_virt_flag(host_root):
    """An Intel host with VT-x hidden (firmware-disabled) still looks for DMAR, unlike virt-host-validate."""
    root = host_root("iommu-intel-off")
    cpuinfo = root / "proc" / "cpuinfo"
    cpuinfo.write_text(cpuinfo.read_text().replace(" vmx ", " "))
    r = run_on(root, ["iommu.enabled"])["iommu.enabled"]
    assert r.status.value == "warn" and r.evidence["firmware_table"] == "DMAR"


def test_arm64_says_unknown_rather_than_guess(host_root):
    r = run_on(host_root("iommu-arm64"), ["iommu.enabled"])["iommu.enabled"]
    assert "unknown" in r.summary and r.evidence["iort"] is True


def test_vm_without_viommu_skips_and_says_so(host_root):
    r = run_on(host_root("cloud-vm-no-nested"), ["iommu.enabled"])["iommu.enabled"]
    assert "no virtual IOMMU" in r.summary


def test_unknown_vendor_skips(host_root):
    root = host_root("iommu-no-table")
    cpuinfo = root / "proc" / "cpuinfo"
    cpuinfo.write_text(cpuinfo.read_text().replace("GenuineIntel", "GenuineTMx86"))
    r = run_on(root, ["iommu.enabled"])["iommu.enabled"]
    assert r.status.value == "skip" and "GenuineTMx86" in r.summary


def test_ivrs_without_groups_and_no_disabling_option(host_root):
    root = host_root("iommu-amd-off")
    (root / "proc" / "cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro iommu=pt\n")
    r = run_on(root, ["iommu.enabled"])["iommu.enabled"]
    assert r.status.value == "warn" and r.evidence["disabled_by"] is None
    assert "AMD-Vi" in r.remediation and "iommu=1" not in r.remediation


def test_iommu_off_disables_every_vendor(host_root):
    root = host_root("iommu-amd-off")
    (root / "proc" / "cmdline").write_text("ro iommu=off\n")
    r = run_on(root, ["iommu.enabled"])["iommu.enabled"]
    assert r.evidence["disabled_by"] == "iommu=off" and "Remove iommu=off" in r.remediation


def test_groups_without_vfio_pci_warn(host_root):
    root = host_root("iommu-intel-gpu-isolated")
    shutil.rmtree(root / "sys" / "module" / "vfio_pci")
    release = (root / "proc/sys/kernel/osrelease").read_text().strip()
    mods = root / "lib" / "modules" / release
    (mods / "kernel/drivers/net").mkdir(parents=True)
    (mods / "modules.dep").write_text("kernel/drivers/net/tun.ko.xz:\n")
    (mods / "modules.builtin").write_text("kernel/drivers/block/loop.ko\n")
    r = run_on(root, ["iommu.enabled"])["iommu.enabled"]
    assert r.status.value == "warn" and "vfio-pci" in r.summary
    (mods / "kernel/drivers/vfio/pci").mkdir(parents=True)
    (mods / "kernel/drivers/vfio/pci/vfio-pci.ko.xz").write_bytes(b"")
    assert run_on(root, ["iommu.enabled"])["iommu.enabled"].status.value == "pass"


# --- secure-guest.support -------------------------------------------------------------------------
def test_sev_enabled(host_root):
    r = run_on(host_root("sev-enabled"), ["secure-guest.support"])["secure-guest.support"]
    assert r.summary.startswith("AMD SEV available to KVM") and "SEV-ES not in the CPU" in r.summary
    assert r.evidence["dev_sev"] is True and r.evidence["asids"] == {"sev": 15, "sev_es": 0}


def test_sev_hardware_but_disabled_in_kvm_passes_with_the_state_and_fix(host_root):
    r = run_on(host_root("sev-disabled-kvm"), ["secure-guest.support"])["secure-guest.support"]
    assert "disabled in KVM (kvm_amd sev=N)" in r.summary
    assert "kvm_amd sev=1" in r.detail and r.remediation is None


def test_sev_int_parameter_of_older_kernels(host_root):
    root = host_root("sev-disabled-kvm")
    (root / "sys/module/kvm_amd/parameters/sev").write_text("0\n")
    r = run_on(root, ["secure-guest.support"])["secure-guest.support"]
    assert "sev=0" in r.summary and r.status.value == "pass"
    (root / "sys/module/kvm_amd/parameters/sev").write_text("1\n")
    r = run_on(root, ["secure-guest.support"])["secure-guest.support"]
    assert "/dev/sev is missing" in r.summary and r.status.value == "pass"


def test_tdx(host_root):
    r = run_on(host_root("tdx-enabled"), ["secure-guest.support"])["secure-guest.support"]
    assert r.summary == "Intel TDX available to KVM (kvm_intel tdx=Y)"
    assert "virt/tdx: module initialized" in r.evidence["tdx_log"] and "initialized" in r.detail


def test_tdx_platform_but_kvm_tdx_off(host_root):
    root = host_root("tdx-enabled")
    (root / "sys/module/kvm_intel/parameters/tdx").write_text("N\n")
    r = run_on(root, ["secure-guest.support"])["secure-guest.support"]
    assert r.status.value == "pass" and "disabled in KVM" in r.summary and "kvm_intel tdx=1" in r.detail


def _s390_se(host_root, facility=True, uv=True, prot_virt="1"):
    root = host_root("s390x-lpar")
    cpuinfo = root / "proc" / "cpuinfo"
    facilities = "0 1 2 3 4 6 7 8 9 10 12 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 30 31 32 33 34 35 36 37 " \
                 "38 40 41 42 43 44 45 47 48 49 50 51 52 53 54 57 58 59 60 61 64 65 69 71 72 73 74 75 76 77 78 80 " \
                 "81 82 129 130 131 133 134 135 138 139 146 147 148 150 151 152 155 156" + (" 158" if facility else "")
    lines = cpuinfo.read_text().splitlines()
    lines.insert(3, "facilities      : " + facilities)
    cpuinfo.write_text("\n".join(lines) + "\n")
    if uv:
        (root / "sys/firmware/uv").mkdir(parents=True)
        (root / "sys/firmware/uv/query").mkdir()
    (root / "proc" / "cmdline").write_text("root=/dev/disk/by-path/ccw-0.0.1234-part1 rd.dasd=0.0.1234"
                                           + (f" prot_virt={prot_virt}" if prot_virt is not None else "") + "\n")
    return run_on(root, ["secure-guest.support"])["secure-guest.support"]


@pytest.mark.parametrize("case,summary", [
    ({}, "IBM Secure Execution available (prot_virt enabled)"),
    ({"prot_virt": None}, "IBM Secure Execution supported but disabled in the kernel (no prot_virt=1)"),
    ({"prot_virt": "0"}, "IBM Secure Execution supported but disabled in the kernel (no prot_virt=1)"),
    ({"uv": False}, "IBM Secure Execution in the machine, but not supported by this kernel (no /sys/firmware/uv)"),
    ({"facility": False}, "no confidential-guest support: IBM Secure Execution not available (optional)"),
])
def test_s390_secure_execution_branches(host_root, case, summary):
    r = _s390_se(host_root, **case)
    assert (r.status.value, r.summary) == ("pass", summary)
    assert "IBM PR/SM" not in r.detail  # an LPAR is a host, not a guest
    if "disabled" in summary:
        assert "zipl" in r.detail


def test_no_confidential_computing_is_never_a_warning(host_root):
    for name in ("intel-baremetal-vmx", "amd-baremetal-svm", "cloud-vm-no-nested"):
        r = run_on(host_root(name), ["secure-guest.support"])["secure-guest.support"]
        assert r.status.value == "pass" and "not available" in r.summary, name


# --- cpu.vulnerabilities --------------------------------------------------------------------------
def test_all_mitigated_lists_them(host_root):
    r = run_on(host_root("vuln-mitigated"), ["cpu.vulnerabilities"])["cpu.vulnerabilities"]
    assert r.evidence["mitigated"] == ["l1tf", "mds", "itlb_multihit", "spectre_v2", "spec_store_bypass",
                                       "spectre_v1", "meltdown"]
    assert r.evidence["unknown"] == ["mmio_stale_data"]
    assert (r.evidence["smt_control"], r.evidence["smt_active"]) == ("off", "0")


def test_smt_vulnerable_warns_about_smt(host_root):
    r = run_on(host_root("vuln-smt-vulnerable"), ["cpu.vulnerabilities"])["cpu.vulnerabilities"]
    assert r.evidence["smt_vulnerable"] == ["l1tf", "mds"] and r.evidence["vulnerable"] == []
    assert "SMT" in r.summary and "nosmt" in r.remediation and "/sys/devices/system/cpu/smt/control" in r.remediation


def test_one_vulnerable_names_it_and_its_fix(host_root):
    r = run_on(host_root("vuln-one-vulnerable"), ["cpu.vulnerabilities"])["cpu.vulnerabilities"]
    assert r.evidence["vulnerable"] == ["itlb_multihit"]
    assert "kvm.nx_huge_pages" in r.remediation and "microcode_ctl" in r.remediation


@pytest.mark.parametrize("mitigations,expected", [("off", "warn"), ("auto,no_guest_host", "warn"),
                                                  ("auto,nosmt", "pass"), ("auto", "pass")])
def test_mitigations_on_the_command_line(host_root, mitigations, expected):
    root = host_root("vuln-mitigated")
    (root / "proc" / "cmdline").write_text(f"ro nosmt mitigations={mitigations}\n")
    r = run_on(root, ["cpu.vulnerabilities"])["cpu.vulnerabilities"]
    assert r.status.value == expected and r.evidence["mitigations"] == mitigations
    if expected == "warn":
        assert "mitigations=" in r.remediation


def test_empty_or_absent_directory_skips(host_root):
    root = host_root("vuln-mitigated")
    vdir = root / "sys/devices/system/cpu/vulnerabilities"
    for f in vdir.iterdir():
        f.unlink()
    assert run_on(root, ["cpu.vulnerabilities"])["cpu.vulnerabilities"].status.value == "skip"


CORPUS_VULN = {  # lscpu captures that have the directory, and what they hold
    "arm-A510-A710-A715-X3": "warn",  # spectre_v2: Vulnerable: Unprivileged eBPF enabled
    "loongarch-kvm_on_loongson_3c6000": "pass", "s390-nested-virt": "pass", "vmware_fpe": "pass",
    "x86_64-64cpu-linux6.2": "pass", "x86_64-epyc_7451": "pass",
}


@needs_corpus
def test_corpus_dumps():
    have = sorted(p.name for p in CORPUS.iterdir() if (p / "sys/devices/system/cpu/vulnerabilities").is_dir())
    assert have == sorted(CORPUS_VULN)
    for dump in sorted(p.name for p in CORPUS.iterdir() if p.is_dir()):
        results = run_on(CORPUS / dump)
        assert not [i for i, r in results.items() if r.status.value in ("error", "fail")], dump
        assert results["cpu.vulnerabilities"].status.value == CORPUS_VULN.get(dump, "skip"), dump
    r = run_on(CORPUS / "arm-A510-A710-A715-X3", ["cpu.vulnerabilities"])["cpu.vulnerabilities"]
    assert r.evidence["vulnerable"] == ["spectre_v2"] and "unprivileged_bpf_disabled" in r.remediation


# --- parsers ----------------------------------------------------------------------------------------
def test_cmdline_quotes_last_wins_and_init_args():
    c = parse_cmdline('BOOT_IMAGE=/vmlinuz ro dyndbg="file drivers/iommu/* +p" intel_iommu=off '
                      'intel_iommu=on "acpi_osi=Windows 2020" quiet -- --firecracker-init --addr 0.0.0.0:2024 '
                      'intel_iommu=off\n')
    assert c.get("dyndbg") == "file drivers/iommu/* +p"
    assert c.get("acpi_osi") == "Windows 2020"
    assert c.get("intel_iommu") == "on"  # repeated: the last one wins, and nothing after "--" counts
    assert c.get_all("intel_iommu") == ["off", "on"]
    assert c.has("quiet") and c.get("quiet") is None
    assert c.init_args == ("--firecracker-init", "--addr", "0.0.0.0:2024", "intel_iommu=off")
    assert iommu_options(c).intel_iommu is True


def test_this_machines_cmdline_shape():
    text = ("mitigations=auto,no_guest_host,no_guest_guest console=ttyS0 quiet reboot=k panic=1 nomodule "
            "rdinit=/process_api -- --firecracker-init --addr 0.0.0.0:2024 --auth-required")
    c = parse_cmdline(text)
    assert c.get("mitigations") == "auto,no_guest_host,no_guest_guest"
    assert c.get("rdinit") == "/process_api" and not c.has("--addr") and c.init_args[-1] == "--auth-required"


def test_iommu_options():
    o = iommu_options(parse_cmdline("intel_iommu=on,sm_on iommu=pt amd_iommu=off"))
    assert (o.intel_iommu, o.passthrough, o.amd_iommu_off, o.iommu_off) == (True, True, True, False)
    assert o.disabled_by("IVRS") == "amd_iommu=off" and o.disabled_by("DMAR") is None
    o = iommu_options(parse_cmdline("intel-iommu=on intel_iommu=igfx_off,off iommu.passthrough=0"))
    assert o.intel_iommu is False and o.passthrough is False and o.disabled_by("DMAR") == "intel_iommu=off"
    assert iommu_options(parse_cmdline("iommu=off")).disabled_by("DMAR") == "iommu=off"
    assert iommu_options(parse_cmdline("ro quiet")).given == ()


def test_pci_helpers_and_group_sharing():
    assert pci_slot("0000:01:00.1") == "0000:01:00" and pci_slot("arm-smmu-v3.0.auto") is None
    assert parse_pci_class("0x030000\n") == 0x030000 and parse_pci_class("junk") is None
    classes = {"0000:00:01.0": 0x060400, "0000:01:00.0": 0x030000, "0000:01:00.1": 0x040300,
               "0000:01:00.2": 0x0c0330, "0000:02:00.0": 0x030200, "0000:02:00.1": 0x040300}
    groups = {"1": ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1", "0000:01:00.2"],  # GPU + its own functions
              "2": ["0000:02:00.0", "0000:02:00.1", "0000:05:00.0"]}  # a 3D controller with a stranger
    (shared,) = gpus_sharing_groups(groups, classes)
    assert (shared.address, shared.group, shared.others) == ("0000:02:00.0", "2", ("0000:05:00.0",))


@pytest.mark.parametrize("text,state,parts,smt", [
    ("Not affected", NOT_AFFECTED, (), None),
    ("Mitigation: PTE Inversion; VMX: conditional cache flushes, SMT vulnerable", MITIGATED, (), "vulnerable"),
    ("Mitigation: PTE Inversion; VMX: vulnerable", MITIGATED, ("VMX: vulnerable",), None),
    ("Mitigation: Clear CPU buffers; SMT Host state unknown", MITIGATED, (), "host state unknown"),
    ("Vulnerable: Clear CPU buffers attempted, no microcode; SMT vulnerable", VULNERABLE, (), "vulnerable"),
    ("KVM: Mitigation: Split huge pages", MITIGATED, (), None),
    ("KVM: Vulnerable", VULNERABLE, (), None),
    ("Vulnerable: Unprivileged eBPF enabled", VULNERABLE, (), None),
    ("Mitigation: Retpolines; IBPB: conditional; IBRS_FW; STIBP: disabled; RSB filling; PBRSB-eIBRS: Not affected; "
     "BHI: Not affected", MITIGATED, (), None),
    ("Mitigation: Enhanced / Automatic IBRS; IBPB: conditional; RSB filling; PBRSB-eIBRS: SW sequence; "
     "BHI: Vulnerable", MITIGATED, ("BHI: Vulnerable",), None),
    ("Unknown: No mitigations", UNKNOWN, (), None),
    ("Processor vulnerable", VULNERABLE, (), None),
    ("Something new", OTHER, (), None),
    ("", OTHER, (), None),
])
def test_vulnerability_text(text, state, parts, smt):
    v = parse_vulnerability("x", text + "\n")
    assert (v.state, v.vulnerable_parts, v.smt) == (state, parts, smt)


def test_vulnerability_kvm_covered_part_is_not_open_to_guests():
    v = parse_vulnerability("spectre_v2", "Mitigation: Retpolines, IBPB: conditional, IBRS_FW, STIBP: conditional, "
                                          "RSB filling, PBRSB-eIBRS: Not affected, BHI: Vulnerable, KVM: SW loop")
    assert v.vulnerable_parts == ("BHI: Vulnerable",) and v.kvm_covered and not v.open_to_guests
    assert parse_vulnerability("l1tf", "Mitigation: PTE Inversion; VMX: vulnerable").open_to_guests
    assert list(parse_vulnerabilities({"mds": "Not affected", "l1tf": "Not affected"})) == ["l1tf", "mds"]


# --- the live host ------------------------------------------------------------------------------------
def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def test_live_host():
    results = run_on("/")
    assert not [i for i, r in results.items() if r.status.value in ("error", "fail")]
    # cpu.vulnerabilities, judged from what this test reads itself
    vdir = "/sys/devices/system/cpu/vulnerabilities"
    texts = [_read(os.path.join(vdir, n)) or "" for n in (os.listdir(vdir) if os.path.isdir(vdir) else [])]
    words = (_read("/proc/cmdline") or "").split(" -- ")[0].split()
    mitigations = next((w.split("=", 1)[1] for w in reversed(words) if w.startswith("mitigations=")), "")
    opted_out = any(i in ("off", "no_guest_host", "no_guest_guest") for i in mitigations.split(","))
    if not texts:
        expected = "skip"
    elif opted_out or any(t.startswith("Vulnerable") or "SMT vulnerable" in t or "KVM: Vulnerable" in t
                          or "VMX: vulnerable" in t for t in texts):
        expected = "warn"
    else:
        expected = None  # a sub-state such as "BHI: Vulnerable" may go either way
    if expected:
        assert results["cpu.vulnerabilities"].status.value == expected
    # iommu.enabled: groups mean pass (or warn for a shared GPU); without them never pass
    groups = os.listdir("/sys/kernel/iommu_groups") if os.path.isdir("/sys/kernel/iommu_groups") else []
    status = results["iommu.enabled"].status.value
    assert status in (("pass", "warn") if groups else ("warn", "skip"))
    # secure-guest.support never warns; without the CPU flags it is "not available"
    flags = set()
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    r = results["secure-guest.support"]
    assert r.status.value in ("pass", "skip")
    if flags and not flags & {"sev", "tdx_host_platform"} and not os.path.exists("/sys/module/kvm_intel/parameters/tdx"):
        assert "not available" in r.summary
