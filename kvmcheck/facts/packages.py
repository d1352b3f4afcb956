# SPDX-License-Identifier: GPL-2.0-or-later
"""The root's package tooling: its installed-packages database, the KVM stack in it, its package sources."""
from __future__ import annotations

import re
import threading
from typing import Dict, List, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Later, fact, read
from kvmcheck.facts import system  # noqa: F401 - the shared facts these are computed from
from kvmcheck.parsers import ParseError, pattern
from kvmcheck.parsers.repos import Source

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
APT_FILENAME = pattern(r"^[A-Za-z0-9_.-]+\.(list|sources)$")
PKGDB_LIMIT = 256 << 20
SOURCE_LIMIT = 4 << 20

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
# The QEMU packages of every distribution, whatever the architecture (what an offline root's qemu.accel names).
QEMU_PACKAGES = ("qemu-system-x86", "qemu-system-arm", "qemu-system-s390x", "qemu-system-ppc", "qemu-kvm",
                 "qemu-kvm-core", "qemu-system-x86-core", "qemu-system-aarch64-core", "qemu-x86", "qemu-arm",
                 "qemu-s390x", "qemu-ppc")
_RPM_DB_PATHS = tuple(f"{d}/{f}" for d in RPM_DBS for f in RPM_DB_FILES)


# -- records ---------------------------------------------------------------------------------------------
class PackageTooling(Record):
    kind: Optional[str]  # "deb", "rpm", "suse"; None when os-release names no known family
    info: Dict[str, str]  # the os-release identity ({} when none could be read)


class InstalledPackages(Record):
    """The installed-packages database.  state: "ok" (packages holds it), "absent" (no database in this
    root), "denied" (permission denied reading it), "unreadable" (present but could not be read or queried),
    "unsupported" (a database kvmcheck does not read here: an offline ndb/Berkeley DB, no rpm tool)."""

    db: Optional[str]  # "dpkg", "rpm", or None when there is none
    packages: Optional[Dict[str, str]]  # name -> version; None when it could not be read
    source: str  # the file or directory read
    reason: str  # why packages is None ("" when it is not)
    state: str


class KvmStack(Record):
    """Which parts of the KVM stack the package database holds."""

    kind: str  # the package tooling the install command is for: "deb", "rpm" or "suse"
    info: Dict[str, str]  # the os-release identity
    found: Dict[str, Dict[str, str]]  # component -> {package: version}
    missing: Tuple[Tuple[str, str], ...]  # (component, package to suggest)


class PackageSources(Record):
    has_etc: bool  # False: not an installed system
    managers: Tuple[str, ...]  # the package managers configured ("apt", "dnf", "zypper"), in this order
    sources: Tuple[Source, ...]  # in reading order
    unreadable: Tuple[str, ...]  # "PATH: reason" of each file present that could not be read
    denied: Tuple[str, ...]  # the paths among them that were permission denied


class SystemDirs(Record):
    etc: bool  # /etc is a directory
    var_lib: bool  # /var/lib is a directory


# -- the package database -------------------------------------------------------------------------------
@fact(reads=("/etc", "/var/lib"))
def system_dirs(host) -> SystemDirs:
    """Whether the root holds /etc and /var/lib at all (a root without both is no installed system)."""
    return SystemDirs(host.is_dir("/etc"), host.is_dir("/var/lib"))


@fact(uses=("os_name", "distro_family"))
def package_tooling(facts) -> PackageTooling:
    """("deb" | "rpm" | "suse" | None, os info): which package tooling this distribution uses."""
    try:
        info = facts.get("os_name") or {}
    except OSError:
        info = {}
    kind = {"debian": "deb", "ubuntu": "deb", "rhel": "rpm", "suse": "suse"}.get(facts.get("distro_family") or "")
    return PackageTooling(kind, info)


