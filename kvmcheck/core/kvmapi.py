"""Pure-Python KVM ioctl layer: probe /dev/kvm and run a tiny real-mode guest.

Nothing here opens a path: every entry point takes an already-open /dev/kvm
descriptor so the caller (the engine's Host) owns device access and error
wording.  VM/vCPU descriptors and mappings created here are released on every
path, including when an ioctl raises; OSError propagates with errno intact.
"""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import signal
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple, TypeVar

KVM_API_VERSION_EXPECTED = 12  # include/uapi/linux/kvm.h: KVM_API_VERSION

# --- ioctl encoding (include/uapi/asm-generic/ioctl.h) ---------------------
# powerpc, mips, sparc and alpha use a 3-bit direction field with other values
# (arch/*/include/uapi/asm/ioctl.h); everything else, x86 included, is generic.
_MACHINE = os.uname().machine.lower()  # what platform.machine() answers, without importing it
if _MACHINE.startswith(("ppc", "powerpc", "mips", "sparc", "alpha")):
    _IOC_SIZEBITS, _IOC_NONE, _IOC_WRITE, _IOC_READ = 13, 1, 4, 2
else:
    _IOC_SIZEBITS, _IOC_NONE, _IOC_WRITE, _IOC_READ = 14, 0, 1, 2
_IOC_NRSHIFT, _IOC_TYPESHIFT, _IOC_SIZESHIFT = 0, 8, 16
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS


def _IOC(direction: int, typ: int, nr: int, size: int) -> int:
    return ((direction << _IOC_DIRSHIFT) | (typ << _IOC_TYPESHIFT)
            | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT))


def _IO(typ: int, nr: int) -> int:
    return _IOC(_IOC_NONE, typ, nr, 0)


def _IOR(typ: int, nr: int, size: int) -> int:
    return _IOC(_IOC_READ, typ, nr, size)


def _IOW(typ: int, nr: int, size: int) -> int:
    return _IOC(_IOC_WRITE, typ, nr, size)


def _IOWR(typ: int, nr: int, size: int) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, typ, nr, size)


# --- structures --------------------------------------------------------------
class kvm_userspace_memory_region(ctypes.Structure):
    # include/uapi/linux/kvm.h: struct kvm_userspace_memory_region (32 bytes)
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("guest_phys_addr", ctypes.c_uint64), ("memory_size", ctypes.c_uint64),
                ("userspace_addr", ctypes.c_uint64)]


class kvm_regs(ctypes.Structure):
    # arch/x86/include/uapi/asm/kvm.h: struct kvm_regs (18 x __u64 = 144 bytes)
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
        "r11", "r12", "r13", "r14", "r15", "rip", "rflags")]


class kvm_segment(ctypes.Structure):
    # arch/x86/include/uapi/asm/kvm.h: struct kvm_segment (24 bytes)
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint32),
                ("selector", ctypes.c_uint16)] + [(n, ctypes.c_uint8) for n in (
                    "type", "present", "dpl", "db", "s", "l", "g", "avl", "unusable", "padding")]


class kvm_dtable(ctypes.Structure):
    # arch/x86/include/uapi/asm/kvm.h: struct kvm_dtable (16 bytes)
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16),
                ("padding", ctypes.c_uint16 * 3)]


KVM_NR_INTERRUPTS = 256  # arch/x86/include/uapi/asm/kvm.h


