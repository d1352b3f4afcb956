# SPDX-License-Identifier: GPL-2.0-or-later
"""Built-in profiles: TOML configuration files shipped with kvmcheck (see kvmcheck.core.config)."""
