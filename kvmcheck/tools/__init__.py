# SPDX-License-Identifier: GPL-2.0-or-later
"""The tools around a run: fleet aggregation, drift between reports, snapshots, the zipapp and the man page."""
