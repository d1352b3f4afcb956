# SPDX-License-Identifier: GPL-2.0-or-later
"""Snapshots: the files kvmcheck reads, in one archive, to audit a host offline later.

``kvmcheck snapshot --output FILE.tar.gz`` captures an allowlist: the paths and
patterns each check declares in ``reads=(...)``, plus the few files the run's
shared facts read (:data:`CONTEXT_READS`).  Nothing else, and never secrets:
:func:`denied` refuses password hashes, keys, ssh and private-key directories
and a few identifiers even when a declared pattern or a symlink leads there.
The archive holds a ``MANIFEST`` (every captured path, its size, and what was
skipped and why) and, when the root has device nodes kvmcheck reads, a
``DEVICES`` file in the tests/hosts format (``dev/kvm c 10 232 0660 0 36``):
device nodes are never tar members.

Layout: the archive's members are the root's paths without the leading slash,
so an unpacked snapshot is a ``--root`` directory and, as it is, a
tests/hosts/<name> fixture.

``kvmcheck check --root FILE.tar.gz`` unpacks with :func:`open_archive`, which
validates every member itself (no ``tarfile.extract``, whose ``filter=`` only
exists in recent Pythons) into a private directory (mode 0700) removed
afterwards.  Symlinks in a snapshot are always relative and stay inside it.

Decisions:

* The live kernel log: on a live root whose ring buffer is readable, the
  snapshot stores it (Host.kernel_log, /dev/kmsg records) as var/log/dmesg and
  leaves out kern.log, messages and syslog, because an offline run reads
  *every* log file it finds while a live run reads /dev/kmsg only: this way the
  offline run parses exactly what the live run parsed.  It holds host names,
  addresses and serial numbers, but no secrets; the MANIFEST says it is there.
* Device nodes are created when unpacking only if the process may (root with
  CAP_MKNOD): kvm.device and network.tun judge a node's type, mode and owner
  offline.  Otherwise they are left out and a note goes to stderr.  Nodes go
  into a 0700 directory and kvmcheck never opens devices of an offline root.
* Secrets in declared configuration files (``vnc_password = ...`` in qemu.conf,
  ``password=`` in a .repo file, ``user:password@`` in URLs) are replaced by
  ``REDACTED``; the MANIFEST lists each file so changed.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fnmatch
import io
import os
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from .host import DEFAULT_READ_LIMIT, Host

# -- limits (snapshot and unpacking use the same ones, so every snapshot can be read back) ---------
MAX_ENTRIES = 20_000  # files, directories and links in one snapshot
MAX_TOTAL_BYTES = 64 << 20  # file contents, all together
MAX_FILE_BYTES = 32 << 20  # one file named by a declared path (an rpm database can be this big)
MAX_TREE_FILE_BYTES = 1 << 20  # one file found by walking a declared directory
MAX_TREE_DEPTH = 6  # levels below a declared directory
MAX_WILDCARD_TREE_DEPTH = 2  # below a directory matched by a pattern ending in a wildcard (/lib/modules/*)
LOG_HEAD_BYTES = DEFAULT_READ_LIMIT  # kvmcheck reads no more of a log than this
MAX_DEVICES = 1_000
MAX_MANIFEST_BYTES = 8 << 20
MAX_RATIO = 1_000  # uncompressed / compressed, for archives that unpack to more than 16 MiB
FULL_SIZE_DIRS = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")  # rpm reads its database whole

MANIFEST = "MANIFEST"
DEVICES = "DEVICES"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")

# What every run reads besides the checks' own declarations: the report's host block
# (kvmcheck.context.Context.host_facts), virtualization detection and the kernel log.
CONTEXT_READS = (
    "/proc/sys/kernel/hostname", "/etc/hostname", "/proc/sys/kernel/arch", "/proc/sys/kernel/osrelease",
    "/proc/cpuinfo", "/proc/cmdline", "/etc/os-release", "/usr/lib/os-release", "/etc/*-release",
    "/etc/*_version", "/proc/sysinfo", "/proc/bus/pci/devices", "/proc/xen/capabilities", "/proc/iSeries",
    "/proc/device-tree/compatible", "/proc/device-tree/ibm,partition-name", "/proc/device-tree/hmc-managed?",
    "/sys/class/dmi/id", "/sys/devices/system/clocksource/clocksource0/available_clocksource",
    "/sys/module/kvm*", "/lib/modules/*", "/boot/config-*", "/var/log/dmesg", "/var/log/kern.log",
    "/var/log/messages", "/var/log/syslog", "/var/log/boot.log",
    # host.container (Context.container): PID 1's cgroup, the mount table, the runtimes' marker files
    "/proc/1/cgroup", "/proc/self/mountinfo", "/.dockerenv", "/run/.containerenv",
)
# Directories whose existence is the fact: captured empty (/proc/xen/privcmd, xenbus can block).
EXISTENCE_ONLY = ("/proc/xen",)
LOG_FILES = ("/var/log/dmesg", "/var/log/kern.log", "/var/log/messages", "/var/log/syslog", "/var/log/boot.log")

# -- the deny list: checked on every path, link target and file found in a declared directory ------
_DENY_PATHS = (
    ("/etc/shadow*", "password hashes"), ("/etc/gshadow*", "password hashes"),
    ("/etc/security/opasswd", "password hashes"), ("/etc/ssh", "ssh keys"), ("/etc/ssh/*", "ssh keys"),
    ("/root", "root's home directory"), ("/root/*", "root's home directory"),
    ("/home/*", "home directories"), ("/etc/ssl/private*", "private keys"),
    ("/etc/pki/*private*", "private keys"), ("/etc/libvirt/secrets*", "libvirt secrets"),
    ("/var/lib/libvirt/swtpm*", "virtual TPM state"), ("/var/lib/libvirt/images/*", "guest disk images"),
    ("/var/lib/libvirt/qemu/save*", "guest memory"), ("/var/lib/libvirt/qemu/snapshot*", "guest state"),
    ("/var/lib/libvirt/qemu/nvram*", "guest firmware variables"),
    ("/sys/module/*/sections*", "kernel addresses"),
    ("/sys/devices/virtual/dmi/id/*serial*", "serial numbers"), ("/sys/devices/virtual/dmi/id/*uuid*", "identifiers"),
    ("/sys/devices/virtual/dmi/id/*asset_tag*", "identifiers"),
    ("/sys/class/dmi/id/*serial*", "serial numbers"), ("/sys/class/dmi/id/*uuid*", "identifiers"),
    ("/sys/class/dmi/id/*asset_tag*", "identifiers"),
)
_DENY_COMPONENTS = (".ssh", ".gnupg", "ssh", "secrets", "swtpm")
_DENY_NAMES = ("*.key", "*.pem", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.keytab", "*.aes", "*.gpg",
               "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "ssh_host_*", "authorized_keys*",
               "*master-key*", "*secret*", "*private*")
_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----|PuTTY-User-Key-File")
_SECRET_ASSIGNMENT = re.compile(
    r"^(?P<head>\s*[A-Za-z0-9_.-]*(?:password|passwd|passphrase|secret|token)[A-Za-z0-9_.-]*\s*=\s*)"
    r"(?P<value>\S.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^\s/:@]+:)[^\s/@]+@", re.IGNORECASE)
_NO_REDACTION = ("/etc/passwd", "/etc/group")


class ArchiveError(ValueError):
    """A snapshot archive that is unsafe, too big or corrupt: it is refused, never half-read."""


class SnapshotError(OSError):
    """The snapshot could not be written."""


def denied(path: str) -> Optional[str]:
    """Why a host path may never be captured, or None when it may."""
    path = "/" + path.strip("/")
    for pattern, why in _DENY_PATHS:
        if fnmatch.fnmatchcase(path, pattern):
            return f"denied: {why}"
    comps = [c for c in path.split("/") if c]
    for comp in comps[:-1] if comps else ():
        if comp in _DENY_COMPONENTS or "private" in comp:
            return f"denied: inside a {comp} directory (keys and secrets)"
    if comps:
        name = comps[-1]
        if name in _DENY_COMPONENTS:
            return f"denied: {name} directory (keys and secrets)"
        for pattern in _DENY_NAMES:
            if fnmatch.fnmatchcase(name.lower(), pattern):
                return f"denied: {pattern} (keys and secrets)"
    return None


def declared_reads(extra: Sequence[str] = CONTEXT_READS) -> List[str]:
    """Every path and pattern the registered checks declare, plus the run's shared reads.

    Placeholders such as ``<release>`` become ``*``: the snapshot keeps every installed kernel's copy.
    """
    from .registry import load_checks

    checks, _ = load_checks()
    found: Dict[str, None] = {}
    for item in [r for c in checks for r in c.reads] + list(extra):
        if not item.startswith("/"):
            continue  # not a path (a command, a note): nothing to capture
        found[re.sub(r"<[^/>]*>", "*", item)] = None
    return sorted(found)


def redact(path: str, text: str) -> Tuple[str, int]:
    """(text with secrets in configuration replaced by REDACTED, how many replaced)."""
    if not path.startswith("/etc/") or path in _NO_REDACTION:
        return text, 0
    count = 0

    def value(m: "re.Match[str]") -> str:
        nonlocal count
        count += 1
        raw = m.group("value")
        quote = raw[0] if raw[0] in "\"'" and raw.endswith(raw[0]) and len(raw) > 1 else ""
        return f"{m.group('head')}{quote}REDACTED{quote}"

    text = _SECRET_ASSIGNMENT.sub(value, text)

    def url(m: "re.Match[str]") -> str:
        nonlocal count
        count += 1
        return f"{m.group('head')}REDACTED@"

    return _URL_PASSWORD.sub(url, text), count


# -- taking a snapshot ------------------------------------------------------------------------------------
@dataclass
class _Entry:
    kind: str  # file, dir, link
    path: str  # host path, absolute
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # links: relative target
    note: str = ""


@dataclass
class Snapshot:
    """What a capture found: entries to archive, device lines, and the skipped paths with reasons."""

    root: str
    live: bool
    entries: Dict[str, _Entry] = field(default_factory=dict)
    devices: Dict[str, str] = field(default_factory=dict)  # host path -> DEVICES line
    skipped: Dict[str, str] = field(default_factory=dict)
    total_bytes: int = 0

    @property
    def files(self) -> List[_Entry]:
        return [e for e in self.entries.values() if e.kind == "file"]

    def manifest(self, version: str, when: str) -> str:
        lines = [
            "# kvmcheck snapshot: exactly the files kvmcheck reads (see 'kvmcheck list'), and what was left out.",
            f"# kvmcheck {version}; taken {when}; root {self.root}; {'live host' if self.live else 'offline root'}",
            "# Open it with 'kvmcheck check --root THIS.tar.gz'. Device nodes are listed in DEVICES.",
            "# kind<TAB>path<TAB>size in bytes, link target or device<TAB>note",
        ]
        for path in sorted(set(self.entries) | set(self.devices) | set(self.skipped)):
            e = self.entries.get(path)
            if e is not None:
                detail = str(len(e.data)) if e.kind == "file" else (e.target if e.kind == "link" else "-")
                lines.append("\t".join([e.kind, path, detail] + ([e.note] if e.note else [])))
            if path in self.devices:
                lines.append(f"device\t{path}\t{' '.join(self.devices[path].split()[1:])}")
            if path in self.skipped:
                lines.append(f"skipped\t{path}\t-\t{self.skipped[path]}")
        return "\n".join(lines) + "\n"

    def devices_file(self) -> str:
        head = "# path type major minor mode uid gid  (kvmcheck snapshot: tar does not hold device nodes)\n"
        return head + "".join(self.devices[p] + "\n" for p in sorted(self.devices))


class _Budget(Exception):
    pass


class _Capture:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.snap = Snapshot(host.root, host.live)
        self.visited: Set[str] = set()

    # -- bookkeeping ----------------------------------------------------------------------------
    def skip(self, path: str, why: str) -> None:
        if path not in self.snap.entries:
            self.snap.skipped.setdefault(path, why)

    def _room(self, path: str, size: int = 0) -> bool:
        if len(self.snap.entries) + len(self.snap.devices) >= MAX_ENTRIES:
            self.skip(path, f"over the snapshot's limit of {MAX_ENTRIES} entries")
            return False
        if self.snap.total_bytes + size > MAX_TOTAL_BYTES:
            self.skip(path, f"over the snapshot's limit of {MAX_TOTAL_BYTES >> 20} MiB")
            return False
        return True

    def _lexists(self, path: str) -> bool:
        try:
            os.lstat(self.host.resolve(path))
            return True
        except OSError:
            return False

    def _real(self, path: str) -> str:
        return os.path.join(self.host.root, path.lstrip("/"))

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        if path != "/" and path not in self.snap.entries and self._room(path):
            self.snap.entries[path] = _Entry("dir", path, mode=mode)

    # -- links --------------------------------------------------------------------------------------
    def link(self, path: str, target: str) -> Optional[str]:
        """Record the symlink at path (a canonical host path); the absolute host path it names, or None."""
        base = [] if target.startswith("/") else [c for c in posixpath.dirname(path).split("/") if c]
        parts = list(base)
        for comp in (c for c in target.split("/") if c):
            if comp == ".":
                continue
            if comp == "..":
                if not parts:
                    if not self.host.live:
                        self.skip(path, f"symlink to {target}: the target leaves the root")
                        return None
                    continue  # "/.." is "/" on the live host
                parts.pop()
                continue
            parts.append(comp)
        absolute = "/" + "/".join(parts)
        why = denied(absolute)
        if why:
            self.skip(path, f"symlink to {target}: {why}")
            return None
        if path not in self.snap.entries:
            if not self._room(path):
                return None
            rel = posixpath.relpath(absolute, posixpath.dirname(path))
            self.snap.entries[path] = _Entry("link", path, target=rel,
                                             note="" if rel == target else f"was {target}")
        return absolute

    def walk(self, path: str) -> Optional[str]:
        """Resolve path with Host.resolve, refusing denied components and recording each symlink passed;
        the canonical host path, or None (missing, refused, or a non-directory in the middle)."""
        def visit(here: str, target: Optional[str]) -> bool:
            why = denied(here)
            if why:
                self.skip(here, why)
                return False
            return target is None or self.link(here, target) is not None

        try:
            real = self.host.resolve(path, visit=visit)
        except PermissionError:
            return None  # refused: visit recorded why
        except OSError as exc:
            self.skip(path, exc.strerror or str(exc))
            return None
        rel = os.path.relpath(real, self.host.root)
        if rel == ".." or rel.startswith("../"):
            return None  # cannot happen: Host.resolve stays inside the root
        canonical = "/" if rel == "." else "/" + rel
        node = self.host.node(canonical)
        if node is None:
            return None
        why = denied(canonical)
        if why:
            self.skip(canonical, why)
            return None
        return canonical

    # -- files, devices, trees ------------------------------------------------------------------
    def read(self, path: str, limit: int) -> bytes:
        """The bytes of the regular file at canonical path, like Host.read_text: never follows a link, never blocks."""
        return self.host.read_bytes(path, limit)

    def add_file(self, path: str, st: os.stat_result, in_tree: bool) -> None:
        if path in self.snap.entries:
            return
        limit = MAX_TREE_FILE_BYTES if in_tree and not path.startswith(FULL_SIZE_DIRS) else MAX_FILE_BYTES
        is_log = path in LOG_FILES
        if is_log:
            limit = LOG_HEAD_BYTES
        elif st.st_size > limit:
            self.skip(path, f"{st.st_size} bytes: larger than the {limit >> 20} MiB limit for "
                            f"{'a file in a declared directory' if limit == MAX_TREE_FILE_BYTES else 'one file'}")
            return
        try:
            data = self.read(path, limit + 1)
        except OSError as exc:
            self.skip(path, f"unreadable: {exc.strerror or exc}")
            return
        note = ""
        if len(data) > limit:
            if not is_log:
                self.skip(path, f"larger than the {limit >> 20} MiB limit (it grew while read)")
                return
            data, note = data[:limit], f"first {limit >> 20} MiB only (all kvmcheck reads)"
        if _PRIVATE_KEY.search(data):
            self.skip(path, "denied: holds a private key")
            return
        if path.startswith("/etc/") and b"\0" not in data:
            text, count = redact(path, data.decode("utf-8", errors="surrogateescape"))
            if count:
                data = text.encode("utf-8", errors="surrogateescape")
                note = f"{count} secret value(s) replaced by REDACTED"
        if not self._room(path, len(data)):
            return
        self.snap.total_bytes += len(data)
        self.snap.entries[path] = _Entry("file", path, data, mode=stat.S_IMODE(st.st_mode) | 0o400, note=note)

    def add_device(self, path: str, st: os.stat_result) -> None:
        if len(self.snap.devices) >= MAX_DEVICES or not self._room(path):
            self.skip(path, "too many device nodes")
            return
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
        self.snap.devices[path] = (f"{path.lstrip('/')} {kind} {os.major(st.st_rdev)} {os.minor(st.st_rdev)} "
                                   f"{stat.S_IMODE(st.st_mode):04o} {st.st_uid} {st.st_gid}")

    def add(self, path: str, st: os.stat_result, in_tree: bool) -> bool:
        """Capture a non-directory at canonical path; False for a directory (the caller decides)."""
        mode = st.st_mode
        if stat.S_ISREG(mode):
            self.add_file(path, st, in_tree)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            self.add_device(path, st)
        elif stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            self.skip(path, f"{'FIFO' if stat.S_ISFIFO(mode) else 'socket'}: never captured")
        elif stat.S_ISDIR(mode):
            return False
        else:
            self.skip(path, "not a file, directory, link or device")
        return True

    def tree(self, path: str, depth: int, follow_top_links: bool = True) -> None:
        """The directory at canonical path, its entries down to depth levels (links are kept, not followed,
        except a link directly in a declared directory: /sys/class/*/NAME points to the device's directory)."""
        if path in self.visited:
            return
        self.visited.add(path)
        try:
            st = os.lstat(self._real(path))
            self.add_dir(path, stat.S_IMODE(st.st_mode))
            names = sorted(os.listdir(self._real(path)))
        except OSError as exc:
            self.skip(path, f"cannot list it: {exc.strerror}")
            return
        if depth <= 0:
            if names:
                self.skip(path, f"{len(names)} entries deeper than {MAX_TREE_DEPTH} levels below a declared directory")
            return
        for name in names:
            child = posixpath.join(path, name)
            why = denied(child)
            if why:
                self.skip(child, why)
                continue
            try:
                cst = os.lstat(self._real(child))
            except OSError as exc:
                self.skip(child, f"cannot look at it: {exc.strerror}")
                continue
            if stat.S_ISLNK(cst.st_mode):
                if follow_top_links:
                    canonical = self.walk(child)
                    if canonical is None or canonical == path or canonical.startswith(path + "/"):
                        continue  # inside this tree: captured as the walk reaches it
                    try:
                        tst = os.lstat(self._real(canonical))
                    except OSError:
                        continue
                    if not self.add(canonical, tst, in_tree=True):
                        self.tree(canonical, depth - 1, follow_top_links=False)
                    continue
                try:
                    self.link(child, os.readlink(self._real(child)))
                except OSError as exc:
                    self.skip(child, f"cannot read the link: {exc.strerror}")
                continue
            if not self.add(child, cst, in_tree=True):
                self.tree(child, depth - 1, follow_top_links=False)

    def expand(self, pattern: str) -> List[str]:
        """Host.glob(pattern), keeping the directories it lists on the way (captured empty): a check that
        globs /etc/modprobe.d/*.conf or /sys/class/net/*/bridge learns that the directories exist too."""
        found = ["/"]
        comps = [c for c in pattern.split("/") if c]
        for i, comp in enumerate(comps):
            if i:
                for base in found:
                    canonical = None if denied(base) else self.walk(base)
                    if canonical is not None and self.host.is_dir(canonical) and not denied(canonical):
                        self.add_dir(canonical)
            nxt = []
            for base in found:
                if any(ch in comp for ch in "*?["):
                    nxt.extend(posixpath.join(base, n) for n in self.host.listdir(base) if fnmatch.fnmatchcase(n, comp))
                else:
                    cand = posixpath.join(base, comp)
                    if self.host.stat(cand) is not None or self._lexists(cand):
                        nxt.append(cand)
            found = nxt
        return sorted(found)

    def pattern(self, pattern: str, trees: List[Tuple[str, int]]) -> None:
        last = pattern.rstrip("/").rsplit("/", 1)[-1]
        wildcard = any(ch in last for ch in "*?[")
        try:
            matches = self.expand(pattern)
        except OSError as exc:
            self.skip(pattern, f"cannot expand: {exc.strerror or exc}")
            return
        for path in matches:
            why = denied(path)
            if why:
                self.skip(path, why)
                continue
            canonical = self.walk(path)
            if canonical is None:
                continue
            why = denied(canonical)
            if why:
                self.skip(canonical, why)
                continue
            try:
                st = os.lstat(self._real(canonical))
            except OSError as exc:
                self.skip(canonical, f"cannot look at it: {exc.strerror}")
                continue
            if not self.add(canonical, st, in_tree=False):
                if canonical in EXISTENCE_ONLY or path in EXISTENCE_ONLY:
                    self.add_dir(canonical, stat.S_IMODE(st.st_mode))
                else:
                    trees.append((canonical, MAX_WILDCARD_TREE_DEPTH if wildcard else MAX_TREE_DEPTH))


def capture(root: str = "/", reads: Optional[Sequence[str]] = None) -> Snapshot:
    """Capture the declared reads of root (a directory) into a Snapshot, in memory."""
    host = Host(root)
    cap = _Capture(host)
    patterns = list(reads) if reads is not None else declared_reads()
    if host.live and any(p in LOG_FILES for p in patterns):
        try:
            log = host.kernel_log().encode("utf-8", errors="replace")
        except OSError as exc:
            note = f"the kernel ring buffer is not readable ({exc.strerror or exc}): log files captured instead"
            cap.skip("/dev/kmsg", note)
        else:
            # A live run reads /dev/kmsg only, an offline one every log file: keep the ring buffer alone.
            patterns = [p for p in patterns if p not in LOG_FILES]
            for path in LOG_FILES[1:]:
                if host._lexists(path):
                    cap.skip(path, "left out: the live kernel log (/dev/kmsg) is captured as /var/log/dmesg")
            for d in ("/var", "/var/log"):
                cap.add_dir(d)
            cap.snap.entries["/var/log/dmesg"] = _Entry(
                "file", "/var/log/dmesg", log[:LOG_HEAD_BYTES], 0o644,
                note="the live kernel ring buffer (/dev/kmsg records): host names and addresses, no secrets")
            cap.snap.total_bytes += len(log[:LOG_HEAD_BYTES])
    trees: List[Tuple[str, int]] = []
    for pattern in patterns:
        cap.pattern(pattern, trees)
    for path, depth in trees:  # files named by the checks first, then the directories' contents
        cap.tree(path, depth)
    for path in list(cap.snap.entries) + list(cap.snap.devices):  # parents, so modes are not guessed
        parent = posixpath.dirname(path)
        while parent != "/" and parent not in cap.snap.entries:
            try:
                cap.add_dir(parent, stat.S_IMODE(os.lstat(cap._real(parent)).st_mode))
            except OSError:
                cap.add_dir(parent)
            parent = posixpath.dirname(parent)
    return cap.snap


def write_archive(snap: Snapshot, output: str) -> None:
    """Write the snapshot as a tar (gzip unless output ends in .tar), atomically, mode 0600."""
    from . import __version__

    now = time.time()
    when = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(microsecond=0).isoformat()
    folder = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix=".kvmcheck-snapshot-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as raw:
            mode = "w:" if output.endswith(".tar") else "w:gz"
            with tarfile.open(fileobj=raw, mode=mode, format=tarfile.PAX_FORMAT) as tar:
                def member(name: str, kind: bytes, mode: int, size: int = 0, target: str = "") -> tarfile.TarInfo:
                    info = tarfile.TarInfo(name)
                    info.type, info.mode, info.size, info.mtime = kind, mode & 0o777, size, int(now)
                    info.uid = info.gid = 0
                    info.uname = info.gname = "root"
                    info.linkname = target
                    return info

                extras = [(MANIFEST, snap.manifest(__version__, when).encode("utf-8"))]
                if snap.devices:
                    extras.append((DEVICES, snap.devices_file().encode("utf-8")))
                for name, data in extras:
                    tar.addfile(member(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
                for path in sorted(snap.entries):
                    e = snap.entries[path]
                    name = path.lstrip("/")
                    if e.kind == "dir":
                        tar.addfile(member(name, tarfile.DIRTYPE, e.mode | 0o700))
                    elif e.kind == "link":
                        tar.addfile(member(name, tarfile.SYMTYPE, 0o777, target=e.target))
                    else:
                        tar.addfile(member(name, tarfile.REGTYPE, e.mode, len(e.data)), io.BytesIO(e.data))
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o600)  # host names, addresses, configuration: for its owner
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def snapshot_command(root: str, output: str) -> int:
    """``kvmcheck snapshot``: 0 when written, 2 on a usage or write error."""
    if not output.endswith(ARCHIVE_SUFFIXES):
        sys.stderr.write(f"kvmcheck: {output}: the archive name must end in .tar.gz, .tgz or .tar "
                         "('kvmcheck check --root' recognises a snapshot by its name)\n")
        return 2
    if not os.path.isdir(root):
        sys.stderr.write(f"kvmcheck: {root!r} is not a directory\n")
        return 2
    try:
        snap = capture(root)
        write_archive(snap, output)
    except OSError as exc:
        sys.stderr.write(f"kvmcheck: cannot write {output}: {exc.strerror or exc}\n")
        return 2
    links = sum(1 for e in snap.entries.values() if e.kind == "link")
    sys.stdout.write(f"kvmcheck: snapshot of {snap.root} written to {output}: {len(snap.files)} files "
                     f"({snap.total_bytes} bytes), {links} links, {len(snap.devices)} device nodes; "
                     f"{len(snap.skipped)} paths left out (see MANIFEST in the archive)\n")
    return 0


# -- reading a snapshot back --------------------------------------------------------------------------
def _member_path(name: str) -> List[str]:
    if not name or "\0" in name or "\\" in name:
        raise ArchiveError(f"member {name!r}: not a plain relative path")
    if name.startswith("/"):
        raise ArchiveError(f"member {name!r}: absolute path")
    comps = [c for c in name.split("/") if c and c != "."]
    if not comps:
        raise ArchiveError(f"member {name!r}: names no path")
    if ".." in comps:
        raise ArchiveError(f"member {name!r}: '..' would leave the archive")
    return comps


def _check_link(comps: List[str], target: str) -> None:
    """A snapshot link is relative: some '..' (no more than the link's depth), then plain names."""
    if target == ".":
        return
    parts = target.split("/")
    if not target or target.startswith("/") or "" in parts:
        raise ArchiveError(f"symlink {'/'.join(comps)} -> {target!r}: points out of the archive")
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ups > len(comps) - 1 or any(p in (".", "..") for p in parts[ups:]):
        raise ArchiveError(f"symlink {'/'.join(comps)} -> {target!r}: points out of the archive")


def _make_dirs(top: str, comps: Sequence[str]) -> str:
    """Create top/comps... as real directories; refuse to pass through anything else."""
    here = top
    for comp in comps:
        here = os.path.join(here, comp)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            os.mkdir(here, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ArchiveError(f"{here[len(top) + 1:]}: a directory is needed where the archive has a file")
    return here


def _parse_devices(text: str) -> List[Tuple[List[str], str, int, int, int, int, int]]:
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        try:
            path, kind, major, minor, mode, uid, gid = fields
            row = (_member_path(path), kind, int(major), int(minor), int(mode, 8), int(uid), int(gid))
        except ValueError as exc:
            raise ArchiveError(f"DEVICES: malformed line {line[:80]!r} ({exc})") from None
        if kind not in ("c", "b") or not (0 <= row[2] < 1 << 12 and 0 <= row[3] < 1 << 20) or not 0 <= row[4] <= 0o7777:
            raise ArchiveError(f"DEVICES: malformed line {line[:80]!r}")
        rows.append(row)
        if len(rows) > MAX_DEVICES:
            raise ArchiveError(f"DEVICES: more than {MAX_DEVICES} device nodes")
    return rows


def unpack(archive: str, dest: str) -> List[str]:
    """Unpack a snapshot into the empty directory dest, validating every member; notes for the user."""
    try:
        compressed = os.path.getsize(archive)
        tar = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ArchiveError(f"{archive}: not a readable tar archive ({why})") from None
    total = members = 0
    seen: Set[Tuple[str, ...]] = set()
    dirs: Set[Tuple[str, ...]] = set()
    links: Dict[Tuple[str, ...], str] = {}
    devices_text = None
    try:
        with tar:
            for info in tar:
                members += 1
                if members > MAX_ENTRIES + 2:
                    raise ArchiveError(f"more than {MAX_ENTRIES} members")
                comps = _member_path(info.name)
                key = tuple(comps)
                if key in seen:
                    raise ArchiveError(f"member {info.name!r} appears twice")
                seen.add(key)
                if info.islnk():
                    raise ArchiveError(f"member {info.name!r}: hard links are refused")
                if info.ischr() or info.isblk() or info.isfifo():
                    raise ArchiveError(f"member {info.name!r}: device and FIFO members are refused "
                                       "(a snapshot lists device nodes in DEVICES)")
                if info.issym():
                    _check_link(comps, info.linkname)
                    links[key] = info.linkname
                    continue
                if info.isdir():
                    dirs.add(key)
                    _make_dirs(dest, comps)
                    continue
                if not info.isreg() or info.issparse():
                    raise ArchiveError(f"member {info.name!r}: not a file, directory or symlink")
                limit = MAX_MANIFEST_BYTES if key in ((MANIFEST,), (DEVICES,)) else MAX_FILE_BYTES
                if info.size > limit:
                    raise ArchiveError(f"member {info.name!r}: {info.size} bytes, larger than the "
                                       f"{limit >> 20} MiB limit for one file")
                total += info.size
                if total > MAX_TOTAL_BYTES + 2 * MAX_MANIFEST_BYTES:
                    raise ArchiveError(f"the files add up to more than {MAX_TOTAL_BYTES >> 20} MiB")
                if total > 16 << 20 and total > MAX_RATIO * max(compressed, 1):
                    raise ArchiveError(f"compression ratio above {MAX_RATIO}: refused as a decompression bomb")
                parent = _make_dirs(dest, comps[:-1])
                source = tar.extractfile(info)
                if source is None:
                    raise ArchiveError(f"member {info.name!r}: no data")
                fd = os.open(os.path.join(parent, comps[-1]),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
                written = 0
                with os.fdopen(fd, "wb") as out:
                    while True:
                        chunk = source.read(1 << 16)
                        if not chunk:
                            break
                        written += len(chunk)
                        if written > info.size:
                            raise ArchiveError(f"member {info.name!r}: more data than its header says")
                        out.write(chunk)
                if written != info.size:
                    raise ArchiveError(f"member {info.name!r}: truncated")
                os.chmod(os.path.join(parent, comps[-1]), (info.mode & 0o777) | 0o600)
                if key == (DEVICES,):
                    with open(os.path.join(dest, DEVICES), encoding="utf-8", errors="replace") as fh:
                        devices_text = fh.read()
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ArchiveError(f"{archive}: corrupt or unreadable ({exc})") from None
    for key in list(seen):  # nothing may sit below a symlink: it would be written through it
        for i in range(1, len(key)):
            if key[:i] in links:
                raise ArchiveError(f"member {'/'.join(key)!r} lies below the symlink {'/'.join(key[:i])!r}")
    notes: List[str] = []
    if devices_text is not None:
        rows = _parse_devices(devices_text)
        missing = []
        for comps, kind, major, minor, mode, uid, gid in rows:
            key = tuple(comps)
            if key in seen or any(key[:i] in links for i in range(1, len(key) + 1)):
                raise ArchiveError(f"DEVICES: {'/'.join(comps)} is also an archive member")
            parent = _make_dirs(dest, comps[:-1])
            node = os.path.join(parent, comps[-1])
            flag = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
            try:
                os.mknod(node, flag | 0o600, os.makedev(major, minor))
                os.chown(node, uid, gid, follow_symlinks=False)
                os.chmod(node, mode & 0o777)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EACCES):
                    raise ArchiveError(f"DEVICES: cannot create {'/'.join(comps)}: {exc.strerror}") from None
                with contextlib.suppress(OSError):
                    os.unlink(node)
                missing.append("/" + "/".join(comps))
        if missing:
            notes.append(f"device nodes not created (that needs root, CAP_MKNOD): {', '.join(missing)}; "
                         "checks of them report them missing")
    for key in sorted(links, key=len):
        parent = _make_dirs(dest, key[:-1])
        try:
            os.symlink(links[key], os.path.join(parent, key[-1]))
        except FileExistsError:
            raise ArchiveError(f"member {'/'.join(key)!r} appears twice") from None
    return notes


@contextlib.contextmanager
def open_archive(path: str) -> Iterator[str]:
    """Unpack a snapshot into a private temporary directory (0700); yield it; remove it afterwards.

    Raises ArchiveError for an unsafe, oversized or corrupt archive (nothing is written outside the
    temporary directory, and it is removed then too).
    """
    top = tempfile.mkdtemp(prefix="kvmcheck-snapshot-")
    try:
        os.chmod(top, 0o700)
        root = os.path.join(top, "root")
        os.mkdir(root, 0o755)
        for note in unpack(path, root):
            sys.stderr.write(f"kvmcheck: {path}: {note}\n")
        yield root
    finally:
        shutil.rmtree(top, ignore_errors=True)
