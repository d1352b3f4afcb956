# SPDX-License-Identifier: GPL-2.0-or-later
"""Snapshots: the files kvmcheck reads, in one archive, to audit a host offline later.

``kvmcheck snapshot --output FILE.tar.gz`` captures an allowlist: the paths and
patterns each check declares in ``reads=(...)``, plus the few files the report's
host and migration blocks read (``reads_of(["host_block", "migration_profile"])``).
Nothing else, and never secrets:
:func:`denied` refuses password hashes, keys, ssh and private-key directories
and a few identifiers even when a declared pattern or a symlink leads there.
The archive holds a ``MANIFEST`` (every captured path, its size, and what was
skipped and why) and, when the root has device nodes kvmcheck reads, a
``DEVICES`` file in the tests/hosts format (``dev/kvm c 10 232 0660 0 36``):
device nodes are never tar members.

Layout: the archive's members are the root's paths without the leading slash,
so an unpacked snapshot is a ``--root`` directory and, as it is, a
tests/hosts/<name> fixture.

``kvmcheck check --root FILE`` unpacks with :func:`open_archive`, which
validates every member itself (no ``tarfile.extract``, whose ``filter=`` only
exists in recent Pythons) into a private directory (mode 0700) removed
afterwards without recursion (:func:`remove_tree`).  FILE is a snapshot or a
tree packed by hand (``tar czf root.tgz -C DIR .``: a ``./`` top, absolute
symlinks, hard links), plain, gzip, bzip2 or xz, recognised by its content.
Symlinks in a snapshot are always relative and stay inside it; a packed tree's
absolute ones are rewritten so.  Long-name and pax headers are limited before
tarfile reads them (:class:`_GuardedTarInfo`), member paths to
:data:`MAX_DEPTH` components.

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
import stat
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from kvmcheck.core.host import DEFAULT_READ_LIMIT, Host
from kvmcheck.core.model import ExitStatus
from kvmcheck.facts.system import OFFLINE_LOGS  # the log files the kernel_log fact reads offline

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
MAX_DEPTH = 64  # path components of one member: a captured root needs about 12 (/sys/devices/...)
# tarfile reads a GNU long name/link or a pax header whole, into memory, before any member is seen:
# these are checked in the member's header, before tarfile reads what it announces.
MAX_EXTENSION_BYTES = 64 << 10  # one such header (a path is at most 4 KiB, PATH_MAX)
MAX_EXTENSION_TOTAL = 8 << 20  # all of them together
MAX_EXTENSION_CHAIN = 8  # in a row before one member (tarfile reads a chain by recursion)
FULL_SIZE_DIRS = ("/var/lib/rpm", "/usr/lib/sysimage/rpm")  # rpm reads its database whole

MANIFEST = "MANIFEST"
DEVICES = "DEVICES"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")  # what 'kvmcheck snapshot' writes

# Directories whose existence or listing is the fact: captured empty, never whole (a check asks whether the root
# has /etc or lists /boot for config-*, whose own patterns capture what is read; /proc/xen/privcmd and xenbus
# can block).
EXISTENCE_ONLY = (
    "/proc/xen", "/boot", "/etc", "/etc/systemd/system", "/etc/apt", "/etc/dnf", "/etc/zypp", "/var/lib",
    "/sys/block", "/sys/kernel/mm", "/sys/kernel/mm/hugepages", "/sys/kernel/mm/transparent_hugepage",
    "/sys/fs/cgroup/devices",
)
LIVE_LOG = "/dev/kmsg"  # a declared read of the live kernel log: captured as its text in /var/log/dmesg, never as a node

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
    # Other processes' status (names, users, groups) is compared only on the running host (a pending
    # relogin): a capture would hold every process of the machine and prove nothing offline.
    ("/proc/[0-9]*/status", "other processes"), ("/proc/[0-9]*/stat", "other processes"),
    ("/proc/[*]/status", "other processes"), ("/proc/[*]/stat", "other processes"),
)
_DENY_COMPONENTS = (".ssh", ".gnupg", "ssh", "secrets", "swtpm")
_DENY_NAMES = ("*.key", "*.pem", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.keytab", "*.aes", "*.gpg",
               "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "ssh_host_*", "authorized_keys*",
               "*master-key*", "*secret*", "*private*")
_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----|PuTTY-User-Key-File")
_SECRET_ASSIGNMENT = re.compile(
    r"^(?P<head>\s*[A-Za-z0-9_.-]*(?:password|passwd|passphrase|secret|token)[A-Za-z0-9_.-]*\s*=\s*)"
    r"(?P<value>\S.*?)\s*$", re.IGNORECASE | re.MULTILINE)
# GRUB's own password commands (grub.cfg from 40_custom or 01_users): 'password_pbkdf2 USER HASH', 'password USER
# PLAINTEXT'.  The boot loader's configuration is captured for the next boot's command line (issue 20).
_GRUB_PASSWORD = re.compile(r"^(?P<head>[ \t]*password(?:_pbkdf2)?[ \t]+\S+[ \t]+)(?P<value>\S.*?)[ \t]*$",
                            re.MULTILINE)
_BOOT_REDACTED = ("/boot/",)  # besides /etc: GRUB's configuration on /boot and the EFI partition
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


def declared_reads() -> List[str]:
    """Exactly the union of what every registered check reads (Check.reads: its facts' reads, or what a
    check not yet written as a judge declares) and what the report's host and migration blocks read.

    Placeholders such as ``<release>`` become ``*``: the snapshot keeps every installed kernel's copy.
    """
    from kvmcheck.core.registry import load_checks
    from kvmcheck.facts import reads_of
    import kvmcheck.facts.migration  # noqa: F401 - registers migration_profile, the report's migration block

    checks, _ = load_checks()
    found: Dict[str, None] = {}
    for item in [r for c in checks for r in c.reads] + list(reads_of(["host_block", "migration_profile"])):
        if not item.startswith("/"):
            continue  # not a path (a command, a note): nothing to capture
        found[re.sub(r"<[^/>]*>", "*", item)] = None
    return sorted(found)


def redact(path: str, text: str) -> Tuple[str, int]:
    """(text with secrets in configuration replaced by REDACTED, how many replaced)."""
    boot = path.startswith(_BOOT_REDACTED)
    if not (path.startswith("/etc/") or boot) or path in _NO_REDACTION:
        return text, 0
    count = 0

    def value(m: "re.Match[str]") -> str:
        nonlocal count
        count += 1
        raw = m.group("value")
        quote = raw[0] if raw[0] in "\"'" and raw.endswith(raw[0]) and len(raw) > 1 else ""
        return f"{m.group('head')}{quote}REDACTED{quote}"

    text = _SECRET_ASSIGNMENT.sub(value, text)
    if boot:
        text = _GRUB_PASSWORD.sub(value, text)

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
            return self.host.lstat(path) is not None
        except OSError:
            return False

    def _lstat(self, path: str) -> os.stat_result:
        """lstat through the Host: looked up inside the root, and abandoned on a hung mount."""
        st = self.host.lstat(path)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return st

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
        is_log = path in OFFLINE_LOGS
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
        if path.startswith(("/etc/",) + _BOOT_REDACTED) and b"\0" not in data:
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

    def _entry(self, child: str) -> Optional[os.stat_result]:
        """lstat of a directory entry about to be captured; None (and the reason kept) when it is denied or gone."""
        why = denied(child)
        if why:
            self.skip(child, why)
            return None
        try:
            return self._lstat(child)
        except OSError as exc:
            self.skip(child, f"cannot look at it: {exc.strerror}")
            return None

    def tree(self, path: str, depth: int, follow_top_links: bool = True) -> None:
        """The directory at canonical path, its entries down to depth levels (links are kept, not followed,
        except a link directly in a declared directory: /sys/class/*/NAME points to the device's directory)."""
        if path in self.visited:
            return
        self.visited.add(path)
        try:
            st = self._lstat(path)
            self.add_dir(path, stat.S_IMODE(st.st_mode))
            names = self.host.listdir(path)
        except OSError as exc:
            self.skip(path, f"cannot list it: {exc.strerror}")
            return
        if depth <= 0:
            if names:
                self.skip(path, f"{len(names)} entries deeper than {MAX_TREE_DEPTH} levels below a declared directory")
            return
        for name in names:
            child = posixpath.join(path, name)
            cst = self._entry(child)
            if cst is None:
                continue
            if stat.S_ISLNK(cst.st_mode):
                if follow_top_links:
                    canonical = self.walk(child)
                    if canonical is None or canonical == path or canonical.startswith(path + "/"):
                        continue  # inside this tree: captured as the walk reaches it
                    try:
                        tst = self._lstat(canonical)
                    except OSError:
                        continue
                    if not self.add(canonical, tst, in_tree=True):
                        self.tree(canonical, depth - 1, follow_top_links=False)
                    continue
                try:
                    self.link(child, self.host.readlink(child))
                except OSError as exc:
                    self.skip(child, f"cannot read the link: {exc.strerror}")
                continue
            if not self.add(child, cst, in_tree=True):
                self.tree(child, depth - 1, follow_top_links=False)

    def expand(self, pattern: str) -> List[str]:
        """Host.glob(pattern), keeping the directories it lists on the way (captured empty): a check that
        globs /etc/modprobe.d/*.conf or /sys/class/net/*/bridge learns that the directories exist too."""
        comps = [c for c in pattern.split("/") if c]
        for i in range(1, len(comps)):
            for base in self.host.glob("/" + "/".join(comps[:i])):
                canonical = None if denied(base) else self.walk(base)
                if canonical is not None and self.host.is_dir(canonical) and not denied(canonical):
                    self.add_dir(canonical)
        return self.host.glob(pattern)

    def listing(self, path: str) -> None:
        """A declared directory that is not DIR/**: what listing it shows, and no more.  Subdirectories are
        captured empty, links as links (a directory they lead to, empty), device nodes in DEVICES, and a
        file nothing declared as an empty placeholder: a check that reads a file declares it (the
        conformance test holds every check to that), so its content comes from its own pattern."""
        if path in self.visited:
            return
        self.visited.add(path)
        try:
            self.add_dir(path, stat.S_IMODE(self._lstat(path).st_mode))
            names = self.host.listdir(path)
        except OSError as exc:
            self.skip(path, f"cannot list it: {exc.strerror}")
            return
        for name in names:
            child = posixpath.join(path, name)
            if child in self.snap.entries or child in self.snap.devices:
                continue
            cst = self._entry(child)
            if cst is None:
                continue
            if stat.S_ISLNK(cst.st_mode):
                canonical = self.walk(child)
                if canonical is not None and canonical not in self.snap.entries and not denied(canonical) \
                        and self.host.is_dir(canonical):
                    self.add_dir(canonical)
            elif stat.S_ISDIR(cst.st_mode):
                self.add_dir(child, stat.S_IMODE(cst.st_mode))
            elif stat.S_ISREG(cst.st_mode):
                if self._room(child):
                    self.snap.entries[child] = _Entry("file", child, b"", stat.S_IMODE(cst.st_mode) | 0o400,
                                                      note="listed, not read: content left out")
            else:
                self.add(child, cst, in_tree=True)

    def pattern(self, pattern: str, trees: List[Tuple[str, int]], listings: List[str]) -> None:
        whole = pattern.endswith("/**")
        if whole:  # everything under a directory: the directory's tree
            pattern = pattern[:-3] or "/"
        last = pattern.rstrip("/").rsplit("/", 1)[-1]
        wildcard = any(ch in last for ch in "*?[")
        why = denied(pattern)
        if why:  # a whole pattern the deny list names (/proc/*/status): not even its directories are walked
            self.skip(pattern, why)
            return
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
                st = self._lstat(canonical)
            except OSError as exc:
                self.skip(canonical, f"cannot look at it: {exc.strerror}")
                continue
            if not self.add(canonical, st, in_tree=False):
                if canonical in EXISTENCE_ONLY or path in EXISTENCE_ONLY:
                    self.add_dir(canonical, stat.S_IMODE(st.st_mode))
                elif whole:
                    trees.append((canonical, MAX_WILDCARD_TREE_DEPTH if wildcard else MAX_TREE_DEPTH))
                else:
                    listings.append(canonical)


