# SPDX-License-Identifier: GPL-2.0-or-later
"""The report formats as their consumers read them: golden files for every format, and each machine format
parsed the way Jenkins/GitLab (JUnit XML), Prometheus' textfile collector and Nagios/Icinga read it."""
from __future__ import annotations

import difflib
import html
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import fixed_report, run_audited, validate_report

from kvmcheck.core.model import Result, Status
from kvmcheck.core.render import nagios_code, render

GOLDEN = Path(__file__).resolve().parent / "golden"
CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]
EXTENSIONS = {"text": "txt", "json": "json", "markdown": "md", "junit": "xml", "prometheus": "prom", "nagios": "nagios"}
STATUSES = ("pass", "warn", "fail", "skip", "error")
GOLDEN_HOSTNAME = "pvm-host.example.com"
HOSTILE = 'we"ird\\host\nname'  # a double quote, a backslash and a newline


def kvmcheck(*args):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


def golden_root(host_root):
    """pvm-host (fail, warn, pass and skip) with a host name, so that the host shows in every format."""
    root = host_root("pvm-host")
    (root / "proc/sys/kernel/hostname").write_text(GOLDEN_HOSTNAME + "\n")
    return root


def golden_report(root, **options):
    return fixed_report(root, **options)


def hostile_report(root, strict=False):
    """The golden report with every status present and text that each format must escape."""
    report = golden_report(root, strict=strict)
    report.host["hostname"] = HOSTILE
    report.checks[0] = replace(report.checks[0], summary='a | pipe, "quotes", <tag> & amp,\nand a second line',
                               detail="detail with | and <b>markup</b>\nover two lines")
    report.checks.append(Result("plugin.crashy", "A check that crashed", Status.ERROR,
                                "ValueError: bad | value", "Traceback (most recent call last):\n  ...",
                                None, {}, 12.0))
    return report


# --- golden files ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(EXTENSIONS))
def test_golden_file(fmt, host_root):
    text = render(golden_report(golden_root(host_root)), fmt)
    path = GOLDEN / f"report.{EXTENSIONS[fmt]}"
    if os.environ.get("KVMCHECK_REGEN_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8") if path.exists() else ""
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"tests/golden/{path.name}", f"rendered --format {fmt}"))
        pytest.fail(f"--format {fmt} differs from {path.name}:\n{diff}\nIf the change is intended, regenerate with\n"
                    f"  KVMCHECK_REGEN_GOLDEN=1 python -m pytest -q tests/test_report_formats.py -k golden\n"
                    f"and review the diff of tests/golden/ before committing.", pytrace=False)


def test_json_golden_follows_the_schema():
    data = validate_report(json.loads((GOLDEN / "report.json").read_text()))
    assert data["host"]["hostname"] == GOLDEN_HOSTNAME
    assert {c["status"] for c in data["checks"]} == {"pass", "warn", "fail", "skip"}


# --- JUnit XML ------------------------------------------------------------------------------------------------
def junit_structure(xml_text):
    """What Jenkins' junit-plugin and GitLab require and read (ecosystem.md section 5); returns the testcases."""
    root = ET.fromstring(xml_text.encode("utf-8"))
    assert root.tag == "testsuites"
    suites = list(root)
    assert suites and all(s.tag == "testsuite" for s in suites)
    cases = []
    for suite in suites:
        assert suite.get("name")  # Jenkins: a missing name becomes "(file name)"
        assert [e.tag for e in suite if e.tag not in ("properties", "testcase")] == []  # no suite-level output
        for prop in suite.iter("property"):
            assert prop.get("name") and prop.get("value") is not None
        suite_cases = suite.findall("testcase")
        for case in suite_cases:
            assert case.get("name") and case.get("classname")
            assert float(case.get("time")) >= 0
            outcome = [e.tag for e in case if e.tag in ("failure", "error", "skipped")]
            assert len(outcome) <= 1, outcome
            assert set(e.tag for e in case) <= {"failure", "error", "skipped", "system-out", "system-err"}
            for e in case:
                if e.tag in ("failure", "error", "skipped"):
                    assert e.get("message") and "\n" not in e.get("message")
        for attr, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
            assert int(suite.get(attr)) == sum(1 for c in suite_cases if c.find(tag) is not None), attr
        assert int(suite.get("tests")) == len(suite_cases)
        assert float(suite.get("time")) == pytest.approx(sum(float(c.get("time")) for c in suite_cases), abs=0.01)
        cases += suite_cases
    for attr in ("tests", "failures", "errors"):  # junit-10.xsd: <testsuites> has no skipped attribute
        assert int(root.get(attr)) == sum(int(s.get(attr)) for s in suites)
    assert root.get("skipped") is None
    keys = [(c.get("classname"), c.get("name")) for c in cases]
    assert len(keys) == len(set(keys))  # GitLab keeps only the first of equal names
    return cases


