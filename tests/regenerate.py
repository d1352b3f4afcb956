# SPDX-License-Identifier: GPL-2.0-or-later
"""Regenerate what is derived from the registry and the renderers, after adding or changing a check:

    .venv/bin/python tests/regenerate.py      (the Python with the test extras: it runs pytest)

- tests/golden/report.* (the reports of a fixed captured root, one per format),
- README.md's checks table (between the checks:begin and checks:end markers, from `kvmcheck list -f markdown`),
- man/kvmcheck.1 (from the command line's own help).

Review `git diff` afterwards: every line that changed is a change users will see.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- checks:begin (kvmcheck list -f markdown) -->\n", "<!-- checks:end -->"


def kvmcheck(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", "from kvmcheck.cli import main; main()", *args], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"kvmcheck {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def main() -> int:
    try:
        import pytest  # noqa: F401 - the golden files are written by their own tests
    except ImportError:
        print("tests/regenerate.py needs the test extras: run it with .venv/bin/python (pip install -e '.[test]')",
              file=sys.stderr)
        return 2
    golden = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_report_formats.py", "tests/test_report_html.py", "-k", "golden"], cwd=REPO,
                            env={**os.environ, "KVMCHECK_REGEN_GOLDEN": "1"})
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + BEGIN + kvmcheck("list", "-f", "markdown").strip() + "\n" + END + tail, encoding="utf-8")
    man = subprocess.run([sys.executable, "-m", "kvmcheck.tools.manpage"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    (REPO / "man" / "kvmcheck.1").write_text(man, encoding="utf-8")
    print("regenerated tests/golden/, README.md's checks table and man/kvmcheck.1: review 'git diff'")
    return golden.returncode


if __name__ == "__main__":
    sys.exit(main())
