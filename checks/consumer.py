# SPDX-License-Identifier: GPL-2.0-or-later
"""The stack as its real consumer: the user libvirt runs QEMU as, QEMU itself, the libvirt daemon, containers.

kvm.device and kvm.guest-run prove KVM for the user running kvmcheck.  A VM is started by QEMU, under
libvirt as its own user (qemu, libvirt-qemu), perhaps in a container: these checks ask them.
"""
from __future__ import annotations

import errno
import re
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

from kvmcheck.facts.context import Context, quoted
from kvmcheck.core.host import OfflineError
from kvmcheck.core.model import Outcome
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.accounts import parse_group, parse_passwd
from kvmcheck.parsers.posix_acl import may_access, parse_posix_acl
from kvmcheck.core.registry import check

QEMU_CONF = "/etc/libvirt/qemu.conf"
LIBVIRT_DAEMONS = ("/usr/sbin/libvirtd", "/usr/sbin/virtqemud", "/usr/bin/libvirtd", "/usr/bin/virtqemud")
# qemu.conf's built-in defaults (libvirt's meson options qemu_user/qemu_group as each distribution sets them).
DEFAULT_IDENTITY = {"debian": ("libvirt-qemu", "libvirt-qemu"), "ubuntu": ("libvirt-qemu", "kvm"),
                    "rhel": ("qemu", "qemu"), "suse": ("qemu", "qemu"), "arch": ("libvirt-qemu", "libvirt-qemu")}
CONSUMER_DEVICES = ("/dev/kvm", "/dev/vhost-net", "/dev/net/tun")
ACL_XATTR = "system.posix_acl_access"
UDEV_RULE = ("the udev rule KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\" (systemd's 50-udev-default.rules and its "
             "static-nodes rule; add it as /etc/udev/rules.d/65-kvm.rules if missing), then 'udevadm trigger -c add "
             "/dev/kvm' (or 'chgrp kvm /dev/kvm && chmod 0660 /dev/kvm' until the next boot)")


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?$")  # useradd's names (and Samba's trailing $)


def shown_name(name: str) -> str:
    """A user or group name from the root as it may appear in a report and a command: as is when it is an
    ordinary name, else quoted (a hostile /etc/passwd can hold escape sequences)."""
    return name if _SAFE_NAME.match(name) else quoted(name)


def printable(text: str, limit: int = 300) -> str:
    """A program's message on one line, control characters replaced: it may echo what a hostile file held."""
    return "".join(ch if ch.isprintable() else "?" for ch in " ".join(text.split()))[:limit]


class Identity(NamedTuple):
    user: str
    uid: int
    gid: int  # the process's gid: qemu.conf's group
    groups: Tuple[int, ...]  # supplementary groups, as libvirt's virGetGroupList computes them
    source: str  # where user and group came from


def qemu_identity(ctx: Context) -> Tuple[Optional[Identity], str]:
    """The identity libvirt gives QEMU (qemu.conf user/group, else the distribution's defaults), or (None, why).

    libvirt's virGetGroupList: the groups /etc/group lists the user in, the user's primary group from
    /etc/passwd (Debian's libvirt-qemu has primary group kvm and is no listed member of it), and the
    configured group.  NSS sources other than the files (LDAP, sssd) are not seen.
    """
    from kvmcheck.parsers.qemu_stack import parse_qemu_conf_defaults, parse_qemu_conf_identity

    host = ctx.host
    try:
        text = host.read_optional(QEMU_CONF, limit=1 << 20) or ""
        unreadable = ""
    except PermissionError:  # 0600 root on Debian: an unprivileged run falls back to the defaults
        text, unreadable = "", f" ({QEMU_CONF} is not readable by uid {host.invoking_user()[0]})"
    conf = parse_qemu_conf_identity(text)
    shipped = parse_qemu_conf_defaults(text)
    # Unset, libvirt uses its build's defaults: as the shipped qemu.conf documents them, else as the
    # distribution family is known to build them.
    user_default, group_default = DEFAULT_IDENTITY.get(ctx.distro_family() or "", (None, None))
    user_default, group_default = shipped.get("user", user_default), shipped.get("group", group_default)
    users = parse_passwd(host.read_optional("/etc/passwd") or "")
    groups = parse_group(host.read_optional("/etc/group") or "")
    user_name = conf.get("user") or user_default
    if user_name is None:  # an unknown distribution: whichever of the usual users exists
        user_name = next((u.name for u in users if u.name in ("libvirt-qemu", "qemu")), None)
    source = (f"{QEMU_CONF} user" if "user" in conf else
              f"the default {QEMU_CONF} documents" if "user" in shipped else "the distribution's default") + unreadable
    if user_name is None:
        return None, "neither qemu.conf nor /etc/passwd names QEMU's user (libvirt-qemu or qemu)"
    if user_name.startswith("+") and user_name[1:].isdigit():  # "+0": a uid, not a name
        uid = int(user_name[1:])
        entry = next((u for u in users if u.uid == uid), None)
    else:
        entry = next((u for u in users if u.name == user_name), None)
        if entry is None and user_name.isdigit():
            entry = next((u for u in users if u.uid == int(user_name)), None)
    if entry is None:
        return None, f"QEMU's user {quoted(user_name)} ({source}) is not in /etc/passwd"
    group_name = conf.get("group") or group_default
    gid = entry.gid
    if group_name:
        if group_name.startswith("+") and group_name[1:].isdigit():
            gid = int(group_name[1:])
        else:
            gid = next((g.gid for g in groups.values() if g.name == group_name),
                       int(group_name) if group_name.isdigit() else entry.gid)
    supplementary = {g.gid for g in groups.values() if entry.name in g.members} | {entry.gid, gid}
    return Identity(shown_name(entry.name), entry.uid, gid, tuple(sorted(supplementary)), source), ""


