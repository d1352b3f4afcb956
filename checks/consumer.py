# SPDX-License-Identifier: GPL-2.0-or-later
"""The stack as its real consumer: the user libvirt runs QEMU as, QEMU itself, the libvirt daemon, containers.

kvm.device and kvm.guest-run prove KVM for the user running kvmcheck.  A VM is started by QEMU, under
libvirt as its own user (qemu, libvirt-qemu), perhaps in a container: these checks ask them.
"""
from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING, Dict, List, Optional

from kvmcheck.checks.kvm import awaiting_login
from kvmcheck.core.model import PENDING_KINDS, Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts import consumer, packages  # noqa: F401 - the facts judged here (qemu.accel names qemu_packages)
from kvmcheck.facts.consumer import QEMU_CONF, Identity, LibvirtAnswers, Proof, QemuIdentity, QemuRun
from kvmcheck.facts.system import quoted

if TYPE_CHECKING:  # pragma: no cover
    from kvmcheck.parsers.qemu_stack import QmpAnswers

UDEV_RULE = ("the udev rule KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\" (systemd's 50-udev-default.rules and its "
             "static-nodes rule; add it as /etc/udev/rules.d/65-kvm.rules if missing), then 'udevadm trigger -c add "
             "/dev/kvm' (or 'chgrp kvm /dev/kvm && chmod 0660 /dev/kvm' until the next boot)")
RESTART_LIBVIRT = "Restart the daemon ('systemctl restart libvirtd' or virtqemud) and read its log " \
    "('journalctl -u libvirtd')."


def printable(text: str, limit: int = 300) -> str:
    """A program's message on one line, control characters replaced: it may echo what a hostile file held."""
    return "".join(ch if ch.isprintable() else "?" for ch in " ".join(text.split()))[:limit]


def _errno_name(err: object) -> str:
    return errno.errorcode.get(err, str(err)) if isinstance(err, int) else str(err)


# -- kvm.consumer --------------------------------------------------------------------------------------------
def _kvm_fix(who: Identity, info: Dict[str, object], groups: List[str]) -> str:
    group = info.get("group")
    mode = int(str(info.get("mode", "0")), 8)
    if group not in ("root", "0", None) and mode & 0o060 == 0o060:
        return (f"Add {who.user} to the {group} group: 'usermod -aG {group} {who.user}', then restart libvirt "
                "('systemctl restart libvirtd' or virtqemud) so QEMU starts with the new groups.")
    join = "" if "kvm" in groups else f" and add {who.user} to it ('usermod -aG kvm {who.user}')"
    return f"Give /dev/kvm to the kvm group with {UDEV_RULE}{join}."


def _unresolved(found: QemuIdentity, installed: bool) -> Optional[Outcome]:
    """The outcome when libvirt is not installed or QEMU's user cannot be resolved; None otherwise."""
    who = found.identity
    if not installed:
        name = who.user if who else "libvirt-qemu (Debian, Ubuntu) or qemu (Fedora, RHEL, SUSE)"
        return Outcome.skipped(
            "libvirt is not installed: nothing runs QEMU as its own user yet",
            f"When libvirt is installed, QEMU will run as {name}, and that user's access to /dev/kvm will matter "
            "(udev's rule gives /dev/kvm to the kvm group; the user must be in it).", user=who.user if who else None)
    if who is None and not found.has_passwd:
        return Outcome.skipped("no /etc/passwd in this root: QEMU's user cannot be resolved",
                               "A capture without the account files cannot tell whose access matters.")
    if who is None:
        return Outcome.failed(f"QEMU's user cannot be resolved: {found.why}", found.why + ".",
                              "Reinstall libvirt's daemon package so it creates its user, or set 'user =' in "
                              f"{QEMU_CONF} to an existing user.")
    return None


