# SPDX-License-Identifier: GPL-2.0-or-later
"""Every command's exit status, in a module of its own: the command line needs it to start (and --help to
print), and importing kvmcheck.core.model for it would build the report classes first (~4 ms, a tenth of
what kvmcheck adds to typer's start-up).  kvmcheck.core.model re-exports it."""
from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Every command's exit status (check, fleet, diff, snapshot, the Ansible module's rc)."""

    READY = 0  # check: ready; fleet/diff/snapshot: done, nothing to report
    NOT_READY = 1  # check: not ready; fleet: some host not ready; diff: something regressed
    USAGE = 2  # a usage or configuration error: nothing was judged
    UNKNOWN = 3  # check: no evidence for a verdict; with -f nagios also every usage error and crash
