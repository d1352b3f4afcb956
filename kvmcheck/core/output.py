# SPDX-License-Identifier: GPL-2.0-or-later
"""The one way kvmcheck writes a file: every --output (check, fleet) and the snapshot archive.

kvmcheck runs as root, often into directories other users can write (a node_exporter textfile directory, a
shared reports folder). So a write:

- creates a new temporary file beside the target, relative to a descriptor of the target's directory, with
  O_CREAT|O_EXCL|O_NOFOLLOW and a random name: a name another user pre-created (a symlink to /etc/shadow, a
  FIFO) makes the create fail, it is never followed or opened;
- writes, sets the mode on the descriptor (fchmod: nothing is looked up by name again), fsyncs;
- renames it over the target (rename never follows a link at the target: a symlink there is replaced, not
  written through), then fsyncs the directory so the rename survives a power cut;
- removes the temporary on any failure (ENOSPC, a signal): the previous report stays whole, and a reader
  (node_exporter, a tail -f) sees the old file or the new one, never an empty or half one.

The temporary's name, ``.<target>.<12 hex>.kvmcheck-tmp``, does not end in .prom (node_exporter's textfile
collector reads only *.prom) and is matched exactly when stale ones are cleaned (after SIGKILL, which no
handler sees): regular files owned by the running user, older than STALE_SECONDS, in that directory only.

Mode: a new report is 0644 (node_exporter runs as its own user and reads it); replacing an existing regular
file keeps its permission bits (an operator who made reports 0640 for a group keeps that), without set-id
and sticky bits. The owner is the running user (root), as with any file root writes. Snapshots pass 0600:
they hold host names, addresses and configuration.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
from typing import BinaryIO, Iterator, Optional

from kvmcheck.parsers import pattern

SUFFIX = ".kvmcheck-tmp"
STALE_SECONDS = 3600.0
_TEMP = pattern(r"\A\..+\.[0-9a-f]{12}" + re.escape(SUFFIX) + r"\Z", re.S)

# File systems that are views of the kernel, not storage: a report never belongs there.
PSEUDO_FSTYPES = frozenset((
    "proc", "sysfs", "devtmpfs", "devpts", "debugfs", "tracefs", "securityfs", "cgroup", "cgroup2", "configfs",
    "bpf", "pstore", "efivarfs", "fusectl", "binfmt_misc", "mqueue", "selinuxfs", "hugetlbfs", "autofs",
    "rpc_pipefs", "nsfs",
))


class OutputError(ValueError):
    """An --output path kvmcheck refuses before doing any work (a usage error)."""


def check_target(path: str) -> None:
    """Refuse what is not a regular file or a new file in an existing directory: a device, FIFO, socket,
    directory, symlink (it would be replaced, not written through: say so rather than surprise), or a file on
    procfs, sysfs or another kernel view (/proc/sys/vm/drop_caches is a 'regular file')."""
    if not path:
        raise OutputError("an empty file name")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"{path}: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise OutputError(f"{path} is a symbolic link; kvmcheck replaces files, it never writes through a "
                              "link: give the link's target instead")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{path} is not a regular file ({_kind(st.st_mode)}); --output writes a regular file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: the directory {folder} does not exist")
    fstype = _fstype(folder)
    if fstype in PSEUDO_FSTYPES:
        raise OutputError(f"{path} is on {fstype}, a kernel interface, not storage; --output writes a report file")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def _fstype(folder: str) -> Optional[str]:
    """The type of the file system folder is on, from the running kernel's mount table (None if unknown)."""
    from kvmcheck.core.host import Host
    from kvmcheck.parsers.mounts import backing_mount, parse_mountinfo

    try:
        text = Host("/").read_optional("/proc/self/mountinfo", limit=8 << 20)
    except OSError:
        return None
    if not text:
        return None
    mount = backing_mount(parse_mountinfo(text), os.path.realpath(folder))
    return mount.fstype if mount else None


def _open_dir(folder: str) -> int:
    return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))


def clean_stale(folder: str, base: Optional[str] = None, now: Optional[float] = None,
                dir_fd: Optional[int] = None) -> int:
    """Remove temporaries of our exact naming pattern in folder left by a killed run: regular files (never a
    link: lstat), owned by the running user, older than STALE_SECONDS. Returns how many were removed.

    With base (the target's name), also the name earlier versions used for Prometheus output, ``.<base>.<pid>.tmp``,
    for that target only: upgraded hosts keep no leftovers of the old writer."""
    now = time.time() if now is None else now
    legacy = re.compile(r"\A\." + re.escape(base) + r"\.[0-9]+\.tmp\Z") if base else None
    fd = _open_dir(folder) if dir_fd is None else dir_fd
    removed = 0
    try:
        for name in os.listdir(fd):
            if not (_TEMP.match(name) or (legacy is not None and legacy.match(name))):
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
                        and now - st.st_mtime > STALE_SECONDS):
                    os.unlink(name, dir_fd=fd)  # unlink never follows a link; a race swaps in at worst a link
                    removed += 1
            except OSError:
                continue  # gone meanwhile, or not ours to remove: leave it
    finally:
        if dir_fd is None:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_writer(path: str, mode: int = 0o644, keep_mode: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write path's new content into; renamed over path when the block ends without an
    exception, removed otherwise (an exception, including the one kvmcheck.core.signals raises for SIGTERM)."""
    folder, base = os.path.split(os.path.abspath(path))
    dfd = _open_dir(folder)
    tmp = None
    try:
        with _suppress_oserror():
            clean_stale(folder, base, dir_fd=dfd)
        if keep_mode:
            try:
                st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    mode = stat.S_IMODE(st.st_mode) & 0o777
            except FileNotFoundError:
                pass
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        tmp = f".{base}.{secrets.token_hex(6)}{SUFFIX}"
        with os.fdopen(os.open(tmp, flags, 0o600, dir_fd=dfd), "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), mode)  # on the descriptor: no name is looked up again
            os.fsync(fh.fileno())
        os.replace(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
        tmp = None
        with _suppress_oserror():  # some file systems refuse fsync on a directory; the data is written
            os.fsync(dfd)
    finally:
        if tmp is not None:
            with _suppress_oserror():
                os.unlink(tmp, dir_fd=dfd)
        os.close(dfd)


def write_text(path: str, text: str, mode: int = 0o644, keep_mode: bool = True) -> None:
    """Write text (UTF-8) to path atomically and link-safely (see the module's docstring)."""
    with atomic_writer(path, mode, keep_mode) as fh:
        fh.write(text.encode("utf-8"))


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> bool:  # type: ignore[no-untyped-def]
        return kind is not None and issubclass(kind, OSError)
