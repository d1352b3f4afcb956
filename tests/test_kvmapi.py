"""Tests for kvmcheck.core.kvmapi: ABI constants, struct layouts, a real guest run
on /dev/kvm when accessible, and error paths on fake devices (no fcntl mocks)."""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading
import time

import pytest

from kvmcheck.core import kvmapi as k
from conftest import KVM_PATH, FdStarved, kvm_mappings, needs_kvm, open_fds

needs_x86 = pytest.mark.skipif(not k.X86, reason="guest programs are x86 real-mode code")
generic_ioctl = pytest.mark.skipif(
    k._IOC_SIZEBITS != 14, reason="architecture uses non-generic ioctl encoding")


@pytest.fixture
def kvm_fd():
    fd = os.open(KVM_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


# --- ABI constants -------------------------------------------------------------

@generic_ioctl
def test_ioctl_numbers_match_uapi_header():
    # include/uapi/linux/kvm.h, encoded per include/uapi/asm-generic/ioctl.h
    assert k.KVM_GET_API_VERSION == 0xAE00          # _IO(KVMIO, 0x00)
    assert k.KVM_CREATE_VM == 0xAE01                # _IO(KVMIO, 0x01)
    assert k.KVM_CHECK_EXTENSION == 0xAE03          # _IO(KVMIO, 0x03)
    assert k.KVM_GET_VCPU_MMAP_SIZE == 0xAE04       # _IO(KVMIO, 0x04)
    assert k.KVM_CREATE_VCPU == 0xAE41              # _IO(KVMIO, 0x41)
    assert k.KVM_SET_USER_MEMORY_REGION == 0x4020AE46  # _IOW(KVMIO, 0x46, kvm_userspace_memory_region[32])
    assert k.KVM_RUN == 0xAE80                      # _IO(KVMIO, 0x80)
    assert k.KVM_GET_REGS == 0x8090AE81             # _IOR(KVMIO, 0x81, kvm_regs[144])
    assert k.KVM_SET_REGS == 0x4090AE82             # _IOW(KVMIO, 0x82, kvm_regs[144])
    assert k.KVM_GET_SREGS == 0x8138AE83            # _IOR(KVMIO, 0x83, kvm_sregs[312])
    assert k.KVM_SET_SREGS == 0x4138AE84            # _IOW(KVMIO, 0x84, kvm_sregs[312])


@generic_ioctl
def test_ioctl_helpers_generic_encoding():
    assert k._IO(0xAE, 1) == 0xAE01
    assert k._IOR(0xAE, 2, 8) == (2 << 30) | (8 << 16) | 0xAE02
    assert k._IOW(0xAE, 3, 8) == (1 << 30) | (8 << 16) | 0xAE03
    assert k._IOWR(0xAE, 0x05, 8) == 0xC008AE05  # e.g. KVM_GET_SUPPORTED_CPUID with an 8-byte head


def test_capability_and_exit_numbers_match_uapi_header():
    # include/uapi/linux/kvm.h KVM_CAP_* / KVM_EXIT_*
    caps = k.CAPABILITIES
    assert (caps["irqchip"], caps["hlt"], caps["user_memory"], caps["set_tss_addr"]) == (0, 1, 3, 4)
    assert (caps["nr_vcpus"], caps["nr_memslots"], caps["sync_mmu"], caps["max_vcpus"]) == (9, 10, 16, 66)
    assert (caps["irqfd"], caps["ioeventfd"], caps["one_reg"], caps["readonly_mem"]) == (32, 36, 70, 81)
    assert (caps["max_vcpu_id"], caps["immediate_exit"], caps["split_irqchip"]) == (128, 136, 121)
    assert (k.KVM_CAP_IRQCHIP, k.KVM_CAP_USER_MEMORY, k.KVM_CAP_NR_VCPUS, k.KVM_CAP_MAX_VCPUS) == (0, 3, 9, 66)
    assert (k.KVM_EXIT_IO, k.KVM_EXIT_HLT, k.KVM_EXIT_MMIO, k.KVM_EXIT_SHUTDOWN) == (2, 5, 6, 8)
    assert (k.KVM_EXIT_FAIL_ENTRY, k.KVM_EXIT_INTR, k.KVM_EXIT_INTERNAL_ERROR) == (9, 10, 17)
    assert k.KVM_API_VERSION_EXPECTED == 12


def test_struct_layouts():
    # arch/x86/include/uapi/asm/kvm.h and include/uapi/linux/kvm.h
    assert ctypes.sizeof(k.kvm_userspace_memory_region) == 32
    assert k.kvm_userspace_memory_region.userspace_addr.offset == 24
    assert ctypes.sizeof(k.kvm_regs) == 144
    assert k.kvm_regs.rip.offset == 128 and k.kvm_regs.rflags.offset == 136
    assert ctypes.sizeof(k.kvm_segment) == 24
    assert ctypes.sizeof(k.kvm_dtable) == 16
    assert ctypes.sizeof(k.kvm_sregs) == 312
    assert k.kvm_sregs.gdt.offset == 192 and k.kvm_sregs.cr0.offset == 224
    assert k.kvm_sregs.interrupt_bitmap.offset == 280
    assert k.kvm_run.immediate_exit.offset == 1
    assert k.kvm_run.exit_reason.offset == 8
    assert k.kvm_run.exit.offset == 32
    assert ctypes.sizeof(k.kvm_run) == 32 + 256
    io = k.kvm_run_io
    assert (io.direction.offset, io.size.offset, io.port.offset, io.count.offset,
            io.data_offset.offset) == (0, 1, 2, 4, 8)


def test_guest_expected_is_not_trivial():
    assert k.guest_expected(0x1234, 0x0BEF) == ((3 * 0x1234 + 0x0BEF) & 0xFFFF) ^ 0xA55A
    assert k.guest_expected(0xFFFF, 0xFFFF) == ((3 * 0xFFFF + 0xFFFF) & 0xFFFF) ^ 0xA55A
    assert len({k.guest_expected(a, b) for a, b in [(0, 0), (1, 0), (0, 1), (1, 1)]}) == 4


def test_run_guest_rejects_out_of_range_inputs():
    with pytest.raises(ValueError):
        k.run_guest(-1, a=0x10000)
    with pytest.raises(ValueError):
        k.measure_loop(-1, iterations=0)


# --- real /dev/kvm ---------------------------------------------------------------

@needs_kvm
def test_api_version_and_capabilities(kvm_fd):
    assert k.api_version(kvm_fd) == k.KVM_API_VERSION_EXPECTED
    caps = k.capabilities(kvm_fd)
    assert set(k.CAPABILITIES) <= set(caps)
    assert caps["user_memory"] >= 1
    assert caps["nr_vcpus"] >= 1 and caps["max_vcpus"] >= caps["nr_vcpus"]
    assert caps["vcpu_mmap_size"] >= 4096 and caps["vcpu_mmap_size"] % 4096 == 0
    assert all(isinstance(v, int) and v >= 0 for v in caps.values())


@needs_kvm
@needs_x86
@pytest.mark.parametrize("a,b", [(0x1234, 0x0BEF), (0, 0), (0xFFFF, 0xFFFF), (7, 40000)])
def test_run_guest_computes_expected_value(kvm_fd, a, b):
    before, t0 = open_fds(), time.perf_counter()
    run = k.run_guest(kvm_fd, a=a, b=b)
    assert time.perf_counter() - t0 < 1.5
    assert run.executed and run.ok, run.reason
    assert run.value == ((3 * a + b) & 0xFFFF) ^ 0xA55A == run.expected
    assert run.port == k.RESULT_PORT
    assert run.exits == ["KVM_EXIT_IO", "KVM_EXIT_HLT"]
    assert run.reason == "" and run.inputs == (a, b)
    assert open_fds() == before
    assert kvm_mappings() == []


@needs_kvm
@needs_x86
def test_run_guest_max_exits_too_small(kvm_fd):
    run = k.run_guest(kvm_fd, max_exits=1)
    assert not run.ok and "KVM_EXIT_HLT" in run.reason
    assert run.exits == ["KVM_EXIT_IO"]


@needs_kvm
@needs_x86
def test_measure_loop_completes_in_time(kvm_fd):
    before = open_fds()
    old_handler = signal.getsignal(signal.SIGALRM)
    t0 = time.perf_counter()
    loop = k.measure_loop(kvm_fd)
    wall = time.perf_counter() - t0
    assert loop.completed, loop.reason
    assert loop.iterations == loop.requested == k.DEFAULT_LOOP_ITERATIONS
    assert loop.exits == 2 and loop.reason == ""
    assert 0 < loop.elapsed_s < 1.5 and wall < 1.5
    assert loop.per_second == pytest.approx(loop.iterations / loop.elapsed_s)
    assert loop.accelerated == (loop.per_second >= k.ACCELERATED_MIN_PER_SECOND)
    assert signal.getsignal(signal.SIGALRM) is old_handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert open_fds() == before and kvm_mappings() == []


@needs_kvm
@needs_x86
def test_measure_loop_time_budget_interrupts_kvm_run(kvm_fd):
    # 2**32-1 iterations would take an hour emulated (~4 s on hardware): the
    # SIGALRM watchdog must cut KVM_RUN short and restore the previous handler.
    before = open_fds()
    fired = []

    def mine(*args):
        fired.append(args)

    old = signal.signal(signal.SIGALRM, mine)
    try:
        t0 = time.perf_counter()
        loop = k.measure_loop(kvm_fd, iterations=0xFFFFFFFF, time_budget_s=0.2)
        wall = time.perf_counter() - t0
        assert not loop.completed and "budget" in loop.reason
        assert wall < 1.0
        assert 0 < loop.iterations < 0xFFFFFFFF and loop.per_second > 0
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert signal.getsignal(signal.SIGALRM) is mine
        assert fired == []
    finally:
        signal.signal(signal.SIGALRM, old)
    assert open_fds() == before and kvm_mappings() == []


@needs_kvm
@needs_x86
def test_callers_itimer_is_rearmed(kvm_fd):
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(a))
    try:
        signal.setitimer(signal.ITIMER_REAL, 5.0)
        assert k.run_guest(kvm_fd).ok
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 3.0 < remaining < 5.0 and fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@needs_kvm
@needs_x86
def test_run_guest_outside_main_thread(kvm_fd):
    # No signal watchdog off the main thread; the bounded program still runs.
    results = []
    t = threading.Thread(target=lambda: results.append(k.run_guest(kvm_fd, a=3, b=4)))
    t.start()
    t.join(10)
    assert not t.is_alive()
    assert results and results[0].ok and results[0].value == (3 * 3 + 4) ^ 0xA55A


