# SPDX-License-Identifier: GPL-2.0-or-later
"""KVM kernel modules and the /dev/kvm device node."""
from __future__ import annotations

import errno
from typing import Dict, List

from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts.system import quoted
from kvmcheck.facts import boot as _boot_facts  # noqa: F401 - boot_cmdline (kvm_intel.nested= on the command line)
from kvmcheck.facts import consumer as _consumer_facts  # noqa: F401 - kvm_group_in_effect
from kvmcheck.facts import kvm as _facts  # noqa: F401 - the facts judged here
from kvmcheck.facts.kvm import DEVTMPFS_NODES, MODPROBE_DIRS  # noqa: F401 - kept importable

# Users that QEMU runs as under libvirt (qemu.conf "user"): Debian/Ubuntu, Fedora/RHEL, SUSE/Arch.
QEMU_USERS = ("libvirt-qemu", "qemu")
UDEV_FIX = ("Give /dev/kvm to the kvm group: the udev rule KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\" "
            "(shipped by systemd/udev and qemu packages; add it as /etc/udev/rules.d/65-kvm.rules if missing), "
            "then 'udevadm trigger -c add /dev/kvm' (or 'chgrp kvm /dev/kvm && chmod 0660 /dev/kvm' until the next "
            "boot), and 'usermod -aG kvm USER' for each user who runs VMs.")


def expected_vendor_modules(family: str, cpuinfo) -> List[str]:
    if family == "x86":
        vendor = (cpuinfo.first("vendor_id") if cpuinfo else None) or ""
        return ["kvm_amd"] if vendor in ("AuthenticAMD", "HygonGenuine") else ["kvm_intel"]
    if family == "ppc64":
        return ["kvm_hv"]
    return []  # arm64, s390, riscv, loongarch: KVM is one module (often built in)


def block_lines(modprobe_d, names) -> List[str]:
    """"PATH:LINE: blacklist MODULE" or "PATH:LINE: install MODULE CMD" for each modprobe.d block of names."""
    return [f"{path}:{b.line}: {b.how.split()[0]} {b.module}" + ("" if b.how == "blacklist" else " " + b.how.split(" ", 1)[1])
            for path, b in modprobe_d.blocks(names)]


def reload_advice(module: str, holders) -> str:
    """How to reload MODULE safely: the modules using it go out first and come back with it."""
    users = list(holders)
    load = f"modprobe -a {' '.join(users)}" if len(users) > 1 else f"modprobe {users[0] if users else module}"
    return (f"reload {module} (no guest may be running: modprobe -r {' '.join(users + [module])} && {load}) "
            "or reboot")


def reload_note(params) -> str:
    """The pending note of module parameters configured in modprobe.d and loaded with another value (one
    module's): "configured, not yet in effect: nested=1 for kvm_intel in /etc/modprobe.d/kvm.conf; reload
    kvm_intel (...) or reboot", and how to set the ones that are writable at run time now."""
    module = params[0].module
    settings = "; ".join(f"{p.word} for {p.module} in {p.path}" for p in params)
    now = [f"echo {p.configured} > /sys/module/{module}/parameters/{p.name}" for p in params if p.writable]
    return (f"configured, not yet in effect: {settings}; {reload_advice(module, params[0].holders)}"
            + (f"; or set it now: {'; '.join(now)}" if len(now) == len(params) else ""))


def unload_advice(module: str, holders) -> str:
    """How to unload MODULE, the modules using it first."""
    return f"unload {module} (no guest may be running: modprobe -r {' '.join(list(holders) + [module])}) or reboot"


PVM_DETAIL = ("kvm_pvm is a software KVM vendor module (Pagetable-based Virtual Machine) that cannot coexist with "
              "kvm_intel/kvm_amd; /dev/kvm works without VT, but only PVM guest kernels run fast (see "
              "cpu.virt-flags and kvm.acceleration).")
PR_DETAIL = "kvm_pr emulates privileged instructions; it is slow and unmaintained. KVM-HV needs a bare-metal PowerNV host."
FULL_KERNEL_FIX = ("Install the distribution's full kernel package (for example kernel-modules or "
                   "linux-modules-extra).")


