# SPDX-License-Identifier: GPL-2.0-or-later
"""Package sources and the installed KVM stack (QEMU, libvirt, virt-install, guest firmware)."""
from __future__ import annotations

import re
import threading
from typing import Dict, List, Optional, Sequence, Tuple

from kvmcheck.facts.context import Context
from kvmcheck.core.model import Outcome
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.pkgdb import parse_dpkg_status, parse_rpm_qa
from kvmcheck.parsers.rpmdb import rpm_qa_from_headers
from kvmcheck.parsers.repos import (Source, parse_apt_list, parse_apt_sources, parse_dnf_repo,
                                    parse_zypper_repo)
from kvmcheck.core.registry import check

DNF_DIRS = ("/etc/yum.repos.d", "/etc/yum/repos.d", "/etc/distro.repos.d")
DNF_CONFS = ("/etc/dnf/dnf.conf", "/etc/yum.conf")
DNF_VAR_DIRS = ("/etc/dnf/vars", "/etc/yum/vars")
ZYPP_DIR = "/etc/zypp/repos.d"
ZYPP_VAR_DIR = "/etc/zypp/vars.d"
APT_LIST = "/etc/apt/sources.list"
APT_DIR = "/etc/apt/sources.list.d"
DPKG_STATUS = "/var/lib/dpkg/status"
RPM_DBS = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
# Database file -> rpm's backend for it (RHEL 9/Fedora sqlite, SUSE ndb, RHEL <= 8 Berkeley DB read-only).
RPM_DB_FILES = {"rpmdb.sqlite": "sqlite", "Packages.db": "ndb", "Packages": "bdb_ro"}
# apt reads only files named like this in sources.list.d (apt-pkg/contrib/fileutl.cc); the rest it ignores.
APT_FILENAME = re.compile(r"^[A-Za-z0-9_.-]+\.(list|sources)$")
PKGDB_LIMIT = 256 << 20

# deb arch part of the QEMU package, by kvmcheck family.
DEB_QEMU = {"x86": "qemu-system-x86", "arm64": "qemu-system-arm", "s390": "qemu-system-s390x",
            "ppc64": "qemu-system-ppc", "riscv": "qemu-system-misc", "loongarch": "qemu-system-misc"}
RPM_QEMU_ALT = {"x86": "qemu-system-x86", "arm64": "qemu-system-aarch64", "s390": "qemu-system-s390x",
                "ppc64": "qemu-system-ppc64", "riscv": "qemu-system-riscv", "loongarch": "qemu-system-loongarch64"}
SUSE_QEMU = {"x86": "qemu-x86", "arm64": "qemu-arm", "s390": "qemu-s390x", "ppc64": "qemu-ppc"}
# Guest firmware: (packages to suggest, packages that satisfy) by distribution kind and family.
FIRMWARE = {
    ("deb", "x86"): ("ovmf", ("ovmf", "seabios")),
    ("deb", "arm64"): ("qemu-efi-aarch64", ("qemu-efi-aarch64",)),
    ("rpm", "x86"): ("edk2-ovmf", ("edk2-ovmf", "OVMF", "seabios-bin", "seabios")),
    ("rpm", "arm64"): ("edk2-aarch64", ("edk2-aarch64", "AAVMF")),
    ("suse", "x86"): ("qemu-ovmf-x86_64", ("qemu-ovmf-x86_64", "qemu-seabios")),
    ("suse", "arm64"): ("qemu-uefi-aarch64", ("qemu-uefi-aarch64",)),
}
UEFI = ("ovmf", "edk2-ovmf", "OVMF", "qemu-ovmf-x86_64")


# -- the package database ---------------------------------------------------------------------------
def _distro_kind(ctx: Context) -> Tuple[Optional[str], Dict[str, str]]:
    """("deb" | "rpm" | "suse" | None, os info): which package tooling this distribution uses."""
    try:
        info = ctx.os_name() or {}
    except OSError:
        info = {}
    kind = {"debian": "deb", "ubuntu": "deb", "rhel": "rpm", "suse": "suse"}.get(ctx.distro_family() or "")
    return kind, info


def _rpm_db(ctx: Context) -> Optional[Tuple[str, str]]:
    """(database directory, backend) of the root's rpm database, or None."""
    for d in RPM_DBS:
        for fname, backend in RPM_DB_FILES.items():
            if ctx.host.exists(f"{d}/{fname}"):
                return d, backend
    return None


