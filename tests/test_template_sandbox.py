# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 14 item 14: a user's --template runs in Jinja's sandbox; its errors name file and line.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


def run(args, timeout=120, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


# --- item 14: --template runs in the sandbox --------------------------------------------------------------------
def test_template_cannot_run_commands(host_root, tmp_path):
    marker = tmp_path / "pwned"
    template = tmp_path / "evil.txt.j2"
    template.write_text("{{ verdict }}\n\n{{ cycler.__init__.__globals__.os.popen('touch %s').read() }}\n" % marker)
    proc = run(["check", "--root", host_root("pvm-host"), "--template", template])
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()  # the review's attack ran /bin/sh -c as root
    assert f"{template}:3: refused by the template sandbox" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("body, line, message", [
    ("ok\n{% if %}\n", 2, "syntax error"),
    ("{{ host.hostname }}\n{{ summary.pass }}\n{{ no_such_name.x }}\n", 3, "UndefinedError"),
    ("{% for c in checks %}{{ c.id.__class__.__mro__ }}{% endfor %}\n", 1, "refused by the template sandbox"),
    ("{{ 'x' * 10000000000 }}\n", 1, "refused by the template sandbox"),  # 10 GB as root, refused at once
    ("{{ checks.append(1) }}\n", 1, "refused by the template sandbox"),  # the context is read-only
])
def test_template_errors_name_file_and_line(body, line, message, host_root, tmp_path):
    template = tmp_path / "mine.txt.j2"
    template.write_text(body)
    proc = run(["check", "--root", host_root("pvm-host"), "--template", template])
    assert proc.returncode == 2, proc.stderr
    assert f"{template}:{line}: " in proc.stderr and message in proc.stderr and "Traceback" not in proc.stderr


def test_documented_context_and_filters_work_in_the_sandbox(host_root, tmp_path):
    template = tmp_path / "mine.md.j2"
    template.write_text(
        "{{ host.hostname or 'none' }} {{ verdict | upper }} {{ summary.fail }} {{ nagios.state }}\n"
        "{{ report.tool.name }}\n"
        "{% for c in problems %}{{ c.status | paint(c.id | ljust(width)) }} {{ c.summary | md_cell }}\n{% endfor %}"
        "{{ checks | selectattr('status', 'equalto', 'pass') | map(attribute='id') | join(',') | nagios_text }}\n"
        "{{ host.hostname | prom_label }} {{ report.generated_at | unix_seconds > 0 }}\n"
        "{{ summary | tojson_compact }}\n")
    proc = run(["check", "--root", host_root("pvm-host"), "--template", template])
    assert proc.returncode in (0, 1), proc.stderr
    assert "NOT-READY" in proc.stdout and "True" in proc.stdout and '"fail": ' in proc.stdout