def test_junit_maps_each_check_to_a_testcase(host_root):
    report = golden_report(golden_root(host_root))
    cases = junit_structure(render(report, "junit"))
    suite = ET.fromstring(render(report, "junit")).find("testsuite")
    assert suite.get("hostname") == GOLDEN_HOSTNAME and suite.get("timestamp") == report.generated_at
    assert [c.get("name") for c in cases] == [r.id for r in report.checks]
    for case, result in zip(cases, report.checks):
        assert case.get("classname") == f"kvmcheck.pvm-host_example_com.{result.id.split('.')[0]}"
        tags = [e.tag for e in case]
        expected = {"pass": [], "warn": ["skipped"], "fail": ["failure"], "skip": ["skipped"]}[result.status.value]
        assert tags == expected, (result.id, tags)
        if result.status == Status.FAIL:
            failure = case.find("failure")
            assert failure.get("message") == result.summary
            assert result.detail in failure.text and f"Fix: {result.remediation}" in failure.text
        if result.status == Status.WARN:  # neither a pass nor a failure (without --strict)
            warned = case.find("skipped")
            assert warned.get("type") == "warn" and warned.get("message") == f"WARNING: {result.summary}"
            assert f"Fix: {result.remediation}" in warned.text
        if result.status == Status.SKIP:
            assert case.find("skipped").get("message") == result.summary


def test_junit_strict_makes_warnings_failures_and_escapes_everything(host_root):
    report = hostile_report(golden_root(host_root), strict=True)
    cases = {c.get("name"): c for c in junit_structure(render(report, "junit"))}
    warned = [r for r in report.checks if r.status == Status.WARN]
    assert warned and all(cases[r.id].find("failure").get("type") == "warn" for r in warned)
    root = ET.fromstring(render(report, "junit"))
    assert int(root.get("failures")) == report.summary["fail"] + report.summary["warn"]
    first = cases[report.checks[0].id].find("failure")
    assert first.get("message") == report.checks[0].summary.replace("\n", " ")
    assert first.text.startswith(report.checks[0].detail)
    error = cases["plugin.crashy"].find("error")
    assert error.get("message") == "ValueError: bad | value" and error.text.startswith("Traceback")
    assert root.find("testsuite").get("hostname") == HOSTILE.replace("\n", " ")  # attributes are one line
    assert float(cases["plugin.crashy"].get("time")) == 0.012


# --- Prometheus textfile ----------------------------------------------------------------------------------------
def prom_families(text):
    from prometheus_client.parser import text_string_to_metric_families

    assert text.endswith("\n") and "\r" not in text
    lines = [ln for ln in text.splitlines() if ln]
    # HELP then TYPE then the samples, each family one contiguous group (the textfile collector's rules).
    seen, current = [], None
    for ln in lines:
        name = ln.split()[2] if ln.startswith("#") else re.match(r"[a-zA-Z_][a-zA-Z0-9_]*", ln).group(0)
        if ln.startswith("# HELP "):
            assert name not in seen
            seen.append(name)
            current = name
        else:
            assert name == current, f"{ln!r} outside its family's group"
    for name in seen:
        help_i = lines.index(next(ln for ln in lines if ln.startswith(f"# HELP {name} ")))
        assert lines[help_i + 1] == f"# TYPE {name} gauge"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert list(families) == seen
    for family in families.values():
        assert family.type == "gauge"
        for sample in family.samples:
            assert sample.timestamp is None  # the collector skips a file with any sample time stamp
            assert all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", k) and not k.startswith("__") for k in sample.labels)
        keys = [tuple(sorted(s.labels.items())) for s in family.samples]
        assert len(keys) == len(set(keys))
    return families