def _installed(ctx: Context) -> Dict[str, object]:
    """{"db": "dpkg"|"rpm"|None, "packages": {name: version} or None, "reason": why not, "source": path}."""
    def load() -> Dict[str, object]:
        kind, _ = _distro_kind(ctx)
        rpm_dir = _rpm_db(ctx)
        has_dpkg = ctx.host.exists(DPKG_STATUS)
        order = ["rpm", "dpkg"] if kind in ("rpm", "suse") else ["dpkg", "rpm"]
        for db in order:
            if db == "dpkg" and has_dpkg:
                try:
                    text = ctx.host.read_text(DPKG_STATUS, limit=PKGDB_LIMIT)
                except OSError as exc:
                    return {"db": "dpkg", "packages": None, "source": DPKG_STATUS,
                            "reason": f"cannot read {DPKG_STATUS}: {exc.strerror or exc}"}
                return {"db": "dpkg", "packages": parse_dpkg_status(text), "source": DPKG_STATUS, "reason": ""}
            if db == "rpm" and rpm_dir:
                return _query_rpm(ctx, *rpm_dir)
        return {"db": None, "packages": None, "source": "",
                "reason": "no package database in this root (neither /var/lib/dpkg/status nor an rpm database)"}
    return ctx.host.memo("packages.installed", load)


def _query_rpm(ctx: Context, rpm_dir: str, backend: str) -> Dict[str, object]:
    if not ctx.host.live:
        # No program is pointed at an offline root: rpm would resolve the root's links itself (out of
        # it: an absolute /var link), parse bytes an attacker chose as root, and create rpmdb.sqlite-shm
        # and -wal beside the database.  Its sqlite database is read here instead.
        return _read_rpm_sqlite(ctx, rpm_dir, backend)
    # --dbpath: the root's own database location (RHEL /var/lib/rpm, SUSE /usr/lib/sysimage/rpm), not
    # whatever the machine running kvmcheck configures (Debian's rpm defaults to ~/.rpmdb).
    # _db_backend: the backend whose file is there. Left to guess, rpm creates an empty database of its
    # own default kind in the root (a write into the inspected system, which kvmcheck never makes).
    argv = ["rpm", "--root", ctx.host.root, "--dbpath", rpm_dir, "--define", f"_db_backend {backend}",
            "-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"]
    base = {"db": "rpm", "packages": None, "source": rpm_dir}
    try:
        res = ctx.host.run(argv, timeout=max(1.0, ctx.settings.check_timeout - 1.0))
    except FileNotFoundError:
        return dict(base, reason=f"an rpm database is at {rpm_dir} but the rpm tool is not installed "
                                 "on the machine running kvmcheck")
    except TimeoutError as exc:
        return dict(base, reason=f"'rpm -qa' {exc.strerror}")
    except OSError as exc:
        return dict(base, reason=f"cannot run rpm: {exc}")
    if res.returncode != 0:
        err = (res.stderr.strip().splitlines() or ["no message"])[-1][:200]
        return dict(base, reason=f"'rpm -qa' failed (exit {res.returncode}): {err}")
    return dict(base, packages=parse_rpm_qa(res.stdout), reason="")


def _read_rpm_sqlite(ctx: Context, rpm_dir: str, backend: str) -> Dict[str, object]:
    """The packages of an offline root's rpm database, from its sqlite file read through the Host."""
    base = {"db": "rpm", "packages": None, "source": rpm_dir}
    if backend != "sqlite":
        what = {"ndb": "an ndb database (Packages.db)", "bdb_ro": "a Berkeley DB database (Packages)"}[backend]
        return dict(base, reason=f"the rpm database at {rpm_dir} is {what}: of an offline root kvmcheck reads "
                                 "only rpm's sqlite database (rpm >= 4.16) and runs no rpm on it; check the "
                                 "packages on the running system ('kvmcheck check', or 'rpm -qa' there)")
    path = f"{rpm_dir}/rpmdb.sqlite"
    try:
        rows = ctx.host.sqlite_query(path, "SELECT blob FROM Packages", limit=PKGDB_LIMIT)
        text, bad = rpm_qa_from_headers(row[0] for row in rows)
    except OSError as exc:
        return dict(base, reason=f"cannot read {path}: {exc.strerror or exc}")
    except (ParseError, ValueError, MemoryError) as exc:
        return dict(base, reason=f"{path} is not an rpm database kvmcheck can read ({exc})")
    if bad and not text:
        return dict(base, reason=f"{path}: none of its {bad} package headers is a sound rpm header")
    return dict(base, packages=parse_rpm_qa(text), reason="")