def _group_name(ctx: Context, gid: int) -> str:
    groups = parse_group(ctx.host.read_optional("/etc/group") or "")
    return shown_name(groups[gid].name) if gid in groups else str(gid)


def _static_access(ctx: Context, path: str, who: Identity) -> Dict[str, object]:
    """What the node's mode, owner, group and POSIX ACL give this identity (no node is opened)."""
    node = ctx.host.node(path)
    if node is None or node.kind != "char":
        return {"present": node is not None, "kind": node.kind if node else None}
    acl = None
    raw = ctx.host.xattr(path, ACL_XATTR)
    info: Dict[str, object] = {"present": True, "mode": f"{node.mode:04o}", "owner": node.uid,
                               "group": _group_name(ctx, node.gid)}
    if raw:
        try:
            acl = parse_posix_acl(raw)
            info["acl"] = [e.text() for e in acl]
        except ParseError as exc:
            info["acl_error"] = str(exc)
    info["rw"] = may_access(6, node.mode, node.uid, node.gid, who.uid, frozenset(who.groups), acl)
    return info


def prove_as(ctx: Context, who: Identity, timeout: float = 3.0) -> Tuple[str, int]:
    """Open /dev/kvm and create a VM as QEMU's identity, in a child (Host.device_probe_as): the parent never
    changes identity.  Live and root only (the caller checks)."""
    from kvmcheck.core import kvmapi

    return ctx.host.device_probe_as("/dev/kvm", who.uid, who.gid, who.groups, kvmapi.create_vm, timeout)


def consumer_state(ctx: Context) -> Dict[str, object]:
    """The consumer's identity and whether it can use /dev/kvm (shared by kvm.consumer and the QEMU checks)."""
    def load() -> Dict[str, object]:
        who, why = qemu_identity(ctx)
        state: Dict[str, object] = {"identity": who, "why": why, "kvm_rw": None, "proof": None}
        if who is None:
            return state
        state["devices"] = {p: _static_access(ctx, p, who) for p in CONSUMER_DEVICES}
        kvm = state["devices"]["/dev/kvm"]  # type: ignore[index]
        state["kvm_rw"] = kvm.get("rw") if kvm.get("present") else None
        if ctx.host.live and ctx.host.invoking_user()[0] == 0 and kvm.get("present"):
            try:
                step, err = prove_as(ctx, who)
            except (OSError, RuntimeError) as exc:  # TimeoutError among them
                state["proof"] = ("error", str(exc))
            else:
                state["proof"] = (step, err)
                state["kvm_rw"] = step == "ok"
        return state
    return ctx.host.memo("consumer.state", load)


def _libvirt_installed(ctx: Context) -> bool:
    return ctx.host.exists(QEMU_CONF) or any(ctx.host.exists(p) for p in LIBVIRT_DAEMONS)


def _kvm_fix(ctx: Context, who: Identity, info: Dict[str, object]) -> str:
    group = info.get("group")
    mode = int(str(info.get("mode", "0")), 8)
    if group not in ("root", "0", None) and mode & 0o060 == 0o060:
        return (f"Add {who.user} to the {group} group: 'usermod -aG {group} {who.user}', then restart libvirt "
                "('systemctl restart libvirtd' or virtqemud) so QEMU starts with the new groups.")
    join = "" if "kvm" in [_group_name(ctx, g) for g in who.groups] else \
        f" and add {who.user} to it ('usermod -aG kvm {who.user}')"
    return f"Give /dev/kvm to the kvm group with {UDEV_RULE}{join}."