class kvm_sregs(ctypes.Structure):
    # arch/x86/include/uapi/asm/kvm.h: struct kvm_sregs (312 bytes)
    _fields_ = ([(n, kvm_segment) for n in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")]
                + [("gdt", kvm_dtable), ("idt", kvm_dtable)]
                + [(n, ctypes.c_uint64) for n in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")]
                + [("interrupt_bitmap", ctypes.c_uint64 * ((KVM_NR_INTERRUPTS + 63) // 64))])


class kvm_run_io(ctypes.Structure):
    # include/uapi/linux/kvm.h: kvm_run union member "io" (KVM_EXIT_IO)
    _fields_ = [("direction", ctypes.c_uint8), ("size", ctypes.c_uint8), ("port", ctypes.c_uint16),
                ("count", ctypes.c_uint32), ("data_offset", ctypes.c_uint64)]


class kvm_run_mmio(ctypes.Structure):
    _fields_ = [("phys_addr", ctypes.c_uint64), ("data", ctypes.c_uint8 * 8),
                ("len", ctypes.c_uint32), ("is_write", ctypes.c_uint8)]


class kvm_run_internal(ctypes.Structure):
    _fields_ = [("suberror", ctypes.c_uint32), ("ndata", ctypes.c_uint32),
                ("data", ctypes.c_uint64 * 16)]


class kvm_run_exit(ctypes.Union):
    _fields_ = [("hardware_exit_reason", ctypes.c_uint64),            # hw
                ("hardware_entry_failure_reason", ctypes.c_uint64),   # fail_entry
                ("io", kvm_run_io), ("mmio", kvm_run_mmio), ("internal", kvm_run_internal),
                ("padding", ctypes.c_char * 256)]                     # fixes the union size


class kvm_run(ctypes.Structure):
    # include/uapi/linux/kvm.h: head of struct kvm_run (x86 layout, no s390 psw);
    # only this 288-byte head is modelled, the rest of the mmap is sync regs.
    _fields_ = [("request_interrupt_window", ctypes.c_uint8), ("immediate_exit", ctypes.c_uint8),
                ("padding1", ctypes.c_uint8 * 6), ("exit_reason", ctypes.c_uint32),
                ("ready_for_interrupt_injection", ctypes.c_uint8), ("if_flag", ctypes.c_uint8),
                ("flags", ctypes.c_uint16), ("cr8", ctypes.c_uint64), ("apic_base", ctypes.c_uint64),
                ("exit", kvm_run_exit)]


# --- ioctl numbers (include/uapi/linux/kvm.h) --------------------------------
KVMIO = 0xAE
KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, ctypes.sizeof(kvm_userspace_memory_region))
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, ctypes.sizeof(kvm_regs))
KVM_SET_REGS = _IOW(KVMIO, 0x82, ctypes.sizeof(kvm_regs))
KVM_GET_SREGS = _IOR(KVMIO, 0x83, ctypes.sizeof(kvm_sregs))
KVM_SET_SREGS = _IOW(KVMIO, 0x84, ctypes.sizeof(kvm_sregs))

# Capabilities (include/uapi/linux/kvm.h, KVM_CAP_*), reported in this order.
CAPABILITIES = {
    "irqchip": 0, "hlt": 1, "user_memory": 3, "set_tss_addr": 4, "ext_cpuid": 7,
    "nr_vcpus": 9, "nr_memslots": 10, "mp_state": 14, "coalesced_mmio": 15, "sync_mmu": 16,
    "irqfd": 32, "ioeventfd": 36, "vcpu_events": 41, "xsave": 55, "max_vcpus": 66,
    "one_reg": 70, "sync_regs": 74, "readonly_mem": 81, "x86_smm": 117,
    "split_irqchip": 121, "max_vcpu_id": 128, "immediate_exit": 136,
}
KVM_CAP_IRQCHIP, KVM_CAP_USER_MEMORY, KVM_CAP_NR_VCPUS = 0, 3, 9
KVM_CAP_MAX_VCPUS, KVM_CAP_IMMEDIATE_EXIT = 66, 136

# Exit reasons (include/uapi/linux/kvm.h, KVM_EXIT_*).
EXIT_NAMES = {0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT",
              6: "MMIO", 7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR",
              17: "INTERNAL_ERROR", 24: "SYSTEM_EVENT"}
KVM_EXIT_IO, KVM_EXIT_HLT, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN = 2, 5, 6, 8
KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTR, KVM_EXIT_INTERNAL_ERROR = 9, 10, 17
KVM_EXIT_IO_OUT = 1

# Hardware KVM runs the `loop` instruction at ~2e8-1e9 iterations/s (1-6
# cycles each); a software KVM provider (kvm_pvm here, or anything trapping
# each instruction) manages ~1e6.
# 1e8 sits in the middle of that three-orders-of-magnitude gap, so timer noise
# or a loaded host cannot move a result across it.
ACCELERATED_MIN_PER_SECOND = 1e8
# 300k iterations: ~0.25 s when emulated (within the 1 s budget), ~0.3 ms on
# hardware, still thousands of times the perf_counter resolution.
DEFAULT_LOOP_ITERATIONS = 300_000

GUEST_MEM_SIZE = 0x10000  # 64 KiB at guest-physical 0: the whole real-mode segment 0
CODE_ADDR = 0x1000
RESULT_PORT = 0xE9        # no in-kernel device listens there, so OUT exits to us
X86 = _MACHINE in ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86")


def _name(reason: int) -> str:
    return "KVM_EXIT_" + EXIT_NAMES.get(reason, "REASON_%d" % reason)


def api_version(kvm_fd: int) -> int:
    return fcntl.ioctl(kvm_fd, KVM_GET_API_VERSION, 0)


class kvm_cpuid_entry2(ctypes.Structure):
    # arch/x86/include/uapi/asm/kvm.h: struct kvm_cpuid_entry2 (40 bytes)
    _fields_ = [("function", ctypes.c_uint32), ("index", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("eax", ctypes.c_uint32), ("ebx", ctypes.c_uint32), ("ecx", ctypes.c_uint32),
                ("edx", ctypes.c_uint32), ("padding", ctypes.c_uint32 * 3)]


CPUID_MAX_ENTRIES = 256  # QEMU asks for up to 100; current kernels return about 60


class kvm_cpuid2(ctypes.Structure):
    # struct kvm_cpuid2 { __u32 nent; __u32 padding; struct kvm_cpuid_entry2 entries[]; }: the ioctl
    # number encodes only the 8-byte header; the flexible array follows in the same buffer.
    _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32),
                ("entries", kvm_cpuid_entry2 * CPUID_MAX_ENTRIES)]


KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, 8)


def guest_virt_extensions(kvm_fd: int) -> List[str]:
    """Which of vmx/svm KVM would offer to its own guests (KVM_GET_SUPPORTED_CPUID; x86 only).

    This is the nested-virtualization answer for guests of this host: kvm_intel/kvm_amd
    with nested=1 advertise CPUID.1:ECX.VMX[5] or CPUID.80000001h:ECX.SVM[2].
    """
    buf = kvm_cpuid2(nent=CPUID_MAX_ENTRIES)
    fcntl.ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, buf)  # OSError (E2BIG, ENOTTY...) propagates
    found = []
    for entry in buf.entries[: buf.nent]:
        if entry.function == 1 and entry.ecx & (1 << 5):
            found.append("vmx")
        if entry.function == 0x80000001 and entry.ecx & (1 << 2):
            found.append("svm")
    return found


def capabilities(kvm_fd: int) -> dict:
    """KVM_CHECK_EXTENSION for each known capability (0 = absent) + mmap size."""
    caps = {name: fcntl.ioctl(kvm_fd, KVM_CHECK_EXTENSION, nr) for name, nr in CAPABILITIES.items()}
    caps["vcpu_mmap_size"] = fcntl.ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0)
    return caps


