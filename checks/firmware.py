# SPDX-License-Identifier: GPL-2.0-or-later
"""Firmware: has the BIOS/UEFI left VT-x/AMD-V enabled?"""
from __future__ import annotations

from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts import firmware  # noqa: F401 - the facts judged here
from kvmcheck.parsers.msr import amd_vm_cr, intel_feature_control

SETTING = {"GenuineIntel": "Intel Virtualization Technology (VT-x)", "AuthenticAMD": "SVM Mode",
           "HygonGenuine": "SVM Mode"}


def _fix(vendor: str) -> str:
    setting = SETTING.get(vendor, "the CPU virtualization option")
    return f"Reboot into the BIOS/UEFI setup, enable '{setting}', save and power-cycle (a warm reboot may keep the lock)."


def _hidden_flag(flag: str, raw: object, fix: str, evidence: dict) -> object:
    """The verdict of raw CPUID when the kernel lists no flag (None when CPUID could not be asked)."""
    if raw:
        return Outcome.failed(
            f"the CPU has {flag} but the kernel hid it: firmware disabled VT",
            f"CPUID reports {flag}, yet /proc/cpuinfo does not list it. Linux >= 5.6 clears the flag when firmware "
            "locked VT off (arch/x86/kernel/cpu/feat_ctl.c).", fix, **evidence)
    if raw is False:
        return Outcome.failed(f"the CPU itself reports no {flag}",
                              "CPUID does not list the extension: the processor lacks it, or firmware hides it "
                              "from CPUID too.", fix + " If the option does not exist, the CPU has no VT.", **evidence)
    return None


POWER_CYCLE_NOTE = ("configured in firmware, not yet in effect: power the machine off and on; a warm reboot may not "
                    "apply it")


def _enabled_since(vt_msrs, flag: str, evidence: dict) -> bool:
    """Whether CPU 0's MSR, read now, says VT enabled and locked although the kernel log says firmware disabled
    it: the switch was turned on in the setup, and the lock (kept across a warm reset) still holds the old
    state elsewhere until the machine is powered off.  vt_msrs is empty offline: then this is never said."""
    msr = vt_msrs.get("vm_cr" if flag == "svm" else "feature_control")
    if msr is None:
        return False
    state = amd_vm_cr(msr) if flag == "svm" else intel_feature_control(msr)
    evidence.update(msr=hex(msr), msr_state=state.explanation)
    return state.locked and not state.disabled


def _undecided(live: bool, log_sources: tuple, evidence: dict) -> Outcome:
    reasons = ["offline root: MSRs and CPUID belong to the running kernel"] if not live else []
    reasons += ["no kernel log was readable"] if not log_sources else []
    reasons.append("/dev/cpu/0/msr unreadable (as root: 'modprobe msr')")
    return Outcome.skipped("cannot tell whether firmware enabled VT", "; ".join(reasons) + ".", **evidence)


@check("firmware.vt-enabled", "VT enabled in firmware")
def vt_enabled(family, arch, cpuinfo, kernel_log, virt, vt_msrs, modules, raw_cpu_flags, kernel_version,
               live) -> Outcome:
    """The BIOS/UEFI has not disabled VT-x or AMD-V (x86 only).

    What, in order of strength: the kernel log ("VMX (outside TXT) disabled by
    BIOS", "kvm: disabled by bios"); MSR IA32_FEATURE_CONTROL (0x3a, Intel) or
    VM_CR (0xc0010114, AMD) through /dev/cpu/0/msr; kvm_intel/kvm_amd being
    loaded (they refuse to load when VT is off); raw CPUID compared with the
    kernel's flags (Linux >= 5.6 hides vmx when firmware locked it off).
    Offline roots: only the log files they hold.

    When the log says disabled but the MSR, read now, says enabled and
    locked, the change is pending a power cycle.

    Why: with VT off in firmware, no kernel setting can turn it on.

    Fix: enable the option in the firmware setup and power-cycle.
    """
    if family != "x86":
        return Outcome.skipped(f"firmware VT switch applies to x86 only ({arch.name or 'architecture unknown'})")
    if cpuinfo is None:
        return Outcome.skipped("no /proc/cpuinfo in this root")
    vendor = cpuinfo.first("vendor_id") or ""
    flag = "svm" if vendor in ("AuthenticAMD", "HygonGenuine") else "vmx"
    has_flag = any(flag in s for s in cpuinfo.x86_flags)
    evidence = {"flag": flag, "flag_present": has_flag, "log_sources": list(kernel_log.sources)}
    if kernel_log.facts.firmware_disabled:
        evidence["log_lines"] = list(kernel_log.facts.firmware_disabled)
        pending = not virt.in_guest and _enabled_since(vt_msrs, flag, evidence)
        outcome = Outcome.failed("the kernel log says firmware disabled VT", "The kernel reported at boot: "
                                 + " | ".join(kernel_log.facts.firmware_disabled), _fix(vendor), **evidence)
        return outcome.awaiting("power-cycle", POWER_CYCLE_NOTE) if pending else outcome
    if virt.in_guest:
        evidence["hypervisor"] = virt.vendor
        return Outcome.skipped(
            f"running as a {virt.vendor} guest: the outer hypervisor, not firmware, controls VT",
            "Inside a VM there is no firmware VT switch to read; whether vmx/svm is offered is the outer "
            "hypervisor's choice (see cpu.virt-flags).", **evidence)
    msr = vt_msrs.get("vm_cr" if flag == "svm" else "feature_control")
    if msr is not None:
        evidence["msr"] = hex(msr)
        state = amd_vm_cr(msr) if flag == "svm" else intel_feature_control(msr)
        if state.disabled:
            return Outcome.failed("firmware disabled VT (read from the MSR)", state.explanation + ".", _fix(vendor),
                                  **evidence)
        return Outcome.passed(state.explanation, **evidence)
    vendor_mod = "kvm_amd" if flag == "svm" else "kvm_intel"
    if vendor_mod in modules:
        evidence["module"] = vendor_mod
        return Outcome.passed(f"{vendor_mod} is {modules[vendor_mod]}, which it can only be with VT enabled", **evidence)
    if not has_flag and live:
        raw = (raw_cpu_flags.get() or {}).get(flag)
        evidence["cpuid_has_flag"] = raw
        hidden = _hidden_flag(flag, raw, _fix(vendor), evidence)
        if hidden:
            return hidden
    if has_flag and flag == "vmx" and kernel_version and kernel_version.version >= (5, 6, 0):
        evidence["kernel"] = kernel_version.release
        return Outcome.passed("vmx listed by a kernel >= 5.6, which hides it when firmware disabled VMX", **evidence)
    return _undecided(live, kernel_log.sources, evidence)
