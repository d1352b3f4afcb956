# SPDX-License-Identifier: GPL-2.0-or-later
"""Confinement to --root, built from the attacks of the security review (issue 14).

* a race: ROOT/etc swapped between a directory and a link to the outside while kvmcheck reads;
* device nodes of an offline root (a snapshot's DEVICES manifest, a bind-mounted /dev): never opened;
* the rpm database: read without running rpm on an offline root, nothing written outside.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kvmcheck
from kvmcheck.core.host import Host

SECRET = "OUTSIDE-SECRET"
READS = 20_000  # the review saw 36,471 escapes in 84,754 reads: a few thousand reads meet the race many times
RUNS = 40  # one CLI report in 40 named the outside in the review
CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]


SWAPPER = """
import os, sys
root, outside, stop = sys.argv[1:4]
etc, real = os.path.join(root, "etc"), os.path.join(root, "etc.real")
swaps = 0
print("swapping", flush=True)
while not os.path.exists(stop):
    os.rename(etc, real)
    os.symlink(outside, etc)  # absolute: outside the root, as the kernel reads it
    os.unlink(etc)
    os.rename(real, etc)
    swaps += 1
print(swaps)
"""


class Swapper:
    """Swap ROOT/etc between its real directory and an absolute symlink to an outside directory, in a loop,
    from another process (as the attacker did: a thread of ours would mostly wait for the GIL)."""

    def __init__(self, root: Path, outside: Path) -> None:
        self.stop = root.parent / "stop-swapping"
        self.argv = [sys.executable, "-c", SWAPPER, str(root), str(outside), str(self.stop)]
        self.swaps = 0

    def __enter__(self) -> "Swapper":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "swapping\n"  # the race is on before the first read
        return self

    def __exit__(self, *exc) -> None:
        self.stop.touch()
        out, _ = self.proc.communicate(timeout=30)
        self.swaps = int(out.strip() or 0)


@pytest.fixture
def swapped_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('NAME="Inside"\nID=rhel\nVERSION_ID=9.4\n')
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "os-release").write_text(f'NAME="{SECRET}"\nID=debian\nVERSION_ID=12\n')
    (outside / "hostname").write_text(f"{SECRET}\n")
    return root, outside


def test_swapping_etc_for_a_link_out_never_leaks_a_read(swapped_root):
    root, outside = swapped_root
    host = Host(str(root))
    seen = {"inside": 0, "missing": 0, "other error": 0}
    leaked = []
    with Swapper(root, outside) as swapper:
        for _ in range(READS):
            try:
                text = host.read_text("/etc/os-release")
                # Every other kind of lookup, too: each one walks the same racing component.
                names = host.listdir("/etc")
            except FileNotFoundError:  # ROOT/etc is the link (its target is not in the root) or not there
                seen["missing"] += 1
                continue
            except OSError:  # the old code could meet a link that was a directory again when read (EINVAL)
                seen["other error"] += 1
                continue
            if SECRET in text or "hostname" in names:
                leaked.append(text)
            else:
                seen["inside"] += 1
    print(f"{swapper.swaps} swaps, {seen}")
    assert swapper.swaps > 100, "the swapper barely ran: the race was not exercised"
    assert seen["inside"] > 0
    assert leaked == []


def test_stat_and_statvfs_follow_the_same_lookup(swapped_root):
    root, outside = swapped_root
    (outside / "only-outside").write_text("x")
    host = Host(str(root))
    with Swapper(root, outside) as swapper:
        found = [p for p in ("/etc/only-outside",) * 3000 if host.stat(p) is not None or host.lstat(p) is not None]
        found += [p for p in ("/etc/only-outside",) * 50 if host.statvfs(p) is not None]
    assert swapper.swaps > 10
    assert found == []


def test_cli_report_under_the_race_never_names_the_outside(swapped_root):
    root, outside = swapped_root
    with Swapper(root, outside):
        for _ in range(RUNS):  # in this process: the report's host block reads /etc/os-release and hostname
            report = json.dumps(kvmcheck.run(str(root), only=["kernel.version"]).to_dict())
            assert SECRET not in report
        proc = subprocess.run(CLI + ["check", "--root", str(root), "--only", "kernel.*", "--format", "json"],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert json.loads(proc.stdout)["checks"]


def test_live_root_still_follows_proc_and_sys_links():
    host = Host("/")
    assert host.read_text("/proc/self/status").startswith("Name:")  # /proc/self -> PID, followed by hand
    assert int(host.first_line("/proc/sys/kernel/pid_max") or 0) > 0
    assert host.node("/proc/self").kind == "dir"
    assert host.lstat("/proc/self") is not None and host.readlink("/proc/self") == str(os.getpid())


# -- item 5: device nodes of an offline root are never opened ---------------------------------------------
# The CLI under an audit hook: every open() that is not an O_PATH lookup is checked, and a device among
# them is recorded (opening /dev/kmsg, a tape or a watchdog has effects; O_PATH opens nothing).
AUDITED_CLI = '''
import os, stat, sys
opened = []
def hook(event, args):
    if event != "open" or not args or not isinstance(args[0], str):
        return
    path, flags = args[0], args[2]
    if isinstance(flags, int) and flags & os.O_PATH:
        return
    if not path.startswith("/"):
        # The Host opens only "." of a directory it holds by a relative name; removing kvmcheck's own
        # unpacked snapshot (snapshot.remove_tree, or shutil.rmtree) opens the directories it found by lstat.
        frame = sys._getframe(1)
        while frame is not None and not (frame.f_code.co_filename.endswith("shutil.py")
                                         or frame.f_code.co_name == "remove_tree"):
            frame = frame.f_back
        if path != "." and frame is None:
            opened.append("relative: " + path)
        return
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        opened.append(path)
sys.addaudithook(hook)
from kvmcheck.cli import main
try:
    main()
finally:
    sys.stderr.write("\\nDEVICES OPENED: %r\\n" % (opened,))
'''


def audited_check(root) -> tuple:
    proc = subprocess.run([sys.executable, "-c", AUDITED_CLI, "check", "--root", str(root), "--format", "json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1, 3), proc.stderr
    report = json.loads(proc.stdout)
    return report, {c["id"]: c for c in report["checks"]}, proc.stderr


def _snapshot_with_devices(path: Path, devices: str) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("DEVICES", devices.encode()), ("etc/os-release", b'NAME="Inside"\nID=rhel\n'),
                           ("proc/cpuinfo", b"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vmx lm\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def test_snapshot_devices_manifest_creates_nodes_only_where_checks_expect_devices(tmp_path):
    from kvmcheck.tools.snapshot import device_paths, unpack

    assert {"/dev/kvm", "/dev/net/tun", "/dev/vhost-net", "/dev/sev"} <= set(device_paths())
    devices = ("proc/cmdline c 1 11 0644 0 0\n"      # /dev/kmsg where the kernel command line belongs
               "etc/hostname c 1 3 0644 0 0\n"       # /dev/null
               "proc/\x1b[2Jx c 1 3 0644 0 0\n"      # a terminal escape in a name: shown escaped
               "dev/kvm c 10 232 0660 0 36\n")
    archive = _snapshot_with_devices(tmp_path / "snap.tar.gz", devices)
    dest = tmp_path / "unpacked"
    dest.mkdir()
    notes = unpack(str(archive), str(dest))
    assert not os.path.lexists(dest / "proc/cmdline") and not os.path.lexists(dest / "etc/hostname")
    assert notes[0] == ("DEVICES entries refused, not created: /proc/cmdline, /etc/hostname, /proc/\\x1b[2Jx "
                        "(a device node may only stand where a check expects one, such as /dev/kvm: anywhere else "
                        "kvmcheck expects a file)")
    if os.geteuid() == 0:
        assert os.stat(dest / "dev/kvm").st_rdev == os.makedev(10, 232)

    report, results, stderr = audited_check(archive)
    assert "DEVICES OPENED: []" in stderr
    assert "DEVICES entries refused, not created: /proc/cmdline, /etc/hostname" in stderr
    assert "\x1b" not in stderr
    assert report["host"]["hostname"] is None  # no /etc/hostname at all: the refused node is not there


@pytest.fixture
def root_with_dev_bind(tmp_path):
    """A directory root whose dev is a read-only bind mount of the real /dev (skips where mount is refused)."""
    import shutil

    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a bind mount of /dev needs root and mount(8)")
    bind = subprocess.run(["mount", "--bind", "/dev", str(root / "dev")], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"mount --bind is not permitted here: {bind.stderr.strip()[:200]}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(root / "dev")], capture_output=True, text=True)
        if ro.returncode != 0:  # never leave the real /dev writable under a temporary tree that gets removed
            pytest.skip(f"cannot make the bind mount read-only: {ro.stderr.strip()[:200]}")
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root / "dev")], capture_output=True)
        assert not os.path.ismount(root / "dev")


def test_links_into_a_bind_mounted_dev_are_never_opened(root_with_dev_bind):
    root = root_with_dev_bind
    (root / "etc").mkdir()
    (root / "proc").mkdir()
    (root / "etc/os-release").symlink_to("/dev/zero")  # inside the root: ROOT/dev/zero, a character device
    (root / "proc/cpuinfo").symlink_to("../dev/zero")
    (root / "proc/cmdline").symlink_to("/dev/kmsg")
    (root / "etc/hostname").symlink_to("/dev/null")
    assert os.stat(root / "dev/zero").st_rdev == os.makedev(1, 5)

    report, results, stderr = audited_check(root)
    assert "DEVICES OPENED: []" in stderr
    reason = "not a regular file (a device node: never opened)"
    for cid in ("cpu.virt-flags", "cpu.64bit"):
        assert (cid, results[cid]["status"]) == (cid, "skip")
        assert results[cid]["summary"] == f"cannot read /proc/cpuinfo: {reason}"
    assert report["host"]["os"] is None and report["host"]["hostname"] is None


# -- item 1: the rpm database of an offline root is read, rpm is not run on it -----------------------------
def _rpm_db_file(tmp_path: Path, name: str, manifest: str) -> Path:
    """A real rpmdb.sqlite holding manifest's packages (built by rpm itself, see conftest), in its own dir."""
    from conftest import build_rpm_database

    scratch = tmp_path / f"scratch-{name}"
    (scratch / "var/lib/rpm").mkdir(parents=True)
    build_rpm_database(scratch, manifest)
    return scratch / "var/lib/rpm/rpmdb.sqlite"


