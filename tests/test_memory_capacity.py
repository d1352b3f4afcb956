# SPDX-License-Identifier: GPL-2.0-or-later
"""memory.ksm, memory.hugepages, capacity.resources, paravirt.virtio and kernel.modules-blacklist on captured roots,
their parsers on odd inputs, and one live run checked against what the test reads itself."""
from __future__ import annotations

import os
import re

import pytest

import kvmcheck
from kvmcheck.checks.capacity import capacity_resources
from kvmcheck.facts.context import Context, Settings
from kvmcheck.core.host import Host
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.cmdline import parse_cmdline
from kvmcheck.parsers.cpulist import format_cpulist, parse_cpulist
from kvmcheck.parsers.kconfig import parse_kconfig
from kvmcheck.parsers.meminfo import parse_meminfo

from conftest import CORPUS

MINE = ["kernel.modules-blacklist", "memory.ksm", "memory.hugepages", "capacity.resources", "paravirt.virtio"]


def row(blacklist, ksm, huge, cap, virtio):
    return dict(zip(MINE, (blacklist, ksm, huge, cap, virtio)))


EXPECTED = {
    # KSM running (ksm + ksmtuned enabled), THP madvise; kvm_intel.nested=1 and blacklists of other modules on
    # the command line are not KVM blacklists.
    "mem-ksm-running": row("pass", "pass", "pass", "pass", "skip"),
    # KSM stopped, THP never without a pool: warn; a CIS file with 'install kvm_intel /bin/false': fail.
    "mem-ksm-off": row("fail", "pass", "warn", "pass", "skip"),
    # No KSM in the kernel (sysfs present): pass with a note; THP never with a 1 GiB pool: pass;
    # 'blacklist kvm_amd' on an Intel host: noted only.
    "mem-1g-pool": row("pass", "pass", "pass", "pass", "skip"),
    "mem-no-sysfs": row("skip", "skip", "skip", "skip", "skip"),
    "cap-plenty": row("skip", "pass", "pass", "pass", "skip"),
    "cap-low-memory": row("skip", "skip", "skip", "fail", "skip"),
    "cap-low-available": row("skip", "skip", "skip", "warn", "skip"),
    # One CPU online: warn; modprobe.blacklist=vhost_net,tun on the command line: warn.
    "cap-one-cpu": row("warn", "skip", "skip", "warn", "skip"),
    # lscpu corpus sparc64: online 6-7,10-11,14-15; a meminfo without MemAvailable.
    "cap-sparc64": row("skip", "skip", "skip", "pass", "skip"),
    "cap-no-online": row("skip", "skip", "skip", "pass", "skip"),
    # modules.dep + modules.builtin of the running kernel; module_blacklist=kvm_amd on Intel: noted only.
    "virtio-modules-dep": row("pass", "skip", "skip", "skip", "pass"),
    # Only /boot/config-RELEASE, on a host that is itself a QEMU guest; module_blacklist=kvm: fail.
    "virtio-config-only": row("fail", "skip", "skip", "skip", "pass"),
    "virtio-config-no-vhost": row("skip", "skip", "skip", "skip", "warn"),
    "virtio-nothing": row("skip", "skip", "skip", "skip", "skip"),
    # Roots without modprobe.d and /proc/cmdline: kernel.modules-blacklist skips.  Existing roots: modprobe.d blocks kvm_amd on an AMD host; the prepared host is happy.
    "amd-baremetal-no-svm": row("fail", "skip", "skip", "skip", "skip"),
    "prepared-intel-host": row("pass", "pass", "pass", "pass", "pass"),
}


def run_on(root, only=MINE):
    report = kvmcheck.run(str(root), only=only)
    return {r.id: r for r in report.checks}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_exact_statuses(host_root, scenario):
    results = run_on(host_root(scenario))
    assert {i: r.status.value for i, r in results.items()} == EXPECTED[scenario], {
        i: (r.status.value, r.summary) for i, r in results.items()}
    for r in results.values():
        assert r.summary, r.id
        if r.status.value in ("fail", "warn"):
            assert r.detail and r.remediation, f"{scenario} {r.id} must explain and fix"