def _components(kind: str, family: str) -> List[Tuple[str, str, Tuple[str, ...]]]:
    """(component, package to suggest, packages that satisfy it) for this distribution and CPU family."""
    fam = family if family in DEB_QEMU else "x86"
    if kind == "deb":
        comps = [("QEMU/KVM", DEB_QEMU[fam], (DEB_QEMU[fam], "qemu-kvm", "qemu-system")),
                 ("libvirt daemon", "libvirt-daemon-system", ("libvirt-daemon-system", "libvirt-daemon")),
                 ("virt-install", "virtinst", ("virtinst", "virt-install"))]
    elif kind == "suse":
        qemu = "qemu-kvm" if fam == "x86" else SUSE_QEMU.get(fam, "qemu-kvm")
        comps = [("QEMU/KVM", qemu, ("qemu-kvm", SUSE_QEMU.get(fam, "qemu-x86"))),
                 ("libvirt daemon", "libvirt-daemon-qemu",
                  ("libvirt-daemon-qemu", "libvirt-daemon", "libvirt-daemon-driver-qemu")),
                 ("virt-install", "virt-install", ("virt-install",))]
    else:
        comps = [("QEMU/KVM", "qemu-kvm", ("qemu-kvm", "qemu-kvm-core", RPM_QEMU_ALT[fam],
                                            RPM_QEMU_ALT[fam] + "-core")),
                 ("libvirt daemon", "libvirt-daemon-kvm",
                  ("libvirt-daemon-kvm", "libvirt-daemon", "libvirt-daemon-driver-qemu")),
                 ("virt-install", "virt-install", ("virt-install",))]
    fw = FIRMWARE.get((kind, fam))
    if fw:  # s390x, POWER and RISC-V firmware ships inside the QEMU package
        comps.append(("guest firmware", fw[0], fw[1]))
    return comps


def _kind_for(ctx: Context, db: Optional[str]) -> Tuple[str, Dict[str, str]]:
    kind, info = _distro_kind(ctx)
    if kind is None:
        if db == "dpkg":
            kind = "deb"
        elif ctx.host.is_dir("/etc/zypp"):
            kind = "suse"
        else:
            kind = "rpm"
    return kind, info


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


def _kvm_stack(ctx: Context) -> Optional[Dict[str, object]]:
    """Which components are installed: None when the package database cannot be read."""
    db = _installed(ctx)
    pkgs = db["packages"]
    if pkgs is None:
        return None
    kind, info = _kind_for(ctx, db["db"])  # type: ignore[arg-type]
    found: Dict[str, Dict[str, str]] = {}
    missing: List[Tuple[str, str]] = []
    for comp, suggest, names in _components(kind, ctx.family()):
        have = {n: pkgs[n] for n in names if n in pkgs}  # type: ignore[operator,index]
        if have:
            found[comp] = have
        else:
            missing.append((comp, suggest))
    return {"kind": kind, "info": info, "found": found, "missing": missing}


# -- package sources --------------------------------------------------------------------------------
def _read(ctx: Context, path: str, unreadable: List[str]) -> Optional[str]:
    try:
        return ctx.host.read_optional(path, limit=4 << 20)
    except OSError as exc:
        unreadable.append(f"{path}: {exc.strerror or exc}")
        return None


