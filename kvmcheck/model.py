# SPDX-License-Identifier: GPL-2.0-or-later
"""Statuses, check outcomes, results and the report: plain data, no I/O."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

SCHEMA_VERSION = 1


class Status(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner adds id, title and timing."""

    status: Status
    summary: str
    detail: str = ""
    remediation: Optional[str] = None
    evidence: Dict[str, Any] = field(default_factory=dict)

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

    def __call__(self, ctx: Any) -> Outcome:
        return self.func(ctx)


@dataclass
class Result:
    id: str
    title: str
    status: Status
    summary: str
    detail: str = ""
    remediation: Optional[str] = None
    evidence: Dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0
    # Set by the configuration (kvmcheck.config): a severity override keeps what the check said in
    # original_status; an ignored result keeps its status, is shown, and does not count against the verdict.
    original_status: Optional[Status] = None
    ignored: bool = False
    ignore_reason: Optional[str] = None

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
        return data


@dataclass
class Report:
    tool_version: str
    generated_at: str
    host: Dict[str, Any]
    checks: List[Result]
    strict: bool = False
    config: Optional[Dict[str, Any]] = None  # {"profile": name or None, "files": [...]} when one was used

    @property
    def summary(self) -> Dict[str, int]:
        counts = {s.value: 0 for s in Status}
        for r in self.checks:
            counts[r.status.value] += 1
        return counts

    @property
    def blocking(self) -> List[Result]:
        """Results that make the host not ready, failures first (ignored results never do)."""
        bad = {Status.FAIL, Status.ERROR} | ({Status.WARN} if self.strict else set())
        order = [Status.FAIL, Status.ERROR, Status.WARN]
        return sorted((r for r in self.checks if r.status in bad and not r.ignored),
                      key=lambda r: order.index(r.status))

    @property
    def ready(self) -> bool:
        return not self.blocking

    @property
    def verdict(self) -> str:
        return "ready" if self.ready else "not-ready"

    def to_dict(self) -> Dict[str, Any]:
        data = {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "kvmcheck", "version": self.tool_version},
            "generated_at": self.generated_at,
            "host": self.host,
            "verdict": self.verdict,
            "strict": self.strict,
            "summary": self.summary,
            "checks": [r.to_dict() for r in self.checks],
        }
        if self.config is not None:
            data["config"] = self.config
        return data