def _installed_verdict(installed_kvm_modules, wanted, evidence) -> Outcome:
    """kvm.modules on a root without /sys/module: what is installed under /lib/modules."""
    evidence["installed"] = sorted(installed_kvm_modules)
    if not installed_kvm_modules:
        return Outcome.skipped("no /sys/module in this root and no KVM modules under /lib/modules",
                               "The root holds no record of loaded or installed modules.", **evidence)
    missing = [m for m in ["kvm"] + wanted if m not in installed_kvm_modules]
    if missing:
        return Outcome.failed(f"installed kernel lacks {', '.join(missing)}",
                              "These modules are not under /lib/modules/*/kernel/arch/*/kvm/.", FULL_KERNEL_FIX,
                              **evidence)
    return Outcome.passed(f"installed as modules: {', '.join(['kvm'] + wanted)} (udev loads them at boot)", **evidence)


def _missing_verdict(missing, blocked, family, cpuinfo, evidence) -> Outcome:
    detail = f"Not in /sys/module: {', '.join(missing)}."
    fix = f"Load it now with 'modprobe {missing[-1]}' (it pulls in kvm) and check 'dmesg | tail' for the reason if it refuses."
    if blocked:
        detail += " Module loading is blocked by: " + "; ".join(blocked) + "."
        fix = "Remove these lines: " + "; ".join(blocked) + f", then 'modprobe {missing[-1]}'."
        return Outcome.failed(f"missing: {', '.join(missing)}", detail, fix, **evidence).because(
            "kernel.modules-blacklist")
    if family == "x86" and cpuinfo and not any(f in s for s in cpuinfo.x86_flags for f in ("vmx", "svm")):
        detail += " The CPU flags show no vmx/svm, so the vendor module would refuse to load (see cpu.virt-flags)."
        fix = "Enable virtualization first (see cpu.virt-flags and firmware.vt-enabled), then 'modprobe " + missing[-1] + "'."
    return Outcome.failed(f"missing: {', '.join(missing)}", detail, fix, **evidence).because(
        "cpu.virt-flags", "firmware.vt-enabled")


# kvm's parameters that no check judges but whose modprobe.d value kvm.modules compares with the running one.
KVM_TUNABLES = ("halt_poll_ns", "ignore_msrs")


def _configured_tunables(module_parameters, evidence) -> list:
    """KVM_TUNABLES that modprobe.d sets, configured against effective, in evidence; returns the pending ones."""
    configured = [p for p in (module_parameters.get("kvm", n) for n in KVM_TUNABLES) if p and p.word is not None]
    if configured:
        evidence["parameters"] = {p.name: {"configured": p.configured, "effective": p.effective, "where": p.where}
                                  for p in configured}
    return [p for p in configured if p.pending]


@check("kvm.modules", "KVM kernel modules")
def kvm_modules(modules, family, cpuinfo, sys_module, installed_kvm_modules, modprobe_d, module_parameters) -> Outcome:
    """The KVM core and the vendor part for this CPU are in the running kernel.

    What: kvm plus kvm_intel or kvm_amd (x86), kvm_hv (POWER), or KVM built in
    (arm64, s390, RISC-V, LoongArch), or a software provider (kvm_pvm), read
    from /sys/module, which shows built-in modules too (/proc/modules does not,
    and some kernels have no /proc/modules at all).  Blacklists and
    'install ... /bin/false' lines in modprobe.d are reported, and kvm's
    halt_poll_ns and ignore_msrs as modprobe.d sets them against the running
    values (pending a reload of kvm when they differ).

    Why: without the vendor module there is no /dev/kvm.

    Fix: 'modprobe kvm_intel' (or kvm_amd), and remove any blacklist line.
    """
    wanted = expected_vendor_modules(family, cpuinfo)
    evidence: Dict[str, object] = {"present": modules, "expected": ["kvm"] + wanted}
    if not sys_module:
        return _installed_verdict(installed_kvm_modules.get(), wanted, evidence)
    blocked = block_lines(modprobe_d, ["kvm", "kvm_intel", "kvm_amd", "kvm_hv"])
    evidence["blocked_by"] = blocked
    pending = _configured_tunables(module_parameters, evidence)
    outcome = _loaded_verdict(modules, wanted, blocked, family, cpuinfo, evidence)
    return outcome.awaiting("module-reload", reload_note(pending)) if pending else outcome


