# SPDX-License-Identifier: GPL-2.0-or-later
"""Security modules: sVirt confinement of guests by SELinux or AppArmor."""
from __future__ import annotations

from typing import Dict, List, Optional

from kvmcheck.core.model import Outcome
from kvmcheck.core.record import Record
from kvmcheck.core.registry import check
from kvmcheck.facts import security  # noqa: F401 - the facts judged here
from kvmcheck.facts.security import AA_DIR, AA_FS, QEMU_CONF, SELINUX_CONFIG, first_line
from kvmcheck.parsers.security_conf import Setting, drivers

FIX = {
    "rhel": ("Set SELINUX=enforcing in /etc/selinux/config and run 'setenforce 1' (from permissive this takes effect "
             "at once). Coming from disabled: 'grubby --update-kernel ALL --remove-args selinux', 'fixfiles -F "
             "onboot' to relabel, and reboot. Leave security_driver unset in qemu.conf so libvirt picks SELinux."),
    "debian": ("Use AppArmor: 'apt install apparmor apparmor-utils', keep apparmor=0 off the kernel command line, "
               "'systemctl enable --now apparmor', and reinstall libvirt-daemon-system (it ships "
               "/etc/apparmor.d/usr.sbin.libvirtd, abstractions/libvirt-qemu and virt-aa-helper); then "
               "'aa-enforce /etc/apparmor.d/usr.sbin.libvirtd' and restart libvirtd."),
    "suse": ("SLES/Leap 15 use AppArmor: 'zypper install -t pattern apparmor', 'systemctl enable --now apparmor' "
             "(libvirt-daemon ships its profiles); SLE Micro, Leap 16 and Tumbleweed use SELinux: SELINUX=enforcing "
             "in /etc/selinux/config. Then restart libvirtd/virtqemud."),
    "arch": ("Use AppArmor: 'pacman -S apparmor', add lsm=landlock,lockdown,yama,integrity,apparmor,bpf to the "
             "kernel command line, 'systemctl enable --now apparmor' (libvirt ships its profiles), reboot."),
    None: ("Enable the distribution's security module: SELinux enforcing on Fedora/RHEL and derivatives "
           "(SELINUX=enforcing in /etc/selinux/config), AppArmor with libvirt's profiles on Debian, Ubuntu and SUSE; "
           "then restart libvirtd/virtqemud so its security driver picks it up."),
}
FIX["ubuntu"] = FIX["debian"].replace("keep apparmor=0", "AppArmor is on by default on Ubuntu; keep apparmor=0")

RESTART = "restart libvirtd (or virtqemud)"
ESCAPED = "an escaped QEMU has the host."
OFFLINE_NOTE = " Runtime state unknown (offline root): only the configuration was read."
SELINUX_PASS = "libvirt labels each guest svirt_t with its own MCS category."
# summary, detail, fix of each finding; {line} {text} and the like are filled in by the judge.
TEXT = {
    "driver-none": (
        "sVirt is switched off in qemu.conf",
        f"{QEMU_CONF} line {{line}}: '{{text}}'. libvirt starts every QEMU unconfined, whatever SELinux or AppArmor "
        f"do: a guest that escapes QEMU has the host.",
        f"Delete line {{line}} of {QEMU_CONF} (the default picks the host's security module), then 'systemctl "
        "restart libvirtd' (or virtqemud)."),
    "unconfined": (
        "guests are unconfined by default (qemu.conf)",
        f"{QEMU_CONF} line {{line}}: '{{text}}': domains without an explicit <seclabel> run unconfined.",
        f"Delete line {{line}} of {QEMU_CONF} and {RESTART}."),
    "mismatch": (
        "qemu.conf's security_driver leaves out {lsm}",
        f"{QEMU_CONF} line {{line}}: '{{text}}', while the host's security module is {{lsm}}: libvirt refuses to "
        "start with a driver the host lacks, or runs guests without sVirt.",
        f"Delete line {{line}} of {QEMU_CONF} (or set security_driver = \"{{lsm}}\"), then {RESTART}."),
    "aa-no-profiles": (
        "AppArmor {state}, but libvirt's AppArmor profiles are not installed",
        f"AppArmor {{state}}, but there is no {AA_DIR}/usr.sbin.libvirtd (or usr.sbin.virtqemud) with "
        f"abstractions/libvirt-qemu, so guests get no profile and run unconfined: {ESCAPED}"),
    "aa-disabled": (
        "AppArmor {state}, but libvirt's AppArmor profile is disabled",
        f"{{links}} switches off {{names}} (aa-disable), so guests get no profile and run unconfined: {ESCAPED}",
        f"Re-enable it: 'rm {{rm}}' and 'aa-enforce {{paths}}', then {RESTART}."),
    "aa-pass": ("AppArmor {state} with libvirt's profiles ({names})",
                "libvirt's virt-aa-helper gives each guest its own profile (libvirt-UUID)."),
    "aa-complain": (
        "libvirt's AppArmor profile is in complain mode",
        "Loaded: {names}: AppArmor logs but does not block, so guests are not confined.",
        f"'aa-enforce {{paths}}', then {RESTART}."),
    "selinux-configured-off": (
        "SELinux configured {value}",
        f"{SELINUX_CONFIG} line {{line}}: SELINUX={{value}}: the host boots without SELinux enforcing, so guests are "
        f"not confined: {ESCAPED}"),
    "no-system": ("no SELinux or AppArmor configuration in this root",
                  "Not an installed system tree (no os-release); runtime state unknown."),
    "none-configured": (
        "neither SELinux nor AppArmor is configured",
        f"No {SELINUX_CONFIG} with SELINUX=enforcing and no AppArmor in this root, so guests would run unconfined: "
        f"{ESCAPED}"),
    "selinux-next-boot": (
        "SELinux enforcing now, but configured {value}",
        f"{SELINUX_CONFIG} line {{line}}: SELINUX={{value}}: after the next boot guests are no longer confined.",
        f"Set SELINUX=enforcing in {SELINUX_CONFIG}."),
    "selinux-permissive": (
        "SELinux permissive: guests are not confined",
        "SELinux is loaded but permissive{where}: it logs denials and blocks nothing, so sVirt labels do not "
        f"confine QEMU: {ESCAPED}"),
    "none-active": (
        "no SELinux or AppArmor: guests are not confined",
        "Neither SELinux (no /sys/fs/selinux/enforce) nor AppArmor is active, so libvirt cannot confine QEMU "
        "processes: a guest that escapes QEMU has the host.{extra}"),
}
NOT_ACTIVE = {
    "selinux": (f" {SELINUX_CONFIG} says SELINUX=enforcing, but SELinux is not active (selinux=0 on the kernel "
                "command line, or a kernel without it)."),
    "apparmor": f" AppArmor is enabled in the kernel but {AA_FS} is absent (securityfs not mounted?).",
}