@check("kvm.consumer", "QEMU's user can use KVM", reads=(
    QEMU_CONF, "/etc/passwd", "/etc/group", "/dev/kvm", "/dev/vhost-net", "/dev/net/tun",
), requires=("kvm.device",))
def kvm_consumer(ctx: Context) -> Outcome:
    """The user libvirt runs QEMU as can open /dev/kvm and create a VM.

    What: QEMU's user and group from libvirt's qemu.conf ('user =', 'group =';
    unset, the distribution's defaults: libvirt-qemu on Debian/Ubuntu, qemu on
    Fedora/RHEL/SUSE), resolved through the root's /etc/passwd and /etc/group
    with the groups libvirt gives the process (the configured group, the
    user's primary group, the groups listing it).  /dev/kvm, /dev/vhost-net
    and /dev/net/tun are judged for that identity from mode, owner, group
    and POSIX ACL (never opened offline).  On the running host as root, a
    forked child drops to that identity, opens /dev/kvm and creates a VM;
    kvmcheck itself never changes identity.  The child keeps kvmcheck's
    cgroup and security label, so SELinux (svirt_t) and AppArmor (libvirt's
    per-guest profiles) are judged by security.* checks, not here.
    /dev/net/tun and /dev/vhost-net are opened by libvirt (as root) and
    passed to QEMU, so they are reported, not judged.

    Why: "the check passed and the VM still does not start": root can open
    /dev/kvm, but QEMU under libvirt runs as its own user and fails with
    "Could not access KVM kernel module: Permission denied", or libvirt
    falls back to offering no KVM domain type at all.

    Fix: udev's rule makes /dev/kvm 0660 root:kvm; QEMU's user must be in
    kvm ('usermod -aG kvm libvirt-qemu' or qemu), then restart libvirt.
    """
    who, why = qemu_identity(ctx)
    if not _libvirt_installed(ctx):
        name = who.user if who else "libvirt-qemu (Debian, Ubuntu) or qemu (Fedora, RHEL, SUSE)"
        return Outcome.skipped(
            "libvirt is not installed: nothing runs QEMU as its own user yet",
            f"When libvirt is installed, QEMU will run as {name}, and that user's access to /dev/kvm will matter "
            "(udev's rule gives /dev/kvm to the kvm group; the user must be in it).", user=who.user if who else None)
    if who is None and not ctx.host.exists("/etc/passwd"):
        return Outcome.skipped("no /etc/passwd in this root: QEMU's user cannot be resolved",
                               "A capture without the account files cannot tell whose access matters.")
    if who is None:
        return Outcome.failed(f"QEMU's user cannot be resolved: {why}", why + ".",
                              "Reinstall libvirt's daemon package so it creates its user, or set 'user =' in "
                              f"{QEMU_CONF} to an existing user.")
    state = consumer_state(ctx)
    devices: Dict[str, Dict[str, object]] = state["devices"]  # type: ignore[assignment]
    groups = [_group_name(ctx, g) for g in who.groups]
    evidence: Dict[str, object] = {"user": who.user, "uid": who.uid, "gid": who.gid, "groups": groups,
                                   "identity_source": who.source, "devices": devices}
    label = f"{who.user} (uid {who.uid}, groups {', '.join(groups)})"
    if who.uid == 0:
        return Outcome.passed(f"QEMU runs as root ({who.source}): it can open every device", **evidence)
    kvm = devices["/dev/kvm"]
    if not kvm.get("present"):
        if not ctx.host.live:
            in_kvm = "kvm" in groups
            if in_kvm:
                return Outcome.skipped(f"no /dev/kvm in this root; {who.user} is in group kvm",
                                       "udev gives /dev/kvm to the kvm group at boot, so it will be usable.", **evidence)
            return Outcome.warned(f"no /dev/kvm in this root; {who.user} is not in group kvm",
                                  f"At boot udev makes /dev/kvm 0660 root:kvm, and {label} is not in kvm.",
                                  f"'usermod -aG kvm {who.user}' in this root.", **evidence)
        return Outcome.skipped("no /dev/kvm (see kvm.device)", **evidence)
    proof = state.get("proof")
    notes = [f"{p}: not {who.user}'s to open (mode {d.get('mode')}, group {d.get('group')}); libvirt opens it as "
             "root and passes the descriptor" for p, d in devices.items()
             if p != "/dev/kvm" and d.get("present") and d.get("rw") is False]
    note = (" " + "; ".join(notes) + ".") if notes else ""
    if proof is not None:
        step, err = proof
        evidence["proof"] = {"step": step, "errno": errno.errorcode.get(err, str(err)) if isinstance(err, int) else err}
        if step == "error":
            return Outcome.skipped(f"the probe as {who.user} did not finish: {err}", **evidence)
        if step == "ok":
            return Outcome.passed(f"{who.user} opened /dev/kvm and created a VM (mode {kvm['mode']}, group "
                                  f"{kvm['group']})", f"Proved in a child running as {label}.{note}", **evidence)
        name = errno.errorcode.get(err, str(err))
        if step == "probe":
            return Outcome.failed(f"{who.user} opened /dev/kvm but KVM_CREATE_VM failed ({name})",
                                  f"Running as {label}, creating a VM failed with {name}.",
                                  "See kvm.guest-run and the kernel log ('dmesg | grep -i kvm').", **evidence)
        return Outcome.failed(f"{who.user} cannot open /dev/kvm ({name}): mode {kvm['mode']}, group {kvm['group']}",
                              f"A child running as {label} got {name} opening /dev/kvm, so QEMU under libvirt "
                              f"cannot use KVM.{note}", _kvm_fix(ctx, who, kvm), **evidence)
    how = ("Judged from mode, group and ACL; proving it by opening needs root" if ctx.host.live else
           "Judged from mode, group and ACL; nothing was opened (an offline root)")
    acl = f", ACL {' '.join(kvm['acl'])}" if kvm.get("acl") else ""  # type: ignore[arg-type]
    if kvm.get("rw"):
        return Outcome.passed(f"{who.user} may open /dev/kvm (mode {kvm['mode']}, group {kvm['group']}{acl})",
                              f"{how}: {label} has read/write access.{note}", **evidence)
    return Outcome.failed(f"{who.user} cannot open /dev/kvm: mode {kvm['mode']}, group {kvm['group']}{acl}",
                          f"{how}: {label} has no read/write access.{note}", _kvm_fix(ctx, who, kvm),
                          **evidence)


