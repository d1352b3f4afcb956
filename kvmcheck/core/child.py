# SPDX-License-Identifier: GPL-2.0-or-later
"""Forked children that answer through a pipe and can be abandoned: the one plumbing behind the Host's
operations on network or FUSE mounts, its statvfs probes, and the guest probes (kvmapi.in_child).

A fork, not a new interpreter: about 1 ms instead of 50 on hardware (10-20 ms on this shadow-paging VM).
A child runs only kvmcheck's own small, already-imported code and ends with os._exit: it takes no lock
that another thread could have held at the fork (no logging, no buffered stdio, no import), which is what
makes forking a threaded process safe here.  Python >= 3.12 warns about any fork of a threaded process;
the warning is silenced for these calls, as each child is known to be that small.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import List, Optional, Tuple


def fork_with_pipe() -> Tuple[int, int]:
    """(pid, fd): in the child pid is 0 and fd the pipe's write end; in the parent fd is its read end."""
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
    if pid == 0:
        os.close(read_fd)
        return 0, write_fd
    os.close(write_fd)
    return pid, read_fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def collect(pid: int, fd: int, timeout: float) -> Optional[bytes]:
    """All the child writes to fd until it exits, or None after timeout: the child is then killed, and
    reaped if the kill took (one in uninterruptible sleep on a dead server cannot be waited for: init reaps
    it after kvmcheck).  fd stays open: the caller closes it."""
    import select

    deadline = time.monotonic() + timeout
    chunks: List[bytes] = []
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            reap(pid)
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # it closed the pipe by exiting
    return b"".join(chunks)


def reap(pid: int, patience: float = 0.2) -> None:
    """Wait a moment for a killed child; give up after patience seconds rather than hang the run."""
    deadline = time.monotonic() + patience
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.002)
