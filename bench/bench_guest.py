"""In-process cost of kvm.guest-run and kvm.acceleration (run by hand).

    /tmp/venv/bin/python bench/bench_guest.py [-n RUNS]

Each run goes through kvmcheck.core.runner.run_check (worker thread included) with
a fresh Context on Host("/"), so per-run facts (modules, cpuinfo, the kernel
log behind the virt fact) are paid every time, as in a real `kvmcheck check`.
Targets: under 20 ms each on a hardware-assisted host; on an emulating
provider (kvm_pvm) the acceleration check is bounded under 1.5 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

from kvmcheck.checks.guest import acceleration, guest_run
from kvmcheck.facts.context import Context
from kvmcheck.core.host import Host
from kvmcheck.core.runner import run_check

TARGET_HW_MS = 20.0
BOUND_EMULATED_MS = 1500.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--runs", type=int, default=15)
    args = ap.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("/dev/kvm absent or not accessible: nothing to measure", file=sys.stderr)
        return 2
    rows = []
    accelerated = None
    for chk in (guest_run, acceleration):
        times, statuses = [], set()
        run_check(chk, Context(Host("/")), timeout=10)  # warm-up: imports, page cache
        for _ in range(args.runs):
            res = run_check(chk, Context(Host("/")), timeout=10)
            times.append(res.duration_ms)
            statuses.add(res.status.value)
            if chk is acceleration:
                accelerated = res.evidence.get("accelerated")
        rows.append((chk.id, statistics.median(times), min(times), max(times), "/".join(sorted(statuses))))
    print(f"{'check':<18} {'median ms':>10} {'min ms':>8} {'max ms':>8}  status   (n={args.runs})")
    for cid, med, lo, hi, st in rows:
        print(f"{cid:<18} {med:>10.2f} {lo:>8.2f} {hi:>8.2f}  {st}")
    worst = max(r[1] for r in rows)
    if accelerated:
        ok = worst < TARGET_HW_MS
        print(f"note: hardware-accelerated host; target < {TARGET_HW_MS:g} ms per check: {'met' if ok else 'MISSED'}")
    else:
        ok = worst < BOUND_EMULATED_MS
        print(f"note: guest code is emulated here (software KVM such as kvm_pvm); the acceleration check sizes its "
              f"loop to ~10 ms (0.1 s when near the threshold); bound < {BOUND_EMULATED_MS:g} ms: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
