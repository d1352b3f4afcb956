# SPDX-License-Identifier: GPL-2.0-or-later
"""Run real guest code through /dev/kvm: does it compute, and how fast.

The probes (kvmcheck.facts.guest) open /dev/kvm through the Host, live only, and run in a child killed
when its time is up; these judges read what they found: the guest's run, the loop's rate, or the errno
met on the way (:func:`explain_open_error`).
"""
from __future__ import annotations

import errno
from typing import Any, Callable, Dict, List, Optional

from kvmcheck.checks.kvm import UDEV_FIX
from kvmcheck.core import kvmapi
from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts.guest import KVM_PATH, GuestProbe, KvmError, KvmProbe, LoopProbe, NestedParams

PROVIDERS = ("kvm_intel", "kvm_amd", "kvm_pvm", "kvm_hv", "kvm_pr")


def explain_open_error(err: KvmError) -> Outcome:
    """The advice for an OSError met while opening /dev/kvm or in a KVM ioctl."""
    name, stage, code = err.name, err.stage, err.errno
    evidence: Dict[str, Any] = {"errno": name, "error": err.error, "stage": stage, "path": KVM_PATH}
    if err.not_chardev:
        return Outcome.failed(
            f"{KVM_PATH} is not a character device ({name})",
            f"Something other than the KVM driver's node sits at {KVM_PATH}.",
            f"Remove it ('rm {KVM_PATH}') and reload the KVM modules so udev recreates it (see kvm.device).",
            **evidence)
    if code in (errno.EACCES, errno.EPERM):
        return Outcome.failed(
            f"permission denied opening {KVM_PATH} ({name})",
            f"The user running kvmcheck may not open {KVM_PATH} read/write (its mode, group, or an LSM/container "
            "device policy refuses it); QEMU run by this user would fall back to emulation or fail.",
            UDEV_FIX + " Group changes apply from the next login. See kvm.device.", **evidence)
    if code == errno.ENOENT:
        return Outcome.failed(
            f"{KVM_PATH} does not exist ({name})",
            "The KVM driver did not create its device node: the modules are not loaded, or firmware has VT "
            "disabled so they refused to load.",
            "See kvm.modules and firmware.vt-enabled; usually 'modprobe kvm_intel' or 'modprobe kvm_amd'.",
            **evidence)
    if code in (errno.ENXIO, errno.ENODEV):
        return Outcome.failed(
            f"{KVM_PATH} has no driver behind it ({name})",
            "The node exists but no KVM driver answers it (a stale node left after the modules were unloaded).",
            "Reload the KVM modules ('modprobe -r kvm_intel kvm; modprobe kvm_intel', or kvm_amd; see kvm.modules).",
            **evidence)
    if code in (errno.EMFILE, errno.ENFILE):
        scope = "this process" if code == errno.EMFILE else "the whole system"
        return Outcome.failed(
            f"out of file descriptors ({name})",
            f"The descriptor limit of {scope} is exhausted, so /dev/kvm or the VM/vCPU descriptors KVM hands out "
            "could not be created. Every VM needs one descriptor per vCPU plus several more.",
            "Raise the limit: 'ulimit -n' / LimitNOFILE= in the service unit (EMFILE), or the fs.file-max sysctl "
            "(ENFILE), and look for a process leaking descriptors.", **evidence)
    if code in (errno.ENOTTY, errno.EINVAL):
        return Outcome.failed(
            f"{KVM_PATH} does not answer KVM ioctls ({name})",
            f"A KVM ioctl was refused with {name}: whatever is behind {KVM_PATH} is not the KVM driver.",
            f"Check 'ls -l {KVM_PATH}' (character device 10:232) and 'lsmod | grep kvm'; remove the impostor and "
            "reload the KVM modules (see kvm.device, kvm.modules).", **evidence)
    where = f"opening {KVM_PATH}" if stage == "open" else "a KVM ioctl"
    return Outcome.failed(
        f"{where} failed: {err.error} ({name})",
        f"{where[0].upper()}{where[1:]} failed with {name}; KVM guests cannot start while this persists.",
        "Check 'dmesg' for kvm messages (ENOMEM: free memory or lower vm.max_map_count pressure) and retry.",
        **evidence)


