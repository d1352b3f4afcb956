# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel release."""
from __future__ import annotations

from kvmcheck.context import Context
from kvmcheck.model import Outcome
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.kernel_version import parse_kernel_release, parse_min_version
from kvmcheck.registry import check


@check("kernel.version", "Kernel version", reads=("/proc/sys/kernel/osrelease", "/lib/modules/*"))
def kernel_version(ctx: Context) -> Outcome:
    """The running kernel is at least the configured minimum (default 2.6.20, the first with KVM).

    What: the release from the root's /proc/sys/kernel/osrelease (never the
    kvmcheck process's own uname when --root is given); for an offline root
    without /proc, the newest kernel installed under /lib/modules.

    Why: older kernels lack KVM or the features later checks rely on.

    Fix: update the kernel package and reboot into it.
    """
    minimum = parse_min_version(ctx.settings.min_kernel)
    min_text = ".".join(map(str, minimum))
    release = ctx.osrelease()
    source = "/proc/sys/kernel/osrelease"
    if release is None:
        installed = [p.rsplit("/", 1)[-1] for p in ctx.host.glob("/lib/modules/*") if ctx.host.is_dir(p)]
        parsed = []
        for rel in installed:
            try:
                parsed.append(parse_kernel_release(rel))
            except ParseError:
                continue
        if not parsed:
            return Outcome.skipped("no kernel release in this root",
                                   "Neither /proc/sys/kernel/osrelease nor /lib/modules/<release> is present.")
        newest = max(parsed, key=lambda k: k.version)
        release, source = newest.release, f"newest of /lib/modules ({len(parsed)} installed)"
    try:
        kv = parse_kernel_release(release)
    except ParseError as exc:
        return Outcome.failed(f"unparsable kernel release {release[:60]!r}", str(exc),
                              "Check /proc/sys/kernel/osrelease; a custom kernel should keep the "
                              "MAJOR.MINOR.PATCH prefix.", release=release[:200], source=source)
    evidence = {"release": kv.release, "version": str(kv), "minimum": min_text, "source": source}
    if kv.version < minimum:
        return Outcome.failed(f"kernel {kv} is older than {min_text}",
                              f"The kernel {kv.release} ({source}) predates the required {min_text}.",
                              "Install a current kernel from the distribution and reboot into it.", **evidence)
    return Outcome.passed(f"{kv.release} (>= {min_text})", **evidence)
