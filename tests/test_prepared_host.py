# SPDX-License-Identifier: GPL-2.0-or-later
"""A well prepared RHEL 9 KVM host (captured root) gets no fail and no error from any check in the project.

tests/hosts/prepared-intel-host: Intel with VT-x, kvm + kvm_intel loaded, /dev/kvm, tun and vhost-net,
IOMMU on, cgroup v2, no CPU vulnerability left open, enough memory, libvirt (modular) installed with the
default network autostarted, a bridge with a port, NFS shared storage under the images directory.
"""
from __future__ import annotations

import kvmcheck
from kvmcheck.core.registry import load_checks


def test_every_check_in_the_project_is_happy_on_a_prepared_host(host_root):
    report = kvmcheck.run(str(host_root("prepared-intel-host")))
    checks, _ = load_checks()
    assert [r.id for r in report.checks] == [c.id for c in checks]  # every registered check ran
    bad = [(r.id, r.status.value, r.summary) for r in report.checks if r.status.value in ("fail", "error")]
    assert bad == []
    # Only the probes of the running kernel and its programs (QEMU, the libvirt daemon) may skip on a captured root.
    skipped = sorted(r.id for r in report.checks if r.status.value == "skip")
    assert skipped == ["kvm.acceleration", "kvm.guest-run", "libvirt.daemon", "qemu.accel"], [(r.id, r.summary) for r in report.checks
                                                             if r.status.value == "skip"]
    assert report.verdict == "ready"
