# SPDX-License-Identifier: GPL-2.0-or-later
"""The one seam between kvmcheck and the machine it inspects.

Every file read, directory listing, device probe and command goes through a
:class:`Host`, rooted at ``/`` (the live host) or at ``--root`` (a Kickstart
target, a captured tree, a test fixture).  Paths are looked up component by
component from a descriptor of the root (openat with O_NOFOLLOW, links followed
by hand, absolute ones restarting at the root), so neither a link nor a
directory swapped for a link while kvmcheck runs can lead a lookup out of the
root.  Only regular files and directories are ever opened; a device, FIFO or
socket is judged from its stat.  Missing, permission denied and "not a regular
file" stay distinct exceptions, because they call for different advice.

Nothing here writes to the host.  Probes that only make sense against the
running kernel (device ioctls, CPUID, the kernel ring buffer, commands) raise
:class:`OfflineError` when the root is not ``/``.
"""
from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import stat
import subprocess
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from kvmcheck.core.child import collect, fork_with_pipe, write_all
from kvmcheck.core.record import Record

MAX_SYMLINK_HOPS = 40  # the kernel's own limit (MAXSYMLINKS)
DEFAULT_READ_LIMIT = 8 << 20  # /proc/cpuinfo of a 1,000-CPU host is about 1.5 MiB


class OfflineError(RuntimeError):
    """A live-kernel probe was asked for while inspecting an offline root."""


class NotRegularFileError(OSError):
    """A FIFO, socket or device sits where a text file was expected."""


class Node(Record):
    """What sits at a path: kind is file, dir, char, block, fifo, socket, link or other."""

    kind: str
    mode: int  # permission bits only
    uid: int
    gid: int
    major: int = 0
    minor: int = 0


_KINDS = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"),
          (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "link"))


def _named(exc: OSError, path: str) -> OSError:
    """exc naming the host path asked for instead of the real path under the root (reports quote it)."""
    return type(exc)(exc.errno, exc.strerror, path)


def _node(st: os.stat_result) -> Node:
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "other")
    return Node(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, os.major(st.st_rdev), os.minor(st.st_rdev))


class StatVfs(Record):
    block_size: int
    blocks: int
    blocks_free: int  # available to unprivileged users
    files: int
    files_free: int
    read_only: bool

    @property
    def free_bytes(self) -> int:
        return self.block_size * self.blocks_free

    @property
    def total_bytes(self) -> int:
        return self.block_size * self.blocks


class CommandResult(Record):
    argv: Tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _read_only_null() -> Iterator[int]:
    """/dev/null opened read-only for a child's stdin (subprocess.DEVNULL opens it read-write)."""
    fd = os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        yield fd
    finally:
        os.close(fd)


def _max_fd() -> int:
    """One past the highest descriptor number to close in a forked child.

    Capped at 65536: Python 3.9 may close one number at a time (no close_range), and containers
    often allow a million descriptors; the ones kvmcheck inherits or opens are all far below."""
    try:
        limit = os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        limit = 1024
    return min(limit, 1 << 16) if limit > 0 else 1 << 16


def _statvfs_result(path: str, line: str) -> object:
    """A statvfs child's line -> StatVfs, None (missing) or the OSError it met."""
    kind, _, rest = line.partition(" ")
    if kind == "ok":
        f = [int(x) for x in rest.split()]
        return StatVfs(block_size=f[0], blocks=f[1], blocks_free=f[2], files=f[3], files_free=f[4],
                       read_only=bool(f[5] & os.ST_RDONLY))
    if kind == "missing":
        return None
    if kind == "error":
        number, _, message = rest.partition(" ")
        return OSError(int(number) if number.isdigit() else errno.EIO, message or "statvfs failed", path)
    return OSError(errno.EIO, "statvfs child ended without an answer", path)


# File systems whose operations are answered by the local kernel from local storage or memory: a lookup,
# read or readdir there cannot hang on a server.  Anything else (nfs, cifs/smb3, fuse.*, 9p, ceph,
# glusterfs, virtiofs, autofs, which may mount any of these, and types not named here) can hang for good.
LOCAL_FS_TYPES = frozenset((
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "vfat", "msdos", "exfat", "ntfs", "ntfs3",
    "iso9660", "udf", "squashfs", "erofs", "zfs", "tmpfs", "ramfs", "rootfs", "devtmpfs", "proc", "sysfs", "devpts",
    "cgroup", "cgroup2", "securityfs", "selinuxfs", "debugfs", "tracefs", "bpf", "pstore", "efivarfs", "configfs",
    "hugetlbfs", "mqueue", "binfmt_misc", "fusectl", "rpc_pipefs", "nsfs", "overlay"))
BLOCKING_TIMEOUT = 2.0  # seconds one file operation under such a mount may take before it is abandoned


def _unescape_mountinfo(field: str) -> str:
    """A mountinfo path with its octal escapes (\\040 for a space, \\011, \\012, \\134) decoded."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def remote_mounts(mountinfo: str) -> List[str]:
    """Mount points (of the machine running kvmcheck) whose file system is not a local one (LOCAL_FS_TYPES)."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) > dash + 1 and len(fields) > 4 and fields[dash + 1] not in LOCAL_FS_TYPES:
            found.append(_unescape_mountinfo(fields[4]))
    return found


class _NeedsChild(Exception):
    """The lookup is about to touch a mount that can hang: the whole operation moves to a child process."""


class _Found(Record):
    """What a lookup inside the root reached: an O_PATH descriptor of it (opened without following a
    link, so it is exactly the object checked), its stat, and its canonical components under the root
    (None when openat2 reached it: Host._lookup_at_once)."""

    fd: int
    st: os.stat_result
    parts: Optional[List[str]]