class _Resources:
    """Closers run in reverse creation order; all run even if one fails."""

    def __init__(self) -> None:
        self._closers: List[Callable[[], None]] = []

    def add(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        while self._closers:
            try:
                self._closers.pop()()
            except (OSError, BufferError, ValueError):
                pass  # never mask the exception that got us here


def _os_close(fd: int) -> Callable[[], None]:
    return lambda: os.close(fd)


def _address(buf: mmap.mmap) -> int:
    # The ctypes view pins the mmap (close() would raise BufferError); drop it
    # as soon as the address is known.
    view = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(view)
    finally:
        del view


def _create_vcpu(kvm_fd: int, res: _Resources, code: bytes = b"") -> Tuple[int, Optional[mmap.mmap]]:
    """VM + memory slot 0 with `code` at CODE_ADDR + vCPU 0 + its kvm_run mapping."""
    vm_fd = fcntl.ioctl(kvm_fd, KVM_CREATE_VM, 0)
    res.add(_os_close(vm_fd))
    if not code:  # non-x86 probe: no guest memory or register setup needed
        vcpu_fd = fcntl.ioctl(vm_fd, KVM_CREATE_VCPU, 0)
        res.add(_os_close(vcpu_fd))
        return vcpu_fd, None
    mem = mmap.mmap(-1, GUEST_MEM_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                    prot=mmap.PROT_READ | mmap.PROT_WRITE)
    res.add(mem.close)
    mem[CODE_ADDR:CODE_ADDR + len(code)] = code
    region = kvm_userspace_memory_region(slot=0, flags=0, guest_phys_addr=0,
                                         memory_size=GUEST_MEM_SIZE, userspace_addr=_address(mem))
    fcntl.ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, bytes(region))
    vcpu_fd = fcntl.ioctl(vm_fd, KVM_CREATE_VCPU, 0)
    res.add(_os_close(vcpu_fd))
    size = fcntl.ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0)
    run = mmap.mmap(vcpu_fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    res.add(run.close)
    # Reset state is real mode with CS base 0xffff0000; point CS at segment 0
    # so rip=CODE_ADDR is the physical address the code was copied to.
    buf = bytearray(ctypes.sizeof(kvm_sregs))
    fcntl.ioctl(vcpu_fd, KVM_GET_SREGS, buf, True)
    sregs = kvm_sregs.from_buffer_copy(buf)
    sregs.cs.base, sregs.cs.selector = 0, 0
    fcntl.ioctl(vcpu_fd, KVM_SET_SREGS, bytes(sregs))
    return vcpu_fd, run


def _set_regs(vcpu_fd: int, **values: int) -> None:
    regs = kvm_regs(rip=CODE_ADDR, rflags=0x2, **values)  # bit 1 of RFLAGS is reserved-1
    fcntl.ioctl(vcpu_fd, KVM_SET_REGS, bytes(regs))


def _get_regs(vcpu_fd: int) -> kvm_regs:
    buf = bytearray(ctypes.sizeof(kvm_regs))
    fcntl.ioctl(vcpu_fd, KVM_GET_REGS, buf, True)
    return kvm_regs.from_buffer_copy(buf)


class _Watchdog:
    """Bound KVM_RUN with SIGALRM: a pending signal makes KVM_RUN return EINTR.

    A signal is the only thing that kicks a vCPU out of a guest that never
    exits; immediate_exit alone is checked only on entry.  So the handler also
    sets kvm_run.immediate_exit, closing the race where the signal lands in
    Python between two KVM_RUNs (the next one then returns EINTR at once), and
    the interval re-fires every 50 ms until disarmed.  signal.signal only works
    in the main thread; elsewhere the bounded guest programs and small
    iteration counts are the only limit.  The caller's SIGALRM handler and
    ITIMER_REAL are restored afterwards.
    """

    def __init__(self, run: mmap.mmap, seconds: float) -> None:
        self.run, self.seconds, self.fired, self.armed = run, seconds, False, False
        self._old_handler, self._old_timer, self._start = None, (0.0, 0.0), 0.0

    def _handler(self, signum, frame) -> None:
        self.fired = True
        self.run[kvm_run.immediate_exit.offset] = 1

    def __enter__(self) -> "_Watchdog":
        if threading.current_thread() is threading.main_thread() and self.seconds > 0:
            self._old_handler = signal.signal(signal.SIGALRM, self._handler)
            self._old_timer = signal.setitimer(signal.ITIMER_REAL, self.seconds, 0.05)
            self._start, self.armed = time.monotonic(), True
        return self

    def __exit__(self, *exc) -> None:
        if not self.armed:
            return
        # Disarm before restoring, so no SIGALRM of ours reaches the old handler;
        # None means a handler not set from Python: fall back to the default.
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        old = self._old_handler
        signal.signal(signal.SIGALRM, signal.SIG_DFL if old is None else old)
        remaining, interval = self._old_timer
        if remaining > 0:  # re-arm the caller's timer, minus the time we used
            left = remaining - (time.monotonic() - self._start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), interval)