class Seen(Record):
    """What the judge goes by once qemu.conf leaves sVirt on."""

    driver: Optional[Setting]
    names: List[str]  # security_driver's names
    sel: Optional[Setting]  # SELINUX= of /etc/selinux/config
    aa: object  # AppArmorFiles
    fix: str  # the distribution's way to a confining security module
    note: str  # OFFLINE_NOTE on an offline root
    ev: Dict[str, object]


def _warn(key: str, ev: dict, fix: Optional[str] = None, **fill: object) -> Outcome:
    summary, detail, *own_fix = TEXT[key]
    return Outcome.warned(summary.format(**fill), detail.format(**fill), fix or own_fix[0].format(**fill), **ev)


def _switched_off(qemu_conf, names: List[str], ev: dict) -> Optional[Outcome]:
    """qemu.conf turns sVirt off: security_driver = "none", or security_default_confined = 0."""
    driver, confined = qemu_conf.driver, qemu_conf.confined
    if driver and "none" in names:
        return _warn("driver-none", ev, line=driver.line, text=driver.text)
    if confined and confined.value.strip() == "0":
        ev["security_default_confined"] = f"{QEMU_CONF}:{confined.line}: {confined.text}"
        return _warn("unconfined", ev, line=confined.line, text=confined.text)
    return None


def _mismatch(s: Seen, lsm: str) -> Optional[Outcome]:
    if s.driver and s.names and lsm not in s.names:
        return _warn("mismatch", s.ev, lsm=lsm, line=s.driver.line, text=s.driver.text)
    return None


def _apparmor(s: Seen, state: str) -> Outcome:
    """AppArmor is there: are libvirt's profiles installed and not disabled?"""
    aa = s.aa
    if not aa.daemon_profiles or not aa.guest_files:
        summary, detail = TEXT["aa-no-profiles"]
        return Outcome.warned(summary.format(state=state), detail.format(state=state) + s.note, s.fix, **s.ev)
    if aa.disabled:
        links = [f"{AA_DIR}/disable/{p}" for p in aa.disabled]
        summary, detail, fix = TEXT["aa-disabled"]
        detail = detail.format(links=", ".join(links), names=", ".join(aa.disabled)) + s.note
        fix = fix.format(rm=" ".join(links), paths=" ".join(f"{AA_DIR}/{p}" for p in aa.disabled))
        return Outcome.warned(summary.format(state=state), detail, fix, **s.ev)
    summary, detail = TEXT["aa-pass"]
    return _mismatch(s, "apparmor") or Outcome.passed(
        summary.format(state=state, names=", ".join(aa.daemon_profiles)), detail + s.note, **s.ev)


def _offline(s: Seen, has_os_release: bool, qemu_conf_present: bool) -> Outcome:
    """An offline root: only the configuration counts."""
    if s.sel and s.sel.value == "enforcing":
        return _mismatch(s, "selinux") or Outcome.passed("SELinux configured enforcing", SELINUX_PASS + s.note, **s.ev)
    if s.aa.installed and s.aa.daemon_profiles:
        return _apparmor(s, "configured")
    if s.sel and s.sel.value in ("permissive", "disabled"):
        summary, detail = TEXT["selinux-configured-off"]
        fill = {"value": s.sel.value, "line": s.sel.line}
        return Outcome.warned(summary.format(**fill), detail.format(**fill) + s.note, s.fix, **s.ev)
    if s.aa.installed:
        return _apparmor(s, "installed")
    if not has_os_release and not qemu_conf_present:
        return Outcome.skipped(*TEXT["no-system"], **s.ev)
    summary, detail = TEXT["none-configured"]
    return Outcome.warned(summary, detail + s.note, s.fix, **s.ev)


