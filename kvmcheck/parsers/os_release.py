# SPDX-License-Identifier: GPL-2.0-or-later
"""os-release(5) and the older distribution release files, as pure functions of their text.

kvmcheck reads these through its Host (so an absolute symlink in a --root target resolves inside
that root, and a FIFO is refused rather than opened) instead of handing the root to the `distro`
package, which opens root_dir/etc/os-release and /etc/*-release with open() and follows links out
of the root; parsing here also spares the 20-30 ms that importing distro costs on every run.
"""
from __future__ import annotations

from typing import Dict, Optional

from kvmcheck.parsers import pattern

# os-release(5): KEY=VALUE; keys are [A-Z0-9_]; a value may be in double or single quotes; inside
# double quotes, backslash escapes $ " \ and ` as in a shell.  Other lines (comments, garbage) are ignored.
_KEY = pattern(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ESCAPED = pattern(r'\\([$"\\`])')
MAX_VALUE = 4096  # the spec keeps values short; a hostile file must not blow up a report header


def parse_os_release(text: str) -> Dict[str, str]:
    """os-release text -> {KEY: value}; never raises (unparseable lines are skipped)."""
    out: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.match(key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            quote, value = value[0], value[1:-1]
            if quote == '"':
                value = _ESCAPED.sub(r"\1", value)
        elif value[:1] in ("'", '"'):
            continue  # an unterminated quote: systemd's parser rejects the line too
        out[key] = "".join(ch for ch in value if ch.isprintable())[:MAX_VALUE]
    return out


# IDs reported under another name: the distro package's table, which reports before 0.2 went through.
NORMALIZED_ID = {"ol": "oracle", "opensuse-leap": "opensuse"}


def os_identity(fields: Dict[str, str]) -> Optional[Dict[str, str]]:
    """The report's host.os block from os-release fields: id, name, version (VERSION_ID) and like (ID_LIKE).

    None when there is no ID: an os-release without one describes nothing (os-release(5) defaults a
    missing ID to "linux", which helps no advice)."""
    ident = fields.get("ID", "").lower()
    if not ident:
        return None
    ident = NORMALIZED_ID.get(ident, ident)
    return {"id": ident, "name": fields.get("NAME", "") or ident, "version": fields.get("VERSION_ID", ""),
            "like": fields.get("ID_LIKE", "").lower()}


# Release files of distributions older than os-release (RHEL/CentOS 6, SLES 11, Debian 6), read
# only when there is no os-release.  (file, id, name, like); the version is the first dotted number.
LEGACY_RELEASE_FILES = (
    ("/etc/centos-release", "centos", "CentOS Linux", "rhel fedora"),
    ("/etc/oracle-release", "oracle", "Oracle Linux Server", "fedora"),
    ("/etc/redhat-release", "rhel", "Red Hat Enterprise Linux", "fedora"),
    ("/etc/SuSE-release", "sles", "SUSE Linux Enterprise Server", "suse"),
    ("/etc/debian_version", "debian", "Debian GNU/Linux", ""),
)
_VERSION = pattern(r"\b(\d+(?:\.\d+)*)\b")
_DEBIAN_VERSION = pattern(r"\d+(?:\.\d+)*")


def legacy_identity(path: str, text: str) -> Optional[Dict[str, str]]:
    """One of LEGACY_RELEASE_FILES' texts -> the host.os block, or None if it does not say.

    /etc/redhat-release is also written by CentOS and Fedora ("CentOS release 6.10 (Final)",
    "Fedora release 20 (Heisenbug)"), and /etc/SuSE-release by openSUSE: the first line decides."""
    for name, ident, label, like in LEGACY_RELEASE_FILES:
        if name == path:
            break
    else:
        return None
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not first or not first.isprintable() or len(first) > 200:
        return None
    lowered = first.lower()
    # Each file says what it is in its own words; anything else there (a damaged root) names no release.
    if path in ("/etc/redhat-release", "/etc/centos-release", "/etc/oracle-release") and " release " not in lowered:
        return None
    if path == "/etc/SuSE-release" and "suse" not in lowered:
        return None
    if path == "/etc/redhat-release":
        if lowered.startswith("centos"):
            ident, label, like = "centos", "CentOS Linux", "rhel fedora"
        elif lowered.startswith("fedora"):
            ident, label, like = "fedora", "Fedora Linux", ""
    if path == "/etc/SuSE-release" and "opensuse" in lowered:
        ident, label = "opensuse", "openSUSE"
    if path == "/etc/debian_version" and not _DEBIAN_VERSION.fullmatch(first):
        return None  # "bookworm/sid" on testing: no number to report, and the id alone is not worth guessing
    found = _VERSION.search(first)
    return {"id": ident, "name": label, "version": found.group(1)[:32] if found else "", "like": like}