def _no_kvm_node(who: Identity, groups: List[str], label: str, live: bool, evidence: dict) -> Outcome:
    if live:
        return Outcome.skipped("no /dev/kvm (see kvm.device)", **evidence)
    if "kvm" in groups:
        return Outcome.skipped(f"no /dev/kvm in this root; {who.user} is in group kvm",
                               "udev gives /dev/kvm to the kvm group at boot, so it will be usable.", **evidence)
    return Outcome.warned(f"no /dev/kvm in this root; {who.user} is not in group kvm",
                          f"At boot udev makes /dev/kvm 0660 root:kvm, and {label} is not in kvm.",
                          f"'usermod -aG kvm {who.user}' in this root.", **evidence)


def _proved(proof: Proof, who: Identity, label: str, kvm: dict, note: str, fix: str, evidence: dict) -> Outcome:
    """The verdict of the probe that opened /dev/kvm as QEMU's user."""
    evidence["proof"] = {"step": proof.step, "errno": _errno_name(proof.err)}
    if proof.step == "error":
        return Outcome.skipped(f"the probe as {who.user} did not finish: {proof.err}", **evidence)
    if proof.step == "ok":
        return Outcome.passed(f"{who.user} opened /dev/kvm and created a VM (mode {kvm['mode']}, group "
                              f"{kvm['group']})", f"Proved in a child running as {label}.{note}", **evidence)
    name = _errno_name(proof.err)
    if proof.step == "probe":
        return Outcome.failed(f"{who.user} opened /dev/kvm but KVM_CREATE_VM failed ({name})",
                              f"Running as {label}, creating a VM failed with {name}.",
                              "See kvm.guest-run and the kernel log ('dmesg | grep -i kvm').", **evidence)
    return Outcome.failed(f"{who.user} cannot open /dev/kvm ({name}): mode {kvm['mode']}, group {kvm['group']}",
                          f"A child running as {label} got {name} opening /dev/kvm, so QEMU under libvirt "
                          f"cannot use KVM.{note}", fix, **evidence)


def _judged_statically(who: Identity, label: str, kvm: dict, note: str, fix: str, live: bool,
                       evidence: dict) -> Outcome:
    how = ("Judged from mode, group and ACL; proving it by opening needs root" if live else
           "Judged from mode, group and ACL; nothing was opened (an offline root)")
    acl = f", ACL {' '.join(kvm['acl'])}" if kvm.get("acl") else ""
    if kvm.get("rw"):
        return Outcome.passed(f"{who.user} may open /dev/kvm (mode {kvm['mode']}, group {kvm['group']}{acl})",
                              f"{how}: {label} has read/write access.{note}", **evidence)
    return Outcome.failed(f"{who.user} cannot open /dev/kvm: mode {kvm['mode']}, group {kvm['group']}{acl}",
                          f"{how}: {label} has no read/write access.{note}", fix, **evidence)


def _restarted_when(stale, files=None) -> Dict[str, str]:  # type: ignore[no-untyped-def]
    """"/etc/libvirt/qemu.conf changed after virtqemud started at ..." -> its restart, for each stale file
    (only those among files, when given)."""
    out: Dict[str, str] = {}
    for found in stale or ():
        if files is None or found.path in files:
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(found.started))
            out[f"{found.path} changed after {found.daemon} (pid {found.pid}) started at {started}"] = \
                f"systemctl restart {found.daemon}"
    return out


def awaiting_restart(outcome: Outcome, stale, files=None) -> Outcome:  # type: ignore[no-untyped-def]
    """The outcome, pending service-restart when a configuration file it depends on changed after the
    running daemon read it."""
    changes = _restarted_when(stale, files)
    if not changes:
        return outcome
    steps = "; ".join(f"{what}: {how}" for what, how in changes.items())
    return outcome.awaiting("service-restart", f"configured, not yet in effect: {steps}")


def _qemu_conf_pending(outcome: Outcome, stale) -> Outcome:  # type: ignore[no-untyped-def]
    """A finding of kvm.consumer waits for the daemon to read a changed qemu.conf (user, group)."""
    return awaiting_restart(outcome, stale, (QEMU_CONF,)) if outcome.status.value in ("fail", "warn") else outcome


