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
# The corpus lives beside the checkout (../shared), not in it: a clone on its own still runs the rest.
HAVE_CORPUS = (CORPUS / "expected.tsv").is_file()
needs_corpus = pytest.mark.skipif(not HAVE_CORPUS, reason=f"the lscpu corpus is not beside the checkout "
                                  f"({CORPUS}/expected.tsv missing): put the shared material at ../shared")


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
    acls = root / "ACLS"
    if acls.exists():
        for line in acls.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                path, *entries = line.split()
                set_acl(root / path, entries)
        acls.unlink()
    packages = root / "RPM-QA"
    if packages.exists():
        build_rpm_database(root, packages.read_text())
        packages.unlink()
    return root


def set_acl(path: Path, entries) -> None:
    """Give path a POSIX access ACL: its mode's owner, group and other entries plus named ones ("u:64055:rw",
    "g:108:r"), written as the system.posix_acl_access xattr the way setfacl(1) writes it (with a mask)."""
    import struct

    bits = {"r": 4, "w": 2, "x": 1}
    mode = os.lstat(path).st_mode
    named = []
    for entry in entries:
        kind, ident, perms = entry.split(":")
        named.append((2 if kind == "u" else 8, sum(bits[c] for c in perms), int(ident)))
    group_obj = (mode >> 3) & 7
    mask = group_obj
    for _, perm, _ in named:
        mask |= perm
    none = 0xFFFFFFFF
    table = sorted([(1, (mode >> 6) & 7, none), (4, group_obj, none), (0x10, mask, none), (0x20, mode & 7, none)]
                   + named)
    value = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in table)
    try:
        os.setxattr(path, "system.posix_acl_access", value, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            pytest.skip(f"this file system cannot hold a POSIX ACL on {path.name}: {exc.strerror}")
        raise


RPM_DB_DIRS = ("usr/lib/sysimage/rpm", "var/lib/rpm")  # SUSE, then RHEL
_RPM_CACHE = {}


def _stub_rpm(name: str, evr: str, workdir: Path) -> Path:
    """A real, empty noarch package NAME-VERSION-RELEASE built with rpmbuild (cached per session)."""
    import subprocess

    key = (name, evr)
    if key not in _RPM_CACHE:
        version, _, release = evr.partition("-")
        top = workdir / f"{name}-{evr}"
        (top / "SPECS").mkdir(parents=True)
        spec = top / "SPECS" / "stub.spec"
        spec.write_text(f"Name: {name}\nVersion: {version}\nRelease: {release or '1'}\nSummary: test stub\n"
                        "License: MIT\nBuildArch: noarch\n%description\nstub\n%files\n")
        subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", "--define", f"_dbpath {top}/db",
                        str(spec)], check=True, capture_output=True, timeout=60)
        _RPM_CACHE[key] = next((top / "RPMS" / "noarch").glob("*.rpm"))
    return _RPM_CACHE[key]


def build_rpm_database(root: Path, manifest: str) -> None:
    """Turn a root's RPM-QA manifest (NAME<TAB>VERSION-RELEASE lines, as 'rpm -qa' printed them on the
    captured system) into a real rpm database in the root, so 'rpm --root' is exercised for real."""
    import subprocess
    import tempfile

    if not (shutil.which("rpm") and shutil.which("rpmbuild")):
        pytest.skip("needs rpm and rpmbuild (Debian package rpm) to build the root's rpm database")
    dbdir = next((d for d in RPM_DB_DIRS if (root / d).is_dir()), RPM_DB_DIRS[1])
    shutil.rmtree(root / dbdir, ignore_errors=True)  # the capture's placeholder files
    (root / dbdir).mkdir(parents=True)
    rpm = ["rpm", "--root", str(root), "--dbpath", "/" + dbdir]
    subprocess.run(rpm + ["--initdb"], check=True, capture_output=True, timeout=60)
    if "workdir" not in _RPM_CACHE:
        _RPM_CACHE["workdir"] = Path(tempfile.mkdtemp(prefix="kvmcheck-test-rpms-"))
    work = _RPM_CACHE["workdir"]
    pkgs = [_stub_rpm(*line.split("\t")[:2], work) for line in manifest.splitlines() if "\t" in line]
    if pkgs:
        subprocess.run(rpm + ["-i", "--justdb", "--nodeps", "--noscripts", "--notriggers", "--nosignature"]
                       + [str(p) for p in pkgs], check=True, capture_output=True, timeout=120)


@pytest.fixture
def host_root(tmp_path):
    """host_root("pvm-host") -> a ready-to-use root directory."""
    return lambda name: materialize(name, tmp_path)


