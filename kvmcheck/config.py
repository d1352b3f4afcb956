# SPDX-License-Identifier: GPL-2.0-or-later
"""Configuration and profiles (being written: see issue 8)."""
from __future__ import annotations

from typing import List, Tuple


class ConfigError(ValueError):
    """A configuration problem: the file, the line and what was expected."""


def list_profiles() -> List[Tuple[str, str]]:
    return []
