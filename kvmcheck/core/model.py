# SPDX-License-Identifier: GPL-2.0-or-later
"""Statuses, check outcomes, results and the report: plain data, no I/O."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from kvmcheck.core.status import ExitStatus  # noqa: F401 - defined apart: the CLI needs it without this module
from kvmcheck.parsers import pattern

# The schema versions, all in one place (reports/*.schema.json describe them).
# Host report 2: the verdict "unknown" and the fields essential, undecided, verdict_reason, fix_first
# (report) and cause, caused_by, blocked_by (result).  A consumer validating version 1 would reject "unknown".
SCHEMA_VERSION = 2  # of the host report (--format json)
FLEET_SCHEMA_VERSION = 2  # of 'kvmcheck fleet --format json' (2: verdict unknown, totals unknown and future,
# causes by cause key with values)
DIFF_SCHEMA_VERSION = 1  # of 'kvmcheck diff --format json'
READ_REPORT_VERSIONS = (1, 2)  # host reports fleet and diff read (1 has no verdict "unknown", no cause)
READ_FLEET_VERSIONS = (1, 2)  # fleet reports diff reads


class Status(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


# The one severity order, most severe first: what a person should look at first, and how fleet and diff
# rank statuses.  A failure is a finding about the host; an error is kvmcheck's own trouble (it decided
# nothing), so it ranks after the findings it could not make.
SEVERITY: Tuple[str, ...] = ("fail", "error", "warn", "skip", "pass")
PROBLEMS = frozenset({Status.FAIL, Status.ERROR, Status.WARN})  # statuses a cause can have
# The same order with kvmcheck's own trouble first, for lists of hosts per status in a fleet: a host whose
# run crashed (error) decided nothing, and is named before the hosts whose findings are known.
CRASHES_FIRST: Tuple[str, ...] = ("error",) + tuple(s for s in SEVERITY if s != "error")


def severity(status: Any) -> int:
    """Rank of a status (a Status or its value) in SEVERITY: 0 is the most severe; unknown values last."""
    value = getattr(status, "value", status)
    return SEVERITY.index(value) if value in SEVERITY else len(SEVERITY)


# A number in a summary: digits with their decimal point, digit groups and exponent ("1.02e+06", "3,072",
# "0x1f", "v2"'s 2).  Every quantifier is over one character class in sequence: linear, no backtracking.
_NUMBER = pattern(r"(?:0[xX][0-9a-fA-F]+|[0-9]+(?:[.,][0-9]+)*(?:[eE][+-]?[0-9]+)?)")
CAUSE_KEY_MAX = 160  # characters of a derived cause key; a longer summary is cut


def cause_key(summary: str) -> str:
    """The stable key of a finding whose check gave none: its summary with every number masked as "#"
    and blanks collapsed ("guest ran at 8.04e+05 instructions/s" -> "guest ran at # instructions/s"), so
    that hosts with the same finding and different measurements share one key.  Pure; cut at
    CAUSE_KEY_MAX characters."""
    text = _NUMBER.sub("#", " ".join(str(summary)[:4 * CAUSE_KEY_MAX].split()))
    return text[:CAUSE_KEY_MAX]


class Verdict(str, enum.Enum):
    READY = "ready"
    NOT_READY = "not-ready"
    UNKNOWN = "unknown"  # nothing failed, but the evidence a "ready" needs is missing

    def __str__(self) -> str:
        return self.value


# A change that is configured but not yet in effect, by what makes it effective (issue 20): a module
# option written to modprobe.d while the module stays loaded, a kernel argument in the boot loader's
# configuration before the reboot, a user added to a group who has not logged in again.  The result keeps
# its status (the host still runs without the change); the report, the fix list and the fleet say which
# step is pending.  In the order an operator would take them (the last ones the most disruptive).
PENDING_KINDS: Tuple[str, ...] = ("service-restart", "module-reload", "relogin", "regenerate-bootloader",
                                  "reboot", "power-cycle")
PENDING_PREFIX = "configured, not yet in effect: "  # how every pending note begins


# Nagios plugin states by verdict: a ready host with warnings is WARNING (1).
NAGIOS_STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner adds id, title and timing."""

    status: Status
    summary: str
    detail: str = ""
    remediation: Optional[str] = None
    evidence: Dict[str, Any] = field(default_factory=dict)
    # A stable key for this kind of finding (fleet groups hosts by check id and cause), for example
    # "not-accelerated": never a measurement.  None: the runner derives one from the summary.
    cause: Optional[str] = None
    # The checks whose finding would explain this one (kvm.acceleration fails because cpu.virt-flags
    # found no VT-x): the runner keeps those that really found a problem in this run as caused_by.
    caused_by: Tuple[str, ...] = ()
    # A configured change not yet in effect (one of PENDING_KINDS) and what makes it effective, in words:
    # "configured, not yet in effect: reload kvm_intel (no guest may be running) or reboot".
    pending: Optional[str] = None
    pending_note: str = ""

    def __post_init__(self) -> None:
        if self.pending is not None and self.pending not in PENDING_KINDS:
            raise ValueError(f"pending must be one of {', '.join(PENDING_KINDS)}, not {self.pending!r}")

    def awaiting(self, kind: str, note: str) -> "Outcome":
        """This outcome, with a change that is configured but not yet in effect: kind is what makes it
        effective (PENDING_KINDS), note says which change and how ("configured, not yet in effect: ...").
        On an outcome already pending (a sysctl.d value and a kernel argument), the later step is kept (a
        reboot also reloads modules) and the notes are joined."""
        if self.pending is not None and self.pending_note:
            kind = max(self.pending, kind, key=PENDING_KINDS.index)
            if note.startswith(PENDING_PREFIX):
                note = note[len(PENDING_PREFIX):]
            note = f"{self.pending_note}; and {note}"
        return replace(self, pending=kind, pending_note=note)

    def keyed(self, cause: str) -> "Outcome":
        """This outcome with a stable cause key (see cause)."""
        return replace(self, cause=cause)

    def because(self, *check_ids: str) -> "Outcome":
        """This outcome, explained by these checks' findings when they have one (see caused_by)."""
        return replace(self, caused_by=self.caused_by + tuple(check_ids))

    @classmethod
    def passed(cls, summary: str, detail: str = "", **evidence: Any) -> "Outcome":
        return cls(Status.PASS, summary, detail, None, evidence)

    @classmethod
    def warned(cls, summary: str, detail: str, remediation: str, **evidence: Any) -> "Outcome":
        return cls(Status.WARN, summary, detail, remediation, evidence)

    @classmethod
    def failed(cls, summary: str, detail: str, remediation: str, **evidence: Any) -> "Outcome":
        return cls(Status.FAIL, summary, detail, remediation, evidence)

    @classmethod
    def skipped(cls, summary: str, detail: str = "", **evidence: Any) -> "Outcome":
        return cls(Status.SKIP, summary, detail, None, evidence)