def _loaded_verdict(modules, wanted, blocked, family, cpuinfo, evidence) -> Outcome:
    """kvm.modules from /sys/module: the core and a vendor part or provider, or what is missing and why."""
    provider = next((m for m in wanted + ["kvm_pvm", "kvm_pr"] if m in modules), None)
    how = ", ".join(f"{m} ({state})" for m, state in modules.items())
    if "kvm" in modules and (provider or not wanted):
        if provider == "kvm_pvm":
            return Outcome.passed(f"{how}: KVM through the software provider PVM", PVM_DETAIL, **evidence)
        if provider == "kvm_pr":
            return Outcome.warned(f"{how}: KVM-PR only", PR_DETAIL, "On bare-metal POWER, 'modprobe kvm_hv'.",
                                  **evidence)
        return Outcome.passed(how, **evidence)
    missing = [m for m in ["kvm"] + wanted if m not in modules]
    return _missing_verdict(missing, blocked, family, cpuinfo, evidence)


def _group_access(accounts, st) -> Dict[str, object]:
    """Who can open /dev/kvm: the owning group, its members, and who is locked out ({} without accounts)."""
    info: Dict[str, object] = {}
    if not accounts.ok:
        return info
    groups, users = accounts.groups, accounts.users
    grp = groups.get(st.gid)
    info["group"] = grp.name if grp else str(st.gid)
    mode = st.mode
    group_rw = mode & 0o060 == 0o060
    world_rw = mode & 0o006 == 0o006
    info["group_rw"] = group_rw
    members = set(grp.members) if grp else set()
    members |= {u.name for u in users if u.gid == st.gid}
    info["group_members"] = sorted(members)
    # Who would want KVM: QEMU's run users and ordinary login users (uid >= 1000, a real shell).
    interested = [u for u in users if u.name in QEMU_USERS or
                  (u.uid >= 1000 and u.uid != 65534 and not u.shell.endswith(("nologin", "false")))]
    if world_rw:
        locked = []
    else:
        locked = sorted(u.name for u in interested if u.uid != st.uid and not (group_rw and u.name in members))
    info["locked_out"] = locked
    # QEMU's run users apart from the people who log in: only the first are "QEMU's user".
    info["locked_out_qemu"] = [n for n in locked if n in QEMU_USERS]
    info["locked_out_login"] = [n for n in locked if n not in QEMU_USERS]
    info["kvm_group_exists"] = any(g.name == "kvm" for g in groups.values())
    return info


def _locked_out_text(access: Dict[str, object]) -> str:
    """'QEMU's user libvirt-qemu; login user cloudsdk': who is locked out, by role."""
    parts = []
    for key, role in (("locked_out_qemu", "QEMU's user"), ("locked_out_login", "login user")):
        names = access.get(key) or []
        if names:
            parts.append(f"{role}{'s' if len(names) > 1 else ''} {', '.join(names)}")  # type: ignore[arg-type]
    return "; ".join(parts)


def _user_fix(access: Dict[str, object]) -> str:
    group = access.get("group")
    if access.get("group_rw") and group not in (None, "root", "0"):
        return f"Add the user to the {group} group ('usermod -aG {group} $USER') and log in again."
    # Never advise joining root's group: give the node to the kvm group instead.
    return _access_fix(access)


def _access_fix(access: Dict[str, object]) -> str:
    if access.get("kvm_group_exists", True):
        return UDEV_FIX
    return "There is no kvm group yet: 'groupadd --system kvm' first. " + UDEV_FIX


NO_DEV_DETAIL = ("Offline roots rarely hold /dev (devtmpfs and udev fill it at boot); see kvm.modules.")
CAPTURED_NO_KVM = ("The root's /dev holds {nodes} but no kvm: devtmpfs creates /dev/kvm as soon as a KVM vendor module "
                   "registers it, so no KVM driver was running when /dev was captured (modules not loaded, VT "
                   "disabled in firmware, or a VM without nested virtualization).")
CAPTURED_NO_KVM_FIX = ("See kvm.modules and firmware.vt-enabled for the cause; usually enable VT in the firmware setup "
                       "or nested virtualization on the outer hypervisor, then 'modprobe kvm_intel' or 'modprobe kvm_amd'.")
LIVE_NO_KVM = ("The KVM driver did not create its device node: the modules are not loaded, or firmware has VT "
               "disabled so they refused to load.")
LIVE_NO_KVM_FIX = "See kvm.modules and firmware.vt-enabled; usually 'modprobe kvm_intel' or 'modprobe kvm_amd'."
RELOAD_FIX = "Remove it ('rm /dev/kvm') and reload the KVM modules so udev recreates it."
ROOT_ONLY_WHY = ("QEMU under libvirt runs as its own user (libvirt-qemu or qemu), and people who run VMs themselves "
                 "(GNOME Boxes, virt-manager's session mode, podman machine) use their own.")
