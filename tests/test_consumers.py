# SPDX-License-Identifier: GPL-2.0-or-later
"""Every output format fed to the real tool its operators consume it with, on three real outputs: the golden
report (every status but error), a live run on this machine, and an empty root (verdict unknown, exit 3).

  prometheus  promtool check metrics (Debian: prometheus)
  junit       Jenkins' junit-10.xsd with lxml (the XSD comes out of pytest's sdist on PyPI, never committed),
              and junitparser's counts
  nagios      the Monitoring Plugins guidelines: one status line, perfdata syntax, exit 0-3, on every error path
  json        check-jsonschema against 'kvmcheck schema' (SCHEMAS: one row per command that has a schema)
  html        html5lib's strict parser (any parse error fails); tests/test_report_html.py renders it in Chromium
and the operator conventions: shell completion through bash itself, the man page through man(1), the systemd
units through systemd-analyze verify. A consumer that is absent skips, saying what to install.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from test_plugin import install_fake_distribution
from test_report_formats import PERFDATA, STATUS_LINE, golden_report, golden_root

from kvmcheck.core.render import render

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]
SOURCES = ("golden", "live", "empty-root")
CACHE = Path(os.environ.get("KVMCHECK_TEST_CACHE", Path.home() / ".cache" / "kvmcheck-test"))


def kvmcheck(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env or {})))


@functools.lru_cache(maxsize=None)
def live(fmt: str) -> subprocess.CompletedProcess:
    """kvmcheck check -f FMT on this machine, once per format in a session (a run takes about a second)."""
    proc = kvmcheck("check", "-f", fmt)
    assert proc.returncode in (0, 1, 2, 3) if fmt == "nagios" else proc.returncode in (0, 1, 3), proc.stderr
    return proc


@pytest.fixture
def output(request, host_root, tmp_path):
    """output(fmt) -> the report text from the source this test is parametrized with."""
    source = request.param

    def make(fmt: str) -> str:
        if source == "golden":
            return render(golden_report(golden_root(host_root)), fmt)
        if source == "live":
            return live(fmt).stdout
        empty = tmp_path / "empty"
        empty.mkdir(exist_ok=True)
        proc = kvmcheck("check", "--root", empty, "-f", fmt)
        assert proc.returncode == 3, (proc.returncode, proc.stderr)  # unknown, in every format
        return proc.stdout

    return make


by_source = pytest.mark.parametrize("output", SOURCES, indirect=True)


def need(tool: str) -> str:
    path = shutil.which(tool, path=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    if path is None:
        pytest.skip(f"{tool} is not installed (.ci/apt-packages or the test extras list it)")
    return path


# --- Prometheus: promtool ---------------------------------------------------------------------------------------
@by_source
def test_promtool_accepts_the_textfile(output):
    promtool = need("promtool")
    proc = subprocess.run([promtool, "check", "metrics"], input=output("prometheus"), capture_output=True,
                          text=True, timeout=60)
    # promtool prints each lint problem and exits 3; a clean file gives no output at all.
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


# --- JUnit: Jenkins' junit-10.xsd and junitparser ----------------------------------------------------------------
@pytest.fixture(scope="session")
def junit_xsd():
    """Jenkins' junit-10.xsd (Gregory Boissinot's, MIT), as pytest's sdist on PyPI ships it for its own tests:
    fetched with pip once and kept in $KVMCHECK_TEST_CACHE (default ~/.cache/kvmcheck-test)."""
    etree = pytest.importorskip("lxml.etree", reason="lxml is in the test extras: pip install -e '.[test]'")
    version = pytest.__version__
    cached = CACHE / f"junit-10.xsd-from-pytest-{version}"
    if not cached.exists():
        download = CACHE / "download"
        download.mkdir(parents=True, exist_ok=True)
        # --no-binary only for pytest itself: its build requirements still come as wheels (6 s, not 70).
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                               "pytest", f"pytest=={version}", "-d", str(download)],
                              capture_output=True, text=True, timeout=600)
        sdist = download / f"pytest-{version}.tar.gz"
        if proc.returncode != 0 or not sdist.exists():
            pytest.skip(f"cannot fetch pytest {version}'s sdist from PyPI for junit-10.xsd: {proc.stderr[-300:]}")
        with tarfile.open(sdist) as tar:
            member = tar.extractfile(f"pytest-{version}/testing/example_scripts/junit-10.xsd")
            data = member.read()
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(cached)
    return etree.XMLSchema(etree.fromstring(cached.read_bytes()))


def assert_valid_junit(xsd, text: str):
    from lxml import etree

    doc = etree.fromstring(text.encode("utf-8"))
    assert xsd.validate(doc), "\n".join(str(e) for e in xsd.error_log)


@by_source
def test_junit_follows_jenkins_xsd(output, junit_xsd):
    assert_valid_junit(junit_xsd, output("junit"))


def junit_counts(text: str) -> dict:
    """What a CI plugin reads: junitparser's counts from the testcases themselves, and the suite's attributes."""
    junitparser = pytest.importorskip("junitparser", reason="junitparser is in the test extras")
    xml = junitparser.JUnitXml.fromstring(text.encode("utf-8"))
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    declared = {k: getattr(suite, k) for k in ("tests", "failures", "errors", "skipped")}
    counted = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for case in suite:
        counted["tests"] += 1
        for result in case.result:
            counted[{"Failure": "failures", "Error": "errors", "Skipped": "skipped"}[type(result).__name__]] += 1
    assert counted == declared
    return counted


@pytest.mark.parametrize("strict", [False, True])
def test_junitparser_counts_equal_the_summary(host_root, strict, junit_xsd):
    report = golden_report(golden_root(host_root), strict=strict)
    s = report.summary
    assert s["warn"] and s["fail"] and s["skip"]  # the golden root has each of them
    text = render(report, "junit")
    assert_valid_junit(junit_xsd, text)
    # Warnings are skipped tests (shown, not failing the build); --strict makes them failures.
    assert junit_counts(text) == {"tests": len(report.checks), "errors": s["error"],
                                  "failures": s["fail"] + (s["warn"] if strict else 0),
                                  "skipped": s["skip"] + (0 if strict else s["warn"])}


@pytest.mark.parametrize("output", ["live", "empty-root"], indirect=True)
def test_junitparser_counts_equal_the_declared_counts(output):
    junit_counts(output("junit"))


# --- Nagios: the Monitoring Plugins guidelines --------------------------------------------------------------------
STATE_CODE = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def assert_plugin_output(stdout: str, code: int) -> re.Match:
    """One status line first, its state agreeing with the exit code; perfdata 'label'=value[UOM];warn;crit;min;max;
    long output after it holds no '|' (a second perfdata block would need its own '|' rules)."""
    lines = stdout.splitlines()
    assert lines and stdout.endswith("\n"), stdout
    status = STATUS_LINE.fullmatch(lines[0])
    assert status, lines[0]
    assert STATE_CODE[status.group(1)] == code
    if status.group(3) is not None:
        for item in status.group(3).split():
            assert PERFDATA.fullmatch(item), item
    assert not any("|" in ln or ln.startswith("KVMCHECK ") for ln in lines[1:]), lines[1:]
    return status


@by_source
def test_nagios_output_follows_the_plugin_guidelines(output, request):
    text = output("nagios")
    code = {"golden": 2, "empty-root": 3}.get(request.node.callspec.params["output"])
    if code is None:
        code = live("nagios").returncode
    status = assert_plugin_output(text, code)
    assert status.group(3) is not None  # perfdata on every real run


CRASHES_AT_IMPORT = {
    # a third-party check module that calls sys.exit(1): exit 1 would read as WARNING, with nothing printed
    "exit": "import sys\nsys.exit(1)\n",
    # a BaseException that no 'except Exception' catches
    "base": "class Boom(BaseException):\n    pass\n\nraise Boom('plugin | exploded\\nover two lines')\n",
}


@pytest.fixture(params=sorted(CRASHES_AT_IMPORT))
def crashing_site(request, tmp_path):
    site = tmp_path / "site"
    install_fake_distribution(site, "kvmcheck-crash-plugin", {"crash": "kvmcheck_crash.module"},
                              {"kvmcheck_crash/__init__.py": "", "kvmcheck_crash/module.py": CRASHES_AT_IMPORT[request.param]})
    return site


def nagios_error(*args, env=None):
    proc = kvmcheck("check", "-f", "nagios", "--only", "cpu.*", *args, env=env)
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    assert len(proc.stdout.splitlines()) == 1 and proc.stdout.startswith("KVMCHECK UNKNOWN - "), proc.stdout
    assert_plugin_output(proc.stdout, 3)
    return proc


def test_nagios_crash_prints_one_unknown_line(crashing_site):
    proc = nagios_error(env={"PYTHONPATH": str(crashing_site)})
    assert proc.stdout.startswith("KVMCHECK UNKNOWN - kvmcheck crashed: ")
    assert "--debug" in proc.stdout and proc.stderr == ""
    debug = nagios_error("--debug", env={"PYTHONPATH": str(crashing_site)})
    assert "Traceback (most recent call last)" in debug.stderr  # for the bug report, never on stdout


SLOW_CHECK = """
import os, time
from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check