def test_ksm_running_reports_savings_and_services(host_root):
    ksm = run_on(host_root("mem-ksm-running"), ["memory.ksm"])["memory.ksm"]
    assert ksm.evidence["run"] == 1 and ksm.evidence["pages_sharing"] == 51200
    assert ksm.evidence["saved_bytes"] == 51200 * 4096
    assert ksm.evidence["services"] == {"ksm.service": "enabled", "ksmtuned.service": "enabled"}
    assert "running" in ksm.summary and "200 MiB" in ksm.summary
    assert "merge_across_nodes=1" in ksm.detail


def test_ksm_absent_and_stopped(host_root):
    absent = run_on(host_root("mem-1g-pool"), ["memory.ksm"])["memory.ksm"]
    assert absent.evidence["supported"] is False and "CONFIG_KSM" in absent.detail
    stopped = run_on(host_root("mem-ksm-off"), ["memory.ksm"])["memory.ksm"]
    assert stopped.summary == "KSM stopped" and stopped.evidence["services"] == {}


def test_hugepages_evidence(host_root):
    pool = run_on(host_root("mem-1g-pool"), ["memory.hugepages"])["memory.hugepages"]
    assert pool.evidence["pools"]["1G"] == {"kib": 1 << 20, "total": 16, "free": 12}
    assert pool.evidence["thp"] == "never" and pool.evidence["thp_defrag"] == "never"
    assert "1G pool 16 pages (12 free, 16.0 GiB)" in pool.summary
    never = run_on(host_root("mem-ksm-off"), ["memory.hugepages"])["memory.hugepages"]
    assert "madvise" in never.remediation
    madvise = run_on(host_root("mem-ksm-running"), ["memory.hugepages"])["memory.hugepages"]
    assert madvise.summary.startswith("THP madvise (defrag madvise)")
    assert madvise.evidence["meminfo"]["HugePages_Total"] == 0


def test_capacity_numbers(host_root):
    plenty = run_on(host_root("cap-plenty"), ["capacity.resources"])["capacity.resources"]
    ev = plenty.evidence
    assert ev["cpus_online"] == 16 and ev["mem_total"] == 64 << 30 and ev["swap_total"] == 8 << 30
    # Reserve: 10 % of 64 GiB (more than 1 GiB); (60 - 6.4) // 2 = 26 guests by memory, 8 without vCPU overcommit.
    assert ev["host_reserve"] == int(6.4 * (1 << 30))
    assert (ev["guests_fit"], ev["guests_fit_by_cpu"]) == (26, 8)
    assert "room for 26 guests of 2 vCPU/2 GiB by memory (8 without vCPU overcommit)" in plenty.summary

    sparc = run_on(host_root("cap-sparc64"), ["capacity.resources"])["capacity.resources"]
    assert sparc.evidence["cpus_online"] == 6 and sparc.evidence["online_list"] == "6-7,10-11,14-15"
    assert sparc.evidence["mem_available_estimated"] is True
    assert "(6-7,10-11,14-15)" in sparc.summary

    low = run_on(host_root("cap-low-memory"), ["capacity.resources"])["capacity.resources"]
    assert "only 1.5 GiB of memory (minimum 2.0 GiB)" in low.summary
    busy = run_on(host_root("cap-low-available"), ["capacity.resources"])["capacity.resources"]
    assert busy.evidence["guests_fit"] == 0 and "1.5 GiB available" in busy.detail
    one = run_on(host_root("cap-one-cpu"), ["capacity.resources"])["capacity.resources"]
    assert "Only 1 CPU thread online (minimum 2)" in one.detail
    fallback = run_on(host_root("cap-no-online"), ["capacity.resources"])["capacity.resources"]
    assert fallback.evidence["cpus_online"] == 2 and fallback.evidence["cpu_source"].startswith("/proc/cpuinfo")


def test_capacity_thresholds_come_from_settings(host_root):
    settings = Settings()
    settings.guest_memory_gib = 16  # type: ignore[attr-defined]
    settings.guest_vcpus = 4  # type: ignore[attr-defined]
    settings.min_host_memory_gib = 128  # type: ignore[attr-defined]
    root = str(host_root("cap-plenty"))
    out = capacity_resources(Context(Host(root), settings))
    assert out.status.value == "fail" and out.evidence["guest"] == {"vcpus": 4, "memory": 16 << 30}
    settings.min_host_memory_gib = 2  # type: ignore[attr-defined]
    out = capacity_resources(Context(Host(root), settings))
    assert (out.status.value, out.evidence["guests_fit"]) == ("pass", 3)


