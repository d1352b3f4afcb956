# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck snapshot: the round trip, the allowlist (no secrets), and refusing unsafe archives."""
from __future__ import annotations

import errno
import fnmatch
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

import kvmcheck
from kvmcheck.tools import snapshot
from kvmcheck.facts.context import Settings
from kvmcheck.tools.snapshot import ArchiveError, open_archive

ROUND_TRIP = ("intel-baremetal-vmx", "amd-baremetal-svm", "arm64-kvm", "s390x-lpar", "pvm-host", "pkg-rhel9-enabled",
              "pkg-debian12-deb822", "libvirt-fedora-modular", "libvirt-debian-monolithic", "storage-nfs4",
              "storage-fc", "iommu-intel-gpu-shared", "iommu-arm64", "cg-v2", "cg-v1", "mem-ksm-running",
              "mem-1g-pool", "sev-enabled", "tdx-enabled", "vuln-smt-vulnerable", "prepared-intel-host",
              "old-32bit-kernel", "libvirt-not-installed", "net-subnet-collision", "cg-hybrid", "cg-hybrid-fc", "cg-hybrid-systemd-only", "net-no-default-network",
              "sec-apparmor-complain", "sec-apparmor-disabled", "sec-apparmor-libvirt", "sec-driver-none")


# Free space and size of the file system under a root (statvfs) are measurements of the machine running the
# test, not facts of the captured files: other processes change them between two runs (a round trip once
# failed on 77.4 vs 77.3 GiB free).  They are left out of every comparison, with the summary and detail
# texts built from them; the statuses stay compared, made independent of free space by MEASURE_FREE_SPACE_NOT.
MEASURED = ("free_bytes", "total_bytes")
MEASURE_FREE_SPACE_NOT = Settings(images_min_free_gib=0.0)  # storage.images-dir's status no longer depends on it
NO_FREE_SPACE_THRESHOLD = "[thresholds]\nimages_min_free_gib = 0\n"  # the same, for the command line


def measured(value) -> bool:
    if isinstance(value, dict):
        return any(k in MEASURED or measured(v) for k, v in value.items())
    return isinstance(value, list) and any(measured(v) for v in value)


