# SPDX-License-Identifier: GPL-2.0-or-later
"""libvirt installation layout: configuration, state directories, the daemon and its socket."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from kvmcheck.facts.context import Context
from kvmcheck.core.host import OfflineError
from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check

ETC = "/etc/libvirt"
STATE = "/var/lib/libvirt"
STATE_DIRS = ("images", "qemu", "network", "dnsmasq", "boot")
SUMMARY_PROBLEMS = 3  # the rest are in the detail: a summary stays one readable line
# The two ways libvirt runs QEMU guests: one monolithic daemon, or the per-driver ("modular") daemons.
DAEMONS = ("libvirtd", "virtqemud")
DAEMON_CONF = {"libvirtd": "libvirtd.conf", "virtqemud": "virtqemud.conf"}
SOCKETS = {"libvirtd": "/run/libvirt/libvirt-sock", "virtqemud": "/run/libvirt/virtqemud-sock"}
UNITS = {"libvirtd": ("libvirtd.service", "libvirtd.socket"), "virtqemud": ("virtqemud.service", "virtqemud.socket")}
BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin")
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


def install_hint(family: Optional[str]) -> str:
    """How to install libvirt on this distribution family (the distro_family fact); all three when unknown."""
    if family:
        return f"'{INSTALL[family]}'"
    return "'apt-get install libvirt-daemon-system' (Debian, Ubuntu), 'dnf install libvirt' (Fedora, RHEL) or " \
           "'zypper install libvirt' (SUSE)"


def unit_state(ctx: Context, units: List[str]) -> Tuple[Dict[str, str], str]:
    """(unit -> is-active answer, a note) from systemctl on the live host; ({}, why not) otherwise."""
    host = ctx.host
    if not host.live:
        return {}, "Offline root: enablement read from /etc/systemd/system/*.wants/"
    if not host.is_dir("/run/systemd/system"):
        return {}, "This host was not booted with systemd (no /run/systemd/system), so unit state cannot be asked"
    try:
        res = host.run(["systemctl", "is-active", *units], timeout=5.0)
    except FileNotFoundError:
        return {}, "The systemctl command is not installed, so unit state cannot be asked"
    except OfflineError as exc:
        return {}, str(exc)
    except Exception as exc:  # noqa: BLE001 - subprocess.TimeoutExpired, which this module must not import
        return {}, f"'systemctl is-active' did not answer: {exc}"
    lines = [line.strip() for line in res.stdout.splitlines() if line.strip()]
    if len(lines) != len(units):
        return {}, f"'systemctl is-active' answered unexpectedly: {(res.stdout + res.stderr).strip()[:200]}"
    return dict(zip(units, lines)), "systemctl is-active"


def enabled_units(ctx: Context, units: List[str]) -> Tuple[List[str], List[str]]:
    """(enabled, masked) units, from the symlinks systemctl enable/mask leave in /etc/systemd/system.

    The links are absolute and usually dangle in an offline root, so they are found by listing
    directories, not by following them.
    """
    host = ctx.host
    top = host.listdir("/etc/systemd/system")
    wants = [f"/etc/systemd/system/{d}" for d in top if d.endswith(".wants")]
    enabled, masked = [], []
    for unit in units:
        if unit in top:
            node = host.node(f"/etc/systemd/system/{unit}")
            # A mask is a link to /dev/null: a char device live, a dangling link in an offline root.
            if node is None or node.kind in ("char", "link"):
                masked.append(unit)
                continue
        if any(unit in host.listdir(d) for d in wants):
            enabled.append(unit)
    return enabled, masked


def _readable(ctx: Context, path: str) -> bool:
    return ctx.host.access(path, "r")


@check("libvirt.layout", "libvirt configuration, state and daemon", reads=(
    "/etc/libvirt/*.conf", "/var/lib/libvirt/*", "/usr/sbin/libvirtd", "/usr/sbin/virtqemud", "/usr/bin/libvirtd",
    "/usr/bin/virtqemud", "/sbin/libvirtd", "/sbin/virtqemud",
    "/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock", "/run/systemd/system",
    "/etc/systemd/system/*.wants/libvirtd.*", "/etc/systemd/system/*.wants/virtqemud.*", "/etc/os-release",
))
def libvirt_layout(ctx: Context) -> Outcome:
    """libvirt is installed, configured, and its daemon runs or starts at boot.

    What: /etc/libvirt with qemu.conf and the daemon's own configuration
    (libvirtd.conf for the monolithic daemon, virtqemud.conf for the modular
    ones); /var/lib/libvirt with images, qemu, network, dnsmasq and boot;
    which daemon is in use, libvirtd or virtqemud, from its socket under
    /run/libvirt, from 'systemctl is-active' on a live systemd host, and from
    the enablement symlinks in /etc/systemd/system/*.wants/ (the only source
    for an offline root).  Enabling both daemons is reported: they would
    both manage the same QEMU guests.  A root without /etc is skipped.

    Why: virsh, virt-manager, virt-install and Cockpit talk to the daemon
    through its socket; without it they fail with "Failed to connect socket
    to '/var/run/libvirt/virtqemud-sock'".  A missing state directory means
    a partial or damaged installation.

    Fix: install libvirt ('apt-get install libvirt-daemon-system', 'dnf
    install libvirt', 'zypper install libvirt'), then start it at boot:
    'systemctl enable --now virtqemud.socket' (modular, Fedora/RHEL/SUSE) or
    'systemctl enable --now libvirtd' (monolithic, Debian/Ubuntu).
    """
    host = ctx.host
    if not host.is_dir("/etc"):
        return Outcome.skipped("no /etc in this root: not an installed system",
                               "The root holds no configuration at all (a captured /proc and /sys only).")
    binaries = {d: next((f"{b}/{d}" for b in BIN_DIRS if host.exists(f"{b}/{d}")), None) for d in DAEMONS}
    have_etc = host.is_dir(ETC)
    has_qemu_conf = host.exists(f"{ETC}/qemu.conf")
    evidence: Dict[str, object] = {"etc": have_etc, "binaries": {d: p for d, p in binaries.items() if p}}
    if not any(binaries.values()) and not has_qemu_conf:
        what = ("/etc/libvirt has no qemu.conf (only client configuration, as libvirt-clients leaves) and there "
                "is no libvirtd or virtqemud binary" if have_etc else "no /etc/libvirt and no libvirtd or virtqemud "
                "binary")
        return Outcome.warned(
            "libvirt is not installed", f"{what[0].upper()}{what[1:]}. QEMU can run guests alone, but virsh, "
            "virt-manager, virt-install, Cockpit and libvirt's default NAT network need the daemon.",
            f"Install it with {install_hint(ctx.distro_family())}, then run kvmcheck again.", **evidence).because("packages.virt")

    problems: List[str] = []
    notes: List[str] = []
    euid = host.invoking_user()[0] if host.live else 0

    def look(path: str, kind: str) -> Optional[str]:
        try:
            node = host.node(path)
        except OSError as exc:
            return f"cannot be examined ({exc.strerror or exc})"
        if node is None:
            return "missing"
        if node.kind != kind:
            return f"a {node.kind}, not a {kind}"
        if not _readable(ctx, path):
            if euid != 0:
                notes.append(f"{path} is readable by root only (as shipped); run kvmcheck as root to see it all")
                return None
            return "not readable"
        return None

    # -- which daemon ----------------------------------------------------------------
    all_units = [u for d in DAEMONS for u in UNITS[d]]
    enabled, masked = enabled_units(ctx, all_units)
    active, how = unit_state(ctx, all_units)
    sockets = {}
    for d in DAEMONS:
        try:
            node = host.node(SOCKETS[d])
        except OSError:
            node = None
        if node is not None:
            sockets[d] = node.kind
    in_use = [d for d in DAEMONS
              if sockets.get(d) == "socket" or any(active.get(u) == "active" for u in UNITS[d])
              or any(u in enabled for u in UNITS[d])]
    if not in_use:
        in_use = [d for d in DAEMONS if binaries[d]] if not all(binaries.values()) else []
    evidence.update(enabled=enabled, masked=masked, active=active, unit_state_source=how,
                    sockets=sockets, daemon=in_use)
    if how != "systemctl is-active":
        notes.append(how)

    # -- configuration and state -----------------------------------------------------------
    confs = ["qemu.conf"] + ([DAEMON_CONF[d] for d in in_use] or ["libvirtd.conf or virtqemud.conf"])
    for conf in confs:
        if " or " in conf:
            if not any(host.exists(f"{ETC}/{c}") for c in DAEMON_CONF.values()):
                problems.append(f"{ETC}/{conf}: missing")
            continue
        issue = look(f"{ETC}/{conf}", "file")
        if issue:
            problems.append(f"{ETC}/{conf}: {issue}")
    for sub in ("",) + STATE_DIRS:
        path = f"{STATE}/{sub}".rstrip("/")
        issue = look(path, "dir")
        if issue:
            problems.append(f"{path}: {issue}")
            if not sub:
                break
    evidence["problems"] = list(problems)

    # -- the daemon's state ------------------------------------------------------------------
    daemon_name = " and ".join(in_use) if in_use else "libvirtd or virtqemud"
    modular = in_use == ["virtqemud"] or (not in_use and ctx.distro_family() in ("rhel", "suse"))
    start = "systemctl enable --now virtqemud.socket" if modular else "systemctl enable --now libvirtd"
    daemon_problem = None
    running = [d for d in in_use if sockets.get(d) == "socket" or any(active.get(u) == "active" for u in UNITS[d])]
    starts = [d for d in in_use if any(u in enabled for u in UNITS[d])]
    if len(in_use) > 1:
        daemon_problem = ("both the monolithic libvirtd and the modular virtqemud are enabled or running; "
                          "they would manage the same QEMU guests")
    elif masked and not running and not starts:
        daemon_problem = f"masked: {', '.join(masked)}"
    elif host.live:
        if not running:
            daemon_problem = (f"{daemon_name} is not running (no socket in /run/libvirt)"
                              + (", though enabled at boot" if starts else " and not enabled at boot"))
    elif not starts:
        daemon_problem = f"no libvirt daemon is enabled at boot (no {daemon_name} unit in /etc/systemd/system/*.wants/)"
    if daemon_problem:
        problems.append(daemon_problem)

    state = []
    if running:
        state.append("running" + (f" ({', '.join(SOCKETS[d] for d in running if d in sockets)})"
                                  if any(d in sockets for d in running) else ""))
    if starts:
        state.append("enabled at boot")
    kind = "modular" if in_use == ["virtqemud"] else "monolithic" if in_use == ["libvirtd"] else "unknown mode"
    head = f"{daemon_name} ({kind})" + (f", {', '.join(state)}" if state else "")
    detail = "; ".join(notes + ([] if not problems else ["Problems: " + "; ".join(problems)]))
    if not problems:
        return Outcome.passed(f"{head}; configuration and state directories in place",
                              detail + ("." if detail else ""), **evidence)
    fixes = []
    if any(p.startswith((ETC, STATE)) for p in problems):
        family = ctx.distro_family()
        fixes.append("Reinstall the daemon packages to restore the missing files: "
                     + (f"'{REINSTALL[family]}'" if family else "reinstall them with the package manager"))
    if len(in_use) > 1:
        fixes.append("Keep one: 'systemctl disable --now libvirtd.service libvirtd.socket' for the modular "
                     "daemons, or 'systemctl disable --now virtqemud.service virtqemud.socket' for libvirtd")
    elif masked and daemon_problem and daemon_problem.startswith("masked"):
        fixes.append(f"'systemctl unmask {' '.join(masked)}', then '{start}'")
    elif daemon_problem:
        fixes.append(f"'{start}'")
    shown = "; ".join(problems[:SUMMARY_PROBLEMS])  # all of them are in the detail
    more = len(problems) - SUMMARY_PROBLEMS
    return Outcome.warned(f"{head}: {shown}" + (f" (and {more} more)" if more > 0 else ""), detail + ".",
                          "; ".join(fixes) + ".", **evidence)