def corpus_dumps():
    """The corpus' rows (dump, arch, lscpu's verdicts); none without the corpus (tests using it need needs_corpus)."""
    if not HAVE_CORPUS:
        return []
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
    """This process's mappings of KVM objects (a vcpu's kvm_run page: 'anon_inode:kvm-vcpu:N', or /dev/kvm).

    Only those: a checkout or virtual environment under a directory named kvmcheck puts "kvm" in the path of
    every library loaded from it, and a library loaded lazily during a test is no leak."""
    with open("/proc/self/maps") as f:
        return [line for line in f if "anon_inode:kvm" in line or line.rstrip().endswith(" /dev/kvm")]


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


# --- reports: a deterministic report for golden files, and the schema every JSON report must follow ------
SCHEMA = HERE.parent / "reports" / "report.schema.json"


def fixed_report(root: Path, **options):
    """kvmcheck.run on root with what varies between runs pinned: the time stamp, durations, the root path."""
    import kvmcheck

    import json

    report = kvmcheck.run(str(root), **options)
    report.generated_at = "2026-01-01T00:00:00+00:00"
    report.host["root"] = pinned = "/mnt/sysimage"
    from dataclasses import replace

    def pin(result):
        # Checks quote the root too (kvm.guest-run: "the root is ..."): pin it there as well.
        texts = {attr: getattr(result, attr).replace(str(root), pinned)
                 for attr in ("summary", "detail", "remediation") if getattr(result, attr)}
        return replace(result, duration_ms=0.0, **texts,
                       evidence=json.loads(json.dumps(result.evidence).replace(json.dumps(str(root))[1:-1], pinned)))

    report.checks = [pin(result) for result in report.checks]  # results are values: pinned copies
    return report


def validate_json(schema_path: Path, data):
    """Validate data against a JSON Schema file (draft 2020-12, formats checked); returns data."""
    import json

    import jsonschema

    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    return data


def validate_report(data):
    """Validate a JSON report (a dict) against reports/report.schema.json."""
    return validate_json(SCHEMA, data)


# The CLI run under an audit hook: every open for writing, rename, other file mutation and command it makes.
AUDIT = """
import os, sys, json
sys.dont_write_bytecode = True
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
MUTATE = {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.link", "os.symlink",
          "os.utime", "shutil.rmtree", "shutil.copyfile", "os.mknod", "os.mkfifo"}
seen = {"writes": [], "renames": [], "mutations": [], "commands": []}
def hook(event, args):
    if event == "open" and isinstance(args[2], int) and args[2] & WRITE:
        seen["writes"].append(os.path.abspath(str(args[0])))
    elif event == "os.rename":  # os.rename and os.replace both raise it
        seen["renames"].append([os.path.abspath(str(args[0])), os.path.abspath(str(args[1]))])
    elif event in MUTATE:
        seen["mutations"].append([event, str(args[0])])
    elif event == "subprocess.Popen":
        seen["commands"].append([str(a) for a in args[1]] if not isinstance(args[1], (str, bytes)) else [str(args[1])])
sys.addaudithook(hook)
from kvmcheck.cli import main
sys.argv = ["kvmcheck"] + sys.argv[1:]
try:
    main()
except SystemExit as exc:
    seen["exit"] = exc.code
sys.stderr.write("AUDIT " + json.dumps(seen) + "\\n")
"""


def run_audited(args):
    """(the completed process, what the audit hook saw) for kvmcheck ARGS in a child Python."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", AUDIT] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120)
    return proc, json.loads(proc.stderr.rsplit("AUDIT ", 1)[1])


@pytest.fixture(autouse=True)
def _every_report_follows_the_schema(monkeypatch):
    """Every JSON report a test produces in-process is validated against the shipped schema.

    Report.to_dict is what --format json and every template serialise, so wrapping it (it still runs)
    checks all of them; CLI runs in subprocesses are validated where their tests parse the JSON.
    """
    from kvmcheck.core.model import Report

    original = Report.to_dict

    def to_dict(self):
        return validate_report(original(self))

    monkeypatch.setattr(Report, "to_dict", to_dict)


# --- hypothesis profiles (tests/test_properties.py) ------------------------------------------------------------
# "ci" is the default, since CI runs plain pytest: thousands of examples per parser (issue 9), the same ones
# every run (derandomize), no deadline (a noisy VM makes timings flaky), and no example database written
# into the checkout.  HYPOTHESIS_PROFILE=dev runs a quick 200.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; only the property tests need it
    pass
else:
    _quiet = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", max_examples=3000, deadline=None, derandomize=True, database=None,
                              suppress_health_check=_quiet)
    settings.register_profile("dev", max_examples=200, deadline=None, database=None, suppress_health_check=_quiet)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def public_tmp():
    """A directory others (nobody, a second user) may traverse: pytest's own tmp_path is 0700."""
    import shutil
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="kvmcheck-public-"))
    where.chmod(0o755)
    yield where
    shutil.rmtree(where, ignore_errors=True)
