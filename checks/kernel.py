# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel release, and module blacklists that keep KVM from loading."""
from __future__ import annotations

from typing import List, Optional, Tuple

from kvmcheck.checks.kvm import block_lines, expected_vendor_modules, unload_advice
from kvmcheck.facts import kvm as _facts  # noqa: F401 - the facts judged here
from kvmcheck.facts.system import quoted
from kvmcheck.core.model import Outcome
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.kernel_version import parse_kernel_release, parse_min_version
from kvmcheck.core.registry import check


def _newest_installed(installed) -> Optional[Tuple[str, str]]:
    """(release, source) of the newest parsable release under /lib/modules, None when there is none."""
    parsed = []
    for rel in installed:
        try:
            parsed.append(parse_kernel_release(rel))
        except ParseError:
            continue
    if not parsed:
        return None
    newest = max(parsed, key=lambda k: k.version)
    return newest.release, f"newest of /lib/modules ({len(parsed)} installed)"


@check("kernel.version", "Kernel version")
def kernel_version(settings, osrelease, osrelease_text, installed_kernels) -> Outcome:
    """The running kernel is at least the configured minimum (default 2.6.20, the first with KVM).

    What: the release from the root's /proc/sys/kernel/osrelease (never the
    kvmcheck process's own uname when --root is given); for an offline root
    without /proc, the newest kernel installed under /lib/modules.

    Why: older kernels lack KVM or the features later checks rely on.

    Fix: update the kernel package and reboot into it.
    """
    minimum = parse_min_version(settings.min_kernel)
    min_text = ".".join(map(str, minimum))
    release = osrelease
    source = "/proc/sys/kernel/osrelease"
    text = osrelease_text
    if release is None and text is not None:
        what = "is empty" if not text else "does not hold a kernel release"
        return Outcome.failed(f"{source} {what}",
                              f"The first line of {source} is {quoted(text, 60)}: "
                              "not a kernel release (at most 64 characters, no blanks, no '/'); the root may be "
                              "damaged.", "Capture the root again, or check what wrote that file.",
                              release=text[:200], source=source).keyed("osrelease-not-a-release")
    if release is None:
        newest = _newest_installed(installed_kernels.get())
        if newest is None:
            return Outcome.skipped("no kernel release in this root",
                                   "Neither /proc/sys/kernel/osrelease nor /lib/modules/<release> is present.")
        release, source = newest
    try:
        kv = parse_kernel_release(release)
    except ParseError as exc:
        return Outcome.failed(f"unparsable kernel release {release[:60]!r}", str(exc),
                              "Check /proc/sys/kernel/osrelease; a custom kernel should keep the "
                              "MAJOR.MINOR.PATCH prefix.", release=release[:200], source=source).keyed(
                                  "unparsable-release")
    evidence = {"release": kv.release, "version": str(kv), "minimum": min_text, "source": source}
    if kv.version < minimum:
        return Outcome.failed(f"kernel {kv} is older than {min_text}",
                              f"The kernel {kv.release} ({source}) predates the required {min_text}.",
                              "Install a current kernel from the distribution and reboot into it.",
                              **evidence).keyed("older-than-minimum")
    return Outcome.passed(f"{kv.release} (>= {min_text})", **evidence)


# --- kernel.modules-blacklist ------------------------------------------------------------------------------
# Blocking one of these means no KVM at all; blocking one of the others costs networking or device assignment.
KVM_CORE_MODULES = ("kvm", "kvm_intel", "kvm_amd", "kvm_hv")
KVM_HELPER_MODULES = ("vhost_net", "vhost", "tun", "vfio", "vfio_pci", "vfio_iommu_type1")
# Kernel command-line parameters that keep modules from loading: modprobe reads modprobe.blacklist= itself,
# the kernel enforces module_blacklist= (Linux >= 4.13), dracut honours rd.driver.blacklist= in the initramfs only.
CMDLINE_BLACKLISTS = ("modprobe.blacklist", "module_blacklist", "rd.driver.blacklist")


def _cmdline_blocks(cmdline, names: List[str]) -> List[Tuple[str, str, bool]]:
    if cmdline is None:
        return []
    found = []
    for param in CMDLINE_BLACKLISTS:
        for module in cmdline.list_values(param):
            name = module.replace("-", "_")
            if name in names:
                found.append((name, f"/proc/cmdline: {param}={module}", param == "rd.driver.blacklist"))
    return found


def _sort_blocks(blocks, vendor, cpu_known, states) -> Tuple[List[str], List[str], List[str]]:
    """(fatal, warn, noted) of the (module, where, initramfs-only) blocks."""
    fatal, warn, noted = [], [], []
    for module, where, initramfs_only in blocks:
        if module in KVM_CORE_MODULES and module != "kvm" and cpu_known and module not in vendor:
            noted.append(f"{where} (not this CPU's module)")
        elif states.get(module) == "built-in":  # no blacklist can stop a built-in module
            warn.append(f"{where} (ineffective: {module} is built into the kernel; a stale line)")
        elif module in KVM_CORE_MODULES and not initramfs_only:
            fatal.append(where)
        elif initramfs_only:
            warn.append(f"{where} (initramfs only)")
        else:
            warn.append(where)
    return fatal, warn, noted


def _blacklist_fix(wheres: List[str]) -> str:
    return ("Remove these: " + "; ".join(w.split(" (", 1)[0] for w in wheres) + ". In modprobe.d delete the "
            "line (override a /usr/lib/modprobe.d file with an empty one of the same name in /etc/modprobe.d); on "
            "the kernel command line edit GRUB_CMDLINE_LINUX in /etc/default/grub and regenerate the GRUB config "
            "(or 'grubby --update-kernel=ALL --remove-args=...'); then rebuild the initramfs "
            "('dracut -f' or 'update-initramfs -u') and reboot.")