ROOT_ONLY_DETAIL = ("No group or other user can open /dev/kvm, so QEMU must run as root; libvirt's qemu user and "
                    "unprivileged users (for example with GNOME Boxes or podman machine) fall back to emulation.")


def _missing_node(live: bool, devtmpfs_nodes) -> Outcome:
    """kvm.device when there is no /dev/kvm: a root without /dev, a captured /dev without it, or a live host."""
    if live:
        return Outcome.failed("/dev/kvm does not exist", LIVE_NO_KVM, LIVE_NO_KVM_FIX).because("kvm.modules")
    present = list(devtmpfs_nodes.get())
    if not present:
        return Outcome.skipped("/dev/kvm is not in this root, whose /dev was not captured", NO_DEV_DETAIL,
                               dev_captured=False)
    return Outcome.failed("/dev/kvm is missing from this root's populated /dev",
                          CAPTURED_NO_KVM.format(nodes=", ".join(present)), CAPTURED_NO_KVM_FIX,
                          dev_captured=True, dev_nodes=present).because("kvm.modules", "firmware.vt-enabled")


def _live_verdict(kvm_open, access, evidence) -> Outcome:
    """kvm.device on a live host whose /dev/kvm is a character device: can the invoking user use it?"""
    probe = kvm_open.get()
    euid, mode, group = probe.euid, evidence["mode"], access.get("group")
    evidence["invoking_uid"] = euid
    evidence["accessible"] = probe.accessible
    if not probe.accessible:
        return Outcome.failed(
            "the invoking user cannot open /dev/kvm",
            f"/dev/kvm is mode {mode}, group {group}, and uid {euid} is neither the owner "
            "nor in a group with read/write access.", _user_fix(access), **evidence)
    if probe.open_errno is not None:
        name = errno.errorcode.get(probe.open_errno, str(probe.open_errno))
        evidence["open_errno"] = name
        return Outcome.failed(
            f"/dev/kvm exists but cannot be opened ({errno.errorcode.get(probe.open_errno, probe.open_errno)})",
            "The node is there but no driver answers (ENXIO/ENODEV: a stale node with the module unloaded).",
            "Reload the KVM modules (see kvm.modules) so the driver backs the node again.", **evidence,
        ).because("kvm.modules")
    if euid == 0 and access.get("locked_out"):
        who = _locked_out_text(access)
        return Outcome.warned(
            f"usable by root only; locked out: {who}",
            f"/dev/kvm is mode {mode}, group {group}. Root can open it, but these accounts cannot: {who}. "
            + ROOT_ONLY_WHY, _access_fix(access), **evidence).because("kvm.consumer")  # QEMU's user: proven there
    if euid == 0 and not access.get("group_rw") and not int(mode, 8) & 0o006:
        return Outcome.warned(f"usable by root only (mode {mode}, group {group})", ROOT_ONLY_DETAIL,
                              _access_fix(access), **evidence)
    return Outcome.passed(f"character device {evidence['rdev']}, mode {mode}, group {group}, usable by uid {euid}",
                          **evidence)


def _membership_evidence(found) -> Dict[str, object]:  # type: ignore[no-untyped-def]
    """What the comparison of /etc/group with the running processes found, for the evidence."""
    if not found.compared:
        return {"group": found.group, "compared": False, "why": found.why}
    return {"group": found.group, "compared": True, "not_in_effect": [
        {"user": s.user, "this_process": s.invoking, "processes": [f"{name} ({pid})" for pid, name in s.processes]}
        for s in found.stale]}


def awaiting_login(outcome: Outcome, found) -> Outcome:  # type: ignore[no-untyped-def]
    """The outcome, pending relogin when /etc/group puts a user in the group whose processes lack it."""
    if not found.compared or not found.stale:
        return outcome
    steps = []
    for s in found.stale:
        running = ", ".join(f"{name} ({pid})" for pid, name in s.processes[:3])
        more = f" and {len(s.processes) - 3} more" if len(s.processes) > 3 else ""
        held = f" ({running}{more} still run without it)" if running else ""
        steps.append(f"{s.user} was added to {s.group} in /etc/group; log out and in again (or run 'newgrp "
                     f"{s.group}'), and restart services running as {s.user}{held}")
    return outcome.awaiting("relogin", "configured, not yet in effect: " + "; ".join(steps))


