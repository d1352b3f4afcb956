# SPDX-License-Identifier: GPL-2.0-or-later
"""A change that is configured but not yet in effect (issue 20): the model, the report and its schema."""
from __future__ import annotations

import pytest

from conftest import SCHEMA, validate_json
from kvmcheck.core.model import PENDING_KINDS, Outcome, Report, Result, Status


def result(check_id: str, status: Status, pending=None, note="") -> Result:
    return Result(check_id, check_id, status, f"{check_id} {status.value}", "", None if status is Status.PASS
                  else "do something", {}, 1.0, pending=pending, pending_note=note)


def report(*results: Result) -> Report:
    from kvmcheck.core.runner import HOST_FIELDS

    host = dict(dict.fromkeys(HOST_FIELDS), hostname="h", root="/", live=True, kvm_modules={}, unreadable=[])
    del host["error"]  # present only when the host facts could not be gathered
    return Report("0", "2026-12-05T00:00:00+00:00", host, list(results))


def test_an_outcome_names_its_pending_step_and_keeps_its_status():
    outcome = Outcome.passed("nested virtualization on").awaiting(
        "module-reload", "configured, not yet in effect: reload kvm_intel (no guest may be running) or reboot")
    assert (outcome.status, outcome.pending) == (Status.PASS, "module-reload")
    assert outcome.pending_note.startswith("configured, not yet in effect: reload kvm_intel")


def test_an_unknown_pending_step_is_refused():
    with pytest.raises(ValueError, match="pending must be one of"):
        Outcome.passed("x").awaiting("soon", "whenever")


def test_the_report_lists_pending_checks_by_step_in_the_operators_order():
    rep = report(result("iommu.enabled", Status.FAIL, "reboot", "configured, not yet in effect: reboot"),
                 result("kvm.nested", Status.PASS, "module-reload", "configured, not yet in effect: reload"),
                 result("kvm.device", Status.PASS),
                 result("consumer.groups", Status.WARN, "relogin", "configured, not yet in effect: log in again"))
    assert list(rep.pending.items()) == [("module-reload", ["kvm.nested"]), ("relogin", ["consumer.groups"]),
                                         ("reboot", ["iommu.enabled"])]
    assert list(rep.pending) == [k for k in PENDING_KINDS if k in rep.pending]
    assert rep.verdict == "not-ready"
    assert rep.verdict_reason == ("1 finding blocks KVM here; fix iommu.enabled first; pending module-reload: "
                                  "kvm.nested; pending relogin: consumer.groups; pending reboot: iommu.enabled")
    data = rep.to_dict()
    assert data["pending"] == {"module-reload": ["kvm.nested"], "relogin": ["consumer.groups"],
                               "reboot": ["iommu.enabled"]}
    assert [(c["id"], c.get("pending")) for c in data["checks"]] == [
        ("iommu.enabled", "reboot"), ("kvm.nested", "module-reload"), ("kvm.device", None),
        ("consumer.groups", "relogin")]
    validate_json(SCHEMA, data)


def test_a_report_without_pending_changes_has_no_pending_field():
    data = report(result("kvm.device", Status.PASS)).to_dict()
    assert "pending" not in data and "pending" not in data["checks"][0]
    assert data["verdict_reason"] == "nothing blocks KVM; evidence from kvm.device"


def test_the_schema_refuses_a_pending_step_it_does_not_know_and_a_pending_without_its_note():
    import json

    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    data = report(result("kvm.nested", Status.PASS, "module-reload", "reload")).to_dict()
    assert not list(validator.iter_errors(data))
    unknown = dict(data, checks=[dict(data["checks"][0], pending="someday")])
    without_note = dict(data, checks=[{k: v for k, v in data["checks"][0].items() if k != "pending_note"}])
    unknown_step = dict(data, pending={"someday": ["kvm.nested"]})
    for bad in (unknown, without_note, unknown_step):
        assert list(validator.iter_errors(bad)), bad


def pending_report() -> Report:
    return report(
        result("iommu.enabled", Status.FAIL, "reboot",
               "configured, not yet in effect: intel_iommu=on is in the boot loader's default entry: reboot"),
        result("kvm.nested", Status.PASS, "module-reload",
               "configured, not yet in effect: reload kvm_intel (no guest may be running) or reboot"),
        result("kvm.device", Status.WARN))


def test_every_format_says_which_change_is_pending_and_drops_the_fix_already_made():
    from kvmcheck.core.render import render

    text = render(pending_report(), "text")
    assert "FAIL   iommu.enabled  iommu.enabled fail [pending reboot]" in text
    assert "- iommu.enabled: pending reboot: configured, not yet in effect: intel_iommu=on" in text
    assert "Pending reboot: configured, not yet in effect: intel_iommu=on" in text
    assert "Fix: do something" in text  # kvm.device's fix is still to make
    assert text.count("Fix: ") == 1  # iommu.enabled's configuration is made: only its reboot is left
    assert "Configured, not yet in effect:\n  kvm.nested: pending module-reload: configured" in text
    markdown = render(pending_report(), "markdown")
    assert "| FAIL | `iommu.enabled` | iommu.enabled fail (pending reboot) |" in markdown
    assert "**Pending reboot:** configured, not yet in effect" in markdown
    assert "FAIL iommu.enabled: iommu.enabled fail (pending reboot)" in render(pending_report(), "nagios")
    assert "Pending reboot: configured, not yet in effect" in render(pending_report(), "junit")
    prom = render(pending_report(), "prometheus")
    assert 'kvmcheck_pending{host="h",step="reboot"} 1' in prom
    assert 'kvmcheck_pending{host="h",step="module-reload"} 1' in prom
    assert 'kvmcheck_pending{host="h",step="relogin"} 0' in prom
    html = render(pending_report(), "html")
    assert '<span class="pending" title="configured, not yet in effect: intel_iommu=on' in html
    assert "<strong>Pending reboot:</strong>" in html


def test_promtool_accepts_the_pending_family():
    import subprocess

    from test_consumers import need
    from kvmcheck.core.render import render

    proc = subprocess.run([need("promtool"), "check", "metrics"], input=render(pending_report(), "prometheus"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_unknown_verdict_names_pending_changes_too():
    rep = report(result("kvm.device", Status.SKIP),
                 result("kvm.nested", Status.PASS, "module-reload", "configured, not yet in effect: reload"))
    rep.essential = ("kvm.device",)
    assert rep.verdict == "unknown"
    assert rep.verdict_reason == "no evidence from kvm.device (skip: kvm.device skip); pending module-reload: kvm.nested"


def test_two_pending_changes_keep_the_later_step_and_both_notes():
    outcome = Outcome.passed("pools").awaiting(
        "reboot", "configured, not yet in effect: vm.nr_hugepages=512 in /etc/sysctl.d/h.conf, 0 now: run "
        "'sysctl --system' or reboot").awaiting(
        "regenerate-bootloader", "configured, not yet in effect: hugepages=512 in /etc/default/grub: run update-grub")
    assert outcome.pending == "reboot"
    assert outcome.pending_note == ("configured, not yet in effect: vm.nr_hugepages=512 in /etc/sysctl.d/h.conf, "
                                    "0 now: run 'sysctl --system' or reboot; and hugepages=512 in /etc/default/grub: "
                                    "run update-grub")
