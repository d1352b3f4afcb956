# SPDX-License-Identifier: GPL-2.0-or-later
"""--root ARCHIVE as users make them (real tar, every compression tarfile reads, recognised by content), the
report naming the archive, and hostile archives: header bombs and deep trees refused early, with bounded
memory, leaving nothing behind."""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

import kvmcheck
from kvmcheck.tools import snapshot
from kvmcheck.tools.snapshot import ArchiveError, open_archive

from conftest import HOSTS
from test_snapshot import without_measurements  # statvfs figures are the test machine's, not the root's

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


def kvmcheck_cli(*args, env=None, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)




def per_check(checks, root: str = ""):
    """id -> (status, evidence without measurements, root paths replaced): from Report.checks or JSON."""
    out = {}
    for r in checks:
        r = r if isinstance(r, dict) else {"id": r.id, "status": r.status.value, "evidence": r.evidence}
        evidence = json.loads(json.dumps(without_measurements(r["evidence"])).replace(root, "ROOT") if root
                              else json.dumps(without_measurements(r["evidence"])))
        out[r["id"]] = (r["status"], evidence)
    return out


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"needs the {tool} command")


# -- archives made with tar -C DIR . ------------------------------------------------------------------------
# The raw tests/hosts tree is what a user packs: its DEVICES file is read by the unpacking as a snapshot's is.
# Compared with the same tree materialized (device nodes made) and audited as a directory.
TAR_MADE = [
    # (fixture, tar options, archive name): absolute systemd links, DEVICES, every compression tarfile reads
    ("libvirt-debian-monolithic", ["-czf"], "root.tgz"),
    ("libvirt-debian-monolithic", ["-cf"], "root.tar"),
    ("libvirt-debian-monolithic", ["-cJf"], "root.tar.xz"),
    ("libvirt-debian-monolithic", ["-cjf"], "root.tar.bz2"),
    ("libvirt-debian-monolithic", ["--format=posix", "-czf"], "root-pax.tar.gz"),
    ("libvirt-debian-monolithic", ["-czf"], "captured-root"),  # no suffix: recognised by content
    ("mem-ksm-running", ["-czf"], "root.tar.gz"),
    ("intel-baremetal-vmx", ["-czf"], "root.tar.gz"),
]


@pytest.mark.parametrize("name,options,filename", TAR_MADE, ids=[f"{n}-{f}" for n, _, f in TAR_MADE])
def test_tar_made_archives_are_audited_like_the_tree(host_root, tmp_path, name, options, filename):
    need("tar")
    if "-cJf" in options:
        need("xz")
    if "-cjf" in options:
        need("bzip2")
    tree = host_root(name)  # materialized: device nodes made (skips without CAP_MKNOD)
    archive = tmp_path / filename
    subprocess.run(["tar"] + options + [str(archive), "-C", str(HOSTS / name), "."], check=True, timeout=60)
    names = subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True, check=True).stdout.split()
    assert names[0] == "./" and all(n.startswith("./") for n in names)  # what made it fail before
    run = kvmcheck_cli("check", "--root", archive, "--format", "json")
    assert run.returncode in (0, 1, 3) and not run.stderr, run.stderr
    offline = json.loads(run.stdout)
    direct = kvmcheck.run(str(tree))
    assert per_check(offline["checks"]) == per_check(direct.checks, str(tree))
    assert offline["host"]["root"] == str(archive)
    for key in ("hostname", "arch", "kernel", "os", "cpu_vendor", "cpu_model", "kvm_modules"):
        assert offline["host"][key] == direct.host[key], key


