# SPDX-License-Identifier: GPL-2.0-or-later
"""storage.shared and storage.images-dir on captured roots (one per branch), and the mount-table parser."""
from __future__ import annotations

import errno

import pytest

import kvmcheck
from conftest import CORPUS, needs_corpus
from kvmcheck.facts.context import Settings
from kvmcheck.core.host import Host
from kvmcheck.parsers.mounts import Mount, backing_mount, parse_mounts, parse_mountinfo, top_mounts, unescape
from kvmcheck.core.render import render

IDS = ["storage.shared", "storage.images-dir"]


def settings(min_free_gib=0.001):
    """Settings with the free-space threshold (getattr'ed by the check until Settings has the field)."""
    s = Settings()
    s.images_min_free_gib = min_free_gib
    return s


def run_on(root, min_free_gib=0.001):
    report = kvmcheck.run(str(root), only=["storage.*"], settings=settings(min_free_gib))
    return report, {r.id: r for r in report.checks}


EXPECTED = {
    # NFSv3 on "/srv/vm images" (\040 in /proc/mounts); libvirt not installed yet
    "storage-nfs-space": ("pass", "warn"),
    "storage-nfs4": ("pass", "pass"),
    "storage-cifs": ("pass", "warn"),
    "storage-iscsi": ("pass", "warn"),  # one session LOGGED_IN, one FAILED
    "storage-fc": ("pass", "warn"),  # host1 Online, host2 Linkdown
    "storage-fc-linkdown": ("warn", "warn"),  # Linkdown ports are no shared storage
    "storage-multipath": ("pass", "pass"),  # xfs on /dev/mapper/mpatha holds the images directory
    "storage-none": ("warn", "pass"),
    "storage-images-shared": ("pass", "pass"),
    "storage-pool-missing": ("warn", "warn"),
    "storage-bad-pool-xml": ("warn", "warn"),
    "storage-fstab": ("pass", "warn"),  # an offline target: fstab stands in for the mount table
    "storage-logical-pool": ("warn", "skip"),
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_exact_statuses(host_root, scenario):
    report, results = run_on(host_root(scenario))
    assert (results["storage.shared"].status.value, results["storage.images-dir"].status.value) == EXPECTED[scenario]
    for r in report.checks:
        assert r.summary
        if r.status.value in ("warn", "fail"):
            assert r.detail and r.remediation, r.id


def test_nfs_mount_point_with_a_space_is_unescaped_in_the_text_report(host_root):
    report, results = run_on(host_root("storage-nfs-space"))
    shared = results["storage.shared"]
    assert shared.summary == "shared storage: NFSv3 nas01:/export/vm images on /srv/vm images"
    assert shared.evidence["mounts"][0]["target"] == "/srv/vm images"
    text = render(report, "text")
    assert "/srv/vm images" in text and "\\040" not in text
    images = results["storage.images-dir"]
    assert images.summary == "/var/lib/libvirt/images does not exist: libvirt is not installed"
    assert "libvirt-daemon-system" in images.remediation


def test_nfs4_and_cifs_are_named(host_root):
    _, nfs4 = run_on(host_root("storage-nfs4"))
    assert nfs4["storage.shared"].summary == "shared storage: NFSv4 nas01:/vm on /mnt/vmstore"
    assert "local storage (ext4 /dev/sda2 on /)" in nfs4["storage.shared"].detail
    _, cifs = run_on(host_root("storage-cifs"))
    assert cifs["storage.shared"].summary == "shared storage: CIFS/SMB //fs01/vmshare on /mnt/vm"


def test_san_sessions_ports_and_maps(host_root):
    _, iscsi = run_on(host_root("storage-iscsi"))
    assert iscsi["storage.shared"].summary == (
        "shared storage: iSCSI session session1 to iqn.2003-01.org.linux-iscsi.san01:vmstore")
    assert "session2 (FAILED)" in iscsi["storage.shared"].detail
    _, fc = run_on(host_root("storage-fc"))
    assert fc["storage.shared"].summary == "shared storage: Fibre Channel port host1 Online"
    assert fc["storage.shared"].evidence["fc_hosts"] == {"host1": "Online", "host2": "Linkdown"}
    _, down = run_on(host_root("storage-fc-linkdown"))
    assert "host1 (Linkdown), host2 (Linkdown)" in down["storage.shared"].detail
    _, mp = run_on(host_root("storage-multipath"))
    assert mp["storage.shared"].summary == "shared storage: multipath map mpatha (dm-0) (holds the images directory)"
    assert mp["storage.shared"].evidence["multipath_maps"] == {"mpatha": "dm-0"}  # dm-1 is LVM
    assert mp["storage.images-dir"].evidence["device"] == "/dev/mapper/mpatha"


def test_images_dir_on_shared_storage(host_root):
    _, results = run_on(host_root("storage-images-shared"))
    assert results["storage.shared"].summary == (
        "shared storage: NFSv4 nas01:/vm/images on /var/lib/libvirt/images (holds the images directory)")
    images = results["storage.images-dir"]
    assert images.evidence["shared"] is True and images.evidence["mount"] == "/var/lib/libvirt/images"
    assert "NFSv4 nas01:/vm/images on /var/lib/libvirt/images" in images.summary
    assert "live-migrate" in images.detail


def test_no_shared_storage_warns_with_the_way_to_add_it(host_root):
    _, results = run_on(host_root("storage-none"))
    shared = results["storage.shared"]
    assert shared.summary == "no shared storage: live migration would have to copy disks"
    assert "NFS" in shared.remediation and "--copy-storage-all" in shared.remediation


def test_low_free_space_says_how_much(host_root):
    _, results = run_on(host_root("storage-none"), min_free_gib=10 ** 9)
    images = results["storage.images-dir"]
    assert images.status.value == "warn"
    assert images.summary.startswith("only ") and "GiB free for guest images in /var/lib/libvirt/images" in images.summary
    assert images.summary.endswith("(want 1e+09 GiB)")
    assert images.evidence["free_bytes"] < 10 ** 9 * (1 << 30)


def test_default_threshold_is_20_gib(host_root):
    report = kvmcheck.run(str(host_root("storage-none")), only=["storage.images-dir"])
    assert report.checks[0].evidence["min_free_gib"] == 20


def test_configured_pool_directory_missing_says_pool_build(host_root):
    _, results = run_on(host_root("storage-pool-missing"))
    images = results["storage.images-dir"]
    assert images.summary == "/srv/vm-pool (the default pool's directory) does not exist"
    assert "virsh pool-build default" in images.remediation
    assert images.evidence["pool_source"] == "/etc/libvirt/storage/default.xml"


def test_malformed_pool_xml_warns_and_falls_back(host_root):
    _, results = run_on(host_root("storage-bad-pool-xml"))
    images = results["storage.images-dir"]
    assert images.summary.startswith("the default pool definition is broken: /etc/libvirt/storage/default.xml is "
                                     "not well-formed XML")
    assert images.evidence["path"] == "/var/lib/libvirt/images" and images.evidence["state"] == "ok"
    assert "virsh pool-define-as" in images.remediation


@pytest.mark.parametrize("xml", ["", "<network/>", "<pool type='dir'><target><path>relative</path></target></pool>",
                                 "<pool type='dir'><target/></pool>"])
def test_odd_pool_definitions_are_warnings_not_crashes(tmp_path, xml):
    (tmp_path / "etc/libvirt/storage").mkdir(parents=True)
    (tmp_path / "etc/libvirt/storage/default.xml").write_text(xml)
    _, results = run_on(tmp_path)
    assert results["storage.images-dir"].status.value == "warn"
    assert "default pool definition is broken" in results["storage.images-dir"].summary


def test_images_path_that_is_a_file_fails(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "var/lib/libvirt").mkdir(parents=True)
    (tmp_path / "var/lib/libvirt/images").write_text("not a directory")
    _, results = run_on(tmp_path)
    assert (results["storage.images-dir"].status.value, results["storage.images-dir"].summary) == (
        "fail", "/var/lib/libvirt/images is a file, not a directory")


def test_images_link_is_followed_to_find_its_mount(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/mounts").write_text("/dev/sda2 / ext4 rw 0 0\nnas:/vm /srv/vm nfs4 rw 0 0\n")
    (tmp_path / "srv/vm/images").mkdir(parents=True)
    (tmp_path / "var/lib/libvirt").mkdir(parents=True)
    (tmp_path / "var/lib/libvirt/images").symlink_to("/srv/vm/images")
    _, results = run_on(tmp_path)
    assert results["storage.images-dir"].evidence["mount"] == "/srv/vm"
    assert results["storage.shared"].summary == "shared storage: NFSv4 nas:/vm on /srv/vm (holds the images directory)"


def test_stuck_mount_fails_by_name_and_is_probed_once(tmp_path, monkeypatch):
    """Without FUSE: a statvfs that times out (test_hung_mount.py does it for real)."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/mounts").write_text("/dev/sda2 / ext4 rw 0 0\nfiler:/vm /var/lib/libvirt/images nfs "
                                          "rw,vers=4.2 0 0\n//fs/share /mnt/smb cifs rw 0 0\n")
    calls = []

    def fake(self, paths, timeout=2.0):
        calls.append(list(paths))
        return {p: TimeoutError(errno.ETIMEDOUT, "statvfs did not return", p) if "libvirt" in p else None
                for p in paths}

    monkeypatch.setattr(Host, "statvfs_many", fake)
    _, results = run_on(tmp_path)
    shared, images = results["storage.shared"], results["storage.images-dir"]
    assert (shared.status.value, images.status.value) == ("fail", "fail")
    assert shared.summary == "shared mount not answering: NFSv4.2 filer:/vm on /var/lib/libvirt/images"
    assert "Working shared storage: CIFS/SMB //fs/share on /mnt/smb" in shared.detail
    assert shared.evidence["stuck"] == ["/var/lib/libvirt/images"]
    assert images.summary == ("/var/lib/libvirt/images does not answer "
                              "(NFSv4.2 filer:/vm on /var/lib/libvirt/images)")
    assert len(calls) == 1  # storage.images-dir reused storage.shared's probe instead of waiting again


def test_empty_root_skips(tmp_path):
    _, results = run_on(tmp_path)
    assert [results[i].status.value for i in IDS] == ["skip", "skip"]


@needs_corpus
@pytest.mark.parametrize("dump", ["armv7", "s390-lpar"])
def test_lscpu_dumps_skip(dump):
    _, results = run_on(CORPUS / dump)
    assert [results[i].status.value for i in IDS] == ["skip", "skip"]


def test_etc_without_mount_table(tmp_path):
    (tmp_path / "etc").mkdir()
    _, results = run_on(tmp_path)
    assert results["storage.shared"].status.value == "skip"
    assert results["storage.images-dir"].status.value == "warn"  # not installed: install libvirt


# -- the parser --------------------------------------------------------------------------------------

def test_unescape():
    assert unescape(r"/srv/vm\040images") == "/srv/vm images"
    assert unescape(r"a\011b\012c\134d") == "a\tb\nc\\d"
    assert unescape(r"no\escape\09") == r"no\escape\09"  # not three octal digits: kept
    assert unescape(r"\777") == r"\777"  # out of byte range: kept


def test_parse_mounts_odd_lines():
    text = ("\n# comment\n  \nrootfs / rootfs rw 0 0\n/dev/sda1   /    ext4\trw,relatime   0 1\n"
            "short line\nserver:/x /mnt//a/./b/ nfs4 rw\n"
            "/dev/sdb1 /mnt/with\\040space\\134back xfs ro,noatime 0 0\n/swapfile none swap sw 0 0\n")
    mounts = parse_mounts(text)
    assert [(m.target, m.fstype, m.line) for m in mounts] == [
        ("/", "rootfs", 4), ("/", "ext4", 5), ("/mnt/a/b", "nfs4", 7), ("/mnt/with space\\back", "xfs", 8),
        ("none", "swap", 9)]
    assert mounts[2].options == ("rw",) and mounts[2].shared_kind == "NFSv4"
    assert mounts[3].option("ro") == "" and mounts[3].option("vers") is None
    assert parse_mounts("") == [] and parse_mounts("garbage\n\x00\x01") == []


def test_kernel_mount_tables_have_no_comments():
    """fstab's '#' starts a comment; in /proc/mounts it can only start a source (the kernel does not escape it)."""
    line = "#sshfs-box:/srv /mnt/remote fuse.sshfs rw,nosuid 0 0\n"
    assert parse_mounts(line) == []
    (m,) = parse_mounts(line, comments=False)
    assert (m.source, m.target, m.fstype) == ("#sshfs-box:/srv", "/mnt/remote", "fuse.sshfs")


def test_parse_fstab_defaults_when_options_missing():
    (m,) = parse_mounts("LABEL=data /data ext4\n")
    assert (m.source, m.options) == ("LABEL=data", ("defaults",))


def test_backing_mount_longest_prefix_and_shadowing():
    mounts = parse_mounts("/dev/sda1 / ext4 rw 0 0\nnas:/a /var/lib nfs rw 0 0\n/dev/sdb /var/lib/libvirtx xfs rw 0 0\n"
                          "nas:/b /var/lib/libvirt/images nfs4 rw 0 0\ntmpfs /var/lib/libvirt/images tmpfs rw 0 0\n"
                          "/swapfile none swap sw 0 0\n")
    assert backing_mount(mounts, "/var/lib/libvirt/images/x.qcow2").fstype == "tmpfs"  # the later one wins
    assert backing_mount(mounts, "/var/lib/libvirt/other").source == "nas:/a"  # libvirtx is no prefix
    assert backing_mount(mounts, "/etc").target == "/"
    assert backing_mount(mounts, "/var/lib/").source == "nas:/a"
    assert backing_mount([], "/x") is None
    assert [m.fstype for m in top_mounts(mounts)] == ["ext4", "nfs", "xfs", "tmpfs", "swap"]


def test_parse_mountinfo():
    text = ("36 35 98:0 /mnt1 /mnt/parent\\040dir rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
            "40 36 0:44 / /srv nfs4 rw shared:7 - \n"
            "41 36 0:45 / /mnt/nfs rw,relatime shared:8 - nfs4 srv:/e rw,vers=4.2\nbroken line\n")
    mounts = parse_mountinfo(text)
    assert mounts == [
        Mount("/dev/root", "/mnt/parent dir", "ext3", ("rw", "noatime", "rw", "errors=continue"), 1),
        Mount("srv:/e", "/mnt/nfs", "nfs4", ("rw", "relatime", "rw", "vers=4.2"), 3)]
