# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck fleet: many host reports (made from captured roots) aggregated, every format, every bad input."""
from __future__ import annotations

import csv
import datetime
import html.parser
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HERE, fixed_report, materialize, validate_json
from kvmcheck.tools import fleet
from kvmcheck.core import model

FLEET_SCHEMA = HERE.parent / "reports" / "fleet.schema.json"
CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]
HOSTILE = '<script>alert("x")</script>&amp;\x1b[31m'


def offline_report(name: str, roots: Path) -> dict:
    """A captured root's report as the runner makes it once live_only is wired (lead's work in progress):
    offline, the checks that need the running kernel do not count against the verdict."""
    report = fixed_report(materialize(name, roots))
    report.live, report.live_only = False, ("kvm.guest-run", "kvm.acceleration")
    return report.to_dict()


def validate_fleet(data):
    return validate_json(FLEET_SCHEMA, data)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Real reports of captured roots, as dicts: name -> report."""
    roots = tmp_path_factory.mktemp("roots")
    names = ["pvm-host", "intel-baremetal-vmx", "amd-baremetal-no-svm", "cloud-vm-no-nested", "arm64-kvm"]
    out = {}
    for name in names:
        out[name] = offline_report(name, roots)
    return out


def ago(hours: float) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (now - datetime.timedelta(hours=hours)).isoformat(timespec="seconds")


def put(folder: Path, file: str, report: dict, hostname="keep", hours: float = 1.0) -> Path:
    doc = json.loads(json.dumps(report))
    if hostname != "keep":
        doc["host"]["hostname"] = hostname
    doc["generated_at"] = ago(hours)
    path = folder / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.fixture
def fleet_dir(tmp_path, reports):
    """6 hosts (2 ready; arm stale), 1 duplicate, 3 unreadable files, 2 files that are not *.json."""
    d = tmp_path / "reports"
    put(d, "pvm.json", reports["pvm-host"])  # hostname null: named after the file
    put(d, "virt01.json", reports["intel-baremetal-vmx"])  # hostname virt01, ready
    put(d, "amd.json", reports["amd-baremetal-no-svm"])
    put(d, "c1.json", reports["cloud-vm-no-nested"], hostname="cloud-a")
    put(d, "c2.json", reports["cloud-vm-no-nested"], hostname="cloud-b")
    put(d, "arm.json", reports["arm64-kvm"], hours=72)  # ready, but 3 days old
    put(d, "sub/virt01-old.json", reports["amd-baremetal-no-svm"], hostname="virt01", hours=30)  # older duplicate
    text = json.dumps(reports["pvm-host"], indent=2)
    (d / "truncated.json").write_text(text[: len(text) // 2])
    (d / "notjson.json").write_text("hello, world\n")
    (d / "v99.json").write_text(json.dumps(dict(reports["pvm-host"], schema_version=99)))
    (d / "README.txt").write_text("reports land here\n")
    (d / "sub" / "notes.log").write_text("x\n")
    return d


def run_json(paths, **kw):
    out = io.StringIO()
    data = fleet.build([str(p) for p in paths], **kw)[0]
    out.write(fleet.render_json(data))
    return validate_fleet(json.loads(out.getvalue()))


def test_counts_stale_unreadable_duplicates(fleet_dir):
    data = run_json([fleet_dir], max_age=24)
    assert data["totals"] == {"files": 10, "hosts": 6, "ready": 2, "not_ready": 4, "unknown": 0, "stale": 1,
                              "future": 0, "unreadable": 3, "duplicates": 1, "ignored": 2}
    assert [h["host"] for h in data["hosts"]] == ["amd", "arm", "cloud-a", "cloud-b", "pvm", "virt01"]
    virt01 = next(h for h in data["hosts"] if h["host"] == "virt01")
    assert virt01["verdict"] == "ready" and virt01["file"] == str(fleet_dir / "virt01.json")
    assert data["duplicates"] == [{"host": "virt01", "kept": str(fleet_dir / "virt01.json"),
                                   "dropped": [str(fleet_dir / "sub" / "virt01-old.json")]}]
    assert [(s["host"], round(s["age_hours"])) for s in data["stale"]] == [("arm", 72)]
    reasons = {Path(u["file"]).name: u["reason"] for u in data["unreadable"]}
    assert set(reasons) == {"truncated.json", "notjson.json", "v99.json"}
    assert reasons["truncated.json"].startswith("truncated JSON")
    assert reasons["notjson.json"].startswith("not JSON")
    assert "schema_version 99 is not supported" in reasons["v99.json"]


def test_per_check_counts_and_failing_hosts(fleet_dir, reports):
    data = run_json([fleet_dir])
    checks = {c["id"]: c for c in data["checks"]}
    assert checks["cpu.virt-flags"]["counts"]["fail"] == 4
    assert checks["cpu.virt-flags"]["hosts"]["fail"] == ["amd", "cloud-a", "cloud-b", "pvm"]
    assert checks["kvm.modules"]["hosts"]["fail"] == ["amd", "cloud-a", "cloud-b"]
    for c in data["checks"]:  # every kept host counted once per check it ran
        assert sum(c["counts"].values()) == 6
    expected = {s: 0 for s in fleet.STATUSES}
    for r in (reports["pvm-host"], reports["intel-baremetal-vmx"], reports["amd-baremetal-no-svm"],
              reports["cloud-vm-no-nested"], reports["cloud-vm-no-nested"], reports["arm64-kvm"]):
        for c in r["checks"]:
            expected[c["status"]] += 1
    totals = {s: sum(c["counts"][s] for c in data["checks"]) for s in fleet.STATUSES}
    assert totals == expected
    assert next(h for h in data["hosts"] if h["host"] == "amd")["problems"]["kernel.modules-blacklist"] == "fail"


def test_failures_grouped_by_cause(fleet_dir, reports):
    data = run_json([fleet_dir])
    cloud = {c["id"]: c["summary"] for c in reports["cloud-vm-no-nested"]["checks"]}
    group = next(c for c in data["causes"] if c["check"] == "kvm.modules" and c["summary"] == cloud["kvm.modules"])
    assert group["status"] == "fail" and group["count"] == 2 and group["hosts"] == ["cloud-a", "cloud-b"]
    # the same check with another summary is another cause
    virt = [c for c in data["causes"] if c["check"] == "cpu.virt-flags"]
    assert sum(c["count"] for c in virt) == 4 and len(virt) == len({c["summary"] for c in virt}) >= 2
    # root causes first (a finding that follows from another says so and comes after), then most severe, then most
    # hosts
    order = [(bool(c["follows_from"]), model.severity(c["status"]), -c["count"]) for c in data["causes"]]
    assert order == sorted(order)
    follows = [c for c in data["causes"] if c["follows_from"]]
    assert follows and all(c["follows_from"] == sorted(set(c["follows_from"])) for c in follows)
    # kvm.modules on the cloud VMs fails because their CPUs show no vmx/svm: it follows from cpu.virt-flags
    assert group["follows_from"] == ["cpu.virt-flags"]


def test_parallel_read_matches_serial(fleet_dir, monkeypatch):
    serial = run_json([fleet_dir], workers=1)
    monkeypatch.setattr(fleet, "CHUNK", 2)
    parallel = run_json([fleet_dir], workers=2)
    for d in (serial, parallel):
        d.pop("generated_at")
        for h in d["hosts"] + d["stale"]:
            h.pop("age_hours")
    assert parallel == serial


def test_explicit_files_and_missing_path(fleet_dir, tmp_path):
    data = run_json([fleet_dir / "pvm.json", fleet_dir / "README.txt", tmp_path / "nowhere"])
    assert data["totals"]["hosts"] == 1
    reasons = {Path(u["file"]).name: u["reason"] for u in data["unreadable"]}
    assert reasons["nowhere"] == "no such file or directory"
    assert reasons["README.txt"].startswith("not JSON")  # named explicitly: read whatever its name


def test_unusable_documents_never_crash(tmp_path, reports):
    base = reports["pvm-host"]
    cases = {
        "list.json": "[1, 2]",
        "empty.json": "",
        "latin1.json": b"\xff\xfe{".decode("latin-1"),
        "noversion.json": json.dumps({"host": {}}),
        "bool.json": json.dumps(dict(base, schema_version=True)),
        "nochecks.json": json.dumps({k: v for k, v in base.items() if k != "checks"}),
        "badtime.json": json.dumps(dict(base, generated_at="yesterday")),
        "badstatus.json": json.dumps(dict(base, checks=[dict(base["checks"][0], status="meh")])),
        "deep.json": "[" * 100000,
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="latin-1")
    data = run_json([tmp_path])
    assert data["totals"]["hosts"] == 0 and data["totals"]["unreadable"] == len(cases)
    assert all(u["reason"] for u in data["unreadable"])


def test_exit_codes(tmp_path, reports, fleet_dir, capsys):
    ok = tmp_path / "ok"
    put(ok, "a.json", reports["intel-baremetal-vmx"])
    put(ok, "b.json", reports["arm64-kvm"])
    put(ok, "b-old.json", reports["arm64-kvm"], hours=5)  # a duplicate alone is no failure
    assert fleet.fleet_command([str(ok)], "json", show_progress=False) == 0
    assert fleet.fleet_command([str(fleet_dir)], "text", show_progress=False) == 1
    stale = tmp_path / "stale"
    put(stale, "a.json", reports["intel-baremetal-vmx"], hours=50)
    assert fleet.fleet_command([str(stale)], "text", max_age=24, show_progress=False) == 1
    assert fleet.fleet_command([str(stale)], "text", max_age=0, show_progress=False) == 0  # staleness off
    (tmp_path / "empty").mkdir()
    assert fleet.fleet_command([str(tmp_path / "empty")], "text", show_progress=False) == 2
    assert "no JSON report found" in capsys.readouterr().err
    assert fleet.fleet_command([str(ok)], "xml", show_progress=False) == 2
    assert fleet.fleet_command([str(ok)], "json", output=str(tmp_path / "no" / "dir" / "f.json"),
                               show_progress=False) == 2


def test_json_output_file_follows_schema(fleet_dir, tmp_path):
    out = tmp_path / "fleet.json"
    assert fleet.fleet_command([str(fleet_dir)], "json", output=str(out), show_progress=False) == 1
    data = validate_fleet(json.loads(out.read_text()))
    assert data["kind"] == "kvmcheck-fleet" and data["max_age_hours"] == 24.0
    # a fleet report dropped into the directory is not mistaken for a host
    shutil.copy(out, fleet_dir / "fleet.json")
    again = run_json([fleet_dir])
    assert again["totals"]["hosts"] == 6
    assert any(u["reason"] == "a fleet report, not a host report" for u in again["unreadable"])


def test_csv_one_row_per_host_and_check(fleet_dir, tmp_path, reports):
    out = tmp_path / "fleet.csv"
    fleet.fleet_command([str(fleet_dir)], "csv", output=str(out), show_progress=False)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(fleet.CSV_FIELDS)
    hosts = [r for r in rows if r["status"] != "unreadable"]
    per_host = {"amd": "amd-baremetal-no-svm", "arm": "arm64-kvm", "cloud-a": "cloud-vm-no-nested",
                "cloud-b": "cloud-vm-no-nested", "pvm": "pvm-host", "virt01": "intel-baremetal-vmx"}
    assert len(hosts) == sum(len(reports[r]["checks"]) for r in per_host.values())
    pvm = {r["check"]: r for r in hosts if r["host"] == "pvm"}
    for c in reports["pvm-host"]["checks"]:  # every summary, pass and skip included
        assert (pvm[c["id"]]["status"], pvm[c["id"]]["summary"]) == (c["status"], c["summary"])
    assert {r["stale"] for r in hosts if r["host"] == "arm"} == {"yes"}
    assert sorted(Path(r["file"]).name for r in rows if r["status"] == "unreadable") == \
        ["notjson.json", "truncated.json", "v99.json"]


class Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_html_self_contained_and_escaped(fleet_dir, tmp_path, reports):
    put(fleet_dir, "evil.json", reports["pvm-host"], hostname=HOSTILE)
    out = tmp_path / "fleet.html"
    fleet.fleet_command([str(fleet_dir)], "html", output=str(out), show_progress=False)
    page = out.read_text()
    parser = Collect()
    parser.feed(page)
    assert "script" not in parser.tags  # no JavaScript, and the hostile hostname did not become a tag
    assert "svg" in parser.tags and parser.tags.count("rect") >= 4
    assert not any(t in parser.tags for t in ("link", "img", "iframe"))
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    text = "".join(parser.text)
    assert HOSTILE in text  # shown literally, once unescaped by the parser
    assert "&lt;script&gt;" in page and "&amp;amp;" in page


def test_text_view(fleet_dir, capsys, reports):
    put(fleet_dir, "evil.json", reports["pvm-host"], hostname=HOSTILE)
    assert fleet.fleet_command([str(fleet_dir)], "text", show_progress=False) == 1
    out = capsys.readouterr().out
    assert out.startswith("kvmcheck fleet: 7 hosts from 11 files: 2 ready, 5 not ready\n")
    assert "1 stale (older than 24.0 h), 3 unreadable, 1 duplicate ignored, 2 non-JSON files skipped" in out
    assert "\x1b" not in out and "\\x1b[31m" in out  # control characters shown, not sent to the terminal
    assert "Stale reports" in out and "arm:" in out
    assert "Duplicate reports" in out and "sub/virt01-old.json" in out
    assert "truncated.json: truncated JSON" in out


def test_no_progress_bar_without_tty(fleet_dir, capsys, monkeypatch):
    monkeypatch.setattr(fleet, "PROGRESS_MIN", 1)
    fleet.fleet_command([str(fleet_dir)], "json", show_progress=True)
    # no bar: only the files that gave no report are named
    assert [line.split(": ")[0] + ": " + line.split(": ")[1] for line in capsys.readouterr().err.splitlines()] == [
        f"kvmcheck fleet: skipped {fleet_dir / name}" for name in ("notjson.json", "truncated.json", "v99.json")]
    assert isinstance(fleet.progress_bar(10, True, stream=io.StringIO()), fleet._NoProgress)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(fleet.progress_bar(10, False, stream=Tty()), fleet._NoProgress)
    assert isinstance(fleet.progress_bar(10, True, stream=Tty()), fleet._RichProgress)
    assert isinstance(fleet.progress_bar(0, True, stream=Tty()), fleet._NoProgress)  # fewer than PROGRESS_MIN


def test_progress_bar_on_a_terminal_only(tmp_path, reports):
    if not shutil.which("script"):
        pytest.skip("needs script(1) for a pseudo-terminal")
    d = tmp_path / "many"
    for i in range(fleet.PROGRESS_MIN):
        put(d, f"h{i}.json", reports["arm64-kvm"], hostname=f"h{i}")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TERM="xterm")
    base = " ".join(CLI[:2]) + ' "' + CLI[2] + '"' + f" fleet {d} --format json -o {tmp_path}/out.json"
    tty = subprocess.run(["script", "-qec", base, "/dev/null"], capture_output=True, text=True, env=env, timeout=120)
    assert "reading reports" in tty.stdout
    quiet = subprocess.run(["script", "-qec", base + " --no-progress", "/dev/null"], capture_output=True, text=True,
                           env=env, timeout=120)
    assert "reading reports" not in quiet.stdout
    piped = subprocess.run(CLI + ["fleet", str(d), "--format", "json"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""
    assert validate_fleet(json.loads(piped.stdout))["totals"]["hosts"] == fleet.PROGRESS_MIN


def with_check(report: dict, cid: str, status: str, summary: str, cause=None, **evidence) -> dict:
    doc = json.loads(json.dumps(report))
    c = next(c for c in doc["checks"] if c["id"] == cid)
    c.update(status=status, summary=summary, evidence=dict(c.get("evidence") or {}, **evidence))
    c.pop("cause", None)
    if cause is not None:
        c["cause"] = cause
    return doc


def test_causes_grouped_by_key_not_by_measurement(tmp_path, reports):
    """Issue 13 item 4: three hosts whose acceleration failed at three rates were three causes."""
    base = reports["intel-baremetal-vmx"]
    d = tmp_path / "rates"
    rates = {"h1": 1.02e6, "h2": 8.04e5, "h3": 2.31e6}
    for name, rate in rates.items():  # no cause key: a schema_version 1 report, or a check that gave none
        doc = with_check(base, "kvm.acceleration", "fail",
                         f"guest code is not hardware-accelerated: {rate:.3g} instructions/s (hardware >= 1e+08)",
                         instructions_per_second=rate, nested={"kvm_intel": "N"})
        put(d, f"{name}.json", doc, hostname=name)
    # the same check failing for another reason is another cause; an explicit key groups across wordings
    put(d, "h4.json", with_check(base, "kvm.acceleration", "fail", "the timing guest failed: exit 17",
                                 cause="timing-guest-failed"), hostname="h4")
    put(d, "h5.json", with_check(base, "kvm.acceleration", "fail", "the timing guest failed: shutdown",
                                 cause="timing-guest-failed"), hostname="h5")
    data = validate_fleet(run_json([d]))
    accel = [c for c in data["causes"] if c["check"] == "kvm.acceleration"]
    assert [(c["cause"], c["count"], c["hosts"]) for c in accel] == [
        ("guest code is not hardware-accelerated: # instructions/s (hardware >= #)", 3, ["h1", "h2", "h3"]),
        ("timing-guest-failed", 2, ["h4", "h5"])]
    rated = accel[0]
    assert rated["summary"] == rated["cause"]  # the hosts' texts differ: the masked one stands for them
    for m in rated["measured"]:  # each host keeps its own measurement: the summary and the scalar evidence
        assert m["summary"].startswith("guest code is not hardware-accelerated: ")
        assert m["values"]["instructions_per_second"] == rates[m["host"]]
        assert "nested" not in m["values"]  # nested evidence is not a measurement
    assert [m["summary"] for m in accel[1]["measured"]] == ["the timing guest failed: exit 17",
                                                           "the timing guest failed: shutdown"]
    # hosts that say the same keep no copy of the text
    same = [c for c in data["causes"] if c["check"] != "kvm.acceleration"]
    assert same and all(c["count"] == 5 and c["measured"] == [] for c in same)
    out = fleet.render_template(data, "text")
    assert "(3 hosts): guest code is not hardware-accelerated: # instructions/s" in out
    assert "h2 (guest code is not hardware-accelerated: 8.04e+05 instructions/s" in out


def test_unknown_hosts_counted_apart(tmp_path, reports):
    d = tmp_path / "u"
    put(d, "a.json", reports["intel-baremetal-vmx"], hostname="a")
    put(d, "b.json", dict(reports["intel-baremetal-vmx"], verdict="unknown"), hostname="b")
    put(d, "c.json", reports["amd-baremetal-no-svm"], hostname="c")
    put(d, "old.json", dict(reports["intel-baremetal-vmx"], schema_version=1), hostname="d")  # version 1 still read
    put(d, "bad.json", dict(reports["intel-baremetal-vmx"], schema_version=1, verdict="unknown"), hostname="e")
    data = validate_fleet(run_json([d]))
    t = data["totals"]
    assert (t["hosts"], t["ready"], t["not_ready"], t["unknown"], t["unreadable"]) == (4, 2, 1, 1, 1)
    assert {h["host"]: h["verdict"] for h in data["hosts"]} == {"a": "ready", "b": "unknown", "c": "not-ready",
                                                                "d": "ready"}
    assert "verdict 'unknown' is not one of" in data["unreadable"][0]["reason"]  # version 1 had no unknown
    assert fleet.fleet_command([str(d / "a.json"), str(d / "b.json")], "json", show_progress=False) == 1
    assert fleet.fleet_command([str(d / "a.json")], "json", show_progress=False) == 0


def test_schema_command_prints_the_shipped_schemas(tmp_path):
    for flag, name in (("--fleet", "fleet.schema.json"), ("--diff", "diff.schema.json"), (None, "report.schema.json")):
        out = subprocess.run(CLI + ["schema"] + ([flag] if flag else []), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout == (HERE.parent / "reports" / name).read_text()
    both = subprocess.run(CLI + ["schema", "--fleet", "--diff"], capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "exclusive" in both.stderr


FORMULAS = ["=HYPERLINK(\"http://evil/\",\"x\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


def test_csv_neutralizes_formulas(tmp_path, reports):
    """Issue 14 item 15: a hostname like =HYPERLINK(...) was written verbatim."""
    d = tmp_path / "csv"
    for i, text in enumerate(FORMULAS):
        doc = with_check(reports["amd-baremetal-no-svm"], "kvm.modules", "fail", text)
        doc["checks"][0]["id"] = text  # a check id from the report, too
        put(d, f"h{i}.json", doc, hostname=text)
    (d / "=cmd.json").write_text("{")  # an unreadable file's name
    text = fleet.render_csv(*fleet.build([str(d)]))
    rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
    cells = [cell for row in rows for cell in row]
    assert not [cell for cell in cells if cell.startswith(fleet.FORMULA_START)]
    hosts = {row[0] for row in rows if row[6] != "unreadable"}
    assert hosts == {"'" + t for t in FORMULAS}
    assert {row[7] for row in rows if row[5] == "kvm.modules"} == {"'" + t for t in FORMULAS}
    assert {row[5] for row in rows if row[5].startswith("'")} == {"'" + t for t in FORMULAS}
    assert [row[1] for row in rows if row[6] == "unreadable"] == [str(d / "=cmd.json")]  # a path: starts with /
    assert fleet.csv_cell("plain-host") == "plain-host" and fleet.csv_cell("a=b") == "a=b"


def test_future_reports_are_suspect(tmp_path, reports):
    """Issue 14 item 16d: a forged generated_at in the future won duplicate resolution and was never stale."""
    d = tmp_path / "future"
    put(d, "forged.json", reports["intel-baremetal-vmx"], hostname="web", hours=-24 * 365 * 10)  # ten years ahead
    put(d, "real.json", reports["amd-baremetal-no-svm"], hostname="web", hours=2)
    put(d, "skewed.json", reports["intel-baremetal-vmx"], hostname="skew", hours=-0.1)  # 6 min ahead: NTP skew
    put(d, "alone.json", reports["intel-baremetal-vmx"], hostname="alone", hours=-3)
    data = validate_fleet(run_json([d]))
    web = next(h for h in data["hosts"] if h["host"] == "web")
    assert web["file"] == str(d / "real.json") and web["verdict"] == "not-ready" and not web["future"]
    assert data["duplicates"] == [{"host": "web", "kept": str(d / "real.json"), "dropped": [str(d / "forged.json")]}]
    assert [(f["host"], round(f["ahead_hours"])) for f in data["future"]] == [("alone", 3)]
    assert data["totals"]["future"] == 1 and data["clock_skew_seconds"] == fleet.CLOCK_SKEW
    assert next(h for h in data["hosts"] if h["host"] == "skew")["future"] is False
    out = fleet.render_template(data, "text")
    assert "Clock in the future" in out and "alone: generated" in out
    # a fleet of ready hosts whose only trouble is a report from the future is not all clear
    assert fleet.fleet_command([str(d / "alone.json")], "json", show_progress=False) == 1
    assert fleet.fleet_command([str(d / "skewed.json")], "json", show_progress=False) == 0
