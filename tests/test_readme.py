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
    assert len(block) == 2
    install_and_run, install_tests_and_test = block
    # Each makes (or reuses) the venv .venv in the checkout first: PEP 668 systems refuse pip in their Python,
    # and a later hook looks for .venv/bin/kvmcheck.
    assert install_and_run.startswith("python3 -m venv .venv && .venv/bin/pip install . && ")
    assert install_and_run.endswith(" .venv/bin/kvmcheck")
    assert install_tests_and_test.startswith("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && ")
    assert install_tests_and_test.endswith(" .venv/bin/python -m pytest")
    # CI's last command is README's test command, character for character, so its status is CI's.
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ci[-1] == install_tests_and_test
    assert "python3-venv" in (REPO / ".ci/apt-packages").read_text().split()


def test_checks_table_is_generated_from_the_registry():
    table = README.split("<!-- checks:begin (kvmcheck list -f markdown) -->\n", 1)[1].split("<!-- checks:end -->")[0]
    out = subprocess.run([sys.executable, "-c", "from kvmcheck.cli import main; main()", "list", "-f", "markdown"],
                         capture_output=True, text=True, check=True).stdout
    assert table.strip() == out.strip(), "regenerate with: kvmcheck list -f markdown"


def test_the_json_sample_follows_the_schema_it_ships_with():
    """README's JSON report sample is a real report of the current schema (it once showed version 1)."""
    import json

    from conftest import validate_report

    text = README
    start = text.index("```json\n", text.index("## JSON report")) + len("```json\n")
    sample = json.loads(text[start:text.index("```\n", start)])
    validate_report(sample)
