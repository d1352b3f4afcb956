# SPDX-License-Identifier: GPL-2.0-or-later
"""Every QEMU-driver line of libvirt's virt-host-validate has a kvmcheck counterpart.

The mapping is also README's "Coming from virt-host-validate" table.  With virt-host-validate
installed (Debian libvirt-clients, see .ci/apt-packages) the test runs it on this machine and
fails on any line it cannot map, so a new libvirt check cannot slip by unnoticed.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import kvmcheck
from kvmcheck.core.registry import load_checks

# virt-host-validate "Checking ..." text (quotes and /dev paths as 9.0 and 11.x print them) -> kvmcheck ids
VHV_TO_KVMCHECK = [
    (r"for hardware virtualization", ["cpu.virt-flags", "firmware.vt-enabled", "kvm.acceleration"]),
    (r"if device '?/dev/kvm'? exists", ["kvm.device", "kvm.modules", "kvm.guest-run"]),
    (r"if device '?/dev/kvm'? is accessible", ["kvm.device", "kvm.guest-run"]),
    (r"for PowerPC KVM module loaded", ["kvm.modules"]),
    (r"if device '?/dev/vhost-net'? exists", ["network.vhost-net"]),
    (r"if device '?/dev/net/tun'? exists", ["network.tun"]),
    (r"for cgroup '\w+' controller support", ["cgroups.controllers"]),
    (r"for device assignment IOMMU support", ["iommu.enabled"]),
    (r"if IOMMU is enabled by kernel", ["iommu.enabled"]),
    (r"for secure guest support", ["secure-guest.support"]),
    (r"for AMD Secure Encrypted Virtualization", ["secure-guest.support"]),
]


def kvmcheck_ids_for(line: str):
    for pattern, ids in VHV_TO_KVMCHECK:
        if re.search(r"Checking " + pattern, line):
            return ids
    return None


def test_every_mapped_id_is_a_registered_check():
    registered = {c.id for c in load_checks()[0]}
    for _, ids in VHV_TO_KVMCHECK:
        assert set(ids) <= registered, set(ids) - registered


@pytest.mark.skipif(shutil.which("virt-host-validate") is None,
                    reason="virt-host-validate is not installed (Debian package libvirt-clients)")
def test_every_line_virt_host_validate_prints_here_has_a_counterpart():
    out = subprocess.run(["virt-host-validate", "qemu"], capture_output=True, text=True, timeout=60).stdout
    lines = [ln for ln in out.splitlines() if "Checking" in ln]
    assert lines, out
    unmapped = [ln.strip() for ln in lines if kvmcheck_ids_for(ln) is None]
    assert unmapped == []
    # And kvmcheck answers each of those ids on this same machine, none with an error.
    ids = sorted({i for ln in lines for i in kvmcheck_ids_for(ln)})
    report = kvmcheck.run("/", only=ids)
    assert {r.id for r in report.checks} == set(ids)
    assert [r.id for r in report.checks if r.status.value == "error"] == []
