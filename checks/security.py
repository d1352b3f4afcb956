# SPDX-License-Identifier: GPL-2.0-or-later
"""Security modules: sVirt confinement of guests by SELinux or AppArmor."""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

from kvmcheck.facts.context import Context
from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check

QEMU_CONF = "/etc/libvirt/qemu.conf"
SELINUX_CONFIG = "/etc/selinux/config"
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"
AA_PARAM = "/sys/module/apparmor/parameters/enabled"
AA_FS = "/sys/kernel/security/apparmor"
AA_DIR = "/etc/apparmor.d"
# libvirt's AppArmor files: the daemon profile (monolithic or modular), the guest abstraction, the template.
AA_DAEMON_PROFILES = ("usr.sbin.libvirtd", "usr.sbin.virtqemud")
AA_GUEST_FILES = ("abstractions/libvirt-qemu", "libvirt/TEMPLATE.qemu")
AA_PARSERS = ("/sbin/apparmor_parser", "/usr/sbin/apparmor_parser", "/usr/lib/apparmor", "/lib/apparmor")

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


class Setting(NamedTuple):
    value: str
    line: int
    text: str


def parse_libvirt_conf(text: str, keys: Tuple[str, ...]) -> Dict[str, Setting]:
    """The last assignment of each key in a libvirt .conf file (KEY = "str" | NUM | [ "list", ... ])."""
    found: Dict[str, Setting] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        first = lines[i].split("#", 1)[0]
        parts = [first]
        # A list may span lines until its closing bracket.  Only each new line is searched for it:
        # rescanning the joined text made an unclosed '[' quadratic in the file's length.
        if "[" in first and "]" not in first:
            while i + 1 < len(lines):
                i += 1
                parts.append(lines[i].split("#", 1)[0])
                if "]" in parts[-1]:
                    break
        stmt = " ".join(parts)
        i += 1
        key, sep, value = stmt.partition("=")
        key = key.strip()
        if sep and key in keys:
            found[key] = Setting(value.strip(), start + 1, " ".join(stmt.split()))
    return found


def drivers(value: str) -> List[str]:
    """security_driver's value as a list of names: "selinux" or [ "selinux", "dac" ]."""
    return [w.strip().strip('"').strip("'") for w in value.strip().strip("[]").split(",") if w.strip()]


def parse_selinux_config(text: str) -> Dict[str, Setting]:
    found: Dict[str, Setting] = {}
    for num, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = Setting(value.strip().strip('"').lower(), num, line)
    return found


def _fix(ctx: Context) -> str:
    return FIX.get(ctx.distro_family(), FIX[None])


