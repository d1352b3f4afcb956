# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared fixtures: captured host roots, with the device nodes git cannot store."""
from __future__ import annotations

import errno
import os
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