def _collect(ctx: Context) -> Tuple[List[str], List[Source], List[str]]:
    """(package managers configured, sources in reading order, unreadable files)."""
    host = ctx.host
    managers: List[str] = []
    sources: List[Source] = []
    unreadable: List[str] = []
    if host.is_dir("/etc/apt"):
        managers.append("apt")
        text = _read(ctx, APT_LIST, unreadable)
        if text is not None:
            sources += parse_apt_list(text, APT_LIST)
        for fname in host.listdir(APT_DIR):
            if not APT_FILENAME.match(fname):
                continue
            path = f"{APT_DIR}/{fname}"
            text = _read(ctx, path, unreadable)
            if text is not None:
                sources += (parse_apt_sources if fname.endswith(".sources") else parse_apt_list)(text, path)
    if any(host.is_dir(d) for d in DNF_DIRS) or host.is_dir("/etc/dnf") or host.exists("/etc/yum.conf"):
        managers.append("dnf")
        for path in DNF_CONFS:
            text = _read(ctx, path, unreadable)
            if text is not None:
                sources += parse_dnf_repo(text, path)
        for d in DNF_DIRS:
            for fname in host.listdir(d):
                if fname.endswith(".repo"):
                    text = _read(ctx, f"{d}/{fname}", unreadable)
                    if text is not None:
                        sources += parse_dnf_repo(text, f"{d}/{fname}")
    if host.is_dir("/etc/zypp"):
        managers.append("zypper")
        for fname in host.listdir(ZYPP_DIR):
            if fname.endswith(".repo"):
                text = _read(ctx, f"{ZYPP_DIR}/{fname}", unreadable)
                if text is not None:
                    sources += parse_zypper_repo(text, f"{ZYPP_DIR}/{fname}")
    return managers, sources, unreadable


def _variables(ctx: Context, manager: str) -> Dict[str, str]:
    """dnf/zypper URL variables: $basearch, $arch, $releasever and the files in vars directories."""
    arch = ctx.arch()[0] or ""
    basearch = {"i486": "i386", "i586": "i386", "i686": "i386", "armv7l": "armhfp", "ppc64le": "ppc64le"}.get(
        arch, arch)
    kind, info = _distro_kind(ctx)
    version = info.get("version") or ""
    release = version if kind == "suse" else version.split(".", 1)[0]
    values = {"arch": arch, "basearch": basearch, "releasever": release,
              "releasever_major": version.split(".", 1)[0], "releasever_minor": version.partition(".")[2]}
    values = {k: v for k, v in values.items() if v}
    for d in (DNF_VAR_DIRS if manager == "dnf" else (ZYPP_VAR_DIR,)):
        for fname in ctx.host.listdir(d):
            line = ctx.host.first_line(f"{d}/{fname}")
            if line is not None:  # an empty file is an empty value, as dnf reads it
                values[fname] = line
    return values


def _expand(url: str, values: Dict[str, str]) -> str:
    def sub(m: "re.Match[str]") -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, url)


def _metadata_urls(src: Source, url: str) -> List[str]:
    """What the package manager itself fetches first: a base URL may well answer 404 (no index page)."""
    base = url.rstrip("/")
    if src.manager == "apt":
        # dists/SUITE/InRelease; a flat repository ("deb URI ./") keeps it beside the URI.
        return [f"{base}/{suite.strip('/')}/InRelease".replace("/./", "/") if suite.endswith("/")
                else f"{base}/dists/{suite}/InRelease" for suite in (src.suites or ("",))[:4]]
    if src.url_key in ("mirrorlist", "metalink"):
        return [url]  # a list of mirrors, fetched as is
    return [f"{base}/repodata/repomd.xml"]  # dnf baseurl, zypper rpm-md


def _probe_targets(ctx: Context, src: Source) -> List[str]:
    values = _variables(ctx, src.manager) if src.manager in ("dnf", "zypper") else {}
    out = []
    for url in src.urls:
        url = _expand(url, values)
        if url.startswith("mirror+"):
            url = url[len("mirror+"):]
        if url.startswith(("http://", "https://", "ftp://")) and "$" not in url:
            out.extend(_metadata_urls(src, url))
        else:
            out.append(url)
    return out