def test_paravirt_sources(host_root):
    dep = run_on(host_root("virtio-modules-dep"), ["paravirt.virtio"])["paravirt.virtio"]
    assert dep.evidence["vhost_net"]["modules_dep"] == ["6.1.0-18-amd64"]
    assert "vhost_vsock installed as a module (modules.dep)" in dep.summary
    assert "vhost_scsi missing" in dep.summary and dep.evidence["config"] is None
    conf = run_on(host_root("virtio-config-only"), ["paravirt.virtio"])["paravirt.virtio"]
    assert conf.evidence["config"] == "/boot/config-6.6.30-custom" and conf.evidence["host_is_guest"] is True
    assert conf.evidence["guest_options"]["CONFIG_HOTPLUG_CPU"] == "y"
    assert "lacks CONFIG_KVM_GUEST" in conf.detail and "kvm-clock" in conf.detail
    none = run_on(host_root("virtio-config-no-vhost"), ["paravirt.virtio"])["paravirt.virtio"]
    assert "CONFIG_VHOST_NET=n" in none.detail  # this kernel's config, not /boot/config-6.1.0-old


def test_blacklist_sources(host_root):
    modprobe = run_on(host_root("mem-ksm-off"), ["kernel.modules-blacklist"])["kernel.modules-blacklist"]
    assert modprobe.evidence["fatal"] == ["/etc/modprobe.d/cis-hardening.conf:3: install kvm_intel /bin/false",
                                          "/etc/modprobe.d/cis-hardening.conf:4: blacklist kvm_intel"]
    cmdline = run_on(host_root("cap-one-cpu"), ["kernel.modules-blacklist"])["kernel.modules-blacklist"]
    assert cmdline.evidence["warnings"] == ["/proc/cmdline: modprobe.blacklist=vhost_net",
                                            "/proc/cmdline: modprobe.blacklist=tun"]
    kernel = run_on(host_root("virtio-config-only"), ["kernel.modules-blacklist"])["kernel.modules-blacklist"]
    assert kernel.evidence["fatal"] == ["/proc/cmdline: module_blacklist=kvm"]
    other = run_on(host_root("virtio-modules-dep"), ["kernel.modules-blacklist"])["kernel.modules-blacklist"]
    assert other.evidence["noted"] == ["/proc/cmdline: module_blacklist=kvm_amd (not this CPU's module)"]
    params = run_on(host_root("mem-ksm-running"), ["kernel.modules-blacklist"])["kernel.modules-blacklist"]
    assert params.evidence["blocked_by"] == []  # kvm_intel.nested=1, rd.driver.blacklist=nouveau


# --- parsers ---------------------------------------------------------------------------------------------------
def test_meminfo_parser_odd_inputs():
    m = parse_meminfo("MemTotal:  1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 20 kB\ngarbage\n"
                      "Weird: x kB\nHugePages_Total:  4\nHugepagesize: 2048 kB\nNeg: -5 kB\nOdd: 1 parsecs\n")
    assert m.total == 1000 * 1024 and m.available == 130 * 1024 and m.available_estimated
    assert m.get("HugePages_Total") == 4 and m.get("Hugepagesize") == 2 << 20
    assert m.get("Weird") is None and m.get("Neg") is None and m.get("Odd") is None
    assert (m.swap_total, m.swap_free) == (0, 0)
    m = parse_meminfo("MemTotal: 8 kB\nMemAvailable: 4 kB\n")
    assert m.available == 4096 and not m.available_estimated
    for bad in ("", "MemFree: 1 kB", "\x00\x01binary"):
        with pytest.raises(ParseError):
            parse_meminfo(bad)


@pytest.mark.parametrize("text, cpus", [
    ("0-3,8-11\n", (0, 1, 2, 3, 8, 9, 10, 11)),
    ("6-7,10-11,14-15", (6, 7, 10, 11, 14, 15)),
    ("1-5,8-19", tuple(range(1, 6)) + tuple(range(8, 20))),
    ("0", (0,)), ("\n", ()), ("", ()), (" 0-1 , 3 ,\n", (0, 1, 3)), ("3,1,1-2", (1, 2, 3)),
    ("0-15:2/4", (0, 1, 4, 5, 8, 9, 12, 13)), ("5-5", (5,)),
])
def test_cpulist(text, cpus):
    assert parse_cpulist(text) == cpus
    assert parse_cpulist(format_cpulist(cpus)) == cpus