# --- error paths -----------------------------------------------------------------

def _fake_fds(tmp_path):
    regular = tmp_path / "not-kvm"
    regular.write_bytes(b"\0" * 64)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return [os.open(regular, os.O_RDWR), os.open(fifo, os.O_RDWR | os.O_NONBLOCK)]


@pytest.mark.parametrize("call", [k.api_version, k.capabilities, k.run_guest, k.measure_loop])
def test_non_kvm_fd_raises_enotty(tmp_path, call):
    before = open_fds()
    fds = _fake_fds(tmp_path)
    try:
        for fd in fds:
            if call is k.measure_loop and not k.X86:
                continue  # nothing is attempted off x86
            with pytest.raises(OSError) as info:
                call(fd)
            assert info.value.errno in (errno.ENOTTY, errno.EINVAL)
    finally:
        for fd in fds:
            os.close(fd)
    assert open_fds() == before


@needs_kvm
@pytest.mark.parametrize("free", [0, 1], ids=["create_vm", "create_vcpu"])
@pytest.mark.parametrize("call", [k.run_guest, k.measure_loop])
def test_emfile_propagates_without_leak(kvm_fd, free, call):
    if call is k.measure_loop and not k.X86:
        pytest.skip("measure_loop creates nothing off x86")
    before = open_fds()
    with FdStarved(free):
        with pytest.raises(OSError) as info:
            call(kvm_fd)
    assert info.value.errno == errno.EMFILE
    assert open_fds() == before
    assert kvm_mappings() == []
    # and the device is still fully usable afterwards
    assert k.api_version(kvm_fd) == 12