# -- QEMU ----------------------------------------------------------------------------------------------
QEMU_BINARIES = {
    "x86": ("/usr/bin/qemu-system-x86_64", "/usr/libexec/qemu-kvm", "/usr/bin/qemu-kvm"),
    "arm64": ("/usr/bin/qemu-system-aarch64", "/usr/libexec/qemu-kvm", "/usr/bin/qemu-kvm"),
    "s390": ("/usr/bin/qemu-system-s390x", "/usr/libexec/qemu-kvm", "/usr/bin/qemu-kvm"),
    "ppc64": ("/usr/bin/qemu-system-ppc64", "/usr/libexec/qemu-kvm", "/usr/bin/qemu-kvm"),
}
# The machine types a distribution's guests default to, by prefix.
DEFAULT_MACHINES = {"x86": ("pc-q35-", "pc-i440fx-"), "arm64": ("virt-",), "s390": ("s390-ccw-virtio-",),
                    "ppc64": ("pseries-",)}
QMP_COMMANDS = ("qmp_capabilities", "query-kvm", "query-version", "query-machines", "quit")
QEMU_PACKAGES = ("qemu-system-x86", "qemu-system-arm", "qemu-system-s390x", "qemu-system-ppc", "qemu-kvm",
                 "qemu-kvm-core", "qemu-system-x86-core", "qemu-system-aarch64-core", "qemu-x86", "qemu-arm",
                 "qemu-s390x", "qemu-ppc")


def _qemu_binary(ctx: Context) -> Optional[str]:
    return next((p for p in QEMU_BINARIES.get(ctx.family(), ()) if ctx.host.exists(p)), None)


def _consumer_note(ctx: Context) -> Tuple[str, bool]:
    """(a sentence, whether libvirt's QEMU user is locked out of /dev/kvm) for the QEMU and libvirt checks."""
    if not _libvirt_installed(ctx):
        return "", False
    state = consumer_state(ctx)
    who = state.get("identity")
    if who is not None and state.get("kvm_rw") is False:
        return (f" Under libvirt QEMU runs as {who.user}, which cannot open /dev/kvm (see kvm.consumer).",  # type: ignore[attr-defined]
                True)
    return "", False


