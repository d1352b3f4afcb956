# SPDX-License-Identifier: GPL-2.0-or-later
"""Real guest code run through /dev/kvm (live only), and what explains how fast it ran.

A probe opens /dev/kvm through the Host and hands the descriptor to kvmcheck.core.kvmapi in a child
process that is killed when its time is up (0.9 x the check timeout), so a guest that never exits
cannot spin on in a worker thread.  Its outcome is a KvmProbe: what the guest did, or the OSError
met opening the device or in an ioctl, or the time limit it hit.  An offline root is never probed:
its /dev/kvm belongs to no running kernel.
"""
from __future__ import annotations

import errno as _errno
from typing import Any, Callable, Dict, List, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Later, Readout, fact, read
from kvmcheck.facts import system  # noqa: F401 - the shared facts these are computed from (declared first)

KVM_PATH = "/dev/kvm"
NESTED_PARAMS = {
    "kvm_intel": "/sys/module/kvm_intel/parameters/nested",
    "kvm_amd": "/sys/module/kvm_amd/parameters/nested",
}
REPORTED_CAPS = ("user_memory", "irqchip", "nr_vcpus", "max_vcpus", "vcpu_mmap_size", "sync_mmu", "immediate_exit")
# The loop is sized from a short calibration run, so the timed run takes about TARGET_S at the calibrated
# rate: sizing is what keeps a slow (emulating) provider within the runner's per-check timeout.
# Hardware and software providers are two orders of magnitude apart (2e8-1e9 against about 1e6
# instructions/s), so 10 ms decides.  Noise (preemption, a busy host) only ever slows the timed run, so
# a rate over the threshold is final; a rate within CONFIRM_BAND of it is measured again for CONFIRM_S
# and the faster of the two runs counts.
CALIBRATION_ITERATIONS = 2_000
TARGET_S = 0.01
CONFIRM_S = 0.1
CONFIRM_BAND = 10.0
LOOP_BUDGET_S = 1.0


class KvmError(Record):
    """An OSError met opening /dev/kvm (stage "open": it names the file) or in a KVM ioctl ("ioctl")."""

    errno: Optional[int]
    name: str  # EACCES
    error: str  # its strerror, or the whole message when it has none
    stage: str
    not_chardev: bool = False  # something other than a character device sits at /dev/kvm


def kvm_error(err: OSError) -> KvmError:
    from kvmcheck.core.host import NotRegularFileError

    return KvmError(err.errno, _errno.errorcode.get(err.errno or 0, str(err.errno)), err.strerror or str(err),
                    "open" if err.filename is not None else "ioctl", isinstance(err, NotRegularFileError))


class GuestProbe(Record):
    """kvm.guest-run's probe: the API version; unless it is not 12, the capabilities and the guest's run."""

    api_version: int
    capabilities: Dict[str, int]  # REPORTED_CAPS that KVM answered
    run: Any = None  # kvmapi.GuestRun; None when the API version stopped the probe


class LoopProbe(Record):
    """kvm.acceleration's probe: the calibration run, the run that counts, what KVM offers its guests."""

    calibration: Any  # kvmapi.LoopRun
    loop: Any  # kvmapi.LoopRun
    guest_virt_flags: Optional[List[str]]  # vmx/svm KVM_GET_SUPPORTED_CPUID offers; None off x86


class KvmProbe(Record):
    """A probe through /dev/kvm. state: "ok" (found), "offline" (not probed: root names the root),
    "error" (error: opening or an ioctl failed), "timeout" (the child was killed after limit_s; reason)."""

    state: str
    found: Any = None  # GuestProbe or LoopProbe
    error: Optional[KvmError] = None
    limit_s: Optional[float] = None
    reason: str = ""
    root: str = ""


def guest_probe(fd: int) -> KvmProbe:
    """kvm.guest-run's probe on an open descriptor (left open); OSError becomes the probe's error."""
    from kvmcheck.core import kvmapi

    try:
        version = kvmapi.api_version(fd)
        if version != kvmapi.KVM_API_VERSION_EXPECTED:
            return KvmProbe("ok", GuestProbe(version, {}))
        caps = kvmapi.capabilities(fd)
        reported = {k: caps[k] for k in REPORTED_CAPS if k in caps}
        return KvmProbe("ok", GuestProbe(version, reported, kvmapi.run_guest(fd)))
    except OSError as err:
        return KvmProbe("error", error=kvm_error(err))