@check("slow.sleeps", "A check that takes its time", reads=())
def sleeps(ctx):
    \"\"\"What: nothing.  Why: a run to interrupt.  Fix: none.\"\"\"
    open(os.environ["KVMCHECK_TEST_STARTED"], "w").close()
    time.sleep(60)
    return Outcome.passed("slept")
"""


def test_nagios_interrupted_run_prints_one_unknown_line(tmp_path):
    # A real SIGINT while a check runs: typer turns it into exit 130, which is no plugin state.
    import signal
    import time

    site, started = tmp_path / "site", tmp_path / "started"
    install_fake_distribution(site, "kvmcheck-slow-plugin", {"slow": "kvmcheck_slow.module"},
                              {"kvmcheck_slow/__init__.py": "", "kvmcheck_slow/module.py": SLOW_CHECK})
    env = dict(os.environ, PYTHONPATH=str(site), KVMCHECK_TEST_STARTED=str(started), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(CLI + ["check", "-f", "nagios", "--only", "slow.*", "--timeout", "120"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, (proc.returncode, stdout, stderr)
    assert stdout.startswith("KVMCHECK UNKNOWN - ") and len(stdout.splitlines()) == 1, stdout


@pytest.mark.parametrize("case", ["malformed-config", "no-such-profile", "unwritable-output", "broken-template",
                                  "usage", "no-such-root", "empty-selection"])
def test_nagios_error_paths_print_one_unknown_line(case, tmp_path):
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[settings\nmin_kernel = |\n")
    template = tmp_path / "broken.j2"
    template.write_text("{{ report.no_such_attribute.deeper }}\n")
    args = {
        "malformed-config": ["--config", bad_config],
        "no-such-profile": ["--profile", "nosuch"],
        "unwritable-output": ["-o", "/proc/x"],
        "broken-template": ["--template", template],
        "usage": ["--no-such-option"],
        "no-such-root": ["--root", tmp_path / "missing"],
        "empty-selection": ["--skip", "*"],
    }[case]
    proc = nagios_error(*args)
    assert proc.stdout.startswith(("KVMCHECK UNKNOWN - usage error: ", "KVMCHECK UNKNOWN - configuration error: ",
                                   "KVMCHECK UNKNOWN - output error: ", "KVMCHECK UNKNOWN - template error: "))
    assert proc.stderr == ""  # Icinga 2 would append it to the output: a second line


# --- JSON: check-jsonschema against the schema the CLI prints -----------------------------------------------------
# One row per command whose JSON has a schema: its 'kvmcheck schema' arguments, and how a test gets a report of it
# from the source it is parametrized with. Fleet and diff reports join as rows ("fleet": ["--fleet"], ...).
SCHEMAS = {
    "check": ([], lambda output, tmp_path: output("json")),
}


@by_source
@pytest.mark.parametrize("command", sorted(SCHEMAS))
def test_check_jsonschema_accepts_the_report(output, command, tmp_path):
    checker = need("check-jsonschema")
    schema_args, report_of = SCHEMAS[command]
    schema = kvmcheck("schema", *schema_args)
    assert schema.returncode == 0, schema.stderr
    (tmp_path / "schema.json").write_text(schema.stdout)
    (tmp_path / "report.json").write_text(report_of(output, tmp_path))
    proc = subprocess.run([checker, "--schemafile", str(tmp_path / "schema.json"), str(tmp_path / "report.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- HTML: html5lib, strict ---------------------------------------------------------------------------------------
@by_source
def test_html_parses_without_a_single_html5_error(output):
    html5lib = pytest.importorskip("html5lib", reason="html5lib is in the test extras")
    parser = html5lib.HTMLParser(strict=True)
    parser.parse(output("html"))  # raises html5lib.html5parser.ParseError at the first parse error
    assert parser.errors == []


# --- shell completion, through bash itself ------------------------------------------------------------------------
def bash_with_kvmcheck(script: str, home: Path) -> subprocess.CompletedProcess:
    """bash runs SCRIPT with the installed kvmcheck first on PATH (bash is the shell typer detects: our parent)."""
    bash = need("bash")
    if not (BIN / "kvmcheck").exists():
        pytest.skip("no kvmcheck console script beside this Python (pip install -e '.[test]')")
    env = dict(os.environ, PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), HOME=str(home),
               PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([bash, "--norc", "--noprofile", "-c", script], capture_output=True, text=True, env=env,
                          timeout=120)


def test_bash_completes_commands_options_and_values(tmp_path):
    completions = {}
    for words in ("kvmcheck ch", "kvmcheck check --fo", "kvmcheck check --format ''"):
        proc = bash_with_kvmcheck(
            "source <(kvmcheck --show-completion) || exit 9\n"
            f"COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n"
            "_kvmcheck_completion kvmcheck\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
            "true", tmp_path)  # 'true': bash stays the parent of kvmcheck, the shell typer detects
        assert proc.returncode == 0, proc.stderr
        completions[words] = [ln for ln in proc.stdout.splitlines() if ln]
    assert completions["kvmcheck ch"] == ["check"]
    assert completions["kvmcheck check --fo"] == ["--format"]
    assert completions["kvmcheck check --format ''"] == ["text", "json", "html", "markdown", "junit", "prometheus",
                                                        "nagios"]


def test_install_completion_writes_to_the_users_bash_setup(tmp_path):
    proc = bash_with_kvmcheck("kvmcheck --install-completion; true", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "bash completion installed in" in proc.stdout
    script = tmp_path / ".bash_completions" / "kvmcheck.sh"
    assert "_KVMCHECK_COMPLETE=complete_bash" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()


def test_completion_options_are_the_programs_not_checks():
    top, sub = kvmcheck("--help"), kvmcheck("check", "--help")
    assert "--install-completion" in top.stdout and "--show-completion" in top.stdout
    assert "completion" not in sub.stdout


# --- the man page -------------------------------------------------------------------------------------------------
MAN_PAGE = REPO / "man" / "kvmcheck.1"


def test_man_page_is_generated_from_the_current_cli():
    proc = subprocess.run([sys.executable, "-m", "kvmcheck.tools.manpage"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == MAN_PAGE.read_text(), (
        "man/kvmcheck.1 is out of date: python -m kvmcheck.tools.manpage > man/kvmcheck.1")


def test_man_renders_the_page_without_warnings():
    man = need("man")
    if shutil.which("groff") is None and shutil.which("nroff") is None:
        pytest.skip("groff is not installed (Debian: groff-base, a dependency of man-db)")
    proc = subprocess.run([man, "--warnings", "-l", str(MAN_PAGE)], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, MANWIDTH="100", MANPAGER="cat",
                                   PAGER="cat", LC_ALL="C.UTF-8"))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    text = re.sub(".\b", "", proc.stdout)  # grotty's overstrike bold and underline, on a pipe
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "FILES", "SEE ALSO"):
        assert re.search(rf"^{heading}$", text, re.M), heading
    for command in ("check", "list", "explain", "profiles", "fleet", "diff", "snapshot", "schema"):
        assert re.search(rf"^\s+kvmcheck {command}\b", text, re.M), command
    # Options keep real hyphens (roff \-) and nothing is hyphenated (.nh): copied from the page, they work.
    assert "--format [text|json|html|markdown|junit|prometheus|nagios]" in text and "\u2010" not in text


# --- the systemd units --------------------------------------------------------------------------------------------
SYSTEMD = REPO / "examples" / "systemd"


def test_systemd_units_verify(tmp_path):
    analyze = need("systemd-analyze")
    kvmcheck_bin = BIN / "kvmcheck"
    if not kvmcheck_bin.exists():
        pytest.skip("no kvmcheck console script beside this Python (pip install -e '.[test]')")
    units = []
    for unit in sorted(SYSTEMD.glob("kvmcheck-*")):
        text = unit.read_text()
        # The one edit an installation makes: where the command is (verify checks that ExecStart= exists).
        (tmp_path / unit.name).write_text(text.replace("/usr/bin/kvmcheck", str(kvmcheck_bin)))
        units.append(str(tmp_path / unit.name))
    assert [Path(u).name for u in units] == ["kvmcheck-textfile.service", "kvmcheck-textfile.timer"]
    # --man=no: Documentation=man:kvmcheck(1) is only there once the page is installed. No systemd need be running.
    proc = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_systemd_service_runs_the_textfile_command_and_may_write_only_there():
    service = (SYSTEMD / "kvmcheck-textfile.service").read_text()
    settings = {}
    for line in service.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    textfile = "/var/lib/prometheus/node-exporter"
    assert settings["ExecStart"] == [f"/usr/bin/kvmcheck check -f prometheus -o {textfile}/kvmcheck.prom --exit-zero"]
    assert settings["ProtectSystem"] == ["strict"] and settings["ReadWritePaths"] == [textfile]
    assert settings["NoNewPrivileges"] == ["yes"] and settings["PrivateTmp"] == ["yes"]
    # The guest probe needs /dev/kvm: no PrivateDevices= (it would hide the node), a closed device policy instead.
    assert "PrivateDevices" not in settings and settings["DeviceAllow"] == ["/dev/kvm rw"]
    assert settings["DevicePolicy"] == ["closed"]