def without_measurements(value):
    if isinstance(value, dict):
        return {k: without_measurements(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [without_measurements(v) for v in value]
    return value


def comparable(checks, host: dict, *roots) -> dict:
    """What two runs over the same files must agree on: per check its status, its evidence without
    measurements and, unless built from measurements, its summary and detail; the host block without the
    root's path.  Time stamps and durations are not compared.  checks: Report.checks or JSON dicts."""
    out = {}
    for r in checks:
        r = r if isinstance(r, dict) else {"id": r.id, "status": r.status.value, "summary": r.summary,
                                           "detail": r.detail, "evidence": r.evidence}
        text = [] if measured(r["evidence"]) else [r["summary"], r["detail"]]
        out[r["id"]] = [r["status"], without_measurements(r["evidence"])] + text
    out["host"] = {k: v for k, v in host.items() if k != "root"}
    text = json.dumps(out, sort_keys=True)
    for root in roots:
        text = text.replace(json.dumps(str(root))[1:-1], "ROOT")
    return json.loads(text)


def test_comparison_leaves_out_measurements_but_not_statuses():
    """The round trip once failed on 77.4 vs 77.3 GiB free: a measurement, not a fact of the captured files."""
    def images_dir(status: str, free: int) -> dict:
        return {"id": "storage.images-dir", "status": status, "summary": f"{free / 2**30:.1f} GiB free",
                "detail": "", "evidence": {"path": "/var/lib/libvirt/images", "free_bytes": free,
                                           "mounts": [{"target": "/", "free_bytes": free, "total_bytes": 5 << 40}]}}
    host = {"root": "/a", "hostname": "h"}
    assert comparable([images_dir("pass", 83 << 30)], host) == comparable([images_dir("pass", 82 << 30)],
                                                                          dict(host, root="/b"))
    assert comparable([images_dir("pass", 83 << 30)], host) != comparable([images_dir("warn", 83 << 30)], host)
    moved = images_dir("pass", 83 << 30)
    moved["evidence"]["path"] = "/srv/images"
    assert comparable([images_dir("pass", 83 << 30)], host) != comparable([moved], host)


def take(root, dest: Path, name: str = "snap.tar.gz") -> Path:
    out = dest / name
    snapshot.write_archive(snapshot.capture(str(root)), str(out))
    return out


def members(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        return {m.name: (m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar}


# -- the round trip ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_gives_the_same_report(host_root, tmp_path, name):
    root = host_root(name)
    direct = kvmcheck.run(str(root), settings=MEASURE_FREE_SPACE_NOT)
    archive = take(root, tmp_path)
    with open_archive(str(archive)) as unpacked:
        offline = kvmcheck.run(unpacked, settings=MEASURE_FREE_SPACE_NOT)
    assert comparable(offline.checks, offline.host, unpacked) == comparable(direct.checks, direct.host, root)


def test_round_trip_through_the_command_line(host_root, tmp_path):
    root = host_root("libvirt-fedora-modular")
    archive = tmp_path / "field-report.tgz"
    config = tmp_path / "config.toml"
    config.write_text(NO_FREE_SPACE_THRESHOLD)
    private = tmp_path / "private-tmp"
    private.mkdir()
    env = dict(os.environ, TMPDIR=str(private))
    cli = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]
    made = subprocess.run(cli + ["snapshot", "--root", str(root), "--output", str(archive)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    runs = [subprocess.run(cli + ["check", "--root", str(r), "--format", "json", "--config", str(config)],
                           capture_output=True, text=True, timeout=120, env=env) for r in (root, archive)]
    for run in runs:
        assert run.returncode in (0, 1, 3) and "Traceback" not in run.stderr, run.stderr[-2000:]
    direct, offline = (json.loads(r.stdout) for r in runs)
    assert offline["host"]["root"] == str(archive)  # the report names the archive, not where it was unpacked
    assert comparable(offline["checks"], offline["host"], archive) == comparable(direct["checks"], direct["host"], root)
    assert not list(private.iterdir()), "the unpacked snapshot must be removed afterwards"


def test_snapshot_refuses_an_unknown_suffix_and_a_missing_root(tmp_path, capsys):
    assert snapshot.snapshot_command(str(tmp_path), str(tmp_path / "x.zip")) == 2
    assert snapshot.snapshot_command(str(tmp_path / "nope"), str(tmp_path / "x.tar.gz")) == 2
    assert not list(tmp_path.iterdir())


def test_manifest_and_devices(host_root, tmp_path):
    root = host_root("intel-baremetal-vmx")
    got = members(take(root, tmp_path))
    manifest = got["MANIFEST"][1].decode()
    assert "file\t/proc/cpuinfo\t" in manifest and "device\t/dev/kvm\tc 10 232 0660 0 36" in manifest
    assert got["DEVICES"][1].decode().splitlines()[1] == "dev/kvm c 10 232 0660 0 36"
    assert "dev/kvm" not in got  # device nodes are never tar members
    assert all(m.isreg() or m.isdir() or m.issym() for m, _ in got.values())


def test_device_nodes_are_left_out_without_cap_mknod(host_root, tmp_path, monkeypatch, capsys):
    archive = take(host_root("intel-baremetal-vmx"), tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "mknod", refuse)
    with open_archive(str(archive)) as unpacked:
        assert not os.path.lexists(os.path.join(unpacked, "dev/kvm"))
        assert os.path.isfile(os.path.join(unpacked, "proc/cpuinfo"))
    assert "dev/kvm" in capsys.readouterr().err


def test_symlinks_stay_relative_and_inside(tmp_path):
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text('ID=fedora\nNAME="Fedora Linux"\nVERSION_ID=40\n')
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/systemd/system/multi-user.target.wants/libvirtd.service").symlink_to(
        "/usr/lib/systemd/system/libvirtd.service")  # absolute: inside the root, as chroot sees it
    (root / "etc/dnf/vars").mkdir(parents=True)
    (root / "etc/dnf/vars/out").symlink_to("../../../../../../../../tmp/elsewhere")
    got = members(take(root, tmp_path))
    assert got["etc/os-release"][0].linkname == "../usr/lib/os-release"
    assert got["usr/lib/os-release"][1].startswith(b"ID=fedora")
    wants = got["etc/systemd/system/multi-user.target.wants/libvirtd.service"][0]
    assert wants.linkname == "../../../../usr/lib/systemd/system/libvirtd.service"
    assert "etc/dnf/vars/out" not in got
    assert "skipped\t/etc/dnf/vars/out\t-\tsymlink to" in got["MANIFEST"][1].decode()
    with open_archive(str(tmp_path / "snap.tar.gz")) as unpacked:
        report = kvmcheck.run(unpacked, only=["libvirt.layout"])
        assert report.host["os"]["id"] == "fedora"


# -- never secrets --------------------------------------------------------------------------------------------
SECRET = "TOPSECRET-4f1c"


def test_secrets_are_never_captured(tmp_path):
    root = tmp_path / "root"
    files = {
        "etc/shadow": f"root:$6${SECRET}:19000:0:99999:7:::\n",
        "etc/gshadow": f"root:{SECRET}::\n",
        "etc/ssh/ssh_host_rsa_key": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET}\n",
        "etc/ssh/sshd_config": f"# {SECRET}\n",
        "root/.ssh/id_rsa": f"-----BEGIN RSA PRIVATE KEY-----\n{SECRET}\n",
        "etc/pki/tls/private/x.key": f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n",
        "etc/ssl/private/y.pem": f"{SECRET}\n",
        "etc/dnf/vars/client.key": f"{SECRET}\n",  # a declared glob (/etc/dnf/vars/*) that matches a key
        "etc/dnf/vars/releasever": "9\n",
        "etc/modprobe.d/kvm.conf": f"options kvm_intel nested=1\n-----BEGIN EC PRIVATE KEY-----\n{SECRET}\n",
        "var/lib/libvirt/qemu/domain-1-vm/master-key.aes": f"{SECRET}\n",
        "var/lib/libvirt/images/vm.qcow2": f"{SECRET}\n",
        "etc/libvirt/qemu.conf": f'security_driver = "selinux"\nvnc_password = "{SECRET}"\n',
        "etc/yum.repos.d/x.repo": f"[x]\nbaseurl=https://user:{SECRET}@repo.example.com/x\npassword={SECRET}\n",
        "etc/os-release": "ID=rhel\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    # Symlinks inside declared directories and globs, pointing at secrets.
    (root / "var/lib/libvirt/qemu/shadow").symlink_to("/etc/shadow")
    (root / "etc/dnf/vars/shadow").symlink_to("../../shadow")
    (root / "etc/modprobe.d/keys.conf").symlink_to("/etc/ssh/ssh_host_rsa_key")
    (root / "sys/class/dmi").mkdir(parents=True)
    (root / "sys/class/dmi/id").symlink_to("/root/.ssh")
    archive = take(root, tmp_path)
    got = members(archive)
    for name, (info, data) in got.items():
        assert SECRET.encode() not in data, name
        assert "shadow" not in name and "ssh" not in name and "private" not in name, name
        assert not name.endswith((".key", ".pem", ".aes", ".qcow2")), name
        if info.issym():
            assert "shadow" not in info.linkname and "ssh" not in info.linkname, name
    assert not any(n.startswith("root") for n in got)
    assert got["etc/dnf/vars/releasever"][1] == b"9\n"
    assert b'vnc_password = "REDACTED"' in got["etc/libvirt/qemu.conf"][1]
    assert b'security_driver = "selinux"' in got["etc/libvirt/qemu.conf"][1]
    assert b"https://user:REDACTED@repo.example.com/x" in got["etc/yum.repos.d/x.repo"][1]
    manifest = got["MANIFEST"][1].decode()
    for path in ("/etc/dnf/vars/client.key", "/etc/modprobe.d/kvm.conf", "/var/lib/libvirt/qemu/shadow",
                 "/etc/dnf/vars/shadow", "/etc/modprobe.d/keys.conf"):
        assert f"skipped\t{path}\t" in manifest, path
    assert "REDACTED" in manifest


def test_only_declared_paths_are_captured(host_root, tmp_path):
    root = host_root("libvirt-fedora-modular")
    (root / "etc/notes.txt").write_text("not declared by any check\n")
    got = members(take(root, tmp_path))
    assert "etc/notes.txt" not in got
    assert "etc/libvirt/qemu.conf" in got


def test_boot_is_listed_not_captured(tmp_path):
    """cpu.64bit reads the listing of /boot (kernel_config globs /boot/config-*): the configs are captured,
    not the kernels.  grub.cfg is read for the next boot's command line (issue 20): it is captured with the
    password hash it may hold replaced."""
    root = tmp_path / "root"
    (root / "boot/grub").mkdir(parents=True)
    (root / "boot/config-6.1.0").write_text("CONFIG_64BIT=y\n")
    (root / "boot/System.map-6.1.0").write_text("ffffffff81000000 T _text\n")
    (root / "boot/grub/grub.cfg").write_text("set superusers=\"root\"\n"
                                             "password_pbkdf2 root grub.pbkdf2.sha512.10000.ABCDEF\n"
                                             "  password guest plain-text-secret\n")
    found = members(take(root, tmp_path))
    got = sorted(name for name in found if name.startswith("boot"))
    assert got == ["boot", "boot/config-6.1.0", "boot/grub", "boot/grub/grub.cfg"]
    assert found["boot/grub/grub.cfg"][1] == (b'set superusers="root"\npassword_pbkdf2 root REDACTED\n'
                                              b"  password guest REDACTED\n")


def test_deny_list():
    for path in ("/etc/shadow", "/etc/gshadow-", "/etc/ssh/sshd_config", "/root/.ssh/id_rsa", "/home/a/.ssh/x",
                 "/etc/pki/tls/private/x.key", "/etc/ssl/private/y", "/etc/dnf/vars/a.pem", "/etc/pki/libvirt/private",
                 "/var/lib/libvirt/qemu/domain-1-vm/master-key.aes", "/sys/class/dmi/id/product_serial"):
        assert snapshot.denied(path), path
    for path in ("/etc/passwd", "/etc/group", "/etc/libvirt/qemu.conf", "/sys/class/dmi/id/sys_vendor",
                 "/proc/cpuinfo", "/sys/module/kvm/parameters/nested", "/proc/1/cgroup", "/proc/stat"):
        assert snapshot.denied(path) is None, path


def test_other_processes_are_never_captured_and_the_migration_block_is(host_root, tmp_path):
    """kvm.device compares /etc/group with the groups of running processes (/proc/PID/status), live only:
    a snapshot would hold every process's name, user and groups and prove nothing offline.  The report's
    migration block reads the NUMA layout: the snapshot has it, so an offline audit sees the same block."""
    assert "/proc/*/status" in snapshot.declared_reads()  # declared: the deny list is what keeps them out
    root = host_root("libvirt-fedora-modular")
    (root / "proc/4242").mkdir(parents=True)
    (root / "proc/4242/status").write_text("Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t1000\n")
    (root / "proc/4242/stat").write_text("4242 (bash) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5000\n")
    (root / "sys/devices/system/node").mkdir(parents=True, exist_ok=True)
    (root / "sys/devices/system/node/online").write_text("0-1\n")
    got = members(take(root, tmp_path))
    # /proc's listing keeps the process ids as names (kvm.device lists /proc to find login users' processes)
    assert not [name for name in got if name.startswith("proc/4242/")]
    assert "sys/devices/system/node/online" in got


# -- unsafe archives -----------------------------------------------------------------------------------------
def build(path: Path, *entries) -> Path:
    """A tar.gz of (TarInfo, bytes or None) entries."""
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def reg(name: str, data: bytes = b"x\n") -> tuple:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 1
    return info, None


class Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def huge(path: Path) -> Path:
    info = tarfile.TarInfo("var/log/messages")
    info.size = snapshot.MAX_FILE_BYTES + (1 << 20)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.addfile(info, io.BufferedReader(Zeros(info.size)))
    return path


UNSAFE = {
    "dotdot": lambda p: build(p, reg("etc/../../escape")),
    "absolute": lambda p: build(p, reg("/tmp/escape-absolute")),
    "write-through-symlink": lambda p: build(p, special("etc", tarfile.SYMTYPE, "usr"), reg("etc/passwd")),
    "write-through-absolute-symlink": lambda p: build(p, special("etc", tarfile.SYMTYPE, "/tmp"), reg("etc/escape")),
    "hard-link-up": lambda p: build(p, reg("etc/a"), special("etc/b", tarfile.LNKTYPE, "../etc/a")),
    "hard-link-absolute": lambda p: build(p, special("etc/b", tarfile.LNKTYPE, "/etc/passwd")),
    "hard-link-to-nothing": lambda p: build(p, reg("etc/a"), special("etc/b", tarfile.LNKTYPE, "etc/c")),
    "dot-as-a-file": lambda p: build(p, reg("./")),
    "char-device": lambda p: build(p, special("dev/kvm", tarfile.CHRTYPE)),
    "block-device": lambda p: build(p, special("dev/sda", tarfile.BLKTYPE)),
    "fifo": lambda p: build(p, special("run/fifo", tarfile.FIFOTYPE)),
    "duplicate": lambda p: build(p, reg("etc/a"), reg("etc/a", b"other\n")),
    "file-then-dir": lambda p: build(p, reg("etc"), reg("etc/passwd")),
    "huge-member": huge,
    "not-gzip": lambda p: (p.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10), p)[1],
    "not-tar": lambda p: (p.write_bytes(b"hello\n" * 200), p)[1],
    "bad-devices": lambda p: build(p, reg("DEVICES", b"../dev/kvm c 10 232 0660 0 36\n")),
}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_unsafe_archives_are_refused(tmp_path, monkeypatch, kind):
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    work = tmp_path / "work"
    work.mkdir()
    archive = UNSAFE[kind](work / "bad.tar.gz")
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(ArchiveError):
        with open_archive(str(archive)):
            pytest.fail("an unsafe archive was opened")
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not list(private.iterdir()), "the temporary directory must be removed"
    assert not os.path.lexists("/tmp/escape-absolute")


# Links that leave the archive as they stand: absolute (as the packed system saw them) or '..' past the top
# (which chroot clamps). Unpacked, each becomes a relative link inside the private directory.
LINKS_OUT = {
    "symlink-absolute": (("etc/x", "/etc/shadow"), "shadow"),
    "symlink-absolute-deeper": (("etc/a/x", "/usr/lib/os-release"), "../../usr/lib/os-release"),
    "symlink-up": (("etc/x", "../../escape"), "../escape"),
    "symlink-sneaky": (("a/b", "c/../../.."), ".."),
}


@pytest.mark.parametrize("kind", sorted(LINKS_OUT))
def test_links_out_are_rewritten_inside(tmp_path, kind):
    (name, target), expected = LINKS_OUT[kind]
    archive = build(tmp_path / "links.tar.gz", special(name, tarfile.SYMTYPE, target))
    with open_archive(str(archive)) as unpacked:
        assert os.readlink(os.path.join(unpacked, name)) == expected
        resolved = os.path.realpath(os.path.join(unpacked, name))
        assert resolved == unpacked or resolved.startswith(unpacked + "/")


def test_too_many_members_and_too_much_data(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "MAX_ENTRIES", 5)
    with pytest.raises(ArchiveError, match="members"):
        with open_archive(str(build(tmp_path / "many.tar.gz", *[reg(f"f{i}") for i in range(10)]))):
            pass
    monkeypatch.setattr(snapshot, "MAX_TOTAL_BYTES", 1000)
    monkeypatch.setattr(snapshot, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(ArchiveError, match="add up"):
        with open_archive(str(build(tmp_path / "big.tar.gz", *[reg(f"f{i}", b"y" * 400) for i in range(4)]))):
            pass


def test_unpacked_directory_is_private_and_removed(host_root, tmp_path):
    archive = take(host_root("intel-baremetal-vmx"), tmp_path)
    with open_archive(str(archive)) as unpacked:
        assert os.stat(os.path.dirname(unpacked)).st_mode & 0o777 == 0o700
        assert os.path.isfile(os.path.join(unpacked, "proc/cpuinfo"))
    assert not os.path.exists(os.path.dirname(unpacked))


# -- the live host -------------------------------------------------------------------------------------------
# A snapshot of this host, audited offline, must agree with the live run: every file a check reads is captured
# (the union of the checks' reads and the host block's), and a check judges a captured file as it judges the
# live one.  Only these
# checks may differ, because their live answer comes from the running kernel, not from files:
NEEDS_THE_RUNNING_KERNEL = {
    "kvm.guest-run": "runs a guest through /dev/kvm (KVM_CREATE_VM, KVM_RUN); never offline",
    "kvm.acceleration": "times guest code through the KVM ioctls; never offline",
    "kvm.device": "live, opens /dev/kvm and asks access(2) for the invoking user; offline, judges the node's "
                  "mode and groups only",
    "firmware.vt-enabled": "reads MSR 0x3a through /dev/cpu/0/msr, live only",
    "libvirt.layout": "live, asks 'systemctl is-active' and looks for the daemons' sockets (never captured); "
                      "offline, judges the enablement links",
    "security.svirt": "live, the running security module's state; offline, only its configuration files count",
    "storage.images-dir": "statvfs of the host's mounted file systems; offline, of the unpacked copy",
    "storage.shared": "statvfs of each mount (a hung NFS mount fails it); offline, the copy answers",
    "capacity.resources": "memory available is the running kernel's, read at two moments (snapshot, live run): "
                          "a value near a threshold may cross it",
    "qemu.accel": "starts QEMU with -accel kvm and asks it over QMP, live only; offline, the package version",
    "libvirt.daemon": "asks the running libvirt daemon over its socket (never captured), live only",
    "kvm.consumer": "live as root, opens /dev/kvm as QEMU's user in a child; offline, mode, groups and ACLs only",
}


@pytest.mark.skipif(not os.path.isfile("/proc/cpuinfo"), reason="needs a live Linux host")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: device nodes of the snapshot are recreated with CAP_MKNOD "
                                              "only, and a live run as another user judges /dev/kvm differently")
def test_live_snapshot_matches_the_live_run(tmp_path):
    cli = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]
    archive = tmp_path / "this-host.tar.gz"
    made = subprocess.run(cli + ["snapshot", "-o", str(archive)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    runs = [subprocess.run(cli + ["check", *root, "-f", "json"], capture_output=True, text=True, timeout=120)
            for root in ([], ["--root", str(archive)])]
    for run in runs:
        assert run.returncode in (0, 1, 3) and "Traceback" not in run.stderr, run.stderr[-2000:]
    live, offline = (json.loads(r.stdout) for r in runs)
    live_status = {r["id"]: r["status"] for r in live["checks"]}
    offline_status = {r["id"]: r["status"] for r in offline["checks"]}
    assert set(offline_status) == set(live_status)
    differ = {i: (live_status[i], offline_status[i]) for i in live_status
              if i not in NEEDS_THE_RUNNING_KERNEL and live_status[i] != offline_status[i]}
    assert not differ, differ
    assert offline["host"]["root"] == str(archive) and offline["host"]["live"] is False
    for key in ("hostname", "arch", "kernel", "os", "cpu_vendor", "cpu_model", "hypervisor", "kvm_modules",
                "container"):
        assert offline["host"].get(key) == live["host"].get(key), key


def test_paravirt_and_vhost_net_agree_on_a_captured_proc_misc(host_root):
    """/proc/misc without vhost-net, no /lib/modules: network.vhost-net warned, paravirt.virtio skipped
    ('nothing readable') although the same file said the same thing; the live run of such a host warned in
    both.  One fact, one judgement, live or captured."""
    report = kvmcheck.run(str(host_root("net-no-default-network")), only=["paravirt.virtio", "network.vhost-net"])
    got = {r.id: r for r in report.checks}
    assert (got["paravirt.virtio"].status.value, got["network.vhost-net"].status.value) == ("warn", "warn")
    assert got["paravirt.virtio"].summary.startswith("vhost_net missing")


def test_a_stale_vhost_net_node_in_a_captured_root_is_judged_as_live(tmp_path):
    """/dev/vhost-net present, but neither the captured /proc/misc nor the kernel's modules have the driver:
    live this warned (opening the node fails with ENODEV), offline it passed on the node alone."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_MKNOD) to create the device node")
    root = tmp_path / "root"
    release = "6.1.0-18-amd64"
    for rel, text in {"proc/misc": "200 tun\n 58 network_throughput\n", "proc/sys/kernel/osrelease": release + "\n",
                      f"lib/modules/{release}/modules.builtin": "kernel/drivers/net/tun.ko\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "dev").mkdir()
    os.mknod(root / "dev/vhost-net", 0o20660, os.makedev(10, 238))
    result = kvmcheck.run(str(root), only=["network.vhost-net"]).checks[0]
    assert (result.status.value, result.summary) == (
        "warn", "/dev/vhost-net exists but no vhost_net driver is in the kernel or installed")


@pytest.mark.skipif(not os.path.isfile("/proc/cpuinfo"), reason="needs a live Linux host")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a capture as another user leaves unreadable files out")
def test_every_file_a_live_run_reads_is_in_its_snapshot(tmp_path):
    """The cause behind most offline/live differences: a check reading a file it does not declare, which a
    snapshot therefore lacks. Every path a live run of every check asked the Host for, and found, must be in
    the snapshot of this host, or listed in its MANIFEST as left out with the reason (secrets, limits);
    device nodes go to DEVICES and the live kernel log to var/log/dmesg."""
    from kvmcheck.facts.context import Context
    from kvmcheck.core.host import Host
    from kvmcheck.core.registry import load_checks
    from kvmcheck.core.runner import run_check

    live = Host("/")
    ctx = Context(live, Settings())
    for check in load_checks()[0]:
        run_check(check, ctx, 5.0)
    ctx.host_facts()
    snap = snapshot.capture("/")
    archive = tmp_path / "this-host.tar.gz"
    snapshot.write_archive(snap, str(archive))
    with open_archive(str(archive)) as unpacked:
        copy = Host(unpacked)
        # a pattern the deny list names is left out whole (/proc/*/status): its paths are accounted for
        left_out = [p for p in snap.skipped if any(ch in p for ch in "*?[")]
        missing = [path for path in sorted(set(live.reads))
                   if not path.startswith("/dev/") and path not in snapshot.OFFLINE_LOGS and path not in snap.skipped
                   and not any(fnmatch.fnmatchcase(path, p) for p in left_out)
                   and live.node(path) is not None and copy.node(path) is None]
    assert not missing, f"read live but not captured (declare them in the check's reads=...): {missing}"
