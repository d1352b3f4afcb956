"""checks/firmware.py (firmware.vt-enabled) judged from fact records, one row per branch; no root needed."""
from __future__ import annotations

import pytest

from kvmcheck.checks import firmware
from kvmcheck.facts import Later
from kvmcheck.facts.system import Arch, KernelLog
from kvmcheck.parsers.cpuinfo import parse_cpuinfo
from kvmcheck.parsers.hypervisor import VirtFacts
from kvmcheck.parsers.kernel_log import parse_kernel_log
from kvmcheck.parsers.kernel_version import parse_kernel_release

INTEL_VMX = parse_cpuinfo("processor : 0\nvendor_id : GenuineIntel\nflags : fpu vmx lm\n")
INTEL_NO_VMX = parse_cpuinfo("processor : 0\nvendor_id : GenuineIntel\nflags : fpu lm\n")
AMD_SVM = parse_cpuinfo("processor : 0\nvendor_id : AuthenticAMD\nflags : fpu svm lm\n")
AMD_NO_SVM = parse_cpuinfo("processor : 0\nvendor_id : AuthenticAMD\nflags : fpu lm\n")
NO_LOG = KernelLog(parse_kernel_log(""), ())
QUIET_LOG = KernelLog(parse_kernel_log("[    0.000000] Linux version 6.1.0\n"), ("/dev/kmsg",))
BIOS_LOG = KernelLog(parse_kernel_log("[    0.021044] x86/cpu: VMX (outside TXT) disabled by BIOS\n"), ("/dev/kmsg",))
BARE = VirtFacts(None, "DMI: Supermicro", False)


def never() -> Later:
    return Later(lambda: pytest.fail("raw CPUID was asked for on a branch that does not need it"))


def vt_enabled(cpuinfo=INTEL_VMX, family="x86", arch="x86_64", kernel_log=QUIET_LOG, virt=BARE, msrs=None,
               modules=None, raw=None, release="6.1.0", live=True):  # type: ignore[no-untyped-def]
    return firmware.vt_enabled.func(
        family=family, arch=Arch(arch, "uname"), cpuinfo=cpuinfo, kernel_log=kernel_log, virt=virt,
        vt_msrs=msrs or {}, modules=modules or {}, raw_cpu_flags=raw or never(),
        kernel_version=parse_kernel_release(release) if release else None, live=live)


CASES = [  # (case, arguments, status, summary)
    ("arm64", dict(family="arm64", arch="aarch64"), "skip", "firmware VT switch applies to x86 only (aarch64)"),
    ("unknown arch", dict(family="unknown", arch=None), "skip",
     "firmware VT switch applies to x86 only (architecture unknown)"),
    ("no cpuinfo", dict(cpuinfo=None), "skip", "no /proc/cpuinfo in this root"),
    ("the log says so", dict(cpuinfo=INTEL_NO_VMX, kernel_log=BIOS_LOG), "fail",
     "the kernel log says firmware disabled VT"),
    ("a guest", dict(virt=VirtFacts("KVM", "CPUID", True)), "skip",
     "running as a KVM guest: the outer hypervisor, not firmware, controls VT"),
    ("Intel MSR locked off", dict(cpuinfo=INTEL_NO_VMX, msrs={"feature_control": 0x1}), "fail",
     "firmware disabled VT (read from the MSR)"),
    ("Intel MSR on", dict(msrs={"feature_control": 0x5, "vm_cr": None}), "pass",
     "IA32_FEATURE_CONTROL = 0x5: VMX enabled and locked"),
    ("AMD MSR SVMDIS", dict(cpuinfo=AMD_NO_SVM, msrs={"feature_control": None, "vm_cr": 0x18}), "fail",
     "firmware disabled VT (read from the MSR)"),
    ("AMD MSR on", dict(cpuinfo=AMD_SVM, msrs={"vm_cr": 0x0}), "pass", "VM_CR = 0x0: SVM not disabled"),
    ("kvm_intel loaded", dict(modules={"kvm": "loaded", "kvm_intel": "loaded"}), "pass",
     "kvm_intel is loaded, which it can only be with VT enabled"),
    ("CPUID has vmx, the kernel hid it", dict(cpuinfo=INTEL_NO_VMX, raw=Later(lambda: {"vmx": True, "svm": False})),
     "fail", "the CPU has vmx but the kernel hid it: firmware disabled VT"),
    ("CPUID has no svm", dict(cpuinfo=AMD_NO_SVM, raw=Later(lambda: {"vmx": False, "svm": False})), "fail",
     "the CPU itself reports no svm"),
    ("CPUID cannot be asked", dict(cpuinfo=INTEL_NO_VMX, raw=Later(lambda: None)), "skip",
     "cannot tell whether firmware enabled VT"),
    ("vmx listed by a kernel >= 5.6", dict(release="5.14.0-427.13.1.el9_4.x86_64"), "pass",
     "vmx listed by a kernel >= 5.6, which hides it when firmware disabled VMX"),
    ("vmx listed by an older kernel", dict(release="5.4.0", live=False, kernel_log=NO_LOG), "skip",
     "cannot tell whether firmware enabled VT"),
    ("svm offline", dict(cpuinfo=AMD_SVM, live=False, kernel_log=NO_LOG), "skip",
     "cannot tell whether firmware enabled VT"),
    ("no vmx offline: CPUID is not asked", dict(cpuinfo=INTEL_NO_VMX, live=False, release=None), "skip",
     "cannot tell whether firmware enabled VT"),
]


@pytest.mark.parametrize("case, args, status, summary", CASES, ids=[c[0] for c in CASES])
def test_vt_enabled_judge(case, args, status, summary):
    out = vt_enabled(**args)
    assert (out.status.value, out.summary) == (status, summary)


def test_the_fix_names_the_vendors_firmware_setting():
    intel = vt_enabled(cpuinfo=INTEL_NO_VMX, kernel_log=BIOS_LOG)
    amd = vt_enabled(cpuinfo=AMD_NO_SVM, msrs={"vm_cr": 0x18})
    assert "enable 'Intel Virtualization Technology (VT-x)'" in intel.remediation
    assert "enable 'SVM Mode'" in amd.remediation
    assert intel.evidence == {"flag": "vmx", "flag_present": False, "log_sources": ["/dev/kmsg"],
                              "log_lines": ["x86/cpu: VMX (outside TXT) disabled by BIOS"]}


def test_undecided_says_why():
    offline = vt_enabled(cpuinfo=AMD_SVM, live=False, kernel_log=NO_LOG)
    live = vt_enabled(cpuinfo=INTEL_NO_VMX, raw=Later(lambda: None))
    assert offline.detail == ("offline root: MSRs and CPUID belong to the running kernel; no kernel log was readable; "
                              "/dev/cpu/0/msr unreadable (as root: 'modprobe msr').")
    assert live.detail == "/dev/cpu/0/msr unreadable (as root: 'modprobe msr')."
    assert live.evidence["cpuid_has_flag"] is None


@pytest.mark.parametrize("module", ["kvmcheck.checks.firmware", "kvmcheck.facts.firmware", "kvmcheck.checks.cpu",
                                    "kvmcheck.facts.cpu"])
def test_the_module_imports_alone(module):
    """A fact module registers the shared facts it is computed from itself (no import order to rely on)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
