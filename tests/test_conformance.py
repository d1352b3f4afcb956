# SPDX-License-Identifier: GPL-2.0-or-later
"""Every check reads only what it declares: the union of its facts' reads (kvmcheck.facts).

Each built-in check runs alone, with a fresh Host and fresh facts, on every captured root under
tests/hosts and on this machine; every path the Host was asked for must be covered by the check's
declared reads.  This is what makes `kvmcheck list` truthful and `kvmcheck snapshot` complete.
"""
from __future__ import annotations

import pytest

from kvmcheck.core.host import Host
from kvmcheck.core.registry import load_checks
from kvmcheck.core.runner import run_check
from kvmcheck.core.settings import Settings
from kvmcheck.facts import covers, gatherer, reads_of
from kvmcheck.facts.context import Context

from conftest import HOSTS, materialize

CHECKS = [c for c in load_checks()[0] if c.source.startswith("kvmcheck.checks.")]
ROOTS = sorted(p.name for p in HOSTS.iterdir() if p.is_dir())


def undeclared(root: str, label: str) -> dict:
    """{check id: [paths read but not declared]} for every built-in check run alone on root."""
    found = {}
    for c in CHECKS:
        host = Host(root, label=label)
        result = run_check(c, Context(host, Settings(check_timeout=20.0)), 30.0)
        extra = [p for p in host.reads if not covers(c.reads, p)]
        if extra:
            found[c.id] = (result.status.value, extra)
    return found


@pytest.mark.parametrize("name", ROOTS)
def test_every_check_reads_only_what_it_declares_on_captured_roots(name, tmp_path):
    root = materialize(name, tmp_path)
    assert undeclared(str(root), name) == {}


def test_every_check_reads_only_what_it_declares_on_this_machine():
    assert undeclared("/", "/") == {}


def test_the_report_header_reads_only_what_it_declares(tmp_path):
    declared = reads_of(["host_block"])
    for name in ("prepared-intel-host", "cloud-vm-dev-captured", "s390x-lpar"):
        host = Host(str(materialize(name, tmp_path / name)))
        Context(host).host_facts()
        assert [p for p in host.reads if not covers(declared, p)] == [], name


def test_a_check_declares_the_union_of_its_facts_reads():
    for c in CHECKS:
        if c.facts:
            assert set(reads_of(c.facts)) <= set(c.reads), c.id
            assert all(gatherer(f) for f in c.facts)