def _probe_all(ctx: Context, sources: List[Source]) -> Dict[int, Dict[str, object]]:
    """Probe every usable source in parallel, bounded in time: index -> {"reachable", "url", "result"}."""
    budget = min(3.0, max(0.5, ctx.settings.check_timeout / 2))
    results: Dict[str, Tuple[bool, str]] = {}
    plan: Dict[int, List[str]] = {}
    for i, src in enumerate(sources):
        plan[i] = _probe_targets(ctx, src)
    urls = sorted({u for us in plan.values() for u in us if u.startswith(("http://", "https://", "ftp://"))
                   and "$" not in u})
    lock = threading.Lock()

    def work(url: str) -> None:
        try:
            outcome = ctx.host.probe_url(url, timeout=budget)
        except Exception as exc:  # noqa: BLE001 - one odd URL must not sink the check
            outcome = (False, f"{type(exc).__name__}: {exc}")
        with lock:
            results[url] = outcome

    threads = [threading.Thread(target=work, args=(u,), daemon=True, name="kvmcheck-probe") for u in urls[:32]]
    for t in threads:
        t.start()
    for t in threads:  # name resolution is not covered by the socket timeout: allow a little more, then give up
        t.join(budget + 0.5)
    with lock:
        done = dict(results)
    report: Dict[int, Dict[str, object]] = {}
    for i, targets in plan.items():
        tried = []
        reachable: Optional[bool] = None
        for url in targets:
            if "$" in url:
                tried.append({"url": url, "result": "not probed: unresolved variable"})
                continue
            if not url.startswith(("http://", "https://", "ftp://")):
                tried.append({"url": url, "result": "not probed: not a network URL"})
                continue
            ok, what = done.get(url, (False, f"no answer within {budget:g} s"))
            tried.append({"url": url, "result": what, "reachable": ok})
            reachable = bool(reachable) or ok
        report[i] = {"reachable": reachable, "probes": tried}
    return report


def _no_source_fix(ctx: Context, managers: List[str], sources: List[Source], info: Dict[str, str]) -> str:
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
            arch = ctx.arch()[0] or "$(arch)"
            fixes.append(f"Register the system ('subscription-manager register'), then 'subscription-manager repos "
                         f"--enable rhel-{major}-for-{arch}-baseos-rpms --enable rhel-{major}-for-{arch}-appstream-rpms'.")
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


def _appstream_off(sources: List[Source]) -> List[Source]:
    """RHEL-family AppStream repositories that exist but are all disabled (qemu-kvm and libvirt live there)."""
    app = [s for s in sources if s.manager == "dnf" and "appstream" in s.id.lower()
           and "source" not in s.id.lower() and "debug" not in s.id.lower()]
    return app if app and not any(s.usable for s in app) else []