T = TypeVar("T")


def in_child(func: Callable[[], T], timeout: float) -> T:
    """func() run in a forked child: its return value (or the exception it raised), or TimeoutError
    after timeout seconds, when the child is killed.

    The SIGALRM watchdog above arms only in the main thread, and the runner, the Ansible module and
    library callers run checks in worker threads: there, a guest that never exits would spin in
    KVM_RUN until the process ended.  A child can always be stopped: SIGKILL ends KVM_RUN at once (a
    fatal signal is pending), and the kernel frees the VM with the child.  In the child the forking
    thread is the main thread, so the watchdog arms there too.  The child runs only kvmcheck's own
    probe code (every module it needs is imported before the fork) and answers through a pipe with
    a pickle, which the parent reads from its own child only.
    """
    import pickle

    from kvmcheck.core.child import collect, fork_with_pipe, write_all

    pid, fd = fork_with_pipe()
    if pid == 0:  # the child: never returns
        try:
            try:
                payload = pickle.dumps(("ok", func()))
            except BaseException as exc:  # noqa: B902 - handed to the parent, which raises it
                try:
                    payload = pickle.dumps(("raised", exc))
                except Exception:  # an exception that does not pickle: say what it was
                    payload = pickle.dumps(("raised", RuntimeError(f"{type(exc).__name__}: {exc}")))
            write_all(fd, payload)
        finally:
            os._exit(0)
    try:
        data = collect(pid, fd, timeout)
    finally:
        os.close(fd)
    if data is None:
        raise TimeoutError(f"the KVM probe did not finish within {timeout:g} s; its process was killed")
    if not data:
        raise RuntimeError("the KVM probe's process ended without an answer")
    kind, value = pickle.loads(data)
    if kind == "raised":
        raise value
    return value