def _timed_loop(fd: int, rate: float, seconds: float) -> Any:
    """A loop sized to take about seconds at rate (instructions/s)."""
    from kvmcheck.core import kvmapi

    n = int(min(kvmapi.DEFAULT_LOOP_ITERATIONS, max(CALIBRATION_ITERATIONS, max(rate, 1.0) * seconds)))
    return kvmapi.measure_loop(fd, n, time_budget_s=LOOP_BUDGET_S)


def loop_probe(fd: int) -> KvmProbe:
    """kvm.acceleration's probe on an open descriptor (left open): calibrate, time, confirm near the threshold."""
    from kvmcheck.core import kvmapi

    try:
        calib = kvmapi.measure_loop(fd, CALIBRATION_ITERATIONS, time_budget_s=LOOP_BUDGET_S)
        loop = calib
        if calib.completed:
            loop = _timed_loop(fd, calib.per_second, TARGET_S)
            threshold = kvmapi.ACCELERATED_MIN_PER_SECOND
            if loop.completed and threshold / CONFIRM_BAND <= loop.per_second < threshold:
                again = _timed_loop(fd, loop.per_second, CONFIRM_S)
                if again.completed and again.per_second > loop.per_second:
                    loop = again
        offered = kvmapi.guest_virt_extensions(fd) if kvmapi.X86 else None  # nested: what KVM offers its guests
        return KvmProbe("ok", LoopProbe(calib, loop, offered))
    except OSError as err:
        return KvmProbe("error", error=kvm_error(err))


def through_kvm(host: Any, settings: Any, probe: Callable[[int], KvmProbe]) -> KvmProbe:
    """Open /dev/kvm through the Host, run probe(fd) in a child killed after 0.9 x the check timeout, close
    the descriptor on every path.  An offline root is not probed."""
    from kvmcheck.core import kvmapi

    if not host.live:
        return KvmProbe("offline", root=host.label)
    try:
        fd = host.open_device(KVM_PATH)
    except OSError as err:
        return KvmProbe("error", error=kvm_error(err))
    limit = max(0.5, settings.check_timeout * 0.9)
    try:
        return kvmapi.in_child(lambda: probe(fd), limit)
    except TimeoutError as err:
        return KvmProbe("timeout", limit_s=limit, reason=str(err))
    except OSError as err:  # no descriptor or process left for the child's pipe or fork (EMFILE, EAGAIN)
        return KvmProbe("error", error=kvm_error(err))
    finally:
        host.close(fd)


@fact(reads=(KVM_PATH,), prefetch=True)  # a forked child: 10-20 ms on this shadow-paging VM, overlapped
def guest_run_probe(host, settings) -> Later:
    """Later: a 16-bit real-mode guest run through /dev/kvm (KvmProbe of a GuestProbe); live only."""
    return Later(lambda: through_kvm(host, settings, guest_probe))


@fact(reads=(KVM_PATH,))
def loop_run_probe(host, settings) -> Later:
    """Later: a counted loop timed inside a guest on /dev/kvm (KvmProbe of a LoopProbe); live only."""
    return Later(lambda: through_kvm(host, settings, loop_probe))


class NestedParams(Record):
    """kvm_intel's and kvm_amd's 'nested' parameters: module -> Readout of /sys/module/MODULE/parameters/nested."""

    readouts: Dict[str, Readout]

    def values(self) -> Dict[str, str]:
        """module -> the value, for the parameters that could be read."""
        return {m: r.text.split("\n", 1)[0].strip() for m, r in self.readouts.items() if r.ok and r.text is not None}


@fact(reads=tuple(NESTED_PARAMS.values()))
def kvm_nested_params(host) -> NestedParams:
    return NestedParams({mod: read(host, path, limit=4096) for mod, path in NESTED_PARAMS.items()})


@fact(uses=("cpuinfo",))
def host_vt_flags(facts) -> Tuple[str, ...]:
    """vmx and svm, those that some CPU of /proc/cpuinfo lists; () when it cannot be read (an unreadable
    /proc/cpuinfo only takes this detail from kvm.acceleration's evidence)."""
    try:
        cpu = facts.get("cpuinfo")
    except OSError:
        cpu = None
    return tuple(sorted(f for f in ("vmx", "svm") if cpu and any(f in s for s in cpu.x86_flags)))


@fact(uses=("virt",))
def virt_when_asked(facts) -> Later:
    """Later: the virt fact, for a judgement that needs it on one branch only (it may read the kernel log)."""
    return Later(lambda: facts.get("virt"))