@check("kvm.device", "/dev/kvm device node")
def kvm_device(kvm_node, live, devtmpfs_nodes, accounts, kvm_open, kvm_group_in_effect) -> Outcome:
    """/dev/kvm exists, is a character device, and the invoking user can open it.

    What: the node's type, owner and mode; read/write access for the user
    running kvmcheck; when run as root, whether its group can use it and which
    QEMU and login users would be locked out.  The device is opened once (no
    ioctl) to prove a driver stands behind it.  Live, the members /etc/group
    gives the device's group are compared with the groups their processes
    hold (kvmcheck's own, other login users' /proc/PID/status): a member
    still running without it is pending a new login.

    Why: QEMU (and libvirt's qemu user) open /dev/kvm; a node they cannot open
    means software emulation or a failed start.

    Fix: load the KVM modules (see kvm.modules); give the node to the kvm group
    with mode 0660 and add users to that group.
    """
    st = kvm_node
    if st is None:
        return _missing_node(live, devtmpfs_nodes)
    if st.kind == "link":
        return Outcome.failed("/dev/kvm is a dangling symlink", "The link points nowhere.",
                              "Remove the link and reload the KVM modules so udev recreates the node.")
    evidence: Dict[str, object] = {"mode": f"{st.mode:04o}", "uid": st.uid, "gid": st.gid, "kind": st.kind}
    if st.kind != "char":
        return Outcome.failed("/dev/kvm is not a character device",
                              "Something other than the KVM driver's node sits at /dev/kvm.", RELOAD_FIX, **evidence)
    evidence["rdev"] = f"{st.major}:{st.minor}"
    access = _group_access(accounts, st)
    evidence.update(access)
    in_effect = kvm_group_in_effect.get()
    evidence["membership"] = _membership_evidence(in_effect)
    if live:
        return awaiting_login(_live_verdict(kvm_open, access, evidence), in_effect)
    if access.get("locked_out"):
        return Outcome.warned(f"/dev/kvm {evidence['mode']} group {access.get('group')}: users locked out",
                              f"Locked out: {_locked_out_text(access)}.", _access_fix(access),
                              **evidence).because("kvm.consumer")  # type: ignore[arg-type]
    return Outcome.passed(f"character device {evidence['rdev']}, mode {evidence['mode']}", **evidence)


# Where each KVM flavour keeps its nested-virtualization switch (a module parameter).
NESTED_PARAM_MODULES = {"x86": ("kvm_intel", "kvm_amd"), "ppc64": ("kvm_hv",), "s390": ("kvm",)}


def _nested_options(modprobe_d, module: str) -> List[str]:
    """'options MODULE ... nested=V' of modprobe.d, as "path:line: nested=V" (the last one wins)."""
    return [f"{path}:{line}: {word}" for path, line, word in modprobe_d.options(module, "nested")]


def _nested_fix(module: str, state: str) -> str:
    if module == "kvm_hv":
        return "Load kvm_hv with nested=1 ('options kvm_hv nested=1' in /etc/modprobe.d/kvm.conf; POWER9 or later)."
    if state == "built-in":
        return f"{module} is built into the kernel: add {module}.nested=1 to the kernel command line and reboot."
    return (f"echo 'options {module} nested=1' > /etc/modprobe.d/kvm.conf, then, with no guest running, "
            f"'modprobe -r {module} && modprobe {module}' (or reboot).")


def _arm64_nested(cmdline, evidence) -> Outcome:
    """kvm.nested on arm64: kvm-arm.mode on the kernel command line."""
    if cmdline is None:
        return Outcome.skipped("no /proc/cmdline to read kvm-arm.mode from", **evidence)
    mode = cmdline.get("kvm-arm.mode")
    evidence["kvm-arm.mode"] = mode
    if mode == "nested":
        return Outcome.passed("enabled (kvm-arm.mode=nested)", "Needs FEAT_NV2 hardware and Linux >= 6.16; "
                              "without them KVM falls back to non-nested.", **evidence)
    return Outcome.passed(
        "disabled (fine unless guests run hypervisors)",
        f"kvm-arm.mode={mode or '(default)'}. To enable: add kvm-arm.mode=nested to the kernel command line and "
        "reboot (needs ARMv8.4 FEAT_NV2 hardware and Linux >= 6.16).", **evidence)


