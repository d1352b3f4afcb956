# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared fixtures: captured host roots, with the device nodes git cannot store."""
from __future__ import annotations

import errno
import os
import resource
import shutil
import stat
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HOSTS = HERE / "hosts"
CORPUS = HERE.parent.parent / "shared" / "corpus" / "lscpu"


def materialize(name: str, dest: Path) -> Path:
    """Copy tests/hosts/NAME to dest and create the nodes its DEVICES file lists."""
    root = dest / name
    shutil.copytree(HOSTS / name, root, symlinks=True)
    manifest = root / "DEVICES"
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            path, kind, major, minor, mode, uid, gid = line.split()
            node = root / path
            node.parent.mkdir(parents=True, exist_ok=True)
            flag = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
            try:
                os.mknod(node, flag | int(mode, 8), os.makedev(int(major), int(minor)))
                os.chown(node, int(uid), int(gid))
                os.chmod(node, int(mode, 8))
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.EACCES):
                    pytest.skip(f"creating device nodes needs CAP_MKNOD (root): {exc}")
                raise
        manifest.unlink()
    return root


@pytest.fixture
def host_root(tmp_path):
    """host_root("pvm-host") -> a ready-to-use root directory."""
    return lambda name: materialize(name, tmp_path)


def corpus_dumps():
    rows = (CORPUS / "expected.tsv").read_text().splitlines()[1:]
    return [dict(zip(("dump", "arch", "cpu_vendor", "virtualization", "hypervisor_vendor", "virtualization_type",
                      "source"), r.split("\t"))) for r in rows]


def as_nobody(argv):
    """argv run as nobody through setpriv(1), or skip when that cannot be done here."""
    import shutil
    import subprocess

    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv(1) to drop to nobody")
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(prefix + [argv[0], "-c", "import kvmcheck"], capture_output=True, text=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"this Python cannot run as nobody here: {probe.stderr.strip()[:200]}")
    return prefix + list(argv)


# --- /dev/kvm tests: the device, descriptor and mapping leak probes, and fd starvation -------------
KVM_PATH = "/dev/kvm"
HAVE_KVM = os.access(KVM_PATH, os.R_OK | os.W_OK)
needs_kvm = pytest.mark.skipif(
    not HAVE_KVM, reason="/dev/kvm absent or not accessible: no KVM module loaded or no permission")


def open_fds() -> set:
    return set(os.listdir("/proc/self/fd"))


def kvm_mappings() -> list:
    with open("/proc/self/maps") as f:
        return [line for line in f if "kvm" in line]


class FdStarved:
    """Lower RLIMIT_NOFILE and fill the table so that exactly `free` fds remain."""

    def __init__(self, free: int):
        self.free, self.dups = free, []

    def __enter__(self):
        self.limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 8, self.limits[1]))
        try:
            try:
                while True:
                    self.dups.append(os.dup(0))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
            for _ in range(self.free):
                os.close(self.dups.pop())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for fd in self.dups:
            os.close(fd)
        self.dups = []
        resource.setrlimit(resource.RLIMIT_NOFILE, self.limits)