def not_probed(probe: KvmProbe) -> Optional[Outcome]:
    """The outcome of a probe that found nothing to judge: an offline root, an errno, a guest that hung."""
    if probe.state == "offline":
        return Outcome.skipped("offline root", f"Running guest code needs the running kernel; the root is "
                                               f"{probe.root}.")
    if probe.state == "error":
        return explain_open_error(probe.error)
    if probe.state == "timeout":
        return Outcome.failed(
            f"the guest did not stop within {probe.limit_s:g} s",
            f"{probe.reason}. A guest that KVM never hands back (a stuck vCPU, a broken nested hypervisor) would "
            "hang QEMU the same way.", "Look for kvm errors in 'dmesg', and see kvm.acceleration and cpu.virt-flags.",
            limit_s=probe.limit_s)
    return None


# --- kvm.guest-run -------------------------------------------------------------

BAD_API = ("KVM_GET_API_VERSION returned {version}. Every KVM since Linux 2.6.22 reports 12, and QEMU refuses "
           "anything else.")
BAD_API_FIX = ("The kernel's KVM is non-standard or broken: boot a distribution kernel or remove the third-party "
               "KVM module.")
WRONG_ANSWER_FIX = ("KVM accepts ioctls but cannot run guest code correctly: look for kvm errors in 'dmesg' (VM-entry "
                    "failures), update the kernel and CPU microcode; under an outer hypervisor its nested "
                    "virtualization is faulty, so try bare metal.")


def judge_guest(probe: KvmProbe) -> Outcome:
    """kvm.guest-run's verdict on its probe."""
    unprobed = not_probed(probe)
    if unprobed:
        return unprobed
    found: GuestProbe = probe.found
    version = found.api_version
    evidence: Dict[str, Any] = {"api_version": version}
    if found.run is None:
        return Outcome.failed(f"KVM API version {version}, expected {kvmapi.KVM_API_VERSION_EXPECTED}",
                              BAD_API.format(version=version), BAD_API_FIX, **evidence)
    evidence["capabilities"] = dict(found.capabilities)
    run = found.run
    evidence.update(arch=run.arch, executed=run.executed, inputs=list(run.inputs), expected=run.expected,
                    value=run.value, port=run.port, exits=list(run.exits))
    if not run.executed:
        if run.ok:
            return Outcome.passed(f"VM and vCPU created (API {version}); guest execution not probed on "
                                  f"{run.arch}", run.reason, **evidence)
        return Outcome.failed("could not create a VM and vCPU", run.reason,
                              "Check 'dmesg' for kvm errors.", **evidence)
    a, b = run.inputs
    if run.ok:
        return Outcome.passed(
            f"test guest computed 0x{run.value:04x} and halted (API {version})",
            f"A 16-bit real-mode guest computed ((3*0x{a:04x} + 0x{b:04x}) mod 2^16) xor 0xA55A = 0x{run.expected:04x}, "
            f"wrote it to port 0x{run.port:x} and halted; exits: {', '.join(run.exits)}.", **evidence)
    evidence["reason"] = run.reason
    return Outcome.failed(
        f"the test guest ran but did not produce the right answer: {run.reason}",
        f"/dev/kvm created a VM and vCPU, but the guest program (expected 0x{run.expected:04x} on port "
        f"0x{kvmapi.RESULT_PORT:x}) ended with: {run.reason}. Exits seen: {', '.join(run.exits) or 'none'}.",
        WRONG_ANSWER_FIX, **evidence)


