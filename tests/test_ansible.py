# SPDX-License-Identifier: GPL-2.0-or-later
"""The Ansible collection in ansible/ (kvmcheck.kvmcheck), run for real with ansible-core on this machine.

Every inventory host is this machine (ansible_connection=local) running the venv's Python, pointed at a different
captured root through the host var kvmcheck_root. No ansible.cfg, ANSIBLE_* variable or ~/.ansible of the person
running the tests is used: each test writes its own configuration and keeps Ansible's state under tmp_path.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import validate_report
from pyz_build import kvmcheck_pyz

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections" / "kvmcheck" / "kvmcheck"
MODULES = COLLECTION / "plugins" / "modules"
MODULE = "kvmcheck.kvmcheck.kvmcheck_facts"
BIN = Path(sys.executable).parent
TIMEOUT = 300  # seconds for one ansible run; the ones here take about 5-10 s

pytestmark = pytest.mark.skipif(not (BIN / "ansible-playbook").exists() or importlib.util.find_spec("ansible") is None,
                                reason="needs ansible-core installed next to this Python (pip install ansible-core)")

# Captured roots and the verdict kvmcheck gives each (tests/hosts; see tests/test_scenarios.py).
ROOTS = {
    "hv-ready-intel": ("prepared-intel-host", "ready"),
    "hv-ready-arm64": ("arm64-kvm", "ready"),
    "hv-pvm": ("pvm-host", "not-ready"),
    "hv-vt-off": ("intel-firmware-disabled", "not-ready"),
}


# ansible-core 2.19 ships no json stdout callback (it lives in ansible.posix): this one prints, at the end, every
# task's result per host and the stats, as {"plays": [{"tasks": [{"task": {"name"}, "hosts": {host: result}}]}],
# "stats": {host: {...}}} (the shape of ansible.posix.json).
JSON_CALLBACK = """
import json

from ansible.module_utils.common.json import AnsibleJSONEncoder
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "kvmcheck_test_json"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plays = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.plays[-1]["tasks"].append({"task": {"name": task.get_name()}, "hosts": {}})

    def _record(self, result, **extra):
        # ansible-core >= 2.19 exposes result.result/result.host; older releases only _result/_host.
        data = getattr(result, "result", None)
        host = getattr(result, "host", None)
        record = dict(data if data is not None else result._result, **extra)
        if self.plays and self.plays[-1]["tasks"]:
            self.plays[-1]["tasks"][-1]["hosts"][(host if host is not None else result._host).name] = record

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        hosts = {h: stats.summarize(h) for h in sorted(stats.processed)}
        self._display.display(json.dumps({"plays": self.plays, "stats": hosts}, cls=AnsibleJSONEncoder))