def _copy_db(db: Path, dest_dir: Path) -> None:
    dest_dir.mkdir(parents=True)
    (dest_dir / "rpmdb.sqlite").write_bytes(db.read_bytes())


def test_var_linked_outside_never_reads_or_writes_the_outside_rpm_database(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('NAME="Red Hat Enterprise Linux"\nID="rhel"\nVERSION_ID="9.4"\n')
    outside = tmp_path / "outside"
    _copy_db(_rpm_db_file(tmp_path, "outside", "qemu-kvm\t8.2.0-outside\n"), outside / "lib/rpm")
    # The root's /var is an absolute link to the outside directory.  Inside the root it names
    # ROOT/<that path>, where a database of the root's own sits: that one, and only that one, is the root's.
    (root / "var").symlink_to(outside)
    _copy_db(_rpm_db_file(tmp_path, "inside", "bash\t5.1.8-9.el9\n"), root / str(outside).lstrip("/") / "lib/rpm")
    before = sorted(p.name for p in (outside / "lib/rpm").iterdir())

    report = kvmcheck.run(str(root), only=["packages.virt"])
    (pkgs,) = report.checks
    assert (pkgs.id, pkgs.status.value) == ("packages.virt", "warn")  # bash alone: the KVM stack is missing
    assert pkgs.evidence["installed"] == {} and "outside" not in json.dumps(pkgs.evidence)
    assert sorted(p.name for p in (outside / "lib/rpm").iterdir()) == before == ["rpmdb.sqlite"]  # no -shm, -wal


AUDITED_RUN = '''
import json, sys
started = []
sys.addaudithook(lambda event, args: started.append(event) if event in (
    "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.fork") else None)
import kvmcheck
report = kvmcheck.run(sys.argv[1], only=["packages.virt"])
print(json.dumps({"started": started, "check": report.to_dict()["checks"][0]}))
'''


def test_offline_rpm_database_is_read_without_starting_any_program(host_root):
    root = host_root("pkg-rhel9-enabled")  # a real rpmdb.sqlite built by rpm from the captured 'rpm -qa'
    proc = subprocess.run([sys.executable, "-c", AUDITED_RUN, str(root)], capture_output=True, text=True,
                          timeout=120, check=True)
    out = json.loads(proc.stdout)
    assert out["started"] == []
    assert (out["check"]["id"], out["check"]["status"]) == ("packages.virt", "pass")
    assert out["check"]["evidence"]["installed"]["QEMU/KVM"] == {"qemu-kvm": "8.2.0-11.el9_4.3",
                                                              "qemu-kvm-core": "8.2.0-11.el9_4.3"}


def _header(entries, store: bytes) -> bytes:
    import struct

    return (struct.pack(">ii", len(entries), len(store))
            + b"".join(struct.pack(">iiii", *e) for e in entries) + store)


def test_rpm_header_parser_reads_a_real_header_and_refuses_hostile_ones(tmp_path):
    import random
    import sqlite3
    import struct

    from kvmcheck.parsers.rpmdb import header_fields, rpm_qa_from_headers

    db = _rpm_db_file(tmp_path, "real", "qemu-kvm\t8.2.0-11.el9\n")
    with sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True) as conn:
        [blob] = [row[0] for row in conn.execute("SELECT blob FROM Packages")]
    assert header_fields(blob) == ("qemu-kvm", "8.2.0", "11.el9")

    good = _header([(1000, 6, 0, 1), (1001, 6, 5, 1), (1002, 6, 7, 1)], b"name\x001\x002\x00")
    assert header_fields(good) == ("name", "1", "2")
    hostile = [
        b"", b"\x00" * 7,
        struct.pack(">ii", 0x7FFFFFFF, 0x7FFFFFFF),  # counts far beyond rpm's limits: nothing allocated
        struct.pack(">ii", -1, -1),
        _header([(1000, 6, 0, 1), (1001, 6, 5, 1), (1002, 6, 7, 1)], b"name\x001\x002\x00")[:-1],  # truncated
        _header([(1000, 6, 1 << 30, 1), (1001, 6, 5, 1), (1002, 6, 7, 1)], b"name\x001\x002\x00"),  # offset out
        _header([(1000, 6, -4, 1), (1001, 6, 5, 1), (1002, 6, 7, 1)], b"name\x001\x002\x00"),  # negative offset
        _header([(1000, 6, 0, 1), (1001, 6, 5, 1), (1002, 6, 7, 1)], b"name\x001\x002"),  # no terminator
        _header([(1000, 4, 0, 1), (1001, 6, 5, 1), (1002, 6, 7, 1)], b"name\x001\x002\x00"),  # NAME not a string
        _header([(1000, 6, 0, 1), (1001, 6, 5, 1), (1002, 6, 7, 1)], b"na\tm\x001\x002\x00"),  # a tab in a name
        _header([(1000, 6, 0, 1), (1001, 6, 5, 1)], b"name\x001\x00"),  # no RELEASE
        _header([(1000, 6, 0, 1), (1001, 6, 5, 1), (1002, 6, 7, 1)], b"x" * (1 << 16) + b"\x00"),  # huge field
    ]
    for blob_ in hostile:
        assert header_fields(blob_) is None, blob_[:40]
    rng = random.Random(20261204)  # mutations of the real header: never an exception, never out of bounds
    for _ in range(3000):
        mutated = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        header_fields(bytes(mutated[:rng.randint(0, len(mutated))] if rng.random() < 0.2 else mutated))
    text, bad = rpm_qa_from_headers([good, hostile[2], blob, None])
    assert (text, bad) == ("name\t1-2\nqemu-kvm\t8.2.0-11.el9\n", 2)