def test_prometheus_families_and_samples(host_root):
    report = golden_report(golden_root(host_root))
    families = prom_families(render(report, "prometheus"))
    assert list(families) == ["kvmcheck_check_status", "kvmcheck_ready", "kvmcheck_verdict", "kvmcheck_checks",
                              "kvmcheck_pending", "kvmcheck_last_run_timestamp_seconds", "kvmcheck_build_info"]
    host = {"host": GOLDEN_HOSTNAME}
    expected = {(r.id, s): float(r.status.value == s) for r in report.checks for s in STATUSES}
    got = {}
    for sample in families["kvmcheck_check_status"].samples:
        assert sample.labels.keys() == {"check", "host", "status"} and sample.labels["host"] == GOLDEN_HOSTNAME
        got[sample.labels["check"], sample.labels["status"]] = sample.value
    assert got == expected  # a state set: one series per status, exactly one of them 1
    assert [(s.labels, s.value) for s in families["kvmcheck_ready"].samples] == [(host, 0)]
    assert {s.labels["verdict"]: s.value for s in families["kvmcheck_verdict"].samples} == {
        "ready": 0, "not-ready": 1, "unknown": 0}  # a state set over the three verdicts
    assert {s.labels["status"]: s.value for s in families["kvmcheck_checks"].samples} == report.summary
    # one series per step, 0 where nothing waits for it (a rule can alert on any step without absent())
    from kvmcheck.core.model import PENDING_KINDS

    assert {s.labels["step"]: s.value for s in families["kvmcheck_pending"].samples} == dict.fromkeys(PENDING_KINDS, 0)
    assert [(s.labels, s.value) for s in families["kvmcheck_last_run_timestamp_seconds"].samples] == [(host, 1767225600)]
    assert [(s.labels, s.value) for s in families["kvmcheck_build_info"].samples] == [
        ({"host": GOLDEN_HOSTNAME, "strict": "false", "version": report.tool_version}, 1)]


def test_prometheus_hostile_hostname_round_trips(host_root):
    # From a root: /proc/sys/kernel/hostname holds a double quote and a backslash (its first line is the name).
    root = golden_root(host_root)
    (root / "proc/sys/kernel/hostname").write_text('we"ird\\host\n')
    proc = kvmcheck("check", "--root", str(root), "--format", "prometheus", "--only", "cpu.*")
    assert proc.returncode == 1, proc.stderr
    families = prom_families(proc.stdout)
    assert {s.labels["host"] for f in families.values() for s in f.samples} == {'we"ird\\host'}
    # A newline can only come from elsewhere (the API): it round-trips too.
    families = prom_families(render(hostile_report(root), "prometheus"))
    assert {s.labels["host"] for f in families.values() for s in f.samples} == {HOSTILE}
    status = {(s.labels["check"], s.labels["status"]): s.value for s in families["kvmcheck_check_status"].samples}
    assert status["plugin.crashy", "error"] == 1




def test_prometheus_output_is_written_atomically(host_root, tmp_path):
    folder = tmp_path / "textfile"
    folder.mkdir()
    target = folder / "kvmcheck.prom"
    target.write_text("# an older run\n")
    proc, seen = run_audited(["check", "--root", golden_root(host_root), "--format", "prometheus",
                              "--output", target])
    assert seen["exit"] == 1 and proc.stdout == ""
    assert sorted(os.listdir(folder)) == ["kvmcheck.prom"]  # complete, and no temporary file left
    families = prom_families(target.read_text())
    assert [s.value for s in families["kvmcheck_ready"].samples] == [0]
    # the temporary is opened relative to a descriptor of the folder (the audit hook sees only its name)
    mine = [os.path.basename(w) for w in seen["writes"] if os.path.basename(w).startswith(".kvmcheck.prom.")]
    assert mine and all(not w.endswith(".prom") for w in mine)  # the collector never sees a half-written .prom
    assert [[os.path.basename(a), os.path.basename(b)] for a, b in seen["renames"]] == [[mine[-1], "kvmcheck.prom"]]