"""


@pytest.fixture
def ansible_env(tmp_path):
    """Environment for ansible-playbook/ansible/ansible-doc: own config, state under tmp, JSON on stdout."""
    callbacks = tmp_path / "callback_plugins"
    callbacks.mkdir()
    (callbacks / "kvmcheck_test_json.py").write_text(JSON_CALLBACK)
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text(
        "[defaults]\n"
        f"collections_path = {COLLECTIONS}\n"
        "collections_scan_sys_path = False\n"
        "host_key_checking = False\n"
        "retry_files_enabled = False\n"
        "forks = 8\n"
        "timeout = 30\n"
        "task_timeout = 120\n"
        "interpreter_python = auto_silent\n"
        "nocolor = True\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    home = tmp_path / "ansible-home"
    env.update(
        ANSIBLE_CONFIG=str(cfg),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_CALLBACK_PLUGINS=str(callbacks),
        ANSIBLE_STDOUT_CALLBACK="kvmcheck_test_json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        LC_ALL="C.UTF-8",
    )
    return env


def inventory(path: Path, hosts: dict, python: str = sys.executable) -> Path:
    """An INI inventory: hosts maps a name to its kvmcheck_root (or to a dict of host vars)."""
    lines = ["[kvmhosts]"]
    for name, hostvars in hosts.items():
        if not isinstance(hostvars, dict):
            hostvars = {"kvmcheck_root": hostvars}
        lines.append(" ".join([name] + [f"{k}={v}" for k, v in hostvars.items()]))
    lines += ["[kvmhosts:vars]", "ansible_connection=local", f"ansible_python_interpreter={python}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(argv, env, cwd):
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    return proc


def playbook(argv, env, cwd):
    """ansible-playbook with the json stdout callback: (returncode, parsed output)."""
    proc = run([str(BIN / "ansible-playbook")] + argv, env, cwd)
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pytest.fail(f"ansible-playbook printed no JSON (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}")
    return proc.returncode, out, proc.stderr


def task_results(out, name):
    """{host: result} of the (first) task called name, in whichever play."""
    tasks = [task for play in out["plays"] for task in play["tasks"]]
    for task in tasks:
        if task["task"]["name"] == name:
            return task["hosts"]
    raise AssertionError(f"no task {name!r} in {[t['task']['name'] for t in tasks]}")


def fleet_available() -> bool:
    return importlib.util.find_spec("kvmcheck.tools.fleet") is not None


def test_ansible_doc_renders_the_module_documentation(ansible_env, tmp_path):
    proc = run([str(BIN / "ansible-doc"), "-M", str(MODULES), MODULE], ansible_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "[ERROR]" not in text + proc.stderr
    for word in ("kvmcheck_facts", "OPTIONS", "fail_on_not_ready", "EXAMPLES", "RETURN VALUES", "failed_checks",
                 "ansible_facts"):
        assert word in text, word
    # The documented options are exactly the module's argument_spec, with the same types and defaults.
    proc = run([str(BIN / "ansible-doc"), "-M", str(MODULES), "--json", MODULE], ansible_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)[MODULE]
    assert doc["doc"]["module"] == "kvmcheck_facts"
    spec = argument_spec()
    assert set(doc["doc"]["options"]) == set(spec)
    for name, option in doc["doc"]["options"].items():
        assert option["type"] == spec[name]["type"], name
        assert option.get("default") == spec[name].get("default"), name
        assert option.get("elements") == spec[name].get("elements"), name
    assert "kvmcheck" in doc["return"]["ansible_facts"]["contains"]
    assert "kvmcheck.kvmcheck.kvmcheck_facts:" in doc["examples"]
    # Without the collection on the collections path, -M alone finds the module by its short name.
    (tmp_path / "no-collections").mkdir()
    proc = run([str(BIN / "ansible-doc"), "-M", str(MODULES), "kvmcheck_facts"],
               dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "no-collections")), tmp_path)
    assert proc.returncode == 0 and "fail_on_not_ready" in proc.stdout, proc.stdout + proc.stderr


def argument_spec():
    """The argument_spec the module hands to AnsibleModule, captured without running kvmcheck."""
    spec = importlib.util.spec_from_file_location("kvmcheck_facts_under_test", MODULES / "kvmcheck_facts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    captured = {}

    class Captured(Exception):
        pass

    def fake(**kwargs):
        captured.update(kwargs)
        raise Captured

    module.AnsibleModule = fake
    with pytest.raises(Captured):
        module.main()
    assert captured["supports_check_mode"] is True
    return captured["argument_spec"]


def test_audit_playbook_writes_one_report_per_host_and_the_fleet_report(ansible_env, host_root, tmp_path):
    roots = {name: host_root(capture) for name, (capture, _) in ROOTS.items()}
    inv = inventory(tmp_path / "inventory.ini", roots)
    out_dir = tmp_path / "reports"
    with_fleet = fleet_available()
    rc, out, stderr = playbook(
        ["-i", str(inv), "kvmcheck.kvmcheck.audit",
         "-e", f"kvmcheck_report_dir={out_dir}", "-e", f"kvmcheck_cli={BIN / 'kvmcheck'}",
         "-e", f"kvmcheck_fleet={with_fleet}", "-e", f"kvmcheck_pyz={kvmcheck_pyz()}"],
        ansible_env, tmp_path)
    assert rc == 0, (json.dumps(out["stats"]), stderr[-3000:])
    assert set(out["stats"]) == set(ROOTS) | {"localhost"} or set(out["stats"]) == set(ROOTS)
    for host in ROOTS:
        assert out["stats"][host]["failures"] == 0 and out["stats"][host]["unreachable"] == 0, out["stats"][host]

    # kvmcheck was importable, so nothing was installed.
    assert all(r.get("skipped") for r in task_results(out, "Install kvmcheck with pip for the target's interpreter")
               .values())
    audit = task_results(out, "Run kvmcheck")
    for host, (_, verdict) in ROOTS.items():
        result = audit[host]
        assert result["changed"] is False
        assert result["verdict"] == verdict == result["ansible_facts"]["kvmcheck"]["verdict"]
        assert result["ready"] is (verdict == "ready")
        assert bool(result["failed_checks"]) is (verdict == "not-ready")
    assert "cpu.virt-flags" in audit["hv-pvm"]["failed_checks"]
    assert {"cpu.virt-flags", "firmware.vt-enabled"} <= set(audit["hv-vt-off"]["failed_checks"])

    # One JSON report per host on the controller, each a valid kvmcheck report of its own root.
    files = sorted(p.name for p in (out_dir / "hosts").iterdir())
    assert files == sorted(f"{h}.json" for h in ROOTS)
    for host, (_, verdict) in ROOTS.items():
        report = validate_report(json.loads((out_dir / "hosts" / f"{host}.json").read_text()))
        assert report["verdict"] == verdict
        assert report["host"]["root"] == str(roots[host])

    if not with_fleet:
        pytest.skip("kvmcheck fleet is not implemented yet (no kvmcheck.tools.fleet): per-host reports checked, "
                    "fleet step skipped with kvmcheck_fleet=false")
    fleet_file = out_dir / "fleet.json"
    assert fleet_file.exists()
    fleet = json.loads(fleet_file.read_text())
    totals = fleet["totals"]
    assert (totals["hosts"], totals["ready"], totals["not_ready"]) == (4, 2, 2), totals
    verdicts = {h["host"]: h["verdict"] for h in fleet["hosts"]}
    assert sorted(verdicts.values()) == ["not-ready", "not-ready", "ready", "ready"]


def test_module_in_check_mode_reports_facts_and_fails_only_when_asked(ansible_env, host_root, tmp_path):
    no_kvmcheck = tmp_path / "python-without-kvmcheck"  # the venv's Python without site-packages
    no_kvmcheck.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    no_kvmcheck.chmod(0o755)
    pvm = host_root("pvm-host")
    inv = inventory(tmp_path / "inventory.ini", {
        "hv-ready": host_root("prepared-intel-host"),
        "hv-pvm": pvm,
        "hv-bare": {"kvmcheck_root": "/", "ansible_python_interpreter": no_kvmcheck},
        "hv-no-root": tmp_path / "no-such-root",
        "hv-typo": {"kvmcheck_root": tmp_path, "kvmcheck_only": "no-such-check.*"},
        "hv-pvm-sandbox": {"kvmcheck_root": pvm, "kvmcheck_profile": "pvm-sandbox"},
        "hv-bad-profile": {"kvmcheck_root": tmp_path, "kvmcheck_profile": "no-such-profile"},
        "hv-empty": empty_dir(tmp_path / "empty-root"),  # a mistyped Kickstart root: no verdict, never ready
        "hv-pyz": {"kvmcheck_root": pvm, "ansible_python_interpreter": no_kvmcheck, "kvmcheck_pyz": kvmcheck_pyz()},
        "hv-no-pyz": {"kvmcheck_root": pvm, "kvmcheck_pyz": tmp_path / "no-such.pyz"},
    })
    play = tmp_path / "check.yml"
    play.write_text("""\