@check("kvm.consumer", "QEMU's user can use KVM", requires=("kvm.device",))
def kvm_consumer(libvirt_daemon_installed, qemu_identity, consumer_devices, consumer_proof, live,
                 libvirt_stale_config) -> Outcome:
    """The user libvirt runs QEMU as can open /dev/kvm and create a VM.

    What: QEMU's user and group from libvirt's qemu.conf ('user =', 'group =';
    unset, the distribution's defaults: libvirt-qemu on Debian/Ubuntu, qemu on
    Fedora/RHEL/SUSE), with the groups libvirt gives the process, resolved
    through the root's /etc/passwd and /etc/group.  /dev/kvm, /dev/vhost-net
    and /dev/net/tun are judged for it from mode, owner, group and POSIX ACL
    (never opened offline).  Live as root, a forked child drops to that
    identity, opens /dev/kvm and creates a VM (kvmcheck never changes
    identity; SELinux and AppArmor are the security.* checks').  libvirt opens
    /dev/net/tun and /dev/vhost-net as root: reported, not judged.

    Why: root can open /dev/kvm, but QEMU under libvirt runs as its own user
    and fails with "Could not access KVM kernel module: Permission denied".

    Live, a qemu.conf changed after the running daemon started makes a
    finding pending a restart of the daemon (it reads qemu.conf once).

    Fix: udev's rule makes /dev/kvm 0660 root:kvm; QEMU's user must be in
    kvm ('usermod -aG kvm libvirt-qemu' or qemu), then restart libvirt.
    """
    stale = libvirt_stale_config.get()
    unresolved = _unresolved(qemu_identity, libvirt_daemon_installed)
    if unresolved:
        return _qemu_conf_pending(unresolved, stale)
    who: Identity = qemu_identity.identity
    devices: Dict[str, Dict[str, object]] = consumer_devices
    groups = [qemu_identity.group_names.get(g, str(g)) for g in who.groups]
    evidence: Dict[str, object] = {"user": who.user, "uid": who.uid, "gid": who.gid, "groups": groups,
                                   "identity_source": who.source, "devices": devices}
    label = f"{who.user} (uid {who.uid}, groups {', '.join(groups)})"
    if who.uid == 0:
        return Outcome.passed(f"QEMU runs as root ({who.source}): it can open every device", **evidence)
    kvm = devices["/dev/kvm"]
    if not kvm.get("present"):
        return _no_kvm_node(who, groups, label, live, evidence)
    notes = [f"{p}: not {who.user}'s to open (mode {d.get('mode')}, group {d.get('group')}); libvirt opens it as "
             "root and passes the descriptor" for p, d in devices.items()
             if p != "/dev/kvm" and d.get("present") and d.get("rw") is False]
    note = (" " + "; ".join(notes) + ".") if notes else ""
    proof = consumer_proof.get()
    if proof is not None:
        return _qemu_conf_pending(_proved(proof, who, label, kvm, note, _kvm_fix(who, kvm, groups), evidence), stale)
    return _qemu_conf_pending(_judged_statically(who, label, kvm, note, _kvm_fix(who, kvm, groups), live, evidence),
                              stale)


# -- QEMU ----------------------------------------------------------------------------------------------
# The machine types a distribution's guests default to, by prefix.
DEFAULT_MACHINES = {"x86": ("pc-q35-", "pc-i440fx-"), "arm64": ("virt-",), "s390": ("s390-ccw-virtio-",),
                    "ppc64": ("pseries-",)}


def _lockout_note(user: Optional[str]) -> str:
    """The sentence the QEMU and libvirt checks add when libvirt's QEMU user is locked out of /dev/kvm."""
    return f" Under libvirt QEMU runs as {user}, which cannot open /dev/kvm (see kvm.consumer)." if user else ""