def test_absolute_and_overreaching_links_of_a_packed_tree_stay_inside(tmp_path):
    """A tree packed by hand has links as its own root sees them: absolute, or '..' past the top (which
    chroot clamps). Unpacked, each is relative and stays inside; the tree's own relative links are kept."""
    need("tar")
    tree = tmp_path / "tree"
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "usr/lib/os-release").write_text('ID=fedora\nNAME="Fedora Linux"\nVERSION_ID=40\n')
    (tree / "etc").mkdir()
    (tree / "etc/os-release").symlink_to("/usr/lib/os-release")
    (tree / "etc/up").symlink_to("../../../../usr/lib/os-release")
    (tree / "etc/same").symlink_to("../usr/lib/os-release")
    archive = tmp_path / "tree.tgz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(tree), "."], check=True, timeout=60)
    with open_archive(str(archive)) as unpacked:
        for link in ("etc/os-release", "etc/up", "etc/same"):
            assert os.readlink(os.path.join(unpacked, link)) == "../usr/lib/os-release", link
            assert os.path.realpath(os.path.join(unpacked, link)).startswith(unpacked + "/")
        assert kvmcheck.run(unpacked, only=["libvirt.layout"]).host["os"]["id"] == "fedora"


def test_hard_links_made_by_tar_are_unpacked(tmp_path):
    need("tar")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    os.link(tree / "etc/os-release", tree / "etc/os-release.copy")
    archive = tmp_path / "tree.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(tree), "."], check=True, timeout=60)
    with tarfile.open(archive) as tar:
        assert any(m.islnk() for m in tar)  # tar stored the second name as a hard link
    with open_archive(str(archive)) as unpacked:
        for name in ("etc/os-release", "etc/os-release.copy"):
            assert Path(unpacked, name).read_text() == "ID=debian\nVERSION_ID=12\n"


@pytest.mark.parametrize("linkname", ["etc/missing", "../outside", "/etc/passwd", "etc/later"])
def test_hard_links_to_anything_but_an_earlier_file_are_refused(tmp_path, linkname):
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("etc/a")
        info.type, info.linkname = tarfile.LNKTYPE, linkname
        tar.addfile(info)
        later = tarfile.TarInfo("etc/later")
        later.size = 2
        tar.addfile(later, io.BytesIO(b"x\n"))
    with pytest.raises(ArchiveError):
        with open_archive(str(archive)):
            pytest.fail("opened")


