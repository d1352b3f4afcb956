# SPDX-License-Identifier: GPL-2.0-or-later
"""os-release and legacy release files: the parser on real odd inputs, and the host.os block read
through the Host (links resolve inside --root, FIFOs are refused), never through open()."""
import os

import pytest

from kvmcheck.facts.context import Context, Settings
from kvmcheck.core.host import Host
from kvmcheck.parsers.os_release import legacy_identity, os_identity, parse_os_release

# RHEL 9.4's /usr/lib/os-release, abridged: double quotes, a URL, ID_LIKE with one word.
RHEL9 = '''NAME="Red Hat Enterprise Linux"
VERSION="9.4 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.4"
PRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"
HOME_URL="https://www.redhat.com/"
'''

# Debian 12: unquoted ID and VERSION_ID, as Debian writes them.
DEBIAN12 = '''PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
'''


def test_quotes_escapes_comments_and_garbage_lines():
    text = ("# a comment\n\n  NAME='Single Quoted'  \nID=\"my\\\"distro\\\\\"\nVERSION_ID=\"unterminated\n"
            "not a line\n=value\n9KEY=x\nID_LIKE=\"a b\"\nEMPTY=\nCTRL=\"a\x1b[31mb\"\n")
    fields = parse_os_release(text)
    assert fields == {"NAME": "Single Quoted", "ID": 'my"distro\\', "ID_LIKE": "a b", "EMPTY": "",
                      "CTRL": "a[31mb"}


def test_identity_from_real_files_and_the_distro_package_ids():
    assert os_identity(parse_os_release(RHEL9)) == {"id": "rhel", "name": "Red Hat Enterprise Linux",
                                                     "version": "9.4", "like": "fedora"}
    assert os_identity(parse_os_release(DEBIAN12))["version"] == "12"
    # distro's names, which reports before kvmcheck 0.2 carried: kept so fleet diffs do not churn
    assert os_identity({"ID": "ol", "VERSION_ID": "8.9"})["id"] == "oracle"
    assert os_identity({"ID": "opensuse-leap"})["id"] == "opensuse"
    assert os_identity({"NAME": "No id"}) is None


@pytest.mark.parametrize("path,text,expected", [
    ("/etc/redhat-release", "Red Hat Enterprise Linux Server release 6.10 (Santiago)\n", ("rhel", "6.10")),
    ("/etc/redhat-release", "CentOS release 6.10 (Final)\n", ("centos", "6.10")),
    ("/etc/redhat-release", "Fedora release 20 (Heisenbug)\n", ("fedora", "20")),
    ("/etc/SuSE-release", "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n", ("sles", "11")),
    ("/etc/SuSE-release", "openSUSE 13.1 (x86_64)\nVERSION = 13.1\n", ("opensuse", "13.1")),
    ("/etc/debian_version", "6.0.10\n", ("debian", "6.0.10")),
    ("/etc/debian_version", "bookworm/sid\n", None),
    ("/etc/redhat-release", "\n\n", None),
    ("/etc/not-a-release-file", "Foo 1.0\n", None),
    # garbage in a damaged root names no release (it once gave rhel "2")
    ("/etc/redhat-release", "\x8a\x02 2 \ufffd\x00junk\n", None),
    ("/etc/redhat-release", "2 3 4\n", None),
    ("/etc/SuSE-release", "VERSION = 12\n", None),
    ("/etc/debian_version", "12.4 but not only\n", None),
])
def test_legacy_release_files(path, text, expected):
    found = legacy_identity(path, text)
    assert (found["id"], found["version"]) == expected if expected else found is None


def _os(root) -> dict:
    return Context(Host(str(root)), Settings()).os_name()


def test_absolute_os_release_link_resolves_inside_the_root(tmp_path):
    """/etc/os-release -> /usr/lib/os-release (absolute) names the target's file, not the running
    system's: the distro package, which kvmcheck used before, opened it with open() and followed the
    link out of --root, so a Kickstart %post on Debian reported the installer's distribution."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text('ID=testos\nNAME="Test OS"\nVERSION_ID=7\n')
    os.symlink("/usr/lib/os-release", tmp_path / "etc/os-release")
    assert _os(tmp_path) == {"id": "testos", "name": "Test OS", "version": "7", "like": ""}


def test_legacy_release_file_when_no_os_release(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/redhat-release").write_text("CentOS release 6.10 (Final)\n")
    assert _os(tmp_path)["id"] == "centos"


def test_fifo_and_directory_release_files_do_not_block(tmp_path):
    """A FIFO would block open() for ever; the Host refuses it and the next source answers."""
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc/os-release")
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").mkdir()
    os.mkfifo(tmp_path / "etc/centos-release")
    (tmp_path / "etc/debian_version").write_text("11.9\n")
    assert _os(tmp_path)["id"] == "debian"