def _blocked_module(line: str) -> str:
    """The module of a block_lines line: "PATH:LINE: blacklist MODULE" -> MODULE."""
    return line.split(": ", 1)[1].split()[1]


def _loaded_anyway(modprobe_lines, states, holders) -> str:
    """The pending note of modprobe.d lines ("PATH:LINE: blacklist MODULE") that block modules loaded now ("" when
    none): they take effect when the module is unloaded, or at the next boot.  (A kernel parameter is in effect
    already: it is not pending.)"""
    loaded = [line for line in modprobe_lines if states.get(_blocked_module(line)) == "loaded"]
    if not loaded:
        return ""
    lines = "; ".join(f"{line.split(': ', 1)[1]} in {line.split(': ', 1)[0].rsplit(':', 1)[0]}" for line in loaded)
    modules = dict.fromkeys(_blocked_module(line) for line in loaded)
    steps = "; ".join(unload_advice(m, holders.get(m, ())) for m in modules)
    return f"configured, not yet in effect: {lines}; {steps}"


@check("kernel.modules-blacklist", "KVM modules not blacklisted")
def kernel_modules_blacklist(modprobe_d, cmdline, family, cpuinfo, arch, watched_module_states, modules,
                             module_holders) -> Outcome:
    """No modprobe.d line or kernel parameter keeps the KVM, vhost, tun or VFIO modules from loading.

    What: 'blacklist MODULE' and 'install MODULE /bin/false' (or /bin/true)
    in modprobe.d as kmod applies it (/etc, /run, /usr/local/lib, /usr/lib,
    /lib), and modprobe.blacklist=, module_blacklist= and rd.driver.blacklist=
    on /proc/cmdline, for kvm, kvm_intel, kvm_amd, kvm_hv, vhost_net, vhost,
    tun and vfio*.  Blocking kvm or this CPU's vendor module fails; the other
    vendor's module is noted only; vhost/tun/VFIO, rd.driver.blacklist=
    (initramfs only) or a built-in module warns.  No modprobe.d and no
    /proc/cmdline: skip.  A modprobe.d line that blocks a module loaded now
    is pending: it takes effect when the module is unloaded or at the next boot.

    Why: udev loads kvm_intel/kvm_amd at boot through the CPU's modalias; a
    blacklist stops exactly that, so /dev/kvm is missing after every reboot.
    Hardening guides (CIS, STIG) and GPU passthrough recipes add such lines.

    Fix: delete the line (override a /usr/lib/modprobe.d file with an empty
    one of the same name in /etc/modprobe.d), or remove the kernel parameter
    (GRUB_CMDLINE_LINUX, or grubby on RHEL), then rebuild the initramfs.
    """
    watched = list(KVM_CORE_MODULES + KVM_HELPER_MODULES)
    modprobe_lines = block_lines(modprobe_d, watched)  # "PATH:LINE: blacklist MODULE", "PATH:LINE: install MODULE CMD"
    blocks = [(_blocked_module(line), line, False) for line in modprobe_lines]  # (module, where, initramfs-only)
    blocks.extend(_cmdline_blocks(cmdline, watched))
    cmdline_read = cmdline is not None
    if not blocks and not cmdline_read and not modprobe_d.dirs:
        return Outcome.skipped("no modprobe.d directory and no /proc/cmdline in this root",
                               "There is no module configuration to read.", blocked_by=[], cmdline_read=False)
    if not blocks:
        return Outcome.passed("no blacklist for kvm, vhost, tun or vfio modules",
                              "" if cmdline_read else "No /proc/cmdline in this root: only modprobe.d was read.",
                              blocked_by=[], cmdline_read=cmdline_read)
    vendor = expected_vendor_modules(family, cpuinfo)
    if family == "x86":  # without a vendor_id, kvm_intel and kvm_amd are both taken as this CPU's
        cpu_known = bool(cpuinfo and cpuinfo.first("vendor_id"))
    else:
        cpu_known = arch[0] is not None
    fatal, warn, noted = _sort_blocks(blocks, vendor, cpu_known, watched_module_states)
    evidence = {"blocked_by": [w for _, w, _ in blocks], "fatal": fatal, "warnings": warn, "noted": noted,
                "cmdline_read": cmdline_read, "vendor_modules": vendor}
    outcome = _blocked_verdict(fatal, warn, noted, modules, evidence)
    pending = _loaded_anyway(modprobe_lines, watched_module_states, module_holders)
    return outcome.awaiting("module-reload", pending) if pending else outcome


def _blocked_verdict(fatal, warn, noted, modules, evidence) -> Outcome:
    fix = _blacklist_fix(fatal + warn)
    note = (" Not a problem: " + "; ".join(noted) + ".") if noted else ""
    if fatal:
        loaded = [m for m, state in modules.items() if state == "loaded"]
        return Outcome.failed(
            "KVM module blocked: " + "; ".join(fatal),
            "These lines keep the KVM modules from loading at boot, so there is no /dev/kvm"
            + (f" after the next reboot (loaded now: {', '.join(loaded)})" if loaded else "") + "."
            + (" Also: " + "; ".join(warn) + "." if warn else "") + note, fix, **evidence)
    if warn:
        return Outcome.warned(
            "blocked: " + "; ".join(warn),
            "vhost_net/vhost (in-kernel virtio-net), tun (every tap NIC of a guest) and vfio/vfio_pci (PCI device "
            "assignment) cannot load on demand while blocked." + note, fix, **evidence)
    return Outcome.passed("only other vendors' KVM modules are blacklisted", note.strip(), **evidence)