@dataclass(frozen=True)
class Check:
    """A registered check: its public id, what it reads, and the function."""

    id: str
    title: str
    reads: Tuple[str, ...]
    func: Callable[..., Outcome]
    doc: str
    source: str  # the entry point (module) that registered it
    # Checks that must not have failed for this one to run its probe: when one did, this check is not run
    # and reports skip with blocked_by (one cause, one failure).
    requires: Tuple[str, ...] = ()
    live_only: bool = False  # needs the running kernel: on an offline root it has nothing to decide
    facts: Tuple[str, ...] = ()  # the facts it judges (its parameters); () for a check of the Context

    def __call__(self, ctx: Any) -> Outcome:
        """Judge: the facts it names, gathered through ctx.facts; a check of the Context gets ctx."""
        if self.facts or not _takes_ctx(self.func):
            return ctx.facts.call(self.func)
        return self.func(ctx)


def _takes_ctx(func: Callable[..., Any]) -> bool:
    from kvmcheck.facts import _parameters

    return _parameters(func) == ("ctx",)


@dataclass(frozen=True)
class Result:
    """One check's result in a report: a value.  The configuration and cause attribution make new Results
    (dataclasses.replace), never edit one."""

    id: str
    title: str
    status: Status
    summary: str
    detail: str = ""
    remediation: Optional[str] = None
    evidence: Dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0
    # Set by the configuration (kvmcheck.core.config): a severity override keeps what the check said in
    # original_status; an ignored result keeps its status, is shown, and does not count against the verdict.
    original_status: Optional[Status] = None
    ignored: bool = False
    ignore_reason: Optional[str] = None
    cause: Optional[str] = None  # stable key of the finding (not for pass)
    caused_by: List[str] = field(default_factory=list)  # failing checks this finding follows from
    blocked_by: List[str] = field(default_factory=list)  # failed prerequisites: the probe did not run
    pending: Optional[str] = None  # a configured change not yet in effect (PENDING_KINDS), see Outcome
    pending_note: str = ""

    def to_dict(self) -> Dict[str, Any]:
        data = {
            "id": self.id,
            "title": self.title,
            "status": self.status.value,
            "summary": self.summary,
            "detail": self.detail,
            "remediation": self.remediation,
            "evidence": self.evidence,
            "duration_ms": round(self.duration_ms, 3),
        }
        if self.original_status is not None:
            data["original_status"] = self.original_status.value
        if self.ignored:
            data["ignored"] = True
            data["ignore_reason"] = self.ignore_reason or ""
        if self.cause is not None and self.status is not Status.PASS:
            data["cause"] = self.cause
        if self.caused_by:
            data["caused_by"] = list(self.caused_by)
        if self.blocked_by:
            data["blocked_by"] = list(self.blocked_by)
        if self.pending is not None:
            data["pending"] = self.pending
            data["pending_note"] = self.pending_note
        return data


