# SPDX-License-Identifier: GPL-2.0-or-later
"""libvirt installation layout: configuration, state directories, the daemon and its socket."""
from __future__ import annotations

from typing import Dict, List, Optional

from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts.libvirt import (DAEMON_CONF, DAEMONS, ETC, SOCKETS, STATE, UNITS, LibvirtFiles, PathState,
                                    UnitActivity)

SUMMARY_PROBLEMS = 3  # the rest are in the detail: a summary stays one readable line
INSTALL = {
    "debian": "apt-get install libvirt-daemon-system",
    "ubuntu": "apt-get install libvirt-daemon-system",
    "rhel": "dnf install libvirt",
    "suse": "zypper install libvirt",
    "arch": "pacman -S libvirt",
}
REINSTALL = {
    "debian": "apt-get install --reinstall libvirt-daemon-system",
    "ubuntu": "apt-get install --reinstall libvirt-daemon-system",
    "rhel": "dnf reinstall 'libvirt-daemon*'",
    "suse": "zypper install --force libvirt-daemon",
    "arch": "pacman -S libvirt",
}
# UnitActivity.source -> what the report says about where unit state came from
UNIT_STATE_SOURCES = {
    "systemctl": "systemctl is-active",
    "offline": "Offline root: enablement read from /etc/systemd/system/*.wants/",
    "no-systemd": "This host was not booted with systemd (no /run/systemd/system), so unit state cannot be asked",
    "no-systemctl": "The systemctl command is not installed, so unit state cannot be asked",
    "offline-error": "{detail}",
    "no-answer": "'systemctl is-active' did not answer: {detail}",
    "unexpected": "'systemctl is-active' answered unexpectedly: {detail}",
}
NO_ETC = ("no /etc in this root: not an installed system",
          "The root holds no configuration at all (a captured /proc and /sys only).")
BOTH_DAEMONS = ("both the monolithic libvirtd and the modular virtqemud are enabled or running; "
                "they would manage the same QEMU guests")
KEEP_ONE = ("Keep one: 'systemctl disable --now libvirtd.service libvirtd.socket' for the modular "
            "daemons, or 'systemctl disable --now virtqemud.service virtqemud.socket' for libvirtd")


def install_hint(family: Optional[str]) -> str:
    """How to install libvirt on this distribution family (the distro_family fact); all three when unknown."""
    if family:
        return f"'{INSTALL[family]}'"
    return "'apt-get install libvirt-daemon-system' (Debian, Ubuntu), 'dnf install libvirt' (Fedora, RHEL) or " \
           "'zypper install libvirt' (SUSE)"


def _not_installed(files: LibvirtFiles, family: Optional[str], evidence: dict) -> Outcome:
    what = ("/etc/libvirt has no qemu.conf (only client configuration, as libvirt-clients leaves) and there "
            "is no libvirtd or virtqemud binary" if files.etc_libvirt else "no /etc/libvirt and no libvirtd or "
            "virtqemud binary")
    return Outcome.warned(
        "libvirt is not installed", f"{what[0].upper()}{what[1:]}. QEMU can run guests alone, but virsh, "
        "virt-manager, virt-install, Cockpit and libvirt's default NAT network need the daemon.",
        f"Install it with {install_hint(family)}, then run kvmcheck again.", **evidence).because("packages.virt")


def _issue(path: str, state: PathState, kind: str, euid: int, notes: List[str]) -> Optional[str]:
    """What is wrong with a path that must be a readable kind, or None."""
    if state.error:
        return f"cannot be examined ({state.error})"
    if state.kind is None:
        return "missing"
    if state.kind != kind:
        return f"a {state.kind}, not a {kind}"
    if not state.readable and euid != 0:
        notes.append(f"{path} is readable by root only (as shipped); run kvmcheck as root to see it all")
    return "not readable" if not state.readable and euid == 0 else None


def _file_problems(files: LibvirtFiles, in_use: List[str], notes: List[str]) -> List[str]:
    """The configuration files the daemons in use need, then the state directories (not below a missing top)."""
    problems = []
    confs = ["qemu.conf"] + [DAEMON_CONF[d] for d in in_use]
    for conf in confs:
        issue = _issue(f"{ETC}/{conf}", files.confs[conf], "file", files.euid, notes)
        if issue:
            problems.append(f"{ETC}/{conf}: {issue}")
    if not in_use and not any(files.conf_exists.values()):
        problems.append(f"{ETC}/libvirtd.conf or virtqemud.conf: missing")
    for path, state in files.state_dirs.items():
        issue = _issue(path, state, "dir", files.euid, notes)
        if issue:
            problems.append(f"{path}: {issue}")
            if path == STATE:
                break
    return problems


def _daemon_problem(in_use: List[str], running: List[str], starts: List[str], masked: tuple,
                    live: bool) -> Optional[str]:
    name = " and ".join(in_use) if in_use else "libvirtd or virtqemud"
    if len(in_use) > 1:
        return BOTH_DAEMONS
    if masked and not running and not starts:
        return f"masked: {', '.join(masked)}"
    if live and not running:
        return f"{name} is not running (no socket in /run/libvirt)" + (
            ", though enabled at boot" if starts else " and not enabled at boot")
    if not live and not starts:
        return f"no libvirt daemon is enabled at boot (no {name} unit in /etc/systemd/system/*.wants/)"
    return None