def test_get_supported_cpuid_number_and_layout():
    # arch/x86/include/uapi/asm/kvm.h + linux/kvm.h: KVM_GET_SUPPORTED_CPUID _IOWR(KVMIO, 0x05, struct kvm_cpuid2)
    if k._IOC_SIZEBITS != 14:
        pytest.skip("architecture uses non-generic ioctl encoding")
    assert k.KVM_GET_SUPPORTED_CPUID == 0xC008AE05
    assert ctypes.sizeof(k.kvm_cpuid_entry2) == 40


@needs_kvm
@needs_x86
def test_supported_cpuid_matches_the_nested_parameter(kvm_fd):
    offered = k.guest_virt_extensions(kvm_fd)
    nested = {m: open(f"/sys/module/{m}/parameters/nested").read().strip()
              for m in ("kvm_intel", "kvm_amd") if os.path.exists(f"/sys/module/{m}/parameters/nested")}
    if not nested:  # no kvm_intel/kvm_amd (a software provider such as kvm_pvm): nothing to nest
        assert offered == []
    else:
        on = any(v in ("1", "Y", "y") for v in nested.values())
        assert bool(offered) is on, (offered, nested)


# --- a guest that never exits, in a worker thread (issue 14) -------------------------

def _spin_forever(kvm_fd: int) -> None:
    """A guest whose only instruction jumps to itself ('jmp $'), entered with no watchdog at all: KVM never
    hands the vCPU back, so KVM_RUN never returns."""
    import fcntl

    res = k._Resources()
    try:
        vcpu_fd, _ = k._create_vcpu(kvm_fd, res, b"\xeb\xfe")
        fcntl.ioctl(vcpu_fd, k.KVM_RUN, 0)
    finally:
        res.close()


