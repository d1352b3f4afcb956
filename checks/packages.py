# SPDX-License-Identifier: GPL-2.0-or-later
"""Package sources and the installed KVM stack (QEMU, libvirt, virt-install, guest firmware)."""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts import packages  # noqa: F401 - the facts judged here
from kvmcheck.facts.packages import KvmStack, PackageSources
from kvmcheck.parsers.repos import Source

UEFI = ("ovmf", "edk2-ovmf", "OVMF", "qemu-ovmf-x86_64")
SEABIOS_ONLY = "Only SeaBIOS is installed: UEFI guests (Windows 11, Secure Boot) need OVMF as well."
SOURCE_FIXES = "Add and enable the repositories the configuration names (a .repo file in /etc/yum.repos.d, an apt " \
    "source in /etc/apt/sources.list.d, or 'zypper addrepo'), then refresh the package metadata."
UNREACHABLE_FIX = "Check the network path to these mirrors (DNS, proxy, firewall) or point the sources at a " \
    "reachable mirror."
# What "no usable source" blocks, by whether the KVM packages are installed (True, False, None: unknown).
INSTALLED_STATE = {True: "the KVM packages are already installed, so nothing is blocked now, but they get no updates",
                   False: "the KVM packages cannot be installed from here",
                   None: "kvmcheck could not tell whether the KVM packages are installed"}


def _install_command(kind: str, info: Dict[str, str], names: Sequence[str]) -> str:
    pkgs = " ".join(names)
    if kind == "deb":
        return f"apt-get update && apt-get install {pkgs}"
    if kind == "suse":
        return f"zypper install {pkgs}"
    major = (info.get("version") or "").split(".", 1)[0]
    if major.isdigit() and int(major) < 8 and info.get("id") != "fedora":
        return f"yum install {pkgs}".replace("edk2-ovmf", "OVMF")
    return f"dnf install {pkgs}"


def _no_source_fix(arch: Optional[str], managers: Sequence[str], sources: Sequence[Source],
                   info: Dict[str, str]) -> str:
    """The exact commands that enable the distribution's sources, by package manager."""
    fixes = []
    if "dnf" in managers:
        disabled = [s.id for s in sources if s.manager == "dnf" and not s.enabled]
        core = [d for d in disabled if re.search(r"(baseos|appstream)(-rpms)?$", d.lower())
                or d.lower() in ("base", "updates", "fedora", "extras")]
        rhsm = [s for s in sources if s.file.endswith("/redhat.repo")]
        if rhsm and core:
            fixes.append("subscription-manager repos " + " ".join(f"--enable {d}" for d in core))
        elif rhsm or info.get("id") == "rhel":
            major = (info.get("version") or "9").split(".", 1)[0]
            arch = arch or "$(arch)"
            fixes.append(f"Register the system ('subscription-manager register'), then 'subscription-manager repos "
                         f"--enable rhel-{major}-for-{arch}-baseos-rpms "
                         f"--enable rhel-{major}-for-{arch}-appstream-rpms'.")
        elif core:
            fixes.append("dnf config-manager --set-enabled " + " ".join(core) + " (or set enabled=1 in the .repo file)")
        else:
            fixes.append("Add the distribution repositories to /etc/yum.repos.d (they ship in the "
                         "*-repos / *-release package: 'rpm -q --whatprovides system-release').")
    if "apt" in managers:
        disabled = [s for s in sources if s.manager == "apt" and not s.enabled]
        where = sorted({s.file for s in disabled})
        how = " or ".join(h for h, fmt in (("uncomment the entries", "one-line"), ("set 'Enabled: yes'", "deb822"))
                          if any(d.format == fmt for d in disabled))
        fixes.append((how[0].upper() + how[1:] + " in " + ", ".join(where) if where else
                      "Add the distribution archive, for example /etc/apt/sources.list.d/debian.sources with "
                      "'Types: deb', 'URIs: http://deb.debian.org/debian', 'Suites: bookworm bookworm-updates', "
                      "'Components: main'")
                     + ", then 'apt-get update'.")
    if "zypper" in managers:
        disabled = [s.id for s in sources if s.manager == "zypper" and not s.enabled]
        disabled = [d for d in disabled if not re.search(r"debug|source", d.lower())] or disabled
        fixes.append(("'zypper modifyrepo -e " + " ".join(disabled) + "'" if disabled else
                      "'zypper addrepo' the distribution's repo-oss and update repositories")
                     + ", then 'zypper refresh'.")
    return " ".join(fixes)


