# SPDX-License-Identifier: GPL-2.0-or-later
"""Kernel release strings, as in /proc/sys/kernel/osrelease or uname -r.

Real examples this must take: ``5.14.0-427.13.1.el9_4.x86_64`` (RHEL),
``6.18.44-fc-v669`` (Firecracker guest), ``2.6.18-419.el5PAE`` (RHEL 5, 32-bit
PAE), ``6.1.0-18-amd64`` and ``6.1.0-18-686-pae`` (Debian), ``4.4.0-19041-Microsoft``
(WSL 1), ``3.0`` (Linux 3.0 had only two components), ``6.8.0-rc3``.
"""
from __future__ import annotations

from typing import Optional, Tuple

from . import ParseError

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

_RELEASE = pattern(r"^(\d+)\.(\d+)(?:\.(\d+))?(.*)$")

# Suffixes that name the kernel's architecture (RPM and Debian flavours).
_ARCH_HINTS = (
    (pattern(r"[.-](x86_64|amd64)(?:[+.-]|$)"), "x86_64", 64),
    (pattern(r"[.-](aarch64|arm64)(?:[+.-]|$)"), "aarch64", 64),
    (pattern(r"[.-](ppc64le|ppc64)(?:[+.-]|$)"), "ppc64", 64),
    (pattern(r"[.-](s390x)(?:[+.-]|$)"), "s390x", 64),
    (pattern(r"[.-](i[3-6]86|686)(?:[+.-]|$)|PAE$|-pae$"), "i686", 32),
)


class KernelVersion(Record):
    release: str
    version: Tuple[int, int, int]
    extra: str

    @property
    def arch_hint(self) -> Optional[Tuple[str, int]]:
        """(arch, bits) when the release names its architecture, e.g. ``.el9.x86_64``."""
        for rx, arch, bits in _ARCH_HINTS:
            if rx.search(self.extra):
                return arch, bits
        return None

    def __str__(self) -> str:
        return ".".join(str(n) for n in self.version)


def parse_kernel_release(text: str) -> KernelVersion:
    release = text.strip()
    m = _RELEASE.match(release)
    if not m:
        raise ParseError(f"not a kernel release string: {release[:80]!r}")
    major, minor, patch, extra = m.groups()
    try:
        version = (int(major), int(minor), int(patch or 0))
    except ValueError:  # thousands of digits: int() refuses them (sys.int_info.str_digits_check_threshold)
        raise ParseError(f"version number too long in {release[:80]!r}") from None
    return KernelVersion(release, version, extra)


def parse_min_version(text: str) -> Tuple[int, int, int]:
    """A configured minimum such as ``2.6.20`` or ``5.14``."""
    return parse_kernel_release(text).version
