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
from kvmcheck.facts import consumer, fact, system  # noqa: F401 - the facts this one is computed from
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
    # The flags every CPU lists: a guest's vCPU may be scheduled on any of them (a hybrid part, or one CPU
    # whose microcode or firmware left a feature off, offers only the common set).
    sets = cpuinfo.x86_flags if cpuinfo else []
    flags = frozenset.intersection(*sets) if sets else frozenset()
    first = cpuinfo.first if cpuinfo else (lambda key: None)
    storage = tuple(sorted((m.fstype, m.source, m.target) for m in mounts.entries if m.shared_kind))
    return MigrationProfile(first("vendor_id"), _number(first("cpu family")), _number(first("model")),
                            _number(first("stepping")), first("microcode"), normalized_flags(flags), osrelease,
                            storage, nodes)


def qemu_machine_names(run: Any) -> Optional[List[str]]:
    """The machine types QEMU listed in its query-machines answer (a QemuRun of the qemu_probe fact), or None
    when it did not run or did not answer that question."""
    answers = getattr(run, "answers", None)
    returns = getattr(answers, "returns", None) or []
    if len(returns) < 4 or not isinstance(returns[3], list):
        return None
    names = {m.get("name") for m in returns[3] if isinstance(m, dict)}
    return sorted(n for n in names if isinstance(n, str) and n)


def _package_version(installed: Any, group: str, names: Tuple[str, ...] = ()) -> Optional[str]:
    """The version of the first package of group (packages.virt's "installed" evidence), or of one of names."""
    if not isinstance(installed, dict):
        return None
    for key, packages in installed.items():
        if isinstance(packages, dict) and (key == group or not group):
            for name, version in packages.items():
                if isinstance(version, str) and (not names or name in names):
                    return version
    return None


def migration_block(profile: MigrationProfile, results: Dict[str, Any],
                    machine_names: Optional[List[str]] = None) -> Dict[str, Any]:
    """The report's migration object, from the profile and the results of this run (id -> Result).

    QEMU: the version QEMU itself gave over QMP (qemu.accel, live) with the machine types it listed, else
    the QEMU package's version (offline, or QEMU did not answer; source "package", machine types null)."""
    def evidence(check_id: str) -> Dict[str, Any]:
        r = results.get(check_id)
        return r.evidence if r is not None and r.status.value != "error" and isinstance(r.evidence, dict) else {}

    accel = evidence("qemu.accel")
    installed = evidence("packages.virt").get("installed") or {}
    libvirt = _package_version(installed, "libvirt daemon") or _package_version(
        installed, "", ("libvirt-daemon", "libvirt-daemon-kvm", "libvirt-daemon-system", "libvirt"))
    qemu: Optional[Dict[str, Any]] = None
    if isinstance(accel.get("version"), str):
        qemu = {"version": accel["version"], "source": "qmp", "machine_types": machine_names}
    else:
        package = _package_version(accel.get("packages") and {"QEMU/KVM": accel["packages"]}, "QEMU/KVM") or \
            _package_version(installed, "QEMU/KVM")
        if package:
            qemu = {"version": package, "source": "package", "machine_types": None}
    guest = results.get("kvm.guest-run")
    return {
        "cpu": {"vendor": profile.vendor, "family": profile.family, "model": profile.model,
                "stepping": profile.stepping, "microcode": profile.microcode, "flags": list(profile.flags)},
        "kernel": profile.kernel,
        "qemu": qemu,
        "libvirt": {"version": libvirt} if libvirt else None,
        "shared_storage": [{"type": t, "source": s, "target": m} for t, s, m in profile.shared_storage],
        "images_dir": (evidence("storage.images-dir").get("path") or None),
        "numa_nodes": profile.numa_nodes,
        "kvm_works": None if guest is None or guest.status.value in ("skip", "error") else guest.status.value == "pass",
        "cpu_virtualizes": _decided(results.get("cpu.virt-flags")),
    }


def _decided(result: Any) -> Optional[bool]:
    """cpu.virt-flags: True when the CPU offers hardware virtualization (pass or warn), False when it failed,
    None when it could not decide.  Offline, where no guest runs, this is what says a host cannot take guests."""
    if result is None or result.status.value in ("skip", "error"):
        return None
    return result.status.value != "fail"


def report_block(facts: Any, results: Dict[str, Any]) -> Dict[str, Any]:
    """The migration block of a run whose results are done (the runner calls it within a time limit).

    QEMU's machine types are read off the probe qemu.accel already ran (the qemu_probe fact keeps its
    answer); when that check did not run QEMU (blocked, skipped, offline) nothing is started here."""
    accel = results.get("qemu.accel")
    machines = None
    if accel is not None and isinstance(accel.evidence, dict) and isinstance(accel.evidence.get("version"), str):
        machines = qemu_machine_names(facts.get("qemu_probe").get())
    return migration_block(facts.get("migration_profile"), results, machines)