def test_zstd_and_non_archives_are_usage_errors(tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("not an archive\n" * 100)
    run = kvmcheck_cli("check", "--root", plain)
    assert run.returncode == 2 and "not a directory or a tar archive" in run.stderr, run.stderr
    need("tar")
    need("zstd")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=debian\n")
    archive = tmp_path / "root.tar.zst"
    subprocess.run(["tar", "--zstd", "-cf", str(archive), "-C", str(tree), "."], check=True, timeout=60)
    run = kvmcheck_cli("check", "--root", archive)
    if "zst" in tarfile.TarFile.OPEN_METH:  # Python 3.14 reads zstd
        assert run.returncode in (0, 1, 3), run.stderr
    else:
        assert run.returncode == 2 and "zstd -d" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_archive_kind_is_read_from_the_content(tmp_path):
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as t:
        t.addfile(tarfile.TarInfo("etc"), None)
    v7 = io.BytesIO()
    with tarfile.open(fileobj=v7, mode="w", format=tarfile.USTAR_FORMAT) as t:
        t.addfile(tarfile.TarInfo("etc"), None)
    v7_head = bytearray(v7.getvalue()[:512])
    v7_head[257:265] = bytes(8)  # no magic: only the checksum tells (unsigned sum changes by the magic's bytes)
    v7_head[148:156] = b"%06o\0 " % (sum(v7_head[:148]) + 8 * 32 + sum(v7_head[156:]))
    assert snapshot.archive_kind(tar.getvalue()[:512]) == "tar"
    assert snapshot.archive_kind(bytes(v7_head)) == "tar"
    assert snapshot.archive_kind(gzip.compress(b"x")) == "gzip"
    assert snapshot.archive_kind(b"BZh91AY&SY") == "bzip2"
    assert snapshot.archive_kind(b"\xfd7zXZ\x00\x00") == "xz"
    assert snapshot.archive_kind(b"\x28\xb5\x2f\xfd\x00") == "zstd"
    assert snapshot.archive_kind(b"hello\n" * 100) is None
    assert snapshot.archive_kind(bytes(512)) is None  # an all-zero block is no header (checksum 0 != 256)


# -- the report names the archive ------------------------------------------------------------------------
FORMATS = ("text", "json", "html", "markdown", "junit", "prometheus", "nagios")


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_report_names_the_archive_not_the_private_directory(host_root, tmp_path, fmt):
    root = host_root("pvm-host")
    snapshot.write_archive(snapshot.capture(str(root)), str(tmp_path / "field.tar.gz"))
    # Given relative, from its own directory: the report shows its real path, as for a directory root.
    run = kvmcheck_cli("check", "--root", "field.tar.gz", "--format", fmt, cwd=tmp_path)
    assert run.returncode in (0, 1, 2) and "Traceback" not in run.stderr, run.stderr
    assert "kvmcheck-snapshot-" not in run.stdout  # the private directory is named nowhere
    archive = str(tmp_path / "field.tar.gz")
    if fmt == "json":
        assert json.loads(run.stdout)["host"]["root"] == archive
    elif fmt == "text":
        assert f"Root: {archive} (offline" in " ".join(run.stdout.split())  # however the line wraps
    elif fmt in ("html", "markdown", "junit"):
        assert archive in run.stdout
    # prometheus and nagios carry no root


# -- tar header bombs (issue 14 item 7) ------------------------------------------------------------------
def gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def header_bomb(path: Path, kind: bytes, size: int) -> Path:
    """A gzip tar whose first header announces a size-byte GNU long name (L) or pax header (x), followed by
    that many 'a's and a small member: built from concatenated gzip members (gzip reads them as one stream),
    one 1 MiB block of 'a's compressed once and repeated, so nothing near size bytes is ever in memory."""
    head = tarfile.TarInfo("././@LongLink" if kind == tarfile.GNUTYPE_LONGNAME else "PaxHeaders/x")
    head.type, head.size = kind, size
    block = 1 << 20
    assert size % block == 0
    chunk = gzip_member(b"a" * block)
    tail = io.BytesIO()
    with tarfile.open(fileobj=tail, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("etc/os-release")
        info.size = 10
        tar.addfile(info, io.BytesIO(b"ID=debian\n"))
    with open(path, "wb") as out:
        out.write(gzip_member(head.tobuf(format=tarfile.GNU_FORMAT)))
        for _ in range(size // block):
            out.write(chunk)
        out.write(gzip_member(tail.getvalue()))
    return path


# Runs kvmcheck as its only child and prints that child's peak RSS: RUSAGE_CHILDREN of the test process
# itself would include every child any earlier test waited for.
PEAK = """
import resource, subprocess, sys
run = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
sys.stdout.write(run.stdout)
sys.stderr.write(run.stderr)
sys.stderr.write("PEAK_KIB %d\\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(run.returncode)
"""


def run_measured(*args):
    proc = subprocess.run([sys.executable, "-c", PEAK] + CLI + [str(a) for a in args], capture_output=True,
                          text=True, timeout=180)
    peak_kib = int(proc.stderr.rsplit("PEAK_KIB ", 1)[1])
    return proc, peak_kib


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE], ids=["gnu-longname", "pax"])
def test_header_bombs_are_refused_before_tarfile_reads_them(tmp_path, kind):
    archive = header_bomb(tmp_path / "bomb.tar.gz", kind, 1 << 30)  # 1 GiB of header in about 1 MB
    assert archive.stat().st_size < 4 << 20
    proc, peak_kib = run_measured("check", "--root", archive, "--format", "nagios")
    assert proc.returncode == 3 and proc.stdout.count("\n") == 1 and "KVMCHECK UNKNOWN" in proc.stdout, proc
    assert "header of 1073741824 bytes" in proc.stdout and "header bomb" in proc.stdout
    proc, peak_kib = run_measured("check", "--root", archive)
    assert proc.returncode == 2 and "header bomb" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert peak_kib < 200 << 10, f"peak RSS {peak_kib >> 10} MiB: the header was read before the limit"


def test_a_chain_of_extension_headers_is_refused(tmp_path):
    """tarfile reads a chain of long-name headers by recursion: 2,000 in a row raised RecursionError."""
    archive = tmp_path / "chain.tar.gz"
    one = tarfile.TarInfo("././@LongLink")
    one.type, one.size = tarfile.GNUTYPE_LONGNAME, 3
    block = one.tobuf(format=tarfile.GNU_FORMAT) + b"ab\0".ljust(512, b"\0")
    with gzip.open(archive, "wb") as out:
        out.write(block * 2000 + bytes(1024))
    run = kvmcheck_cli("check", "--root", archive)
    assert run.returncode == 2 and "in a row" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_limits_hold_for_small_headers_too(tmp_path):
    """A long name within the limit is read (GNU tar writes one for every path over 100 bytes)."""
    archive = tmp_path / "long.tar.gz"
    name = "etc/" + "d" * 200 + "/os-release"
    with tarfile.open(archive, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 10
        tar.addfile(info, io.BytesIO(b"ID=debian\n"))
    with open_archive(str(archive)) as unpacked:
        assert Path(unpacked, name).read_text() == "ID=debian\n"


# -- deep archives (issue 14 item 8) ---------------------------------------------------------------------------
def deep_archive(path: Path, depth: int) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("d/" * depth + "f")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    return path


@pytest.mark.parametrize("fmt,code", [("text", 2), ("nagios", 3)])
def test_a_deep_archive_is_refused_and_leaves_nothing(tmp_path, fmt, code):
    archive = deep_archive(tmp_path / "deep.tar.gz", 1500)
    private = tmp_path / "tmp"
    private.mkdir()
    env = dict(os.environ, TMPDIR=str(private))
    run = kvmcheck_cli("check", "--root", archive, "--format", fmt, "--exit-zero", env=env)
    out = run.stdout if fmt == "nagios" else run.stderr
    assert run.returncode == code, (run.stdout, run.stderr)
    assert "1501 path components, deeper than the limit of 64" in out
    assert "Traceback" not in run.stderr and "RecursionError" not in run.stdout + run.stderr
    if fmt == "nagios":
        assert run.stdout.count("\n") == 1  # one status line
    assert not list(private.iterdir()), "the private directory must be removed"


def test_an_archive_at_the_depth_limit_is_read(tmp_path):
    archive = deep_archive(tmp_path / "deep.tar.gz", snapshot.MAX_DEPTH - 1)
    with open_archive(str(archive)) as unpacked:
        assert Path(unpacked, "d/" * (snapshot.MAX_DEPTH - 1) + "f").read_text() == "x\n"


def make_deep_tree(top: Path, depth: int, outside: Path) -> None:
    """top/d/d/.../d (depth levels) with a file and a link out at each level, built through directory
    descriptors: its paths are far longer than PATH_MAX."""
    flags = os.O_RDONLY | os.O_DIRECTORY
    top.mkdir()
    fd = os.open(top, flags)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as fh:
                fh.write(str(level))
            os.symlink(str(outside), "out", dir_fd=fd)
            child = os.open("d", flags, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def test_remove_tree_removes_a_tree_deeper_than_the_recursion_limit(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep\n")
    top = tmp_path / "deep"
    make_deep_tree(top, 3000, outside)
    assert sys.getrecursionlimit() < 3000
    snapshot.remove_tree(str(top))
    assert not os.path.lexists(top)
    assert (outside / "keep").read_text() == "keep\n"  # links are removed, never followed


def test_remove_tree_removes_a_wide_tree_and_tolerates_a_missing_path(tmp_path):
    top = tmp_path / "wide"
    for i in range(50):
        (top / f"d{i}" / "x").mkdir(parents=True)
        (top / f"d{i}" / "x" / "f").write_text("f")
    (top / "dangling").symlink_to("/nonexistent")
    snapshot.remove_tree(str(top))
    assert not os.path.lexists(top)
    snapshot.remove_tree(str(top))  # gone already: nothing to do, no error
