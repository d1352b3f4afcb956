# SPDX-License-Identifier: GPL-2.0-or-later
"""The KVM stack as its real consumer sees it: the identity libvirt gives QEMU and what it may open, QEMU
itself asked over QMP, the libvirt daemon asked through virsh, and /dev/kvm inside a container.

The probes (a child that opens /dev/kvm as QEMU's user, a QEMU, virsh) are facts returned as Later: each
runs only when the judgement reaches the branch that needs it, and at most once a run.
"""
from __future__ import annotations

import errno
import os
import time
from typing import Dict, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Later, fact
from kvmcheck.facts import kvm, system  # noqa: F401 - the facts these are computed from (kvm: accounts, kvm_node)
from kvmcheck.facts.system import quoted
from kvmcheck.parsers import ParseError, pattern

QEMU_CONF = "/etc/libvirt/qemu.conf"
LIBVIRT_DAEMONS = ("/usr/sbin/libvirtd", "/usr/sbin/virtqemud", "/usr/bin/libvirtd", "/usr/bin/virtqemud")
# qemu.conf's built-in defaults (libvirt's meson options qemu_user/qemu_group as each distribution sets them).
DEFAULT_IDENTITY = {"debian": ("libvirt-qemu", "libvirt-qemu"), "ubuntu": ("libvirt-qemu", "kvm"),
                    "rhel": ("qemu", "qemu"), "suse": ("qemu", "qemu"), "arch": ("libvirt-qemu", "libvirt-qemu")}
CONSUMER_DEVICES = ("/dev/kvm", "/dev/vhost-net", "/dev/net/tun")
ACL_XATTR = "system.posix_acl_access"
QEMU_BINARIES = {
    "x86": ("/usr/bin/qemu-system-x86_64", "/usr/libexec/qemu-kvm", "/usr/bin/qemu-kvm"),
    "arm64": ("/usr/bin/qemu-system-aarch64", "/usr/libexec/qemu-kvm", "/usr/bin/qemu-kvm"),
    "s390": ("/usr/bin/qemu-system-s390x", "/usr/libexec/qemu-kvm", "/usr/bin/qemu-kvm"),
    "ppc64": ("/usr/bin/qemu-system-ppc64", "/usr/libexec/qemu-kvm", "/usr/bin/qemu-kvm"),
}
QMP_COMMANDS = ("qmp_capabilities", "query-kvm", "query-version", "query-machines", "quit")
LIBVIRT_RO_SOCKETS = ("/run/libvirt/virtqemud-sock-ro", "/run/libvirt/libvirt-sock-ro")
DEVICES_LIST = "/sys/fs/cgroup/devices/devices.list"