# --- Nagios / Icinga ----------------------------------------------------------------------------------------------
STATUS_LINE = re.compile(r"KVMCHECK (OK|WARNING|CRITICAL|UNKNOWN) - ([^|]+?)(?: \|(.*))?")
PERFDATA = re.compile(r"('(?:[^'=]|'')+'|[^'= ]+)=(-?[0-9.]+|U)(s|ms|us|%|B|KB|MB|TB|c)?"
                      r"(?:;([@~0-9.:-]*)(?:;([@~0-9.:-]*)(?:;(-?[0-9.]*)(?:;(-?[0-9.]*))?)?)?)?")


def parse_plugin_output(text):
    """Split plugin output per the Monitoring Plugins guidelines: (state, text, {label: value}, long lines)."""
    assert text.endswith("\n")
    first, *long_output = text.splitlines()
    match = STATUS_LINE.fullmatch(first)
    assert match, first
    perf = {}
    for token in (match.group(3) or "").split():
        m = PERFDATA.fullmatch(token)
        assert m, token
        perf[m.group(1).strip("'").replace("''", "'")] = float(m.group(2))
    assert all("|" not in line for line in long_output)  # a later '|' would start more perfdata
    return match.group(1), match.group(2), perf, long_output


def test_nagios_output_follows_the_plugin_guidelines(host_root):
    report = golden_report(golden_root(host_root))
    state, summary, perf, long_output = parse_plugin_output(render(report, "nagios"))
    counts = ", ".join(f"{report.summary[s]} {s}" for s in ("fail", "error", "warn", "pass", "skip") if report.summary[s])
    assert (state, summary) == ("CRITICAL", f"not ready: {counts}: cpu.virt-flags")
    assert perf == {s: float(n) for s, n in report.summary.items()}
    assert render(report, "nagios").splitlines()[0].endswith(
        " | " + " ".join(f"'{s}'={report.summary[s]};;;0;" for s in STATUSES))
    non_pass = [r for r in report.checks if r.status != Status.PASS]
    assert len(long_output) == len(non_pass)
    assert long_output[0] == f"FAIL cpu.virt-flags: {report.checks[0].summary}"


def test_nagios_text_never_breaks_the_format(host_root):
    report = hostile_report(golden_root(host_root))
    text = render(report, "nagios")
    assert text.count("|") == 1
    state, summary, perf, long_output = parse_plugin_output(text)
    assert state == "CRITICAL" and perf["error"] == 1
    assert "FAIL cpu.virt-flags: a / pipe, \"quotes\", <tag> & amp, and a second line" in long_output
    assert "ERROR plugin.crashy: ValueError: bad / value" in long_output


@pytest.mark.parametrize("only, code, state", [("kernel.version", 0, "OK"), ("storage.images-dir", 1, "WARNING"),
                                                (None, 2, "CRITICAL")])
def test_nagios_exit_code_is_the_state(only, code, state, host_root):
    proc = kvmcheck("check", "--format", "nagios", "--root", str(golden_root(host_root)),
                    *(["--only", only] if only else []))
    assert (proc.returncode, proc.stderr) == (code, "")  # Nagios does not read stderr
    assert parse_plugin_output(proc.stdout)[0] == state


def test_nagios_usage_errors_are_unknown_and_other_formats_keep_2(host_root, tmp_path):
    root = str(golden_root(host_root))
    # Not the literal /nonexistent: conftest's rpmbuild runs (--define "_dbpath /nonexistent") create that directory.
    nonexistent = str(tmp_path / "nonexistent")
    missing = kvmcheck("check", "--format", "nagios", "--root", nonexistent)
    assert missing.returncode == 3 and parse_plugin_output(missing.stdout)[0] == "UNKNOWN"
    typo = kvmcheck("check", "--format=nagios", "--root", root, "--only", "nosuch.check")
    assert typo.returncode == 3 and parse_plugin_output(typo.stdout)[0] == "UNKNOWN"
    assert kvmcheck("check", "--root", root, "--only", "nosuch.check").returncode == 2
    assert kvmcheck("check", "--format", "text", "--root", nonexistent).returncode == 2