@check("qemu.accel", "QEMU can use KVM", reads=tuple(dict.fromkeys(p for ps in QEMU_BINARIES.values() for p in ps)) + (
    "/var/lib/dpkg/status", "/var/lib/rpm",
), requires=("kvm.device",), live_only=True)
def qemu_accel(ctx: Context) -> Outcome:
    """The installed QEMU system emulator starts with KVM acceleration.

    What: QEMU for the host architecture (qemu-system-x86_64, qemu-kvm,
    /usr/libexec/qemu-kvm, qemu-system-aarch64, -s390x, -ppc64) is started
    with no guest and no files ('-machine none -accel kvm -nodefaults
    -nographic -S -qmp stdio', no shell, a time limit) as the invoking user,
    and asked over QMP: query-kvm (present, enabled), query-version and
    query-machines (are the distribution's default machine types, pc-q35-*,
    pc-i440fx-*, virt-*, s390-ccw-virtio-*, pseries-*, offered).  Never with
    TCG as a fallback.  On an offline root: the installed QEMU package's
    version, and the run is skipped.

    Why: a QEMU built without KVM, or one that cannot open /dev/kvm, runs
    guests by emulation (10-50x slower) or refuses "-accel kvm".

    Fix: install the distribution's QEMU ('apt-get install
    qemu-system-x86', 'dnf install qemu-kvm'); for a KVM error, see
    kvm.device and kvm.consumer.
    """
    from kvmcheck.parsers.qemu_stack import parse_qmp, qemu_version

    binary = _qemu_binary(ctx)
    if not ctx.host.live:
        from kvmcheck.checks.packages import _installed

        pkgs = (_installed(ctx).get("packages") or {})
        found = {name: pkgs[name] for name in QEMU_PACKAGES if name in pkgs}  # type: ignore[operator,index]
        what = ", ".join(f"{n} {v}" for n, v in found.items()) or "no QEMU package in the package database"
        return Outcome.skipped(f"offline root: QEMU is not run ({what})",
                               f"Emulator: {binary or 'none found'}.", packages=found, binary=binary)
    if binary is None:
        return Outcome.skipped(f"no QEMU system emulator for {ctx.family()} is installed",
                               "Nothing runs guests here yet; see packages.virt.", family=ctx.family())
    argv = [binary, "-machine", "none", "-accel", "kvm", "-nodefaults", "-nographic", "-S", "-qmp", "stdio"]
    lines = ['{"execute": "%s"}' % c for c in QMP_COMMANDS]
    budget = max(1.0, min(10.0, ctx.settings.check_timeout - 1.0))
    note, locked = _consumer_note(ctx)
    evidence: Dict[str, object] = {"binary": binary, "argv": argv, "as_uid": ctx.host.invoking_user()[0]}
    started = time.monotonic()
    try:
        res = ctx.host.converse(argv, lines, timeout=budget)
    except TimeoutError:
        return Outcome.failed(f"{binary} did not answer within {budget:g} s",
                              "QEMU with no guest answers QMP in well under a second; it hung.",
                              f"Run '{' '.join(argv)}' by hand and see where it stops.", **evidence)
    except (FileNotFoundError, PermissionError) as exc:
        return Outcome.failed(f"{binary} cannot be run: {exc.strerror}", str(exc),
                              "Reinstall the distribution's QEMU package.", **evidence)
    evidence["seconds"] = round(time.monotonic() - started, 3)
    answers = parse_qmp(res.stdout)
    evidence["exit_status"] = res.returncode
    if answers.greeting is None or len(answers.returns) < 4:
        err = printable(res.stderr)
        evidence["stderr"] = err
        out = Outcome.failed(f"QEMU refused -accel kvm: {quoted(err, 120)}",
                             f"'{' '.join(argv)}' exited with {res.returncode} before answering QMP.{note}",
                             "See kvm.device and kvm.modules: QEMU could not open or use /dev/kvm.", **evidence)
        return out.because("kvm.device", "kvm.modules")
    kvm_state = answers.returns[1] if isinstance(answers.returns[1], dict) else {}
    version = qemu_version(answers.returns[2]) or qemu_version((answers.greeting or {}).get("version"))
    machines = [m.get("name", "") for m in answers.returns[3] if isinstance(m, dict)] \
        if isinstance(answers.returns[3], list) else []
    wanted = DEFAULT_MACHINES.get(ctx.family(), ())
    offered = sorted({p + "*" for p in wanted for m in machines if str(m).startswith(p)})
    evidence.update(version=version, kvm=kvm_state, machine_types=len(machines), default_machines=offered)
    if not (kvm_state.get("present") and kvm_state.get("enabled")):
        return Outcome.failed(f"QEMU {version} runs without KVM (query-kvm: {kvm_state})",
                              "QEMU started but does not use KVM.", "Install a QEMU built with KVM support "
                              "(the distribution's qemu-system or qemu-kvm package).", **evidence)
    if wanted and not offered:
        return Outcome.warned(f"QEMU {version} uses KVM but offers none of {', '.join(p + '*' for p in wanted)}",
                              "Guests defined for the distribution's default machine types will not start.",
                              "Install the distribution's full QEMU package.", **evidence)
    who = "root" if ctx.host.invoking_user()[0] == 0 else f"uid {ctx.host.invoking_user()[0]}"
    out = Outcome.passed(f"QEMU {version} runs with KVM as {who} ({', '.join(offered)})",
                         f"query-kvm: present and enabled.{note}", **evidence)
    return out.because("kvm.consumer") if locked else out


