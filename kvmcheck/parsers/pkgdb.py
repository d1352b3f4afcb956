# SPDX-License-Identifier: GPL-2.0-or-later
"""Installed packages: the dpkg status file and ``rpm -qa`` output."""
from __future__ import annotations

from typing import Dict


def parse_dpkg_status(text: str) -> Dict[str, str]:
    """Installed package name -> version from /var/lib/dpkg/status.

    Only stanzas whose Status is "install ok installed" count: removed
    packages that left their configuration behind ("deinstall ok
    config-files"), half-installed and unpacked-only ones do not.  Multi-arch
    packages (the same name for two architectures) appear once.
    """
    installed: Dict[str, str] = {}
    fields: Dict[str, str] = {}

    def flush() -> None:
        name = fields.get("package")
        if name and fields.get("status", "").split() == ["install", "ok", "installed"]:
            installed.setdefault(name, fields.get("version", ""))

    for raw in text.replace("\r\n", "\n").split("\n"):
        if not raw or raw.isspace():  # a blank line (as str.strip() sees one) ends a stanza
            if fields:
                flush()
                fields = {}
            continue
        first = raw[0]
        # Only Package, Status and Version are kept: a line whose first character cannot begin one of them
        # (another field, a continuation line starting with a space or tab) is skipped before any work:
        # a status file of 800 packages has some 20,000 lines, most of them Description and Conffiles.
        if first in "PpSsVv" or (first not in " \t" and first.isspace()):
            key, sep, value = raw.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
    flush()
    return installed


def parse_rpm_qa(text: str) -> Dict[str, str]:
    """Package name -> version from ``rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\n'``.

    Lines with only a name (``--qf '%{NAME}\\n'``) give an empty version.  When
    a name is installed more than once (kernels, multilib), the versions are
    joined with ", ".
    """
    # name -> its versions as an ordered set; re-splitting the joined string per line was quadratic
    # in the number of versions of one name.
    versions: Dict[str, Dict[str, None]] = {}
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        name, _, version = line.partition("\t") if "\t" in line else line.partition(" ")
        name, version = name.strip(), version.strip()
        seen = versions.setdefault(name, {})
        if version:
            seen.setdefault(version)
    return {name: ", ".join(seen) for name, seen in versions.items()}