def test_nagios_code_matches_the_verdict(host_root):
    report = golden_report(golden_root(host_root), only=["cpu.64bit", "storage.images-dir"], strict=True)
    assert report.verdict == "not-ready" and nagios_code(report) == 1  # strict: not ready, but only warnings
    assert parse_plugin_output(render(report, "nagios"))[:2] == ("WARNING", "not ready: 1 warn, 1 pass: storage.images-dir")


# --- Markdown -----------------------------------------------------------------------------------------------------
def markdown_tables(text):
    """GFM pipe tables: [(header, [rows])]; cells split on unescaped '|', then \\| and HTML entities undone."""
    def cells(line):
        parts = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        return [html.unescape(p.strip().replace("\\|", "|").replace("<br>", "\n")) for p in parts]

    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and re.fullmatch(r"\|( *:?-+:? *\|)+", lines[i + 1]):
            header, rows = cells(line), []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                assert row.endswith("|") and len(cells(row)) == len(header), row
                rows.append(cells(row))
            tables.append((header, rows))
    return tables


def test_markdown_table_rows_are_the_checks(host_root):
    report = golden_report(golden_root(host_root))
    text = render(report, "markdown")
    [(header, rows)] = markdown_tables(text)
    assert header == ["Status", "Check", "Summary"]
    assert rows == [[r.status.value.upper(), f"`{r.id}`", r.summary] for r in report.checks]
    assert text.startswith(f"## kvmcheck: {GOLDEN_HOSTNAME} is **not ready** for KVM\n")
    attention = text.split("### What to do, root causes first, most severe first", 1)[1]
    for r in report.checks:
        if r.status in (Status.FAIL, Status.WARN):
            assert f"#### {r.status.value.upper()} `{r.id}`" in attention
            assert html.escape(r.remediation, quote=False) in attention


def test_markdown_escapes_pipes_newlines_and_markup(host_root):
    report = hostile_report(golden_root(host_root))
    text = render(report, "markdown")
    [(header, rows)] = markdown_tables(text)
    assert [row[2] for row in rows] == [r.summary for r in report.checks]  # '|' and newlines survive the table
    assert "<tag>" not in text and "<b>" not in text
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    assert rendered.count("<tr>") == len(report.checks) + 1  # a real GFM parser sees the same rows
    assert "<tag>" not in rendered and "<b>" not in rendered


def test_junit_survives_control_characters_from_the_host(host_root):
    import xml.etree.ElementTree as ET

    report = golden_report(golden_root(host_root))
    report.host["hostname"] = "bad\x01host\x1b[31m"
    report.checks[0] = replace(report.checks[0], summary="nul\x00 and bell\x07 in a summary")
    tree = ET.fromstring(render(report, "junit"))  # would raise "not well-formed" with them left in
    assert tree.find("testsuite").get("hostname") == "badhost[31m"


@pytest.mark.parametrize("fmt", ["text", "json", "html", "markdown", "junit", "prometheus", "nagios"])
def test_every_format_renders_when_host_facts_crashed(fmt, host_root, monkeypatch):
    """A crash while gathering the header (a kvmcheck bug) leaves a host block of nulls and the error;
    every format still renders it, and JSON still follows the schema."""
    from kvmcheck.facts.context import Context

    def crash(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(Context, "host_facts", crash)
    report = golden_report(host_root("intel-baremetal-vmx"))
    assert report.host["error"] == "host facts unavailable (RuntimeError: boom)"
    assert report.host["hostname"] is None and report.host["kvm_modules"] == {}
    out = render(report, fmt)
    assert out.strip()
    if fmt == "json":
        validate_report(json.loads(out))
    if fmt == "text":
        assert "unknown host" in out and "Host facts: host facts unavailable (RuntimeError: boom)" in out
