# SPDX-License-Identifier: GPL-2.0-or-later
"""repos.configured and packages.virt on captured roots, the repo/pkgdb parsers, and --online probes.

The pkg-* roots hold the package-manager files as the distributions ship them.
An RPM-QA file at the top of an rpm-based root lists what 'rpm -qa' printed on the
captured system; the host_root fixture turns it into a real rpm database in the
root (stub packages built with rpmbuild), so kvmcheck's reader of rpm's sqlite database
meets a real one.
"""
from __future__ import annotations

import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest

import kvmcheck
from kvmcheck.facts.context import Settings
from kvmcheck.parsers.pkgdb import parse_dpkg_status, parse_rpm_qa
from kvmcheck.parsers.repos import parse_apt_list, parse_apt_sources, parse_dnf_repo, parse_zypper_repo
from kvmcheck.core.render import render, render_text

from conftest import build_rpm_database

IDS = ["repos.configured", "packages.virt"]


def run_on(root, settings=None):
    report = kvmcheck.run(str(root), only=IDS, settings=settings)
    return report, {r.id: r for r in report.checks}


def statuses(results):
    return {i: r.status.value for i, r in results.items()}


EXPECTED = {
    "pkg-rhel9-enabled": {"repos.configured": "pass", "packages.virt": "pass"},
    "pkg-rhel9-disabled": {"repos.configured": "fail", "packages.virt": "warn"},
    "pkg-rocky9": {"repos.configured": "pass", "packages.virt": "warn"},
    "pkg-debian12-deb822": {"repos.configured": "pass", "packages.virt": "pass"},
    "pkg-debian12-disabled": {"repos.configured": "fail", "packages.virt": "warn"},
    "pkg-ubuntu-oneline": {"repos.configured": "pass", "packages.virt": "warn"},
    "pkg-opensuse-leap": {"repos.configured": "pass", "packages.virt": "pass"},
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_exact_statuses(host_root, scenario):
    report, results = run_on(host_root(scenario))
    assert statuses(results) == EXPECTED[scenario]
    for r in report.checks:
        assert r.summary
        if r.status.value in ("warn", "fail"):
            assert r.detail and r.remediation, (scenario, r.id)


def test_rhel9_enabled_lists_baseos_and_appstream_and_versions(host_root):
    _, results = run_on(host_root("pkg-rhel9-enabled"))
    repos = results["repos.configured"]
    assert repos.evidence["enabled"] == 2
    assert "rhel-9-for-x86_64-baseos-rpms (Red Hat Enterprise Linux 9 for x86_64 - BaseOS (RPMs))" in repos.summary
    assert len(repos.evidence["sources"]) == 9
    off = [s for s in repos.evidence["sources"] if not s["enabled"]]
    assert len(off) == 7 and off[0]["file"] == "/etc/yum.repos.d/redhat.repo"
    pkgs = results["packages.virt"]
    assert pkgs.evidence["installed"]["QEMU/KVM"] == {"qemu-kvm": "8.2.0-11.el9_4.3",
                                                      "qemu-kvm-core": "8.2.0-11.el9_4.3"}
    assert "virt-install 4.1.0-5.el9" in pkgs.summary
    assert pkgs.evidence["source"] == "/var/lib/rpm"


def test_rhel9_disabled_fails_with_subscription_manager_fix(host_root):
    _, results = run_on(host_root("pkg-rhel9-disabled"))
    repos = results["repos.configured"]
    assert repos.summary == "9 source(s) configured, all disabled"
    assert "cannot be installed" in repos.detail
    assert repos.remediation == ("subscription-manager repos --enable rhel-9-for-x86_64-baseos-rpms "
                                 "--enable rhel-9-for-x86_64-appstream-rpms")
    assert repos.evidence["kvm_packages_installed"] is False
    pkgs = results["packages.virt"]
    assert pkgs.remediation == "Install them: 'dnf install qemu-kvm libvirt-daemon-kvm virt-install edk2-ovmf'."


def test_rhel9_disabled_with_packages_installed_only_warns(host_root):
    root = host_root("pkg-rhel9-disabled")
    build_rpm_database(root, (Path(__file__).parent / "hosts/pkg-rhel9-enabled/RPM-QA").read_text())
    _, results = run_on(root)
    assert statuses(results) == {"repos.configured": "warn", "packages.virt": "pass"}
    assert results["repos.configured"].summary == "9 source(s) configured, all disabled; KVM packages already installed"
    assert "no updates" in results["repos.configured"].detail


def _break_rpm_database(root):
    # A database rpm cannot open: a file where the sqlite database should be.
    db = root / "var/lib/rpm"
    for f in db.iterdir():
        f.unlink()
    (db / "rpmdb.sqlite").write_text("not a database\n")


def test_offline_berkeley_db_and_ndb_databases_skip_with_the_reason(tmp_path):
    # Reading them would need rpm itself, and kvmcheck runs no program against an offline root.
    (tmp_path / "etc").mkdir()
    for db, fname, what in (("var/lib/rpm", "Packages", "a Berkeley DB database (Packages)"),
                            ("usr/lib/sysimage/rpm", "Packages.db", "an ndb database (Packages.db)")):
        shutil.rmtree(tmp_path / "var", ignore_errors=True)
        shutil.rmtree(tmp_path / "usr", ignore_errors=True)
        (tmp_path / db).mkdir(parents=True)
        (tmp_path / db / fname).write_bytes(b"\0" * 4096)
        _, results = run_on(tmp_path)
        pkgs = results["packages.virt"]
        assert (pkgs.id, pkgs.status.value) == ("packages.virt", "skip")
        assert pkgs.summary == (f"the rpm database at /{db} is {what}: of an offline root kvmcheck reads only "
                                "rpm's sqlite database (rpm >= 4.16) and runs no rpm on it; check the packages on "
                                "the running system ('kvmcheck check', or 'rpm -qa' there)")


def test_unreadable_rpm_database_skips_with_the_reason(host_root):
    root = host_root("pkg-rhel9-enabled")
    _break_rpm_database(root)
    _, results = run_on(root)
    pkgs = results["packages.virt"]
    assert pkgs.status.value == "skip"
    assert pkgs.summary == ("/var/lib/rpm/rpmdb.sqlite is not an rpm database kvmcheck can read "
                            "(no sqlite database header)")
    # Enabled sources pass whatever the package state.
    assert results["repos.configured"].status.value == "pass"
    assert results["repos.configured"].evidence["kvm_packages_installed"] is None


def test_disabled_sources_and_unknown_package_state_fail(host_root):
    root = host_root("pkg-rhel9-disabled")
    _break_rpm_database(root)
    _, results = run_on(root)
    assert statuses(results) == {"repos.configured": "fail", "packages.virt": "skip"}
    assert "could not tell" in results["repos.configured"].detail


def test_rocky_appstream_disabled_is_named(host_root):
    root = host_root("pkg-rocky9")
    repo = root / "etc/yum.repos.d/rocky.repo"
    text = repo.read_text()
    repo.write_text(text.replace("[appstream]\nname=Rocky Linux $releasever - AppStream\n",
                                 "[appstream]\nname=Rocky Linux $releasever - AppStream\nenabled = 0\n")
                    .replace("enabled=1\ncountme=1\nmetadata_expire=6h\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-Rocky-9\n"
                             "\n[appstream-debuginfo]", "countme=1\n\n[appstream-debuginfo]"))
    _, results = run_on(root)
    repos = results["repos.configured"]
    assert repos.status.value == "fail"  # qemu-kvm is not installed and cannot come from BaseOS
    assert repos.summary == "2 enabled source(s), but AppStream is disabled"
    assert "dnf config-manager --set-enabled appstream" in repos.remediation
    build_rpm_database(root, (Path(__file__).parent / "hosts/pkg-rhel9-enabled/RPM-QA").read_text())
    _, results = run_on(root)
    assert results["repos.configured"].status.value == "warn"


def test_rocky_names_as_written_and_mirrorlist(host_root):
    _, results = run_on(host_root("pkg-rocky9"))
    src = {s["id"]: s for s in results["repos.configured"].evidence["sources"]}
    assert src["baseos"]["name"] == "Rocky Linux $releasever - BaseOS"
    assert src["baseos"]["url_key"] == "mirrorlist"
    assert src["baseos"]["urls"] == [
        "https://mirrors.rockylinux.org/mirrorlist?arch=$basearch&repo=BaseOS-$releasever$rltype"]
    assert [i for i, s in src.items() if s["enabled"]] == ["extras", "baseos", "appstream"]  # file order
    assert results["packages.virt"].evidence["missing"] == ["QEMU/KVM", "libvirt daemon", "virt-install",
                                                            "guest firmware"]


def test_debian12_deb822(host_root):
    _, results = run_on(host_root("pkg-debian12-deb822"))
    repos = results["repos.configured"]
    assert [(s["urls"], s["suites"], s["components"]) for s in repos.evidence["sources"]] == [
        (["http://deb.debian.org/debian"], ["bookworm", "bookworm-updates"], ["main"]),
        (["http://deb.debian.org/debian-security"], ["bookworm-security"], ["main"]),
    ]
    # apt ignores files without a .list/.sources extension
    assert all("disabled-by-farm" not in s["file"] for s in repos.evidence["sources"])
    pkgs = results["packages.virt"]
    assert pkgs.evidence["installed"]["guest firmware"] == {"ovmf": "2022.11-6+deb12u2", "seabios": "1.16.2-1"}
    assert pkgs.evidence["installed"]["QEMU/KVM"] == {"qemu-system-x86": "1:7.2+dfsg-7+deb12u7"}


def test_debian12_enabled_no(host_root):
    _, results = run_on(host_root("pkg-debian12-disabled"))
    repos = results["repos.configured"]
    assert repos.summary == "2 source(s) configured, all disabled"
    assert repos.remediation == ("Set 'Enabled: yes' in /etc/apt/sources.list.d/debian.sources, "
                                 "then 'apt-get update'.")
    pkgs = results["packages.virt"]
    # libvirt-daemon-system is "deinstall ok config-files": not installed
    assert pkgs.remediation == "Install them: 'apt-get update && apt-get install qemu-system-x86 libvirt-daemon-system virtinst ovmf'."
    assert "None of the KVM stack is installed yet" in pkgs.detail


def test_ubuntu_one_line_with_options_and_comments(host_root):
    _, results = run_on(host_root("pkg-ubuntu-oneline"))
    repos = results["repos.configured"]
    srcs = repos.evidence["sources"]
    enabled = [s for s in srcs if s["enabled"]]
    assert len(enabled) == 11 and repos.evidence["enabled"] == 11
    commented = [s for s in srcs if s.get("commented_out")]
    assert len(commented) == 10 and all(s["types"] == ["deb-src"] for s in commented)
    docker = [s for s in srcs if s["file"] == "/etc/apt/sources.list.d/docker.list"]
    assert docker == [{"file": "/etc/apt/sources.list.d/docker.list", "line": 1, "enabled": True,
                       "urls": ["https://download.docker.com/linux/ubuntu"], "format": "one-line",
                       "types": ["deb"], "suites": ["jammy"], "components": ["stable"],
                       "options": {"arch": "amd64", "signed-by": "/etc/apt/keyrings/docker.gpg"}}]
    assert not any(s["file"].endswith(".save") for s in srcs)
    pkgs = results["packages.virt"]
    assert pkgs.evidence["missing"] == ["virt-install"]  # seabios counts as guest firmware
    assert pkgs.remediation == "Install them: 'apt-get update && apt-get install virtinst'."


def test_opensuse_zypper(host_root):
    _, results = run_on(host_root("pkg-opensuse-leap"))
    repos = results["repos.configured"]
    assert repos.evidence["managers"] == ["zypper"]
    assert repos.evidence["enabled"] == 5
    assert "repo-oss (Main Repository)" in repos.summary
    pkgs = results["packages.virt"]
    assert set(pkgs.evidence["installed"]) == {"QEMU/KVM", "libvirt daemon", "virt-install", "guest firmware"}
    assert pkgs.evidence["source"] == "/usr/lib/sysimage/rpm"


def test_opensuse_missing_packages_use_zypper(host_root):
    root = host_root("pkg-opensuse-leap")
    build_rpm_database(root, "bash\t4.4-150400.27.3.2\n")
    _, results = run_on(root)
    assert results["packages.virt"].remediation == (
        "Install them: 'zypper install qemu-kvm libvirt-daemon-qemu virt-install qemu-ovmf-x86_64'.")
    for f in (root / "etc/zypp/repos.d").iterdir():
        f.write_text(f.read_text().replace("enabled=1", "enabled=0"))
    _, results = run_on(root)
    repos = results["repos.configured"]
    assert repos.status.value == "fail"
    assert repos.remediation == ("'zypper modifyrepo -e repo-backports-update repo-non-oss repo-oss repo-sle-update "
                                 "repo-update', then 'zypper refresh'.")


def test_no_etc_skips_both(tmp_path):
    _, results = run_on(tmp_path)
    assert statuses(results) == {"repos.configured": "skip", "packages.virt": "skip"}


def test_unknown_package_manager_skips(host_root):
    _, results = run_on(host_root("intel-baremetal-vmx"))  # /etc without apt, dnf or zypper
    assert statuses(results) == {"repos.configured": "skip", "packages.virt": "skip"}


def test_no_sources_at_all_on_debian_fails(host_root):
    root = host_root("pkg-debian12-disabled")
    (root / "etc/apt/sources.list.d/debian.sources").unlink()
    _, results = run_on(root)
    repos = results["repos.configured"]
    assert (repos.status.value, repos.summary) == ("fail", "no package source configured")
    assert "deb.debian.org" in repos.remediation


def test_repo_names_are_shown_unescaped_in_the_text_report(host_root):
    root = host_root("pkg-rocky9")
    (root / "etc/yum.repos.d/my local.repo").write_text(
        "[local-mirror]\nname = Dépôt \"local\" <lab> & $basearch\\n\nbaseurl = file:///srv/mirror/el9\n")
    report, results = run_on(root)
    assert "local-mirror (Dépôt \"local\" <lab> & $basearch\\n)" in results["repos.configured"].summary
    text = render(report, "text", columns=200)  # wide enough that the summary stays on one line
    assert "local-mirror (Dépôt \"local\" <lab> & $basearch\\n)" in text
    assert "&amp;" not in text and "&lt;" not in text


# -- parsers ------------------------------------------------------------------------------------------
def test_dnf_enabled_spellings_defaults_and_spacing():
    text = ("[a]\nbaseurl=http://x/a\n"
            "[b]\nenabled = 0\nbaseurl=http://x/b\n"
            "[c]\nenabled=false\nbaseurl=http://x/c\n"
            "[d]\nenabled=True\nbaseurl=http://x/d\n"
            "[e]\nenabled=no\nmetalink=https://mirrors.fedoraproject.org/metalink?repo=fedora-$releasever\n"
            "[f]\nenabled=On\nbaseurl=http://x/f\n"
            "[g]\nenabled=maybe\nbaseurl=http://x/g\n"
            "[h]\nname=no URL at all\n")
    got = {s.id: (s.enabled, s.usable) for s in parse_dnf_repo(text, "/etc/yum.repos.d/t.repo")}
    assert got == {"a": (True, True), "b": (False, False), "c": (False, False), "d": (True, True),
                   "e": (False, False), "f": (True, True), "g": (False, False), "h": (True, False)}
    g, h = parse_dnf_repo(text)[-2:]
    assert "enabled=maybe is not a boolean" in g.problems[0]
    assert h.problems == ("no baseurl, mirrorlist or metalink",)


def test_dnf_names_with_spaces_ids_with_spaces_crlf_and_continuations():
    text = ("# comment\r\n[my-repo]\r\nname = My Repo: the one with spaces\r\n"
            "baseurl = http://a.example/el9/\r\n  http://b.example/el9/,http://c.example/el9/\r\nenabled=1\r\n"
            "\r\n[bad id]\r\nname=Bad\r\nbaseurl=http://x/\r\n")
    first, second = parse_dnf_repo(text, "f.repo")
    assert (first.id, first.name, first.line) == ("my-repo", "My Repo: the one with spaces", 2)
    assert first.urls == ("http://a.example/el9/", "http://b.example/el9/", "http://c.example/el9/")
    assert first.usable
    assert second.id == "bad id" and not second.usable
    assert "dnf refuses the repository id [bad id]" in second.problems[0]


def test_dnf_main_section_skipped_and_broken_file_survives():
    assert parse_dnf_repo("[main]\ngpgcheck=1\n") == []
    srcs = parse_dnf_repo("baseurl=http://orphan/\n[ok]\nbaseurl=http://x/\nthis line is junk\n")
    assert [s.id for s in srcs] == ["ok"]
    assert any("before the first [section]" in p for p in srcs[0].problems)
    assert any("cannot parse this line is junk" in p for p in srcs[0].problems)
    assert parse_dnf_repo("") == []


def test_zypper_enabled_defaults_to_true_and_uses_strToTrue():
    srcs = parse_zypper_repo("[oss]\nname=Main Repository\nbaseurl=http://x/\n"
                             "[off]\nenabled=0\nbaseurl=http://y/\n[odd]\nenabled=maybe\nbaseurl=http://z/\n")
    assert [(s.id, s.enabled) for s in srcs] == [("oss", True), ("off", False), ("odd", False)]
    assert srcs[0].label == "oss (Main Repository)"


def test_apt_one_line_options_comments_and_oddities():
    text = ("deb [arch=amd64,arm64 signed-by=/k.gpg] https://example.org/apt stable main contrib # trailing\n"
            "deb [ trusted=yes ] file:/srv/repo ./\n"
            "#deb http://old.example/ buster main\n"
            "## this is prose, not a source\n"
            "# deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_]/ bookworm main\n"
            "deb-src http://deb.debian.org/debian bookworm main\n"
            "deb http://x.example/ bookworm\n"
            "rpm http://ancient/ foo bar\n")
    srcs = parse_apt_list(text, "/etc/apt/sources.list")
    a, b, c, d, e, f, g = srcs
    assert (a.options, a.urls, a.suites, a.components) == (
        {"arch": "amd64,arm64", "signed-by": "/k.gpg"}, ("https://example.org/apt",), ("stable",), ("main", "contrib"))
    assert (b.options, b.urls, b.suites, b.components, b.usable) == ({"trusted": "yes"}, ("file:/srv/repo",),
                                                                    ("./",), (), True)
    assert (c.commented, c.enabled, c.urls, c.line) == (True, False, ("http://old.example/",), 3)
    assert d.commented and d.urls == ("cdrom:[Debian",)  # apt itself cannot read it either; it stays disabled
    assert e.types == ("deb-src",) and e.usable
    assert not f.usable and "needs at least one component" in f.problems[0]
    assert not g.usable and g.problems == ("not a source line: rpm http://ancient/ foo bar",)


def test_deb822_stanzas_comments_continuations_and_enabled():
    text = ("# leading comment\n"
            "Types: deb deb-src\n"
            "URIs: http://deb.debian.org/debian\n"
            "# a comment between fields\n"
            "Suites: bookworm\n"
            "  bookworm-updates\n"
            "Components: main contrib\n"
            "Signed-By:\n"
            " -----BEGIN PGP PUBLIC KEY BLOCK-----\n"
            " .\n"
            " mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR0lsD1jf8=\n"
            " -----END PGP PUBLIC KEY BLOCK-----\n"
            "\n\n"
            "types: deb\r\nuris: http://a.example/ http://b.example/\r\nsuites: ./\r\nEnabled: no\r\n"
            "\n"
            "Types: deb\nURIs: http://c.example/\n"
            "\n"
            "# Types: deb\n# URIs: http://commented.example/\n")
    a, b, c = parse_apt_sources(text, "/etc/apt/sources.list.d/x.sources")
    assert (a.types, a.suites, a.components, a.line, a.usable) == (
        ("deb", "deb-src"), ("bookworm", "bookworm-updates"), ("main", "contrib"), 2, True)
    assert a.options == {"signed-by": "(embedded OpenPGP key)"}
    assert (b.urls, b.suites, b.enabled) == (("http://a.example/", "http://b.example/"), ("./",), False)
    assert not c.usable and c.problems == ("no Suites field",)


def test_dpkg_status_only_install_ok_installed():
    text = ("Package: a\nStatus: install ok installed\nVersion: 1.0\nDescription: x\n long\n .\n more\n\n"
            "Package: b\nStatus: deinstall ok config-files\nVersion: 2.0\n\n"
            "Package: c\nStatus: install ok unpacked\nVersion: 3.0\n\n"
            "Package: d\r\nStatus: hold ok installed\r\nVersion: 4.0\r\n\r\n"
            "Package: e\nStatus: install ok installed\nArchitecture: i386\nVersion: 5.0\n\n"
            "Package: e\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.0\n")
    assert parse_dpkg_status(text) == {"a": "1.0", "e": "5.0"}
    assert parse_dpkg_status("") == {}


def test_rpm_qa_names_versions_and_duplicates():
    assert parse_rpm_qa("kernel-core\t5.14-1\nkernel-core\t5.14-2\nbash\t5.1\nqemu-kvm\n\n") == {
        "kernel-core": "5.14-1, 5.14-2", "bash": "5.1", "qemu-kvm": ""}


# -- --online -------------------------------------------------------------------------------------------
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www, stopped after the test."""
    www = tmp_path / "www"
    www.mkdir()

    def handler(*args, **kwargs):
        return _Quiet(*args, directory=str(www), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def dead_port():
    """A port on 127.0.0.1 with nothing listening (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _deb_root(host_root, uris):
    root = host_root("pkg-debian12-deb822")
    (root / "etc/apt/sources.list.d/debian.sources").write_text("".join(
        f"Types: deb\nURIs: {u}\nSuites: bookworm\nComponents: main\n\n" for u in uris))
    return root


ONLINE = Settings(online=True, check_timeout=5.0)


def _apt_mirror(www, path="debian", suite="bookworm"):
    dists = www / path / "dists" / suite
    dists.mkdir(parents=True)
    (dists / "InRelease").write_text("Origin: Debian\n")


def test_online_reachable_sources_pass(host_root, http_root):
    www, base = http_root
    _apt_mirror(www)
    root = _deb_root(host_root, [f"{base}/debian/"])
    _, results = run_on(root, ONLINE)
    repos = results["repos.configured"]
    assert repos.status.value == "pass"
    assert repos.evidence["sources"][0]["probe"] == {"reachable": True, "probes": [
        {"url": f"{base}/debian/dists/bookworm/InRelease", "result": "HTTP 200", "reachable": True}]}


def test_online_probes_the_metadata_not_the_base_url(host_root, http_root):
    # A mirror whose base URL has no index page (404) but serves its metadata is reachable, and one
    # that answers at its base URL but lacks the suite's InRelease is not: that is what apt would see.
    www, base = http_root
    _apt_mirror(www, "good")
    (www / "empty").mkdir()
    (www / "empty" / "index.html").write_text("mirror home")
    root = _deb_root(host_root, [f"{base}/good", f"{base}/empty/"])
    _, results = run_on(root, ONLINE)
    probes = [s["probe"] for s in results["repos.configured"].evidence["sources"]]
    assert [p["reachable"] for p in probes] == [True, False]
    assert probes[1]["probes"][0] == {"url": f"{base}/empty/dists/bookworm/InRelease", "result": "HTTP 404",
                                      "reachable": False}


def test_online_is_off_by_default(host_root):
    root = _deb_root(host_root, [f"http://127.0.0.1:{dead_port()}/debian/"])
    _, results = run_on(root)
    assert results["repos.configured"].status.value == "pass"
    assert "probe" not in results["repos.configured"].evidence["sources"][0]


def test_online_unreachable_source_is_named(host_root, http_root):
    www, base = http_root
    _apt_mirror(www)
    dead = f"http://127.0.0.1:{dead_port()}/mirror/"
    root = _deb_root(host_root, [f"{base}/debian/", dead])
    _, results = run_on(root, ONLINE)
    repos = results["repos.configured"]
    assert repos.status.value == "warn"
    assert repos.summary == f"2 enabled source(s), but 1 unreachable: {dead} bookworm main"
    assert dead in repos.detail and "refused" in repos.detail.lower()


def test_online_everything_unreachable_and_nothing_installed_fails(host_root):
    root = host_root("pkg-debian12-disabled")
    dead = f"http://127.0.0.1:{dead_port()}/debian"
    (root / "etc/apt/sources.list").write_text(f"deb {dead} bookworm main\n")
    report, results = run_on(root, ONLINE)
    repos = results["repos.configured"]
    assert repos.status.value == "fail"
    assert dead in repos.summary and dead in render_text(report)


def test_online_expands_dnf_variables(host_root, http_root):
    www, base = http_root
    (www / "9/BaseOS/x86_64/os/repodata").mkdir(parents=True)
    (www / "9/BaseOS/x86_64/os/repodata/repomd.xml").write_text("<repomd/>")
    root = host_root("pkg-rocky9")
    for f in (root / "etc/yum.repos.d").iterdir():
        f.unlink()
    (root / "etc/yum.repos.d/lab.repo").write_text(
        f"[lab-baseos]\nname=Lab $releasever BaseOS\nbaseurl={base}/$releasever/BaseOS/$basearch/os/\n"
        f"[lab-appstream]\nname=Lab AppStream$rltype\nbaseurl={base}/$releasever/AppStream$rltype/$basearch/os/\n"
        "[lab-unknown]\nbaseurl=http://127.0.0.1:1/$nosuchvar/\n")
    _, results = run_on(root, ONLINE)
    repos = results["repos.configured"]
    probes = {s["id"]: s["probe"] for s in repos.evidence["sources"]}
    assert probes["lab-baseos"]["probes"][0] == {"url": f"{base}/9/BaseOS/x86_64/os/repodata/repomd.xml",
                                                 "result": "HTTP 200", "reachable": True}
    assert probes["lab-appstream"]["probes"][0] == {"url": f"{base}/9/AppStream/x86_64/os/repodata/repomd.xml",
                                                    "result": "HTTP 404", "reachable": False}
    assert probes["lab-unknown"] == {"reachable": None, "probes": [
        {"url": "http://127.0.0.1:1/$nosuchvar/", "result": "not probed: unresolved variable"}]}
    assert repos.status.value == "warn"  # one source is still reachable
    assert repos.summary.startswith("3 enabled source(s), but 1 unreachable: lab-appstream (Lab AppStream$rltype)")


def test_querying_an_rpm_database_writes_nothing_into_the_root(host_root):
    # Without the backend named, rpm creates an empty database of its own default kind in the root.
    root = host_root("pkg-opensuse-leap")
    db = root / "usr/lib/sysimage/rpm"
    for f in db.iterdir():
        f.unlink()
    (db / "Packages.db").write_bytes(b"")  # an ndb placeholder, as the capture had
    before = sorted(p.name for p in db.iterdir())
    run_on(root)
    assert sorted(p.name for p in db.iterdir()) == before
