# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck diff: host and fleet reports compared, regressions first, exit 1 on regression, 2 on bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fixed_report, materialize
from kvmcheck.tools import drift
from kvmcheck.tools import fleet

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


def offline_report(name: str, roots: Path) -> dict:
    """A captured root's report as the runner makes it once live_only is wired (lead's work in progress):
    offline, the checks that need the running kernel do not count against the verdict."""
    report = fixed_report(materialize(name, roots))
    report.live, report.live_only = False, ("kvm.guest-run", "kvm.acceleration")
    return report.to_dict()


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    roots = tmp_path_factory.mktemp("roots")
    return {name: offline_report(name, roots)
            for name in ("intel-baremetal-vmx", "amd-baremetal-no-svm", "arm64-kvm", "pvm-host")}


def write(path: Path, doc) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def edited(report, **statuses):
    doc = json.loads(json.dumps(report))
    for c in doc["checks"]:
        if c["id"] in statuses:
            c["status"] = statuses[c["id"]]
            c["summary"] = f"now {c['status']}"
    return doc


def status_of(report, cid):
    return next(c["status"] for c in report["checks"] if c["id"] == cid)


def test_host_regressions_first_and_exit_1(tmp_path, reports, capsys):
    old = reports["intel-baremetal-vmx"]
    passing = [c["id"] for c in old["checks"] if c["status"] == "pass"]
    warning = [c["id"] for c in old["checks"] if c["status"] == "warn"]
    new = edited(old, **{passing[0]: "warn", passing[1]: "fail", warning[0]: "fail"})
    a, b = write(tmp_path / "old.json", old), write(tmp_path / "new.json", new)
    assert drift.diff_command(a, b, "json") == 1
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "host" and d["regressed"] is True
    assert [(r["id"], r["old"], r["new"]) for r in d["regressions"]] == sorted(
        [(passing[1], "pass", "fail"), (warning[0], "warn", "fail")]) + [(passing[0], "pass", "warn")]
    assert d["fixes"] == [] and d["new_checks"] == [] and d["no_longer_checked"] == []
    assert drift.diff_command(a, b, "text") == 1
    text = capsys.readouterr().out
    assert "Regressions (3)" in text and f"{passing[1]}: pass -> fail" in text


def test_host_fixes_new_and_removed_checks_exit_0(tmp_path, reports, capsys):
    old = reports["amd-baremetal-no-svm"]
    failing = [c["id"] for c in old["checks"] if c["status"] == "fail"]
    new = edited(old, **{failing[0]: "pass", failing[1]: "warn"})
    dropped = new["checks"].pop()
    new["checks"].append(dict(new["checks"][0], id="extra.check", status="warn", summary="a new check"))
    a, b = write(tmp_path / "old.json", old), write(tmp_path / "new.json", new)
    assert drift.diff_command(a, b, "json") == 0
    d = json.loads(capsys.readouterr().out)
    assert d["regressed"] is False and d["regressions"] == []
    assert {(r["id"], r["old"], r["new"]) for r in d["fixes"]} == {(failing[0], "fail", "pass"),
                                                                   (failing[1], "fail", "warn")}
    assert d["new_checks"] == [{"id": "extra.check", "status": "warn", "summary": "a new check"}]
    assert d["no_longer_checked"] == [{"id": dropped["id"], "old": dropped["status"], "new": None,
                                       "summary": dropped["summary"]}]
    assert drift.diff_command(a, b, "text") == 0
    text = capsys.readouterr().out
    assert "Fixes (2)" in text and "New checks (1)" in text and "No longer checked (evidence lost: not a fix) (1)" in text
    # the same pair the other way round: the fixes are regressions
    assert drift.diff_command(b, a, "text") == 1


