# SPDX-License-Identifier: GPL-2.0-or-later
"""README promises that must not drift: the set-up commands, CI's test command, the checks table."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_readme_starts_with_exactly_two_setup_commands_and_ci_runs_the_second():
    block = re.search(r"```sh\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert README.index("```sh") < README.index("\n## ")
    assert block == ["python3 -m pip install . && kvmcheck",
                     "python3 -m pip install -e '.[test]' && python3 -m pytest"]
    assert block[1] in (REPO / ".ci/run").read_text()


def test_checks_table_is_generated_from_the_registry():
    table = README.split("<!-- checks:begin (kvmcheck list -f markdown) -->\n", 1)[1].split("<!-- checks:end -->")[0]
    out = subprocess.run([sys.executable, "-c", "from kvmcheck.cli import main; main()", "list", "-f", "markdown"],
                         capture_output=True, text=True, check=True).stdout
    assert table.strip() == out.strip(), "regenerate with: kvmcheck list -f markdown"
