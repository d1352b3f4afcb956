# SPDX-License-Identifier: GPL-2.0-or-later
"""Live-migration pools (kvmcheck.tools.migration) on real CPUs: the x86 machines of the lscpu corpus and the
captured roots, gathered through the same fact a report uses."""
from __future__ import annotations

import pytest

from kvmcheck.core.host import Host
from kvmcheck.facts import Facts
from kvmcheck.facts.migration import MigrationProfile  # noqa: F401 - registers migration_profile
from kvmcheck.tools.cpu_models import BY_NAME, MODELS, newest_model
from kvmcheck.tools.migration import (MigrationHost, explain, newest_machine_types, normalized_flags, pools,
                                      version_key)

from conftest import CORPUS, HOSTS, needs_corpus

TIGER_LAKE = "x86_64-64cpu-linux6.2"  # 11th Gen Core i7-1165G7
WESTMERE = "x86_64-dell_e4310"  # Core i5 M 560
EPYC = "x86_64-epyc_7451"  # EPYC 7451 (Zen 1)


def machine(dump: str, name: str, qemu="8.2.2", machines=("pc-q35-8.2", "pc-q35-7.2", "pc-i440fx-8.2"),
            storage=(("nas:/vm", "/var/lib/libvirt/images"),), kvm_works=True) -> MigrationHost:
    root = CORPUS / dump if (CORPUS / dump).is_dir() else HOSTS / dump
    profile = Facts(Host(str(root))).get("migration_profile")
    return MigrationHost(name, "x86_64", profile.vendor, frozenset(profile.flags), qemu, frozenset(machines),
                         "10.0.0", frozenset(storage), kvm_works)


@needs_corpus
def test_two_hosts_of_one_generation_share_a_pool_with_every_flag():
    a, b = machine(TIGER_LAKE, "tl-1"), machine(TIGER_LAKE, "tl-2")
    (pool,), outside = pools([a, b])
    assert (pool.vendor, pool.hosts, outside) == ("GenuineIntel", ("tl-1", "tl-2"), [])
    assert pool.baseline == a.flags and pool.costs == ()
    assert pool.model == "Skylake-Client-noTSX-IBRS"  # Tiger Lake client: no la57 nor wbnoinvd for Icelake-Server
    assert pool.storage == {("nas:/vm", "/var/lib/libvirt/images")}


@needs_corpus
def test_an_older_intel_host_lowers_the_baseline_and_names_the_flags_it_removes():
    hosts = [machine(TIGER_LAKE, "tl-1"), machine(TIGER_LAKE, "tl-2"), machine(WESTMERE, "old", qemu="6.2.0",
                                                                                machines=("pc-q35-6.2",))]
    (pool,), _ = pools(hosts)
    assert pool.model == "Westmere"
    (cost,) = pool.costs
    assert cost.host == "old" and cost.older_qemu == "6.2.0"
    assert {"avx", "avx2", "xsave"} <= set(cost.flags) and "aes" not in cost.flags  # Westmere has AES-NI
    assert set(cost.flags) == set(hosts[0].flags - hosts[2].flags)
    assert pool.machine_types == frozenset()  # no machine type every QEMU offers
    assert pool.generations == (("Westmere", ("old",)), ("Skylake-Client-noTSX-IBRS", ("tl-1", "tl-2")))


@needs_corpus
def test_an_amd_host_is_in_a_pool_of_its_own():
    found, outside = pools([machine(TIGER_LAKE, "tl-1"), machine(EPYC, "epyc"), machine(WESTMERE, "old")])
    assert [(p.vendor, p.hosts, p.model) for p in found] == [
        ("GenuineIntel", ("old", "tl-1"), "Westmere"), ("AuthenticAMD", ("epyc",), "EPYC")]
    assert outside == []


def test_hosts_outside_every_pool_say_why():
    arm = MigrationHost("arm", "aarch64", "ARM", frozenset({"fp"}), None, None, None, frozenset(), True)
    broken = machine("prepared-intel-host", "broken", kvm_works=False)
    blank = MigrationHost("blank", "x86_64", None, frozenset(), None, None, None, frozenset(), None)
    found, outside = pools([arm, broken, blank])
    assert found == []
    assert [(o.host, o.reason.split(":")[0].split(" (")[0]) for o in outside] == [
        ("arm", "pools are computed for x86 hosts"), ("blank", "its report has no CPU flags"),
        ("broken", "/dev/kvm did not run a guest")]


@needs_corpus
def test_explain_both_cpu_modes():
    new, old = machine(TIGER_LAKE, "tl-1"), machine(WESTMERE, "old")
    (pool,), _ = pools([new, old])
    host_model, baseline = explain(new, old, pool)
    assert (host_model.mode, host_model.possible) == ("host-model", False)
    assert {"avx", "avx2"} <= set(host_model.missing_flags)
    assert (baseline.mode, baseline.possible, baseline.model, baseline.missing_flags) == ("baseline", True,
                                                                                          "Westmere", ())
    back_host_model, _ = explain(old, new, pool)
    assert back_host_model.possible and back_host_model.missing_flags == ()


@needs_corpus
def test_explain_names_machine_type_storage_and_vendor():
    new = machine(TIGER_LAKE, "tl-1", machines=("pc-q35-8.2", "pc-q35-7.2"))
    old = machine(TIGER_LAKE, "tl-2", machines=("pc-q35-7.2",), storage=())
    host_model, baseline = explain(new, old, pools([new, old])[0][0])
    assert host_model.machine_types == ("pc-q35-8.2",) and not host_model.possible
    assert host_model.storage == (("nas:/vm", "/var/lib/libvirt/images"),)
    amd = machine(EPYC, "epyc")
    host_model, baseline = explain(new, amd, None)
    assert not host_model.possible and "different CPU vendors" in host_model.blockers[0]
    assert not baseline.possible and baseline.model == ""


def test_normalized_flags_keep_what_guests_see_and_drop_the_host_only():
    flags = {"sse2", "avx512f", "amx_tile", "hypervisor", "constant_tsc", "vmx", "ept", "ibrs", "rep_good", "aes"}
    assert normalized_flags(flags) == ("aes", "amx_tile", "avx512f", "sse2")


def test_named_models_grow_within_a_vendor():
    """Each model of a vendor needs no fewer flags than the one before it (the table is oldest first)."""
    for vendor in ("GenuineIntel", "AuthenticAMD"):
        models = [flags for _, v, flags in MODELS if v == vendor]
        assert all(len(a) <= len(b) for a, b in zip(models, models[1:])), vendor
    assert newest_model("GenuineIntel", BY_NAME["Haswell-noTSX"]) == "Haswell-noTSX"
    assert newest_model("GenuineIntel", frozenset()) == ""


@pytest.mark.parametrize("text, key", [("7.2.22", (7, 2, 22)), ("1:7.2+dfsg-7+deb12u18", (7, 2)),
                                       ("8.2.0-11.el9_4", (8, 2, 0)), (None, ()), ("junk", ())])
def test_version_key(text, key):
    assert version_key(text) == key


def test_newest_machine_types():
    assert newest_machine_types(frozenset({"pc-q35-7.2", "pc-q35-10.1", "pc-i440fx-7.2", "none", "microvm"})) == {
        "pc-q35-10.1", "pc-i440fx-7.2"}