def _qemu_unanswered(run: QemuRun, note: str, evidence: dict) -> Outcome:
    """The outcome when QEMU hung, could not be run, or exited before answering QMP."""
    binary, argv = run.argv[0], " ".join(run.argv)
    if run.failure == "timeout":
        return Outcome.failed(f"{binary} did not answer within {run.budget:g} s",
                              "QEMU with no guest answers QMP in well under a second; it hung.",
                              f"Run '{argv}' by hand and see where it stops.", **evidence)
    if run.failure == "cannot-run":
        return Outcome.failed(f"{binary} cannot be run: {run.strerror}", run.error,
                              "Reinstall the distribution's QEMU package.", **evidence)
    err = printable(run.stderr)
    evidence["stderr"] = err
    return Outcome.failed(f"QEMU refused -accel kvm: {quoted(err, 120)}",
                          f"'{argv}' exited with {run.returncode} before answering QMP.{note}",
                          "See kvm.device and kvm.modules: QEMU could not open or use /dev/kvm.",
                          **evidence).because("kvm.device", "kvm.modules")


def _qemu_answered(answers: "QmpAnswers", family: str, uid: int, note: str, evidence: dict,
                   locked: Optional[str]) -> Outcome:
    """The verdict of QEMU's QMP answers: KVM present and enabled, the default machine types offered."""
    from kvmcheck.parsers.qemu_stack import qemu_version

    kvm_state = answers.returns[1] if isinstance(answers.returns[1], dict) else {}
    version = qemu_version(answers.returns[2]) or qemu_version((answers.greeting or {}).get("version"))
    machines = [m.get("name", "") for m in answers.returns[3] if isinstance(m, dict)] \
        if isinstance(answers.returns[3], list) else []
    wanted = DEFAULT_MACHINES.get(family, ())
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
    who = "root" if uid == 0 else f"uid {uid}"
    out = Outcome.passed(f"QEMU {version} runs with KVM as {who} ({', '.join(offered)})",
                         f"query-kvm: present and enabled.{note}", **evidence)
    return out.because("kvm.consumer") if locked else out


@check("qemu.accel", "QEMU can use KVM", requires=("kvm.device",), live_only=True)
def qemu_accel(qemu_binary, qemu_packages, qemu_probe, consumer_lockout, family, live, invoking_uid) -> Outcome:
    """The installed QEMU system emulator starts with KVM acceleration.

    What: QEMU for the host architecture (qemu-system-x86_64, qemu-kvm,
    qemu-system-aarch64, -s390x, -ppc64) started as the invoking user with
    no guest and no files ('-machine none -accel kvm -nodefaults -nographic
    -S -qmp stdio', no shell, a time limit, never TCG) and asked over QMP:
    query-kvm (present, enabled), query-version, query-machines (are the
    default machine types pc-q35-*, pc-i440fx-*, virt-*, s390-ccw-virtio-*,
    pseries-* offered).  Offline: the QEMU package's version; not run.

    Why: a QEMU built without KVM, or one that cannot open /dev/kvm, runs
    guests by emulation (10-50x slower) or refuses "-accel kvm".

    Fix: install the distribution's QEMU ('apt-get install
    qemu-system-x86', 'dnf install qemu-kvm'); for a KVM error, see
    kvm.device and kvm.consumer.
    """
    if not live:
        found = qemu_packages.get()
        what = ", ".join(f"{n} {v}" for n, v in found.items()) or "no QEMU package in the package database"
        return Outcome.skipped(f"offline root: QEMU is not run ({what})",
                               f"Emulator: {qemu_binary or 'none found'}.", packages=found, binary=qemu_binary)
    if qemu_binary is None:
        return Outcome.skipped(f"no QEMU system emulator for {family} is installed",
                               "Nothing runs guests here yet; see packages.virt.", family=family)
    locked = consumer_lockout.get()
    note = _lockout_note(locked)
    run = qemu_probe.get()
    evidence: Dict[str, object] = {"binary": qemu_binary, "argv": list(run.argv), "as_uid": invoking_uid}
    if run.failure is None:
        evidence["seconds"] = round(run.seconds, 3)
        evidence["exit_status"] = run.returncode
    answers = run.answers
    if run.failure or answers.greeting is None or len(answers.returns) < 4:
        return _qemu_unanswered(run, note, evidence)
    return _qemu_answered(answers, family, invoking_uid, note, evidence, locked)


