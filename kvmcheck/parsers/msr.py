# SPDX-License-Identifier: GPL-2.0-or-later
"""Decode the model-specific registers that say whether firmware left VT on."""
from __future__ import annotations

import struct
from typing import Optional

from kvmcheck.core.record import Record

MSR_IA32_FEATURE_CONTROL = 0x3A  # Intel SDM vol. 4, table 2-2
MSR_VM_CR = 0xC0010114  # AMD APM vol. 2, section 15.30.1


class VtState(Record):
    disabled: bool  # firmware switched VT off (no kernel setting can turn it back on)
    locked: bool
    explanation: str


def msr_value(raw: bytes) -> Optional[int]:
    """An MSR as read from /dev/cpu/N/msr: 8 little-endian bytes (anything else: None)."""
    return struct.unpack("<Q", raw)[0] if len(raw) == 8 else None


def intel_feature_control(value: int) -> VtState:
    # Bit 0 locks the register until reset; bit 2 enables VMX outside SMX. Locked with bit 2 clear
    # means firmware disabled VT-x. Unlocked: Linux >= 5.6 sets and locks it itself (feat_ctl.c).
    locked, enabled = bool(value & 1), bool(value & 4)
    if locked and not enabled:
        return VtState(True, True, f"IA32_FEATURE_CONTROL = {value:#x}: locked with 'VMX outside SMX' clear")
    if enabled:
        return VtState(False, locked, f"IA32_FEATURE_CONTROL = {value:#x}: VMX enabled" + (" and locked" if locked else ""))
    return VtState(False, False, f"IA32_FEATURE_CONTROL = {value:#x}: not locked (the kernel enables VMX)")


def amd_vm_cr(value: int) -> VtState:
    # Bit 4 SVMDIS: EFER.SVME cannot be set; bit 3 LOCK makes SVMDIS read-only until reset.
    disabled, locked = bool(value & (1 << 4)), bool(value & (1 << 3))
    if disabled:
        return VtState(True, locked, f"VM_CR = {value:#x}: SVMDIS set" + (" and locked" if locked else ""))
    return VtState(False, locked, f"VM_CR = {value:#x}: SVM not disabled")