def _fixes(problems: List[str], in_use: List[str], masked: tuple, daemon_problem: Optional[str],
           family: Optional[str]) -> str:
    modular = in_use == ["virtqemud"] or (not in_use and family in ("rhel", "suse"))
    start = "systemctl enable --now virtqemud.socket" if modular else "systemctl enable --now libvirtd"
    fixes = []
    if any(p.startswith((ETC, STATE)) for p in problems):
        fixes.append("Reinstall the daemon packages to restore the missing files: "
                     + (f"'{REINSTALL[family]}'" if family else "reinstall them with the package manager"))
    if len(in_use) > 1:
        fixes.append(KEEP_ONE)
    elif masked and daemon_problem and daemon_problem.startswith("masked"):
        fixes.append(f"'systemctl unmask {' '.join(masked)}', then '{start}'")
    elif daemon_problem:
        fixes.append(f"'{start}'")
    return "; ".join(fixes) + "."


def _head(in_use: List[str], running: List[str], starts: List[str], sockets: Dict[str, str]) -> str:
    """'virtqemud (modular), running (/run/libvirt/virtqemud-sock), enabled at boot'."""
    state = []
    if running:
        shown = [SOCKETS[d] for d in running if d in sockets]
        state.append("running" + (f" ({', '.join(shown)})" if shown else ""))
    if starts:
        state.append("enabled at boot")
    kind = "modular" if in_use == ["virtqemud"] else "monolithic" if in_use == ["libvirtd"] else "unknown mode"
    name = " and ".join(in_use) if in_use else "libvirtd or virtqemud"
    return f"{name} ({kind})" + (f", {', '.join(state)}" if state else "")


@check("libvirt.layout", "libvirt configuration, state and daemon")
def libvirt_layout(libvirt_files, libvirt_units, distro_family, live) -> Outcome:
    """libvirt is installed, configured, and its daemon runs or starts at boot.

    What: /etc/libvirt with qemu.conf and the daemon's own configuration
    (libvirtd.conf monolithic, virtqemud.conf modular); /var/lib/libvirt with
    images, qemu, network, dnsmasq and boot; which daemon is in use, from its
    socket under /run/libvirt, 'systemctl is-active' (live, systemd) and the
    enablement links in /etc/systemd/system/*.wants/ (the only source
    offline).  Both daemons enabled is reported: they would manage the same
    guests.  A root without /etc is skipped.

    Why: virsh, virt-manager, virt-install and Cockpit talk to the daemon
    through its socket; without it they fail with "Failed to connect socket
    to '/var/run/libvirt/virtqemud-sock'".  A missing state directory means
    a partial or damaged installation.

    Fix: install libvirt ('apt-get install libvirt-daemon-system', 'dnf
    install libvirt', 'zypper install libvirt'), then start it at boot:
    'systemctl enable --now virtqemud.socket' (modular, Fedora/RHEL/SUSE) or
    'systemctl enable --now libvirtd' (monolithic, Debian/Ubuntu).
    """
    files = libvirt_files
    if not files.etc:
        return Outcome.skipped(*NO_ETC)
    evidence: Dict[str, object] = {"etc": files.etc_libvirt, "binaries": {d: p for d, p in files.binaries.items() if p}}
    if not files.installed:
        return _not_installed(files, distro_family, evidence)
    units: UnitActivity = libvirt_units.get()
    active, enabled, how = units.states, files.enabled, UNIT_STATE_SOURCES[units.source].format(detail=units.detail)
    running = [d for d in DAEMONS if files.sockets.get(d) == "socket" or any(active.get(u) == "active" for u in UNITS[d])]
    starts = [d for d in DAEMONS if any(u in enabled for u in UNITS[d])]
    in_use = [d for d in DAEMONS if d in running or d in starts] or (
        [d for d in DAEMONS if files.binaries[d]] if not all(files.binaries.values()) else [])
    running, starts = [d for d in running if d in in_use], [d for d in starts if d in in_use]
    evidence.update(enabled=list(enabled), masked=list(files.masked), active=active, unit_state_source=how,
                    sockets=files.sockets, daemon=in_use)
    notes = [how] if units.source != "systemctl" else []
    problems = _file_problems(files, in_use, notes)
    evidence["problems"] = list(problems)
    daemon_problem = _daemon_problem(in_use, running, starts, files.masked, live)
    problems += [daemon_problem] if daemon_problem else []
    head = _head(in_use, running, starts, files.sockets)
    detail = "; ".join(notes + ([] if not problems else ["Problems: " + "; ".join(problems)]))
    if not problems:
        return Outcome.passed(f"{head}; configuration and state directories in place",
                              detail + ("." if detail else ""), **evidence)
    shown = "; ".join(problems[:SUMMARY_PROBLEMS])  # all of them are in the detail
    more = len(problems) - SUMMARY_PROBLEMS
    return Outcome.warned(f"{head}: {shown}" + (f" (and {more} more)" if more > 0 else ""), detail + ".",
                          _fixes(problems, in_use, files.masked, daemon_problem, distro_family), **evidence)