# -- libvirt -------------------------------------------------------------------------------------------
IMAGES = "/var/lib/libvirt/images"
SLOW_SECONDS = 2.0  # libvirt answers capabilities in about 0.02 s when it has nothing to re-probe


def _libvirt_unanswered(got: LibvirtAnswers, note: str, evidence: dict) -> Optional[Outcome]:
    """The outcome when virsh is missing, capabilities went unanswered, failed, or offer no KVM guest."""
    if got.virsh_missing:
        return Outcome.skipped("virsh is not installed (libvirt-clients, libvirt-client)", **evidence)
    if got.caps_timeout:
        return Outcome.warned(f"libvirt did not answer 'virsh capabilities' within {round(got.seconds, 1):g} s",
                              "A daemon this slow re-probes QEMU on every call, which happens while its QEMU user "
                              f"cannot open /dev/kvm.{note}", "See kvm.consumer; then 'virsh -r capabilities' "
                              "answers in a fraction of a second.", **evidence).because("kvm.consumer")
    evidence["capabilities_seconds"] = round(got.seconds, 3)
    if got.caps[0] != 0:
        err = printable(got.caps[1])
        return Outcome.failed(f"'virsh -r capabilities' failed: {quoted(err, 120)}", err, RESTART_LIBVIRT,
                              **evidence)
    if got.arches_error is not None:
        return Outcome.failed(f"libvirt's capabilities are not readable XML: {got.arches_error}", "",
                              "Restart the daemon and ask again.", **evidence)
    evidence["kvm_guest_arches"] = [printable(a, 40) for a in got.arches]
    if not got.arches:
        return Outcome.failed("libvirt offers no KVM guests (no <domain type='kvm'> in its capabilities)",
                              f"libvirt found no QEMU that can use /dev/kvm.{note}",
                              "See kvm.consumer and qemu.accel; then restart libvirt so it probes QEMU again.",
                              **evidence).because("kvm.consumer", "qemu.accel")
    return None


def _libvirt_setup(got: LibvirtAnswers, evidence: dict) -> tuple:
    """([problems], [fixes]) of domcapabilities, the default network and the images pool."""
    problems: List[str] = []
    fixes: List[str] = []
    if got.domcaps is not None:
        evidence["domcapabilities"] = got.domcaps
    elif got.domcaps_stderr is not None:
        problems.append("'virsh domcapabilities --virttype kvm' failed: " + printable(got.domcaps_stderr, 160))
    elif got.domcaps_error is not None:
        problems.append(f"domcapabilities: {got.domcaps_error}")
    if got.networks_read:
        default = got.default_network
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
    if got.pools is not None:
        evidence["pools"] = got.pools
        if IMAGES not in got.pools.values():
            problems.append(f"no storage pool for {IMAGES}")
            fixes.append(f"'virsh pool-define-as default dir --target {IMAGES}', 'virsh pool-start default', "
                         "'virsh pool-autostart default'")
    if got.stopped:
        problems.append("libvirt stopped answering within the check's time")
    return problems, fixes


def _slow(seconds: float, note: str, evidence: dict) -> Outcome:
    return Outcome.warned(f"libvirt took {round(seconds, 3):g} s to answer 'virsh capabilities'",
                          f"It normally answers in about 0.02 s; it re-probes QEMU on every call while its QEMU "
                          f"user cannot open /dev/kvm.{note}", "See kvm.consumer.", **evidence).because("kvm.consumer")