def _appstream_off(sources: Sequence[Source]) -> List[Source]:
    """RHEL-family AppStream repositories that exist but are all disabled (qemu-kvm and libvirt live there)."""
    app = [s for s in sources if s.manager == "dnf" and "appstream" in s.id.lower()
           and "source" not in s.id.lower() and "debug" not in s.id.lower()]
    return app if app and not any(s.usable for s in app) else []


def _required_absent(wanted: Sequence[str], usable: Sequence[Source]) -> List[str]:
    """The configuration's [require] repos (an id, a name or part of a URL) no enabled source matches."""
    return [w for w in wanted if not any(w in (s.id, s.name) or any(w in u for u in s.urls) for s in usable)]


def _required_missing(wanted: Sequence[str], absent: List[str], found: PackageSources,
                      usable: Sequence[Source]) -> Outcome:
    return Outcome.failed(
        f"required package source(s) not enabled: {', '.join(absent)}",
        f"The configuration requires enabled sources matching {', '.join(wanted)} ([require] repos: a repository "
        "id, its name or part of its URL). Enabled: " + (", ".join(s.label for s in usable) or "none") + ".",
        SOURCE_FIXES, managers=list(found.managers), sources=[s.to_evidence() for s in found.sources],
        required=list(wanted), missing=absent)


def _broken_text(broken: Sequence[Source]) -> str:
    return "".join(f" {s.file}:{s.line} {s.label}: {'; '.join(s.problems)}." for s in broken)


def _sources_evidence(found: PackageSources, usable: Sequence[Source], installed: Optional[bool]) -> dict:
    evidence: Dict[str, object] = {"managers": list(found.managers),
                                   "sources": [s.to_evidence() for s in found.sources], "enabled": len(usable),
                                   "kvm_packages_installed": installed}
    if found.unreadable:
        evidence["unreadable"] = list(found.unreadable)
    return evidence


def _none_usable(found: PackageSources, installed: Optional[bool], fix: str, evidence: dict) -> Outcome:
    """No enabled source can deliver anything: a failure unless the KVM packages are installed already."""
    if found.unreadable:
        return Outcome.skipped(f"cannot read {found.unreadable[0]}", "; ".join(found.unreadable), **evidence)
    broken = [s for s in found.sources if s.enabled and s.problems]
    disabled = [s for s in found.sources if not s.enabled]
    what = (f"{len(disabled)} source(s) configured, all disabled" if disabled and not broken else
            "no package source configured" if not found.sources else "no usable package source")
    detail = f"{what.capitalize()} for {', '.join(found.managers)}: {INSTALLED_STATE[installed]}.{_broken_text(broken)}"
    if installed:
        return Outcome.warned(f"{what}; KVM packages already installed", detail, fix, **evidence)
    return Outcome.failed(what, detail, fix, **evidence)


def _appstream_problem(sources: Sequence[Source]) -> Optional[tuple]:
    """(short, problem, fix) when AppStream is disabled, else None."""
    app_off = _appstream_off(sources)
    if not app_off:
        return None
    ids = ", ".join(s.id for s in app_off)
    rhsm = any(s.file.endswith("/redhat.repo") for s in app_off)
    return ("AppStream is disabled",
            f"AppStream is disabled ({ids}): qemu-kvm and libvirt are in AppStream, not BaseOS.",
            "dnf config-manager --set-enabled " + " ".join(s.id for s in app_off)
            + (" (on RHEL: subscription-manager repos --enable " + app_off[0].id + ")" if rhsm else ""))


