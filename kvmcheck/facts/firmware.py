# SPDX-License-Identifier: GPL-2.0-or-later
"""What the CPU itself says about VT, below the kernel's cleaned-up flags: its MSRs and raw CPUID."""
from __future__ import annotations

from typing import Dict, Optional

from kvmcheck.facts import Later, fact
from kvmcheck.facts import system  # noqa: F401 - family and cpuid, which these are computed from
from kvmcheck.parsers.msr import MSR_IA32_FEATURE_CONTROL, MSR_VM_CR, msr_value

MSRS = {"feature_control": MSR_IA32_FEATURE_CONTROL, "vm_cr": MSR_VM_CR}


@fact(reads=("/dev/cpu/0/msr",))
def vt_msrs(host, family) -> Dict[str, Optional[int]]:
    """IA32_FEATURE_CONTROL (Intel) and VM_CR (AMD) of CPU 0; {} offline or off x86, None where unreadable
    (no msr driver: 'modprobe msr'; not root; or the other vendor's MSR, which raises EIO)."""
    if not host.live or family != "x86":
        return {}
    found: Dict[str, Optional[int]] = {}
    for name, msr in MSRS.items():
        try:
            found[name] = msr_value(host.read_device_at("/dev/cpu/0/msr", msr, 8))
        except OSError:
            found[name] = None
    return found


@fact(uses=("cpuid",))
def raw_cpu_flags(host, facts) -> Later:
    """Later: does the CPU itself (CPUID, not /proc/cpuinfo) report vmx and svm? {"vmx": bool, "svm": bool}, or
    None when it cannot be asked.

    /dev/cpu/0/cpuid first (cheap); py-cpuinfo only as a fallback, and only when a check asks: it
    re-executes Python in a subprocess and costs over a second.
    """
    def ask() -> Optional[Dict[str, bool]]:
        regs = facts.get("cpuid")
        leaf1, ext = regs.get((1, 0)), regs.get((0x80000001, 0))
        if leaf1 is not None or ext is not None:  # CPUID.1:ECX[5] vmx, CPUID.80000001h:ECX[2] svm
            return {"vmx": None if leaf1 is None else bool(leaf1[2] & (1 << 5)),
                    "svm": None if ext is None else bool(ext[2] & (1 << 2))}
        if not host.live:
            return None
        try:
            import cpuinfo  # py-cpuinfo

            # _get_cpu_info_from_cpuid runs CPUID in a child Python, so a crash there cannot kill kvmcheck.
            info = cpuinfo.cpuinfo._get_cpu_info_from_cpuid()  # type: ignore[attr-defined]
        except Exception:
            return None
        flags = info.get("flags") if isinstance(info, dict) else None
        return None if not flags else {"vmx": "vmx" in flags, "svm": "svm" in flags}

    return Later(ask)
