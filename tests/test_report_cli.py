# SPDX-License-Identifier: GPL-2.0-or-later
"""The report surface of the CLI: the JSON Schema, user templates, --exit-zero."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema

from conftest import SCHEMA, validate_report

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


def kvmcheck(*args):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


def test_schema_command_prints_a_valid_draft_2020_12_schema():
    proc = kvmcheck("schema")
    schema = json.loads(proc.stdout)
    assert proc.returncode == 0 and schema == json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"] == {"const": 2}


def test_json_reports_follow_the_schema_live_and_on_every_scenario(host_root):
    validate_report(json.loads(kvmcheck("check", "--format", "json").stdout))
    for scenario in ("pvm-host", "prepared-intel-host", "storage-nfs-space", "pkg-ubuntu-oneline", "arm64-kvm"):
        validate_report(json.loads(kvmcheck("check", "--root", str(host_root(scenario)), "-f", "json").stdout))


def test_the_schema_rejects_what_it_promises_to_reject(host_root):
    data = json.loads(kvmcheck("check", "--root", str(host_root("pvm-host")), "-f", "json").stdout)
    broken = json.loads(json.dumps(data))
    failing = next(c for c in broken["checks"] if c["status"] == "fail")
    failing["remediation"] = None  # a fail must say what to do
    errors = list(jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).iter_errors(broken))
    index = broken["checks"].index(failing)
    assert [list(e.path) for e in errors] == [["checks", index, "remediation"]]


def test_a_users_template_gets_the_documented_context(host_root, tmp_path):
    tpl = tmp_path / "mine.txt.j2"
    tpl.write_text("{{ host.hostname }} {{ verdict }} {{ summary.fail }}/{{ checks | length }} "
                   "{{ report.schema_version }} {{ nagios.state }}\n")
    proc = kvmcheck("check", "--root", str(host_root("intel-firmware-disabled")), "--template", str(tpl))
    assert proc.returncode == 1
    assert proc.stdout == f"None not-ready 3/{len(json.loads(kvmcheck('list', '-f', 'json').stdout))} 2 CRITICAL\n"


def test_a_users_html_template_is_escaped(host_root, tmp_path):
    root = host_root("amd-baremetal-svm")
    (root / "proc/sys/kernel/hostname").write_text("<b>evil</b>\n")
    tpl = tmp_path / "mine.html"
    tpl.write_text("<p>{{ host.hostname }}</p>\n")
    assert kvmcheck("check", "--root", str(root), "--template", str(tpl)).stdout == "<p>&lt;b&gt;evil&lt;/b&gt;</p>\n"


def test_a_broken_user_template_is_a_usage_error_without_traceback(host_root, tmp_path):
    tpl = tmp_path / "broken.j2"
    tpl.write_text("{{ no_such_variable }}\n")
    proc = kvmcheck("check", "--root", str(host_root("amd-baremetal-svm")), "--template", str(tpl))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no_such_variable" in proc.stderr
    assert kvmcheck("check", "--template", str(tmp_path / "missing.j2")).returncode == 2


def test_exit_zero_reports_but_never_stops_an_install(host_root, tmp_path):
    root = str(host_root("intel-firmware-disabled"))
    assert kvmcheck("check", "--root", root).returncode == 1
    out = tmp_path / "kvmcheck.log"
    proc = kvmcheck("check", "--root", root, "--exit-zero", "--output", str(out))
    assert proc.returncode == 0 and "Verdict: NOT READY" in out.read_text()
    assert kvmcheck("check", "--root", root, "--exit-zero", "--only", "no.such").returncode == 2


def test_template_keeps_its_final_newline_and_format_with_template_is_a_usage_error(host_root, tmp_path):
    tpl = tmp_path / "t.j2"
    tpl.write_text("{{ verdict }}\n")
    root = str(host_root("pvm-host"))
    proc = kvmcheck("check", "--root", root, "--template", str(tpl))
    assert proc.stdout == "not-ready\n"
    written = tmp_path / "out.txt"
    kvmcheck("check", "--root", root, "--template", str(tpl), "-o", str(written))
    assert written.read_text() == "not-ready\n"
    both = kvmcheck("check", "--root", root, "--template", str(tpl), "-f", "json")
    assert (both.returncode, both.stdout) == (2, "")
    assert "--template renders your own template, in place of --format" in both.stderr


def test_the_schema_versions_are_defined_once_and_the_schemas_say_them():
    """kvmcheck.core.model holds every schema version; each JSON Schema file names the one its output has."""
    from kvmcheck import report_file
    from kvmcheck.core.model import DIFF_SCHEMA_VERSION, FLEET_SCHEMA_VERSION, READ_FLEET_VERSIONS, \
        READ_REPORT_VERSIONS, SCHEMA_VERSION

    for name, version in (("report.schema.json", SCHEMA_VERSION), ("fleet.schema.json", FLEET_SCHEMA_VERSION)):
        assert json.loads(report_file(name))["properties"]["schema_version"] == {"const": version}, name
    diff = json.loads(report_file("diff.schema.json"))["$defs"]
    assert {kind: diff[kind]["properties"]["schema_version"] for kind in ("host", "fleet")} == {
        "host": {"const": DIFF_SCHEMA_VERSION}, "fleet": {"const": DIFF_SCHEMA_VERSION}}
    assert SCHEMA_VERSION in READ_REPORT_VERSIONS and FLEET_SCHEMA_VERSION in READ_FLEET_VERSIONS
