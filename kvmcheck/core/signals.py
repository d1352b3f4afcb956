# SPDX-License-Identifier: GPL-2.0-or-later
"""SIGTERM, SIGHUP and SIGINT: clean up, exit 128 + the signal's number, no traceback.

kvmcheck is stopped by an installer's timeout (SIGTERM), a dropped ssh session of an Ansible run (SIGHUP) or
Ctrl-C (SIGINT). The default actions of the first two kill the process without unwinding: an archive's private
directory (snapshot.open_archive) and a report's temporary (output.atomic_writer) stay behind. Python's SIGINT
raises KeyboardInterrupt, which unwinds but prints a traceback.

So each of the three raises Terminated in the main thread: every ``finally`` and ``with`` block runs (they
are what removes the temporary directory and file), then the entry point prints one line and exits 128+N.
Terminated is a BaseException, so no ``except Exception`` (a check's guard, a plugin's) swallows it. The
handler first ignores the three signals: a second Ctrl-C or the SIGTERM a supervisor sends after SIGINT must
not interrupt the cleanup.

A forked child (fleet's worker pool, a statvfs helper) inherits the handler: there it does what the default
action would (it dies of the signal), as before these handlers existed.

The console script is ``kvmcheck.core.signals:main``: it installs the handlers before importing the command line
(typer alone takes tens of milliseconds to import, and a Ctrl-C then printed a traceback). cli.main installs
them as well, for ``python -c 'from kvmcheck.cli import main; main()'`` and other callers.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, Optional

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_OWNER: Optional[int] = None  # the pid that installed the handlers


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM, SIGHUP or SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _handler(signum: int, frame: Any) -> None:
    if os.getpid() != _OWNER:  # a forked child: die of the signal, as the default action does
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)  # nothing may interrupt the unwinding that cleans up
    raise Terminated(signum)


def install() -> None:
    """Install the handlers (once per process; only the main thread can)."""
    global _OWNER
    if _OWNER == os.getpid() or threading.current_thread() is not threading.main_thread():
        return
    _OWNER = os.getpid()
    for s in SIGNALS:
        if signal.getsignal(s) is signal.SIG_IGN:
            continue  # nohup: a signal the caller chose to ignore stays ignored
        signal.signal(s, _handler)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_for(exc: Terminated) -> "None":
    """The end of a run stopped by a signal: one line on stderr, exit 128+N (what a shell reports)."""
    name = signal_name(exc.signum)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        sys.stderr.write(f"kvmcheck: stopped by {name}; temporary files removed\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    # os._exit: a check's daemon thread may be stuck on a hung mount; interpreter shutdown must not wait on it
    os._exit(128 + exc.signum)


def guarded(func: Callable[[], Any]) -> Any:
    """Run func with the handlers installed; a signal ends the process as exit_for says."""
    install()
    try:
        return func()
    except Terminated as exc:
        exit_for(exc)


def main() -> None:
    """The console script: handlers first, then import and run the command line.

    `kvmcheck --version` alone is answered here, as the command line would answer it, without importing
    typer (two thirds of the time of a version query, which inventories ask every host)."""
    if sys.argv[1:] == ["--version"]:
        from kvmcheck import __version__

        sys.stdout.write(f"kvmcheck {__version__}\n")
        sys.stdout.flush()
        return

    def run() -> None:
        from kvmcheck.cli import main as cli_main

        cli_main()

    guarded(run)