def _no_nested_module(candidates, mods, sys_module, modprobe_d, evidence) -> Outcome:
    """kvm.nested when none of the modules with a nested switch is loaded."""
    if "kvm_pvm" in mods:
        return Outcome.skipped(
            "KVM comes from kvm_pvm, which has no nested parameter",
            "Nested virtualization is a kvm_intel/kvm_amd switch; kvm_pvm (software KVM) runs without VT-x/AMD-V "
            "and cannot offer it to its guests.", **evidence)
    if not sys_module:
        configured = [line for m in candidates for line in _nested_options(modprobe_d, m)]
        evidence["configured"] = configured
        return Outcome.skipped("no /sys/module in this root: the loaded module's setting is unknown",
                               ("modprobe.d sets " + "; ".join(configured)) if configured else "", **evidence)
    return Outcome.skipped(f"no {' or '.join(candidates)} loaded (see kvm.modules)", **evidence)


@check("kvm.nested", "Nested virtualization")
def kvm_nested(family, modules, cmdline, sys_module, nested_parameters, modprobe_d, module_parameters,
               boot_cmdline=None) -> Outcome:
    """Whether guests may run hypervisors of their own (informational).

    What: the nested parameter of kvm_intel or kvm_amd (x86: Y/N or 1/0),
    kvm_hv (POWER) or kvm (s390), and kvm-arm.mode=nested on the arm64 kernel
    command line; 'options ... nested=' lines in modprobe.d are shown too, and
    one the loaded module does not have yet is pending a reload.  It passes
    either way: enabled, or disabled (fine unless guests run hypervisors).
    Skipped when no vendor module is there (kvm_pvm, for example, has no
    nested switch).

    Why: only guests that run KVM, Hyper-V (WSL2, VBS/Credential Guard),
    Android emulators or test hypervisors need it; other guests do not care.

    Fix: 'options kvm_intel nested=1' (or kvm_amd) in /etc/modprobe.d/kvm.conf,
    then reload the module with no guest running (or reboot).
    """
    mods = modules
    evidence: Dict[str, object] = {"family": family}
    if family == "arm64":
        return _arm64_nested(cmdline, evidence)
    candidates = NESTED_PARAM_MODULES.get(family)
    if not candidates:
        return Outcome.skipped(f"no nested-virtualization switch known for {family if family != 'unknown' else 'an unknown architecture'}",
                               **evidence)
    module = next((m for m in candidates if m in mods), None)
    if module is None:
        return _no_nested_module(candidates, mods, sys_module, modprobe_d, evidence)
    path = f"/sys/module/{module}/parameters/nested"
    value = nested_parameters[module]
    configured = _nested_options(modprobe_d, module)
    evidence.update(module=module, parameter=path, value=value, configured=configured)
    if value is None:
        return Outcome.skipped(f"{module} has no nested parameter ({path} is absent)",
                               "Kernels that old, or builds without nested support, cannot run nested guests.",
                               **evidence)
    if value.upper() not in ("Y", "N", "1", "0"):  # module_param bool prints Y/N, kvm_amd's int 1/0
        return Outcome.skipped(f"{path} holds no Y/N or 1/0 value",
                               f"It starts with {quoted(value)}: not a module parameter value; the root may be "
                               "damaged.", **dict(evidence, value=value[:200]))
    enabled = value.upper() in ("Y", "1")
    note = f" modprobe.d: {'; '.join(configured)}." if configured else ""
    param = module_parameters.get(module, "nested")
    pending = [param] if param is not None and param.pending else []
    if pending:
        note += f" The setting is configured but not in effect: {param.word} in {param.where}."
    if enabled:
        outcome = Outcome.passed(f"enabled ({module} nested={value})",
                                 "Guests may run hypervisors of their own (give them the vmx/svm flag with "
                                 "host-passthrough or host-model CPUs)." + note, **evidence)
    else:
        outcome = Outcome.passed(
            f"disabled (fine unless guests run hypervisors) ({module} nested={value})",
            "Only guests that run KVM, Hyper-V/WSL2 or other hypervisors need nested virtualization. To enable: "
            + _nested_fix(module, mods.get(module, "loaded")) + note, **evidence)
    outcome = outcome.awaiting("module-reload", reload_note(pending)) if pending else outcome
    # kvm_intel.nested=1 in the boot loader's next entry (or /etc/default/grub) and not on /proc/cmdline
    boot = boot_cmdline.pending((f"{module}.nested",)) if boot_cmdline is not None else None  # None: judged alone
    return outcome.awaiting(*boot) if boot else outcome