def _unreachable(usable: Sequence[Source], probes: Dict[int, Dict[str, object]], evidence: dict) -> Optional[tuple]:
    """The probes put into each source's evidence; (short, problem, all down) when some source is down."""
    for i, src in enumerate(usable):
        ev = next(e for e in evidence["sources"] if e["file"] == src.file and e["line"] == src.line)
        ev["probe"] = probes[i]
    evidence["online"] = True
    down = [usable[i] for i, p in probes.items() if p["reachable"] is False]
    if not down:
        return None
    names = "; ".join(f"{s.label} ({', '.join(str(p['result']) for p in probes[usable.index(s)]['probes'])})"
                      for s in down)
    all_down = len(down) == len([p for p in probes.values() if p["reachable"] is not None])
    return f"{len(down)} unreachable: " + ", ".join(s.label for s in down), f"Unreachable: {names}.", all_down


def _shown(usable: Sequence[Source]) -> str:
    labels = [s.label for s in usable]
    return ", ".join(labels[:4]) + (f" and {len(labels) - 4} more" if len(labels) > 4 else "")


def _findings(sources: Sequence[Source], usable: Sequence[Source], installed: Optional[bool], probes,
              evidence: dict) -> tuple:  # type: ignore[no-untyped-def]
    """([(short, problem, fix)] of what is wrong with the enabled sources, whether it blocks installing)."""
    broken = [s for s in sources if s.enabled and s.problems]
    found = [_appstream_problem(sources)]
    if broken:
        found.append((f"{len(broken)} enabled entr{'y is' if len(broken) == 1 else 'ies are'} ignored",
                      "Ignored by the package manager:" + _broken_text(broken),
                      "Correct or remove the entries listed."))
    down = _unreachable(usable, probes.get(), evidence) if probes is not None else None
    if down:
        found.append((down[0], down[1], UNREACHABLE_FIX))
    failing = installed is False and (bool(_appstream_off(sources)) or bool(down and down[2]))
    return [f for f in found if f], failing


@check("repos.configured", "Package sources for the KVM stack")
def repos_configured(package_sources, kvm_stack_later, package_tooling, arch, source_probes,
                     settings) -> Outcome:
    """An enabled package source can deliver QEMU, libvirt and friends.

    What: the sources of apt (sources.list and sources.list.d: one-line
    *.list, deb822 *.sources, 'Enabled: no' and commented lines honoured),
    dnf/yum (/etc/yum.repos.d/*.repo: enabled defaults to 1; baseurl,
    mirrorlist or metalink needed) and zypper (/etc/zypp/repos.d).  No
    enabled source fails while the KVM packages are missing and warns once
    they are installed (no updates).  A disabled RHEL AppStream is named
    (qemu-kvm and libvirt come from it).  --online probes each enabled
    source's metadata URL, in parallel, within a few seconds.

    Why: installing and updating QEMU, libvirt and guest firmware needs a
    working repository; an unregistered RHEL or commented-out sources cannot.

    Fix: enable the distribution repositories: 'subscription-manager repos
    --enable ...-appstream-rpms' or 'dnf config-manager --set-enabled
    appstream' (RHEL family), 'Enabled: yes' or an uncommented apt line
    (Debian, Ubuntu), 'zypper modifyrepo -e ALIAS' (SUSE).
    """
    found: PackageSources = package_sources
    if not found.has_etc:
        return Outcome.skipped("no /etc in this root: not an installed system")
    if not found.managers:
        return Outcome.skipped("no apt, dnf/yum or zypper configuration in /etc",
                               "Package sources are checked for apt, dnf/yum and zypper only.")
    sources = list(found.sources)
    usable = [s for s in sources if s.usable]
    absent = _required_absent(settings.required_repos, usable)
    if absent:
        return _required_missing(settings.required_repos, absent, found, usable)
    stack = kvm_stack_later.get()
    installed = None if stack is None else not stack.missing
    evidence = _sources_evidence(found, usable, installed)
    if not usable:
        return _none_usable(found, installed, _no_source_fix(arch.name, found.managers, sources, package_tooling.info),
                            evidence)
    findings, failing = _findings(sources, usable, installed, source_probes if settings.online else None, evidence)
    shown = _shown(usable)
    if not findings:
        return Outcome.passed(f"{len(usable)} enabled source(s): {shown}",
                              "Reachable online." if settings.online else "", **evidence)
    summary = f"{len(usable)} enabled source(s), but " + " and ".join(f[0] for f in findings)
    return (Outcome.failed if failing else Outcome.warned)(
        summary, f"Enabled: {shown}. " + " ".join(f[1] for f in findings), " ".join(f[2] for f in findings),
        **evidence)


