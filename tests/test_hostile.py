# SPDX-License-Identifier: GPL-2.0-or-later
"""Hostile captured roots (issue 9): garbage, loops, links out of the root, FIFOs, unreadable files.

The roots are built at test time (FIFOs, modes and loops cannot live in git) from a captured host
corrupted at every path the checks declare in ``reads=`` (kvmcheck.tools.snapshot.declared_reads), so a
new check is covered as soon as it declares what it reads.  Whatever the root holds, the run must
finish, print a valid report, exit 0 or 1, and answer every check with a clear verdict: an
``error`` result here is a kvmcheck bug.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import HOSTS, as_nobody, materialize, validate_report

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]
BASE = "intel-baremetal-vmx"  # the realistic host every hostile root starts from
HANG_GUARD_S = 60  # a hang guard only: a normal run takes about a second
CHECK_TIMEOUT_S = 20  # --timeout: per check (the default is 5 s)
SENTINEL = "SENTINEL-0f1e2d3c-outside-the-root"
SEED = 20260109
FROM_PATTERN = 10  # paths taken for each declared pattern, over all captured roots
FROM_DIR = 12  # files taken from each declared directory, over all captured roots
_WILD = "*["  # a trailing '?' is literal in practice (/proc/device-tree/hmc-managed?)


@functools.lru_cache(maxsize=None)
def targets() -> Dict[str, Tuple[str, Optional[Path]]]:
    """Every declared read as concrete host paths: path -> (kind "file" or "dir", a captured example).

    A pattern becomes the entries it matches in tests/hosts/* plus one made-up name; a declared
    directory brings some of the files found under it; whatever holds another target is a directory.
    """
    from kvmcheck.tools.snapshot import declared_reads

    roots = sorted(p for p in HOSTS.iterdir() if p.is_dir())
    found: Dict[str, Tuple[str, Optional[Path]]] = {}

    def add(path: str, kind: str, example: Optional[Path]) -> None:
        if path not in found or (found[path][1] is None and example is not None):
            found[path] = (kind, example)

    for pattern in declared_reads():
        matches: Dict[str, Path] = {}
        for root in roots:
            for real in sorted(glob.glob(glob.escape(str(root)) + pattern.replace("?", "[?]"))):
                matches.setdefault("/" + os.path.relpath(real, root), Path(real))
        kinds = {p: "dir" if r.is_dir() else "file" for p, r in matches.items()}
        for path, real in sorted(matches.items())[:FROM_PATTERN]:
            add(path, kinds[path], real if real.is_file() else None)
            if kinds[path] == "dir":
                below = sorted(f for f in real.rglob("*") if f.is_file() and f.name != ".keep")[:FROM_DIR]
                for f in below:
                    add(path + "/" + str(f.relative_to(real)), "file", f)
        if any(ch in pattern for ch in _WILD):
            add(pattern.replace("*", "hostile"), "dir" if "dir" in kinds.values() else "file", None)
        else:
            add(pattern, "file", None)
    paths = sorted(found)
    for path in paths:  # a target holding another is a directory
        if found[path][0] == "file" and any(p.startswith(path + "/") for p in paths):
            found[path] = ("dir", None)
    return found


def leaves() -> List[str]:
    """Targets no other target sits under."""
    paths = sorted(targets())
    return [p for p in paths if not any(q.startswith(p + "/") for q in paths)]


def _at(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _clear(node: Path) -> None:
    if node.is_symlink() or (node.exists() and not node.is_dir()):
        node.unlink()
    elif node.is_dir():
        shutil.rmtree(node)


def _parent(root: Path, path: str) -> Path:
    """The node for path with real directories above it (anything in the way is removed)."""
    node = _at(root, path)
    here = root
    for comp in Path(path.lstrip("/")).parent.parts:
        here = here / comp
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            here.unlink()
        here.mkdir(exist_ok=True)
    _clear(node)
    return node


def base_root(where: Path) -> Path:
    root = materialize(BASE, where)
    for path, (kind, _) in targets().items():  # every declared directory exists, files go in below
        node = _at(root, path)
        if kind == "dir" and (node.is_symlink() or not node.is_dir()):
            _parent(root, path).mkdir()
    return root


# -- garbage ------------------------------------------------------------------------------------------
def _random_bytes(rng: random.Random) -> bytes:
    data = bytearray(rng.getrandbits(8) for _ in range(rng.randrange(1, 3000)))
    for bad in (b"\0", b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\n\0\n"):  # NUL, invalid UTF-8
        at = rng.randrange(len(data) + 1)
        data[at:at] = bad
    return bytes(data)


DEEP = "".join([
    "[" * 5000, "{" * 5000, "(" * 5000, "<network>" * 3000, "\n",
    "<network>", "<ip address='", "9" * 5000, "'/>" * 2, "</network>\n",
    "MemTotal: ", "9" * 5000, " kB\n", "HugePages_Total: -", "9" * 400, "\n",
    "processor\t: ", "9" * 5000, "\nflags\t\t: vmx lm svm ", "x" * 5000, "\n",
    "0-", "9" * 5000, ",", "1-" * 3000, "\n", "9" * 20000, "\n",
    "Iface\tDestination\tGateway\tFlags\nvirbr0\t", "F" * 5000, "\t00000000\t0001\n",
    "options kvm_intel nested=", "9" * 5000, "\n", "a=" * 5000, "\n", "\t" * 10000, "\n",
    "deb [", "arch=" * 2000, "] http://x ", "y " * 2000, "\n", "[repo]\nbaseurl=\\\n" * 200,
    "Package: qemu-kvm\nStatus: install ok installed\nVersion: ", "9:" * 2000, "\n\n",
    "CONFIG_KVM=", "9" * 5000, "\n", "cgroup2 /sys/fs/cgroup cgroup2 rw", ",x" * 5000, " 0 0\n",
])


def _swapped_contents() -> Dict[str, bytes]:
    """Each file target gets a real captured file, but the wrong one (plausible text in the wrong place)."""
    files = sorted(p for p, (kind, _) in targets().items() if kind == "file")
    pool = sorted({ex.read_bytes() for _, (kind, ex) in targets().items() if ex is not None})
    out = {}
    for i, path in enumerate(files):
        own = targets()[path][1]
        own_bytes = own.read_bytes() if own else None
        choice = pool[(i * 7 + 3) % len(pool)]
        if choice == own_bytes:
            choice = pool[(i * 7 + 4) % len(pool)]
        out[path] = choice
    return out


def write_garbage(root: Path, kind: str) -> None:
    rng = random.Random(SEED)
    files = sorted(p for p, (k, _) in targets().items() if k == "file")
    swapped = _swapped_contents() if kind == "other-file" else {}
    huge = None
    for path in files:
        node = _parent(root, path)
        if kind == "huge-line":
            if huge is None:  # one 2 MB line, hard-linked everywhere (cheap to build)
                huge = root.parent / "huge-line"
                huge.write_bytes(b"flags: vmx " + b"A1:" * ((2 << 20) // 3))
            os.link(huge, node)
            continue
        data = {"random": lambda: _random_bytes(rng), "empty": lambda: b"", "deep": DEEP.encode,
                "other-file": lambda: swapped[path]}[kind]()
        node.write_bytes(data)


# -- running ------------------------------------------------------------------------------------------
def cli_args(root: Path, fmt: str = "json") -> List[str]:
    # Every file at its hostile worst makes some checks slow (2 MB lines through configparser take
    # about 4 s for repos.configured here): a roomier per-check limit keeps this from being a timed test.
    return ["check", "--root", str(root), "--format", fmt, "--timeout", str(CHECK_TIMEOUT_S)]


def run_cli(root: Path, fmt: str = "json", argv: Optional[List[str]] = None, cwd: Optional[str] = None):
    argv = argv or CLI + cli_args(root, fmt)
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=cwd,
                              env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    except subprocess.TimeoutExpired:
        pytest.fail(f"kvmcheck did not finish within {HANG_GUARD_S} s on {root}: something blocks")


MAX_REPORT = 1_000_000  # characters of JSON: a real host's report is about 30,000
MAX_SUMMARY = 300  # the longest on the captured hosts is about 260 characters
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ufffd]")
_EXC_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception)\b|Traceback")


def assert_sane(proc) -> dict:
    """Exit 0/1/3, no traceback, a valid report, and a clear answer from every check (returns the report)."""
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode in (0, 1, 3), (proc.returncode, proc.stderr[-2000:], proc.stdout[-2000:])
    # Evidence is bounded (runner.bounded_evidence): megabytes of garbage make no megabyte report.
    assert len(proc.stdout) < MAX_REPORT, f"a {len(proc.stdout)}-character report"
    return assert_clear(validate_report(json.loads(proc.stdout)))


def assert_clear(report: dict) -> dict:
    """No check answers 'error', and every summary says what was wrong in a line a person can read."""
    checks = report["checks"]
    errors = [(c["id"], c["summary"]) for c in checks if c["status"] == "error"]
    assert not errors, "checks answering 'error':\n" + "\n".join(f"{i}: {m}" for i, m in errors)
    raw = [(c["id"], c["summary"]) for c in checks if _EXC_NAME.search(c["summary"])]
    assert not raw, "summaries quoting a Python exception:\n" + "\n".join(f"{i}: {m}" for i, m in raw)
    echoed = [(c["id"], c["summary"][:160]) for c in checks
              if len(c["summary"]) > MAX_SUMMARY or _UNPRINTABLE.search(c["summary"])]
    assert not echoed, "summaries echoing garbage:\n" + "\n".join(f"{i}: {m!r}" for i, m in echoed)
    return report


# -- 1. garbage -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "huge-line", "empty", "other-file", "deep"])
def test_every_declared_file_garbage(kind, tmp_path):
    root = base_root(tmp_path)
    write_garbage(root, kind)
    assert_sane(run_cli(root))


def test_garbage_root_text_report(tmp_path):
    root = base_root(tmp_path)
    write_garbage(root, "random")
    proc = run_cli(root, fmt="text")
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode in (0, 1, 3), proc.stderr[-2000:]
    assert "Verdict: " in proc.stdout
    assert not re.search(r"^ERROR ", proc.stdout, re.M), proc.stdout


_BLOB_ALPHABET = ":\t\n =,-_<>/\"'#[]()0123456789abcdefxyz kBMemTotalprocessorflagsvmxsvm"


def test_garbage_property(tmp_path_factory):
    """Hypothesis: one generated blob per declared file, run in-process (no check may error)."""
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st

    import kvmcheck

    files = sorted(p for p, (k, _) in targets().items() if k == "file")
    template = base_root(tmp_path_factory.mktemp("hostile-template"))
    for path in files:  # regular files everywhere (copytree would read the device nodes)
        _parent(template, path).write_bytes(b"")
    blob = st.one_of(st.binary(max_size=400), st.text(alphabet=_BLOB_ALPHABET, max_size=400).map(str.encode))

    # No shrinking: with hundreds of blobs it takes minutes, and the failing summary already names the file.
    @settings(max_examples=30, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(blob, min_size=len(files), max_size=len(files)))
    def run(blobs):
        where = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
        try:
            root = where / "root"
            shutil.copytree(template, root, symlinks=True)
            for path, data in zip(files, blobs):
                _parent(root, path).write_bytes(data)
            report = kvmcheck.run(str(root), timeout=CHECK_TIMEOUT_S)
            assert_clear(report.to_dict())  # to_dict validates against the schema (conftest)
        finally:
            shutil.rmtree(where, ignore_errors=True)

    run()


# -- 2. to 7.: the other hostile roots, each built by one function on a copy of the base -----------------------
def make_loops(root: Path, loop: str) -> None:
    """Every declared path a link loop: a -> b -> a (relative or absolute), or a -> a."""
    for path in leaves():
        node = _parent(root, path)
        other = node.with_name(node.name + ".loop")
        if loop == "self":
            os.symlink(node.name, node)
        elif loop == "pair":
            os.symlink(other.name, node)
            os.symlink(node.name, other)
        else:  # absolute targets are taken inside the root
            os.symlink(path + ".loop", node)
            os.symlink(path, other)


def make_outside(root: Path, how: str) -> None:
    """Every declared path a link to a sentinel file or directory beside the root (absolute or ../../)."""
    top = root.parent / "outside"
    (top / "dir").mkdir(parents=True, exist_ok=True)
    (top / "file").write_text(f"{SENTINEL}\nflags\t\t: vmx lm\nMemTotal: 1 kB\n{SENTINEL}\n")
    for path in targets():
        (top / "dir" / path.rsplit("/", 1)[-1]).write_text(f"{SENTINEL}\n")
    for path in leaves():
        node = _parent(root, path)
        dest = top / ("dir" if targets()[path][0] == "dir" else "file")
        os.symlink(dest if how == "absolute" else os.path.relpath(dest, node.parent), node)
    if how.endswith("keep-os-release"):  # lets the os-release reader run among hostile *-release links
        _parent(root, "/usr/lib/os-release").write_text('ID=fedora\nNAME="Fedora Linux"\nVERSION_ID=40\n')


def make_kinds_swapped(root: Path, swap: str) -> None:
    """Every declared file a directory, or every declared directory a file."""
    if swap == "files-are-dirs":
        for path, (kind, _) in targets().items():
            if kind == "file":
                node = _parent(root, path)
                node.mkdir()
                (node / "cpuinfo").write_text("processor : 0\n")
        return
    dirs = sorted((p for p, (k, _) in targets().items() if k == "dir"), key=lambda p: p.count("/"))
    for path in dirs:
        if not any(_at(root, a).is_file() for a in dirs if path.startswith(a + "/")):  # not under a new file
            _parent(root, path).write_text("0\n")


def make_fifos(root: Path, keep_os_release: bool) -> None:
    """Every declared file a FIFO nobody writes to."""
    for path, (kind, _) in targets().items():
        if kind == "file":
            os.mkfifo(_parent(root, path))
    if keep_os_release:
        _parent(root, "/usr/lib/os-release").write_text('ID=debian\nNAME="Debian GNU/Linux"\nVERSION_ID=12\n')


def make_unreadable(root: Path, what: str) -> None:
    """Every declared file mode 000 (and every declared directory too, for "files-and-dirs")."""
    for path, (kind, _) in targets().items():
        if kind == "file":
            node = _parent(root, path)
            node.write_text("0\n")
            node.chmod(0)
    if what == "files-and-dirs":
        for path, (kind, _) in targets().items():
            if kind == "dir":
                _at(root, path).chmod(0)


def test_empty_root(tmp_path):
    report = assert_sane(run_cli(tmp_path))
    assert {c["status"] for c in report["checks"]} <= {"skip", "warn", "fail", "pass"}


@pytest.mark.parametrize("loop", ["pair", "self", "absolute-pair"])
def test_every_declared_path_a_symlink_loop(loop, tmp_path):
    root = base_root(tmp_path)
    make_loops(root, loop)
    assert_sane(run_cli(root))


# Every file the run opens or lists, recorded by an audit hook in the child (conftest's run_audited records
# writes only).
AUDIT_READS = """
import os, sys, json
sys.dont_write_bytecode = True
seen = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        seen.append(os.fsdecode(args[0]))
sys.addaudithook(hook)
from kvmcheck.cli import main
sys.argv = ["kvmcheck"] + sys.argv[1:]
try:
    main()
except SystemExit:
    pass
sys.stderr.write("OPENED " + json.dumps(seen) + "\\n")
"""


@pytest.mark.parametrize("how", ["absolute", "relative", "relative-keep-os-release"])
def test_links_out_of_the_root_are_not_followed(how, tmp_path):
    root = base_root(tmp_path)
    make_outside(root, how)
    proc = run_cli(root, argv=[sys.executable, "-c", AUDIT_READS] + cli_args(root))
    assert "OPENED " in proc.stderr, proc.stderr[-4000:]
    proc.stderr, _, opened = proc.stderr.rpartition("OPENED ")
    assert_sane(proc)
    assert SENTINEL not in proc.stdout
    outside = str(root.parent / "outside")
    escaped = sorted({p for p in json.loads(opened) if os.path.realpath(p).startswith(outside + "/")})
    assert not escaped, f"opened outside the root: {escaped}"
    text = run_cli(root, fmt="text")
    assert text.returncode in (0, 1, 3) and SENTINEL not in text.stdout


@pytest.mark.parametrize("swap", ["files-are-dirs", "dirs-are-files"])
def test_kinds_swapped(swap, tmp_path):
    root = base_root(tmp_path)
    make_kinds_swapped(root, swap)
    assert_sane(run_cli(root))


@pytest.mark.parametrize("keep_os_release", [False, True], ids=["all", "keep-os-release"])
def test_fifos_do_not_block(keep_os_release, tmp_path):
    root = base_root(tmp_path)
    make_fifos(root, keep_os_release)
    assert_sane(run_cli(root))  # run_cli fails the test when the run outlives HANG_GUARD_S


@pytest.mark.parametrize("what", ["files", "files-and-dirs"])
def test_unreadable_as_nobody(what, public_tmp):
    """Root reads anything whatever its mode, so this one runs as nobody (setpriv)."""
    root = base_root(public_tmp)
    make_unreadable(root, what)
    argv = as_nobody(CLI + cli_args(root))
    report = assert_sane(run_cli(root, argv=argv, cwd="/"))
    assert any("permission denied" in c["summary"] for c in report["checks"])