@fact(reads=(DPKG_STATUS,) + RPM_DBS + _RPM_DB_PATHS)  # the rpm directories whole: rpm's database is its files
def installed_packages(host, settings, package_tooling) -> InstalledPackages:
    """The root's installed packages: /var/lib/dpkg/status, or its rpm database ('rpm -qa' on the running
    system; of an offline root its sqlite file, read through the Host), whichever the distribution uses first."""
    rpm_db = next(((d, backend) for d in RPM_DBS for fname, backend in RPM_DB_FILES.items()
                   if host.exists(f"{d}/{fname}")), None)
    has_dpkg = host.exists(DPKG_STATUS)
    order = ["rpm", "dpkg"] if package_tooling.kind in ("rpm", "suse") else ["dpkg", "rpm"]
    for db in order:
        if db == "dpkg" and has_dpkg:
            from kvmcheck.parsers.pkgdb import parse_dpkg_status

            got = read(host, DPKG_STATUS, limit=PKGDB_LIMIT)
            if not got.ok:
                return InstalledPackages("dpkg", None, DPKG_STATUS,
                                         f"cannot read {DPKG_STATUS}: {got.reason or 'No such file or directory'}",
                                         got.state)
            return InstalledPackages("dpkg", parse_dpkg_status(got.text or ""), DPKG_STATUS, "", "ok")
        if db == "rpm" and rpm_db:
            return _rpm_packages(host, settings, *rpm_db)
    return InstalledPackages(None, None, "", "no package database in this root (neither /var/lib/dpkg/status "
                             "nor an rpm database)", "absent")


def _rpm_packages(host, settings, rpm_dir: str, backend: str) -> InstalledPackages:  # type: ignore[no-untyped-def]
    from kvmcheck.parsers.pkgdb import parse_rpm_qa

    if not host.live:
        # No program is pointed at an offline root: rpm would resolve the root's links itself (out of
        # it: an absolute /var link), parse bytes an attacker chose as root, and create rpmdb.sqlite-shm
        # and -wal beside the database.  Its sqlite database is read here instead.
        return _rpm_sqlite(host, rpm_dir, backend)
    # --dbpath: the root's own database location (RHEL /var/lib/rpm, SUSE /usr/lib/sysimage/rpm), not
    # whatever the machine running kvmcheck configures (Debian's rpm defaults to ~/.rpmdb).
    # _db_backend: the backend whose file is there. Left to guess, rpm creates an empty database of its
    # own default kind in the root (a write into the inspected system, which kvmcheck never makes).
    argv = ["rpm", "--root", host.root, "--dbpath", rpm_dir, "--define", f"_db_backend {backend}",
            "-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"]

    def failed(reason: str, state: str = "unreadable") -> InstalledPackages:
        return InstalledPackages("rpm", None, rpm_dir, reason, state)

    try:
        res = host.run(argv, timeout=max(1.0, settings.check_timeout - 1.0))
    except FileNotFoundError:
        return failed(f"an rpm database is at {rpm_dir} but the rpm tool is not installed on the machine running "
                      "kvmcheck", "unsupported")
    except TimeoutError as exc:
        return failed(f"'rpm -qa' {exc.strerror}")
    except OSError as exc:
        return failed(f"cannot run rpm: {exc}")
    if res.returncode != 0:
        err = (res.stderr.strip().splitlines() or ["no message"])[-1][:200]
        return failed(f"'rpm -qa' failed (exit {res.returncode}): {err}")
    return InstalledPackages("rpm", parse_rpm_qa(res.stdout), rpm_dir, "", "ok")


def _rpm_sqlite(host, rpm_dir: str, backend: str) -> InstalledPackages:  # type: ignore[no-untyped-def]
    """The packages of an offline root's rpm database, from its sqlite file read through the Host."""
    from kvmcheck.parsers.pkgdb import parse_rpm_qa
    from kvmcheck.parsers.rpmdb import rpm_qa_from_headers

    if backend != "sqlite":
        what = {"ndb": "an ndb database (Packages.db)", "bdb_ro": "a Berkeley DB database (Packages)"}[backend]
        return InstalledPackages("rpm", None, rpm_dir, f"the rpm database at {rpm_dir} is {what}: of an offline "
                                 "root kvmcheck reads only rpm's sqlite database (rpm >= 4.16) and runs no rpm on "
                                 "it; check the packages on the running system ('kvmcheck check', or 'rpm -qa' "
                                 "there)", "unsupported")
    path = f"{rpm_dir}/rpmdb.sqlite"
    try:
        rows = host.sqlite_query(path, "SELECT blob FROM Packages", limit=PKGDB_LIMIT)
        text, bad = rpm_qa_from_headers(row[0] for row in rows)
    except OSError as exc:
        state = "denied" if isinstance(exc, PermissionError) else "unreadable"
        return InstalledPackages("rpm", None, rpm_dir, f"cannot read {path}: {exc.strerror or exc}", state)
    except (ParseError, ValueError, MemoryError) as exc:
        return InstalledPackages("rpm", None, rpm_dir, f"{path} is not an rpm database kvmcheck can read ({exc})",
                                 "unreadable")
    if bad and not text:
        return InstalledPackages("rpm", None, rpm_dir,
                                 f"{path}: none of its {bad} package headers is a sound rpm header", "unreadable")
    return InstalledPackages("rpm", parse_rpm_qa(text), rpm_dir, "", "ok")


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