# The essential chain a "ready" needs evidence for, unless the profile names its own: the CPU can
# virtualize, the KVM driver is loaded, /dev/kvm is usable, and (on the running host) a guest ran.
DEFAULT_ESSENTIAL: Tuple[str, ...] = ("cpu.virt-flags", "kvm.modules", "kvm.device", "kvm.guest-run")


@dataclass
class Report:
    tool_version: str
    generated_at: str
    host: Dict[str, Any]
    checks: List[Result]
    strict: bool = False
    config: Optional[Dict[str, Any]] = None  # {"profile": name or None, "files": [...]} when one was used
    essential: Tuple[str, ...] = DEFAULT_ESSENTIAL
    # Why the root cannot be judged at all ("this root holds no installed system ..."), or None.
    no_system: Optional[str] = None
    live: bool = True
    live_only: Tuple[str, ...] = ()  # checks that need the running kernel (exempt offline)
    # What live migration depends on (kvmcheck.facts.migration.migration_block), or None when not gathered.
    migration: Optional[Dict[str, Any]] = None

    @property
    def summary(self) -> Dict[str, int]:
        counts = {s.value: 0 for s in Status}
        for r in self.checks:
            counts[r.status.value] += 1
        return counts

    @property
    def blocking(self) -> List[Result]:
        """Results that make the host not ready, most severe first (ignored results never do).

        A failure is a finding; an error decided nothing, so it makes the verdict unknown instead
        (see undecided)."""
        bad = {Status.FAIL} | ({Status.WARN} if self.strict else set())
        return sorted((r for r in self.checks if r.status in bad and not r.ignored),
                      key=lambda r: severity(r.status))

    @property
    def undecided(self) -> List[Result]:
        """What a "ready" would need and lacks: essential checks that were selected but could not decide
        (skip or error; a check that needs the running kernel is exempt on an offline root), and any
        check that errored (kvmcheck could not judge it)."""
        out = []
        for r in self.checks:
            if r.ignored or r.blocked_by:  # a blocked check is explained by the failure that blocked it
                continue
            essential_gap = (r.id in self.essential and r.status in (Status.SKIP, Status.ERROR)
                             and (self.live or r.id not in self.live_only))
            if essential_gap or r.status is Status.ERROR:
                out.append(r)
        return out

    @property
    def verdict(self) -> str:
        if self.blocking:
            return Verdict.NOT_READY.value
        if self.no_system or self.undecided or not any(
                r.status in (Status.PASS, Status.WARN) and not r.ignored for r in self.checks):
            return Verdict.UNKNOWN.value
        return Verdict.READY.value

    @property
    def ready(self) -> bool:
        return self.verdict == Verdict.READY.value

    @property
    def verdict_reason(self) -> str:
        """One sentence: why this verdict."""
        verdict = self.verdict
        if verdict == Verdict.NOT_READY.value:
            roots = self.fix_first
            n = len(self.blocking)
            return (f"{n} finding{'s block' if n != 1 else ' blocks'} KVM here; "
                    f"fix {', '.join(roots) if roots else 'the failures'} first" + self._pending_clause())
        if verdict == Verdict.UNKNOWN.value:
            if self.no_system:
                return self.no_system
            gaps = self.undecided
            if gaps:
                return "no evidence from " + ", ".join(f"{r.id} ({r.status.value}: {r.summary})"
                                                       for r in gaps) + self._pending_clause()
            return "no check found anything to judge" + self._pending_clause()
        essentials = [r.id for r in self.checks if r.id in self.essential and r.status is not Status.SKIP]
        return (("nothing blocks KVM; evidence from " + ", ".join(essentials)) if essentials else
                "nothing blocks KVM in the selected checks") + self._pending_clause()

    def _pending_clause(self) -> str:
        """"; pending reboot: iommu.enabled" for the configured changes not yet in effect, or ""."""
        return "".join(f"; pending {kind}: {', '.join(ids)}" for kind, ids in self.pending.items())

    @property
    def fix_first(self) -> List[str]:
        """The checks to act on first, by id: the root causes of a not-ready verdict (a finding that
        follows from another is left to its cause), or what an unknown verdict lacks evidence from."""
        if self.blocking:
            return [r.id for r in self.blocking if not r.caused_by]
        if self.verdict == Verdict.UNKNOWN.value:
            return [r.id for r in self.undecided]
        return []

    @property
    def pending(self) -> Dict[str, List[str]]:
        """The checks whose change is configured but not yet in effect, by what makes it effective
        (PENDING_KINDS order): {"reboot": ["iommu.enabled"], ...}; ignored results too (they are shown)."""
        out: Dict[str, List[str]] = {}
        for kind in PENDING_KINDS:
            ids = [r.id for r in self.checks if r.pending == kind]
            if ids:
                out[kind] = ids
        return out

    @property
    def exit_status(self) -> "ExitStatus":
        return {Verdict.READY.value: ExitStatus.READY, Verdict.NOT_READY.value: ExitStatus.NOT_READY}.get(
            self.verdict, ExitStatus.UNKNOWN)

    @property
    def nagios_code(self) -> int:
        """Nagios plugin semantics: CRITICAL (2) not ready, UNKNOWN (3) unknown, WARNING (1) a ready host
        with warnings (or one that only --strict's warnings make not ready), else OK (0).  Ignored results
        never raise the state."""
        verdict = self.verdict
        if verdict == Verdict.NOT_READY.value:  # CRITICAL, or WARNING when only --strict's warnings block
            return 2 if any(r.status is Status.FAIL for r in self.blocking) else 1
        if verdict == Verdict.UNKNOWN.value:
            return 3
        return 1 if any(r.status is Status.WARN and not r.ignored for r in self.checks) else 0

    def to_dict(self) -> Dict[str, Any]:
        data = {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "kvmcheck", "version": self.tool_version},
            "generated_at": self.generated_at,
            "host": self.host,
            "verdict": self.verdict,
            "verdict_reason": self.verdict_reason,
            "strict": self.strict,
            "essential": list(self.essential),
            "undecided": [r.id for r in self.undecided],
            "fix_first": self.fix_first,
            "summary": self.summary,
            "checks": [r.to_dict() for r in self.checks],
        }
        pending = self.pending
        if pending:
            data["pending"] = pending
        if self.config is not None:
            data["config"] = self.config
        if self.migration is not None:
            data["migration"] = self.migration
        return data
