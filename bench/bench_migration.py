# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark `kvmcheck fleet DIR --migration --format json` on generated reports of real CPUs (by hand).

    python bench/bench_migration.py [--size 10000] [--runs 3] [--keep DIR]

The reports are made by kvmcheck.run from the captured roots of real x86 machines (the lscpu corpus at
../shared when present, tests/data/machines, tests/hosts/migration-epyc-genoa-vm): every host gets one of
those CPUs, its own hostname, a QEMU of three releases with their machine types, and one of two NFS
exports.  Timed, each as a whole process (median of --runs; peak memory of the process tree sampled by
psutil every 10 ms): the fleet view without --migration, with it, and the grouping alone (pools, baselines,
costs and the JSON section of hosts already read, in this process).  Target (issue 21): 10,000 reports
grouped in under 5 s.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
KVMCHECK = os.path.join(os.path.dirname(sys.executable), "kvmcheck")
SHARED = os.path.join(os.path.dirname(REPO), "shared", "corpus", "lscpu")
ROOTS = [os.path.join(SHARED, n) for n in ("x86_64-64cpu-linux6.2", "x86_64-dell_e4310", "x86_64-epyc_7451")] + \
    [os.path.join(REPO, "tests", "data", "machines", n) for n in (
        "ul-x86_64-dell_poweredgeR610", "ul-x86_64-dell_poweredge1950", "pyc-ubuntu_22_04_x86_64",
        "pyc-ubuntu_16_04_x86_64")] + [os.path.join(REPO, "tests", "hosts", "migration-epyc-genoa-vm")]
QEMUS = {"6.2.0": 6.2, "7.2.22": 7.2, "8.2.2": 8.2}
EXPORTS = ["nas01:/vm", "nas02:/vm"]


def machine_types(release: float) -> list:
    """The versioned pc-q35 and pc-i440fx types a QEMU of release offers (from 2.0 up)."""
    versions = [f"{major}.{minor}" for major in range(2, 10) for minor in range(13)
                if major + minor / 10 <= release and (major, minor) <= (8, 2) and (major > 2 or minor <= 12)]
    return sorted(f"pc-{family}-{v}" for family in ("q35", "i440fx") for v in versions) + ["microvm", "none"]


def templates() -> list:
    import kvmcheck

    out = []
    for root in ROOTS:
        if os.path.isdir(root):
            out.append(kvmcheck.run(root).to_dict())
    return out


def generate(folder: str, count: int, bases: list) -> None:
    rng = random.Random(count)
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    for i in range(count):
        doc = copy.deepcopy(rng.choice(bases))
        doc["host"]["hostname"] = f"kvm-{i:05d}.dc{i % 4}.example.net"
        doc["generated_at"] = now
        version = rng.choice(list(QEMUS))
        doc["migration"]["qemu"] = {"version": version, "source": "qmp", "machine_types": machine_types(QEMUS[version])}
        doc["migration"]["shared_storage"] = [{"type": "nfs4", "source": rng.choice(EXPORTS),
                                              "target": "/var/lib/libvirt/images"}]
        with open(os.path.join(folder, f"{i:05d}.json"), "w") as fh:
            json.dump(doc, fh, indent=2)


def run_once(argv: list) -> tuple:
    start = time.perf_counter()
    proc = psutil.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [proc] + proc.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.01)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.read().decode()[:500]}")
    return time.perf_counter() - start, peak / 2**20


GROUP_ONLY = """
import sys, time
from kvmcheck.tools import fleet
from kvmcheck.tools.migration import section
view = fleet.collect([sys.argv[1]], keep=("problems", "values", "migration"))
hosts = view.migration_hosts()
start = time.perf_counter()
found = section(hosts)
print(len(hosts), len(found["pools"]), time.perf_counter() - start)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", help="generate into this directory and keep it")
    args = ap.parse_args()
    bases = templates()
    print(f"{len(bases)} real CPUs; CPUs here: {len(os.sched_getaffinity(0))}")
    folder = args.keep or tempfile.mkdtemp(prefix="kvmcheck-bench-migration-")
    try:
        if not os.listdir(folder):
            t0 = time.perf_counter()
            generate(folder, args.size, bases)
            print(f"generated {args.size} reports in {time.perf_counter() - t0:.1f} s")
        plain = [KVMCHECK, "fleet", folder, "--format", "json", "--no-progress", "--max-age", "0"]
        run_once(plain)  # warm the page cache
        for label, argv in (("fleet view", plain), ("fleet view --migration", plain + ["--migration"])):
            runs = [run_once(argv) for _ in range(args.runs)]
            print(f"{label:24} {args.size} reports: median {statistics.median(r[0] for r in runs):.2f} s "
                  f"of {[round(r[0], 2) for r in runs]}, peak memory {max(r[1] for r in runs):.0f} MB")
        group = subprocess.run([sys.executable, "-c", GROUP_ONLY, folder], capture_output=True, text=True, check=True)
        hosts, found, seconds = group.stdout.split()
        print(f"grouping alone: {hosts} hosts into {found} pools in {float(seconds):.3f} s (target: 10,000 in < 5 s)")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