class _Missing(Exception):
    """A component does not exist (or a non-directory is used as one): the literal components, for naming."""

    def __init__(self, exc: OSError, parts: List[str]) -> None:
        super().__init__(exc)
        self.exc, self.parts = exc, parts


# O_PATH: look the object up and hold it without opening it (no driver open of a device, no FIFO wait,
# no read permission needed: the same as lstat).  Linux >= 2.6.39; fstat, fstatvfs and readlinkat on
# such a descriptor work since Linux 3.6 / 3.12, which every kernel kvmcheck supports has.
_O_PATH = getattr(os, "O_PATH", 0o10000000)
_LOOKUP = _O_PATH | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

# openat2(2), Linux >= 5.6: the whole path resolved inside the root's descriptor as chroot(2) would see it
# (RESOLVE_IN_ROOT: an absolute link and ".." stay inside; a rename race is refused, EAGAIN) and no /proc
# magic link followed (RESOLVE_NO_MAGICLINKS), by the kernel, atomically.  The same confinement as the
# walk in Host._lookup, in one system call instead of about four per component (a run makes ~300
# lookups).  437 on every architecture but alpha (include/uapi/asm-generic/unistd.h, arch/*/syscall.tbl).
_SYS_OPENAT2 = None if os.uname().machine.startswith("alpha") else 437
_RESOLVE = 0x02 | 0x10  # RESOLVE_NO_MAGICLINKS | RESOLVE_IN_ROOT (include/uapi/linux/openat2.h)
_openat2_call: Optional[Callable[..., int]] = None  # the syscall(2) entry, once ctypes has found it


def _openat2(dir_fd: int, path: str, flags: int) -> int:
    """openat2(dir_fd, path, {flags, 0, _RESOLVE}): a descriptor, or -errno."""
    global _openat2_call
    if _openat2_call is None:
        import ctypes

        syscall = ctypes.CDLL(None, use_errno=True).syscall
        syscall.restype = ctypes.c_long
        syscall.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t)

        def call(dir_fd: int, path: bytes, how: bytes) -> int:
            fd = syscall(_SYS_OPENAT2, dir_fd, path, how, len(how))
            return fd if fd >= 0 else -ctypes.get_errno()

        _openat2_call = call
    import struct

    return _openat2_call(dir_fd, os.fsencode(path), struct.pack("=QQQ", flags, 0, _RESOLVE))


_STAT_EXTRA = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize",
               "st_blocks", "st_rdev")
_ERRORS = {cls.__name__: cls for cls in (OSError, FileNotFoundError, PermissionError, IsADirectoryError,
                                         NotADirectoryError, TimeoutError, NotRegularFileError)}


def _encode(value: object) -> object:
    """A Host method's result as marshal can carry it from a child (stat results and Nodes as tagged tuples)."""
    if isinstance(value, os.stat_result):
        return ("__stat__", tuple(value) + tuple(getattr(value, n) for n in _STAT_EXTRA))
    if isinstance(value, Node):
        return ("__node__", tuple(value))
    return value


def _decode(value: object) -> object:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__stat__":
        return os.stat_result(value[1])
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__node__":
        return Node(*value[1])
    return value