@check("repos.configured", "Package sources for the KVM stack", reads=(
    APT_LIST, APT_DIR + "/*.list", APT_DIR + "/*.sources", "/etc/yum.repos.d/*.repo", "/etc/dnf/dnf.conf",
    "/etc/yum.conf", "/etc/dnf/vars/*", "/etc/yum/repos.d/*.repo", "/etc/distro.repos.d/*.repo", ZYPP_DIR + "/*.repo",
    DPKG_STATUS, "/var/lib/rpm",
))
def repos_configured(ctx: Context) -> Outcome:
    """An enabled package source can deliver QEMU, libvirt and friends.

    What: reads the sources of apt (/etc/apt/sources.list and
    sources.list.d/*.list in one-line style, *.sources in deb822 style,
    honouring 'Enabled: no' and commented-out lines), dnf/yum
    (/etc/yum.repos.d/*.repo: 'enabled' defaults to 1 and a repository needs
    baseurl, mirrorlist or metalink) and zypper (/etc/zypp/repos.d/*.repo).
    With no enabled source the result is a failure while the KVM packages are
    still missing, and a warning once they are installed (nothing to install,
    but no updates either).  On RHEL-family systems a disabled AppStream is
    named, because qemu-kvm and libvirt come from it.  With --online, each
    enabled source's URL is probed (a few seconds at most, in parallel) and
    unreachable sources are named.

    Why: installing and updating QEMU, libvirt and the guest firmware needs a
    working repository; a freshly installed host that is not registered
    (RHEL), or whose sources are commented out, cannot install them.

    Fix: enable the distribution repositories: 'subscription-manager repos
    --enable ...-appstream-rpms' or 'dnf config-manager --set-enabled
    appstream' (RHEL family), 'Enabled: yes' or an uncommented line in the
    apt sources (Debian, Ubuntu), 'zypper modifyrepo -e ALIAS' (SUSE).
    """
    if not ctx.host.is_dir("/etc"):
        return Outcome.skipped("no /etc in this root: not an installed system")
    managers, sources, unreadable = _collect(ctx)
    if not managers:
        return Outcome.skipped("no apt, dnf/yum or zypper configuration in /etc",
                               "Package sources are checked for apt, dnf/yum and zypper only.")
    usable = [s for s in sources if s.usable]
    wanted = ctx.settings.required_repos  # the configuration's [require] repos: an id, a name or part of a URL
    absent = [w for w in wanted if not any(w in (s.id, s.name) or any(w in u for u in s.urls) for s in usable)]
    if absent:
        return Outcome.failed(
            f"required package source(s) not enabled: {', '.join(absent)}",
            f"The configuration requires enabled sources matching {', '.join(wanted)} ([require] repos: a "
            "repository id, its name or part of its URL). Enabled: "
            + (", ".join(s.label for s in usable) or "none") + ".",
            "Add and enable the repositories the configuration names (a .repo file in /etc/yum.repos.d, an apt "
            "source in /etc/apt/sources.list.d, or 'zypper addrepo'), then refresh the package metadata.",
            managers=managers, sources=[s.to_evidence() for s in sources], required=list(wanted), missing=absent)
    stack = _kvm_stack(ctx)
    installed: Optional[bool] = None if stack is None else not stack["missing"]
    _, info = _distro_kind(ctx)
    evidence: Dict[str, object] = {"managers": managers, "sources": [s.to_evidence() for s in sources],
                                   "enabled": len(usable), "kvm_packages_installed": installed}
    if unreadable:
        evidence["unreadable"] = unreadable
    broken = [s for s in sources if s.enabled and s.problems]
    broken_text = "".join(f" {s.file}:{s.line} {s.label}: {'; '.join(s.problems)}." for s in broken)
    if not usable:
        if unreadable:
            return Outcome.skipped(f"cannot read {unreadable[0]}", "; ".join(unreadable), **evidence)
        disabled = [s for s in sources if not s.enabled]
        what = (f"{len(disabled)} source(s) configured, all disabled" if disabled and not broken else
                "no package source configured" if not sources else "no usable package source")
        state = ("the KVM packages are already installed, so nothing is blocked now, but they get no updates"
                 if installed else
                 "the KVM packages cannot be installed from here" if installed is False else
                 "kvmcheck could not tell whether the KVM packages are installed")
        detail = f"{what.capitalize()} for {', '.join(managers)}: {state}.{broken_text}"
        fix = _no_source_fix(ctx, managers, sources, info)
        if installed:
            return Outcome.warned(f"{what}; KVM packages already installed", detail, fix, **evidence)
        return Outcome.failed(what, detail, fix, **evidence)

    labels = [s.label for s in usable]
    shown = ", ".join(labels[:4]) + (f" and {len(labels) - 4} more" if len(labels) > 4 else "")
    problems: List[str] = []
    short: List[str] = []
    fixes: List[str] = []
    failing = False
    app_off = _appstream_off(sources)
    if app_off:
        problems.append(f"AppStream is disabled ({', '.join(s.id for s in app_off)}): qemu-kvm and libvirt "
                        "are in AppStream, not BaseOS.")
        fixes.append("dnf config-manager --set-enabled " + " ".join(s.id for s in app_off)
                     + (" (on RHEL: subscription-manager repos --enable " + app_off[0].id + ")"
                        if any(s.file.endswith("/redhat.repo") for s in app_off) else ""))
        short.append("AppStream is disabled")
        failing = installed is False
    if broken:
        short.append(f"{len(broken)} enabled entr{'y is' if len(broken) == 1 else 'ies are'} ignored")
        problems.append("Ignored by the package manager:" + broken_text)
        fixes.append("Correct or remove the entries listed.")
    if ctx.settings.online:
        probes = _probe_all(ctx, usable)
        for i, src in enumerate(usable):
            ev = next(e for e in evidence["sources"]  # type: ignore[union-attr]
                      if e["file"] == src.file and e["line"] == src.line)
            ev["probe"] = probes[i]
        down = [usable[i] for i, p in probes.items() if p["reachable"] is False]
        if down:
            names = "; ".join(f"{s.label} ({', '.join(str(p['result']) for p in probes[usable.index(s)]['probes'])})"
                              for s in down)
            problems.append(f"Unreachable: {names}.")
            short.append(f"{len(down)} unreachable: " + ", ".join(s.label for s in down))
            fixes.append("Check the network path to these mirrors (DNS, proxy, firewall) or point the sources at a "
                         "reachable mirror.")
            if len(down) == len([p for p in probes.values() if p["reachable"] is not None]) and installed is False:
                failing = True
        evidence["online"] = True
    if problems:
        summary = f"{len(usable)} enabled source(s), but " + " and ".join(short)
        detail = f"Enabled: {shown}. " + " ".join(problems)
        if failing:
            return Outcome.failed(summary, detail, " ".join(fixes), **evidence)
        return Outcome.warned(summary, detail, " ".join(fixes), **evidence)
    return Outcome.passed(f"{len(usable)} enabled source(s): {shown}",
                          "Reachable online." if ctx.settings.online else "", **evidence)