def capture(root: str = "/", reads: Optional[Sequence[str]] = None) -> Snapshot:
    """Capture the declared reads of root (a directory) into a Snapshot, in memory."""
    host = Host(root)
    cap = _Capture(host)
    patterns = list(reads) if reads is not None else declared_reads()
    live_log = LIVE_LOG in patterns
    patterns = [p for p in patterns if p != LIVE_LOG]
    if host.live and live_log:
        try:
            log = host.kernel_log().encode("utf-8", errors="replace")
        except OSError as exc:
            note = f"the kernel ring buffer is not readable ({exc.strerror or exc}): log files captured instead"
            cap.skip("/dev/kmsg", note)
        else:
            # A live run reads /dev/kmsg only, an offline one every log file: keep the ring buffer alone.
            patterns = [p for p in patterns if p not in OFFLINE_LOGS]
            for path in OFFLINE_LOGS[1:]:
                if host._lexists(path):
                    cap.skip(path, "left out: the live kernel log (/dev/kmsg) is captured as /var/log/dmesg")
            for d in ("/var", "/var/log"):
                cap.add_dir(d)
            cap.snap.entries["/var/log/dmesg"] = _Entry(
                "file", "/var/log/dmesg", log[:LOG_HEAD_BYTES], 0o644,
                note="the live kernel ring buffer (/dev/kmsg records): host names and addresses, no secrets")
            cap.snap.total_bytes += len(log[:LOG_HEAD_BYTES])
    trees: List[Tuple[str, int]] = []
    listings: List[str] = []
    for pattern in patterns:
        cap.pattern(pattern, trees, listings)
    for path, depth in trees:  # files named by the checks first, then the directories' contents
        cap.tree(path, depth)
    for path in listings:  # last: what the patterns and trees captured is kept, the rest is a name
        cap.listing(path)
    for path in list(cap.snap.entries) + list(cap.snap.devices):  # parents, so modes are not guessed
        parent = posixpath.dirname(path)
        while parent != "/" and parent not in cap.snap.entries:
            try:
                cap.add_dir(parent, stat.S_IMODE(cap._lstat(parent).st_mode))
            except OSError:
                cap.add_dir(parent)
            parent = posixpath.dirname(parent)
    return cap.snap