@fact(reads=("/etc/zypp",))
def kvm_stack(host, installed_packages, package_tooling, family) -> Optional[KvmStack]:
    """Which components of the KVM stack are installed; None when the package database cannot be read."""
    pkgs = installed_packages.packages
    if pkgs is None:
        return None
    kind = package_tooling.kind
    if kind is None:
        kind = "deb" if installed_packages.db == "dpkg" else "suse" if host.is_dir("/etc/zypp") else "rpm"
    found: Dict[str, Dict[str, str]] = {}
    missing: List[Tuple[str, str]] = []
    for comp, suggest, names in _components(kind, family):
        have = {n: pkgs[n] for n in names if n in pkgs}
        if have:
            found[comp] = have
        else:
            missing.append((comp, suggest))
    return KvmStack(kind, package_tooling.info, found, tuple(missing))


@fact(uses=("kvm_stack",))
def kvm_stack_later(facts) -> Later:
    """Later: kvm_stack, for a judgement that needs it on some branches only (reading the package database
    can mean parsing megabytes or running 'rpm -qa', and an unsearchable database directory raises)."""
    return Later(lambda: facts.get("kvm_stack"))


@fact(uses=("installed_packages",))
def qemu_packages(facts) -> Later:
    """Later: the QEMU packages installed ({name: version}; {} when none or no database could be read).
    Later, because only an offline root's qemu.accel asks, and on the running system it may cost 'rpm -qa'."""
    def find() -> Dict[str, str]:
        pkgs = facts.get("installed_packages").packages or {}
        return {name: pkgs[name] for name in QEMU_PACKAGES if name in pkgs}

    return Later(find)


# -- package sources -------------------------------------------------------------------------------------
@fact(reads=("/etc", "/etc/apt", APT_LIST, APT_DIR, APT_DIR + "/*", "/etc/dnf", "/etc/zypp", ZYPP_DIR,
             ZYPP_DIR + "/*.repo") + DNF_CONFS + DNF_DIRS + tuple(d + "/*.repo" for d in DNF_DIRS))
def package_sources(host) -> PackageSources:
    """The package sources of apt, dnf/yum and zypper, in the order each reads them.

    Only the directory listing and the source files are read: a source file that is missing is no
    source; one that is present but cannot be read is named in unreadable (and in denied when it was
    permission denied), never taken for absent.
    """
    from kvmcheck.parsers.repos import parse_apt_list, parse_apt_sources, parse_dnf_repo, parse_zypper_repo

    if not host.is_dir("/etc"):
        return PackageSources(False, (), (), (), ())
    managers: List[str] = []
    sources: List[Source] = []
    unreadable: List[str] = []
    denied: List[str] = []

    def load(path: str, parse) -> None:  # type: ignore[no-untyped-def]
        got = read(host, path, limit=SOURCE_LIMIT)
        if got.ok:
            sources.extend(parse(got.text, path))
        elif got.state in ("denied", "unreadable"):
            unreadable.append(f"{path}: {got.reason}")
            if got.state == "denied":
                denied.append(path)

    if host.is_dir("/etc/apt"):
        managers.append("apt")
        load(APT_LIST, parse_apt_list)
        for fname in host.listdir(APT_DIR):
            if APT_FILENAME.match(fname):
                load(f"{APT_DIR}/{fname}", parse_apt_sources if fname.endswith(".sources") else parse_apt_list)
    if any(host.is_dir(d) for d in DNF_DIRS) or host.is_dir("/etc/dnf") or host.exists("/etc/yum.conf"):
        managers.append("dnf")
        for path in DNF_CONFS:
            load(path, parse_dnf_repo)
        for d in DNF_DIRS:
            for fname in host.listdir(d):
                if fname.endswith(".repo"):
                    load(f"{d}/{fname}", parse_dnf_repo)
    if host.is_dir("/etc/zypp"):
        managers.append("zypper")
        for fname in host.listdir(ZYPP_DIR):
            if fname.endswith(".repo"):
                load(f"{ZYPP_DIR}/{fname}", parse_zypper_repo)
    return PackageSources(True, tuple(managers), tuple(sources), tuple(unreadable), tuple(denied))