@check("security.svirt", "sVirt guest confinement", reads=(
    SELINUX_ENFORCE, SELINUX_CONFIG, AA_PARAM, AA_FS, "/sys/kernel/security/lsm", AA_DIR + "/usr.sbin.libvirtd",
    AA_DIR + "/usr.sbin.virtqemud", AA_DIR + "/abstractions/libvirt-qemu", AA_DIR + "/disable", AA_DIR + "/libvirt/*",
    AA_DIR, "/usr/sbin/apparmor_parser", "/sbin/apparmor_parser", QEMU_CONF,
))
def security_svirt(ctx: Context) -> Outcome:
    """Guests are confined by SELinux or AppArmor (libvirt's sVirt).

    What: SELinux enforcing (/sys/fs/selinux/enforce, and SELINUX= in
    /etc/selinux/config), or AppArmor enabled (/sys/module/apparmor/parameters/
    enabled, /sys/kernel/security/apparmor) with libvirt's profiles in
    /etc/apparmor.d (usr.sbin.libvirtd or usr.sbin.virtqemud, abstractions/
    libvirt-qemu), not disabled and, when root can read the loaded profiles,
    not in complain mode; and security_driver / security_default_confined in
    /etc/libvirt/qemu.conf.  On an offline root only the configuration files
    count: the runtime state is unknown.

    Why: libvirt gives each QEMU process its own SELinux label (svirt_t with a
    unique MCS category) or AppArmor profile, so a guest that breaks out of
    QEMU still cannot read other guests' disks or the host's files.  Without
    it, an escaped QEMU has everything its user has.

    Fix: Fedora/RHEL: SELINUX=enforcing and 'setenforce 1'.  Debian/Ubuntu/SUSE:
    enable AppArmor and install libvirt's profiles ('aa-enforce').  Remove
    security_driver = "none" (and security_default_confined = 0) from qemu.conf.
    """
    host = ctx.host
    ev: Dict[str, object] = {"runtime": "live" if host.live else "unknown (offline root)"}
    conf_text = host.read_optional(QEMU_CONF)
    conf = parse_libvirt_conf(conf_text or "", ("security_driver", "security_default_confined"))
    driver = conf.get("security_driver")
    names = drivers(driver.value) if driver else []
    if driver:
        ev["security_driver"] = f"{QEMU_CONF}:{driver.line}: {driver.text}"
    if conf_text is None:
        ev["qemu_conf"] = "absent (libvirt's QEMU driver not installed)"
    if driver and "none" in names:
        return Outcome.warned(
            "sVirt is switched off in qemu.conf",
            f"{QEMU_CONF} line {driver.line}: '{driver.text}'. libvirt starts every QEMU unconfined, whatever "
            "SELinux or AppArmor do: a guest that escapes QEMU has the host.",
            f"Delete line {driver.line} of {QEMU_CONF} (the default picks the host's security module), then "
            "'systemctl restart libvirtd' (or virtqemud).", **ev)
    confined = conf.get("security_default_confined")
    if confined and confined.value.strip() == "0":
        ev["security_default_confined"] = f"{QEMU_CONF}:{confined.line}: {confined.text}"
        return Outcome.warned(
            "guests are unconfined by default (qemu.conf)",
            f"{QEMU_CONF} line {confined.line}: '{confined.text}': domains without an explicit <seclabel> run "
            "unconfined.", f"Delete line {confined.line} of {QEMU_CONF} and restart libvirtd (or virtqemud).", **ev)

    sel_cfg = parse_selinux_config(host.read_optional(SELINUX_CONFIG) or "").get("SELINUX")
    if sel_cfg:
        ev["selinux_config"] = f"{SELINUX_CONFIG}:{sel_cfg.line}: SELINUX={sel_cfg.value}"
    profiles = [p for p in AA_DAEMON_PROFILES if host.exists(f"{AA_DIR}/{p}")]
    guest_files = [p for p in AA_GUEST_FILES if host.exists(f"{AA_DIR}/{p}")]
    disabled = [p for p in profiles if host.node(f"{AA_DIR}/disable/{p}") is not None]
    # AppArmor itself is installed when its parser is: libvirt's packages ship their profiles into apparmor.d
    # whether or not AppArmor is there to load them (Debian's libvirt-daemon-system on a host without it).
    aa_installed = host.is_dir(AA_DIR) and any(host.exists(p) for p in AA_PARSERS)
    if profiles or guest_files:
        ev["apparmor_profiles"] = [f"{AA_DIR}/{p}" for p in profiles + guest_files]
    if disabled:
        ev["apparmor_disabled"] = [f"{AA_DIR}/disable/{p}" for p in disabled]

    def mismatch(lsm: str) -> Optional[Outcome]:
        if driver and names and lsm not in names:
            return Outcome.warned(
                f"qemu.conf's security_driver leaves out {lsm}",
                f"{QEMU_CONF} line {driver.line}: '{driver.text}', while the host's security module is {lsm}: "
                "libvirt refuses to start with a driver the host lacks, or runs guests without sVirt.",
                f"Delete line {driver.line} of {QEMU_CONF} (or set security_driver = \"{lsm}\"), then restart "
                "libvirtd (or virtqemud).", **ev)
        return None

    offline_note = "" if host.live else " Runtime state unknown (offline root): only the configuration was read."

    def apparmor_verdict(state: str) -> Outcome:
        if not profiles or not guest_files:
            return Outcome.warned(
                f"AppArmor {state}, but libvirt's AppArmor profiles are not installed",
                f"AppArmor {state}, but there is no {AA_DIR}/usr.sbin.libvirtd (or usr.sbin.virtqemud) with "
                "abstractions/libvirt-qemu, so guests get no profile and run unconfined: an escaped QEMU has the "
                "host." + offline_note, _fix(ctx), **ev)
        if disabled:
            links = [f"{AA_DIR}/disable/{p}" for p in disabled]
            return Outcome.warned(
                f"AppArmor {state}, but libvirt's AppArmor profile is disabled",
                f"{', '.join(links)} switches off {', '.join(disabled)} (aa-disable), so guests get no profile and "
                "run unconfined: an escaped QEMU has the host." + offline_note,
                f"Re-enable it: 'rm {' '.join(links)}' and 'aa-enforce "
                + " ".join(f"{AA_DIR}/{p}" for p in disabled) + "', then restart libvirtd (or virtqemud).", **ev)
        return mismatch("apparmor") or Outcome.passed(
            f"AppArmor {state} with libvirt's profiles ({', '.join(profiles)})",
            "libvirt's virt-aa-helper gives each guest its own profile (libvirt-UUID)." + offline_note, **ev)

    if not host.live:
        note = offline_note
        if sel_cfg and sel_cfg.value == "enforcing":
            return mismatch("selinux") or Outcome.passed(
                "SELinux configured enforcing", "libvirt labels each guest svirt_t with its own MCS category." + note,
                **ev)
        if aa_installed and profiles:
            return apparmor_verdict("configured")
        if sel_cfg and sel_cfg.value in ("permissive", "disabled"):
            return Outcome.warned(
                f"SELinux configured {sel_cfg.value}",
                f"{SELINUX_CONFIG} line {sel_cfg.line}: SELINUX={sel_cfg.value}: the host boots without SELinux "
                "enforcing, so guests are not confined: an escaped QEMU has the host." + note, _fix(ctx), **ev)
        if aa_installed:
            return apparmor_verdict("installed")
        if not host.exists("/etc/os-release") and not host.exists("/usr/lib/os-release") and conf_text is None:
            return Outcome.skipped("no SELinux or AppArmor configuration in this root",
                                   "Not an installed system tree (no os-release); runtime state unknown.", **ev)
        return Outcome.warned(
            "neither SELinux nor AppArmor is configured",
            f"No {SELINUX_CONFIG} with SELINUX=enforcing and no AppArmor in this root, so guests would run "
            "unconfined: an escaped QEMU has the host." + note, _fix(ctx), **ev)

    enforce = host.first_line(SELINUX_ENFORCE)
    aa_param = host.first_line(AA_PARAM)
    lsm = host.first_line("/sys/kernel/security/lsm")
    if lsm:
        ev["lsm"] = lsm
    ev["selinux_enforce"] = enforce
    ev["apparmor_enabled"] = aa_param
    if enforce == "1":
        if sel_cfg and sel_cfg.value != "enforcing":
            return Outcome.warned(
                f"SELinux enforcing now, but configured {sel_cfg.value}",
                f"{SELINUX_CONFIG} line {sel_cfg.line}: SELINUX={sel_cfg.value}: after the next boot guests are "
                "no longer confined.", f"Set SELINUX=enforcing in {SELINUX_CONFIG}.", **ev)
        return mismatch("selinux") or Outcome.passed(
            "SELinux enforcing", "libvirt labels each guest svirt_t with its own MCS category.", **ev)
    aa_active = aa_param in ("Y", "1") and (host.is_dir(AA_FS) or "apparmor" in (lsm or ""))
    if aa_active:
        try:
            loaded = host.read_optional(f"{AA_FS}/profiles")
        except OSError:
            loaded = None  # root only
        if loaded is not None:
            daemon = [line.strip() for line in loaded.splitlines()
                      if line.split(" (")[0].rsplit("/", 1)[-1] in ("libvirtd", "virtqemud")]
            ev["loaded_daemon_profiles"] = daemon
            complain = [d for d in daemon if d.endswith("(complain)")]
            if profiles and complain:
                return Outcome.warned(
                    "libvirt's AppArmor profile is in complain mode",
                    f"Loaded: {', '.join(complain)}: AppArmor logs but does not block, so guests are not confined.",
                    "'aa-enforce " + " ".join(f"{AA_DIR}/{p}" for p in profiles)
                    + "', then restart libvirtd (or virtqemud).", **ev)
        return apparmor_verdict("enabled")
    if enforce == "0":
        where = f" ({SELINUX_CONFIG} line {sel_cfg.line}: SELINUX={sel_cfg.value})" if sel_cfg else ""
        return Outcome.warned(
            "SELinux permissive: guests are not confined",
            f"SELinux is loaded but permissive{where}: it logs denials and blocks nothing, so sVirt labels do not "
            "confine QEMU: an escaped QEMU has the host.", _fix(ctx), **ev)
    extra = ""
    if sel_cfg and sel_cfg.value == "enforcing":
        extra = (f" {SELINUX_CONFIG} says SELINUX=enforcing, but SELinux is not active (selinux=0 on the kernel "
                 "command line, or a kernel without it).")
    elif aa_param in ("Y", "1"):
        extra = f" AppArmor is enabled in the kernel but {AA_FS} is absent (securityfs not mounted?)."
    return Outcome.warned(
        "no SELinux or AppArmor: guests are not confined",
        "Neither SELinux (no /sys/fs/selinux/enforce) nor AppArmor is active, so libvirt cannot confine QEMU "
        "processes: a guest that escapes QEMU has the host." + extra, _fix(ctx), **ev)