@check("kvm.guest-run", "A real guest runs through /dev/kvm", requires=("kvm.device",), live_only=True)
def guest_run(guest_run_probe) -> Outcome:
    """A tiny guest runs through /dev/kvm and computes the right answer.

    What: opens /dev/kvm, checks KVM_GET_API_VERSION is 12, reads the main
    capabilities (user memory, irqchip, vCPU limits, vcpu mmap size), then
    creates a VM with 64 KiB of memory and one vCPU and runs a 16-bit
    real-mode program that computes ((3a + b) mod 2^16) xor 0xA55A, writes it
    to I/O port 0xE9 and halts.  Passes only when the value and port are right.
    Off x86, only VM and vCPU creation are probed.  Every descriptor is closed.

    Why: a node that opens is not proof that guests run; broken nested
    virtualization, a stale node or a refusing LSM only show up here.

    Fix: follow the errno-specific advice: group membership for EACCES, the
    modules for ENOENT/ENXIO, the descriptor limit for EMFILE.
    """
    return judge_guest(guest_run_probe.get())


# --- kvm.acceleration ------------------------------------------------------------

def platform_facts(modules: Dict[str, str], kvm_nested_params: NestedParams, host_vt_flags) -> Dict[str, Any]:
    """What explains a rate: the KVM provider, nested parameters and the host's own VT flags."""
    provider = next((m for m in PROVIDERS if m in modules), None)
    return {"provider": provider, "modules": sorted(modules), "nested": kvm_nested_params.values(),
            "host_virt_flags": list(host_vt_flags)}


PVM_PROVIDER = ("/dev/kvm is provided by kvm_pvm (PVM, Pagetable-based Virtual Machine), a software KVM provider "
                "that works without VT-x/AMD-V using shadow paging: standard real-mode code and stock guests "
                "(distribution kernels, Windows, SeaBIOS/OVMF) are emulated, and only PVM guest kernels run well.")
NOT_ACCELERATED_FIX = ("For general-purpose KVM guests, use bare metal or an instance type with nested virtualization "
                       "enabled (see cpu.virt-flags for the switch of each hypervisor).")
PVM_EXPECTED = " If this host only serves PVM sandboxes (PVM guest kernels), this failure is expected."


def _rate(x: float) -> str:
    return f"{x:.3g}"


def assess_loop(loop: kvmapi.LoopRun, platform: Dict[str, Any], virt: Optional[Callable[[], Any]] = None) -> Outcome:
    """Verdict on a measured loop: pure, but for virt().

    virt, when given, returns the virt fact (.in_guest, .vendor); it is
    only asked on the slow path, since it may read the kernel log.
    """
    threshold = kvmapi.ACCELERATED_MIN_PER_SECOND
    evidence: Dict[str, Any] = {
        "iterations": loop.iterations, "requested": loop.requested, "completed": loop.completed,
        "elapsed_s": round(loop.elapsed_s, 6), "instructions_per_second": round(loop.per_second),
        "accelerated": loop.accelerated, "threshold": threshold,
    }
    evidence.update(platform)
    if loop.reason:
        evidence["reason"] = loop.reason
    nested_txt = ", ".join(f"{m} nested={v}" for m, v in platform.get("nested", {}).items())
    if not loop.completed and "only probed on x86" in loop.reason:
        return Outcome.skipped(loop.reason, "The timing guest is x86 real-mode code.", **evidence)
    if not loop.completed and "budget" not in loop.reason:
        return Outcome.failed(
            f"the timing guest failed: {loop.reason}",
            "The counted loop did not run to its end inside the guest, so no rate could be measured.",
            "Look for kvm errors in 'dmesg' and see kvm.guest-run.", **evidence).keyed("timing-guest-failed")
    measured = (f"The test guest ran {loop.iterations:,} iterations of the x86 'loop' instruction in "
                f"{loop.elapsed_s * 1000:.1f} ms: {_rate(loop.per_second)} instructions/s"
                + ("" if loop.completed else f" (partial: {loop.reason})")
                + f". Hardware-assisted KVM runs it at 2e8-1e9/s; the threshold is {_rate(threshold)}/s.")
    if loop.accelerated and loop.completed:
        detail = measured + (f" Nested virtualization for this host's guests: {nested_txt}." if nested_txt else "")
        return Outcome.passed(f"{_rate(loop.per_second)} guest instructions/s: hardware-accelerated", detail,
                              **evidence)
    if loop.accelerated or loop.iterations == 0:
        return Outcome.warned(
            "the timing guest did not finish within its budget; inconclusive",
            measured, "Re-run kvmcheck on an idle host, or with a larger --timeout.", **evidence).keyed("inconclusive")
    why: List[str] = []
    if platform.get("provider") == "kvm_pvm" or "kvm_pvm" in platform.get("modules", ()):
        why.append(PVM_PROVIDER)
    vf = virt() if virt else None
    if vf is not None:
        evidence["in_guest"] = bool(vf.in_guest)
        evidence["hypervisor"] = vf.vendor
    if vf is not None and vf.in_guest:
        if platform.get("host_virt_flags"):
            why.append(f"This machine is a {vf.vendor or 'virtual'} guest; its CPU shows "
                       f"{'/'.join(platform['host_virt_flags'])}, yet guest code is not accelerated, so the outer "
                       "hypervisor's nested virtualization is not effective.")
        else:
            why.append(f"This machine is itself a {vf.vendor or 'virtual'} guest without nested virtualization "
                       "(no vmx/svm in its CPU flags), so KVM here has no hardware support to use.")
    if not why:
        why.append("KVM is not using hardware virtualization for this guest.")
    fix = NOT_ACCELERATED_FIX + (PVM_EXPECTED if platform.get("provider") == "kvm_pvm" else "")
    # Without VT-x/AMD-V offered to this host (cpu.virt-flags) or enabled (firmware.vt-enabled), no KVM
    # provider can accelerate: those checks name the cause and its fix.
    return Outcome.failed(
        f"guest code is not hardware-accelerated: {_rate(loop.per_second)} instructions/s "
        f"(hardware >= {_rate(threshold)})",
        measured + " " + " ".join(why), fix, **evidence).keyed("not-accelerated").because(
            "cpu.virt-flags", "firmware.vt-enabled")


