# SPDX-License-Identifier: GPL-2.0-or-later
"""Cause keys: checks whose summaries hold measurements give a stable key (fleet groups hosts by it), and
model.cause_key masks the numbers of the rest (issue 13 item 4)."""
from __future__ import annotations

import os

import pytest

from kvmcheck.checks.capacity import capacity_resources
from kvmcheck.checks.kernel import kernel_version
from kvmcheck.checks.storage import images_dir
from kvmcheck.facts.context import Context, Settings
from kvmcheck.core.host import Host
from kvmcheck.core.model import CAUSE_KEY_MAX, cause_key


def test_cause_key_masks_every_number():
    assert cause_key("guest code is not hardware-accelerated: 1.02e+06 instructions/s (hardware >= 1e+08)") == \
        cause_key("guest code is not hardware-accelerated: 8.04e+05 instructions/s (hardware >= 1e+08)") == \
        "guest code is not hardware-accelerated: # instructions/s (hardware >= #)"
    assert cause_key("only 3,072 MiB  free\tof 0x1f") == "only # MiB free of #"
    assert cause_key("no /dev/kvm") == "no /dev/kvm"
    assert len(cause_key("x" * 100000)) == CAUSE_KEY_MAX


def settings(**values):
    s = Settings()
    for key, value in values.items():
        setattr(s, key, value)
    return s


def test_capacity_keys(host_root):
    low = capacity_resources(Context(Host(str(host_root("cap-low-memory"))), Settings()))
    assert (low.status.value, low.cause) == ("fail", "too-little-memory")
    one = capacity_resources(Context(Host(str(host_root("cap-one-cpu"))), Settings()))
    assert one.status.value == "warn" and one.cause.split("+")[0] == "few-cpus"
    busy = capacity_resources(Context(Host(str(host_root("cap-low-available"))), Settings()))
    assert busy.status.value == "warn" and "no-guest-fits" in busy.cause.split("+")


def test_kernel_version_key(host_root):
    old = kernel_version(Context(Host(str(host_root("intel-baremetal-vmx"))), settings(min_kernel="99.0")))
    assert (old.status.value, old.cause) == ("fail", "older-than-minimum")


def test_images_dir_low_space_key(host_root):
    out = images_dir(Context(Host(str(host_root("storage-multipath"))), settings(images_min_free_gib=1e9)))
    assert (out.status.value, out.cause) == ("warn", "low-free-space")
    assert "free for guest images" in out.summary


def test_acceleration_key_live():
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("needs a usable /dev/kvm to run the timing guest")
    from kvmcheck.core.registry import load_checks

    check = next(c for c in load_checks()[0] if c.id == "kvm.acceleration")
    out = check(Context(Host("/"), Settings()))
    if out.status.value == "pass":
        pytest.skip("this host is hardware-accelerated: no failure to key")
    assert out.cause in ("not-accelerated", "inconclusive", "timing-guest-failed")
