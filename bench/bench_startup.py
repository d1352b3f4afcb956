# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark a whole kvmcheck run against the tools it replaces and the CLI framework's floor (by hand).

    python bench/bench_startup.py [--runs 15] [--python PY]

Times whole processes, interleaved (one of each per round, so a busy moment slows all of them alike),
and prints the median wall time and the largest peak RSS (ru_maxrss of each child, from wait4) of:

  kvmcheck CLI     `kvmcheck check --format json` on this host (the same PY's entry point)
  kvmcheck API     `PY -c "import json, kvmcheck; json.dumps(kvmcheck.run().to_dict())"`: the same work
  typer floor      a typer hello-world, on the typer that kvmcheck's CLI imports
  python floor     `PY -c pass`: the interpreter alone (what every Python tool pays first)
  virt-host-validate qemu, kvm-ok   when installed

Targets (issue 9): API at most 2 x virt-host-validate; CLI at most 1.25 x the typer floor; peak memory
under 40 MB.  Run it from a regular install (`pip install .`): an editable install in an environment with
PYTHONDONTWRITEBYTECODE set compiles kvmcheck from source at every start and measures that instead.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HELLO = '''import typer

app = typer.Typer()


@app.command()
def main(name: str = "world") -> None:
    print(f"hello {name}")


if __name__ == "__main__":
    app()
'''
API = "import json, kvmcheck; json.dumps(kvmcheck.run().to_dict())"


def run_once(argv: list, cwd: str) -> tuple:
    """(wall seconds, peak RSS in bytes, exit status) of one whole process, run in cwd (not in a source
    checkout, whose kvmcheck/ would shadow the installed one for `python -c`)."""
    with open(os.devnull, "wb") as null:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=null, stderr=null, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
    return wall, usage.ru_maxrss * 1024, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="rounds (median is reported)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter kvmcheck is installed in")
    args = ap.parse_args()
    py = args.python
    exe = os.path.join(os.path.dirname(py), "kvmcheck")
    work = tempfile.mkdtemp(prefix="kvmcheck-bench-")
    where = subprocess.run([py, "-c", "import kvmcheck, typer; print(kvmcheck.__file__, kvmcheck.__version__, "
                                      "typer.__version__)"], capture_output=True, text=True, check=True,
                           cwd=work).stdout.split()
    try:
        hello = os.path.join(work, "hello.py")
        with open(hello, "w") as fh:
            fh.write(HELLO)
        subjects = {
            "kvmcheck CLI (check --format json)": [exe, "check", "--format", "json"],
            "kvmcheck API (kvmcheck.run())": [py, "-c", API],
            f"typer {where[2]} hello-world": [py, hello],
            "python -c pass": [py, "-c", "pass"],
        }
        for name, argv in (("virt-host-validate qemu", ["virt-host-validate", "qemu"]), ("kvm-ok", ["kvm-ok"])):
            if shutil.which(argv[0]):
                subjects[name] = argv
        print(f"kvmcheck {where[1]} at {os.path.dirname(where[0])}; Python {sys.version.split()[0]} ({py}); "
              f"{len(os.sched_getaffinity(0))} CPUs; {args.runs} rounds")
        for argv in subjects.values():  # warm the page cache and any bytecode cache
            run_once(argv, work)
        samples = {name: [] for name in subjects}
        for _ in range(args.runs):
            for name, argv in subjects.items():
                samples[name].append(run_once(argv, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    median = {name: statistics.median(s[0] for s in runs) for name, runs in samples.items()}
    peak = {name: max(s[1] for s in runs) for name, runs in samples.items()}
    print(f"\n{'':38} {'median':>9} {'fastest':>9} {'peak RSS':>9}")
    for name, runs in samples.items():
        print(f"{name:38} {median[name] * 1000:7.1f}ms {min(s[0] for s in runs) * 1000:7.1f}ms "
              f"{peak[name] / 2**20:6.1f}MB")

    cli, api = median["kvmcheck CLI (check --format json)"], median["kvmcheck API (kvmcheck.run())"]
    typer_floor = next(v for k, v in median.items() if k.startswith("typer"))
    print("\ntargets (issue 9):")
    if "virt-host-validate qemu" in median:
        ratio = api / median["virt-host-validate qemu"]
        print(f"  API / virt-host-validate  = {ratio:5.2f}  (target <= 2)     {'met' if ratio <= 2 else 'NOT met'}")
    else:
        print("  API / virt-host-validate: virt-host-validate is not installed (Debian: apt-get install libvirt-clients)")
    ratio = cli / typer_floor
    print(f"  CLI / typer floor         = {ratio:5.2f}  (target <= 1.25)  {'met' if ratio <= 1.25 else 'NOT met'}")
    mem = max(peak["kvmcheck CLI (check --format json)"], peak["kvmcheck API (kvmcheck.run())"]) / 2**20
    print(f"  peak memory (CLI, API)    = {mem:5.1f} MB (target < 40) {'met' if mem < 40 else 'NOT met'}")


if __name__ == "__main__":
    main()