def _children_of_this_process() -> list:
    children = []
    for task in os.listdir("/proc/self/task"):
        try:  # a thread of an earlier test (a daemon worker left behind, a probe) may end between the two reads
            with open(f"/proc/self/task/{task}/children") as f:
                children += [int(pid) for pid in f.read().split()]
        except FileNotFoundError:
            continue
    return sorted(children)


@needs_kvm
@needs_x86
def test_a_guest_that_never_exits_is_killed_in_its_child_from_a_worker_thread(kvm_fd):
    fds_before, children_before = open_fds(), _children_of_this_process()
    outcome = []

    def worker():
        try:
            k.in_child(lambda: _spin_forever(kvm_fd), timeout=0.5)
        except TimeoutError as exc:
            outcome.append(exc)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join(30)  # a hang guard, not a timing: before in_child, this thread spun in KVM_RUN forever
    assert not t.is_alive(), "the worker thread is still inside KVM_RUN"
    assert len(outcome) == 1 and "did not finish within 0.5 s" in str(outcome[0])
    assert _children_of_this_process() == children_before  # killed and reaped
    assert open_fds() == fds_before and not kvm_mappings()


def test_in_child_returns_values_and_raises_what_the_child_raised():
    assert k.in_child(lambda: {"pid": os.getpid(), "ids": (1, "x")}, timeout=10)["ids"] == (1, "x")
    assert k.in_child(lambda: os.getpid(), timeout=10) != os.getpid()
    with pytest.raises(PermissionError) as info:
        k.in_child(lambda: (_ for _ in ()).throw(PermissionError(errno.EACCES, "no", "/dev/kvm")), timeout=10)
    assert (info.value.errno, info.value.filename) == (errno.EACCES, "/dev/kvm")


@needs_kvm
@needs_x86
def test_the_guest_checks_give_a_stuck_guest_a_failure_not_a_hang(tmp_path):
    """through_kvm, as kvm.guest-run and kvm.acceleration's probes use it, from a worker thread as the runner
    calls it."""
    from kvmcheck.checks.guest import judge_guest
    from kvmcheck.facts.guest import through_kvm
    from kvmcheck.facts.context import Context, Settings
    from kvmcheck.core.host import Host

    if os.geteuid() != 0 and not os.access(KVM_PATH, os.R_OK | os.W_OK):
        pytest.skip("cannot open /dev/kvm")
    ctx = Context(Host("/"), Settings(check_timeout=0.6))
    results = []
    t = threading.Thread(target=lambda: results.append(
        judge_guest(through_kvm(ctx.host, ctx.settings, _spin_forever))),
                         daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive()
    assert (results[0].status.value, results[0].summary) == ("fail", "the guest did not stop within 0.54 s")