def judge_loop(probe: KvmProbe, platform: Dict[str, Any], virt: Optional[Callable[[], Any]] = None) -> Outcome:
    """kvm.acceleration's verdict on its probe; platform as platform_facts() gives it."""
    unprobed = not_probed(probe)
    if unprobed:
        return unprobed
    found: LoopProbe = probe.found
    explains = dict(platform)
    explains["calibration"] = {"iterations": found.calibration.iterations,
                               "per_second": round(found.calibration.per_second)}
    if found.guest_virt_flags is not None:
        explains["guest_virt_flags"] = found.guest_virt_flags  # nested: what KVM offers its guests
    return assess_loop(found.loop, explains, virt)


@check("kvm.acceleration", "Guest code runs hardware-accelerated", requires=("kvm.device", "kvm.guest-run"),
       live_only=True)
def acceleration(loop_run_probe, modules, kvm_nested_params, host_vt_flags, virt_when_asked) -> Outcome:
    """Guest instructions run at hardware speed, not emulated.

    What: times a counted 'loop' instruction inside a real-mode guest on
    /dev/kvm (a short calibration run sizes the timed run to about 10 ms;
    a rate near the threshold is timed again for 0.1 s) and
    compares the rate with 1e8 instructions/s: hardware-assisted KVM does
    2e8-1e9, software providers about 1e6.  Reports the KVM provider, the
    kvm_intel/kvm_amd 'nested' parameters, whether this CPU shows vmx/svm, and
    whether KVM would offer vmx/svm to its guests (KVM_GET_SUPPORTED_CPUID).

    Why: with a software provider such as PVM (kvm_pvm), or under a hypervisor
    without nested virtualization, /dev/kvm can exist and guests still crawl.

    Fix: run on bare metal or on an instance with nested virtualization
    enabled; a host that only serves PVM sandboxes can ignore this failure.
    """
    platform = platform_facts(modules, kvm_nested_params, host_vt_flags)
    return judge_loop(loop_run_probe.get(), platform, virt_when_asked.get)
