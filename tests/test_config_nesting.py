# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 14 item 13: deeply nested TOML is a configuration error (exit 2) naming the file, never a
RecursionError, in --config and in the implicit /etc/kvmcheck/config.toml.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


def run(args, timeout=120, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


# --- item 13: deeply nested TOML --------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    "[thresholds]\nmin_host_cpus = 4\nx = " + "[" * 2000 + "]" * 2000 + "\n",  # 2 KB of '[': RecursionError
    "y = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n",
    "severity" + ".a" * 3000 + " = 'warn'\n",  # dotted keys nest without brackets
])
def test_deeply_nested_toml_is_a_configuration_error(body, host_root, tmp_path):
    config = tmp_path / "deep.toml"
    config.write_text(body)
    proc = run(["check", "--root", host_root("pvm-host"), "--config", config])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(config) in proc.stderr and "nested more than 32 deep" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_nesting_in_strings_and_comments_is_not_counted(host_root, tmp_path):
    config = tmp_path / "ok.toml"
    deep = "[" * 100
    config.write_text(f"# {deep}\ndescription = \"{deep} \\\" {deep}\"\n[thresholds]\nmin_host_cpus = 1\n"
                      f"# '''{deep}\n")
    proc = run(["check", "--root", host_root("pvm-host"), "--config", config])
    assert proc.returncode in (0, 1), proc.stderr


def test_deeply_nested_implicit_config_is_a_configuration_error(tmp_path):
    """/etc/kvmcheck/config.toml is read implicitly on the live machine: in a private mount namespace, an
    overlay over /etc gives this one process a hostile one (the machine's /etc is not touched)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    upper, work = tmp_path / "upper", tmp_path / "work"
    (upper / "kvmcheck").mkdir(parents=True)
    work.mkdir()
    (upper / "kvmcheck" / "config.toml").write_text("x = " + "[" * 2000 + "]" * 2000 + "\n")
    script = ('mount -t overlay overlay -o lowerdir=/etc,upperdir="$1",workdir="$2" /etc || exit 99\n'
              'shift 2\nexec "$@"')
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(upper),
                           str(work)] + CLI + ["check", "--only", "kernel.version"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 99:
        pytest.skip(f"cannot mount an overlay here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "/etc/kvmcheck/config.toml:1: arrays or inline tables nested more than 32 deep" in proc.stderr
    assert "Traceback" not in proc.stderr