# -- libvirt -------------------------------------------------------------------------------------------
LIBVIRT_RO_SOCKETS = ("/run/libvirt/virtqemud-sock-ro", "/run/libvirt/libvirt-sock-ro")
IMAGES = "/var/lib/libvirt/images"
SLOW_SECONDS = 2.0  # libvirt answers capabilities in about 0.02 s when it has nothing to re-probe


class _Virsh:
    def __init__(self, ctx: Context, deadline: float) -> None:
        self.ctx, self.deadline = ctx, deadline

    def __call__(self, *args: str, read_only: bool = True):  # type: ignore[no-untyped-def]
        left = self.deadline - time.monotonic()
        if left <= 0.2:
            raise TimeoutError(errno.ETIMEDOUT, "no time left", "virsh")
        argv = ["virsh", "-c", "qemu:///system"] + (["-r"] if read_only else []) + list(args)
        return self.ctx.host.run(argv, timeout=left)


@check("libvirt.daemon", "libvirt can start KVM guests", reads=LIBVIRT_RO_SOCKETS, live_only=True,
       requires=("kvm.device",))
def libvirt_daemon(ctx: Context) -> Outcome:
    """The running libvirt daemon offers KVM guests, its default network and an images pool.

    What: over the read-only socket, 'virsh -r capabilities' (a <guest>
    with <domain type='kvm'>), 'net-list --all' (the default NAT network:
    defined, active, autostarted) and the storage pools (one for
    /var/lib/libvirt/images); as root, 'domcapabilities --virttype kvm'
    over the read/write socket (libvirt 9 refuses it read-only).  virsh runs
    as a command (no shell, C locale) within the check's time.  A daemon that
    takes seconds to answer is reported: libvirt re-probes QEMU on every
    call while its QEMU user cannot open /dev/kvm.

    Why: virt-install, virt-manager and Cockpit ask libvirt, not the kernel:
    without a kvm domain type they offer emulation only or fail.

    Fix: see kvm.consumer for /dev/kvm access; 'virsh net-start default' and
    'virsh net-autostart default'; 'virsh pool-define-as default dir
    --target /var/lib/libvirt/images', then pool-start and pool-autostart.
    """
    from kvmcheck.parsers.qemu_stack import domcaps_kvm, kvm_guest_arches, parse_net_list, pool_target

    host = ctx.host
    if not host.live:
        return Outcome.skipped("offline root: no libvirt daemon to ask",
                               "libvirt.layout reads what an offline root can tell about libvirt.")
    socket = next((p for p in LIBVIRT_RO_SOCKETS if (host.node(p) or (None,))[0] == "socket"), None)
    if socket is None:
        return Outcome.skipped("no libvirt daemon is listening (no read-only socket under /run/libvirt)",
                               "See libvirt.layout for whether libvirt is installed and started.")
    note, locked = _consumer_note(ctx)
    virsh = _Virsh(ctx, time.monotonic() + max(1.0, ctx.settings.check_timeout - 0.5))
    evidence: Dict[str, object] = {"socket": socket}
    started = time.monotonic()
    try:
        caps = virsh("capabilities")
    except FileNotFoundError:
        return Outcome.skipped("virsh is not installed (libvirt-clients, libvirt-client)", **evidence)
    except TimeoutError:
        waited = round(time.monotonic() - started, 1)
        out = Outcome.warned(f"libvirt did not answer 'virsh capabilities' within {waited:g} s",
                             "A daemon this slow re-probes QEMU on every call, which happens while its QEMU user "
                             f"cannot open /dev/kvm.{note}", "See kvm.consumer; then 'virsh -r capabilities' "
                             "answers in a fraction of a second.", **evidence)
        return out.because("kvm.consumer")
    seconds = round(time.monotonic() - started, 3)
    evidence["capabilities_seconds"] = seconds
    if caps.returncode != 0:
        err = printable(caps.stderr)
        return Outcome.failed(f"'virsh -r capabilities' failed: {quoted(err, 120)}", err,
                              "Restart the daemon ('systemctl restart libvirtd' or virtqemud) and read its log "
                              "('journalctl -u libvirtd').", **evidence)
    try:
        arches = kvm_guest_arches(caps.stdout)
    except ParseError as exc:
        return Outcome.failed(f"libvirt's capabilities are not readable XML: {exc}", "",
                              "Restart the daemon and ask again.", **evidence)
    arches = [printable(a, 40) for a in arches]
    evidence["kvm_guest_arches"] = arches
    if not arches:
        out = Outcome.failed("libvirt offers no KVM guests (no <domain type='kvm'> in its capabilities)",
                             f"libvirt found no QEMU that can use /dev/kvm.{note}",
                             "See kvm.consumer and qemu.accel; then restart libvirt so it probes QEMU again.",
                             **evidence)
        return out.because("kvm.consumer", "qemu.accel")
    problems: List[str] = []
    fixes: List[str] = []
    if ctx.host.invoking_user()[0] == 0:
        try:
            dom = virsh("domcapabilities", "--virttype", "kvm", read_only=False)
            if dom.returncode == 0:
                evidence["domcapabilities"] = domcaps_kvm(dom.stdout)
            else:
                problems.append("'virsh domcapabilities --virttype kvm' failed: " + printable(dom.stderr, 160))
        except (TimeoutError, ParseError) as exc:
            problems.append(f"domcapabilities: {exc}")
    try:
        nets = parse_net_list(virsh("net-list", "--all").stdout)
        default = next((n for n in nets if n.name == "default"), None)
        evidence["default_network"] = default._asdict() if default else None
        if default is None:
            problems.append("no network named default")
            fixes.append("'virsh net-define /usr/share/libvirt/networks/default.xml'")
        if default is not None and not default.active:
            problems.append("the default network is not active")
        if default is not None and not default.autostart:
            problems.append("the default network does not start at boot")
        if default is None or not default.active:
            fixes.append("'virsh net-start default'")
        if default is None or not default.autostart:
            fixes.append("'virsh net-autostart default'")
        pools = [p.strip() for p in virsh("pool-list", "--all", "--name").stdout.splitlines() if p.strip()][:16]
        targets = {}
        for p in pools:
            try:
                targets[p] = pool_target(virsh("pool-dumpxml", p).stdout)
            except ParseError:
                targets[p] = None
        evidence["pools"] = targets
        if IMAGES not in targets.values():
            problems.append(f"no storage pool for {IMAGES}")
            fixes.append(f"'virsh pool-define-as default dir --target {IMAGES}', 'virsh pool-start default', "
                         "'virsh pool-autostart default'")
    except TimeoutError:
        problems.append("libvirt stopped answering within the check's time")
    slow = seconds > SLOW_SECONDS
    if slow:
        out = Outcome.warned(f"libvirt took {seconds:g} s to answer 'virsh capabilities'",
                             f"It normally answers in about 0.02 s; it re-probes QEMU on every call while its QEMU "
                             f"user cannot open /dev/kvm.{note}", "See kvm.consumer.", **evidence)
        return out.because("kvm.consumer")
    if problems:
        return Outcome.warned(f"libvirt offers KVM ({', '.join(arches)}); " + "; ".join(problems[:2]),
                              "; ".join(problems) + ".", "Run " + ", then ".join(fixes) + "." if fixes else
                              "See the detail.", **evidence)
    return Outcome.passed(f"libvirt offers KVM guests ({', '.join(arches)}), the default network and an images pool",
                          **evidence)