def _libvirt_verdict(got: LibvirtAnswers, note: str, evidence: dict) -> Outcome:
    """libvirt.daemon once the daemon listens: its answers judged."""
    unanswered = _libvirt_unanswered(got, note, evidence)
    if unanswered:
        return unanswered
    arches = evidence["kvm_guest_arches"]
    problems, fixes = _libvirt_setup(got, evidence)
    if round(got.seconds, 3) > SLOW_SECONDS:
        return _slow(got.seconds, note, evidence)
    if problems:
        return Outcome.warned(f"libvirt offers KVM ({', '.join(arches)}); " + "; ".join(problems[:2]),
                              "; ".join(problems) + ".", "Run " + ", then ".join(fixes) + "." if fixes else
                              "See the detail.", **evidence)
    return Outcome.passed(f"libvirt offers KVM guests ({', '.join(arches)}), the default network and an images pool",
                          **evidence)


def _libvirt_pending(outcome: Outcome, stale, group) -> Outcome:  # type: ignore[no-untyped-def]
    """The daemon's configuration changed after it started (service-restart), a user added to the libvirt
    group still runs without it (relogin); both: the later step, with both in the note."""
    restart, login = awaiting_restart(outcome, stale), awaiting_login(outcome, group)
    pending = [o for o in (restart, login) if o.pending]
    if len(pending) < 2:
        return pending[0] if pending else outcome
    steps = "; ".join(o.pending_note.split(": ", 1)[1] for o in pending)
    return outcome.awaiting(max(restart.pending, login.pending, key=PENDING_KINDS.index),
                            f"configured, not yet in effect: {steps}")


@check("libvirt.daemon", "libvirt can start KVM guests", live_only=True, requires=("kvm.device",))
def libvirt_daemon(libvirt_socket, libvirt_answers, consumer_lockout, live, libvirt_stale_config,
                   libvirt_group_in_effect) -> Outcome:
    """The running libvirt daemon offers KVM guests, its default network and an images pool.

    What: over the read-only socket, 'virsh -r capabilities' (a <guest> with
    <domain type='kvm'>), 'net-list --all' (the default NAT network defined,
    active, autostarted), the storage pools (one for /var/lib/libvirt/images);
    as root 'domcapabilities --virttype kvm' (libvirt 9 refuses it
    read-only).  virsh runs without a shell, C locale, within the check's
    time.  A daemon taking seconds to answer is reported: libvirt re-probes
    QEMU on every call while its QEMU user cannot open /dev/kvm.

    Why: virt-install, virt-manager and Cockpit ask libvirt, not the kernel:
    without a kvm domain type they offer emulation only or fail.

    Fix: see kvm.consumer for /dev/kvm access; 'virsh net-start default' and
    'virsh net-autostart default'; 'virsh pool-define-as default dir
    --target /var/lib/libvirt/images', then pool-start and pool-autostart.
    """
    if not live:
        return Outcome.skipped("offline root: no libvirt daemon to ask",
                               "libvirt.layout reads what an offline root can tell about libvirt.")
    if libvirt_socket is None:
        return Outcome.skipped("no libvirt daemon is listening (no read-only socket under /run/libvirt)",
                               "See libvirt.layout for whether libvirt is installed and started.")
    note = _lockout_note(consumer_lockout.get())
    verdict = _libvirt_verdict(libvirt_answers.get(), note, {"socket": libvirt_socket})
    return _libvirt_pending(verdict, libvirt_stale_config.get(), libvirt_group_in_effect.get())


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


