# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel command line of the next boot, and its configuration: what the boot loader will boot by default
(GRUB's grub.cfg with grubenv and BLS entries, or systemd-boot), what /etc/default/grub or /etc/kernel/cmdline
asks for, and how both differ from /proc/cmdline in the parameters kvmcheck judges (issue 20)."""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Readout, fact, read
from kvmcheck.facts import system as _system  # noqa: F401 - cmdline and distro_family, named below
from kvmcheck.parsers.bootloader import (ArgChange, BlsEntry, Choice, ShellAssignments, cmdline_of, describe,
                                         differences, grub_default_args, grub_next_boot, parse_bls_entry,
                                         parse_grub_cfg, parse_grubenv, parse_loader_conf, parse_shell_assignments,
                                         systemd_boot_next, tracked)
from kvmcheck.parsers.cmdline import KernelCmdline, parse_cmdline

# grub.cfg where grub-mkconfig writes it: /boot/grub2 on the RHEL family and SUSE, /boot/grub on Debian, Ubuntu
# and Arch; on the EFI system partition on RHEL <= 8 and Fedora <= 33 booted by UEFI (on Ubuntu and on RHEL >= 9
# the file there is a stub that loads /boot/grub[2]/grub.cfg).
GRUB_CFGS = ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")
EFI_GRUB_CFGS = "/boot/efi/EFI/*/grub.cfg"
GRUBENVS = ("/boot/grub2/grubenv", "/boot/grub/grubenv")  # RHEL 8 UEFI: a link to the EFI partition's
BLS_DIR = "/boot/loader/entries"  # GRUB's blscfg reads /loader/entries of the /boot file system
# systemd-boot's loader.conf is on the EFI system partition, mounted at /efi, /boot/efi or /boot; its entries
# are there and on the extended boot loader partition (XBOOTLDR, mounted at /boot).
LOADER_CONFS = ("/efi/loader/loader.conf", "/boot/efi/loader/loader.conf", "/boot/loader/loader.conf")
DEFAULT_GRUB = "/etc/default/grub"
DEFAULT_GRUB_D = "/etc/default/grub.d"  # Debian and Ubuntu only (a Debian patch to grub-mkconfig)
KERNEL_CMDLINE = "/etc/kernel/cmdline"  # kernel-install's command line for the entries and UKIs it builds
EFI_FIRMWARE = "/sys/firmware/efi"  # present when the running system was booted by UEFI

# The directories on the way: a path looked up in a root without them stops there (and the lookup is a read).
BOOT_READS = ("/boot", "/boot/grub", "/boot/grub2", "/boot/efi", "/boot/loader", "/efi", "/efi/loader",
              "/boot/efi/loader") + GRUB_CFGS + GRUBENVS + (
    "/boot/efi/EFI", EFI_GRUB_CFGS, "/boot/efi/EFI/*/grubenv", BLS_DIR, f"{BLS_DIR}/*.conf", EFI_FIRMWARE,
) + LOADER_CONFS + ("/efi/loader/entries", "/efi/loader/entries/*.conf", "/boot/efi/loader/entries",
                    "/boot/efi/loader/entries/*.conf")
CONFIG_READS = ("/etc/default", "/etc/kernel", DEFAULT_GRUB, DEFAULT_GRUB_D, f"{DEFAULT_GRUB_D}/*.cfg", KERNEL_CMDLINE)

# What regenerates grub.cfg from /etc/default/grub, by distribution family ({cfg}: the grub.cfg in use).
GRUB_MKCONFIG = {"debian": "update-grub", "ubuntu": "update-grub", "rhel": "grub2-mkconfig -o {cfg}",
                 "suse": "grub2-mkconfig -o {cfg}", "arch": "grub-mkconfig -o {cfg}"}
GRUB_VARIABLES = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
PENDING = "configured, not yet in effect: "


class NextBoot(Record):
    """The kernel command line the boot loader will use next: cmdline None when it cannot be known (why)."""

    loader: str  # "grub", "grub-bls" (GRUB reading BLS entries), "systemd-boot", or "" (none found)
    config: str  # the grub.cfg or loader.conf it was read from
    cmdline: Optional[KernelCmdline]
    source: str  # where the arguments come from, in words ("/boot/grub/grub.cfg's default entry")
    why: str = ""
    choice: Optional[Choice] = None
    blocked: bool = False  # unknown because a file was unreadable (not because there is no boot loader)


class BootConfig(Record):
    """What the boot loader's configuration asks for (grub-mkconfig's inputs, kernel-install's)."""

    grub: Optional[ShellAssignments]  # /etc/default/grub (+ grub.d/*.cfg); None without /etc/default/grub
    kernel_cmdline: Optional[str]  # /etc/kernel/cmdline
    unreadable: Tuple[str, ...] = ()


class BootCmdline(Record):
    """/proc/cmdline, the next boot's command line and the configuration's, compared in the judged parameters."""

    next_boot: NextBoot
    running: Optional[KernelCmdline]
    reboot: Tuple[ArgChange, ...]  # /proc/cmdline (before) against the next boot (after)
    regenerate: Tuple[ArgChange, ...]  # the next boot (before) against the configuration (after)
    configured_in: str  # where the configuration compared is ("GRUB_CMDLINE_LINUX in /etc/default/grub")
    command: str  # what turns the configuration into the boot loader's ("update-grub"; "grubby": its edit is
    # made from the changes pending() reports)
    where: Tuple[Tuple[str, str], ...] = ()  # (key, the variable and file that configure it), when one does

    def pending(self, keys: Iterable[str]) -> Optional[Tuple[str, str]]:
        """(PENDING_KINDS step, note) when a parameter under keys (tracked_key's: "intel_iommu",
        "hugepages", "kvm_intel." for all of a module's) is configured but not yet in effect; else None."""
        keys = tuple(keys)
        regen = [c for c in self.regenerate if c.concerns(keys)]
        boot = [c for c in self.reboot if c.concerns(keys)]
        words = [describe(boot, "/proc/cmdline", self.next_boot.source)] if boot else []
        if regen:
            where = dict(self.where)
            places = list(dict.fromkeys(where.get(c.key, self.configured_in) for c in regen))
            said = [describe([c for c in regen if where.get(c.key, self.configured_in) == place],
                             self.next_boot.source, place) for place in places]
            unknown = "" if self.next_boot.cmdline is not None else f" ({self.next_boot.why})"
            command = _grubby(regen) if self.command == "grubby" else self.command
            return ("regenerate-bootloader",
                    PENDING + "; ".join(said + words) + f"{unknown}: run {command}, then reboot")
        if boot:
            return "reboot", PENDING + words[0] + ": reboot"
        return None


def _text(host, path: str, unreadable: List[str], limit: int = 1 << 20) -> Optional[str]:
    found: Readout = read(host, path, limit=limit)
    if found.state not in ("ok", "absent"):
        unreadable.append(f"{path}: {found.reason}")
    return found.text if found.ok else None


def _listing(host, directory: str, unreadable: List[str]) -> List[str]:
    try:
        return host.listdir(directory)
    except OSError as exc:  # a directory this user may not list (RHEL: /boot/loader/entries is 0700)
        unreadable.append(f"{directory}: {exc.strerror or exc}")
        return []


def _bls_entries(host, directory: str, unreadable: List[str]) -> List[BlsEntry]:
    entries = []
    for name in _listing(host, directory, unreadable):
        if name.endswith(".conf"):
            text = _text(host, f"{directory}/{name}", unreadable, limit=65536)
            if text is not None:
                entries.append(parse_bls_entry(name, text))
    return entries


def _unknown(loader: str, config: str, why: str, unreadable: List[str]) -> NextBoot:
    if unreadable:
        why = f"{why}: {'; '.join(unreadable)}"
    return NextBoot(loader, config, None, "", why, None, bool(unreadable))


def _systemd_boot(host, conf_path: str, conf: str, unreadable: List[str]) -> NextBoot:
    esp = conf_path.rsplit("/loader/", 1)[0]
    dirs = list(dict.fromkeys([f"{esp}/loader/entries", BLS_DIR]))
    entries = {e.id: e for d in dirs for e in _bls_entries(host, d, unreadable)}  # the ESP's first
    choice = systemd_boot_next(parse_loader_conf(conf), list(entries.values()))
    if choice.args is None:
        return _unknown("systemd-boot", conf_path, choice.why, unreadable)
    where = next((d for d in dirs if host.exists(f"{d}/{choice.bls_id}.conf")), dirs[0])
    return NextBoot("systemd-boot", conf_path, cmdline_of(choice.args),
                    f"{where}/{choice.bls_id}.conf (systemd-boot's default entry)", "", choice)


def _grub_cfg(host, unreadable: List[str]) -> Tuple[str, Optional[str]]:
    """The grub.cfg GRUB reads: the first real one (stubs that only load another are passed over), those on
    the EFI partition first when the running system was booted by UEFI."""
    try:
        efi = host.glob(EFI_GRUB_CFGS)
    except OSError as exc:  # the EFI partition is mounted umask=0077 on the RHEL family: root only
        unreadable.append(f"{EFI_GRUB_CFGS}: {exc.strerror or exc}")
        efi = []
    order = efi + list(GRUB_CFGS) if host.exists(EFI_FIRMWARE) else list(GRUB_CFGS) + efi
    for path in order:
        text = _text(host, path, unreadable)
        if text is not None and not parse_grub_cfg(text).stub:
            return path, text
    return "", None


def _grub(host, cfg_path: str, text: str, unreadable: List[str]) -> NextBoot:
    cfg = parse_grub_cfg(text)
    bls_used = any(i.kind == "blscfg" for i in cfg.items)
    loader = "grub-bls" if bls_used else "grub"
    env_path = next((p for p in (cfg_path.rsplit("/", 1)[0] + "/grubenv",) + GRUBENVS if host.exists(p)), "")
    env_read = read(host, env_path, limit=65536) if env_path else Readout("", "absent")
    if env_read.state not in ("ok", "absent"):
        # saved_entry and kernelopts live there (RHEL: mode 0600): without it the default and the options
        # would be guesses.
        return _unknown(loader, cfg_path, "grubenv is unreadable", unreadable + [f"{env_path}: {env_read.reason}"])
    env = parse_grubenv(env_read.text or "")
    bls = _bls_entries(host, BLS_DIR, unreadable) if bls_used else []
    choice = grub_next_boot(cfg, env, bls)
    if choice.args is None:
        return _unknown(loader, cfg_path, choice.why, unreadable)
    if choice.bls_id:
        entry = f"{BLS_DIR}/{choice.bls_id}.conf"
        source = (f"kernelopts in {env_path} (the options of {entry}, GRUB's default entry)"
                  if "kernelopts" in choice.from_env else f"{entry} (GRUB's default entry)")
    else:
        source = f"{cfg_path}'s default entry"
    return NextBoot(loader, cfg_path, cmdline_of(choice.args), source, "", choice)


@fact(reads=BOOT_READS)
def next_boot(host) -> NextBoot:
    """The kernel command line the boot loader will use at the next boot.  systemd-boot when a loader.conf
    exists (a host that moved from GRUB keeps its old grub.cfg), else GRUB."""
    unreadable: List[str] = []
    for path in LOADER_CONFS:
        conf = _text(host, path, unreadable, limit=65536)
        if conf is not None:
            return _systemd_boot(host, path, conf, unreadable)
    cfg_path, text = _grub_cfg(host, unreadable)
    if text is None:
        why = ("the boot loader's configuration is unreadable" if unreadable else
               "no boot loader configuration in this root (grub.cfg, loader.conf)")
        return _unknown("", "", why, unreadable)
    return _grub(host, cfg_path, text, unreadable)


@fact(reads=CONFIG_READS)
def boot_config(host) -> BootConfig:
    """/etc/default/grub with Debian's /etc/default/grub.d/*.cfg after it (sourced in that order by
    grub-mkconfig), read as assignments without a shell, and /etc/kernel/cmdline."""
    unreadable: List[str] = []
    main = _text(host, DEFAULT_GRUB, unreadable)
    grub = None
    if main is not None:
        files = [(DEFAULT_GRUB, main)]
        for name in _listing(host, DEFAULT_GRUB_D, unreadable):
            if name.endswith(".cfg"):
                text = _text(host, f"{DEFAULT_GRUB_D}/{name}", unreadable)
                if text is not None:
                    files.append((f"{DEFAULT_GRUB_D}/{name}", text))
        grub = parse_shell_assignments(files)
    kernel = _text(host, KERNEL_CMDLINE, unreadable, limit=65536)
    return BootConfig(grub, kernel, tuple(unreadable))


def _grubby(changes: Tuple[ArgChange, ...]) -> str:
    """grubby's edit for the BLS entries: --args adds or replaces a value, --remove-args drops a parameter."""
    add = [w for c in changes for w in c.after if w not in c.before]
    names_after = {w.split("=", 1)[0] for c in changes for w in c.after}
    remove = [w.split("=", 1)[0] for c in changes for w in c.before if w.split("=", 1)[0] not in names_after]
    parts = ["grubby --update-kernel=ALL"] + ([f"--args='{' '.join(add)}'"] if add else []) + (
        [f"--remove-args='{' '.join(remove)}'"] if remove else [])
    return " ".join(parts)


def _grub_where(grub: ShellAssignments) -> str:
    names = [n for n in GRUB_VARIABLES if n in grub.values] or ["GRUB_CMDLINE_LINUX"]
    files = list(dict.fromkeys(grub.where.get(n, DEFAULT_GRUB) for n in names))
    return f"{' or '.join(names)} ({', '.join(files)})"


def _grub_keys(grub: ShellAssignments) -> Tuple[Tuple[str, str], ...]:
    """(key, "GRUB_CMDLINE_LINUX_DEFAULT in FILE") for each judged parameter, by the variable that has it."""
    out = {}
    for name in GRUB_VARIABLES:
        for key in tracked(parse_cmdline(grub.values.get(name, ""))):
            out.setdefault(key, f"{name} in {grub.where.get(name, DEFAULT_GRUB)}")
    return tuple(out.items())


def _configured(boot: NextBoot, config: BootConfig, family: Optional[str]) -> Tuple[Optional[KernelCmdline], str,
                                                                                         str]:
    """The command line the configuration asks for, where it is, and what makes the boot loader use it."""
    if boot.loader in ("grub", "grub-bls", "") and config.grub is not None:
        if boot.loader == "grub-bls" or (not boot.loader and family == "rhel"):
            command = "grubby"  # the arguments are filled in by _command
        else:
            cfg = boot.config or "/boot/grub2/grub.cfg"
            command = GRUB_MKCONFIG.get(family or "", "update-grub (Debian/Ubuntu) or grub2-mkconfig -o {cfg}")
            command = command.format(cfg=cfg)
        return grub_default_args(config.grub), _grub_where(config.grub), command
    if boot.loader == "systemd-boot" and config.kernel_cmdline is not None:
        return (parse_cmdline(config.kernel_cmdline), KERNEL_CMDLINE,
                "'kernel-install add VERSION KERNEL' for the installed kernels (reinstalling the kernel package "
                "does it)")
    return None, "", ""


@fact()
def boot_cmdline(cmdline, next_boot, boot_config, distro_family) -> BootCmdline:
    """The judged parameters (intel_iommu, amd_iommu, iommu, mitigations, hugepages, kvm*.*) that differ
    between /proc/cmdline and the next boot (pending a reboot), and between the next boot and the boot
    loader's configuration (pending its regeneration).  With the next boot unknown because a file is
    unreadable (RHEL keeps grub.cfg and grubenv 0600), the configuration is compared with /proc/cmdline:
    regenerating is then the first step that may be due.  With no boot loader at all (a container shares
    its host's /proc/cmdline) nothing is compared."""
    configured, where, command = _configured(next_boot, boot_config, distro_family)
    generated = next_boot.cmdline
    reboot = differences(cmdline, generated) if cmdline is not None and generated is not None else ()
    regenerate: Tuple[ArgChange, ...] = ()
    special = next_boot.choice is not None and next_boot.choice.special
    if configured is not None and not special and (generated is not None or next_boot.blocked):
        base = generated if generated is not None else cmdline
        regenerate = differences(base, configured) if base is not None else ()
    if generated is None and regenerate:
        next_boot = next_boot._replace(source="/proc/cmdline")  # what the configuration was compared with
    keys = _grub_keys(boot_config.grub) if boot_config.grub is not None and "GRUB" in where else ()
    return BootCmdline(next_boot, cmdline, reboot, regenerate, where, command, keys)
