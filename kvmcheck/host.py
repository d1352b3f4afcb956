# SPDX-License-Identifier: GPL-2.0-or-later
"""The one seam between kvmcheck and the machine it inspects.

Every file read, directory listing, device probe and command goes through a
:class:`Host`, rooted at ``/`` (the live host) or at ``--root`` (a Kickstart
target, a captured tree, a test fixture).  Paths are resolved component by
component inside the root, absolute symlinks included, so nothing can lead a
read out of the root.  Missing, permission denied and "not a regular file" stay
distinct exceptions, because they call for different advice.

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
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

MAX_SYMLINK_HOPS = 40  # the kernel's own limit (MAXSYMLINKS)
DEFAULT_READ_LIMIT = 8 << 20  # /proc/cpuinfo of a 1,000-CPU host is about 1.5 MiB


class OfflineError(RuntimeError):
    """A live-kernel probe was asked for while inspecting an offline root."""


class NotRegularFileError(OSError):
    """A FIFO, socket or device sits where a text file was expected."""


class Node(NamedTuple):
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


class StatVfs(NamedTuple):
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


class CommandResult(NamedTuple):
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
    def __init__(self, root: str = "/") -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise FileNotFoundError(errno.ENOENT, "root directory does not exist", root)
        self.root = real
        self.live = real == "/"
        self.reads: List[str] = []  # every path asked for, in order: the run's evidence trail
        self._memo: Dict[str, object] = {}

    # -- path resolution -------------------------------------------------
    def resolve(self, path: str, visit: Optional[Callable[[str, Optional[str]], bool]] = None) -> str:
        """Map a host path to a real path under the root, never outside it.

        Symlinks are followed by hand: an absolute target restarts at the
        root, and ``..`` stops at the root, the way chroot(2) would see it.
        visit(host_path, link_target_or_None) is called for each existing
        component before it is used; returning False stops with
        PermissionError (the snapshot uses it to refuse and record paths).
        """
        pending = [c for c in reversed(path.split("/")) if c]
        parts: List[str] = []
        hops = 0
        while pending:
            name = pending.pop()
            if name == ".":
                continue
            if name == "..":
                if parts:
                    parts.pop()
                continue
            candidate = os.path.join(self.root, *parts, name)
            try:
                st = os.lstat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                # The rest cannot exist; keep the literal path for the error.
                parts.append(name)
                parts.extend(reversed(pending))
                break
            except OSError as exc:  # EACCES on a directory above, ENAMETOOLONG
                raise _named(exc, path) from None
            target = os.readlink(candidate) if stat.S_ISLNK(st.st_mode) else None
            if visit is not None and not visit("/" + "/".join(parts + [name]), target):
                raise PermissionError(errno.EACCES, "refused", "/" + "/".join(parts + [name]))
            if target is not None:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                if target.startswith("/"):
                    parts = []
                pending.extend(c for c in reversed(target.split("/")) if c)
                continue
            parts.append(name)
        return os.path.join(self.root, *parts)

    def _note(self, path: str) -> None:
        if path not in self.reads:
            self.reads.append(path)

    # -- files -------------------------------------------------------------
    def read_bytes(self, path: str, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """Read a regular file's bytes (at most limit).

        Raises FileNotFoundError, PermissionError, IsADirectoryError,
        NotRegularFileError or another OSError; never blocks on a FIFO.
        """
        self._note(path)
        real = self.resolve(path)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, flags)
        except OSError as exc:
            raise _named(exc, path) from None
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            if not stat.S_ISREG(mode):
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

    def node(self, path: str) -> Optional[Node]:
        """The node at path after following links inside the root; a dangling link is kind "link"; None if absent."""
        self._note(path)
        real = self.resolve(path)
        try:
            return _node(os.stat(real))
        except (FileNotFoundError, NotADirectoryError):
            try:
                return _node(os.lstat(real))
            except (FileNotFoundError, NotADirectoryError):
                return None

    def stat(self, path: str) -> Optional[os.stat_result]:
        """stat() of the resolved path, or None when it does not exist."""
        self._note(path)
        real = self.resolve(path)
        try:
            return os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _named(exc, path) from None

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def is_dir(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def listdir(self, path: str) -> List[str]:
        """Sorted entries of a directory; [] when it is missing."""
        self._note(path)
        real = self.resolve(path)
        try:
            return sorted(os.listdir(real))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _named(exc, path) from None

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
            os.lstat(self.resolve(path))
            return True
        except OSError:
            return False

    def access(self, path: str, mode: str = "r") -> bool:
        """Whether the invoking user may use the path: mode is a mix of "r", "w", "x"."""
        self._note(path)
        bits = (os.R_OK if "r" in mode else 0) | (os.W_OK if "w" in mode else 0) | (os.X_OK if "x" in mode else 0)
        return os.access(self.resolve(path), bits)

    # -- live-only probes ------------------------------------------------------
    def require_live(self, what: str) -> None:
        if not self.live:
            raise OfflineError(f"{what} needs the running kernel; the root is {self.root}")

    def open_device(self, path: str, flags: int = os.O_RDWR) -> int:
        """Open a character device of the running kernel; the caller closes the fd."""
        self.require_live(f"opening {path}")
        self._note(path)
        real = self.resolve(path)
        st = os.stat(real)
        if not stat.S_ISCHR(st.st_mode):
            raise NotRegularFileError(errno.ENODEV, "not a character device", path)
        return os.open(real, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))

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

    def run(self, argv: Sequence[str], timeout: float = 5.0, offline_ok: bool = False) -> CommandResult:
        """Run a command as an argv list, no shell, C locale, bounded in time.

        Live only, unless offline_ok: for tools that take the root themselves
        (``rpm --root DIR``), where the caller passes self.root in argv.
        Raises FileNotFoundError when the program is not installed and
        TimeoutError when it overruns (the child is killed).
        """
        if not offline_ok:
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
                self._note(path)
                children[path] = self._fork_statvfs(path)
            return self._collect_statvfs(children, timeout)
        finally:
            for _, fd in children.values():
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _fork_statvfs(self, path: str) -> Tuple[int, int]:
        """Fork a child that resolves path inside the root and writes its statvfs to a pipe.

        A fork, not a new interpreter: about 1 ms instead of 50.  The child runs
        only this resolution (lstat/readlink), statvfs and one write, then
        os._exit: it takes no lock that another thread of kvmcheck could have
        held at the fork (no logging, no buffered stdio, no import), which is
        what makes fork in a threaded process safe here.  Python >= 3.12 warns
        about any fork of a threaded process; the warning is silenced for this
        one call, as the child is known to be that small.
        """
        import warnings

        read_fd, write_fd = os.pipe()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:  # the child: never returns
            code = 0
            try:
                # Hold no descriptor of the parent's: a child stuck on a hung mount that kept stdout
                # open would hang whoever reads kvmcheck's output (a pipe, ssh, Ansible) after it exits.
                os.closerange(0, write_fd)
                os.closerange(write_fd + 1, _max_fd())
                os.setsid()  # out of the terminal's process group, as a daemon-like helper
                try:
                    # Resolving lstat()s every component, the mount point among them: that too may hang.
                    s = os.statvfs(self.resolve(path))
                    line = f"ok {s.f_frsize} {s.f_blocks} {s.f_bavail} {s.f_files} {s.f_favail} {s.f_flag}"
                except (FileNotFoundError, NotADirectoryError):
                    line = "missing"
                except OSError as exc:
                    line = f"error {exc.errno or errno.EIO} {exc.strerror or exc}"
                os.write(write_fd, line.encode("utf-8", "replace")[:4096])
            except BaseException:  # noqa: B902 - nothing may escape into the parent's code
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        return pid, read_fd

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
    def xattr(self, path: str, name: str) -> Optional[bytes]:
        """An extended attribute of the node at path (system.posix_acl_access, ...); None when it has none.

        Offline-safe: getxattr on the resolved path, never following a last symlink and never opening
        the node, so a device of an offline root is not touched.  A file system without xattrs
        (ENOTSUP) has none; a missing path is None too; other errors raise.
        """
        self._note(path)
        real = self.resolve(path)
        try:
            return os.getxattr(real, name, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
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
        from .kvmapi import in_child

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
