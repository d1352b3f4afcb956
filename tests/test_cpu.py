"""checks/cpu.py judged from fact records (no root needed), and kvmcheck/facts/cpu.py on captured roots:
the facts keep a file that is absent apart from one that may not be read (as nobody, through setpriv)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import as_nobody, materialize
from kvmcheck.checks import cpu
from kvmcheck.core.host import Host
from kvmcheck.core.settings import Settings
from kvmcheck.facts import Facts, Later, Readout
from kvmcheck.facts.cpu import Smt, VulnerabilityFiles, s390_reports_sie
from kvmcheck.facts.system import Arch
from kvmcheck.parsers.cmdline import parse_cmdline
from kvmcheck.parsers.cpuinfo import parse_cpuinfo
from kvmcheck.parsers.hypervisor import UNKNOWN, VirtFacts
from kvmcheck.parsers.kernel_version import parse_kernel_release
from kvmcheck.parsers.vulnerabilities import parse_vulnerabilities

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


def never() -> Later:
    """A Later a judge must not ask for on this branch (asking fails the test)."""
    return Later(lambda: pytest.fail("a fact of another branch was asked for"))


def x86(*flag_lines: str, vendor: str = "GenuineIntel"):  # type: ignore[no-untyped-def]
    return parse_cpuinfo("".join(f"processor\t: {i}\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n\n"
                                 for i, flags in enumerate(flag_lines)))


BARE = VirtFacts(None, "DMI: Dell Inc.", False)
KVM_GUEST = VirtFacts("KVM", "CPUID hypervisor leaf", True)
VMWARE_GUEST = VirtFacts("VMware", "DMI: VMware, Inc.", True)
SOME_GUEST = VirtFacts(UNKNOWN, "hypervisor flag", True)
XEN_DOM0 = VirtFacts("Xen", "/proc/xen/capabilities", False, "dom0")
XEN_PV = VirtFacts("Xen", "/sys/hypervisor/guest_type", True, "pv")
S390_CPU = parse_cpuinfo("vendor_id : IBM/S390\nfeatures : esan3 zarch stfle msa ldisp eimm dfp edat etf3eh highgprs "
                         "te vx vxd vxe gs sie\nprocessor 0: version = FF,  identification = 0123456,  machine = 8561\n")
S390_OLD = parse_cpuinfo("vendor_id : IBM/S390\nfeatures : esan3 zarch stfle msa ldisp eimm dfp edat etf3eh highgprs\n")


def virt_flags(cpuinfo, family, arch, virt=BARE, modules=None, osrelease=None, s390=None, dev_kvm=None,
               accept_software_kvm=False):  # type: ignore[no-untyped-def]
    return cpu.virt_flags.func(
        cpuinfo=cpuinfo, family=family, arch=Arch(arch, "uname" if arch else "unknown"), virt=virt,
        modules=modules or {}, osrelease=osrelease, s390_reports_sie=s390 or never(),
        dev_kvm_exists=dev_kvm or never(), settings=Settings(accept_software_kvm=accept_software_kvm))


VIRT_FLAGS = [  # (case, judge's arguments, status, summary)
    ("vmx on all", dict(cpuinfo=x86("fpu vmx lm", "fpu vmx lm"), family="x86", arch="x86_64"),
     "pass", "VT-x present on all 2 CPUs"),
    ("svm on all", dict(cpuinfo=x86("svm lm", vendor="AuthenticAMD"), family="x86", arch="x86_64"),
     "pass", "AMD-V present on all 1 CPUs"),
    ("vmx on some", dict(cpuinfo=x86("vmx lm", "lm", "lm"), family="x86", arch="x86_64"),
     "warn", "VT-x on some CPUs only (2 of 3 lack it)"),
    ("Xen dom0 with vmx", dict(cpuinfo=x86("vmx lm"), family="x86", arch="x86_64", virt=XEN_DOM0),
     "fail", "Xen dom0: the Xen hypervisor owns VT-x/AMD-V"),
    ("Xen PV with vmx", dict(cpuinfo=x86("vmx lm"), family="x86", arch="x86_64", virt=XEN_PV),
     "fail", "Xen PV guest (domU): a paravirtualized kernel cannot use VT-x/AMD-V"),
    ("PVM", dict(cpuinfo=x86("lm"), family="x86", arch="x86_64", virt=KVM_GUEST, modules={"kvm_pvm": "built-in"}),
     "fail", "no VT-x/AMD-V; /dev/kvm comes from the software provider PVM (kvm_pvm)"),
    ("PVM accepted", dict(cpuinfo=x86("lm"), family="x86", arch="x86_64", modules={"kvm_pvm": "loaded"},
                          accept_software_kvm=True),
     "pass", "software KVM through PVM (kvm_pvm), accepted by the configuration; no VT-x/AMD-V"),
    ("KVM guest", dict(cpuinfo=x86("lm"), family="x86", arch="x86_64", virt=KVM_GUEST),
     "fail", "no VT-x/AMD-V: this is a KVM guest without nested virtualization"),
    ("unnamed guest", dict(cpuinfo=x86("lm"), family="x86", arch="x86_64", virt=SOME_GUEST),
     "fail", "no VT-x/AMD-V: this is a guest without nested virtualization"),
    ("bare metal", dict(cpuinfo=x86("lm"), family="x86", arch="x86_64"), "fail", "no VT-x/AMD-V in the CPU flags"),
    ("s390 sie", dict(cpuinfo=S390_CPU, family="s390", arch="s390x", virt=VirtFacts("IBM PR/SM", "sysinfo", True)),
     "pass", "SIE interpretive execution (sie) present"),
    ("s390 old kernel", dict(cpuinfo=S390_OLD, family="s390", arch="s390x", osrelease="4.4.0",
                             s390=Later(lambda: False)),
     "skip", "this kernel predates the 'sie' feature flag (Linux 4.5)"),
    ("s390 KVM guest", dict(cpuinfo=S390_OLD, family="s390", arch="s390x", virt=KVM_GUEST, s390=Later(lambda: True)),
     "fail", "no SIE interpretive execution (sie): this is a KVM guest without nested virtualization"),
    ("loongarch lvz", dict(cpuinfo=parse_cpuinfo("features : cpucfg lam ual fpu lsx lasx lvz\n"), family="loongarch",
                           arch="loongarch64"), "pass", "LoongArch Virtualization (LVZ) (lvz) present"),
    ("loongarch none", dict(cpuinfo=parse_cpuinfo("features : cpucfg lam ual fpu lsx\n"), family="loongarch",
                            arch="loongarch64"), "fail", "no LoongArch Virtualization (LVZ) (lvz) in the CPU features"),
    ("riscv h", dict(cpuinfo=parse_cpuinfo("isa : rv64imafdch_zicsr\n"), family="riscv", arch="riscv64"),
     "pass", "RISC-V hypervisor extension (H) present"),
    ("riscv no h", dict(cpuinfo=parse_cpuinfo("isa : rv64imafdc_zicsr\n"), family="riscv", arch="riscv64"),
     "fail", "no RISC-V hypervisor extension (H) in the ISA string"),
    ("PowerNV", dict(cpuinfo=parse_cpuinfo("cpu : POWER9\nplatform : PowerNV\n"), family="ppc64", arch="ppc64le"),
     "pass", "POWER bare metal (PowerNV): KVM-HV possible"),
    ("PowerVM LPAR", dict(cpuinfo=parse_cpuinfo("cpu : POWER9\nplatform : pSeries\n"), family="ppc64",
                          arch="ppc64le", virt=VirtFacts("PowerVM", "device tree", True)),
     "fail", "POWER a PowerVM logical partition (pSeries): no hypervisor mode"),
    ("POWER unknown", dict(cpuinfo=parse_cpuinfo("cpu : POWER9\n"), family="ppc64", arch="ppc64le"),
     "skip", "POWER platform not recorded in cpuinfo"),
    ("arm64 /dev/kvm", dict(cpuinfo=parse_cpuinfo("CPU architecture: 8\n"), family="arm64", arch="aarch64",
                            dev_kvm=Later(lambda: True)), "pass", "arm64: /dev/kvm present (EL2 is not visible in cpuinfo)"),
    ("arm64 none", dict(cpuinfo=parse_cpuinfo("CPU architecture: 8\n"), family="arm64", arch="aarch64",
                        dev_kvm=Later(lambda: False)), "skip", "arm64: virtualization support cannot be read from cpuinfo"),
    ("mips64 vz", dict(cpuinfo=parse_cpuinfo("system type : loongson3\nASEs implemented : vz msa\n"), family="mips64",
                       arch="mips64"), "pass", "MIPS Virtualization ASE (vz) present on a 64-bit MIPS CPU"),
    ("mips64 no vz", dict(cpuinfo=parse_cpuinfo("ASEs implemented : msa\n"), family="mips64", arch="mips64"),
     "fail", "no MIPS Virtualization ASE (vz) in the CPU features"),
    ("mips32", dict(cpuinfo=parse_cpuinfo("ASEs implemented : vz\n"), family="mips", arch="mips"),
     "skip", "32-bit MIPS: not judged"),
    ("mips no ASEs", dict(cpuinfo=parse_cpuinfo("system type : x\n"), family="mips64", arch="mips64"),
     "skip", "MIPS: no 'ASEs implemented' line in cpuinfo"),
    ("sparc", dict(cpuinfo=parse_cpuinfo("cpu : UltraSparc T2\ntype : sun4v\n"), family="sparc", arch="sparc64"),
     "fail", "sparc64 is not a KVM host architecture"),
    ("no cpuinfo", dict(cpuinfo=None, family="unknown", arch=None), "skip", "no /proc/cpuinfo in this root"),
    ("empty cpuinfo", dict(cpuinfo=parse_cpuinfo(""), family="unknown", arch=None), "skip", "/proc/cpuinfo is empty"),
    ("garbage cpuinfo", dict(cpuinfo=parse_cpuinfo("what: ever\n"), family="unknown", arch=None),
     "skip", "/proc/cpuinfo is not readable text of the expected form"),
]


@pytest.mark.parametrize("case, args, status, summary", VIRT_FLAGS, ids=[c[0] for c in VIRT_FLAGS])
def test_virt_flags_judge(case, args, status, summary):
    out = virt_flags(**args)
    assert (out.status.value, out.summary) == (status, summary)


def test_virt_flags_evidence_and_cause_on_bare_metal():
    out = virt_flags(x86("lm", "lm", vendor="AuthenticAMD"), "x86", "x86_64")
    assert out.evidence == {"cpus": 2, "vendor_id": "AuthenticAMD", "hypervisor": None, "in_guest": False,
                            "kvm_pvm": False}
    assert out.caused_by == ("firmware.vt-enabled",)  # firmware's "disabled" is the cause when it says so
    assert "enable 'SVM Mode (AMD-V)'" in out.remediation


@pytest.mark.parametrize("vendor, words", [
    ("KVM", ["set kvm_amd nested=1", "host-passthrough"]),
    ("VMware", ["vhv.enable"]),
    ("Microsoft", ["ExposeVirtualizationExtensions"]),
    (UNKNOWN, ["set kvm_amd nested=1"]),  # no advice of its own: the KVM one
])
def test_the_nested_fix_names_the_outer_hypervisor(vendor, words):
    out = virt_flags(x86("lm", vendor="AuthenticAMD"), "x86", "x86_64", virt=VirtFacts(vendor, "CPUID", True))
    assert out.remediation.startswith("Ask the outer hypervisor to expose svm to this VM")
    assert all(w in out.remediation for w in words), out.remediation


# --- cpu.64bit ----------------------------------------------------------------------------------------
CPU_64BIT = [  # (case, cpuinfo, family, arch, kernel_bits, status, summary)
    ("64 on 64", x86("lm"), "x86", "x86_64", (64, "uname: x86_64"), "pass",
     "64-bit CPU and 64-bit kernel (uname: x86_64)"),
    ("no long mode", x86("vmx"), "x86", "i686", (32, "uname: i686"), "fail", "the CPU is 32-bit only (no long mode)"),
    ("32 on 64", x86("lm"), "x86", "x86_64", (32, "release 2.6.18-419.el5PAE"), "fail",
     "32-bit kernel on a 64-bit CPU"),
    ("32-bit ARM kernel", parse_cpuinfo("processor : ARMv7\n"), "arm", "armv7l", (32, "uname: armv7l"), "fail",
     "32-bit kernel"),
    ("64-bit CPU, kernel unknown", parse_cpuinfo("cpu : UltraSparc\n"), "sparc", "sparc64", (None, "unknown"),
     "skip", "the CPU is 64-bit; the kernel's bitness is not recorded in this root"),
    ("nothing known", parse_cpuinfo("what : ever\n"), "unknown", None, (None, "unknown"), "skip",
     "neither the CPU's nor the kernel's bitness is recorded in this root"),
    ("no cpuinfo", None, "x86", "x86_64", (64, "uname: x86_64"), "skip", "no /proc/cpuinfo in this root"),
]


@pytest.mark.parametrize("case, cpuinfo, family, arch, bits, status, summary", CPU_64BIT,
                         ids=[c[0] for c in CPU_64BIT])
def test_cpu_64bit_judge(case, cpuinfo, family, arch, bits, status, summary):
    from kvmcheck.facts.cpu import KernelBits

    out = cpu.cpu_64bit.func(cpuinfo=cpuinfo, family=family, arch=Arch(arch, "uname"), kernel_bits=KernelBits(*bits),
                             cpu_arch=arch)
    assert (out.status.value, out.summary) == (status, summary)


@pytest.mark.parametrize("root, bits", [
    ("old-32bit-kernel", (32, "release 2.6.18-419.el5PAE")),
    ("arm64-kvm", (64, "/proc/sys/kernel/arch: aarch64")),
    ("cap-sparc64", (None, "unknown")),  # kernel_config asked for, and nothing found
])
def test_kernel_bits_on_captured_roots(root, bits, tmp_path):
    host = Host(str(materialize(root, tmp_path)))
    assert tuple(Facts(host).get("kernel_bits")) == bits


def test_kernel_bits_reads_the_kernel_config_only_when_nothing_else_tells(tmp_path):
    host = Host(str(materialize("old-32bit-kernel", tmp_path)))
    Facts(host).get("kernel_bits")
    assert not [p for p in host.reads if p.startswith(("/boot", "/lib/modules"))]


# --- cpu.vulnerabilities ------------------------------------------------------------------------------
def vulnerabilities(files: dict, denied: tuple = ()) -> VulnerabilityFiles:
    d = "/sys/devices/system/cpu/vulnerabilities"
    return VulnerabilityFiles(parse_vulnerabilities(files),
                              tuple(Readout(f"{d}/{n}", "denied", reason="Permission denied") for n in denied))


SMT_ON = Smt(Readout("/sys/devices/system/cpu/smt/control", "ok", "on\n"),
             Readout("/sys/devices/system/cpu/smt/active", "ok", "1\n"))
SMT_DENIED = Smt(Readout("/sys/devices/system/cpu/smt/control", "denied", reason="Permission denied"),
                 Readout("/sys/devices/system/cpu/smt/active", "absent"))
MITIGATED = {"l1tf": "Mitigation: PTE Inversion; VMX: conditional cache flushes, SMT disabled",
             "meltdown": "Not affected", "spectre_v2": "Mitigation: Enhanced IBRS"}
VULNS = [  # (case, files, denied, cmdline, status, summary)
    ("mitigated", MITIGATED, (), "ro", "pass", "no CPU vulnerability open: 2 mitigated, 1 not affected"),
    ("unknown", {**MITIGATED, "mmio_stale_data": "Unknown: No mitigations"}, (), "ro", "pass",
     "no CPU vulnerability open: 2 mitigated, 1 not affected, 1 unknown"),
    ("vulnerable", {**MITIGATED, "itlb_multihit": "KVM: Vulnerable"}, (), "ro", "warn",
     "CPU vulnerabilities open to guests: 1 vulnerable (itlb_multihit)"),
    ("SMT vulnerable", {**MITIGATED, "mds": "Mitigation: Clear CPU buffers; SMT vulnerable"}, (), "ro", "warn",
     "CPU vulnerabilities open to guests: 1 mitigated only with SMT off, which is on (mds)"),
    ("mitigations=off", MITIGATED, (), "ro mitigations=off", "warn",
     "CPU vulnerabilities open to guests: guest mitigations switched off (mitigations=off)"),
    ("attack vectors off", MITIGATED, (), "mitigations=auto,no_guest_host", "warn",
     "CPU vulnerabilities open to guests: guest mitigations switched off (mitigations=auto,no_guest_host)"),
    ("some denied", MITIGATED, ("mds",), "ro", "pass", "no CPU vulnerability open: 2 mitigated, 1 not affected"),
    ("all denied", {}, ("mds", "l1tf"), "ro", "skip",
     "/sys/devices/system/cpu/vulnerabilities: 2 file(s) unreadable (mds: Permission denied)"),
    ("none", {}, (), "ro", "skip", "no CPU vulnerability report (/sys/devices/system/cpu/vulnerabilities)"),
    ("not the kernel's text", {"l1tf": "\x00\x01", "mds": "garbage"}, (), "ro", "skip",
     "/sys/devices/system/cpu/vulnerabilities is not readable text of the expected form"),
]


@pytest.mark.parametrize("case, files, denied, cmdline, status, summary", VULNS, ids=[c[0] for c in VULNS])
def test_vulnerabilities_judge(case, files, denied, cmdline, status, summary):
    out = cpu.cpu_vulnerabilities.func(vulnerabilities=vulnerabilities(files, denied), smt=SMT_ON,
                                       cmdline=parse_cmdline(cmdline), distro_family="debian",
                                       cpu_vendor_id=Later(lambda: "GenuineIntel") if status == "warn" else never())
    assert (out.status.value, out.summary) == (status, summary)
    if denied and files:
        assert out.evidence["unreadable"] == [f"{n}: Permission denied" for n in denied]


@pytest.mark.parametrize("family, vendor, package", [
    ("debian", "GenuineIntel", "intel-microcode"), ("rhel", "AuthenticAMD", "linux-firmware"),
    ("suse", "", "ucode-intel / ucode-amd"), (None, "GenuineIntel", "the distribution's microcode package")])
def test_vulnerable_names_the_microcode_package(family, vendor, package):
    out = cpu.cpu_vulnerabilities.func(vulnerabilities=vulnerabilities({"srbds": "Vulnerable: No microcode"}),
                                       smt=SMT_DENIED, cmdline=None, distro_family=family,
                                       cpu_vendor_id=Later(lambda: vendor))
    assert out.remediation == (f"srbds: {cpu.VULN_FIX['srbds']}. Keep the kernel and the CPU microcode ({package}) "
                               "current.")
    assert (out.evidence["smt_control"], out.evidence["smt_active"]) == (None, None)
    assert out.detail.endswith("SMT control: unknown.")


# --- the facts on captured roots, as root and as nobody -------------------------------------------------------
FACTS_AS_JSON = """
import json, sys
from kvmcheck.core.host import Host
from kvmcheck.facts import Facts
from kvmcheck.facts import cpu
facts = Facts(Host(sys.argv[1]))
v, smt = facts.get("vulnerabilities"), facts.get("smt")
print(json.dumps({"found": sorted(v.found), "unreadable": [list(r) for r in v.unreadable],
                  "smt": [list(smt.control), list(smt.active)]}))