def _guarded(method):  # type: ignore[no-untyped-def]
    """Run a Host operation here, or in an abandonable child when its lookup reaches a mount that can hang."""
    def wrapper(self, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return method(self, path, *args, **kwargs)
        except _NeedsChild as need:
            return self._offload(lambda: method(self, path, *args, **kwargs), path, need.args[0])
    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class _Fd:
    """A bare descriptor a selector can watch and that closes once (the stdin pipe of Host.converse)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.closed = fd, False

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)



class Host:
    def __init__(self, root: str = "/", label: Optional[str] = None) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise FileNotFoundError(errno.ENOENT, "root directory does not exist", root)
        self.root = real
        self.label = label or real  # what reports call the root: an unpacked snapshot's archive, not its temp dir
        self.live = real == "/"
        # Every lookup starts from a descriptor of the root, one component at a time, so no path under
        # the root is ever handed to the kernel whole (a directory swapped for a link to the outside
        # between two lookups cannot lead a read out).  The descriptor is opened per lookup and must be
        # this very directory: a Host holds no descriptor between calls (kvmcheck.run() leaves none open,
        # and a check thread abandoned on a timeout can never use a number since reused).
        self._root_id = self._root_identity(os.stat(real))
        self.reads: List[str] = []  # every path asked for, in order: the run's evidence trail
        # Mount points asked for their free space (statvfs): named by the mount table or a pool's XML, not by
        # a declaration, and nothing a snapshot could capture; kept apart from reads.
        self.probed: List[str] = []
        self._memo: Dict[str, object] = {}
        # Mount points (real paths) that can hang, read once from the running kernel's table; an operation
        # whose lookup reaches one runs in a child that is abandoned when it does not answer, and a mount
        # that did not answer once is not asked again (one hung mount costs one timeout, not one per file).
        self._remote: Optional[List[str]] = None
        self._stuck: Dict[str, str] = {}  # mount point -> what did not answer
        self._in_child = False
        self.blocking_timeout = BLOCKING_TIMEOUT

    @staticmethod
    def _root_identity(st: os.stat_result) -> Tuple[int, int]:
        return st.st_dev, st.st_ino

    def _hazard(self, real: str) -> Optional[str]:
        """The mount point that can hang which real (a path on this machine) is on or under, or None."""
        if self._remote is None:
            try:
                with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
                    self._remote = remote_mounts(f.read(4 << 20))
            except OSError:
                self._remote = []  # no /proc: nothing known about mounts, operations run in this process
        best = None
        for m in self._remote:
            if (real == m or real.startswith(m.rstrip("/") + "/")) and (best is None or len(m) > len(best)):
                best = m
        return best

    def _check_hazard(self, real: str) -> None:
        if not self._in_child and self._hazard(real) is not None:
            raise _NeedsChild(real)

    def _offload(self, func: Callable[[], object], path: str, real: str) -> object:
        """func() in a forked child, its result (or exception) carried back; TimeoutError when the child does
        not answer within blocking_timeout: it is killed and abandoned (a process in uninterruptible sleep
        on a dead server cannot even be killed), and its mount is not asked again in this run."""
        import marshal

        mount = self._hazard(real) or real
        if mount.startswith(self.root.rstrip("/") + "/"):
            mount = mount[len(self.root.rstrip("/")):]  # named as the root sees it, like every Host error
        if mount in self._stuck:
            raise TimeoutError(errno.ETIMEDOUT, f"{mount} did not answer before ({self._stuck[mount]}): "
                                                "a hung network or FUSE mount", path)
        pid, fd = fork_with_pipe()  # fd: the write end in the child, the read end here
        if pid == 0:  # the child: never returns
            code = 0
            try:
                os.closerange(0, fd)  # hold none of the parent's descriptors (stdout above all)
                os.closerange(fd + 1, _max_fd())
                os.setsid()
                self._in_child = True
                try:
                    payload = ("ok", _encode(func()))
                except OSError as exc:
                    payload = ("oserror", type(exc).__name__, exc.errno or errno.EIO, exc.strerror or str(exc),
                               exc.filename if isinstance(exc.filename, str) else path)
                except ValueError as exc:
                    payload = ("valueerror", str(exc)[:500])
                write_all(fd, marshal.dumps(payload))
            except BaseException:  # noqa: B902 - nothing may escape into the parent's code
                code = 1
            finally:
                os._exit(code)
        try:
            data = collect(pid, fd, self.blocking_timeout)
        finally:
            os.close(fd)
        if data is None:
            self._stuck[mount] = f"{path} took over {self.blocking_timeout:g} s"
            raise TimeoutError(errno.ETIMEDOUT, f"no answer within {self.blocking_timeout:g} s from {mount} "
                                                "(a hung network or FUSE mount)", path)
        try:
            payload = marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            raise OSError(errno.EIO, "the child reading it ended without an answer", path) from None
        if payload[0] == "ok":
            return _decode(payload[1])
        if payload[0] == "valueerror":
            raise ValueError(payload[1])
        _, name, number, message, filename = payload
        raise _ERRORS.get(name, OSError)(number, message, filename)

    def _open_root(self) -> int:
        fd = os.open(self.root, _LOOKUP | os.O_DIRECTORY)
        if self._root_identity(os.fstat(fd)) != self._root_id:
            os.close(fd)
            raise OSError(errno.ESTALE, "the root directory was replaced while kvmcheck ran", self.root)
        return fd

    # -- path resolution -------------------------------------------------
    # Whether openat2 may be asked (the class's: a kernel without it, or a seccomp filter refusing it,
    # answers so for every Host).  Tests turn it off to run the walk alone.
    use_openat2 = _SYS_OPENAT2 is not None

    def _lookup(self, path: str, follow: bool = True,
                visit: Optional[Callable[[str, Optional[str]], bool]] = None, walk: bool = False) -> _Found:
        """Reach path from the root's descriptor: in one openat2 (RESOLVE_IN_ROOT) where the kernel has it,
        nothing is to be shown to visit and no mount that can hang is under the root; otherwise (walk=True
        too), component by component (openat with O_NOFOLLOW), the parts of the path named as they are.

        Symlinks are followed by hand: an absolute target restarts at the root, and ``..`` stops at the
        root, the way chroot(2) would see it; at most MAX_SYMLINK_HOPS of them.  follow=False leaves a
        final symlink unfollowed (lstat).  visit(host_path, link_target_or_None) is called for each
        existing component before it is used; returning False stops with PermissionError (the snapshot
        uses it to refuse and record paths).  Raises _Missing, or the OSError named with path.
        The caller closes the returned descriptor.
        """
        self._check_hazard(self.root)  # the root itself on a network or FUSE mount: every operation
        if (not walk and visit is None and Host.use_openat2 and path.strip("/") and not self._in_child
                and not self._remote_below()):
            found = self._lookup_at_once(path, follow)
            if found is not None:
                return found
        pending = [c for c in reversed(path.split("/")) if c]
        parts: List[str] = []
        dirs = [self._open_root()]  # the descriptors of the root and of each directory in parts
        hops = 0
        try:
            while pending:
                name = pending.pop()
                if name == ".":
                    continue
                if name == "..":
                    if parts:
                        parts.pop()
                        os.close(dirs.pop())
                    continue
                if self._remote:  # a mount that can hang is entered by this very lookup
                    self._check_hazard(os.path.join(self.root, *parts, name))
                try:
                    fd = os.open(name, _LOOKUP, dir_fd=dirs[-1])
                except (FileNotFoundError, NotADirectoryError) as exc:
                    # The rest cannot exist; keep the literal path for the error.
                    raise _Missing(_named(exc, path), parts + [name] + list(reversed(pending))) from None
                try:
                    st = os.fstat(fd)
                    here = "/" + "/".join(parts + [name])
                    if stat.S_ISLNK(st.st_mode) and (follow or pending):
                        target = os.readlink("", dir_fd=fd)  # of this very link, not of a name looked up again
                        os.close(fd)
                        if visit is not None and not visit(here, target):
                            raise PermissionError(errno.EACCES, "refused", here)
                        hops += 1
                        if hops > MAX_SYMLINK_HOPS:
                            raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                        if target.startswith("/"):
                            for d in dirs[1:]:
                                os.close(d)
                            del dirs[1:]
                            parts = []
                        pending.extend(c for c in reversed(target.split("/")) if c)
                        continue
                    if visit is not None and not visit(here, None):
                        raise PermissionError(errno.EACCES, "refused", here)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    raise
                parts.append(name)
                if not pending:
                    return _Found(fd, st, parts)
                dirs.append(fd)  # a non-directory here makes the next openat fail with ENOTDIR: missing
            fd = os.open(".", _LOOKUP, dir_fd=dirs[-1])  # the path named the root or a directory on the stack
            return _Found(fd, os.fstat(fd), parts)
        except _Missing:
            raise
        except PermissionError as exc:
            if exc.strerror == "refused":
                raise
            raise _named(exc, path) from None
        except OSError as exc:  # EACCES on a directory above, ENAMETOOLONG, ELOOP
            raise _named(exc, path) from None
        finally:
            for d in dirs:
                with contextlib.suppress(OSError):
                    os.close(d)

    def _remote_below(self) -> bool:
        """Whether a mount that can hang is at or under the root (its lookups must then be walked)."""
        root = self.root.rstrip("/") + "/"
        return any((m.rstrip("/") + "/").startswith(root) for m in self._remote or ())

    def _lookup_at_once(self, path: str, follow: bool) -> Optional[_Found]:
        """_lookup through openat2, or None where the walk must decide (any error but a missing component,
        such as ELOOP from a magic link or a long chain, EACCES, EAGAIN; or no openat2 here at all).
        The found object's parts are None: what the walk would name them, only the walk says."""
        root = self._open_root()
        try:
            fd = _openat2(root, path, _LOOKUP if not follow else _LOOKUP & ~os.O_NOFOLLOW)
        finally:
            os.close(root)
        if fd >= 0:
            try:
                return _Found(fd, os.fstat(fd), None)
            except BaseException:
                os.close(fd)
                raise
        if -fd in (errno.ENOENT, errno.ENOTDIR):
            exc = (FileNotFoundError if -fd == errno.ENOENT else NotADirectoryError)(-fd, os.strerror(-fd), path)
            raise _Missing(exc, None)
        if -fd in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):  # no openat2, or a filter refusing it
            Host.use_openat2 = False
        return None

    @contextlib.contextmanager
    def _found(self, path: str, follow: bool = True) -> Iterator[Optional[_Found]]:
        """_lookup as a context: None when path is missing; the descriptor is closed afterwards."""
        try:
            found: Optional[_Found] = self._lookup(path, follow)
        except _Missing:
            found = None
        try:
            yield found
        finally:
            if found is not None:
                os.close(found.fd)

    def resolve(self, path: str, visit: Optional[Callable[[str, Optional[str]], bool]] = None) -> str:
        """The real path under the root that path names, never outside it (for naming and comparing only:
        the Host itself never opens this string, which could change under it)."""
        try:
            return self._resolve_here(path, visit)
        except _NeedsChild as need:
            # Looked up in a child (a mount that can hang); the components it passed are shown to visit
            # afterwards, in order, with the same effect: the first refused one stops the resolution.
            def record(here: str, target: Optional[str]) -> bool:
                passed.append((here, target))
                return True

            passed: List[Tuple[str, Optional[str]]] = []
            real, seen = self._offload(lambda: (self._resolve_here(path, record if visit else None), passed),
                                       path, need.args[0])
            for here, target in seen if visit is not None else ():
                if not visit(here, target):
                    raise PermissionError(errno.EACCES, "refused", here) from None
            return real

    def _resolve_here(self, path: str, visit: Optional[Callable[[str, Optional[str]], bool]]) -> str:
        try:
            found = self._lookup(path, visit=visit, walk=True)  # the walk names the parts
        except _Missing as missing:
            return os.path.join(self.root, *missing.parts)
        os.close(found.fd)
        return os.path.join(self.root, *found.parts)

    def _reopen(self, found: _Found, flags: int, path: str) -> int:
        """Open the very object an O_PATH descriptor holds, for reading (files) or use (live devices).

        Through /proc/self/fd/N, which leads to that inode and nothing else: no name is looked up again.
        Without /proc (a bare chroot), the object is looked up by name in its directory and must then be
        the same inode, so a swap in between is caught (after its open, though)."""
        try:
            return os.open(f"/proc/self/fd/{found.fd}", flags)
        except FileNotFoundError:
            if os.path.isdir("/proc/self/fd"):
                raise
        except OSError as exc:
            raise _named(exc, path) from None
        # Fallback: the parent again, then the last component without following a link.
        if found.parts is None:  # looked up through openat2: the walk names the components
            try:
                again = self._lookup(path, walk=True)
            except _Missing:
                raise FileNotFoundError(errno.ENOENT, "removed while it was opened", path) from None
            os.close(again.fd)
            found = _Found(found.fd, found.st, again.parts)
        try:
            parent = self._lookup("/" + "/".join(found.parts[:-1]))
        except _Missing:
            raise FileNotFoundError(errno.ENOENT, "removed while it was opened", path) from None
        try:
            fd = os.open(found.parts[-1] if found.parts else ".", flags | os.O_NOFOLLOW, dir_fd=parent.fd)
        except OSError as exc:
            raise _named(exc, path) from None
        finally:
            os.close(parent.fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (found.st.st_dev, found.st.st_ino):
            os.close(fd)
            raise OSError(errno.EAGAIN, "changed while it was opened", path)
        return fd

    def _note(self, path: str) -> None:
        if path not in self.reads:
            self.reads.append(path)

    # -- files -------------------------------------------------------------
    @_guarded
    def read_bytes(self, path: str, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """Read a regular file's bytes (at most limit).

        Raises FileNotFoundError, PermissionError, IsADirectoryError,
        NotRegularFileError or another OSError; never blocks on a FIFO, and
        opens nothing but a regular file: a device, FIFO or socket is refused
        from its stat alone (opening a device can have effects: /dev/kmsg,
        a tape that rewinds, a watchdog that arms).
        """
        self._note(path)
        try:
            found = self._lookup(path)
        except _Missing as missing:
            raise missing.exc from None
        try:
            mode = found.st.st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                raise NotRegularFileError(errno.EINVAL, "not a regular file (a device node: never opened)", path)
            if not stat.S_ISREG(mode):
                raise NotRegularFileError(errno.EINVAL, "not a regular file", path)
            fd = self._reopen(found, _READ, path)
        finally:
            os.close(found.fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # cannot happen: the same inode; cheap to be sure
                raise NotRegularFileError(errno.EINVAL, "not a regular file", path)
            chunks = []
            size = 0
            while size < limit:
                chunk = os.read(fd, min(1 << 16, limit - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks)

    def read_text(self, path: str, limit: int = DEFAULT_READ_LIMIT) -> str:
        """read_bytes as text (undecodable bytes replaced)."""
        return self.read_bytes(path, limit).decode("utf-8", errors="replace")

    def read_optional(self, path: str, limit: int = DEFAULT_READ_LIMIT) -> Optional[str]:
        """Like read_text, but a missing file is None (permission problems still raise)."""
        try:
            return self.read_text(path, limit)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def first_line(self, path: str) -> Optional[str]:
        """The stripped first line of a small sysfs-style file, or None when missing or unreadable."""
        try:
            text = self.read_optional(path, limit=4096)
        except OSError:
            return None
        if text is None:
            return None
        return text.split("\n", 1)[0].strip()

    @_guarded
    def node(self, path: str) -> Optional[Node]:
        """The node at path after following links inside the root; a dangling link is kind "link"; None if absent."""
        self._note(path)
        with self._found(path) as found:
            if found is not None:
                return _node(found.st)
        with self._found(path, follow=False) as found:
            return None if found is None else _node(found.st)

    @_guarded
    def stat(self, path: str) -> Optional[os.stat_result]:
        """stat() of path (links followed inside the root), or None when it does not exist."""
        self._note(path)
        with self._found(path) as found:
            return None if found is None else found.st

    @_guarded
    def lstat(self, path: str) -> Optional[os.stat_result]:
        """lstat() of path: a final symlink is not followed (the ones above it are); None when absent."""
        self._note(path)
        with self._found(path, follow=False) as found:
            return None if found is None else found.st

    @_guarded
    def readlink(self, path: str) -> str:
        """The target of the symlink at path, as written (OSError EINVAL when it is not a link)."""
        self._note(path)
        with self._found(path, follow=False) as found:
            if found is None:
                raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
            if not stat.S_ISLNK(found.st.st_mode):
                raise OSError(errno.EINVAL, "not a symbolic link", path)
            return os.readlink("", dir_fd=found.fd)

    def sqlite_query(self, path: str, query: str, limit: int = DEFAULT_READ_LIMIT) -> List[tuple]:
        """The rows of a read-only query on the sqlite database file at path (rpm's rpmdb.sqlite).

        The file is read like any other (read_bytes: looked up inside the root, a regular file, at most
        limit bytes) and opened in memory (Python >= 3.11: Connection.deserialize), so sqlite opens no
        path that could be swapped and writes no -wal/-shm file beside it.  sqlite cannot be handed a
        descriptor: it resolves /proc/self/fd/N to the link's text and opens that path again.  Python
        3.9/3.10 get a private copy (0700 directory, removed afterwards) opened read-only and immutable.
        Raises OSError (unreadable, EFBIG over limit) or ValueError (not a sqlite database, sqlite's error).
        """
        import sqlite3

        data = self.read_bytes(path, limit + 1)
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB", path)
        if len(data) < 100 or not data.startswith(b"SQLite format 3\0"):
            raise ValueError("no sqlite database header")
        if data[18:20] == b"\x02\x02":
            # WAL mode (rpm's default): the copy is read as a rollback-journal database; what the -wal file
            # may still hold is not read (rpm folds it into the database when it closes it).
            data = data[:18] + b"\x01\x01" + data[20:]
        try:
            if hasattr(sqlite3.Connection, "deserialize"):
                conn = sqlite3.connect(":memory:")
                try:
                    conn.deserialize(data)
                    return conn.execute(query).fetchall()
                finally:
                    conn.close()
            import shutil
            import tempfile
            import urllib.parse

            top = tempfile.mkdtemp(prefix="kvmcheck-sqlite-")
            try:
                copy = os.path.join(top, "copy.sqlite")
                with open(copy, "xb") as out:
                    out.write(data)
                conn = sqlite3.connect(f"file:{urllib.parse.quote(copy)}?mode=ro&immutable=1", uri=True)
                try:
                    return conn.execute(query).fetchall()
                finally:
                    conn.close()
            finally:
                shutil.rmtree(top, ignore_errors=True)
        except sqlite3.Error as exc:
            raise ValueError(f"sqlite: {exc}") from None

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def is_dir(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    @_guarded
    def listdir(self, path: str) -> List[str]:
        """Sorted entries of a directory; [] when it is missing or not a directory."""
        self._note(path)
        with self._found(path) as found:
            if found is None or not stat.S_ISDIR(found.st.st_mode):
                return []
            try:
                # "." of the held directory: that directory, opened for reading, no name looked up again.
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                             dir_fd=found.fd)
            except OSError as exc:
                raise _named(exc, path) from None
        try:
            return sorted(os.listdir(fd))
        except OSError as exc:
            raise _named(exc, path) from None
        finally:
            os.close(fd)

    def glob(self, pattern: str) -> List[str]:
        """Host paths matching a shell pattern, one wildcard component at a time."""
        found = ["/"]
        for comp in [c for c in pattern.split("/") if c]:
            nxt = []
            for base in found:
                if any(ch in comp for ch in "*?["):
                    nxt.extend(os.path.join(base, n) for n in self.listdir(base) if fnmatch.fnmatchcase(n, comp))
                else:
                    cand = os.path.join(base, comp)
                    if self.stat(cand) is not None or self._lexists(cand):
                        nxt.append(cand)
            found = nxt
        return sorted(found)

    def _lexists(self, path: str) -> bool:
        try:
            return self.lstat(path) is not None
        except OSError:
            return False

    @_guarded
    def access(self, path: str, mode: str = "r") -> bool:
        """Whether the invoking user may use the path: mode is a mix of "r", "w", "x"."""
        self._note(path)
        bits = (os.R_OK if "r" in mode else 0) | (os.W_OK if "w" in mode else 0) | (os.X_OK if "x" in mode else 0)
        try:
            found = self._lookup(path)
        except (_Missing, OSError):
            return False
        try:
            if os.path.isdir("/proc/self/fd"):
                # access(2) through the held descriptor's /proc link: the object looked up, with its ACLs.
                return os.access(f"/proc/self/fd/{found.fd}", bits)
            # No /proc (a bare chroot): the permission bits alone; root may read and write anything.
            st, (uid, groups) = found.st, self.invoking_user()
            if uid == 0:
                return not bits & os.X_OK or bool(st.st_mode & 0o111)
            shift = 6 if st.st_uid == uid else 3 if st.st_gid in groups else 0
            return (st.st_mode >> shift) & bits == bits
        finally:
            os.close(found.fd)

    # -- live-only probes ------------------------------------------------------
    def require_live(self, what: str) -> None:
        if not self.live:
            raise OfflineError(f"{what} needs the running kernel; the root is {self.label}")

    def open_device(self, path: str, flags: int = os.O_RDWR) -> int:
        """Open a character device of the running kernel; the caller closes the fd."""
        self.require_live(f"opening {path}")
        self._note(path)
        # Live only, so the root is "/" and there is no outside to escape to: the path is resolved with
        # lstat/readlink and opened whole, which takes one descriptor and no more (the guest checks report
        # EMFILE at the exact stage it happens, and a descriptor walk would need three).
        real = self._resolve_live(path)
        st = os.stat(real)
        if not stat.S_ISCHR(st.st_mode):
            raise NotRegularFileError(errno.ENODEV, "not a character device", path)
        return os.open(real, flags | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))

    def _resolve_live(self, path: str) -> str:
        """path with its links followed by hand on the live root (lstat/readlink; no descriptor)."""
        pending = [c for c in reversed(path.split("/")) if c]
        parts: List[str] = []
        hops = 0
        while pending:
            name = pending.pop()
            if name in (".", ".."):
                if name == ".." and parts:
                    parts.pop()
                continue
            candidate = "/" + "/".join(parts + [name])
            try:
                target = os.readlink(candidate)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: not a link; the rest fails where it is opened
                    raise _named(exc, path) from None
                parts.append(name)
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
            if target.startswith("/"):
                parts = []
            pending.extend(c for c in reversed(target.split("/")) if c)
        return "/" + "/".join(parts)

    def close(self, fd: int) -> None:
        """Close a descriptor that open_device returned."""
        os.close(fd)

    def device_open_error(self, path: str) -> Optional[int]:
        """Open a device read/write and close it again: None when it opens, else the errno."""
        try:
            fd = self.open_device(path, os.O_RDWR)
        except OSError as exc:
            return exc.errno
        os.close(fd)
        return None

    def read_device_at(self, path: str, offset: int, size: int) -> bytes:
        """pread() from a device such as /dev/cpu/0/msr or /dev/cpu/0/cpuid."""
        fd = self.open_device(path, os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def kernel_log(self, limit: int = 4 << 20) -> str:
        """The kernel ring buffer from /dev/kmsg, read without blocking (live only)."""
        fd = self.open_device("/dev/kmsg", os.O_RDONLY)
        records = []
        size = 0
        try:
            while size < limit:
                try:
                    rec = os.read(fd, 8192)
                except BlockingIOError:
                    break  # end of buffer
                except BrokenPipeError:
                    continue  # a record was overwritten while we read; the next one follows
                if not rec:
                    break
                records.append(rec)
                size += len(rec)
        finally:
            os.close(fd)
        return b"".join(records).decode("utf-8", errors="replace")

    def run(self, argv: Sequence[str], timeout: float = 5.0) -> CommandResult:
        """Run a command as an argv list, no shell, C locale, bounded in time.

        Live only: a program pointed at an offline root (``rpm --root DIR``)
        would resolve the root's paths itself, out of it through an absolute
        link, and could write there.  Raises FileNotFoundError when the
        program is not installed and TimeoutError when it overruns (the
        child is killed).
        """
        self.require_live(f"running {argv[0]}")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
        with _read_only_null() as null:
            try:
                proc = subprocess.run(
                    list(argv), shell=False, stdin=null, capture_output=True, timeout=timeout, env=env
                )
            except subprocess.TimeoutExpired:
                raise TimeoutError(errno.ETIMEDOUT, f"did not finish within {timeout:g} s", argv[0]) from None
        return CommandResult(
            tuple(argv),
            proc.returncode,
            proc.stdout.decode("utf-8", errors="replace"),
            proc.stderr.decode("utf-8", errors="replace"),
        )

    def statvfs(self, path: str, timeout: float = 2.0) -> Optional[StatVfs]:
        """statvfs() of a path inside the root, in a child process; None when the path is missing.

        A hung network or FUSE mount leaves the caller in uninterruptible sleep,
        even through SIGKILL, and a thread stuck like that would keep kvmcheck
        from exiting.  So the call runs in a child that is killed and abandoned
        (not waited for) when time runs out: TimeoutError is raised then.
        """
        result = self.statvfs_many([path], timeout)[path]
        if isinstance(result, OSError):
            raise result
        return result

    def statvfs_many(self, paths: Sequence[str], timeout: float = 2.0) -> Dict[str, object]:
        """statvfs of several paths at once, one forked child each, all within one deadline.

        Each value is a StatVfs, None (missing), or the OSError (TimeoutError for a hung mount).
        """
        children: Dict[str, Tuple[int, int]] = {}  # path -> (pid, read end of its pipe)
        try:
            for path in dict.fromkeys(paths):
                if path not in self.probed:
                    self.probed.append(path)
                children[path] = self._fork_statvfs(path)
            return self._collect_statvfs(children, timeout)
        finally:
            for _, fd in children.values():
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _fork_statvfs(self, path: str) -> Tuple[int, int]:
        """Fork a child that looks path up inside the root and writes its statvfs to a pipe.

        The child (kvmcheck.core.child) runs only this lookup (openat/fstat/readlinkat), fstatvfs and one write.
        """
        pid, fd = fork_with_pipe()  # fd: the write end in the child, the read end here
        if pid == 0:  # the child: never returns
            code = 0
            try:
                # Hold no descriptor of the parent's: a child stuck on a hung mount that kept stdout
                # open would hang whoever reads kvmcheck's output (a pipe, ssh, Ansible) after it exits.
                os.closerange(0, fd)
                os.closerange(fd + 1, _max_fd())
                os.setsid()  # out of the terminal's process group, as a daemon-like helper
                self._in_child = True  # already the abandonable child: no second one
                try:
                    # The lookup opens every component, the mount point among them: that too may hang.
                    found = self._lookup(path)
                    s = os.fstatvfs(found.fd)
                    line = f"ok {s.f_frsize} {s.f_blocks} {s.f_bavail} {s.f_files} {s.f_favail} {s.f_flag}"
                except (_Missing, FileNotFoundError, NotADirectoryError):
                    line = "missing"
                except OSError as exc:
                    line = f"error {exc.errno or errno.EIO} {exc.strerror or exc}"
                os.write(fd, line.encode("utf-8", "replace")[:4096])
            except BaseException:  # noqa: B902 - nothing may escape into the parent's code
                code = 1
            finally:
                os._exit(code)
        return pid, fd

    @staticmethod
    def _collect_statvfs(children: Dict[str, Tuple[int, int]], timeout: float) -> Dict[str, object]:
        import select

        deadline = time.monotonic() + timeout
        output: Dict[int, bytes] = {fd: b"" for _, fd in children.values()}
        open_fds = set(output)
        poller = select.poll()
        for fd in open_fds:
            poller.register(fd, select.POLLIN | select.POLLHUP)
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _ in poller.poll(left * 1000):
                chunk = os.read(fd, 4096)
                if chunk:
                    output[fd] += chunk
                else:  # end of file: the child wrote its line and exited
                    poller.unregister(fd)
                    open_fds.discard(fd)
        results: Dict[str, object] = {}
        for path, (pid, fd) in children.items():
            if fd in open_fds:  # still inside statvfs or the resolution: kill it, do not wait for it
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # reaped now if the kill took; else init reaps it after us
                results[path] = TimeoutError(errno.ETIMEDOUT, f"statvfs did not return within {timeout:g} s", path)
                continue
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)  # it closed its pipe by exiting
            results[path] = _statvfs_result(path, output[fd].decode("utf-8", "replace"))
        return results

    def probe_url(self, url: str, timeout: float = 3.0) -> Tuple[bool, str]:
        """Whether a repository URL answers (for --online): (reachable, what happened). Reads nothing local."""
        import urllib.error
        import urllib.request

        if not url.startswith(("http://", "https://", "ftp://")):
            return False, f"not a network URL: {url[:80]}"
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "kvmcheck"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
                return True, f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            # A directory URL may refuse HEAD or listing (403/404/405) yet serve its metadata files.
            return exc.code in (403, 405), f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return False, str(getattr(exc, "reason", exc))[:200]

    def machine(self) -> Optional[str]:
        """uname -m of the running kernel; None for an offline root."""
        return os.uname().machine if self.live else None

    def invoking_user(self) -> Tuple[int, List[int]]:
        """(euid, groups) of the process running kvmcheck."""
        return os.geteuid(), sorted(set(os.getgroups()) | {os.getegid()})

    # -- per-run memo, so a file parsed by one check is not re-read by the next ----
    def memo(self, key: str, compute):  # type: ignore[no-untyped-def]
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    # -- added for the consumer checks (kept at the end of the class) --------------------------
    @_guarded
    def xattr(self, path: str, name: str) -> Optional[bytes]:
        """An extended attribute of the node at path (system.posix_acl_access, ...); None when it has none.

        Offline-safe: the node is looked up inside the root like any other (a last symlink not followed)
        and held by an O_PATH descriptor, and the attribute is read through that descriptor's /proc link,
        so the node is never opened (a device of an offline root is not touched) and no path is resolved
        again.  A file system without xattrs (ENOTSUP) has none; a missing path is None too.
        """
        self._note(path)
        with self._found(path, follow=False) as found:
            if found is None:
                return None
            try:
                return os.getxattr(f"/proc/self/fd/{found.fd}", name)
            except OSError as exc:
                if exc.errno in (errno.ENODATA, errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)):
                    return None
                raise _named(exc, path) from None

    def converse(self, argv: Sequence[str], lines: Sequence[str], timeout: float = 5.0,
                 limit: int = 1 << 20) -> CommandResult:
        """Start a program (argv list, no shell, C locale; live only), write lines to its stdin, and
        collect its stdout and stderr until it exits, at most limit bytes of each.

        For request/response protocols on stdio (QMP): the lines are written as the program reads them,
        then stdin is closed.  At the deadline the program is killed and TimeoutError is raised; one
        that floods its output past limit is killed too (the output so far is kept, returncode -9).
        Raises FileNotFoundError when the program is not installed.
        """
        import selectors

        self.require_live(f"running {argv[0]}")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
        # The child's stdin is a pipe of our own, written with os.write: no file object is opened for writing.
        child_end, our_end = os.pipe()
        try:
            proc = subprocess.Popen(list(argv), shell=False, stdin=child_end, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, start_new_session=True)
        except BaseException:
            os.close(our_end)
            raise
        finally:
            os.close(child_end)
        stdin = _Fd(our_end)
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None
        pending = "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode("utf-8")
        out = {stdout.fileno(): bytearray(), stderr.fileno(): bytearray()}
        reading = set(out)
        deadline = time.monotonic() + timeout
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(stdout, selectors.EVENT_READ)
                sel.register(stderr, selectors.EVENT_READ)
                if pending:
                    os.set_blocking(stdin.fileno(), False)
                    sel.register(stdin, selectors.EVENT_WRITE)
                else:
                    stdin.close()
                while reading:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(errno.ETIMEDOUT, f"did not finish within {timeout:g} s", argv[0])
                    for key, _ in sel.select(left):
                        if key.fileobj is stdin:
                            try:
                                pending = pending[os.write(key.fd, pending):]
                            except BlockingIOError:
                                continue
                            except BrokenPipeError:  # it exited without reading everything: its answer says why
                                pending = b""
                            if not pending:
                                sel.unregister(stdin)
                                stdin.close()
                            continue
                        chunk = os.read(key.fd, 1 << 16)
                        if not chunk:
                            sel.unregister(key.fileobj)
                            reading.discard(key.fd)
                        elif len(out[key.fd]) + len(chunk) > limit:  # a flood: keep what fits and stop it
                            out[key.fd] += chunk[: limit - len(out[key.fd])]
                            reading.clear()
                            proc.kill()
                            break
                        else:
                            out[key.fd] += chunk
            if proc.poll() is None:
                proc.wait(max(deadline - time.monotonic(), 0.001))
        except subprocess.TimeoutExpired:
            raise TimeoutError(errno.ETIMEDOUT, f"did not exit within {timeout:g} s", argv[0]) from None
        finally:
            if proc.poll() is None:  # overran, flooded, or an error on our side: never leave it running
                with contextlib.suppress(OSError):
                    proc.kill()
                proc.wait()
            for stream in (stdin, stdout, stderr):
                with contextlib.suppress(OSError):
                    stream.close()
        answer, errors = (bytes(b).decode("utf-8", "replace") for b in out.values())
        return CommandResult(tuple(argv), proc.returncode, answer, errors)

    def device_probe_as(self, path: str, uid: int, gid: int, groups: Sequence[int],
                        probe: Optional[Callable[[int], None]] = None, timeout: float = 3.0) -> Tuple[str, int]:
        """Open a device of the running kernel as another identity, and run probe(fd) on it, in a forked child.

        The child drops to groups, gid and uid (setgroups, setgid, setuid, in that order) before it opens the
        path; this process never changes identity.  Returns ("ok", 0), or the step that failed ("setuid",
        "open", "probe") and its errno.  Live only, and only root can drop to another identity.  Raises
        TimeoutError when the child does not answer in time (it is killed; see kvmapi.in_child).
        """
        from kvmcheck.core.kvmapi import in_child

        self.require_live(f"opening {path} as uid {uid}")
        self._note(path)
        real = self.resolve(path)

        def child() -> Tuple[str, int]:
            try:
                os.setgroups(list(groups))
                os.setgid(gid)
                os.setuid(uid)
            except OSError as exc:
                return "setuid", exc.errno or errno.EPERM
            try:
                fd = os.open(real, os.O_RDWR | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            except OSError as exc:
                return "open", exc.errno or errno.EIO
            try:
                if probe is not None:
                    probe(fd)
            except OSError as exc:
                return "probe", exc.errno or errno.EIO
            finally:
                os.close(fd)
            return "ok", 0

        return in_child(child, timeout)