_SAFE_NAME = pattern(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?$")  # useradd's names (and Samba's trailing $)


def shown_name(name: str) -> str:
    """A user or group name from the root as it may appear in a report and a command: as is when it is an
    ordinary name, else quoted (a hostile /etc/passwd can hold escape sequences)."""
    return name if _SAFE_NAME.match(name) else quoted(name)


# -- records ---------------------------------------------------------------------------------------------
class Identity(Record):
    user: str
    uid: int
    gid: int  # the process's gid: qemu.conf's group
    groups: Tuple[int, ...]  # supplementary groups, as libvirt's virGetGroupList computes them
    source: str  # where user and group came from


class QemuIdentity(Record):
    identity: Optional[Identity]  # None when it cannot be resolved (why says why)
    why: str
    has_passwd: bool  # the root holds /etc/passwd
    group_names: Dict[int, str]  # gid -> name as shown (from /etc/group)
    conf_state: str  # qemu.conf: "ok", "absent" or "denied" (then the defaults were used)


class Proof(Record):
    step: str  # "ok", or the step that failed ("setuid", "open", "probe"); "error": the probe did not finish
    err: object  # the errno (int) of that step; for "error", what went wrong (str)


class QemuRun(Record):
    argv: Tuple[str, ...]
    budget: float  # the seconds QEMU was given
    failure: Optional[str]  # "timeout", "cannot-run" (then strerror and error say why), or None: it ran
    strerror: str
    error: str
    seconds: float
    returncode: Optional[int]
    stderr: str
    answers: object  # kvmcheck.parsers.qemu_stack.QmpAnswers of its stdout (None when it did not run)


class LibvirtAnswers(Record):
    """What 'virsh -r' answered, in the order asked; asking stops at the first answer that leaves nothing
    more to ask (no virsh, no answer, a failure, no KVM guest)."""

    virsh_missing: bool
    caps_timeout: bool
    seconds: float  # until capabilities answered (or the asking gave up)
    caps: Optional[Tuple[int, str]]  # (returncode, stderr) of 'virsh -r capabilities'
    arches: Optional[Tuple[str, ...]]  # guest architectures with <domain type='kvm'> (None: not read)
    arches_error: Optional[str]  # the capabilities XML could not be read (ParseError)
    domcaps: Optional[Dict[str, Optional[str]]]  # 'domcapabilities --virttype kvm', asked as root only
    domcaps_stderr: Optional[str]  # it failed: its stderr
    domcaps_error: Optional[str]  # it timed out or was not readable XML
    default_network: Optional[object]  # the VirshNetwork named default; None when there is none
    networks_read: bool  # whether net-list answered (False: libvirt stopped answering before)
    pools: Optional[Dict[str, Optional[str]]]  # pool -> target path; None when not all answered
    stopped: bool  # libvirt stopped answering within the check's time


class ContainerKvm(Record):
    node_kind: Optional[str]  # what /dev/kvm is in this root (None: absent)
    cgroup_v1_devices: bool  # /sys/fs/cgroup/devices exists: the device policy is a readable list
    devices_list: Later  # Later: DEVICES_LIST's text, or None when absent (PermissionError propagates)
    open_errno: Later  # Later: None when /dev/kvm opens read/write, else the errno (live only)


# -- QEMU's identity under libvirt ---------------------------------------------------------------------
@fact(reads=(QEMU_CONF,) + LIBVIRT_DAEMONS)
def libvirt_daemon_installed(host) -> bool:
    """Whether libvirt's daemon is installed: its qemu.conf or one of its daemons is there."""
    return host.exists(QEMU_CONF) or any(host.exists(p) for p in LIBVIRT_DAEMONS)


@fact()
def invoking_uid(host) -> int:
    """The effective uid of the process running kvmcheck."""
    return host.invoking_user()[0]


@fact(reads=(QEMU_CONF, "/etc/passwd", "/etc/group"), uses=("distro_family",))
def qemu_identity(host, facts) -> QemuIdentity:
    """The identity libvirt gives QEMU (qemu.conf user/group, else the distribution's defaults).

    libvirt's virGetGroupList: the groups /etc/group lists the user in, the user's primary group from
    /etc/passwd (Debian's libvirt-qemu has primary group kvm and is no listed member of it), and the
    configured group.  NSS sources other than the files (LDAP, sssd) are not seen.  qemu.conf is 0600
    root on Debian: unreadable, the defaults are used and the source says so; an unreadable /etc/passwd
    or /etc/group propagates (the runner names the file).
    """
    from kvmcheck.parsers.accounts import parse_group, parse_passwd

    try:
        conf_text = host.read_optional(QEMU_CONF, limit=1 << 20)
        conf_state = "absent" if conf_text is None else "ok"
    except PermissionError:
        conf_text, conf_state = None, "denied"
    has_passwd = host.exists("/etc/passwd")
    users = parse_passwd(host.read_optional("/etc/passwd") or "")
    groups = parse_group(host.read_optional("/etc/group") or "")
    names = {gid: shown_name(g.name) for gid, g in groups.items()}
    unreadable = f" ({QEMU_CONF} is not readable by uid {host.invoking_user()[0]})" if conf_state == "denied" else ""
    who, why = _resolve(conf_text or "", users, groups, facts.get("distro_family"), unreadable)
    return QemuIdentity(who, why, has_passwd, names, conf_state)


def _resolve(text: str, users: list, groups: dict, family: Optional[str],
             unreadable: str) -> Tuple[Optional[Identity], str]:
    """qemu.conf's user and group resolved through the root's accounts, or (None, why)."""
    from kvmcheck.parsers.qemu_stack import parse_qemu_conf_defaults, parse_qemu_conf_identity

    conf = parse_qemu_conf_identity(text)
    shipped = parse_qemu_conf_defaults(text)
    # Unset, libvirt uses its build's defaults: as the shipped qemu.conf documents them, else as the
    # distribution family is known to build them.
    user_default, group_default = DEFAULT_IDENTITY.get(family or "", (None, None))
    user_default, group_default = shipped.get("user", user_default), shipped.get("group", group_default)
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


@fact(reads=CONSUMER_DEVICES)
def consumer_devices(host, qemu_identity) -> Dict[str, Dict[str, object]]:
    """What each device's mode, owner, group and POSIX ACL give QEMU's identity (no node is opened):
    {path: {"present", "kind"} or {"present", "mode", "owner", "group", "acl"/"acl_error", "rw"}};
    {} when the identity is not known."""
    from kvmcheck.parsers.posix_acl import may_access, parse_posix_acl

    who = qemu_identity.identity
    if who is None:
        return {}
    out: Dict[str, Dict[str, object]] = {}
    for path in CONSUMER_DEVICES:
        node = host.node(path)
        if node is None or node.kind != "char":
            out[path] = {"present": node is not None, "kind": node.kind if node else None}
            continue
        acl = None
        raw = host.xattr(path, ACL_XATTR)
        info: Dict[str, object] = {"present": True, "mode": f"{node.mode:04o}", "owner": node.uid,
                                   "group": qemu_identity.group_names.get(node.gid, str(node.gid))}
        if raw:
            try:
                acl = parse_posix_acl(raw)
                info["acl"] = [e.text() for e in acl]
            except ParseError as exc:
                info["acl_error"] = str(exc)
        info["rw"] = may_access(6, node.mode, node.uid, node.gid, who.uid, frozenset(who.groups), acl)
        out[path] = info
    return out


def prove_as(host, who: Identity, timeout: float = 3.0) -> Tuple[str, int]:  # type: ignore[no-untyped-def]
    """Open /dev/kvm and create a VM as QEMU's identity, in a child (Host.device_probe_as): the parent never
    changes identity.  Live and root only (the caller checks)."""
    from kvmcheck.core import kvmapi

    return host.device_probe_as("/dev/kvm", who.uid, who.gid, who.groups, kvmapi.create_vm, timeout)


@fact(reads=("/dev/kvm",))
def consumer_proof(host, qemu_identity, consumer_devices, invoking_uid) -> Later:
    """Later: Proof of opening /dev/kvm and creating a VM as QEMU's identity, in a child; None when it
    cannot be tried (an offline root, not root, the identity unknown, no /dev/kvm)."""
    def prove() -> Optional[Proof]:
        who = qemu_identity.identity
        if who is None or not host.live or invoking_uid != 0 or not consumer_devices["/dev/kvm"].get("present"):
            return None
        try:
            return Proof(*prove_as(host, who))
        except (OSError, RuntimeError) as exc:  # TimeoutError among them
            return Proof("error", str(exc))

    return Later(prove)


@fact(uses=("libvirt_daemon_installed", "qemu_identity", "consumer_devices", "consumer_proof"))
def consumer_lockout(facts) -> Later:
    """Later: the name of libvirt's QEMU user when it cannot open /dev/kvm (proved in a child when that
    could be tried, else judged from mode, group and ACL); None when it can, or nothing tells."""
    def find() -> Optional[str]:
        if not facts.get("libvirt_daemon_installed"):
            return None
        who = facts.get("qemu_identity").identity
        if who is None:
            return None
        kvm = facts.get("consumer_devices")["/dev/kvm"]
        rw = kvm.get("rw") if kvm.get("present") else None
        proof = facts.get("consumer_proof").get()
        if proof is not None and proof.step != "error":
            rw = proof.step == "ok"
        return who.user if rw is False else None

    return Later(find)


# -- QEMU ----------------------------------------------------------------------------------------------
@fact(reads=tuple(dict.fromkeys(p for ps in QEMU_BINARIES.values() for p in ps)))
def qemu_binary(host, family) -> Optional[str]:
    """The QEMU system emulator for this architecture, or None when none is installed."""
    return next((p for p in QEMU_BINARIES.get(family, ()) if host.exists(p)), None)


@fact(prefetch=True)  # QEMU's start-up (~30 ms) overlaps the checks that read files
def qemu_probe(host, settings, qemu_binary) -> Later:
    """Later (live only, with an emulator): QEMU started with no guest and no files ('-machine none -accel
    kvm -nodefaults -nographic -S -qmp stdio', no shell, bounded in time) and asked over QMP; None when
    there is no emulator or the root is offline (qemu.accel asks only when there is one, live)."""
    def run() -> Optional[QemuRun]:
        if qemu_binary is None or not host.live:
            return None
        from kvmcheck.parsers.qemu_stack import parse_qmp

        argv = (qemu_binary, "-machine", "none", "-accel", "kvm", "-nodefaults", "-nographic", "-S", "-qmp", "stdio")
        budget = max(1.0, min(10.0, settings.check_timeout - 1.0))
        lines = ['{"execute": "%s"}' % c for c in QMP_COMMANDS]
        started = time.monotonic()
        try:
            res = host.converse(list(argv), lines, timeout=budget)
        except TimeoutError:
            return QemuRun(argv, budget, "timeout", "", "", time.monotonic() - started, None, "", None)
        except (FileNotFoundError, PermissionError) as exc:
            return QemuRun(argv, budget, "cannot-run", str(exc.strerror), str(exc), time.monotonic() - started,
                           None, "", None)
        return QemuRun(argv, budget, None, "", "", time.monotonic() - started, res.returncode, res.stderr,
                       parse_qmp(res.stdout))

    return Later(run)


# -- libvirt -------------------------------------------------------------------------------------------
@fact(reads=LIBVIRT_RO_SOCKETS)
def libvirt_socket(host) -> Optional[str]:
    """The libvirt daemon's read-only socket, when one is listening there (a socket node)."""
    return next((p for p in LIBVIRT_RO_SOCKETS if (host.node(p) or (None,))[0] == "socket"), None)


class _Virsh:
    def __init__(self, host, deadline: float) -> None:  # type: ignore[no-untyped-def]
        self.host, self.deadline = host, deadline

    def __call__(self, *args: str, read_only: bool = True):  # type: ignore[no-untyped-def]
        left = self.deadline - time.monotonic()
        if left <= 0.2:
            raise TimeoutError(errno.ETIMEDOUT, "no time left", "virsh")
        argv = ["virsh", "-c", "qemu:///system"] + (["-r"] if read_only else []) + list(args)
        return self.host.run(argv, timeout=left)


@fact()
def libvirt_answers(host, settings, invoking_uid) -> Later:
    """Later (live, a daemon listening): LibvirtAnswers of virsh (a command, no shell, C locale) within
    the check's time: capabilities, domcapabilities --virttype kvm (as root, over the read/write socket:
    libvirt 9 refuses it read-only), net-list --all, pool-list and each pool's target."""
    def ask() -> LibvirtAnswers:
        from kvmcheck.parsers.qemu_stack import kvm_guest_arches

        virsh = _Virsh(host, time.monotonic() + max(1.0, settings.check_timeout - 0.5))
        none = LibvirtAnswers(False, False, 0.0, None, None, None, None, None, None, None, False, None, False)
        started = time.monotonic()
        try:
            caps = virsh("capabilities")
        except FileNotFoundError:
            return none._replace(virsh_missing=True, seconds=time.monotonic() - started)
        except TimeoutError:
            return none._replace(caps_timeout=True, seconds=time.monotonic() - started)
        found = none._replace(seconds=time.monotonic() - started, caps=(caps.returncode, caps.stderr))
        if caps.returncode != 0:
            return found
        try:
            found = found._replace(arches=tuple(kvm_guest_arches(caps.stdout)))
        except ParseError as exc:
            return found._replace(arches_error=str(exc))
        if not found.arches:
            return found
        return _the_rest(virsh, found, invoking_uid == 0)

    return Later(ask)


def _the_rest(virsh, found: LibvirtAnswers, as_root: bool) -> LibvirtAnswers:  # type: ignore[no-untyped-def]
    """domcapabilities (as root), the default network and the storage pools."""
    from kvmcheck.parsers.qemu_stack import domcaps_kvm, parse_net_list, pool_target

    if as_root:
        try:
            dom = virsh("domcapabilities", "--virttype", "kvm", read_only=False)
            if dom.returncode == 0:
                found = found._replace(domcaps=domcaps_kvm(dom.stdout))
            else:
                found = found._replace(domcaps_stderr=dom.stderr)
        except (TimeoutError, ParseError) as exc:
            found = found._replace(domcaps_error=str(exc))
    try:
        nets = parse_net_list(virsh("net-list", "--all").stdout)
        found = found._replace(networks_read=True, default_network=next((n for n in nets if n.name == "default"), None))
        pools = [p.strip() for p in virsh("pool-list", "--all", "--name").stdout.splitlines() if p.strip()][:16]
        targets: Dict[str, Optional[str]] = {}
        for p in pools:
            try:
                targets[p] = pool_target(virsh("pool-dumpxml", p).stdout)
            except ParseError:
                targets[p] = None
        found = found._replace(pools=targets)
    except TimeoutError:
        found = found._replace(stopped=True)
    return found


# -- containers ------------------------------------------------------------------------------------------
@fact(reads=("/dev/kvm", "/sys/fs/cgroup/devices", DEVICES_LIST))
def container_kvm(host) -> ContainerKvm:
    """/dev/kvm as a container sees it: the node, the cgroup v1 device list (Later), and whether it opens
    (Later, live only: opening decides under cgroup v2's eBPF device program)."""
    node = host.node("/dev/kvm")
    return ContainerKvm(node.kind if node else None, host.is_dir("/sys/fs/cgroup/devices"),
                        Later(lambda: host.read_optional(DEVICES_LIST, limit=1 << 20)),
                        Later(lambda: host.device_open_error("/dev/kvm")))


# -- configured versus in effect: group memberships and the daemon's configuration (issue 20) ------------
# A process gets its supplementary groups at login (initgroups) and keeps them: a user added to a group in
# /etc/group holds it only in sessions and services started after that.  libvirt's daemon reads qemu.conf and
# its own configuration once, when it starts.  Both comparisons need the running kernel's /proc: live only.
PROC = "/proc"
STATUS_LIMIT = 16384
# The system daemons that read qemu.conf and their own configuration at start (a session daemon, run by a
# user, reads ~/.config/libvirt instead).  Network XML under /etc/libvirt/qemu/networks is not compared:
# the daemon writes it itself (net-define, net-edit, the default network on first start), so a file newer
# than the daemon is no sign of a change it has not read.
LIBVIRT_CONFIGS = {"libvirtd": ("libvirtd.conf", "qemu.conf"), "virtqemud": ("virtqemud.conf", "qemu.conf")}
LIBVIRT_SOCKET_GROUP = "libvirt"  # unix_sock_group of the read/write socket (Debian, Ubuntu; polkit's rule on Fedora)


class ProcessInfo(Record):
    pid: int
    name: str
    uid: int  # effective
    gid: int  # effective
    groups: Tuple[int, ...]  # supplementary


class StaleMembership(Record):
    """A user /etc/group puts in a group who still runs without it."""

    user: str
    group: str
    invoking: bool  # kvmcheck's own process lacks it
    processes: Tuple[Tuple[int, str], ...]  # (pid, name) of the user's other processes that lack it


class GroupsInEffect(Record):
    """Whether a group's configured members hold it in their running processes."""

    group: Optional[str]  # the group compared (None: no group to compare)
    compared: bool
    why: str  # why nothing was compared
    stale: Tuple[StaleMembership, ...] = ()


class StaleConfig(Record):
    """A libvirt configuration file changed after the running daemon that reads it started."""

    path: str
    daemon: str
    pid: int
    started: float  # seconds since the epoch
    changed: float  # the file's mtime


@fact()
def invoking_identity(host) -> Optional[Tuple[int, Tuple[int, ...]]]:
    """(euid, groups with the egid) of the process running kvmcheck, on the live host; None for an offline
    root, whose processes are not this one."""
    if not host.live:
        return None
    euid, groups = host.invoking_user()
    return euid, tuple(groups)


@fact(reads=(PROC, f"{PROC}/*/status"))
def running_processes(host) -> Later:
    """Later: ProcessInfo of every process whose /proc/PID/status can be read (a process that exits
    meanwhile, or one hidden by hidepid=, is left out), a tuple; None for an offline root."""
    def scan() -> Optional[Tuple[ProcessInfo, ...]]:
        from kvmcheck.parsers.procfs import parse_status

        if not host.live:
            return None
        found = []
        for pid in host.listdir(PROC):
            if not pid.isdigit():
                continue
            try:
                text = host.read_optional(f"{PROC}/{pid}/status", limit=STATUS_LIMIT)
            except OSError:  # gone, or hidden (hidepid=invisible answers ENOENT, =noaccess EACCES)
                continue
            status = parse_status(text or "")
            if status is not None:  # the kernel escapes only some control characters of a name
                name = status.name if status.name.isprintable() else quoted(status.name, 40)
                found.append(ProcessInfo(int(pid), name, status.uid, status.gid, status.groups))
        return tuple(found)

    return Later(scan)


def _login_user(user) -> bool:  # type: ignore[no-untyped-def]
    """A person's account (uid >= 1000, a real shell), as kvm.device counts the users who would want KVM."""
    return user.uid >= 1000 and user.uid != 65534 and not user.shell.endswith(("nologin", "false"))


def groups_in_effect(accounts, gid: Optional[int], invoking, processes) -> GroupsInEffect:  # type: ignore[no-untyped-def]
    """The configured members of group gid (listed in /etc/group, or with it as primary group in
    /etc/passwd; root aside) against the groups their processes hold: kvmcheck's own for the invoking
    user, /proc/PID/status for the other login users."""
    if gid is None:
        return GroupsInEffect(None, False, "no group is given read/write access")
    group = accounts.groups.get(gid)
    name = shown_name(group.name) if group else str(gid)
    if invoking is None:
        return GroupsInEffect(name, False, "an offline root: the groups of its processes cannot be read")
    listed = set(group.members) if group else set()
    members = [u for u in accounts.users if u.uid != 0 and (u.name in listed or u.gid == gid)]
    euid, own_groups = invoking
    stale = []
    running = processes.get() if any(u.uid != euid and _login_user(u) for u in members) else ()
    for user in members:
        mine = user.uid == euid
        if not mine and not _login_user(user):
            continue
        lacking = tuple((p.pid, p.name) for p in running or () if p.uid == user.uid and p.uid != euid
                        and gid not in p.groups and gid != p.gid)
        if (mine and gid not in own_groups) or lacking:
            stale.append(StaleMembership(shown_name(user.name), name, mine and gid not in own_groups, lacking))
    return GroupsInEffect(name, True, "", tuple(stale))


@fact(uses=("accounts", "kvm_node", "invoking_identity", "running_processes"))
def kvm_group_in_effect(facts) -> Later:
    """Later: GroupsInEffect of the group /dev/kvm's mode gives read/write access (udev's kvm)."""
    def compare() -> GroupsInEffect:
        node = facts.get("kvm_node")
        gid = node.gid if node is not None and node.kind == "char" and node.mode & 0o060 == 0o060 else None
        return groups_in_effect(facts.get("accounts"), gid, facts.get("invoking_identity"),
                                facts.get("running_processes"))

    return Later(compare)


@fact(uses=("accounts", "invoking_identity", "running_processes"))
def libvirt_group_in_effect(facts) -> Later:
    """Later: GroupsInEffect of the libvirt group (the read/write socket's unix_sock_group)."""
    def compare() -> GroupsInEffect:
        accounts = facts.get("accounts")
        gid = next((g.gid for g in accounts.groups.values() if g.name == LIBVIRT_SOCKET_GROUP), None)
        return groups_in_effect(accounts, gid, facts.get("invoking_identity"), facts.get("running_processes"))

    return Later(compare)


@fact(reads=("/proc/stat", f"{PROC}/*/stat", QEMU_CONF, "/etc/libvirt/libvirtd.conf", "/etc/libvirt/virtqemud.conf"),
      uses=("running_processes",))
def libvirt_stale_config(host, facts) -> Later:
    """Later: StaleConfig of each libvirt configuration file changed (mtime) after the running system
    daemon that reads it started (/proc/PID/stat's starttime after /proc/stat's btime); None offline."""
    def compare() -> Optional[Tuple[StaleConfig, ...]]:
        from kvmcheck.parsers.procfs import parse_btime, parse_stat_starttime

        if not host.live:
            return None
        if not any(host.exists(f"/etc/libvirt/{c}") for c in ("qemu.conf", "libvirtd.conf", "virtqemud.conf")):
            return ()  # no libvirt configuration: no process needs looking at
        boot = parse_btime(host.read_optional("/proc/stat", limit=1 << 20) or "")
        ticks_per_second = os.sysconf("SC_CLK_TCK")  # USER_HZ, the unit of starttime (100; 1024 on alpha)
        stale = []
        for proc in facts.get("running_processes").get() or ():
            if proc.uid != 0 or proc.name not in LIBVIRT_CONFIGS or boot is None:
                continue
            try:
                ticks = parse_stat_starttime(host.read_optional(f"{PROC}/{proc.pid}/stat", limit=4096) or "")
            except OSError:  # it exited meanwhile
                continue
            if ticks is None:
                continue
            started = boot + ticks / ticks_per_second
            for conf in LIBVIRT_CONFIGS[proc.name]:
                st = host.stat(f"/etc/libvirt/{conf}")
                # btime is whole seconds: a file written within a second of the start is not taken as newer
                if st is not None and st.st_mtime > started + 1.0:
                    stale.append(StaleConfig(f"/etc/libvirt/{conf}", proc.name, proc.pid, started, st.st_mtime))
        return tuple(stale)

    return Later(compare)
