# SPDX-License-Identifier: GPL-2.0-or-later
"""Security modules as the root shows them: libvirt's qemu.conf security settings, SELinux's configuration,
AppArmor's files (libvirt's profiles, the parser), and on a live root the running state in sysfs."""
from __future__ import annotations

from typing import Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Readout, fact, read
from kvmcheck.parsers.security_conf import Setting, parse_libvirt_conf, parse_selinux_config

QEMU_CONF = "/etc/libvirt/qemu.conf"
SELINUX_CONFIG = "/etc/selinux/config"
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"
AA_PARAM = "/sys/module/apparmor/parameters/enabled"
AA_FS = "/sys/kernel/security/apparmor"
LSM = "/sys/kernel/security/lsm"
AA_DIR = "/etc/apparmor.d"
# libvirt's AppArmor files: the daemon profile (monolithic or modular), the guest abstraction, the template.
AA_DAEMON_PROFILES = ("usr.sbin.libvirtd", "usr.sbin.virtqemud")
AA_GUEST_FILES = ("abstractions/libvirt-qemu", "libvirt/TEMPLATE.qemu")
AA_PARSERS = ("/sbin/apparmor_parser", "/usr/sbin/apparmor_parser", "/usr/lib/apparmor", "/lib/apparmor")
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


class QemuConf(Record):
    """What /etc/libvirt/qemu.conf sets about sVirt (the last assignment of each key)."""

    present: bool  # False: no qemu.conf (libvirt's QEMU driver not installed)
    driver: Optional[Setting]  # security_driver
    confined: Optional[Setting]  # security_default_confined


class AppArmorFiles(Record):
    """AppArmor's files in /etc: libvirt's profiles, the ones aa-disable switched off, the parser."""

    daemon_profiles: Tuple[str, ...]  # of AA_DAEMON_PROFILES, those in /etc/apparmor.d
    guest_files: Tuple[str, ...]  # of AA_GUEST_FILES, those in /etc/apparmor.d
    disabled: Tuple[str, ...]  # daemon profiles linked from /etc/apparmor.d/disable
    installed: bool  # /etc/apparmor.d and apparmor_parser: libvirt ships its profiles even without AppArmor


class LsmRuntime(Record):
    """The running security modules (None on an offline root: its kernel is not running)."""

    selinux_enforce: Optional[Readout]
    apparmor_enabled: Optional[Readout]
    lsm: Optional[Readout]
    apparmor_fs: Optional[bool]  # AA_FS is a directory; asked only when the apparmor module is enabled
    loaded_profiles: Optional[Readout]  # AA_FS/profiles (root only); asked only when AppArmor is active


def first_line(found: Optional[Readout]) -> Optional[str]:
    """The stripped first line of a sysfs-style file that was read; None otherwise."""
    return found.text.split("\n", 1)[0].strip() if found is not None and found.ok and found.text is not None else None


@fact(reads=(QEMU_CONF,))
def qemu_conf(host) -> QemuConf:
    """OSError propagates: qemu.conf is 0600 on Debian and Fedora, and the runner names it for a user."""
    text = host.read_optional(QEMU_CONF)
    conf = parse_libvirt_conf(text or "", ("security_driver", "security_default_confined"))
    return QemuConf(text is not None, conf.get("security_driver"), conf.get("security_default_confined"))


@fact(reads=(SELINUX_CONFIG,))
def selinux_config(host) -> Optional[Setting]:
    """SELINUX= of /etc/selinux/config; None when it has none.  OSError propagates (the file is 0644:
    a denied read is a damaged or hostile root, and the runner names the file)."""
    return parse_selinux_config(host.read_optional(SELINUX_CONFIG) or "").get("SELINUX")


@fact(reads=(AA_DIR,) + tuple(f"{AA_DIR}/{p}" for p in AA_DAEMON_PROFILES) + (
    f"{AA_DIR}/abstractions/libvirt-qemu", f"{AA_DIR}/libvirt/*", f"{AA_DIR}/disable", f"{AA_DIR}/disable/*")
    + AA_PARSERS)
def apparmor_files(host) -> AppArmorFiles:
    """OSError propagates (a directory above that cannot be searched: the runner names it)."""
    profiles = tuple(p for p in AA_DAEMON_PROFILES if host.exists(f"{AA_DIR}/{p}"))
    guest_files = tuple(p for p in AA_GUEST_FILES if host.exists(f"{AA_DIR}/{p}"))
    disabled = tuple(p for p in profiles if host.node(f"{AA_DIR}/disable/{p}") is not None)
    installed = host.is_dir(AA_DIR) and any(host.exists(p) for p in AA_PARSERS)
    return AppArmorFiles(profiles, guest_files, disabled, installed)


@fact(reads=(SELINUX_ENFORCE, AA_PARAM, LSM, AA_FS, f"{AA_FS}/profiles"))
def lsm_runtime(host) -> LsmRuntime:
    """Read on a live root only.  The sysfs files keep why they were not read; whether AA_FS is a directory
    lets an OSError propagate (the runner names it)."""
    if not host.live:
        return LsmRuntime(None, None, None, None, None)
    enforce, param, lsm = read(host, SELINUX_ENFORCE, 4096), read(host, AA_PARAM, 4096), read(host, LSM, 4096)
    aa_fs = loaded = None
    if first_line(param) in ("Y", "1"):
        aa_fs = host.is_dir(AA_FS)
        if aa_fs or "apparmor" in (first_line(lsm) or ""):
            loaded = read(host, f"{AA_FS}/profiles")
    return LsmRuntime(enforce, param, lsm, aa_fs, loaded)


@fact(reads=OS_RELEASE)
def has_os_release(host) -> bool:
    """Whether the root is an installed system tree (os-release(5) in /etc or /usr/lib)."""
    return any(host.exists(p) for p in OS_RELEASE)
