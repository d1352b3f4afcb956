# SPDX-License-Identifier: GPL-2.0-or-later
"""Kernel log lines that tell whether firmware disabled VT, and which hypervisor booted us.

Input is either /dev/kmsg records (``6,123,456789,-;text``) or syslog-style
files (/var/log/dmesg, kern.log, messages); only the message text matters.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

# Each pattern comes from the kernel source that prints it.
FIRMWARE_DISABLED = (
    # arch/x86/kernel/cpu/feat_ctl.c (Linux >= 5.6): IA32_FEAT_CTL locked without VMX.
    # "VMX (%s TXT) disabled by BIOS": "inside" on hosts booted through Intel TXT (tboot).
    pattern(r"VMX \((?:inside|outside) TXT\) disabled by BIOS"),
    pattern(r"VMX not enabled \(by BIOS\) in MSR_IA32_FEAT_CTL"),
    # arch/x86/kvm/x86.c before 6.x, printed by kvm_intel/kvm_amd when hardware_setup finds VT off.
    pattern(r"kvm: disabled by bios", re.IGNORECASE),
    # arch/x86/kvm/svm/svm.c: VM_CR.SVMDIS set by firmware.
    pattern(r"SVM (?:is )?disabled \(by BIOS\)", re.IGNORECASE),
    # Not "SVM not supported by CPU": kvm_amd prints it in every VM without nested SVM too.
)
_HYPERVISOR = pattern(r"Hypervisor detected: (.+)$")
_TDX = pattern(r"virt/tdx: .*$")  # arch/x86/virt/vmx/tdx/tdx.c, pr_fmt "virt/tdx: "


class KernelLogFacts(Record):
    firmware_disabled: Tuple[str, ...]  # the lines that say so
    hypervisor: Optional[str]  # from arch/x86/kernel/cpu/hypervisor.c "Hypervisor detected: KVM"
    tdx: Tuple[str, ...] = ()  # Intel TDX module lines ("virt/tdx: module initialized", errors)


_SYSLOG_PREFIX = pattern(r"^.*?\bkernel: ")  # "Jan  1 00:00:00 host kernel: ..." (rsyslog, journal exports)
_TIMESTAMP = pattern(r"^\[\s*\d+\.\d+\]\s*")  # dmesg's "[    0.021044] "


def _message(line: str) -> str:
    # /dev/kmsg: "prio,seq,usec,flags[,...];message"
    head, sep, rest = line.partition(";")
    if sep and re.fullmatch(r"\d+,\d+,\d+,[^;]*", head):
        line = rest
    line = _SYSLOG_PREFIX.sub("", line, count=1)
    return _TIMESTAMP.sub("", line, count=1)


def parse_kernel_log(text: str) -> KernelLogFacts:
    # dicts as ordered sets: a "not in list" test made a log of many distinct such lines quadratic
    disabled: Dict[str, None] = {}
    tdx: Dict[str, None] = {}
    hypervisor = None
    for raw in text.splitlines():
        # Every pattern above holds "bios" (in some case), "Hypervisor detected: " or "virt/tdx: ": a line
        # without them is skipped before its prefixes are taken apart (a boot log has thousands of lines).
        if "bios" not in raw.lower() and "Hypervisor detected: " not in raw and "virt/tdx: " not in raw:
            continue
        msg = _message(raw).strip()
        if any(rx.search(msg) for rx in FIRMWARE_DISABLED):
            disabled.setdefault(msg)
        m = _HYPERVISOR.search(msg)
        if m:
            hypervisor = m.group(1).strip()
        m = _TDX.search(msg)
        if m:
            tdx.setdefault(m.group(0).strip())
    return KernelLogFacts(tuple(disabled), hypervisor, tuple(tdx))