def write_archive(snap: Snapshot, output: str) -> None:
    """Write the snapshot as a tar (gzip unless output ends in .tar), atomically, mode 0600."""
    from kvmcheck import __version__

    now = time.time()
    when = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(microsecond=0).isoformat()
    from kvmcheck.core.output import atomic_writer

    # atomic and link-safe (kvmcheck.core.output), 0600: host names, addresses, configuration are for its owner
    with atomic_writer(output, mode=0o600, keep_mode=False) as raw:
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


def snapshot_command(root: str, output: str) -> int:
    """``kvmcheck snapshot``: 0 when written, 2 on a usage or write error."""
    if not output.endswith(ARCHIVE_SUFFIXES):
        sys.stderr.write(f"kvmcheck: {output}: the archive name must end in .tar.gz, .tgz or .tar "
                         "(it chooses the compression; 'kvmcheck check --root' reads either)\n")
        return int(ExitStatus.USAGE)
    if not os.path.isdir(root):
        sys.stderr.write(f"kvmcheck: {root!r} is not a directory\n")
        return int(ExitStatus.USAGE)
    try:
        snap = capture(root)
        write_archive(snap, output)
    except OSError as exc:
        sys.stderr.write(f"kvmcheck: cannot write {output}: {exc.strerror or exc}\n")
        return int(ExitStatus.USAGE)
    links = sum(1 for e in snap.entries.values() if e.kind == "link")
    sys.stdout.write(f"kvmcheck: snapshot of {snap.root} written to {output}: {len(snap.files)} files "
                     f"({snap.total_bytes} bytes), {links} links, {len(snap.devices)} device nodes; "
                     f"{len(snap.skipped)} paths left out (see MANIFEST in the archive)\n")
    return int(ExitStatus.READY)