def _kvm_run(vcpu_fd: int, run: mmap.mmap, dog: _Watchdog) -> Optional[kvm_run]:
    """One KVM_RUN; None when the watchdog cut it short."""
    while not dog.fired:
        try:
            fcntl.ioctl(vcpu_fd, KVM_RUN, 0)
        except InterruptedError:
            continue  # someone else's signal: retry unless it was ours
        return kvm_run.from_buffer_copy(run[:ctypes.sizeof(kvm_run)])
    return None


def _io_value(run: mmap.mmap, st: kvm_run) -> int:
    io = st.exit.io
    fmt = {1: "<B", 2: "<H", 4: "<I"}.get(io.size, "<B")
    return struct.unpack_from(fmt, run, io.data_offset)[0]


def _explain(st: kvm_run) -> str:
    r, name = st.exit_reason, _name(st.exit_reason)
    if r == KVM_EXIT_FAIL_ENTRY:
        return "%s: VM entry failed, hardware reason 0x%x" % (name, st.exit.hardware_entry_failure_reason)
    if r == KVM_EXIT_INTERNAL_ERROR:
        return "%s: KVM internal error, suberror %d" % (name, st.exit.internal.suberror)
    if r == KVM_EXIT_SHUTDOWN:
        return "%s: the guest triple-faulted" % name
    if r == KVM_EXIT_MMIO:
        return "%s: guest touched unmapped address 0x%x" % (name, st.exit.mmio.phys_addr)
    return "%s: unexpected exit from the test guest" % name


@dataclass
class GuestRun:
    ok: bool
    inputs: tuple
    expected: int
    value: Optional[int]
    port: Optional[int]
    exits: List[str] = field(default_factory=list)
    reason: str = ""
    arch: str = _MACHINE
    executed: bool = False


def guest_expected(a: int, b: int) -> int:
    """What the guest program computes: ((3*a + b) mod 2**16) xor 0xA55A."""
    return ((3 * a + b) & 0xFFFF) ^ 0xA55A


# 16-bit real-mode code: ax=a, bx=b on entry.
_GUEST_CODE = bytes([
    0x89, 0xC1,                      # mov cx, ax
    0x01, 0xC0,                      # add ax, ax
    0x01, 0xC8,                      # add ax, cx        ; 3a
    0x01, 0xD8,                      # add ax, bx        ; 3a + b
    0x35, 0x5A, 0xA5,                # xor ax, 0xA55A
    0xBA, RESULT_PORT & 0xFF, RESULT_PORT >> 8,  # mov dx, RESULT_PORT
    0xEF,                            # out dx, ax
    0xF4,                            # hlt
])


def run_guest(kvm_fd: int, a: int = 0x1234, b: int = 0x0BEF, max_exits: int = 16,
              time_budget_s: float = 2.0) -> GuestRun:
    if not (0 <= a <= 0xFFFF and 0 <= b <= 0xFFFF):
        raise ValueError("guest inputs must fit in 16 bits")
    result = GuestRun(ok=False, inputs=(a, b), expected=guest_expected(a, b), value=None, port=None)
    res = _Resources()
    try:
        if not X86:
            _create_vcpu(kvm_fd, res)
            result.ok = True
            result.reason = "VM and vCPU created; guest execution is only probed on x86 (%s)" % _MACHINE
            return result
        vcpu_fd, run = _create_vcpu(kvm_fd, res, _GUEST_CODE)
        _set_regs(vcpu_fd, rax=a, rbx=b)
        result.executed = True
        with _Watchdog(run, time_budget_s) as dog:
            for _ in range(max_exits):
                st = _kvm_run(vcpu_fd, run, dog)
                if st is None:
                    result.reason = "guest did not stop within %.1f s (KVM_RUN interrupted)" % time_budget_s
                    return result
                result.exits.append(_name(st.exit_reason))
                if st.exit_reason == KVM_EXIT_IO and st.exit.io.direction == KVM_EXIT_IO_OUT:
                    result.port, result.value = st.exit.io.port, _io_value(run, st)
                elif st.exit_reason == KVM_EXIT_HLT:
                    break
                elif st.exit_reason != KVM_EXIT_INTR:
                    result.reason = _explain(st)
                    return result
            else:
                result.reason = "no KVM_EXIT_HLT within %d exits" % max_exits
                return result
        if result.value != result.expected or result.port != RESULT_PORT:
            result.reason = "guest wrote %r to port %r, expected 0x%04x on port 0x%x" % (
                result.value, result.port, result.expected, RESULT_PORT)
        else:
            result.ok = True
        return result
    finally:
        res.close()