def test_skip_and_error_are_no_longer_checked_never_fixes(tmp_path, reports, capsys):
    """Issue 13 item 4: kvm.acceleration fail -> skip was counted as a fix."""
    old = reports["intel-baremetal-vmx"]
    passing = [c["id"] for c in old["checks"] if c["status"] == "pass"]
    base = edited(old, **{"kvm.acceleration": "fail", passing[0]: "warn", passing[1]: "pass"})
    a = write(tmp_path / "old.json", base)
    gone = edited(base, **{"kvm.acceleration": "skip", passing[0]: "error", passing[1]: "error"})
    assert drift.diff_command(a, write(tmp_path / "b.json", gone), "json") == 0  # nothing regressed
    d = json.loads(capsys.readouterr().out)
    assert d["fixes"] == [] and d["regressions"] == []
    assert sorted((r["id"], r["old"], r["new"]) for r in d["no_longer_checked"]) == sorted(
        [("kvm.acceleration", "fail", "skip"), (passing[0], "warn", "error"), (passing[1], "pass", "error")])
    # and back: a check that runs again and finds a problem is a regression; one that passes is no fix
    back = edited(gone, **{"kvm.acceleration": "fail", passing[0]: "warn", passing[1]: "pass"})
    assert drift.diff_command(write(tmp_path / "b.json", gone), write(tmp_path / "c.json", back), "json") == 1
    d = json.loads(capsys.readouterr().out)
    assert sorted((r["id"], r["old"], r["new"]) for r in d["regressions"]) == sorted(
        [("kvm.acceleration", "skip", "fail"), (passing[0], "error", "warn")])
    assert d["fixes"] == [] and [(r["id"], r["new"]) for r in d["changed"]] == [(passing[1], "pass")]
    text = drift.render_text(drift.diff_hosts(base, gone))
    assert "No longer checked (evidence lost: not a fix) (3)" in text and "Fixes" not in text


@pytest.mark.parametrize("old, new, change, code", [
    ("ready", "unknown", "no-longer-checked", 0), ("not-ready", "unknown", "no-longer-checked", 0),
    ("unknown", "not-ready", "regression", 1), ("ready", "not-ready", "regression", 1),
    ("unknown", "ready", "fix", 0), ("not-ready", "ready", "fix", 0)])
def test_verdict_changes(tmp_path, reports, capsys, old, new, change, code):
    a, b = (dict(reports["intel-baremetal-vmx"], verdict=v) for v in (old, new))
    assert drift.diff_command(write(tmp_path / "a.json", a), write(tmp_path / "b.json", b), "json") == code
    assert json.loads(capsys.readouterr().out)["verdict"] == {"old": old, "new": new, "change": change}


def test_skip_to_pass_is_no_regression(tmp_path, reports, capsys):
    old = reports["intel-baremetal-vmx"]
    skipped = next(c["id"] for c in old["checks"] if c["status"] == "skip")
    a = write(tmp_path / "old.json", old)
    assert drift.diff_command(a, write(tmp_path / "p.json", edited(old, **{skipped: "pass"})), "json") == 0
    d = json.loads(capsys.readouterr().out)
    assert d["changed"] == [{"id": skipped, "old": "skip", "new": "pass", "summary": "now pass"}]
    assert drift.diff_command(a, a, "text") == 0
    assert "no status changes" in capsys.readouterr().out


def test_verdict_turning_not_ready_is_a_regression(tmp_path, reports, capsys):
    old = reports["intel-baremetal-vmx"]
    assert old["verdict"] == "ready"
    new = json.loads(json.dumps(old))
    new["verdict"] = "not-ready"  # e.g. --strict now, or a new failing check
    new["checks"].append(dict(new["checks"][0], id="extra.check", status="fail", summary="x", remediation="y"))
    assert drift.diff_command(write(tmp_path / "a.json", old), write(tmp_path / "b.json", new), "text") == 1
    assert "verdict: ready -> not-ready" in capsys.readouterr().out


def make_fleet(folder: Path, out: Path, hosts) -> str:
    for name, report in hosts.items():
        doc = json.loads(json.dumps(report))
        doc["host"]["hostname"] = name
        doc["generated_at"] = fleet._iso(__import__("time").time() - 600)
        write(folder / f"{name}.json", doc)
    fleet.fleet_command([str(folder)], "json", output=str(out), show_progress=False)
    return str(out)


