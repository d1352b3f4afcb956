# SPDX-License-Identifier: GPL-2.0-or-later
"""Firmware: has the BIOS/UEFI left VT-x/AMD-V enabled?"""
from __future__ import annotations

from typing import Dict, List, Optional

from kvmcheck.context import Context
from kvmcheck.model import Outcome
from kvmcheck.parsers.msr import MSR_IA32_FEATURE_CONTROL, MSR_VM_CR, amd_vm_cr, intel_feature_control, msr_value
from kvmcheck.registry import check

SETTING = {"GenuineIntel": "Intel Virtualization Technology (VT-x)", "AuthenticAMD": "SVM Mode",
           "HygonGenuine": "SVM Mode"}


def _read_msr(ctx: Context, msr: int) -> Optional[int]:
    try:
        raw = ctx.host.read_device_at("/dev/cpu/0/msr", msr, 8)
    except OSError:
        return None  # no msr driver ('modprobe msr'), not root, or the MSR does not exist
    return msr_value(raw)


def _raw_cpuid_has(ctx: Context, flag: str) -> Optional[bool]:
    """Does the CPU itself (not the kernel's cleaned-up flags) report vmx/svm?

    /dev/cpu/0/cpuid first (cheap); py-cpuinfo only as a fallback, lazily: it
    re-executes Python in a subprocess and costs over a second.
    """
    leaf, reg, bit = (1, 2, 5) if flag == "vmx" else (0x80000001, 2, 2)
    regs = ctx.cpuid(leaf)
    if regs is not None:
        return bool(regs[reg] & (1 << bit))
    if not ctx.host.live:
        return None
    try:
        import cpuinfo  # py-cpuinfo

        # _get_cpu_info_from_cpuid runs CPUID in a child Python, so a crash there cannot kill kvmcheck.
        info = cpuinfo.cpuinfo._get_cpu_info_from_cpuid()  # type: ignore[attr-defined]
    except Exception:
        return None
    flags = info.get("flags") if isinstance(info, dict) else None
    return None if not flags else flag in flags


@check("firmware.vt-enabled", "VT enabled in firmware", reads=(
    "/proc/cpuinfo", "/dev/cpu/0/msr", "/dev/cpu/0/cpuid", "/dev/kmsg", "/var/log/dmesg", "/var/log/kern.log",
    "/var/log/messages", "/sys/module/kvm_intel", "/sys/module/kvm_amd",
))
def vt_enabled(ctx: Context) -> Outcome:
    """The BIOS/UEFI has not disabled VT-x or AMD-V (x86 only).

    What, in order of strength: the kernel log ("VMX (outside TXT) disabled by
    BIOS", "kvm: disabled by bios"); MSR IA32_FEATURE_CONTROL (0x3a, Intel) or
    VM_CR (0xc0010114, AMD) through /dev/cpu/0/msr; kvm_intel/kvm_amd being
    loaded (they refuse to load when VT is off); raw CPUID compared with the
    kernel's flags (Linux >= 5.6 hides vmx when firmware locked it off).
    Offline roots: only the log files they hold.

    Why: with VT off in firmware, no kernel setting can turn it on.

    Fix: enable the option in the firmware setup and power-cycle.
    """
    if ctx.family() != "x86":
        return Outcome.skipped(f"firmware VT switch applies to x86 only ({ctx.arch()[0] or 'architecture unknown'})")
    cpu = ctx.cpuinfo()
    if cpu is None:
        return Outcome.skipped("no /proc/cpuinfo in this root")
    vendor = cpu.first("vendor_id") or ""
    flag = "svm" if vendor in ("AuthenticAMD", "HygonGenuine") else "vmx"
    has_flag = any(flag in s for s in cpu.x86_flags)
    setting = SETTING.get(vendor, "the CPU virtualization option")
    fix = f"Reboot into the BIOS/UEFI setup, enable '{setting}', save and power-cycle (a warm reboot may keep the lock)."
    log, log_sources = ctx.kernel_log()
    evidence: Dict[str, object] = {"flag": flag, "flag_present": has_flag, "log_sources": log_sources}

    if log.firmware_disabled:
        evidence["log_lines"] = list(log.firmware_disabled)
        return Outcome.failed("the kernel log says firmware disabled VT",
                              "The kernel reported at boot: " + " | ".join(log.firmware_disabled), fix, **evidence)

    virt = ctx.virt()
    if virt.in_guest:
        evidence["hypervisor"] = virt.vendor
        return Outcome.skipped(
            f"running as a {virt.vendor} guest: the outer hypervisor, not firmware, controls VT",
            "Inside a VM there is no firmware VT switch to read; whether vmx/svm is offered is the outer "
            "hypervisor's choice (see cpu.virt-flags).", **evidence)

    if ctx.host.live:
        msr = _read_msr(ctx, MSR_VM_CR if flag == "svm" else MSR_IA32_FEATURE_CONTROL)
        if msr is not None:
            evidence["msr"] = hex(msr)
            state = amd_vm_cr(msr) if flag == "svm" else intel_feature_control(msr)
            if state.disabled:
                return Outcome.failed("firmware disabled VT (read from the MSR)", state.explanation + ".", fix,
                                      **evidence)
            return Outcome.passed(state.explanation, **evidence)

    mods = ctx.modules()
    vendor_mod = "kvm_amd" if flag == "svm" else "kvm_intel"
    if vendor_mod in mods:
        evidence["module"] = vendor_mod
        return Outcome.passed(f"{vendor_mod} is {mods[vendor_mod]}, which it can only be with VT enabled", **evidence)

    if not has_flag and ctx.host.live:
        raw = _raw_cpuid_has(ctx, flag)
        evidence["cpuid_has_flag"] = raw
        if raw:
            return Outcome.failed(
                f"the CPU has {flag} but the kernel hid it: firmware disabled VT",
                f"CPUID reports {flag}, yet /proc/cpuinfo does not list it. Linux >= 5.6 clears the flag when firmware "
                "locked VT off (arch/x86/kernel/cpu/feat_ctl.c).", fix, **evidence)
        if raw is False:
            return Outcome.failed(f"the CPU itself reports no {flag}",
                                  "CPUID does not list the extension: the processor lacks it, or firmware hides it "
                                  "from CPUID too.", fix + " If the option does not exist, the CPU has no VT.",
                                  **evidence)

    kv = ctx.kernel_version()
    if has_flag and flag == "vmx" and kv and kv.version >= (5, 6, 0):
        evidence["kernel"] = kv.release
        return Outcome.passed("vmx listed by a kernel >= 5.6, which hides it when firmware disabled VMX", **evidence)
    reasons: List[str] = []
    if not ctx.host.live:
        reasons.append("offline root: MSRs and CPUID belong to the running kernel")
    if not log_sources:
        reasons.append("no kernel log was readable")
    reasons.append("/dev/cpu/0/msr unreadable (as root: 'modprobe msr')")
    return Outcome.skipped("cannot tell whether firmware enabled VT", "; ".join(reasons) + ".", **evidence)