# -- reading a snapshot back --------------------------------------------------------------------------
# An archive given as --root is a kvmcheck snapshot or a tree packed by hand ('tar czf root.tgz -C DIR .'):
# it is recognised by its content, not its name.  Python's tarfile reads plain, gzip, bzip2 and xz tars
# with the standard library alone; zstd only from Python 3.14 on (compression.zstd).
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
_TAR_MODES = {"tar": "r:", "gzip": "r:gz", "bzip2": "r:bz2", "xz": "r:xz", "zstd": "r:zst"}
_COMPRESSION_MODULES = {"gzip": "zlib", "bzip2": "bz2", "xz": "lzma"}


def archive_kind(head: bytes) -> Optional[str]:
    """What the first 512 bytes of a file say it is: tar, gzip, bzip2, xz, zstd, or None (not an archive)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if len(head) < tarfile.BLOCKSIZE:
        return None
    if head[257:262] == b"ustar":  # POSIX ustar and GNU headers
        return "tar"
    try:  # a pre-POSIX (v7) header has no magic: its checksum must match
        stored = int(head[148:156].replace(b"\0", b" ").strip() or b"x", 8)
    except ValueError:
        return None
    return "tar" if stored in tarfile.calc_chksums(head[:tarfile.BLOCKSIZE]) else None


_EXTENSION_HEADERS = {tarfile.GNUTYPE_LONGNAME: "GNU long-name header",
                      tarfile.GNUTYPE_LONGLINK: "GNU long-link header", tarfile.XHDTYPE: "pax header",
                      tarfile.XGLTYPE: "pax global header", tarfile.SOLARIS_XHDTYPE: "Solaris extended header"}


class _GuardedTarInfo(tarfile.TarInfo):
    """tarfile's member header, with kvmcheck's limits applied before tarfile reads what a header announces.

    A subclass rather than a pre-pass of kvmcheck's own over the stream: one parser decides where each
    header starts (a pre-pass that reads pax 'size' records differently from tarfile's would fall out of
    step with it, and a hostile archive would pick the difference), and the archive is decompressed once.
    _proc_member is the hook tarfile itself names for subclasses (the comment above it in tarfile.py,
    the same in Python 3.9 to 3.14).
    """

    def _proc_member(self, tar):  # type: ignore[no-untyped-def]
        what = _EXTENSION_HEADERS.get(self.type)
        if what is None:
            tar.kvmcheck_chain = 0
            if self.type == tarfile.GNUTYPE_SPARSE:
                raise ArchiveError(f"a GNU sparse member at byte {self.offset}: sparse files are refused")
            return super()._proc_member(tar)
        if self.size > MAX_EXTENSION_BYTES:
            raise ArchiveError(f"a {what} of {self.size} bytes at byte {self.offset} (the limit is "
                               f"{MAX_EXTENSION_BYTES >> 10} KiB): refused before reading it, as a header bomb")
        tar.kvmcheck_chain = getattr(tar, "kvmcheck_chain", 0) + 1
        tar.kvmcheck_extension_bytes = getattr(tar, "kvmcheck_extension_bytes", 0) + self.size
        if tar.kvmcheck_chain > MAX_EXTENSION_CHAIN:
            raise ArchiveError(f"more than {MAX_EXTENSION_CHAIN} extension headers in a row at byte {self.offset}")
        if tar.kvmcheck_extension_bytes > MAX_EXTENSION_TOTAL:
            raise ArchiveError(f"the archive's long-name and pax headers add up to more than "
                               f"{MAX_EXTENSION_TOTAL >> 20} MiB")
        return super()._proc_member(tar)

    # pax sparse maps: 1.0 reads a count of numbers from the data blocks, unbounded; kvmcheck refuses sparse files.
    def _proc_gnusparse_00(self, *args):  # type: ignore[no-untyped-def]
        raise ArchiveError(f"a pax sparse member at byte {self.offset}: sparse files are refused")

    _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00


class _GuardedTarFile(tarfile.TarFile):
    tarinfo = _GuardedTarInfo


def _open_tar(archive: str, stack: contextlib.ExitStack) -> Tuple[tarfile.TarFile, int]:
    """The archive opened for reading by content (the tar, and its size on disk); ArchiveError otherwise."""
    try:  # O_NONBLOCK: a FIFO put in the file's place after the caller looked cannot block the open
        fd = os.open(archive, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ArchiveError(f"{archive}: cannot open it ({exc.strerror or exc})") from None
    raw = stack.enter_context(os.fdopen(fd, "rb"))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ArchiveError(f"{archive}: not a regular file")
    try:
        head = raw.read(tarfile.BLOCKSIZE)
        raw.seek(0)
    except OSError as exc:
        raise ArchiveError(f"{archive}: cannot read it ({exc.strerror or exc})") from None
    kind = archive_kind(head)
    if kind is None:
        raise ArchiveError(f"{archive}: not a directory or a tar archive (plain, gzip, bzip2 or xz)")
    if kind == "zstd" and "zst" not in tarfile.TarFile.OPEN_METH:
        raise ArchiveError(f"{archive}: zstd-compressed, which this Python's tarfile cannot read (3.14 can); "
                           f"decompress it first ('zstd -d {archive}') and give the .tar")
    module = _COMPRESSION_MODULES.get(kind)
    if module:
        try:
            __import__(module)
        except ImportError:
            raise ArchiveError(f"{archive}: {kind}-compressed, but this Python has no {module} module; "
                               "decompress it first and give the .tar") from None
    try:
        tar = _GuardedTarFile.open(fileobj=raw, mode=_TAR_MODES[kind])
    except ArchiveError:
        raise
    except _corrupt_errors() as exc:  # evaluated only when something is raised
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ArchiveError(f"{archive}: not a readable {kind} tar archive ({why})") from None
    stack.enter_context(tar)
    return tar, st.st_size


def _member_path(name: str, top_ok: bool = False) -> List[str]:
    """The components of a member's name; [] for the archive's top ('.', './'), allowed when top_ok."""
    if not name or "\0" in name or "\\" in name:
        raise ArchiveError(f"member {name[:200]!r}: not a plain relative path")
    if name.startswith("/"):
        raise ArchiveError(f"member {name[:200]!r}: absolute path")
    comps = [c for c in name.split("/") if c and c != "."]  # 'tar -C DIR .' names './etc/...'
    if not comps:
        if top_ok:
            return comps
        raise ArchiveError(f"member {name!r}: names no path")
    if ".." in comps:
        raise ArchiveError(f"member {name[:200]!r}: '..' would leave the archive")
    if len(comps) > MAX_DEPTH:
        raise ArchiveError(f"member {name[:200]!r}: {len(comps)} path components, deeper than the limit of "
                           f"{MAX_DEPTH}")
    return comps


def _link_target(comps: List[str], target: str) -> str:
    """The target to give the symlink at comps: relative and inside the archive.

    A kvmcheck snapshot's links already are.  A tree packed by hand has links as the system sees them
    from its own root: absolute ones ('/usr/lib/systemd/system/x.service') and '..' past the top mean
    what they mean under chroot, so they are rewritten relative to the link, resolved by name.
    """
    if not target or "\0" in target or len(target) > 4096:
        raise ArchiveError(f"symlink {'/'.join(comps)[:200]} -> {target[:200]!r}: not a usable target")
    parts = [] if target.startswith("/") else list(comps[:-1])
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts:
                parts.pop()
            continue
        parts.append(comp)
    if len(parts) > MAX_DEPTH:
        raise ArchiveError(f"symlink {'/'.join(comps)[:200]} -> {target[:200]!r}: more than {MAX_DEPTH} deep")
    rel = posixpath.relpath("/" + "/".join(parts), "/" + "/".join(comps[:-1]))
    return target if rel == target else rel


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


def device_paths() -> List[str]:
    """Where an unpacked snapshot may hold a device node: the /dev paths the checks declare in reads=
    (/dev/kvm, /dev/net/tun, /dev/vhost-net, /dev/sev, ...), the one list of what they stat as devices.
    A DEVICES line anywhere else (proc/cmdline as /dev/kmsg, etc/hostname) is never created."""
    return [p for p in declared_reads() if p.startswith("/dev/")]


def _corrupt_errors() -> Tuple[type, ...]:
    """What tarfile and the decompressors raise for a damaged archive (lzma is imported only for xz)."""
    found: List[type] = [tarfile.TarError, EOFError, OSError, ValueError]
    for module, name in (("zlib", "error"), ("lzma", "LZMAError")):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def _write_member(tar: tarfile.TarFile, info: tarfile.TarInfo, path: str) -> None:
    """The data of a regular member into a new file at path (never through a link, never over a file)."""
    source = tar.extractfile(info)
    if source is None:
        raise ArchiveError(f"member {info.name[:200]!r}: no data")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while True:
            chunk = source.read(1 << 16)
            if not chunk:
                break
            written += len(chunk)
            if written > info.size:
                raise ArchiveError(f"member {info.name[:200]!r}: more data than its header says")
            out.write(chunk)
    if written != info.size:
        raise ArchiveError(f"member {info.name[:200]!r}: truncated")
    os.chmod(path, (info.mode & 0o777) | 0o600)


def unpack(archive: str, dest: str) -> List[str]:
    """Unpack a snapshot, or a tree packed with 'tar -C DIR .', into the empty directory dest, validating
    every member; notes for the user."""
    total = members = 0
    seen: Set[Tuple[str, ...]] = set()
    files: Dict[Tuple[str, ...], Tuple[str, int]] = {}  # regular members written: where, how big
    links: Dict[Tuple[str, ...], str] = {}
    devices_text = None
    try:
        with contextlib.ExitStack() as stack:
            tar, compressed = _open_tar(archive, stack)
            for info in tar:
                members += 1
                if members > MAX_ENTRIES + 2:
                    raise ArchiveError(f"more than {MAX_ENTRIES} members")
                comps = _member_path(info.name, top_ok=info.isdir())
                if not comps:
                    continue  # the top directory ('tar -C DIR .' starts with './'): dest itself
                key = tuple(comps)
                if key in seen:
                    raise ArchiveError(f"member {info.name[:200]!r} appears twice")
                seen.add(key)
                if info.ischr() or info.isblk() or info.isfifo():
                    raise ArchiveError(f"member {info.name[:200]!r}: device and FIFO members are refused "
                                       "(a snapshot lists device nodes in DEVICES; pack a tree with "
                                       "--exclude=./dev)")
                if info.issym():
                    links[key] = _link_target(comps, info.linkname)
                    continue
                if info.isdir():
                    _make_dirs(dest, comps)
                    continue
                if info.islnk():  # tar stores a second name of a file as a hard link to the first
                    target = files.get(tuple(_member_path(info.linkname)))
                    if target is None:
                        raise ArchiveError(f"member {info.name[:200]!r}: hard link to {info.linkname[:200]!r}, "
                                           "which is no earlier file of the archive")
                    size = target[1]
                else:
                    if not info.isreg() or info.issparse():
                        raise ArchiveError(f"member {info.name[:200]!r}: not a file, directory or symlink")
                    size = info.size
                limit = MAX_MANIFEST_BYTES if key in ((MANIFEST,), (DEVICES,)) else MAX_FILE_BYTES
                if size > limit:
                    raise ArchiveError(f"member {info.name[:200]!r}: {size} bytes, larger than the "
                                       f"{limit >> 20} MiB limit for one file")
                total += size
                if total > MAX_TOTAL_BYTES + 2 * MAX_MANIFEST_BYTES:
                    raise ArchiveError(f"the files add up to more than {MAX_TOTAL_BYTES >> 20} MiB")
                if total > 16 << 20 and total > MAX_RATIO * max(compressed, 1):
                    raise ArchiveError(f"compression ratio above {MAX_RATIO}: refused as a decompression bomb")
                path = os.path.join(_make_dirs(dest, comps[:-1]), comps[-1])
                if info.islnk():
                    os.link(target[0], path, follow_symlinks=False)  # both in dest, which holds no symlink yet
                else:
                    _write_member(tar, info, path)
                files[key] = (path, size)
                if key == (DEVICES,):
                    with open(path, encoding="utf-8", errors="replace") as fh:
                        devices_text = fh.read()
    except ArchiveError:
        raise
    except _corrupt_errors() as exc:  # evaluated only when something is raised
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ArchiveError(f"{archive}: corrupt or unreadable ({why})") from None
    for key in list(seen):  # nothing may sit below a symlink: it would be written through it
        for i in range(1, len(key)):
            if key[:i] in links:
                raise ArchiveError(f"member {'/'.join(key)!r} lies below the symlink {'/'.join(key[:i])!r}")
    notes: List[str] = []
    if devices_text is not None:
        rows = _parse_devices(devices_text)
        missing, refused = [], []
        expected = device_paths() if rows else []
        for comps, kind, major, minor, mode, uid, gid in rows:
            key = tuple(comps)
            if not any(fnmatch.fnmatchcase("/" + "/".join(comps), p) for p in expected):
                refused.append(repr("/" + "/".join(comps))[1:-1])  # escaped: archive text is hostile on a terminal
                continue
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
        if refused:
            notes.append(f"DEVICES entries refused, not created: {', '.join(refused[:20])}"
                         f"{' and more' if len(refused) > 20 else ''} (a device node may only stand where a check "
                         "expects one, such as /dev/kvm: anywhere else kvmcheck expects a file)")
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


def remove_tree(path: str) -> None:
    """Remove the directory path and everything in it, without recursion and without following links.

    shutil.rmtree's fd-based walk (_rmtree_safe_fd) calls itself once per level in Python 3.9 to 3.12
    (read in 3.9.18, 3.11.7, 3.12.1; 3.13 walks with an explicit stack): a tree deeper than the recursion
    limit (1,000) raised RecursionError midway, which ignore_errors does not catch, and left the rest.
    This walks with one directory descriptor at a time, returning through '..', so neither depth nor
    PATH_MAX bound it.  Best effort, like rmtree(ignore_errors=True): what cannot be removed stays.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

    def empty(fd: int) -> List[str]:
        """Unlink every non-directory in the open directory fd; its subdirectories' names."""
        subdirs = []
        try:
            with os.scandir(fd) as entries:
                names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        except OSError:
            return []
        for name, is_dir in names:
            if is_dir:
                subdirs.append(name)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=fd)
        return subdirs

    try:
        fd = os.open(path, flags)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)  # not a directory (or gone already)
        return
    stack: List[Tuple[str, List[str]]] = [("", empty(fd))]  # (name in its parent, subdirectories left)
    try:
        while stack:
            name, pending = stack[-1]
            if pending:
                sub = pending.pop()
                try:
                    child = os.open(sub, flags, dir_fd=fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.unlink(sub, dir_fd=fd)  # replaced by a file meanwhile
                    continue
                os.close(fd)
                fd = child
                stack.append((sub, empty(fd)))
                continue
            stack.pop()
            if not stack:
                break
            parent = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = parent
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=fd)
    except OSError:
        pass  # a directory that cannot be reopened: leave what is left, like rmtree(ignore_errors=True)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(path)


@contextlib.contextmanager
def open_archive(path: str) -> Iterator[str]:
    """Unpack a snapshot (or a tree packed with 'tar -C DIR .') into a private temporary directory (0700);
    yield it; remove it afterwards.

    Raises ArchiveError for an unsafe, oversized or corrupt archive (nothing is written outside the
    temporary directory, and it is removed then too).
    """
    top = tempfile.mkdtemp(prefix="kvmcheck-snapshot-")
    try:
        os.chmod(top, 0o700)
        root = os.path.join(top, "root")
        os.mkdir(root, 0o755)
        for note in unpack(path, root):  # may name device paths from the archive: sanitized for the terminal
            from kvmcheck.core.terminal import terminal_text

            sys.stderr.write(f"kvmcheck: {path}: {terminal_text(note)}\n")
        yield root
    finally:
        remove_tree(top)
