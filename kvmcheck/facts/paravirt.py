# SPDX-License-Identifier: GPL-2.0-or-later
"""The host as a guest itself (nested KVM): whether it is one, and its virtio drivers in /sys/module."""
from __future__ import annotations

from typing import Tuple

from kvmcheck.facts import Later, fact
from kvmcheck.facts import system  # noqa: F401 - the facts these are computed from

# The guest side of paravirtualization, as modules (when no kernel config tells the build options).
GUEST_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "virtio_balloon", "virtio_console")


@fact(uses=("virt",))
def host_is_guest(facts) -> bool:
    """Whether this host runs under a hypervisor; False when the files that would tell cannot be read
    (nothing nested is then reported, as before: the virt fact's own checks name the unreadable file)."""
    try:
        return bool(facts.get("virt").in_guest)
    except OSError:
        return False


@fact(reads=tuple(f"/sys/module/{m}" for m in GUEST_MODULES))
def guest_modules(host) -> Later:
    """Later: the GUEST_MODULES present in /sys/module (loaded or built in), asked only for a nested host
    whose kernel config is not in the root."""
    def present() -> Tuple[str, ...]:
        return tuple(m for m in GUEST_MODULES if host.is_dir(f"/sys/module/{m}"))

    return Later(present)
