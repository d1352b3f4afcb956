# SPDX-License-Identifier: GPL-2.0-or-later
"""The facts of storage.*, memory.* and capacity.resources, and their judges called with fact records.

The judges get no root: each row hands the check function (Check.func) the records its facts would
gather and asserts the exact (status, summary) it gives.  The facts run on captured roots, and as
nobody on files it may not read: denied is never absent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import as_nobody
from kvmcheck.checks.capacity import capacity_resources
from kvmcheck.checks.memory import memory_hugepages, memory_ksm
from kvmcheck.checks.storage import images_dir, shared
from kvmcheck.core.host import Host, StatVfs
from kvmcheck.core.settings import Settings
from kvmcheck.facts import Facts, Later
from kvmcheck.facts.memory import Ksm, Meminfo, OnlineCpus, Thp
from kvmcheck.facts.storage import PoolPath, Probe, Probes, San, StorageMounts
from kvmcheck.facts.sysctl import SysctlKeys
from kvmcheck.parsers.meminfo import MemInfo
from kvmcheck.parsers.mounts import Mount

GIB = 1 << 30
ROOT = Mount("/dev/sda2", "/", "ext4", ("rw",), 1)
NFS = Mount("nas:/vm", "/mnt/vm", "nfs4", ("rw",), 2)
CIFS = Mount("//fs/vm", "/mnt/smb", "cifs", ("rw",), 3)
IMAGES = "/var/lib/libvirt/images"
XML = "/etc/libvirt/storage/default.xml"


# -- memory.ksm ---------------------------------------------------------------------------------------
def ksm_values(**values):
    base = dict.fromkeys(("run", "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
                          "merge_across_nodes", "full_scans", "sleep_millisecs", "pages_to_scan"))
    base.update(values)
    return Ksm(True, base, {})


@pytest.mark.parametrize("ksm, units, sysfs_mm, family, expected", [
    (Ksm(False, {}, {}), {}, False, "x86", ("skip", "no /sys/kernel/mm in this root")),
    (Ksm(False, {}, {}), {}, True, "x86",
     ("pass", "not in this kernel (no /sys/kernel/mm/ksm): no page merging between guests")),
    (ksm_values(run=0), {}, True, "x86", ("pass", "KSM stopped")),
    (ksm_values(run=2), {"ksm.service": "masked"}, True, "x86", ("pass", "KSM stopped (pages unmerged)")),
    (ksm_values(run=7), {}, True, "x86", ("pass", "KSM run=7")),
    (ksm_values(), {}, True, "x86", ("pass", "KSM state unreadable (/sys/kernel/mm/ksm/run)")),
    (ksm_values(run=1, pages_sharing=51200, pages_shared=100), {}, True, "x86",
     ("pass", "KSM running, 51200 pages merged into 100 (about 200 MiB saved)")),
    (ksm_values(run=1, pages_sharing=51200, pages_shared=100), {}, True, "ppc64",  # 64 KiB pages
     ("pass", "KSM running, 51200 pages merged into 100 (about 3.1 GiB saved)")),
])
def test_ksm_judge(ksm, units, sysfs_mm, family, expected):
    out = memory_ksm.func(ksm=ksm, ksm_units=units, sysfs_mm=sysfs_mm,
                          base_page_size=Later(lambda: 65536 if family == "ppc64" else 4096))
    assert (out.status.value, out.summary) == expected


def test_ksm_judge_asks_the_page_size_only_for_merged_pages():
    """The page size comes from the architecture, which an offline root may only tell by a /proc/cpuinfo
    the user cannot read: a KSM that merged nothing must not need it."""
    def unreadable():
        raise PermissionError(13, "Permission denied", "/proc/cpuinfo")

    out = memory_ksm.func(ksm=ksm_values(run=1), ksm_units={}, sysfs_mm=True, base_page_size=Later(unreadable))
    assert (out.status.value, out.summary) == ("pass", "KSM running")


def test_ksm_judge_notes_services_and_cross_node_merging():
    out = memory_ksm.func(ksm=ksm_values(run=1, merge_across_nodes=1), ksm_units={"ksm.service": "enabled"},
                          sysfs_mm=True, base_page_size=Later(lambda: 4096))
    assert out.detail.startswith("merge_across_nodes=1: ") and out.detail.endswith("Services: ksm.service enabled.")
    assert out.evidence == {"services": {"ksm.service": "enabled"}, "supported": True, "run": 1,
                            "merge_across_nodes": 1}


# -- memory.hugepages ---------------------------------------------------------------------------------
def thp(mode, defrag="madvise", present=True):
    return Thp(None if mode is None else f"[{mode}]", mode, defrag, present)


MEM = Meminfo("ok", MemInfo({"MemTotal": 16 * GIB, "MemAvailable": 8 * GIB}))
NO_SYSCTL = SysctlKeys({}, {}, None, {})  # sysctl.d sets no huge page key
POOL_1G = {"1G": {"kib": 1 << 20, "total": 16, "free": 12}}


@pytest.mark.parametrize("pools, meminfo, thp_, sysfs_mm, expected", [
    ({}, MEM, thp("madvise"), False, ("skip", "no /sys/kernel/mm in this root")),
    ({}, MEM, thp("madvise"), True, ("pass", "THP madvise (defrag madvise); no static pool")),
    ({}, MEM, thp("always", None), True, ("pass", "THP always; no static pool")),
    ({}, MEM, thp("never"), True,
     ("warn", "transparent huge pages are off (never) and there is no static huge page pool")),
    (POOL_1G, MEM, thp("never", "never"), True,
     ("pass", "THP never (defrag never); 1G pool 16 pages (12 free, 16.0 GiB)")),
    ({}, MEM, thp(None), True, ("pass", "THP mode unreadable (/sys/kernel/mm/transparent_hugepage/enabled); "
                                        "no static pool")),
    ({}, MEM, thp(None, None, present=False), True, ("pass", "no THP in this kernel; no static pool")),
    ({}, Meminfo("ok", MemInfo({"MemTotal": 16 * GIB, "HugePages_Total": 4, "HugePages_Free": 4,
                                "Hugepagesize": 2 << 20})), thp("madvise"), True,
     ("pass", "THP madvise (defrag madvise); 2M pool 4 pages (4 free, 8 MiB)")),
    ({}, Meminfo("denied", None, "Permission denied"), thp("madvise"), True,
     ("pass", "THP madvise (defrag madvise); no static pool")),
])
def test_hugepages_judge(pools, meminfo, thp_, sysfs_mm, expected):
    out = memory_hugepages.func(hugepage_pools=pools, meminfo=meminfo, thp=thp_, sysfs_mm=sysfs_mm,
                                hugepage_sysctl=NO_SYSCTL)
    assert (out.status.value, out.summary) == expected


def test_hugepages_judge_leaves_the_fact_as_it_was():
    pools = {}
    meminfo = Meminfo("ok", MemInfo({"MemTotal": GIB, "HugePages_Total": 4, "Hugepagesize": 2 << 20}))
    out = memory_hugepages.func(hugepage_pools=pools, meminfo=meminfo, thp=thp("madvise"), sysfs_mm=True,
                                hugepage_sysctl=NO_SYSCTL)
    assert out.evidence["pools"] == {"2M": {"kib": 2048, "total": 4, "free": 0}} and pools == {}


# -- capacity.resources -------------------------------------------------------------------------------
def mem(total_gib, available_gib, swap_gib=0):
    return Meminfo("ok", MemInfo({"MemTotal": int(total_gib * GIB), "MemAvailable": int(available_gib * GIB),
                                  "SwapTotal": int(swap_gib * GIB)}))


CPUS_16 = OnlineCpus(16, "0-15", "ok")


@pytest.mark.parametrize("meminfo, online, expected", [
    (Meminfo("absent"), CPUS_16, ("skip", None, "no /proc/meminfo in this root")),
    (Meminfo("denied", None, "Permission denied"), CPUS_16,
     ("skip", None, "/proc/meminfo unreadable (Permission denied)")),
    (Meminfo("unreadable", None, "Is a directory"), CPUS_16,
     ("skip", None, "/proc/meminfo unreadable (Is a directory)")),
    (Meminfo("unparsable", None, "no MemTotal"), CPUS_16, ("skip", None, "/proc/meminfo unparsable: no MemTotal")),
    (mem(1.5, 1), CPUS_16, ("fail", "too-little-memory", "only 1.5 GiB of memory (minimum 2.0 GiB): 16 CPUs online, "
                                                          "1.5 GiB RAM (1.0 GiB available), no swap")),
    (mem(64, 60, 8), CPUS_16, ("pass", None, "16 CPUs online, 64.0 GiB RAM (60.0 GiB available), swap 8.0 GiB; room "
                                             "for 26 guests of 2 vCPU/2 GiB by memory (8 without vCPU overcommit)")),
    (mem(64, 60), OnlineCpus(1, "0", "ok"),  # the list is shown when it is not 0-(N-1): "0" is not "0-0"
     ("warn", "few-cpus", "1 CPU online (0), 64.0 GiB RAM (60.0 GiB available), no swap; room for 26 guests of "
                          "2 vCPU/2 GiB by memory")),
    (mem(4, 1.5), CPUS_16, ("warn", "no-guest-fits", "16 CPUs online, 4.0 GiB RAM (1.5 GiB available), no swap; "
                                                     "room for 0 guests of 2 vCPU/2 GiB by memory")),
    (mem(64, 60), OnlineCpus(6, "6-7,10-11,14-15", "ok"),
     ("pass", None, "6 CPUs online (6-7,10-11,14-15), 64.0 GiB RAM (60.0 GiB available), no swap; room for 26 "
                    "guests of 2 vCPU/2 GiB by memory (3 without vCPU overcommit)")),
    (mem(64, 60), OnlineCpus(None, None, "denied", "Permission denied"),
     ("pass", None, "CPUs unknown, 64.0 GiB RAM (60.0 GiB available), no swap; room for 26 guests of 2 vCPU/2 GiB "
                    "by memory")),
])
def test_capacity_judge(meminfo, online, expected):
    out = capacity_resources.func(meminfo=meminfo, online_cpus=online, live=True, root_label="/", settings=Settings())
    assert (out.status.value, out.cause, out.summary) == expected


@pytest.mark.parametrize("online, source", [
    (OnlineCpus(4, "0-3", "ok"), "/sys/devices/system/cpu/online"),
    (OnlineCpus(2, None, "absent", None, True), "/proc/cpuinfo processor entries (no /sys/devices/system/cpu/online)"),
    (OnlineCpus(2, None, "denied", "Permission denied", True),
     "/proc/cpuinfo processor entries (/sys/devices/system/cpu/online unreadable (Permission denied))"),
    (OnlineCpus(None, None, "empty"), "/sys/devices/system/cpu/online is empty"),
    (OnlineCpus(None, None, "unparsable", "bad range '3-1'"), "/sys/devices/system/cpu/online unparsable "
                                                               "(bad range '3-1')"),
])
def test_capacity_names_where_the_cpu_count_came_from(online, source):
    out = capacity_resources.func(meminfo=mem(64, 60), online_cpus=online, live=False, root_label="captured",
                                  settings=Settings())
    assert out.evidence["cpu_source"] == source
    assert out.detail.startswith("Values as captured in /proc of captured, not of this machine.")


# -- storage.shared and storage.images-dir -----------------------------------------------------------------
def table(*mounts, path="/proc/mounts", installed=True):
    return StorageMounts(path, tuple(mounts), installed, "not read")


NO_SAN = San((), {}, {}, {}, "absent")
POOL = PoolPath(IMAGES, "default", "dir", "absent")
BIG = StatVfs(4096, 100 * GIB // 4096, 50 * GIB // 4096, 1000, 900, False)


def probes(found, images=ROOT, guessed=False):
    return Later(lambda: Probes(2.0, found, images, guessed))


@pytest.mark.parametrize("mounts, san, found, settings, expected", [
    (table(path=None, installed=False), NO_SAN, {}, Settings(),
     ("skip", "no mount table and no /etc in this root: nothing to judge")),
    (table(path=None), San((), {}, {}, {}, "denied"), {}, Settings(),
     ("skip", "no mount table in this root (neither /proc/mounts nor /etc/fstab)")),
    (table(ROOT), NO_SAN, {IMAGES: Probe("ok", BIG)}, Settings(),
     ("warn", "no shared storage: live migration would have to copy disks")),
    (table(ROOT, NFS), NO_SAN, {"/mnt/vm": Probe("ok", BIG), IMAGES: Probe("ok", BIG)}, Settings(),
     ("pass", "shared storage: NFSv4 nas:/vm on /mnt/vm")),
    (table(ROOT, NFS, CIFS), NO_SAN, {"/mnt/vm": Probe("timeout", message="no answer within 2 s"),
                                      "/mnt/smb": Probe("ok", BIG), IMAGES: Probe("absent")}, Settings(),
     ("fail", "shared mount not answering: NFSv4 nas:/vm on /mnt/vm")),
    (table(ROOT, CIFS), NO_SAN, {"/mnt/smb": Probe("ok", BIG), IMAGES: Probe("ok", BIG)},
     Settings(required_shared_storage=("nfs",)),
     ("fail", "none of the required shared storage (nfs): CIFS/SMB //fs/vm on /mnt/smb")),
    (table(ROOT), San(({"session": "session1", "target": "iqn.x", "state": "LOGGED_IN"},), {"host1": "Linkdown"},
                      {}, {}, "absent"), {IMAGES: Probe("ok", BIG)}, Settings(required_shared_storage=("iscsi",)),
     ("pass", "shared storage: iSCSI session session1 to iqn.x")),
])
def test_shared_judge(mounts, san, found, settings, expected):
    out = shared.func(storage_mounts=mounts, san=san, default_pool=POOL, storage_probes=probes(found),
                      settings=settings)
    assert (out.status.value, out.summary) == expected


def test_shared_judge_counts_denied_multipath_conf_as_there():
    out = shared.func(storage_mounts=table(path=None), san=San((), {}, {}, {}, "denied"), default_pool=POOL,
                      storage_probes=probes({}), settings=Settings())
    assert out.detail == "/etc/multipath.conf exists, but no multipath map is active."
    out = shared.func(storage_mounts=table(path=None), san=NO_SAN, default_pool=POOL, storage_probes=probes({}),
                      settings=Settings())
    assert out.detail == ""


def node(kind):
    return Later(lambda: kind)


LOW = StatVfs(4096, 100 * GIB // 4096, GIB // 4096, 1000, 900, False)
READ_ONLY = BIG._replace(read_only=True)
PROBES = {
    "ok": Probe("ok", BIG), "low": Probe("ok", LOW), "ro": Probe("ok", READ_ONLY), "absent": Probe("absent"),
    "timeout": Probe("timeout", message="no answer within 2 s"), "error": Probe("error", message="Too many levels"),
}


@pytest.mark.parametrize("mounts, pool, probe, kind, expected", [
    (table(path=None, installed=False), POOL, "ok", "directory",
     ("skip", None, "no /etc and no mount table in this root: not an installed system")),
    (table(ROOT), POOL._replace(pool_type="logical", path="/dev/vg"), "ok", "directory",
     ("skip", None, "the default pool is a logical pool, not a directory")),
    (table(ROOT), POOL, "ok", "directory",
     ("pass", None, f"{IMAGES}: 50.0 GiB free of 100.0 GiB on ext4 /dev/sda2 on /")),
    (table(ROOT), POOL, "low", "directory",
     ("warn", "low-free-space", f"only 1.0 GiB free for guest images in {IMAGES} (want 20 GiB)")),
    (table(ROOT), POOL, "ro", "directory",
     ("fail", "read-only", f"{IMAGES} is on a read-only file system (ext4 /dev/sda2 on /)")),
    (table(ROOT), POOL, "ok", "file", ("fail", None, f"{IMAGES} is a file, not a directory")),
    (table(ROOT), POOL, "ok", "dangling link", ("fail", None, f"{IMAGES} is a dangling link, not a directory")),
    (table(ROOT), POOL, "timeout", "directory",
     ("fail", "not-answering", f"{IMAGES} does not answer (ext4 /dev/sda2 on /)")),
    (table(ROOT), POOL, "error", "directory", ("fail", None, f"{IMAGES} cannot be examined (statvfs failed)")),
    (table(ROOT), POOL, "absent", "directory", ("warn", None, f"{IMAGES} does not exist: libvirt is not installed")),
    (table(ROOT), PoolPath("/srv/pool", XML, "dir", "ok"), "absent", "directory",
     ("warn", None, "/srv/pool (the default pool's directory) does not exist")),
    (table(ROOT), POOL._replace(state="denied", flaw="unreadable", flaw_detail="Permission denied"), "ok", "directory",
     ("warn", None, f"the default pool definition is broken: {XML} cannot be read (Permission denied)")),
    (table(ROOT), POOL._replace(state="ok", flaw="no-target", flaw_detail=""), "ro", "directory",
     ("fail", "read-only", f"{IMAGES} is on a read-only file system (ext4 /dev/sda2 on /)")),
])
def test_images_dir_judge(mounts, pool, probe, kind, expected):
    out = images_dir.func(storage_mounts=mounts, default_pool=pool, storage_probes=probes({pool.path: PROBES[probe]}),
                          images_node=node(kind), distro_family="debian", settings=Settings())
    assert (out.status.value, out.cause if expected[1] else None, out.summary) == expected


def test_images_dir_judge_names_every_issue_and_the_package():
    broken = POOL._replace(state="ok", flaw="no-target", flaw_detail="")
    out = images_dir.func(storage_mounts=table(ROOT), default_pool=broken,
                          storage_probes=probes({IMAGES: PROBES["ro"]}), images_node=node("directory"),
                          distro_family=None, settings=Settings())
    assert out.detail.endswith(f"Also: the default pool definition is broken: {XML} has no absolute <target><path> "
                               "('empty').")
    missing = images_dir.func(storage_mounts=table(ROOT), default_pool=POOL,
                              storage_probes=probes({IMAGES: PROBES["absent"]}), images_node=node("directory"),
                              distro_family="debian", settings=Settings())
    assert missing.caused_by == ("packages.virt",) and "'apt-get install" in missing.remediation


# -- the facts on captured roots ----------------------------------------------------------------------
def facts_of(root) -> Facts:
    return Facts(Host(str(root)), Settings())


def test_storage_facts_on_captured_roots(host_root):
    iscsi = facts_of(host_root("storage-iscsi")).get("san")
    assert [(s["session"], s["state"]) for s in iscsi.iscsi] == [("session1", "LOGGED_IN"), ("session2", "FAILED")]
    mp = facts_of(host_root("storage-multipath")).get("san")
    assert mp.mpath == {"mpatha": "dm-0"} and mp.mpath_uuids["mpatha"].startswith("mpath-")
    fstab = facts_of(host_root("storage-fstab")).get("storage_mounts")
    assert (fstab.path, fstab.live, fstab.fstab, fstab.installed) == ("/etc/fstab", False, "ok", True)
    pool = facts_of(host_root("storage-pool-missing")).get("default_pool")
    assert pool == PoolPath("/srv/vm-pool", XML, "dir", "ok")
    bad = facts_of(host_root("storage-bad-pool-xml")).get("default_pool")
    assert (bad.path, bad.state, bad.flaw) == (IMAGES, "ok", "malformed")
    probes_ = facts_of(host_root("storage-nfs4")).get("storage_probes").get()
    assert {p: f.state for p, f in probes_.found.items()} == {"/mnt/vmstore": "absent", IMAGES: "ok"}
    assert probes_.images.target == "/" and probes_.timeout == 2.0


def test_memory_facts_on_captured_roots(host_root):
    pool = facts_of(host_root("mem-1g-pool"))
    assert pool.get("hugepage_pools")["1G"] == {"kib": 1 << 20, "total": 16, "free": 12}
    assert (pool.get("thp").mode, pool.get("ksm").supported, pool.get("sysfs_mm")) == ("never", False, True)
    running = facts_of(host_root("mem-ksm-running"))
    assert running.get("ksm_units") == {"ksm.service": "enabled", "ksmtuned.service": "enabled"}
    assert running.get("ksm").values["pages_sharing"] == 51200
    sparc = facts_of(host_root("cap-sparc64"))
    assert sparc.get("online_cpus") == OnlineCpus(6, "6-7,10-11,14-15", "ok")
    assert sparc.get("meminfo").state == "ok" and sparc.get("meminfo").info.available_estimated
    fallback = facts_of(host_root("cap-no-online")).get("online_cpus")
    assert (fallback.count, fallback.online_state, fallback.from_cpuinfo) == (2, "absent", True)
    none = facts_of(host_root("mem-no-sysfs"))
    assert (none.get("sysfs_mm"), none.get("ksm").supported, none.get("thp").present) == (False, False, False)


# -- denied is not absent: the facts run as nobody ----------------------------------------------------
FILES = ("proc/meminfo", "sys/devices/system/cpu/online", "etc/libvirt/storage/default.xml", "etc/fstab",
         "etc/multipath.conf", "sys/kernel/mm/ksm/run")
ASK = r'''
import json, sys
from kvmcheck.core.host import Host
from kvmcheck.core.settings import Settings
from kvmcheck.facts import Facts
from kvmcheck.checks import capacity, memory, storage
out = {}
for root in sys.argv[1:]:
    f = Facts(Host(root), Settings())
    out[root] = {"meminfo": f.get("meminfo").state, "online": f.get("online_cpus").online_state,
                 "pool": f.get("default_pool")[3:5], "fstab": f.get("storage_mounts").fstab,
                 "multipath": f.get("san").multipath_conf, "ksm": f.get("ksm").unreadable,
                 "capacity": f.call(capacity.capacity_resources.func).summary}
print(json.dumps(out))
'''


def test_denied_files_are_not_absent(tmp_path):
    top = Path(tempfile.mkdtemp(prefix="kvmcheck-denied-"))  # pytest's tmp_path is 0700: nobody cannot reach it
    try:
        os.chmod(top, 0o755)
        denied, absent = top / "denied", top / "absent"
        for root in (denied, absent):
            for rel in ("proc", "sys/devices/system/cpu", "etc/libvirt/storage", "sys/kernel/mm/ksm"):
                (root / rel).mkdir(parents=True, exist_ok=True)
        for rel in FILES:
            (denied / rel).write_text("1\n")
            os.chmod(denied / rel, 0)
        for path in [top] + [p for p in top.rglob("*") if p.is_dir()]:
            os.chmod(path, 0o755)
        proc = subprocess.run(as_nobody([sys.executable, "-c", ASK, str(denied), str(absent)]), capture_output=True,
                              text=True, timeout=120, cwd="/", env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=True)
    assert got[str(denied)] == {
        "meminfo": "denied", "online": "denied", "pool": ["denied", "unreadable"], "fstab": "denied",
        "multipath": "denied", "ksm": {"run": "denied"},
        "capacity": "/proc/meminfo unreadable (Permission denied)"}
    assert got[str(absent)] == {
        "meminfo": "absent", "online": "absent", "pool": ["absent", None], "fstab": "absent",
        "multipath": "absent", "ksm": {}, "capacity": "no /proc/meminfo in this root"}