"""


def facts_as_nobody(root: Path) -> dict:
    proc = subprocess.run(as_nobody([sys.executable, "-c", FACTS_AS_JSON, str(root)]), capture_output=True,
                          text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_vulnerability_and_smt_facts_keep_denied_apart_from_absent(public_tmp):
    root = materialize("vuln-one-vulnerable", public_tmp)
    cpu_dir = root / "sys/devices/system/cpu"
    (cpu_dir / "vulnerabilities/mds").chmod(0)
    (cpu_dir / "vulnerabilities/meltdown").unlink()
    (cpu_dir / "smt/control").chmod(0)
    (cpu_dir / "smt/active").unlink()
    got = facts_as_nobody(root)
    d = "/sys/devices/system/cpu"
    assert "mds" not in got["found"] and "meltdown" not in got["found"] and "l1tf" in got["found"]
    assert got["unreadable"] == [[f"{d}/vulnerabilities/mds", "denied", None, "Permission denied"]]
    assert got["smt"] == [[f"{d}/smt/control", "denied", None, "Permission denied"],
                          [f"{d}/smt/active", "absent", None, None]]


def test_vulnerabilities_as_nobody_names_the_denied_file(public_tmp):
    root = materialize("vuln-one-vulnerable", public_tmp)
    (root / "sys/devices/system/cpu/vulnerabilities/mds").chmod(0)
    proc = subprocess.run(as_nobody(CLI + ["check", "--root", str(root), "--only", "cpu.vulnerabilities", "-f",
                                           "json"]), capture_output=True, text=True, timeout=120, cwd="/")
    (result,) = json.loads(proc.stdout)["checks"]
    assert (result["id"], result["status"]) == ("cpu.vulnerabilities", "warn")
    assert result["evidence"]["unreadable"] == ["mds: Permission denied"]
    assert "mds" not in result["evidence"]["entries"]


@pytest.mark.parametrize("how, status, summary", [
    ("as it is", "pass", "arm64: /dev/kvm present (EL2 is not visible in cpuinfo)"),
    ("removed", "skip", "arm64: virtualization support cannot be read from cpuinfo"),
    ("denied", "skip", "permission denied reading /dev/kvm"),
])
def test_arm64_dev_kvm_absent_is_not_denied(how, status, summary, public_tmp):
    root = materialize("arm64-kvm", public_tmp)
    if how == "removed":
        (root / "dev/kvm").unlink()
    if how == "denied":
        (root / "dev").chmod(0o700)  # nobody may not look inside /dev
    proc = subprocess.run(as_nobody(CLI + ["check", "--root", str(root), "--only", "cpu.virt-flags", "-f", "json"]),
                          capture_output=True, text=True, timeout=120, cwd="/")
    (result,) = json.loads(proc.stdout)["checks"]
    assert (result["id"], result["status"], result["summary"]) == ("cpu.virt-flags", status, summary)


def test_dev_kvm_is_asked_for_on_arm64_only(tmp_path):
    host = Host(str(materialize("intel-baremetal-vmx", tmp_path)))
    Facts(host).call(cpu.virt_flags.func)
    assert "/dev/kvm" not in host.reads


@pytest.mark.parametrize("release, features, vulnerabilities_dir, reports", [
    ("4.4.0", "esan3 zarch", True, False),  # the release decides
    ("4.19.0", "esan3 zarch", False, True),
    (None, "esan3 zarch vx vxd vxe gs", False, True),  # hwcaps newer than 'sie'
    (None, "esan3 zarch vx", True, True),  # /sys/devices/system/cpu/vulnerabilities: Linux >= 4.15
    (None, "esan3 zarch vx", False, False),
])
def test_s390_reports_sie(release, features, vulnerabilities_dir, reports, tmp_path):
    if vulnerabilities_dir:
        (tmp_path / "sys/devices/system/cpu/vulnerabilities").mkdir(parents=True)
    version = parse_kernel_release(release) if release else None
    found = s390_reports_sie(Host(str(tmp_path)), version, parse_cpuinfo(f"features : {features}\n"))
    assert found.get() is reports


def test_cpu_facts_on_a_captured_s390_lpar(tmp_path):
    facts = Facts(Host(str(materialize("s390x-lpar", tmp_path))))
    assert facts.get("s390_reports_sie").get() is True
    out = facts.call(cpu.virt_flags.func)
    assert (out.status.value, out.summary) == ("pass", "SIE interpretive execution (sie) present")


def test_vendor_for_the_microcode_package_is_read_when_asked(tmp_path):
    host = Host(str(materialize("vuln-mitigated", tmp_path)))
    facts = Facts(host)
    out = facts.call(cpu.cpu_vulnerabilities.func)
    assert out.status.value == "pass" and "/proc/cpuinfo" not in host.reads
    assert facts.get("cpu_vendor_id").get() == "GenuineIntel"