- hosts: kvmhosts
  gather_facts: false
  tasks:
    - name: audit
      kvmcheck.kvmcheck.kvmcheck_facts:
        root: "{{ kvmcheck_root }}"
        only: "{{ kvmcheck_only | default(omit) }}"
        profile: "{{ kvmcheck_profile | default(omit) }}"
        pyz: "{{ kvmcheck_pyz | default(omit) }}"
        skip: ["storage.*"]
        timeout: 30
      register: audit
      ignore_errors: true
    - name: facts stay for later tasks
      ansible.builtin.debug:
        msg: "{{ ansible_facts.kvmcheck.verdict }}"
      when: audit is succeeded
    - name: strict
      kvmcheck.kvmcheck.kvmcheck_facts:
        root: "{{ kvmcheck_root }}"
        only: ["cpu.*", "kvm.*"]
        profile: "{{ kvmcheck_profile | default(omit) }}"
        fail_on_not_ready: true
      ignore_errors: true
      when: audit is succeeded
""")
    rc, out, stderr = playbook(["-i", str(inv), str(play), "--check"], ansible_env, tmp_path)
    assert rc == 0, (json.dumps(out["stats"]), stderr[-3000:])

    audit = task_results(out, "audit")
    for host, verdict in (("hv-ready", "ready"), ("hv-pvm", "not-ready")):
        result = audit[host]
        assert result["changed"] is False and not result.get("failed") and not result.get("skipped"), result
        report = result["ansible_facts"]["kvmcheck"]
        assert report["verdict"] == verdict and report["schema_version"] == 2
        assert result["pending"] == report.get("pending", {}) == {}  # nothing configured waits on these roots
        assert not [c for c in report["checks"] if c["id"].startswith("storage.")]
    assert task_results(out, "facts stay for later tasks")["hv-pvm"]["msg"] == "not-ready"

    # Not importable: a clear failure that says how to install kvmcheck.
    bare = audit["hv-bare"]
    assert bare["failed"] is True and bare["changed"] is False
    assert "kvmcheck is not importable" in bare["msg"] and "kvmcheck.pyz" in bare["msg"], bare["msg"]
    assert "pip install kvmcheck" in bare["msg"]

    # kvmcheck from kvmcheck.pyz, for a Python that has no kvmcheck; a missing pyz says so.
    assert audit["hv-pyz"]["verdict"] == "not-ready" and not audit["hv-pyz"].get("failed"), audit["hv-pyz"]
    assert audit["hv-no-pyz"]["failed"] is True and "is not a file" in audit["hv-no-pyz"]["msg"]

    # Bad arguments: a failure saying what is wrong, never a traceback.
    assert audit["hv-no-root"]["failed"] is True and "is not a directory" in audit["hv-no-root"]["msg"]
    assert audit["hv-typo"]["failed"] is True and "kvmcheck could not run" in audit["hv-typo"]["msg"]
    assert "no-such-check" in audit["hv-typo"]["msg"]
    assert audit["hv-bad-profile"]["failed"] is True and "no-such-profile" in audit["hv-bad-profile"]["msg"]

    # A profile is handed to kvmcheck: PVM is what a pvm-sandbox host is for.
    sandbox = audit["hv-pvm-sandbox"]
    assert sandbox["verdict"] == "ready" and sandbox["ansible_facts"]["kvmcheck"]["config"]["profile"] == "pvm-sandbox"
    assert not strict_failed(out, "hv-pvm-sandbox")

    # fail_on_not_ready: the ready host passes, the other fails naming its failing checks.
    strict = task_results(out, "strict")
    assert not strict["hv-ready"].get("failed") and strict["hv-ready"]["changed"] is False
    assert strict["hv-pvm"]["failed"] is True and strict["hv-pvm"]["changed"] is False
    assert "cpu.virt-flags" in strict["hv-pvm"]["msg"] and "not ready" in strict["hv-pvm"]["msg"]
    assert strict["hv-pvm"]["failed_checks"] == ["cpu.virt-flags"]
    # unknown: nothing failed, but nothing proves the host ready either; fail_on_not_ready fails it too.
    assert audit["hv-empty"]["verdict"] == "unknown" and audit["hv-empty"]["ready"] is False
    assert not audit["hv-empty"].get("failed")
    empty = strict["hv-empty"]
    assert empty["failed"] is True and empty["verdict"] == "unknown" and empty["failed_checks"] == []
    assert empty["msg"].startswith("no verdict for this host (unknown): this root holds no installed system")


def empty_dir(path):
    path.mkdir()
    return path


def strict_failed(out, host):
    return task_results(out, "strict")[host].get("failed", False)


def test_audit_playbook_in_check_mode_installs_nothing_and_still_reports(ansible_env, host_root, tmp_path):
    inv = inventory(tmp_path / "inventory.ini", {"hv-pvm": host_root("pvm-host")})
    out_dir = tmp_path / "reports"
    rc, out, stderr = playbook(
        ["-i", str(inv), "kvmcheck.kvmcheck.audit", "--check", "-e", f"kvmcheck_report_dir={out_dir}",
         "-e", f"kvmcheck_pyz={kvmcheck_pyz()}",
         "-e", "kvmcheck_fleet=false", "-e", "kvmcheck_fail_on_not_ready=true"], ansible_env, tmp_path)
    # kvmcheck_fail_on_not_ready fails the not-ready host, but only after its report was written.
    assert rc == 2, (json.dumps(out["stats"]), stderr[-3000:])
    assert out["stats"]["hv-pvm"]["failures"] == 1
    failure = task_results(out, "Fail the hosts that are not ready")["hv-pvm"]
    assert failure["failed"] is True and "cpu.virt-flags" in failure["msg"]
    result = task_results(out, "Run kvmcheck")["hv-pvm"]
    assert result["changed"] is False and result["ansible_facts"]["kvmcheck"]["verdict"] == "not-ready"
    assert json.loads((out_dir / "hosts" / "hv-pvm.json").read_text())["verdict"] == "not-ready"
    assert not (out_dir / "fleet.json").exists()


# ansible-test's sanity venvs bootstrap pip from a script it downloads from ci-files.testing.ansible.com; where
# that site is unreachable this stand-in, put where ansible-test caches the script, gets pip from ensurepip.
GET_PIP_STANDIN = '''\
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]  # get-pip's own options
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "-q", *args]))
'''
# ansible-test's state (its sanity venvs) is kept between runs, like tests/test_kickstart.py's chroot.
ANSIBLE_TEST_HOME = Path(os.environ.get("KVMCHECK_ANSIBLE_TEST_HOME", "/var/cache/kvmcheck-test/ansible-test-home"))


def collection_copy(tmp_path):
    """The collection under tmp_path/ansible_collections/kvmcheck/kvmcheck: the tools write tests/output there."""
    import shutil

    dest = tmp_path / "ansible_collections" / "kvmcheck" / "kvmcheck"
    shutil.copytree(COLLECTION, dest)
    return dest


def test_ansible_test_sanity_passes(ansible_env, tmp_path):
    if not (BIN / "ansible-test").exists():
        pytest.skip("ansible-test is not installed (it comes with ansible-core)")
    try:
        ANSIBLE_TEST_HOME.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        pytest.skip(f"no cache directory for ansible-test's venvs ({exc}); set KVMCHECK_ANSIBLE_TEST_HOME")
    import ansible_test  # noqa: F401  (installed with ansible-core)

    pip_version = re.search(r"pip='([0-9.]+)'", (Path(ansible_test.__file__).parent / "_internal" /
                                                 "python_requirements.py").read_text()).group(1)
    cache = ANSIBLE_TEST_HOME / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    standin = cache / f"get_pip_{pip_version.replace('.', '_')}.py"
    if not standin.exists():
        standin.write_text(GET_PIP_STANDIN)
    env = dict(ansible_env, HOME=str(ANSIBLE_TEST_HOME))
    for name in ("ANSIBLE_CONFIG", "ANSIBLE_HOME", "ANSIBLE_COLLECTIONS_PATH"):
        env.pop(name)  # ansible-test sets these up for the collection itself
    python = "%d.%d" % sys.version_info[:2]
    proc = subprocess.run([str(BIN / "ansible-test"), "sanity", "--python", python, "--color", "no"],
                          cwd=collection_copy(tmp_path), env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0 and re.search(r"pip .*(Could not find a version|No matching distribution)|"
                                          r"Failed to establish a new connection", proc.stdout + proc.stderr):
        pytest.skip(f"ansible-test could not install its sanity requirements:\n{proc.stderr[-1500:]}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert 'Running sanity test "validate-modules"' in proc.stdout + proc.stderr


def test_ansible_lint_passes(ansible_env, tmp_path):
    if not (BIN / "ansible-lint").exists():
        pytest.skip("ansible-lint is not installed (pip install -e '.[test]' installs it)")
    home = tmp_path / "lint-home"
    home.mkdir()
    env = dict(ansible_env, HOME=str(home), ANSIBLE_COLLECTIONS_PATH=str(tmp_path))
    env.pop("ANSIBLE_CONFIG")
    proc = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--nocolor"], cwd=collection_copy(tmp_path),
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "Passed" in proc.stdout + proc.stderr and "'production'" in proc.stdout + proc.stderr


CHROOT_PYTHON = """#!/bin/sh
# ansible_python_interpreter of the bullseye host: its /usr/bin/python3 (3.9) in a chroot on an overlay of the
# cached debootstrap (never changed), with {shared} bound in at the same path, so that the module files Ansible
# puts there and the captured roots are found inside.
exec unshare --mount --propagation private --kill-child /bin/sh -c '
set -e
mount -t overlay overlay -o lowerdir={lower},upperdir={work}/upper,workdir={work}/work {work}/merged
mkdir -p {work}/merged{shared}
mount --bind {shared} {work}/merged{shared}
mount -t proc proc {work}/merged/proc
exec chroot {work}/merged /usr/bin/python3 "$@"' sh "$@"
"""


def test_audit_playbook_defaults_need_no_index_and_nothing_installed(ansible_env, host_root, tmp_path):
    """Three targets, none with kvmcheck or pip access: a bare venv, Debian's python3 -I, bullseye's 3.9."""
    import shutil

    bare_venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare_venv)], check=True, timeout=120)
    hosts = {"hv-venv": {"kvmcheck_root": host_root("prepared-intel-host"),
                         "ansible_python_interpreter": bare_venv / "bin" / "python"}}
    if os.access("/usr/bin/python3", os.X_OK):
        isolated = tmp_path / "python3-isolated"
        isolated.write_text('#!/bin/sh\nexec /usr/bin/python3 -I "$@"\n')
        isolated.chmod(0o755)
        hosts["hv-debian"] = {"kvmcheck_root": host_root("pvm-host"), "ansible_python_interpreter": isolated}
    chroot_reason = None
    try:
        from test_kickstart import bullseye_root, needs_tools

        needs_tools("mount")
        lower = bullseye_root()
    except pytest.skip.Exception as exc:  # no root, no debootstrap or no mirror: the other hosts still run
        chroot_reason = str(exc)
    if chroot_reason is None:
        work = tmp_path / "bullseye"
        for sub in ("upper", "work", "merged"):
            (work / sub).mkdir(parents=True)
        wrapper = tmp_path / "python3-bullseye"
        wrapper.write_text(CHROOT_PYTHON.format(lower=lower, work=work, shared=tmp_path))
        wrapper.chmod(0o755)
        hosts["hv-bullseye"] = {"kvmcheck_root": host_root("intel-firmware-disabled"),
                                "ansible_python_interpreter": wrapper}
    for host, hostvars in hosts.items():  # no target can import kvmcheck (or jinja2) by itself
        probe = subprocess.run([str(hostvars["ansible_python_interpreter"]), "-c", "import kvmcheck"],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert probe.returncode == 1 and "No module named 'kvmcheck'" in probe.stderr, (host, probe.stderr)
    inv = inventory(tmp_path / "inventory.ini", hosts)
    out_dir = tmp_path / "reports"
    env = dict(ansible_env, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_EXTRA_INDEX_URL="",
               PIP_FIND_LINKS="", PIP_CONFIG_FILE="/dev/null")  # any pip run would fail
    rc, out, stderr = playbook(
        ["-i", str(inv), "kvmcheck.kvmcheck.audit", "-e", f"kvmcheck_report_dir={out_dir}",
         "-e", f"kvmcheck_pyz={kvmcheck_pyz()}", "-e", "kvmcheck_fleet=false"], env, tmp_path)
    assert rc == 0, (json.dumps(out["stats"]), stderr[-3000:])
    expected = {"hv-venv": "ready", "hv-debian": "not-ready", "hv-bullseye": "not-ready"}
    audit = task_results(out, "Run kvmcheck")
    for host in hosts:
        assert out["stats"][host]["failures"] == 0, out["stats"][host]
        # the only change is the report written on the controller; the target ends as it was
        for task in ("Make a private temporary directory for kvmcheck.pyz", "Copy kvmcheck.pyz from the controller",
                     "Run kvmcheck", "Remove kvmcheck.pyz from the target"):
            assert task_results(out, task)[host]["changed"] is False, (task, host)
        assert task_results(out, "Install kvmcheck with pip for the target's interpreter")[host].get("skipped")
        assert audit[host]["verdict"] == expected[host], audit[host]
        assert audit[host]["invocation"]["module_args"]["pyz"].endswith("/kvmcheck.pyz")
        report = validate_report(json.loads((out_dir / "hosts" / f"{host}.json").read_text()))
        assert report["verdict"] == expected[host]
        removed = task_results(out, "Remove kvmcheck.pyz from the target")[host]
        assert not removed.get("failed") and removed["path"] == audit[host]["invocation"]["module_args"]["pyz"][:-13]
    if chroot_reason is None:
        assert audit["hv-bullseye"]["ansible_facts"]["kvmcheck"]["host"]["root"] == str(hosts["hv-bullseye"]["kvmcheck_root"])
        left = list((tmp_path / "bullseye" / "upper" / "tmp").glob("kvmcheck-*"))
        assert left == [], left  # the copy is gone from the target
        shutil.rmtree(tmp_path / "bullseye" / "work", ignore_errors=True)
    else:
        pytest.skip(f"two hosts audited; the bullseye (Python 3.9) host could not be made: {chroot_reason}")


def test_audit_playbook_builds_kvmcheck_pyz_when_missing(ansible_env, host_root, tmp_path):
    prebuilt = kvmcheck_pyz()  # skips unless pip can get the dependencies here: the playbook's build needs them too
    inv = inventory(tmp_path / "inventory.ini", {"hv-ready": host_root("prepared-intel-host")})
    built = tmp_path / "controller" / "kvmcheck.pyz"
    rc, out, stderr = playbook(
        ["-i", str(inv), "kvmcheck.kvmcheck.audit", "-e", f"kvmcheck_report_dir={tmp_path / 'reports'}",
         "-e", f"kvmcheck_pyz={built}", "-e", "kvmcheck_fleet=false"], ansible_env, tmp_path)
    assert rc == 0, (json.dumps(out["stats"]), stderr[-3000:])
    assert task_results(out, "Build kvmcheck.pyz on the controller when it is missing")["localhost"]["changed"] is True
    assert built.read_bytes() == prebuilt.read_bytes()  # the same build as python -m kvmcheck.tools.build
    assert task_results(out, "Run kvmcheck")["hv-ready"]["verdict"] == "ready"
    # A second run finds the file and leaves it alone.
    rc, out, stderr = playbook(
        ["-i", str(inv), "kvmcheck.kvmcheck.audit", "-e", f"kvmcheck_report_dir={tmp_path / 'reports'}",
         "-e", f"kvmcheck_pyz={built}", "-e", "kvmcheck_fleet=false"], ansible_env, tmp_path)
    assert rc == 0 and task_results(out, "Build kvmcheck.pyz on the controller when it is missing")["localhost"][
        "changed"] is False
