# SPDX-License-Identifier: GPL-2.0-or-later
"""An example third-party kvmcheck plugin (see docs/plugins.md in kvmcheck)."""