def _device_policy(found, runtime: str, how: str, evidence: dict) -> Optional[Outcome]:  # type: ignore[no-untyped-def]
    """The failure when a cgroup v1 device list does not allow /dev/kvm; None when it does, or on cgroup v2
    (an eBPF program: opening decides)."""
    if not found.cgroup_v1_devices:
        evidence["device_policy"] = "cgroup v2: an eBPF program, decided by opening"
        return None
    listing = found.devices_list.get()
    if listing is None:
        return None
    evidence["devices_list"] = listing.splitlines()[:20]
    if _allows_kvm(listing):
        return None
    return Outcome.failed(f"the {runtime} container's device cgroup denies /dev/kvm (10:232)",
                          f"{DEVICES_LIST} has no rule allowing c 10:232 rw.",
                          f"Start the container with {how}" + (
                              " (the device plugin adds the cgroup rule; a hostPath mount of /dev/kvm does not)."
                              if runtime == "kubernetes" else
                              " (that adds the cgroup rule), or --device-cgroup-rule='c 10:232 rwm'."), **evidence)


def _not_in_container(found, evidence: dict) -> Outcome:  # type: ignore[no-untyped-def]
    """No container runtime shows: nothing to tell it by (skip), or none (pass)."""
    if not found.looked:
        return Outcome.skipped("no /proc/1/cgroup or /proc/self/mountinfo in this root: nothing shows whether "
                               "it ran in a container", **evidence)
    extra = (f" {', '.join(found.markers)} exists, but neither PID 1's cgroup nor the mount table shows a "
             "container runtime: a leftover of how the image was built.") if found.markers else ""
    return Outcome.passed("not in a container", "PID 1's cgroup and the mount table show no container "
                          f"runtime.{extra}", **evidence)


@check("container.kvm-access", "KVM inside a container")
def container_kvm_access(container, container_kvm, live) -> Outcome:
    """When kvmcheck runs in a container: /dev/kvm is passed in and the device cgroup allows it.

    What: the runtime, from PID 1's cgroup path and the mount table (overlay
    layers, the runtime's bind mounts over /etc/hostname, hosts, resolv.conf;
    /.dockerenv and /run/.containerenv only noted: an image build leaves
    them).  Inside one: /dev/kvm must be there, a cgroup v1 device list must
    allow c 10:232 rw (cgroup v2's eBPF program cannot be read: opening
    decides), and the host must run KVM itself.

    Why: a container shares the host's kernel; KVM works in it only when the
    runtime passes the device node in and its device policy allows it.

    Fix: 'docker run --device /dev/kvm' or 'podman run --device /dev/kvm';
    on Kubernetes a device plugin (KubeVirt's devices.kubevirt.io/kvm); run
    kvmcheck on the host for the host's part.
    """
    evidence: Dict[str, object] = {"runtime": container.runtime, "evidence": container.evidence,
                                   "markers": container.markers}
    if container.runtime is None:
        return _not_in_container(container, evidence)
    runtime = container.runtime
    how = PASS_IN.get(runtime, "the runtime's device option (/dev/kvm, char 10:232)")
    if container_kvm.node_kind != "char":
        return Outcome.failed(f"in a {runtime} container without /dev/kvm",
                              "The runtime did not pass the device in: " + "; ".join(container.evidence[:2]) + ".",
                              f"Pass /dev/kvm into the container: {how}; the host must have KVM (run kvmcheck "
                              "there).", **evidence)
    denied = _device_policy(container_kvm, runtime, how, evidence)
    if denied:
        return denied
    if not live:
        return Outcome.skipped(f"a {runtime} container with /dev/kvm: opening it decides, which an offline root "
                               "cannot", **evidence)
    err = container_kvm.open_errno.get()
    if err is not None:
        name = errno.errorcode.get(err, str(err))
        return Outcome.failed(f"/dev/kvm is in the {runtime} container but cannot be opened ({name})",
                              "EPERM: the device cgroup (an eBPF program on cgroup v2) denies it; EACCES: its mode "
                              "or group shuts the container's user out.",
                              f"Start the container with {how}, as a user in the device's group.",
                              **dict(evidence, open_errno=name))
    return Outcome.passed(f"in a {runtime} container; /dev/kvm is passed in and opens", **evidence)
