# SPDX-License-Identifier: GPL-2.0-or-later
"""libvirt's installation as the root shows it: its binaries, configuration, state directories, the daemons'
sockets, their systemd enablement links, and (live) what systemd says of the units."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from kvmcheck.core.host import OfflineError
from kvmcheck.core.record import Record
from kvmcheck.facts import Later, fact

ETC = "/etc/libvirt"
STATE = "/var/lib/libvirt"
STATE_DIRS = ("images", "qemu", "network", "dnsmasq", "boot")
# The two ways libvirt runs QEMU guests: one monolithic daemon, or the per-driver ("modular") daemons.
DAEMONS = ("libvirtd", "virtqemud")
DAEMON_CONF = {"libvirtd": "libvirtd.conf", "virtqemud": "virtqemud.conf"}
SOCKETS = {"libvirtd": "/run/libvirt/libvirt-sock", "virtqemud": "/run/libvirt/virtqemud-sock"}
UNITS = {"libvirtd": ("libvirtd.service", "libvirtd.socket"), "virtqemud": ("virtqemud.service", "virtqemud.socket")}
ALL_UNITS = tuple(u for d in DAEMONS for u in UNITS[d])
BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin")
UNIT_DIR = "/etc/systemd/system"


class PathState(Record):
    """A path libvirt's installation should hold, as found."""

    kind: Optional[str]  # the node's kind (file, dir, link ...); None when missing or not examined
    readable: bool  # by the user running kvmcheck
    error: Optional[str] = None  # why it could not be examined (strerror)


class LibvirtFiles(Record):
    """What the root holds of libvirt.  Without /etc, or without libvirt, only the fields up to qemu_conf
    are filled: nothing more is looked at."""

    etc: bool  # the root has /etc at all
    binaries: Dict[str, Optional[str]]  # daemon -> its executable, or None
    etc_libvirt: bool
    qemu_conf: bool
    confs: Dict[str, PathState] = {}  # qemu.conf, libvirtd.conf, virtqemud.conf
    conf_exists: Dict[str, bool] = {}  # libvirtd.conf, virtqemud.conf -> whether it exists
    state_dirs: Dict[str, PathState] = {}  # /var/lib/libvirt, then each of its STATE_DIRS
    sockets: Dict[str, str] = {}  # daemon -> the kind of node at its socket path
    enabled: Tuple[str, ...] = ()  # units with an enablement link in /etc/systemd/system/*.wants/
    masked: Tuple[str, ...] = ()  # units masked (linked to /dev/null) in /etc/systemd/system
    euid: int = 0  # the user running kvmcheck (0 offline: an offline root is judged as root sees it)

    @property
    def installed(self) -> bool:
        return any(self.binaries.values()) or self.qemu_conf


class UnitActivity(Record):
    """What 'systemctl is-active' says of libvirt's units, or why it was not asked."""

    states: Dict[str, str]  # unit -> its answer; {} when not asked
    source: str  # systemctl, offline, no-systemd, no-systemctl, offline-error, no-answer, unexpected
    detail: str = ""  # the error or the unexpected answer


def _path_state(host, path: str) -> PathState:
    try:
        node = host.node(path)
    except OSError as exc:
        return PathState(None, False, str(exc.strerror or exc))
    if node is None:
        return PathState(None, False)
    return PathState(node.kind, host.access(path, "r"))


def enabled_units(host, units: Tuple[str, ...]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(enabled, masked) units, from the symlinks systemctl enable/mask leave in /etc/systemd/system.

    The links are absolute and usually dangle in an offline root, so they are found by listing
    directories, not by following them.
    """
    top = host.listdir(UNIT_DIR)
    wants = [f"{UNIT_DIR}/{d}" for d in top if d.endswith(".wants")]
    enabled, masked = [], []
    for unit in units:
        if unit in top:
            node = host.node(f"{UNIT_DIR}/{unit}")
            # A mask is a link to /dev/null: a char device live, a dangling link in an offline root.
            if node is None or node.kind in ("char", "link"):
                masked.append(unit)
                continue
        if any(unit in host.listdir(d) for d in wants):
            enabled.append(unit)
    return tuple(enabled), tuple(masked)


@fact(reads=("/etc", ETC, f"{ETC}/*.conf", f"{STATE}/**", UNIT_DIR, f"{UNIT_DIR}/*.wants",
             f"{UNIT_DIR}/libvirtd.*", f"{UNIT_DIR}/virtqemud.*")
      + tuple(f"{b}/{d}" for b in BIN_DIRS for d in DAEMONS) + tuple(SOCKETS.values()))
def libvirt_files(host) -> LibvirtFiles:
    """libvirt's files in this root (an OSError other than on the paths examined one by one propagates:
    the runner names the file that could not be read)."""
    if not host.is_dir("/etc"):
        return LibvirtFiles(False, {}, False, False)
    binaries = {d: next((f"{b}/{d}" for b in BIN_DIRS if host.exists(f"{b}/{d}")), None) for d in DAEMONS}
    found = LibvirtFiles(True, binaries, host.is_dir(ETC), host.exists(f"{ETC}/qemu.conf"))
    if not found.installed:
        return found
    enabled, masked = enabled_units(host, ALL_UNITS)
    sockets = {}
    for daemon, path in SOCKETS.items():
        try:
            node = host.node(path)
        except OSError:
            node = None  # /run/libvirt closed to this user: no socket seen
        if node is not None:
            sockets[daemon] = node.kind
    confs = {name: _path_state(host, f"{ETC}/{name}") for name in ("qemu.conf",) + tuple(DAEMON_CONF.values())}
    state = {path: _path_state(host, path) for path in [STATE] + [f"{STATE}/{sub}" for sub in STATE_DIRS]}
    return found._replace(
        confs=confs, conf_exists={c: host.exists(f"{ETC}/{c}") for c in DAEMON_CONF.values()}, state_dirs=state,
        sockets=sockets, enabled=enabled, masked=masked, euid=host.invoking_user()[0] if host.live else 0)


def unit_activity(host) -> UnitActivity:
    """The units' state from systemctl on the live host; why not otherwise."""
    if not host.live:
        return UnitActivity({}, "offline")
    if not host.is_dir("/run/systemd/system"):
        return UnitActivity({}, "no-systemd")
    try:
        res = host.run(["systemctl", "is-active", *ALL_UNITS], timeout=5.0)
    except FileNotFoundError:
        return UnitActivity({}, "no-systemctl")
    except OfflineError as exc:
        return UnitActivity({}, "offline-error", str(exc))
    except Exception as exc:  # noqa: BLE001 - TimeoutError, or whatever else stopped the command
        return UnitActivity({}, "no-answer", str(exc))
    lines = [line.strip() for line in res.stdout.splitlines() if line.strip()]
    if len(lines) != len(ALL_UNITS):
        return UnitActivity({}, "unexpected", (res.stdout + res.stderr).strip()[:200])
    return UnitActivity(dict(zip(ALL_UNITS, lines)), "systemctl")


@fact(reads=("/run/systemd/system",))
def libvirt_units(host) -> Later:
    """Later: UnitActivity of libvirt's units (runs systemctl, so only when libvirt is installed)."""
    return Later(lambda: unit_activity(host))