def test_fleet_diff(tmp_path, reports, capsys):
    ready, broken, arm = reports["intel-baremetal-vmx"], reports["amd-baremetal-no-svm"], reports["arm64-kvm"]
    a = make_fleet(tmp_path / "a", tmp_path / "a.json", {"web1": ready, "web2": ready, "old1": arm})
    b = make_fleet(tmp_path / "b", tmp_path / "b.json", {"web1": ready, "web2": broken, "new1": broken})
    assert drift.diff_command(a, b, "json") == 1
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "fleet" and d["regressed"] is True
    assert d["newly_not_ready"] == ["web2"] and d["newly_ready"] == []
    assert d["hosts_added"] == [{"host": "new1", "verdict": "not-ready"}]
    assert d["hosts_removed"] == [{"host": "old1", "verdict": "ready"}]
    checks = {c["id"]: c for c in d["checks"]}
    virt = checks["cpu.virt-flags"]
    assert virt["old"]["fail"] == 0 and virt["new"]["fail"] == 2 and virt["delta"]["fail"] == 2 and virt["regressed"]
    assert virt["worse"] == ["warn-or-fail", "fail"]
    assert d["checks"][0]["regressed"]  # regressions first
    web2 = next(h for h in d["host_regressions"] if h["host"] == "web2")
    assert {"id": "cpu.virt-flags", "old": "pass", "new": "fail"} in web2["checks"]
    assert drift.diff_command(a, b, "text") == 1
    text = capsys.readouterr().out
    assert "newly not ready (1)" in text and "Hosts added (1)" in text and "Hosts removed (1)" in text
    # web2 fixed (its failures pass now): fewer hosts in trouble, no regression
    fixed = edited(broken, **{c["id"]: "pass" for c in broken["checks"] if c["status"] == "fail"})
    fixed["verdict"] = "ready"
    assert drift.diff_command(b, make_fleet(tmp_path / "c", tmp_path / "c.json",
                                            {"web1": ready, "web2": fixed, "new1": broken}), "json") == 0
    d = json.loads(capsys.readouterr().out)
    assert d["newly_ready"] == ["web2"] and d["regressed"] is False
    assert drift.diff_command(a, a, "text") == 0
    assert "no changes" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, "not json {", '{"schema_version": 99, "host": {}, "checks": []}', "[]",
                                     '{"kind": "kvmcheck-fleet", "schema_version": 1}'])
def test_unreadable_input_exit_2(tmp_path, reports, capsys, content):
    good = write(tmp_path / "good.json", reports["pvm-host"])
    bad = str(tmp_path / "missing.json") if content is None else write(tmp_path / "bad.json", content)
    assert drift.diff_command(good, bad, "text") == 2
    assert drift.diff_command(bad, good, "json") == 2
    assert capsys.readouterr().err.startswith("kvmcheck diff: ")


def test_mixed_kinds_and_format_exit_2(tmp_path, reports, capsys):
    host = write(tmp_path / "h.json", reports["pvm-host"])
    f = make_fleet(tmp_path / "f", tmp_path / "f.json", {"x": reports["pvm-host"]})
    assert drift.diff_command(host, f, "text") == 2
    assert "cannot compare a host report" in capsys.readouterr().err
    assert drift.diff_command(host, host, "html") == 2


def test_cli_exit_codes(tmp_path, reports):
    old = reports["intel-baremetal-vmx"]
    cid = next(c["id"] for c in old["checks"] if c["status"] == "pass")
    a, b = write(tmp_path / "a.json", old), write(tmp_path / "b.json", edited(old, **{cid: "fail"}))
    run = lambda *args: subprocess.run(CLI + ["diff", *args], capture_output=True, text=True, timeout=120)  # noqa: E731
    assert run(a, b).returncode == 1
    assert run(b, a, "--format", "json").returncode == 0
    assert run(a, str(tmp_path / "nope.json")).returncode == 2


def test_reports_of_two_hosts_and_of_no_hostname_are_named_so(tmp_path, reports, capsys):
    """A report of a root without /etc/hostname has hostname null: the text says "(no hostname)", never
    "None"; two reports of different hosts are compared, with a note that they are two machines."""
    old = json.loads(json.dumps(reports["intel-baremetal-vmx"]))
    new = json.loads(json.dumps(reports["intel-baremetal-vmx"]))
    old["host"]["hostname"], new["host"]["hostname"] = "vm", None
    drift.diff_command(write(tmp_path / "a.json", old), write(tmp_path / "b.json", new), "text")
    text = capsys.readouterr().out
    assert text.startswith("kvmcheck diff: host vm -> (no hostname) (")
    assert "None" not in text and "note: the two reports name different hosts" in text
    new["host"]["hostname"] = "vm"
    drift.diff_command(write(tmp_path / "a.json", old), write(tmp_path / "b.json", new), "text")
    assert "different hosts" not in capsys.readouterr().out