@dataclass
class LoopRun:
    iterations: int
    elapsed_s: float
    per_second: float
    completed: bool
    exits: int
    reason: str = ""
    accelerated: bool = False
    requested: int = 0


def _loop_code(n: int) -> bytes:
    # One instruction per iteration (`loop`), so emulators that trap every
    # instruction are measured per instruction, like hardware roughly is.
    return (bytes([0xBA, RESULT_PORT & 0xFF, RESULT_PORT >> 8,  # mov dx, RESULT_PORT
                   0xEE,                      # out dx, al: warm-up exit, first entry not timed
                   0x66, 0xB9]) + struct.pack("<I", n)        # mov ecx, n
            + bytes([0x67, 0xE2, 0xFD,        # l: loop l (0x67: count in ecx, not cx)
                     0x66, 0xB8]) + struct.pack("<I", n)      # mov eax, n
            + bytes([0x66, 0x29, 0xC8,        # sub eax, ecx: == n only if ecx reached 0
                     0x66, 0xEF,              # out dx, eax
                     0xF4]))                  # hlt


def measure_loop(kvm_fd: int, iterations: int = DEFAULT_LOOP_ITERATIONS,
                 time_budget_s: float = 1.0) -> LoopRun:
    """Time a counted loop in the guest; only the KVM_RUN covering it is timed."""
    if not 1 <= iterations <= 0xFFFFFFFF:
        raise ValueError("iterations must be in 1..2**32-1")
    out = LoopRun(iterations=0, elapsed_s=0.0, per_second=0.0, completed=False, exits=0,
                  requested=iterations)
    if not X86:
        out.reason = "loop timing is only probed on x86 (%s)" % _MACHINE
        return out
    res = _Resources()
    try:
        vcpu_fd, run = _create_vcpu(kvm_fd, res, _loop_code(iterations))
        _set_regs(vcpu_fd)
        with _Watchdog(run, time_budget_s) as dog:
            st = _kvm_run(vcpu_fd, run, dog)  # up to the warm-up OUT
            if st is not None:
                out.exits += 1
                if st.exit_reason != KVM_EXIT_IO:
                    out.reason = _explain(st)
                    return out
                t0 = time.perf_counter()
                st = _kvm_run(vcpu_fd, run, dog)
                out.elapsed_s = time.perf_counter() - t0
        if st is None:
            # Timed out mid-loop: ecx counts down, so n - ecx iterations are done.
            out.iterations = iterations - (_get_regs(vcpu_fd).rcx & 0xFFFFFFFF)
            out.reason = "loop did not finish within %.2f s budget" % time_budget_s
        else:
            out.exits += 1
            if st.exit_reason != KVM_EXIT_IO or st.exit.io.size != 4:
                out.reason = _explain(st)
                return out
            out.iterations = _io_value(run, st)
            out.completed = out.iterations == iterations
            if not out.completed:
                out.reason = "guest counted %d iterations, expected %d" % (out.iterations, iterations)
        if out.elapsed_s > 0:
            out.per_second = out.iterations / out.elapsed_s
        out.accelerated = out.per_second >= ACCELERATED_MIN_PER_SECOND
        return out
    finally:
        res.close()


def create_vm(kvm_fd: int) -> None:
    """KVM_CREATE_VM on an open /dev/kvm, and close the VM again: proves the caller may create guests."""
    vm_fd = fcntl.ioctl(kvm_fd, KVM_CREATE_VM, 0)
    os.close(vm_fd)
