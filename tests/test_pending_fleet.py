# SPDX-License-Identifier: GPL-2.0-or-later
"""The fleet counts the hosts whose change is configured but not yet in effect (issue 20): by step, per host,
per cause; a newer report of a host takes its count back; the JSON follows the fleet schema."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_fleet import CLI, ago, validate_fleet
from test_pending import report, result
from kvmcheck.core.model import Status


def host_report(name: str, hours: float, *results) -> dict:
    doc = report(*results).to_dict()
    doc["host"]["hostname"] = name
    doc["generated_at"] = ago(hours)
    return doc


def write(folder: Path, file: str, doc: dict) -> None:
    (folder / file).write_text(json.dumps(doc))


def fleet(folder: Path, fmt: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["fleet", str(folder), "--format", fmt], capture_output=True, text=True)


def iommu(pending=None):
    return result("iommu.enabled", Status.FAIL, pending,
                  "configured, not yet in effect: reboot" if pending else "")


def nested(pending=None):
    return result("kvm.nested", Status.PASS, pending, "configured, not yet in effect: reload" if pending else "")


def test_the_fleet_counts_hosts_by_pending_step_per_host_and_per_cause(tmp_path):
    write(tmp_path, "a.json", host_report("a", 1, iommu("reboot"), nested("module-reload")))
    write(tmp_path, "b.json", host_report("b", 1, iommu("reboot"), nested()))
    write(tmp_path, "c.json", host_report("c", 1, iommu(), nested()))
    # d's older report waited for a reboot; its newer one (after the reboot) has nothing pending
    write(tmp_path, "d-old.json", host_report("d", 5, iommu("reboot"), nested()))
    write(tmp_path, "d-new.json", host_report("d", 1, iommu(), nested()))
    proc = fleet(tmp_path, "json")
    data = validate_fleet(json.loads(proc.stdout))
    assert data["totals"]["pending"] == {"module-reload": 1, "reboot": 2}
    assert {h["host"]: h.get("pending") for h in data["hosts"]} == {
        "a": {"module-reload": ["kvm.nested"], "reboot": ["iommu.enabled"]},
        "b": {"reboot": ["iommu.enabled"]}, "c": None, "d": None}
    [cause] = [c for c in data["causes"] if c["check"] == "iommu.enabled"]
    assert (cause["count"], cause["pending"]) == (4, {"reboot": ["a", "b"]})
    text = fleet(tmp_path, "text").stdout
    assert "Configured, not yet in effect: 1 host pending module-reload, 2 hosts pending reboot" in text
    assert "[pending reboot: 2]" in text
    html = fleet(tmp_path, "html").stdout
    assert "· 1 pending module-reload · 2 pending reboot ·" in html
    assert "(pending reboot on 2)" in html


def test_a_fleet_without_pending_changes_has_no_pending_fields(tmp_path):
    write(tmp_path, "c.json", host_report("c", 1, iommu(), nested()))
    data = validate_fleet(json.loads(fleet(tmp_path, "json").stdout))
    assert "pending" not in data["totals"] and "pending" not in data["hosts"][0]
    assert all("pending" not in c for c in data["causes"])
    assert "not yet in effect" not in fleet(tmp_path, "text").stdout
