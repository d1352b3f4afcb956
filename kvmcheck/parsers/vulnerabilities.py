# SPDX-License-Identifier: GPL-2.0-or-later
"""/sys/devices/system/cpu/vulnerabilities/* (Linux >= 4.15): one line per CPU bug.

The kernel writes ``Not affected``, ``Vulnerable[: reason]``, ``Mitigation: ...``
or ``Unknown: ...`` (arch/x86/kernel/cpu/bugs.c, drivers/base/cpu.c), sometimes
behind a ``KVM: `` prefix (itlb_multihit), with sub-states after ``;`` or ``,``
such as ``VMX: vulnerable`` (l1tf), ``BHI: Vulnerable, KVM: SW loop``
(spectre_v2) and ``SMT vulnerable`` / ``SMT disabled`` (l1tf, mds, mmio_stale_data,
tsx_async_abort, retbleed).  Old kernels (RHEL 7) also say ``Processor vulnerable``.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

NOT_AFFECTED = "not-affected"
MITIGATED = "mitigated"
VULNERABLE = "vulnerable"
UNKNOWN = "unknown"
OTHER = "other"  # text kvmcheck does not recognize: reported as is, never guessed at

_SMT = pattern(r"\bSMT (vulnerable|disabled|mitigated|Host state unknown)\b", re.IGNORECASE)
_LABEL = pattern(r"^[A-Za-z0-9_-]+: ")


class Vulnerability(Record):
    name: str
    text: str
    state: str  # NOT_AFFECTED, MITIGATED, VULNERABLE, UNKNOWN or OTHER (the overall verdict, first word)
    vulnerable_parts: Tuple[str, ...] = ()  # sub-states that say vulnerable: "VMX: vulnerable", "BHI: Vulnerable"
    smt: Optional[str] = None  # "vulnerable", "disabled", "mitigated", "host state unknown" or None
    kvm_covered: bool = False  # a "KVM: <mitigation>" part: guests are protected even if host user space is not

    @property
    def smt_vulnerable(self) -> bool:
        return self.smt == "vulnerable"

    @property
    def open_to_guests(self) -> bool:
        """Vulnerable as a whole, or a sub-state that guests can use (not one KVM covers by itself)."""
        if self.state == VULNERABLE:
            return True
        return bool(self.vulnerable_parts) and not self.kvm_covered


def _is_vulnerable(word: str) -> bool:
    w = word.strip().lower()
    return w.startswith("vulnerable") or w.startswith("processor vulnerable")


def parse_vulnerability(name: str, text: str) -> Vulnerability:
    """One file's content (only its first line counts)."""
    line = (text.strip().splitlines() or [""])[0].strip()
    body = line
    kvm_prefix = False
    if body.startswith("KVM: "):  # itlb_multihit: "KVM: Mitigation: Split huge pages", "KVM: Vulnerable"
        body = body[5:]
        kvm_prefix = True
    low = body.lower()
    if low.startswith("not affected"):
        state = NOT_AFFECTED
    elif _is_vulnerable(body):
        state = VULNERABLE
    elif low.startswith("mitigation"):
        state = MITIGATED
    elif low.startswith("unknown"):
        state = UNKNOWN
    else:
        state = OTHER
    parts = []
    kvm_covered = False
    # The head ("Mitigation: PTE Inversion") is the verdict; look at the sub-states after it.
    items = [i.strip() for chunk in body.split(";") for i in chunk.split(",")]
    for item in items[1:] if items else []:
        if not item or _SMT.fullmatch(item):
            continue
        label = _LABEL.match(item)
        value = item[label.end():] if label else item
        if item.startswith("KVM: ") and not _is_vulnerable(value):
            kvm_covered = True
        if label and _is_vulnerable(value):
            parts.append(item)
    m = _SMT.search(body)
    smt = m.group(1).lower() if m else None
    if kvm_prefix and state != VULNERABLE:
        kvm_covered = True
    return Vulnerability(name, line, state, tuple(parts), smt, kvm_covered)


def parse_vulnerabilities(files: Mapping[str, str]) -> Dict[str, Vulnerability]:
    """name -> Vulnerability for every file given (name -> content), sorted by name."""
    return {name: parse_vulnerability(name, files[name]) for name in sorted(files)}