def test_a_database_of_hostile_blobs_is_a_clear_skip(tmp_path):
    import sqlite3

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "var/lib/rpm").mkdir(parents=True)
    with sqlite3.connect(root / "var/lib/rpm/rpmdb.sqlite") as conn:
        conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)")
        conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b"\xff" * n,) for n in (0, 8, 100)])
    conn.close()
    (pkgs,) = kvmcheck.run(str(root), only=["packages.virt"]).checks
    assert (pkgs.id, pkgs.status.value) == ("packages.virt", "skip")
    assert pkgs.summary == "/var/lib/rpm/rpmdb.sqlite: none of its 3 package headers is a sound rpm header"
    no_table = root / "var/lib/rpm/rpmdb.sqlite"
    no_table.unlink()
    sqlite3.connect(no_table).execute("CREATE TABLE Other (x)").connection.close()
    (pkgs,) = kvmcheck.run(str(root), only=["packages.virt"]).checks
    assert pkgs.summary == ("/var/lib/rpm/rpmdb.sqlite is not an rpm database kvmcheck can read "
                            "(sqlite: no such table: Packages)")


def test_rpm_header_parser_properties():
    """Any bytes: None or three clean fields, never an exception; any well-formed header: its fields back."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    from kvmcheck.parsers.rpmdb import header_fields

    @hypothesis.given(st.binary(max_size=2048))
    def arbitrary(blob):
        got = header_fields(blob)
        assert got is None or all(f and not any(c.isspace() for c in f) for f in got)

    field = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="\x85"),
                    min_size=1, max_size=40).filter(lambda t: not any(c.isspace() for c in t))

    @hypothesis.given(field, field, field, st.lists(st.integers(1003, 1200), max_size=5))
    def well_formed(name, version, release, other_tags):
        store, entries = b"", []
        for tag, text in ((1000, name), (1001, version), (1002, release)):
            entries.append((tag, 6, len(store), 1))
            store += text.encode() + b"\0"
        entries += [(t, 4, 0, 1) for t in other_tags]
        assert header_fields(_header(entries, store)) == (name, version, release)

    arbitrary()
    well_formed()
