# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark `kvmcheck fleet DIR --format json` on 10,000, 20,000 and 100,000 generated reports (by hand).

    python bench/bench_fleet.py [--sizes 10000,20000,100000] [--runs 3] [--keep DIR]

The reports are made from a real one (`kvmcheck check --format json` on this machine, about 28 checks
with their evidence): every host gets its own hostname, generated_at (some older than 24 h), statuses and
summaries drawn from a small set of causes (some with host-specific numbers), a few duplicates and a few
broken files.  Each size is timed as a whole process (median of --runs; its CPU time, process and workers,
is printed too, as wall time on a busy machine says little) and its peak memory measured as
the largest sum of the resident sizes of the process and its worker processes (psutil, sampled every
10 ms), plus ru_maxrss of the largest single process (what /usr/bin/time -f %M shows).

Targets (issues 7 and 19): 10,000 reports under 2 s and 300 MB; 20,000 under 2.2 x the 10,000 time;
100,000 under 20 s and 1 GB (streamed: memory must not grow with every report held).  The 100,000
reports take about 3.5 GB in the temporary directory (see df -h /tmp) and some minutes to generate.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

KVMCHECK = os.path.join(os.path.dirname(sys.executable), "kvmcheck")
TARGETS = {10000: (2, 300), 100000: (20, 1000)}  # reports: (wall seconds, peak MB of the process tree)

CAUSES = {
    "warn": ["{id}: degraded on this host", "not configured: see the remediation", "{n} of {m} items missing"],
    "fail": ["{id} unavailable", "required module not loaded", "only {n} MiB free (need {m} MiB)"],
    "error": ["probe timed out after 10 s", "unexpected exception: OSError [Errno 5]"],
}


def template() -> dict:
    out = subprocess.run([KVMCHECK, "check", "--format", "json"], capture_output=True, text=True)
    return json.loads(out.stdout)


def make_report(base: dict, i: int, rng: random.Random, now: float) -> dict:
    doc = copy.deepcopy(base)
    doc["host"]["hostname"] = f"kvm-{i // 1000:02d}-{i:05d}.dc{i % 4}.example.net"
    age = rng.expovariate(1 / 6.0) * 3600  # hours; a few are over 24 h: stale
    doc["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - age))
    bad_host = rng.random() < 0.3
    for c in doc["checks"]:
        r = rng.random()
        if r < (0.10 if bad_host else 0.02):
            status = rng.choice(["fail", "fail", "error"])
        elif r < 0.25:
            status = "warn"
        elif r < 0.32:
            status = "skip"
        else:
            status = "pass"
        c["status"] = status
        if status in CAUSES:
            c["summary"] = rng.choice(CAUSES[status]).format(id=c["id"], n=rng.randint(1, 3), m=4)
            c["remediation"] = c["remediation"] or "see the documentation"
        c["duration_ms"] = round(rng.uniform(0.05, 40.0), 3)
    summary = dict.fromkeys(("pass", "warn", "fail", "skip", "error"), 0)
    for c in doc["checks"]:
        summary[c["status"]] += 1
    doc["summary"] = summary
    doc["verdict"] = "not-ready" if summary["fail"] or summary["error"] else "ready"
    return doc


def generate(folder: str, count: int, base: dict) -> None:
    rng = random.Random(count)
    now = time.time()
    for i in range(count):
        doc = make_report(base, i, rng, now)
        with open(os.path.join(folder, f"{i:05d}.json"), "w") as fh:
            json.dump(doc, fh, indent=2)
    # a few duplicates (an older copy of a host's report) and broken files, as a real drop box has
    for i in range(0, count, 2000):
        doc = make_report(base, i, rng, now - 86400)
        with open(os.path.join(folder, f"old-{i:05d}.json"), "w") as fh:
            json.dump(doc, fh, indent=2)
    with open(os.path.join(folder, "truncated.json"), "w") as fh:
        fh.write(json.dumps(base)[:5000])
    with open(os.path.join(folder, "README.txt"), "w") as fh:
        fh.write("not a report\n")


def run_once(folder: str) -> tuple:
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = psutil.Popen([KVMCHECK, "fleet", folder, "--format", "json", "--no-progress"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc] + proc.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"kvmcheck fleet failed ({proc.returncode}): {proc.stderr.read().decode()[:500]}")
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime  # the process and its workers
    return elapsed, peak, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,20000,100000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", help="generate into this directory and keep it")
    args = ap.parse_args()
    base = template()
    sample = len(json.dumps(base, indent=2))
    print(f"template: {len(base['checks'])} checks, {sample} bytes; CPUs: {len(os.sched_getaffinity(0))}")
    top = args.keep or tempfile.mkdtemp(prefix="kvmcheck-bench-fleet-")
    results, peaks = {}, {}
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            folder = os.path.join(top, str(size))
            if not os.path.isdir(folder):
                os.makedirs(folder)
                t0 = time.perf_counter()
                generate(folder, size, base)
                print(f"generated {size} reports in {time.perf_counter() - t0:.1f} s")
            run_once(folder)  # warm the page cache
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            runs = [run_once(folder) for _ in range(args.runs)]
            maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            median = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs) / 2**20
            results[size] = median
            peaks[size] = peak
            cpu = statistics.median(r[2] for r in runs)
            print(f"{size:6d} reports: median {median:.2f} s of {[round(r[0], 2) for r in runs]} "
                  f"(CPU {cpu:.2f} s, load average {os.getloadavg()[0]:.1f}), "
                  f"peak memory {peak:.0f} MB (process tree), largest process {max(before, maxrss) / 1024:.0f} MB")
        if 10000 in results and 20000 in results:
            print(f"20,000 / 10,000 time ratio: {results[20000] / results[10000]:.2f} (target < 2.2)")
        for size, (wall, mem) in TARGETS.items():
            if size in results:
                print(f"{size:,} reports: {results[size]:.2f} s (target < {wall} s), "
                      f"peak {peaks[size]:.0f} MB (target < {mem} MB)")
    finally:
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
