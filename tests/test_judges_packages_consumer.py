# SPDX-License-Identifier: GPL-2.0-or-later
"""The judges of checks/packages.py and checks/consumer.py called directly with fact records (no root, no
probe): each row is the facts a host could show and the (status, summary) it must get.  And the facts of
kvmcheck/facts/packages.py and consumer.py on captured roots, where absent and denied must stay apart."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kvmcheck.checks import consumer, packages
from kvmcheck.core.host import Host
from kvmcheck.core.settings import Settings
from kvmcheck.facts import Facts, Later
from kvmcheck.facts.consumer import (ContainerKvm, GroupsInEffect, Identity, LibvirtAnswers, Proof, QemuIdentity,
                                     QemuRun)
from kvmcheck.facts.packages import InstalledPackages, KvmStack, PackageSources, PackageTooling, SystemDirs
from kvmcheck.facts.system import Arch
from kvmcheck.parsers.container import ContainerFacts
from kvmcheck.parsers.qemu_stack import QmpAnswers, VirshNetwork
from kvmcheck.parsers.repos import Source

from conftest import as_nobody, materialize


def later(value):
    return Later(lambda: value)


def never():
    """A Later the judge must not ask on this branch (a probe it has no need of)."""
    def fail():
        raise AssertionError("asked for a probe this branch does not need")
    return Later(fail)


def got(outcome):
    return outcome.status.value, outcome.summary


# -- packages.virt -----------------------------------------------------------------------------------------
DEB = {"id": "debian", "version": "12"}
ALL_DEB = {"QEMU/KVM": {"qemu-system-x86": "1:7.2"}, "libvirt daemon": {"libvirt-daemon-system": "9.0"},
           "virt-install": {"virtinst": "4.1"}, "guest firmware": {"ovmf": "2022"}}
DB_OK = InstalledPackages("dpkg", {"qemu-system-x86": "1:7.2", "virtinst": "4.1"}, "/var/lib/dpkg/status", "", "ok")
DB_DENIED = InstalledPackages("dpkg", None, "/var/lib/dpkg/status",
                              "cannot read /var/lib/dpkg/status: Permission denied", "denied")
DIRS = SystemDirs(True, True)


@pytest.mark.parametrize("dirs, db, stack, settings, expected", [
    (SystemDirs(False, False), DB_OK, None, Settings(),
     ("skip", "no /etc or /var/lib in this root: not an installed system")),
    (DIRS, DB_DENIED, None, Settings(), ("skip", "cannot read /var/lib/dpkg/status: Permission denied")),
    (DIRS, DB_OK, KvmStack("deb", DEB, ALL_DEB, ()), Settings(),
     ("pass", "installed: QEMU/KVM: qemu-system-x86 1:7.2; libvirt daemon: libvirt-daemon-system 9.0; "
              "virt-install: virtinst 4.1; guest firmware: ovmf 2022")),
    (DIRS, DB_OK, KvmStack("deb", DEB, {"QEMU/KVM": {"qemu-system-x86": "1:7.2"}},
                           (("libvirt daemon", "libvirt-daemon-system"), ("guest firmware", "ovmf"))), Settings(),
     ("warn", "not installed: libvirt daemon (libvirt-daemon-system), guest firmware (ovmf)")),
    (DIRS, DB_OK, KvmStack("deb", DEB, ALL_DEB, ()), Settings(required_packages=("virtinst", "swtpm")),
     ("fail", "required package(s) not installed: swtpm")),
])
def test_packages_virt_judges(dirs, db, stack, settings, expected):
    out = packages.packages_virt.func(system_dirs=dirs, installed_packages=db, kvm_stack=stack, settings=settings)
    assert got(out) == expected


def test_packages_virt_names_the_missing_command_and_seabios_only():
    stack = KvmStack("rpm", {"id": "centos", "version": "7"}, {}, (("QEMU/KVM", "qemu-kvm"), ("guest firmware",
                                                                                            "edk2-ovmf")))
    out = packages.packages_virt.func(system_dirs=DIRS, installed_packages=DB_OK, kvm_stack=stack, settings=Settings())
    assert out.remediation == "Install them: 'yum install qemu-kvm OVMF'."
    seabios = dict(ALL_DEB, **{"guest firmware": {"seabios": "1.16"}})
    out = packages.packages_virt.func(system_dirs=DIRS, installed_packages=DB_OK,
                                      kvm_stack=KvmStack("deb", DEB, seabios, ()), settings=Settings())
    assert (out.status.value, out.detail) == (
        "pass", "Only SeaBIOS is installed: UEFI guests (Windows 11, Secure Boot) need OVMF as well.")


# -- repos.configured --------------------------------------------------------------------------------------
def dnf(id_, enabled=True, url="https://mirror.example/9/$basearch/os/", file="/etc/yum.repos.d/rocky.repo"):
    return Source("dnf", file, 1, id_, id_, enabled, (url,), "baseurl", format="ini")


APT = Source("apt", "/etc/apt/sources.list", 1, "", "http://deb.debian.org/debian", True,
             ("http://deb.debian.org/debian",), "uri", ("deb",), ("bookworm",), ("main",), format="one-line")
INSTALLED = KvmStack("rpm", {}, ALL_DEB, ())
MISSING = KvmStack("rpm", {}, {}, (("QEMU/KVM", "qemu-kvm"),))
NOT_ASKED = object()


def sources(*srcs, managers=("dnf",), unreadable=()):
    return PackageSources(True, managers, srcs, unreadable, ())


@pytest.mark.parametrize("found, stack, settings, expected", [
    (PackageSources(False, (), (), (), ()), NOT_ASKED, Settings(),
     ("skip", "no /etc in this root: not an installed system")),
    (sources(managers=()), NOT_ASKED, Settings(), ("skip", "no apt, dnf/yum or zypper configuration in /etc")),
    (sources(dnf("baseos")), NOT_ASKED, Settings(required_repos=("epel",)),
     ("fail", "required package source(s) not enabled: epel")),
    (sources(dnf("baseos", False), dnf("appstream", False)), MISSING, Settings(),
     ("fail", "2 source(s) configured, all disabled")),
    (sources(dnf("baseos", False), dnf("appstream", False)), INSTALLED, Settings(),
     ("warn", "2 source(s) configured, all disabled; KVM packages already installed")),
    (sources(dnf("baseos", False), unreadable=("/etc/yum.repos.d/x.repo: Permission denied",)), MISSING, Settings(),
     ("skip", "cannot read /etc/yum.repos.d/x.repo: Permission denied")),
    (sources(dnf("baseos"), dnf("appstream", False)), MISSING, Settings(),
     ("fail", "1 enabled source(s), but AppStream is disabled")),
    (sources(dnf("baseos"), dnf("appstream", False)), INSTALLED, Settings(),
     ("warn", "1 enabled source(s), but AppStream is disabled")),
    (sources(APT, managers=("apt",)), None, Settings(),
     ("pass", "1 enabled source(s): http://deb.debian.org/debian bookworm main")),
])
def test_repos_configured_judges(found, stack, settings, expected):
    stack = never() if stack is NOT_ASKED else later(stack)  # the package database is read only when needed
    out = packages.repos_configured.func(package_sources=found, kvm_stack_later=stack, arch=Arch("x86_64", "uname"),
                                         package_tooling=PackageTooling("rpm", {}), source_probes=never(),
                                         settings=settings)
    assert got(out) == expected


@pytest.mark.parametrize("reachable, stack, expected", [
    (True, MISSING, ("pass", "1 enabled source(s): http://deb.debian.org/debian bookworm main")),
    (False, INSTALLED, ("warn", "1 enabled source(s), but 1 unreachable: http://deb.debian.org/debian bookworm main")),
    (False, MISSING, ("fail", "1 enabled source(s), but 1 unreachable: http://deb.debian.org/debian bookworm main")),
])
def test_repos_configured_online_judges_the_probes(reachable, stack, expected):
    probes = {0: {"reachable": reachable, "probes": [{"url": "http://deb.debian.org/debian/dists/bookworm/InRelease",
                                                      "result": "HTTP 200" if reachable else "timed out",
                                                      "reachable": reachable}]}}
    out = packages.repos_configured.func(package_sources=sources(APT, managers=("apt",)), kvm_stack_later=later(stack),
                                         package_tooling=PackageTooling("deb", DEB), arch=Arch("x86_64", "uname"),
                                         source_probes=later(probes), settings=Settings(online=True))
    assert got(out) == expected
    assert out.evidence["sources"][0]["probe"] == probes[0] and out.evidence["online"] is True


# -- kvm.consumer ------------------------------------------------------------------------------------------
QEMU = Identity("libvirt-qemu", 64055, 64055, (108, 64055), "the distribution's default")
NAMES = {0: "root", 108: "kvm", 64055: "libvirt-qemu"}
KVM_0600 = {"present": True, "mode": "0600", "owner": 0, "group": "root", "rw": False}
KVM_0660 = {"present": True, "mode": "0660", "owner": 0, "group": "kvm", "rw": True}
ABSENT = {"present": False, "kind": None}


def devices(kvm):
    return {"/dev/kvm": kvm, "/dev/vhost-net": ABSENT, "/dev/net/tun": ABSENT}


def identity(who=QEMU, why="", passwd=True):
    return QemuIdentity(who, why, passwd, NAMES, "ok")


@pytest.mark.parametrize("installed, found, kvm, proof, live, expected", [
    (False, identity(), KVM_0600, never(), True, ("skip", "libvirt is not installed: nothing runs QEMU as its own "
                                                          "user yet")),
    (True, identity(None, "x", passwd=False), KVM_0600, never(), False,
     ("skip", "no /etc/passwd in this root: QEMU's user cannot be resolved")),
    (True, identity(None, "QEMU's user 'qemu' (qemu.conf user) is not in /etc/passwd"), KVM_0600, never(), False,
     ("fail", "QEMU's user cannot be resolved: QEMU's user 'qemu' (qemu.conf user) is not in /etc/passwd")),
    (True, identity(QEMU._replace(uid=0)), KVM_0600, never(), True,
     ("pass", "QEMU runs as root (the distribution's default): it can open every device")),
    (True, identity(), ABSENT, never(), False, ("skip", "no /dev/kvm in this root; libvirt-qemu is in group kvm")),
    (True, identity(QEMU._replace(groups=(64055,))), ABSENT, never(), False,
     ("warn", "no /dev/kvm in this root; libvirt-qemu is not in group kvm")),
    (True, identity(), ABSENT, never(), True, ("skip", "no /dev/kvm (see kvm.device)")),
    (True, identity(), KVM_0660, later(Proof("ok", 0)), True,
     ("pass", "libvirt-qemu opened /dev/kvm and created a VM (mode 0660, group kvm)")),
    (True, identity(), KVM_0600, later(Proof("open", 13)), True,
     ("fail", "libvirt-qemu cannot open /dev/kvm (EACCES): mode 0600, group root")),
    (True, identity(), KVM_0660, later(Proof("probe", 22)), True,
     ("fail", "libvirt-qemu opened /dev/kvm but KVM_CREATE_VM failed (EINVAL)")),
    (True, identity(), KVM_0660, later(Proof("error", "did not answer within 3 s")), True,
     ("skip", "the probe as libvirt-qemu did not finish: did not answer within 3 s")),
    (True, identity(), KVM_0660, later(None), False, ("pass", "libvirt-qemu may open /dev/kvm (mode 0660, group kvm)")),
    (True, identity(), KVM_0600, later(None), True,
     ("fail", "libvirt-qemu cannot open /dev/kvm: mode 0600, group root")),
])
def test_kvm_consumer_judges(installed, found, kvm, proof, live, expected):
    out = consumer.kvm_consumer.func(libvirt_daemon_installed=installed, qemu_identity=found,
                                     consumer_devices=devices(kvm) if found.identity else {}, consumer_proof=proof,
                                     live=live, libvirt_stale_config=later(None))
    assert got(out) == expected


# -- qemu.accel --------------------------------------------------------------------------------------------
ARGV = ("/usr/bin/qemu-system-x86_64", "-machine", "none", "-accel", "kvm", "-nodefaults", "-nographic", "-S",
        "-qmp", "stdio")
VERSION = {"qemu": {"major": 7, "minor": 2, "micro": 22}}
MACHINES = [{"name": "pc-q35-7.2"}, {"name": "pc-i440fx-7.2"}]


def answered(kvm, machines=MACHINES):
    return QemuRun(ARGV, 4.0, None, "", "", 0.05, 0, "", QmpAnswers({"version": VERSION},
                                                                    [{}, kvm, VERSION, machines, {}]))


@pytest.mark.parametrize("binary, run, lockout, expected", [
    (None, never(), never(), ("skip", "no QEMU system emulator for x86 is installed")),
    (ARGV[0], later(QemuRun(ARGV, 4.0, "timeout", "", "", 4.0, None, "", None)), later(None),
     ("fail", "/usr/bin/qemu-system-x86_64 did not answer within 4 s")),
    (ARGV[0], later(QemuRun(ARGV, 4.0, "cannot-run", "Permission denied", "[Errno 13] Permission denied", 0.0, None,
                            "", None)), later(None),
     ("fail", "/usr/bin/qemu-system-x86_64 cannot be run: Permission denied")),
    (ARGV[0], later(QemuRun(ARGV, 4.0, None, "", "", 0.1, 1, "Could not access KVM kernel module: Permission denied",
                            QmpAnswers(None, []))), later(None),
     ("fail", "QEMU refused -accel kvm: 'Could not access KVM kernel module: Permission denied'")),
    (ARGV[0], later(answered({"present": True, "enabled": False})), later(None),
     ("fail", "QEMU 7.2.22 runs without KVM (query-kvm: {'present': True, 'enabled': False})")),
    (ARGV[0], later(answered({"present": True, "enabled": True}, [{"name": "microvm"}])), later(None),
     ("warn", "QEMU 7.2.22 uses KVM but offers none of pc-q35-*, pc-i440fx-*")),
    (ARGV[0], later(answered({"present": True, "enabled": True})), later(None),
     ("pass", "QEMU 7.2.22 runs with KVM as root (pc-i440fx-*, pc-q35-*)")),
])
def test_qemu_accel_judges(binary, run, lockout, expected):
    out = consumer.qemu_accel.func(qemu_binary=binary, qemu_packages=never(), qemu_probe=run,
                                   consumer_lockout=lockout, family="x86", live=True, invoking_uid=0)
    assert got(out) == expected


def test_qemu_accel_offline_names_the_package_and_a_locked_out_user_is_the_cause():
    out = consumer.qemu_accel.func(qemu_binary="/usr/libexec/qemu-kvm", qemu_packages=later({"qemu-kvm": "8.2.0-11"}),
                                   qemu_probe=never(), consumer_lockout=never(), family="x86", live=False,
                                   invoking_uid=0)
    assert got(out) == ("skip", "offline root: QEMU is not run (qemu-kvm 8.2.0-11)")
    out = consumer.qemu_accel.func(qemu_binary=ARGV[0], qemu_packages=never(), qemu_probe=later(answered(
        {"present": True, "enabled": True})), consumer_lockout=later("libvirt-qemu"), family="x86", live=True,
        invoking_uid=0)
    assert (out.status.value, out.caused_by) == ("pass", ("kvm.consumer",))
    assert "Under libvirt QEMU runs as libvirt-qemu, which cannot open /dev/kvm" in out.detail


# -- libvirt.daemon ----------------------------------------------------------------------------------------
IN_EFFECT = later(GroupsInEffect("libvirt", True, ""))  # every member of libvirt holds it
NONE = LibvirtAnswers(False, False, 0.02, (0, ""), ("x86_64",), None, {"domain": "kvm"}, None, None,
                      VirshNetwork("default", True, True, True), True, {"default": "/var/lib/libvirt/images"}, False)


@pytest.mark.parametrize("live, socket, answers, expected", [
    (False, None, never(), ("skip", "offline root: no libvirt daemon to ask")),
    (True, None, never(), ("skip", "no libvirt daemon is listening (no read-only socket under /run/libvirt)")),
    (True, "/run/libvirt/libvirt-sock-ro", later(NONE._replace(virsh_missing=True)),
     ("skip", "virsh is not installed (libvirt-clients, libvirt-client)")),
    (True, "/run/libvirt/libvirt-sock-ro", later(NONE._replace(caps_timeout=True, seconds=4.46)),
     ("warn", "libvirt did not answer 'virsh capabilities' within 4.5 s")),
    (True, "/run/libvirt/libvirt-sock-ro", later(NONE._replace(caps=(1, "error: failed to connect\n"))),
     ("fail", "'virsh -r capabilities' failed: 'error: failed to connect'")),
    (True, "/run/libvirt/libvirt-sock-ro", later(NONE._replace(arches=())),
     ("fail", "libvirt offers no KVM guests (no <domain type='kvm'> in its capabilities)")),
    (True, "/run/libvirt/libvirt-sock-ro", later(NONE._replace(seconds=3.5)),
     ("warn", "libvirt took 3.5 s to answer 'virsh capabilities'")),
    (True, "/run/libvirt/libvirt-sock-ro", later(NONE._replace(default_network=None, pools={})),
     ("warn", "libvirt offers KVM (x86_64); no network named default; no storage pool for /var/lib/libvirt/images")),
    (True, "/run/libvirt/libvirt-sock-ro", later(NONE),
     ("pass", "libvirt offers KVM guests (x86_64), the default network and an images pool")),
])
def test_libvirt_daemon_judges(live, socket, answers, expected):
    out = consumer.libvirt_daemon.func(libvirt_socket=socket, libvirt_answers=answers, consumer_lockout=later(None),
                                       live=live, libvirt_stale_config=later(()), libvirt_group_in_effect=IN_EFFECT)
    assert got(out) == expected


def test_libvirt_daemon_that_stopped_answering_says_so():
    out = consumer.libvirt_daemon.func(
        libvirt_socket="/run/libvirt/libvirt-sock-ro", consumer_lockout=later(None), live=True,
        libvirt_answers=later(NONE._replace(pools=None, stopped=True)), libvirt_stale_config=later(()),
        libvirt_group_in_effect=IN_EFFECT)
    assert got(out) == ("warn", "libvirt offers KVM (x86_64); libvirt stopped answering within the check's time")
    assert "pools" not in out.evidence and out.evidence["default_network"]["name"] == "default"


# -- container.kvm-access ----------------------------------------------------------------------------------
DOCKER = ContainerFacts("docker", ["PID 1's cgroup is /docker/0123"], [])


def kvm_in(kind="char", v1=False, listing=None, err=None):
    return ContainerKvm(kind, v1, later(listing) if v1 else never(), later(err))


@pytest.mark.parametrize("found, kvm, live, expected", [
    (ContainerFacts(None, [], [], looked=False), kvm_in(), True,
     ("skip", "no /proc/1/cgroup or /proc/self/mountinfo in this root: nothing shows whether it ran in a container")),
    (ContainerFacts(None, [], ["/.dockerenv"]), kvm_in(), True, ("pass", "not in a container")),
    (DOCKER, kvm_in(None), True, ("fail", "in a docker container without /dev/kvm")),
    (DOCKER, kvm_in(v1=True, listing="c 1:3 rwm\n"), True,
     ("fail", "the docker container's device cgroup denies /dev/kvm (10:232)")),
    (DOCKER, kvm_in(v1=True, listing="a *:* rwm\n"), False,
     ("skip", "a docker container with /dev/kvm: opening it decides, which an offline root cannot")),
    (DOCKER, kvm_in(err=1), True, ("fail", "/dev/kvm is in the docker container but cannot be opened (EPERM)")),
    (DOCKER, kvm_in(), True, ("pass", "in a docker container; /dev/kvm is passed in and opens")),
])
def test_container_kvm_access_judges(found, kvm, live, expected):
    out = consumer.container_kvm_access.func(container=found, container_kvm=kvm, live=live)
    assert got(out) == expected


# -- the facts on captured roots: absent and denied kept apart ---------------------------------------------
def readable_copy(name: str) -> Path:
    """A materialized captured root that nobody may traverse (pytest's tmp_path is root's alone)."""
    top = Path(tempfile.mkdtemp(prefix="kvmcheck-h6-"))
    os.chmod(top, 0o755)
    root = materialize(name, top)
    for d, _, files in os.walk(root):
        os.chmod(d, 0o755)
        for f in files:
            p = os.path.join(d, f)
            if not os.path.islink(p) and stat.S_ISREG(os.lstat(p).st_mode):
                os.chmod(p, 0o644)
    return root


@pytest.fixture
def nobody_root():
    made = []

    def make(name):
        made.append(readable_copy(name))
        return made[-1]

    yield make
    for root in made:
        shutil.rmtree(root.parent, ignore_errors=True)


def fact_as_nobody(root: Path, module: str, name: str, fields: str) -> list:
    code = (f"import json, sys; from kvmcheck.core.host import Host; from kvmcheck.facts import Facts; "
            f"import kvmcheck.facts.{module}; r = Facts(Host(sys.argv[1])).get({name!r}); "
            f"print(json.dumps([getattr(r, f) for f in {fields!r}.split()]))")
    proc = subprocess.run(as_nobody([sys.executable, "-c", code, str(root)]), capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_package_database_denied_is_not_absent(nobody_root):
    root = nobody_root("pkg-debian12-deb822")
    status = root / "var/lib/dpkg/status"
    assert fact_as_nobody(root, "packages", "installed_packages", "state db")[0] == "ok"
    os.chmod(status, 0)
    assert fact_as_nobody(root, "packages", "installed_packages", "state reason") == [
        "denied", "cannot read /var/lib/dpkg/status: Permission denied"]
    status.unlink()
    assert fact_as_nobody(root, "packages", "installed_packages", "state db") == ["absent", None]


def test_a_denied_source_file_is_named_and_an_absent_one_is_not(nobody_root):
    root = nobody_root("pkg-debian12-deb822")
    listed = sorted(p.name for p in (root / "etc/apt/sources.list.d").iterdir())
    path = f"/etc/apt/sources.list.d/{listed[0]}"
    os.chmod(root / path.lstrip("/"), 0)
    unreadable, denied = fact_as_nobody(root, "packages", "package_sources", "unreadable denied")
    assert (unreadable, denied) == ([f"{path}: Permission denied"], [path])
    (root / path.lstrip("/")).unlink()
    assert fact_as_nobody(root, "packages", "package_sources", "unreadable denied") == [[], []]


def test_qemu_conf_denied_falls_back_to_the_defaults_and_says_so(nobody_root):
    root = nobody_root("consumer-debian-locked")
    conf = root / "etc/libvirt/qemu.conf"
    assert fact_as_nobody(root, "consumer", "qemu_identity", "conf_state")[0] == "ok"
    os.chmod(conf, 0)
    state, who = fact_as_nobody(root, "consumer", "qemu_identity", "conf_state identity")
    assert state == "denied" and who[0] == "libvirt-qemu"
    assert who[4].endswith("(/etc/libvirt/qemu.conf is not readable by uid 65534)")
    conf.unlink()
    assert fact_as_nobody(root, "consumer", "qemu_identity", "conf_state")[0] == "absent"


def test_facts_of_a_captured_root(host_root):
    root = host_root("consumer-rhel9")
    facts = Facts(Host(str(root)))
    found = facts.get("qemu_identity")
    assert (found.identity.user, found.conf_state, found.has_passwd) == ("qemu", "ok", True)
    assert facts.get("consumer_devices")["/dev/kvm"]["rw"] is True
    assert facts.get("consumer_proof").get() is None  # an offline root: nothing is opened
    assert facts.get("libvirt_daemon_installed") is True
    assert facts.get("installed_packages").db == "rpm"
    assert "qemu-kvm" in facts.get("qemu_packages").get()