def _complain(s: Seen, loaded: str) -> Optional[Outcome]:
    """libvirt's daemon profile loaded in complain mode (the loaded list is readable by root only)."""
    daemon = [line.strip() for line in loaded.splitlines()
              if line.split(" (")[0].rsplit("/", 1)[-1] in ("libvirtd", "virtqemud")]
    s.ev["loaded_daemon_profiles"] = daemon
    complain = [d for d in daemon if d.endswith("(complain)")]
    if s.aa.daemon_profiles and complain:
        return _warn("aa-complain", s.ev, names=", ".join(complain),
                     paths=" ".join(f"{AA_DIR}/{p}" for p in s.aa.daemon_profiles))
    return None


def _runtime(s: Seen, rt) -> Outcome:
    """A live root: what the running kernel enforces."""
    enforce, aa_param, lsm = first_line(rt.selinux_enforce), first_line(rt.apparmor_enabled), first_line(rt.lsm)
    if lsm:
        s.ev["lsm"] = lsm
    s.ev["selinux_enforce"], s.ev["apparmor_enabled"] = enforce, aa_param
    if enforce == "1":
        if s.sel and s.sel.value != "enforcing":
            return _warn("selinux-next-boot", s.ev, value=s.sel.value, line=s.sel.line)
        return _mismatch(s, "selinux") or Outcome.passed("SELinux enforcing", SELINUX_PASS, **s.ev)
    if aa_param in ("Y", "1") and (rt.apparmor_fs or "apparmor" in (lsm or "")):
        loaded = rt.loaded_profiles
        return (loaded is not None and loaded.ok and _complain(s, loaded.text or "")) or _apparmor(s, "enabled")
    if enforce == "0":
        where = f" ({SELINUX_CONFIG} line {s.sel.line}: SELINUX={s.sel.value})" if s.sel else ""
        return _warn("selinux-permissive", s.ev, s.fix, where=where)
    extra = (NOT_ACTIVE["selinux"] if s.sel and s.sel.value == "enforcing"
             else NOT_ACTIVE["apparmor"] if aa_param in ("Y", "1") else "")
    return _warn("none-active", s.ev, s.fix, extra=extra)


def _files_evidence(sel: Optional[Setting], aa, ev: dict) -> None:
    if sel:
        ev["selinux_config"] = f"{SELINUX_CONFIG}:{sel.line}: SELINUX={sel.value}"
    if aa.daemon_profiles or aa.guest_files:
        ev["apparmor_profiles"] = [f"{AA_DIR}/{p}" for p in aa.daemon_profiles + aa.guest_files]
    if aa.disabled:
        ev["apparmor_disabled"] = [f"{AA_DIR}/disable/{p}" for p in aa.disabled]


@check("security.svirt", "sVirt guest confinement")
def security_svirt(qemu_conf, selinux_config, apparmor_files, lsm_runtime, has_os_release, distro_family,
                   live) -> Outcome:
    """Guests are confined by SELinux or AppArmor (libvirt's sVirt).

    What: SELinux enforcing (/sys/fs/selinux/enforce, SELINUX= in
    /etc/selinux/config), or AppArmor enabled (/sys/module/apparmor/parameters/
    enabled, /sys/kernel/security/apparmor) with libvirt's profiles in
    /etc/apparmor.d, not disabled and (when root can read the loaded profiles)
    not in complain mode; security_driver and security_default_confined in
    /etc/libvirt/qemu.conf.  Offline only the configuration counts.

    Why: libvirt gives each QEMU process its own SELinux label (svirt_t with a
    unique MCS category) or AppArmor profile, so a guest that breaks out of
    QEMU still cannot read other guests' disks or the host's files.  Without
    it, an escaped QEMU has everything its user has.

    Fix: Fedora/RHEL: SELINUX=enforcing and 'setenforce 1'.  Debian/Ubuntu/SUSE:
    enable AppArmor and install libvirt's profiles ('aa-enforce').  Remove
    security_driver = "none" (and security_default_confined = 0) from qemu.conf.
    """
    ev: Dict[str, object] = {"runtime": "live" if live else "unknown (offline root)"}
    driver = qemu_conf.driver
    names = drivers(driver.value) if driver else []
    if driver:
        ev["security_driver"] = f"{QEMU_CONF}:{driver.line}: {driver.text}"
    if not qemu_conf.present:
        ev["qemu_conf"] = "absent (libvirt's QEMU driver not installed)"
    off = _switched_off(qemu_conf, names, ev)
    if off:
        return off
    _files_evidence(selinux_config, apparmor_files, ev)
    seen = Seen(driver, names, selinux_config, apparmor_files, FIX.get(distro_family, FIX[None]),
                "" if live else OFFLINE_NOTE, ev)
    return _runtime(seen, lsm_runtime) if live else _offline(seen, has_os_release, qemu_conf.present)
