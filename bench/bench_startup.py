# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark a whole kvmcheck run against the tools it replaces and the CLI framework's floor (by hand).

    python bench/bench_startup.py [--runs 15] [--python PY]

Times whole processes, interleaved (one of each per round, so a busy moment slows all of them alike),
and prints the median wall time and the largest peak RSS (ru_maxrss of each child, from wait4) of:

  kvmcheck CLI     `kvmcheck check --format json --skip kvm.acceleration` on this host (PY's entry point)
  kvmcheck API     `PY -c "import json, kvmcheck; json.dumps(kvmcheck.run(skip=[...]).to_dict())"`: the
                   same work without the command line
  --version, --help  `kvmcheck --version`, `kvmcheck --help`
  typer floor      a typer hello-world, on the typer that kvmcheck's CLI imports
  python floor     `PY -c pass`: the interpreter alone (what every Python tool pays first)
  stdlib floor     `PY -c "import typing, dataclasses, json, subprocess, threading, re, datetime"`: the
                   standard modules kvmcheck's run needs (typing for its records' annotations, dataclasses
                   for the public plugin types, json for the output, subprocess for QEMU, threading for the
                   time limits, re, datetime for the time stamp), and nothing of kvmcheck's own
  I/O floor        a Python script that only opens and reads the files kvmcheck read on this host (the list
                   is taken from one run's Host.reads) and forks once, as the guest probe does: the work no
                   implementation in Python can skip, with the interpreter and without any import
  virt-host-validate qemu, kvm-ok   when installed

kvm.acceleration is skipped (--all keeps it): it times a guest loop for 10 ms by design, and on an
emulated /dev/kvm (kvm_pvm, a nested cloud guest) that loop is the largest part of a run and says
nothing about kvmcheck's own cost.

Targets (issue 19): API at most 3.0 x virt-host-validate (stretch 2.0); CLI at most 1.5 x the typer floor
(stretch 1.25); --version and --help at most 1.1 x the typer floor; peak RSS at most 30 MB.  Run it from a
regular install (`pip install .`): an editable install in an environment with PYTHONDONTWRITEBYTECODE set
compiles kvmcheck from source at every start and measures that instead.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

CLI, API = "kvmcheck CLI (check --format json)", "kvmcheck API (kvmcheck.run())"
HELLO = '''import typer

app = typer.Typer()


@app.command()
def main(name: str = "world") -> None:
    print(f"hello {name}")


if __name__ == "__main__":
    app()
'''
SKIP = ["kvm.acceleration"]
STDLIB = "import typing, dataclasses, json, subprocess, threading, re, datetime"
READS = """import json, os, sys
for path in json.load(open(sys.argv[1])):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        continue
    try:  # a device (/dev/cpu/0/cpuid, /dev/kmsg) is read as kvmcheck reads it: a few bytes, not to its end
        if not os.path.isfile(path):
            os.pread(fd, 16, 0)
        else:
            while os.read(fd, 1 << 16):
                pass
    except OSError:
        pass
    os.close(fd)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
"""
LIST_READS = """import json, sys, kvmcheck.core.host as H, kvmcheck.core.runner as R
hosts = []
init = H.Host.__init__
def record(self, *a, **k):
    init(self, *a, **k)
    hosts.append(self)
H.Host.__init__ = record
R.run(skip=SKIP)
json.dump(hosts[0].reads, open(sys.argv[1], "w"))
"""


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
    ap.add_argument("--all", action="store_true", help="keep kvm.acceleration (the timed guest loop)")
    args = ap.parse_args()
    skip = [] if args.all else SKIP
    api = f"import json, kvmcheck; json.dumps(kvmcheck.run(skip={skip!r}).to_dict())"
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
        reads = os.path.join(work, "reads.json")
        subprocess.run([py, "-c", f"SKIP = {skip!r}\n" + LIST_READS, reads], check=True, cwd=work)
        with open(reads) as fh:
            nreads = len(json.load(fh))
        floor = os.path.join(work, "io_floor.py")
        with open(floor, "w") as fh:
            fh.write(READS)
        subjects = {
            CLI: [exe, "check", "--format", "json"] + [a for s in skip for a in ("--skip", s)],
            API: [py, "-c", api],
            "kvmcheck --version": [exe, "--version"],
            "kvmcheck --help": [exe, "--help"],
            f"typer {where[2]} hello-world": [py, hello],
            "python -c pass": [py, "-c", "pass"],
            "stdlib floor (imports only)": [py, "-c", STDLIB],
            f"I/O floor ({nreads} reads, one fork)": [py, floor, reads],
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

    cli, api = median[CLI], median[API]
    typer_floor = next(v for k, v in median.items() if k.startswith("typer"))

    def verdict(name: str, ratio: float, target: float, stretch: Optional[float] = None) -> None:
        met = "met" if ratio <= target else "NOT met"
        extra = f", stretch {stretch:g}: {'met' if ratio <= stretch else 'not met'}" if stretch else ""
        print(f"  {name:30} = {ratio:5.2f}  (target <= {target:g}{extra})  {met}")

    print(f"\ntargets (issue 19){'' if args.all else ', kvm.acceleration skipped'}:")
    if "virt-host-validate qemu" in median:
        verdict("API / virt-host-validate", api / median["virt-host-validate qemu"], 3.0, 2.0)
    else:
        print("  API / virt-host-validate: virt-host-validate is not installed (Debian: apt-get install libvirt-clients)")
    verdict("CLI / typer floor", cli / typer_floor, 1.5, 1.25)
    verdict("--version / typer floor", median["kvmcheck --version"] / typer_floor, 1.1)
    verdict("--help / typer floor", median["kvmcheck --help"] / typer_floor, 1.1)
    if "virt-host-validate qemu" in median:
        vhv = median["virt-host-validate qemu"]
        io_floor = next(v for k, v in median.items() if k.startswith("I/O floor"))
        python = median["python -c pass"]
        stdlib = median["stdlib floor (imports only)"] - python
        print(f"  {'(floors) python, I/O / vhv':30} = {python / vhv:5.2f}, {io_floor / vhv:.2f}; "
              f"I/O floor + stdlib imports ({stdlib * 1000:.1f} ms) = {(io_floor + stdlib) / vhv:.2f} x vhv")
    mem = max(peak[CLI], peak[API]) / 2**20
    print(f"  {'peak RSS (CLI, API)':30} = {mem:5.1f} MB (target <= 30)  {'met' if mem <= 30 else 'NOT met'}")


if __name__ == "__main__":
    main()