def _listing(stack: KvmStack) -> str:
    """'QEMU/KVM: qemu-kvm 8.2; libvirt daemon: ...': each installed component and its packages."""
    return "; ".join(f"{comp}: " + ", ".join(f"{n} {v}".strip() for n, v in have.items())
                     for comp, have in stack.found.items())


def _required_packages_missing(required: Sequence[str], absent: List[str], listing: str, cmd: str,
                               evidence: dict) -> Outcome:
    return Outcome.failed(
        f"required package(s) not installed: {', '.join(absent)}",
        f"The configuration requires {', '.join(required)} ([require] packages). "
        + (f"Installed: {listing}." if listing else "None of the KVM stack is installed."),
        f"Install them: '{cmd}'.", **evidence)


@check("packages.virt", "KVM packages installed")
def packages_virt(system_dirs, installed_packages, kvm_stack, settings) -> Outcome:
    """QEMU/KVM, the libvirt daemon, virt-install and guest firmware are installed.

    What: the root's package database (/var/lib/dpkg/status, packages
    "install ok installed"; rpm: 'rpm -qa' on the running system, an offline
    root's sqlite database read without running rpm) holds each part: QEMU
    (qemu-kvm or this architecture's qemu-system-*), a libvirt daemon,
    virt-install (virtinst on Debian/Ubuntu) and guest firmware (OVMF/edk2
    or SeaBIOS on x86, edk2/AAVMF on arm64; s390x and POWER firmware ships
    with QEMU).  Missing packages before installation warn, with the command.

    Why: /dev/kvm alone runs nothing: QEMU is the VM, libvirt manages it,
    virt-install creates guests, UEFI guests (Windows 11, Secure Boot) need OVMF.

    Fix: the command shown for your distribution, for example
    'apt-get install qemu-system-x86 libvirt-daemon-system virtinst ovmf'
    or 'dnf install qemu-kvm libvirt-daemon-kvm virt-install edk2-ovmf'.
    """
    db = installed_packages
    if not system_dirs.etc and not system_dirs.var_lib:
        return Outcome.skipped("no /etc or /var/lib in this root: not an installed system")
    if db.packages is None:
        return Outcome.skipped(db.reason, db.reason, database=db.db, source=db.source)
    stack: KvmStack = kvm_stack
    evidence = {"database": db.db, "source": db.source,
                "installed": {comp: dict(v) for comp, v in stack.found.items()},
                "missing": [comp for comp, _ in stack.missing]}
    listing = _listing(stack)
    suggested = [s for _, s in stack.missing]
    if settings.required_packages:  # the configuration's [require] packages
        evidence.update(required={p: db.packages.get(p) for p in settings.required_packages})
    absent = [p for p in settings.required_packages if p not in db.packages]
    if absent:
        return _required_packages_missing(settings.required_packages, absent, listing,
                                          _install_command(stack.kind, stack.info, absent + suggested), evidence)
    if stack.missing:
        evidence["install_command"] = cmd = _install_command(stack.kind, stack.info, suggested)
        return Outcome.warned(
            "not installed: " + ", ".join(f"{comp} ({s})" for comp, s in stack.missing),
            (f"Installed: {listing}. " if listing else "None of the KVM stack is installed yet. ")
            + "This is expected before the virtualization packages are installed.",
            f"Install them: '{cmd}'.", **evidence)
    seabios_only = not any(n in UEFI for n in stack.found.get("guest firmware", {"ovmf": ""}))
    return Outcome.passed(f"installed: {listing}", SEABIOS_ONLY if seabios_only else "", **evidence)
