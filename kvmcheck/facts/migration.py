# SPDX-License-Identifier: GPL-2.0-or-later
"""What live migration between this host and others depends on: the report's migration block.

Gathered from facts the checks share (the CPU, the kernel, the mount table) plus two small reads (NUMA
nodes, the microcode revision is in /proc/cpuinfo); the QEMU and libvirt versions and whether /dev/kvm ran a
guest come from the results of the checks that probed them (qemu.accel, packages.virt, kvm.guest-run), so
the block never probes anything a run did not already probe.  kvmcheck.tools.migration pools hosts by it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import fact, system  # noqa: F401 - system: the facts this one is computed from
from kvmcheck.parsers.cpulist import parse_cpulist

NUMA_ONLINE = "/sys/devices/system/node/online"
IMAGES_DIR = "/var/lib/libvirt/images"  # libvirt's default pool, where storage.images-dir found no other


class MigrationProfile(Record):
    vendor: Optional[str]
    family: Optional[int]
    model: Optional[int]
    stepping: Optional[int]
    microcode: Optional[str]
    flags: Tuple[str, ...]  # normalized (kvmcheck.tools.migration.normalized_flags)
    kernel: Optional[str]
    shared_storage: Tuple[Tuple[str, str, str], ...]  # (type, source, mount point)
    numa_nodes: Optional[int]


def _number(text: Optional[str]) -> Optional[int]:
    try:
        return int(text, 0) if text is not None else None
    except ValueError:
        return None


@fact(reads=(NUMA_ONLINE,))
def migration_profile(host, cpuinfo, osrelease, mounts) -> MigrationProfile:
    from kvmcheck.tools.migration import normalized_flags

    try:
        online = host.first_line(NUMA_ONLINE)
        nodes = len(parse_cpulist(online)) if online else None
    except (OSError, ValueError):  # unreadable, or not a node list: the layout is unknown
        nodes = None
    flags = cpuinfo.x86_flags[0] if cpuinfo and cpuinfo.x86_flags else frozenset()
    first = cpuinfo.first if cpuinfo else (lambda key: None)
    storage = tuple(sorted((m.fstype, m.source, m.target) for m in mounts.entries if m.shared_kind))
    return MigrationProfile(first("vendor_id"), _number(first("cpu family")), _number(first("model")),
                            _number(first("stepping")), first("microcode"), normalized_flags(flags), osrelease,
                            storage, nodes)


def migration_block(profile: MigrationProfile, results: Dict[str, Any]) -> Dict[str, Any]:
    """The report's migration object, from the profile and the results of this run (id -> Result)."""
    def evidence(check_id: str) -> Dict[str, Any]:
        r = results.get(check_id)
        return r.evidence if r is not None and r.status.value != "error" else {}

    accel = evidence("qemu.accel")
    installed = evidence("packages.virt").get("installed") or {}
    libvirt = next((v for group in installed.values() if isinstance(group, dict)
                    for name, v in group.items() if name in ("libvirt-daemon", "libvirt-daemon-kvm", "libvirt")), None)
    machines = accel.get("machine_names")
    guest = results.get("kvm.guest-run")
    return {
        "cpu": {"vendor": profile.vendor, "family": profile.family, "model": profile.model,
                "stepping": profile.stepping, "microcode": profile.microcode, "flags": list(profile.flags)},
        "kernel": profile.kernel,
        "qemu": {"version": accel.get("version"), "machine_types": list(machines) if isinstance(machines, list)
                 else None} if accel.get("version") else None,
        "libvirt": {"version": libvirt} if libvirt else None,
        "shared_storage": [{"type": t, "source": s, "target": m} for t, s, m in profile.shared_storage],
        "images_dir": (evidence("storage.images-dir").get("path") or None),
        "numa_nodes": profile.numa_nodes,
        "kvm_works": None if guest is None or guest.status.value in ("skip", "error") else guest.status.value == "pass",
    }