@pytest.mark.parametrize("bad", ["3-1", "a", "0-", "-1", "1--2", "0-99999999", "0-7:0/4", "0-7:5/4", "0x3"])
def test_cpulist_rejects(bad):
    with pytest.raises(ParseError):
        parse_cpulist(bad)


def test_cpulist_whole_corpus():
    files = sorted(CORPUS.glob("*/sys/devices/system/cpu/online"))
    if not files:
        pytest.skip(f"no lscpu corpus at {CORPUS}")
    for f in files:
        text = f.read_text()
        cpus = parse_cpulist(text)
        assert cpus and format_cpulist(cpus) == text.strip(), f


def test_format_cpulist():
    assert format_cpulist([]) == "" and format_cpulist([0, 1, 2, 3, 8]) == "0-3,8" and format_cpulist([7]) == "7"


def test_kconfig_parser():
    k = parse_kconfig('#\n# Linux/x86 6.6 Kernel Configuration\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n'
                      'CONFIG_S="gcc \\"12\\""\nCONFIG_N=0x10\n  CONFIG_W=y  \nCONFIG_A=n\njunk=y\n# CONFIG_D is set\n')
    assert k.options == {"CONFIG_A": "n", "CONFIG_B": "m", "CONFIG_C": "n", "CONFIG_S": 'gcc "12"',
                         "CONFIG_N": "0x10", "CONFIG_W": "y"}
    assert k.get("B") == "m" and k.get("CONFIG_B") == "m" and k.get("X") is None
    assert (k.enabled("B"), k.enabled("C"), k.enabled("X")) == (True, False, None)
    assert not parse_kconfig("") and not parse_kconfig("\x1f\x8b\x08 gzip bytes")


def test_cmdline_parser():
    c = parse_cmdline('BOOT_IMAGE=/vmlinuz ro quiet modprobe.blacklist=a,b kvm-intel.nested=1 '
                      'modprobe.blacklist=c, dyndbg="file x.c +p" "quoted=v w" -- single init=arg\n')
    assert c.list_values("modprobe.blacklist") == ["a", "b", "c"]
    assert c.get("kvm_intel.nested") == "1" and c.has("quiet") and c.get("quiet") is None
    assert c.get("dyndbg") == "file x.c +p" and c.get("quoted") == "v w"
    assert c.init_args == ("single", "init=arg") and not c.has("init")
    assert parse_cmdline("a\0b=1\0").get("b") == "1"
    assert parse_cmdline("").params == ()
    assert parse_cmdline("=x ro").params == (("ro", None),)


# --- live --------------------------------------------------------------------------------------------------------
def test_live_capacity_matches_proc():
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("no /proc/meminfo")
    with open("/proc/meminfo") as f:
        total = int(re.search(r"^MemTotal:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024
    result = run_on("/", ["capacity.resources", "memory.ksm", "memory.hugepages", "paravirt.virtio"])
    cap = result["capacity.resources"]
    assert cap.status.value in ("pass", "warn", "fail") and cap.evidence["mem_total"] == total
    assert cap.evidence["live"] is True
    if os.path.exists("/sys/devices/system/cpu/online"):
        with open("/sys/devices/system/cpu/online") as f:
            assert cap.evidence["cpus_online"] == len(parse_cpulist(f.read()))
    ksm = result["memory.ksm"]
    if os.path.isdir("/sys/kernel/mm/ksm"):
        with open("/sys/kernel/mm/ksm/run") as f:
            assert (ksm.status.value, ksm.evidence["run"]) == ("pass", int(f.read()))
    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    if os.path.exists(thp):
        with open(thp) as f:
            assert result["memory.hugepages"].evidence["thp"] == re.search(r"\[(\w+)\]", f.read()).group(1)
    if os.path.isdir("/sys/module/vhost_net"):
        assert result["paravirt.virtio"].status.value == "pass"
    assert result["paravirt.virtio"].status.value in ("pass", "warn", "skip")