# -- containers ------------------------------------------------------------------------------------------
DEVICES_LIST = "/sys/fs/cgroup/devices/devices.list"
PASS_IN = {"docker": "'docker run --device /dev/kvm ...'", "podman": "'podman run --device /dev/kvm ...'",
           "kubernetes": "a device plugin resource in the pod spec (KubeVirt's 'devices.kubevirt.io/kvm: \"1\"' "
                         "under resources.limits)"}


def _allows_kvm(devices_list: str) -> bool:
    """Whether a cgroup v1 devices.list allows rw on char 10:232 ('a *:* rwm', 'c 10:232 rw', 'c *:* rwm' ...)."""
    for line in devices_list.splitlines():
        words = line.split()
        if len(words) != 3:
            continue
        kind, numbers, access = words
        major, _, minor = numbers.partition(":")
        if kind in ("a", "c") and major in ("*", "10") and minor in ("*", "232") and {"r", "w"} <= set(access):
            return True
    return False


@check("container.kvm-access", "KVM inside a container", reads=(
    "/proc/1/cgroup", "/proc/self/mountinfo", "/.dockerenv", "/run/.containerenv", DEVICES_LIST, "/dev/kvm",
))
def container_kvm_access(ctx: Context) -> Outcome:
    """When kvmcheck runs in a container: /dev/kvm is passed in and the device cgroup allows it.

    What: the container runtime, decided from PID 1's cgroup path and the
    mount table (the root's overlay layers, the runtime's bind mounts over
    /etc/hostname, /etc/hosts, /etc/resolv.conf); /.dockerenv and
    /run/.containerenv are only noted, as an image build can leave them.
    Inside a container: /dev/kvm must exist there, the cgroup v1 device list
    must allow c 10:232 rw (cgroup v2 enforces an eBPF program that cannot
    be read: opening the device decides), and the host must run KVM itself.

    Why: a container shares the host's kernel; KVM works in it only when
    the runtime passes the device node in and its device policy allows it.

    Fix: 'docker run --device /dev/kvm' or 'podman run --device /dev/kvm';
    on Kubernetes a device plugin (KubeVirt's devices.kubevirt.io/kvm); run
    kvmcheck on the host for the host's part.
    """
    facts = ctx.container()
    evidence: Dict[str, object] = {"runtime": facts.runtime, "evidence": facts.evidence, "markers": facts.markers}
    if facts.runtime is None and not facts.looked:
        return Outcome.skipped("no /proc/1/cgroup or /proc/self/mountinfo in this root: nothing shows whether "
                               "it ran in a container", **evidence)
    if facts.runtime is None:
        extra = (f" {', '.join(facts.markers)} exists, but neither PID 1's cgroup nor the mount table shows a "
                 "container runtime: a leftover of how the image was built.") if facts.markers else ""
        return Outcome.passed("not in a container", "PID 1's cgroup and the mount table show no container "
                              f"runtime.{extra}", **evidence)
    runtime = facts.runtime
    how = PASS_IN.get(runtime, "the runtime's device option (/dev/kvm, char 10:232)")
    node = ctx.host.node("/dev/kvm")
    if node is None or node.kind != "char":
        return Outcome.failed(f"in a {runtime} container without /dev/kvm",
                              "The runtime did not pass the device in: " + "; ".join(facts.evidence[:2]) + ".",
                              f"Pass /dev/kvm into the container: {how}; the host must have KVM (run kvmcheck "
                              "there).", **evidence)
    if ctx.host.is_dir("/sys/fs/cgroup/devices"):  # cgroup v1: the policy is a readable list
        listing = ctx.host.read_optional(DEVICES_LIST, limit=1 << 20)
        if listing is not None:
            evidence["devices_list"] = listing.splitlines()[:20]
            if not _allows_kvm(listing):
                return Outcome.failed(f"the {runtime} container's device cgroup denies /dev/kvm (10:232)",
                                      f"{DEVICES_LIST} has no rule allowing c 10:232 rw.",
                                      f"Start the container with {how}" + (
                                          " (the device plugin adds the cgroup rule; a hostPath mount of /dev/kvm "
                                          "does not)." if runtime == "kubernetes" else
                                          " (that adds the cgroup rule), or --device-cgroup-rule='c 10:232 rwm'."),
                                      **evidence)
    else:
        evidence["device_policy"] = "cgroup v2: an eBPF program, decided by opening"
    if not ctx.host.live:
        return Outcome.skipped(f"a {runtime} container with /dev/kvm: opening it decides, which an offline root "
                               "cannot", **evidence)
    err = ctx.host.device_open_error("/dev/kvm")
    if err is not None:
        name = errno.errorcode.get(err, str(err))
        return Outcome.failed(f"/dev/kvm is in the {runtime} container but cannot be opened ({name})",
                              "EPERM: the device cgroup (an eBPF program on cgroup v2) denies it; EACCES: its mode "
                              "or group shuts the container's user out.",
                              f"Start the container with {how}, as a user in the device's group.",
                              **dict(evidence, open_errno=name))
    return Outcome.passed(f"in a {runtime} container; /dev/kvm is passed in and opens", **evidence)