@check("packages.virt", "KVM packages installed", reads=(
    DPKG_STATUS, "/var/lib/rpm", "/usr/lib/sysimage/rpm", "/etc/os-release",
))
def packages_virt(ctx: Context) -> Outcome:
    """QEMU/KVM, the libvirt daemon, virt-install and guest firmware are installed.

    What: reads the root's package database, /var/lib/dpkg/status (only
    packages in state "install ok installed") or the rpm database ('rpm -qa'
    on the running system; of an offline root its sqlite database, read
    without running rpm), and looks for each part of the KVM stack: QEMU
    (qemu-kvm, qemu-system-x86 or this architecture's qemu-system-*), a
    libvirt daemon (libvirt-daemon-system, libvirt-daemon, libvirt-daemon-kvm),
    virt-install (virtinst on Debian/Ubuntu) and guest firmware (OVMF/edk2 or
    SeaBIOS on x86, edk2/AAVMF on arm64; s390x and POWER firmware ships with
    QEMU).  Missing packages are normal before installation: a warning with
    the exact command, not a failure.

    Why: /dev/kvm alone runs nothing; QEMU is the VM, libvirt manages it,
    virt-install creates guests, and UEFI guests (Windows 11, Secure Boot)
    need OVMF.

    Fix: the command shown for your distribution, for example
    'apt-get install qemu-system-x86 libvirt-daemon-system virtinst ovmf'
    or 'dnf install qemu-kvm libvirt-daemon-kvm virt-install edk2-ovmf'.
    """
    if not ctx.host.is_dir("/etc") and not ctx.host.is_dir("/var/lib"):
        return Outcome.skipped("no /etc or /var/lib in this root: not an installed system")
    db = _installed(ctx)
    if db["packages"] is None:
        return Outcome.skipped(str(db["reason"]), str(db["reason"]), database=db["db"], source=db["source"])
    stack = _kvm_stack(ctx)
    assert stack is not None
    found: Dict[str, Dict[str, str]] = stack["found"]  # type: ignore[assignment]
    missing: List[Tuple[str, str]] = stack["missing"]  # type: ignore[assignment]
    evidence = {"database": db["db"], "source": db["source"],
                "installed": {comp: dict(v) for comp, v in found.items()},
                "missing": [comp for comp, _ in missing]}
    listing = "; ".join(f"{comp}: " + ", ".join(f"{n} {v}".strip() for n, v in have.items())
                        for comp, have in found.items())
    required = ctx.settings.required_packages  # the configuration's [require] packages
    if required:
        pkgs: Dict[str, str] = db["packages"]  # type: ignore[assignment]
        absent = [p for p in required if p not in pkgs]
        evidence.update(required={p: pkgs.get(p) for p in required})
        if absent:
            cmd = _install_command(stack["kind"], stack["info"], absent + [s for _, s in missing])  # type: ignore[arg-type]
            return Outcome.failed(
                f"required package(s) not installed: {', '.join(absent)}",
                f"The configuration requires {', '.join(required)} ([require] packages). "
                + (f"Installed: {listing}." if listing else "None of the KVM stack is installed."),
                f"Install them: '{cmd}'.", **evidence)
    if missing:
        cmd = _install_command(stack["kind"], stack["info"], [s for _, s in missing])  # type: ignore[arg-type]
        evidence["install_command"] = cmd
        names = ", ".join(f"{comp} ({s})" for comp, s in missing)
        return Outcome.warned(
            f"not installed: {names}",
            (f"Installed: {listing}. " if listing else "None of the KVM stack is installed yet. ")
            + "This is expected before the virtualization packages are installed.",
            f"Install them: '{cmd}'.", **evidence)
    detail = ""
    fw = found.get("guest firmware")
    if fw and not any(n in UEFI for n in fw):
        detail = "Only SeaBIOS is installed: UEFI guests (Windows 11, Secure Boot) need OVMF as well."
    return Outcome.passed(f"installed: {listing}", detail, **evidence)
