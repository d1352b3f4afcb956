# SPDX-License-Identifier: GPL-2.0-or-later
"""Built-in checks, one module per subsystem, installed as kvmcheck.checks.

Each module registers through the ``kvmcheck.checks`` entry-point group, the
same way a third-party plugin does.  A check here is a judge: its parameters
name the facts it judges (kvmcheck.facts); it never touches the Host.
"""
