# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck snapshot: the round trip, the allowlist (no secrets), and refusing unsafe archives."""
from __future__ import annotations

import errno
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
from kvmcheck import snapshot
from kvmcheck.snapshot import ArchiveError, open_archive

ROUND_TRIP = ("intel-baremetal-vmx", "amd-baremetal-svm", "arm64-kvm", "s390x-lpar", "pvm-host", "pkg-rhel9-enabled",
              "pkg-debian12-deb822", "libvirt-fedora-modular", "libvirt-debian-monolithic", "storage-nfs4",
              "storage-fc", "iommu-intel-gpu-shared", "iommu-arm64", "cg-v2", "cg-v1", "mem-ksm-running",
              "mem-1g-pool", "sev-enabled", "tdx-enabled", "vuln-smt-vulnerable", "prepared-intel-host",
              "old-32bit-kernel", "libvirt-not-installed", "net-subnet-collision",
              # these once failed: their checks read files they did not declare, which a snapshot cannot hold
              "cg-hybrid", "cg-hybrid-fc", "cg-hybrid-systemd-only", "net-no-default-network",
              "sec-apparmor-complain", "sec-apparmor-disabled", "sec-apparmor-libvirt", "sec-driver-none")


def comparable(data: dict, *roots: str) -> dict:
    """A report without what differs between two runs of the same files: time, durations, the root's path,
    and free space (statvfs of the file system under the root, which other processes change meanwhile)."""
    text = json.dumps(data)
    for root in roots:
        text = text.replace(json.dumps(str(root))[1:-1], "ROOT")
    data = json.loads(text)
    data.pop("generated_at", None)
    data["host"].pop("root", None)
    for result in data["checks"]:
        result.pop("duration_ms", None)
        evidence = result["evidence"]
        evidence.pop("free_bytes", None)
        for mount in evidence.get("mounts") or []:
            if isinstance(mount, dict):
                mount.pop("free_bytes", None)
    return data


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
    direct = comparable(kvmcheck.run(str(root)).to_dict(), root)
    archive = take(root, tmp_path)
    with open_archive(str(archive)) as unpacked:
        offline = comparable(kvmcheck.run(unpacked).to_dict(), unpacked)
    assert offline == direct


def test_round_trip_through_the_command_line(host_root, tmp_path):
    root = host_root("libvirt-fedora-modular")
    archive = tmp_path / "field-report.tgz"
    cli = [sys.executable, "-m", "kvmcheck"] if os.path.exists(
        os.path.join(os.path.dirname(kvmcheck.__file__), "__main__.py")) else [sys.executable, "-c",
                                                                               "from kvmcheck.cli import main; main()"]
    made = subprocess.run(cli + ["snapshot", "--root", str(root), "--output", str(archive)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    runs = [subprocess.run(cli + ["check", "--root", str(r), "--format", "json"], capture_output=True, text=True,
                           timeout=120) for r in (root, archive)]
    for run in runs:
        assert run.returncode in (0, 1, 3) and "Traceback" not in run.stderr, run.stderr[-2000:]
    direct, offline = (json.loads(r.stdout) for r in runs)
    unpacked_root = json.loads(runs[1].stdout)["host"]["root"]
    assert comparable(offline, unpacked_root) == comparable(direct, root)
    assert not os.path.exists(unpacked_root), "the unpacked snapshot must be removed afterwards"


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


def test_deny_list():
    for path in ("/etc/shadow", "/etc/gshadow-", "/etc/ssh/sshd_config", "/root/.ssh/id_rsa", "/home/a/.ssh/x",
                 "/etc/pki/tls/private/x.key", "/etc/ssl/private/y", "/etc/dnf/vars/a.pem", "/etc/pki/libvirt/private",
                 "/var/lib/libvirt/qemu/domain-1-vm/master-key.aes", "/sys/class/dmi/id/product_serial"):
        assert snapshot.denied(path), path
    for path in ("/etc/passwd", "/etc/group", "/etc/libvirt/qemu.conf", "/sys/class/dmi/id/sys_vendor",
                 "/proc/cpuinfo", "/sys/module/kvm/parameters/nested"):
        assert snapshot.denied(path) is None, path


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
    "symlink-absolute": lambda p: build(p, special("etc/x", tarfile.SYMTYPE, "/etc/shadow")),
    "symlink-up": lambda p: build(p, special("etc/x", tarfile.SYMTYPE, "../../escape")),
    "symlink-sneaky": lambda p: build(p, special("a/b", tarfile.SYMTYPE, "c/../../..")),
    "write-through-symlink": lambda p: build(p, special("etc", tarfile.SYMTYPE, "usr"), reg("etc/passwd")),
    "hard-link": lambda p: build(p, reg("etc/a"), special("etc/b", tarfile.LNKTYPE, "etc/a")),
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
# Checks whose status on a live host comes from probes an offline root cannot have: the KVM API itself
# (guest-run, acceleration), open() of device nodes, unit state and sockets, the running LSM, statvfs of
# live mounts, memory that changes second by second, and absence from /proc/misc, trusted only live.
LIVE_ONLY = {"kvm.guest-run", "kvm.acceleration", "kvm.device", "libvirt.layout", "network.default-nat",
             "security.svirt", "storage.images-dir", "storage.shared", "capacity.resources", "paravirt.virtio",
             "network.tun", "network.vhost-net", "qemu.accel", "libvirt.daemon"}


@pytest.mark.skipif(not os.path.isfile("/proc/cpuinfo"), reason="needs a live Linux host")
def test_live_snapshot_matches_the_live_run(tmp_path):
    live = kvmcheck.run("/").to_dict()
    archive = tmp_path / "live.tar.gz"
    assert snapshot.snapshot_command("/", str(archive)) == 0
    with open_archive(str(archive)) as unpacked:
        offline = kvmcheck.run(unpacked).to_dict()
    pairs = {r["id"]: r for r in live["checks"]}
    differ = {r["id"]: (pairs[r["id"]]["status"], r["status"]) for r in offline["checks"]
              if r["id"] not in LIVE_ONLY and pairs[r["id"]]["status"] != r["status"]}
    assert not differ
    for key in ("hostname", "arch", "kernel", "os", "cpu_vendor", "cpu_model", "hypervisor", "kvm_modules",
                "container"):
        assert offline["host"].get(key) == live["host"].get(key), key