# -- --online: the sources' URLs probed -----------------------------------------------------------------
def _variables(host, manager: str, arch: Optional[str],  # type: ignore[no-untyped-def]
               tooling: PackageTooling) -> Dict[str, str]:
    """dnf/zypper URL variables: $basearch, $arch, $releasever and the files in vars directories."""
    arch = arch or ""
    basearch = {"i486": "i386", "i586": "i386", "i686": "i386", "armv7l": "armhfp", "ppc64le": "ppc64le"}.get(
        arch, arch)
    version = tooling.info.get("version") or ""
    release = version if tooling.kind == "suse" else version.split(".", 1)[0]
    values = {"arch": arch, "basearch": basearch, "releasever": release,
              "releasever_major": version.split(".", 1)[0], "releasever_minor": version.partition(".")[2]}
    values = {k: v for k, v in values.items() if v}
    for d in (DNF_VAR_DIRS if manager == "dnf" else (ZYPP_VAR_DIR,)):
        for fname in host.listdir(d):
            line = host.first_line(f"{d}/{fname}")
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


def _probe_targets(values: Dict[str, str], src: Source) -> List[str]:
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


def _probe_urls(host, urls: List[str], budget: float) -> Dict[str, Tuple[bool, str]]:  # type: ignore[no-untyped-def]
    """url -> (reachable, what happened), probed in parallel; a URL with no answer in time is left out."""
    results: Dict[str, Tuple[bool, str]] = {}
    lock = threading.Lock()

    def work(url: str) -> None:
        try:
            outcome = host.probe_url(url, timeout=budget)
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
        return dict(results)


@fact(reads=tuple(d + "/*" for d in DNF_VAR_DIRS) + DNF_VAR_DIRS + (ZYPP_VAR_DIR, ZYPP_VAR_DIR + "/*"),
      uses=("package_sources", "arch", "package_tooling"))
def source_probes(host, settings, facts) -> Later:
    """Later (--online only): each usable source's metadata URLs probed in parallel, bounded in time:
    {index among the usable sources: {"reachable": bool or None, "probes": [{"url", "result", "reachable"}]}}."""
    def probe() -> Dict[int, Dict[str, object]]:
        usable = [s for s in facts.get("package_sources").sources if s.usable]
        arch, tooling = facts.get("arch").name, facts.get("package_tooling")
        budget = min(3.0, max(0.5, settings.check_timeout / 2))
        plan = {i: _probe_targets(_variables(host, s.manager, arch, tooling) if s.manager in ("dnf", "zypper")
                                  else {}, s) for i, s in enumerate(usable)}
        urls = sorted({u for us in plan.values() for u in us if u.startswith(("http://", "https://", "ftp://"))
                       and "$" not in u})
        done = _probe_urls(host, urls, budget)
        report: Dict[int, Dict[str, object]] = {}
        for i, targets in plan.items():
            tried: List[Dict[str, object]] = []
            reachable: Optional[bool] = None
            for url in targets:
                if "$" in url:
                    tried.append({"url": url, "result": "not probed: unresolved variable"})
                elif not url.startswith(("http://", "https://", "ftp://")):
                    tried.append({"url": url, "result": "not probed: not a network URL"})
                else:
                    ok, what = done.get(url, (False, f"no answer within {budget:g} s"))
                    tried.append({"url": url, "result": what, "reachable": ok})
                    reachable = bool(reachable) or ok
            report[i] = {"reachable": reachable, "probes": tried}
        return report

    return Later(probe)
