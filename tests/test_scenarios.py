# SPDX-License-Identifier: GPL-2.0-or-later
"""Every core check on hand-made roots, one per branch: exact (id, status) pairs."""
from __future__ import annotations

import pytest

import kvmcheck

CORE = ["cpu.virt-flags", "cpu.64bit", "firmware.vt-enabled", "kernel.version", "kvm.modules", "kvm.device"]

EXPECTED = {
    "intel-baremetal-vmx": {
        "cpu.virt-flags": "pass", "cpu.64bit": "pass", "firmware.vt-enabled": "pass",
        "kernel.version": "pass", "kvm.modules": "pass", "kvm.device": "pass"},
    "amd-baremetal-svm": {
        "cpu.virt-flags": "pass", "cpu.64bit": "pass", "firmware.vt-enabled": "pass",
        "kernel.version": "pass", "kvm.modules": "pass", "kvm.device": "pass"},
    # Linux >= 5.6 hid vmx after firmware locked VMX off; the log says so; kvm_intel could not load.
    "intel-firmware-disabled": {
        "cpu.virt-flags": "fail", "cpu.64bit": "pass", "firmware.vt-enabled": "fail",
        "kernel.version": "pass", "kvm.modules": "fail", "kvm.device": "skip"},
    # No svm, no log: firmware cannot be judged offline; modprobe.d blocks kvm_amd.  cpuinfo has no fdiv_bug
    # lines, which every 32-bit x86 kernel prints: a 64-bit kernel.
    "amd-baremetal-no-svm": {
        "cpu.virt-flags": "fail", "cpu.64bit": "pass", "firmware.vt-enabled": "skip",
        "kernel.version": "pass", "kvm.modules": "fail", "kvm.device": "skip"},
    "cloud-vm-no-nested": {
        "cpu.virt-flags": "fail", "cpu.64bit": "pass", "firmware.vt-enabled": "skip",
        "kernel.version": "pass", "kvm.modules": "fail", "kvm.device": "skip"},
    "pvm-host": {
        "cpu.virt-flags": "fail", "cpu.64bit": "pass", "firmware.vt-enabled": "skip",
        "kernel.version": "pass", "kvm.modules": "pass", "kvm.device": "warn"},
    "arm64-kvm": {
        "cpu.virt-flags": "pass", "cpu.64bit": "pass", "firmware.vt-enabled": "skip",
        "kernel.version": "pass", "kvm.modules": "pass", "kvm.device": "pass"},
    "s390x-lpar": {
        "cpu.virt-flags": "pass", "cpu.64bit": "pass", "firmware.vt-enabled": "skip",
        "kernel.version": "pass", "kvm.modules": "pass", "kvm.device": "pass"},
    # A cloud VM whose /dev was captured: devtmpfs made null, net/tun and vhost-net but no kvm.
    "cloud-vm-dev-captured": {
        "cpu.virt-flags": "fail", "cpu.64bit": "pass", "firmware.vt-enabled": "skip",
        "kernel.version": "pass", "kvm.modules": "fail", "kvm.device": "fail"},
    # Xen's control domain: vmx in the flags, but Xen owns it.
    "xen-dom0": {
        "cpu.virt-flags": "fail", "cpu.64bit": "pass", "firmware.vt-enabled": "pass",
        "kernel.version": "pass", "kvm.modules": "fail", "kvm.device": "skip"},
    "old-32bit-kernel": {
        "cpu.virt-flags": "pass", "cpu.64bit": "fail", "firmware.vt-enabled": "skip",
        "kernel.version": "fail", "kvm.modules": "fail", "kvm.device": "skip"},
}


def run_on(root, only=CORE):
    report = kvmcheck.run(str(root), only=only)
    return report, {r.id: r for r in report.checks}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_exact_statuses(host_root, scenario):
    report, results = run_on(host_root(scenario))
    assert {i: r.status.value for i, r in results.items()} == EXPECTED[scenario]
    for r in report.checks:
        assert r.summary, r.id
        if r.status.value in ("fail", "warn"):
            assert r.detail and r.remediation, f"{scenario} {r.id} must explain and fix"


def test_pvm_host_names_pvm_and_nested(host_root):
    report, results = run_on(host_root("pvm-host"))
    virt = results["cpu.virt-flags"]
    assert "PVM" in virt.summary and "kvm_pvm" in virt.summary
    assert "nested virtualization is off" in virt.detail
    assert "Only PVM-enabled guest kernels run well" in virt.detail
    assert "svm" in virt.remediation  # an AMD host: the nested fix names svm/kvm_amd
    assert report.host["hypervisor"] == "KVM"
    assert report.host["hypervisor_source"] == "clock source kvm-clock"
    assert results["kvm.modules"].evidence["present"] == {"kvm": "built-in", "kvm_pvm": "built-in"}
    assert results["kvm.device"].evidence["locked_out"] == ["cloudsdk"]


def test_cloud_vm_points_at_nested_virtualization(host_root):
    report, results = run_on(host_root("cloud-vm-no-nested"))
    virt = results["cpu.virt-flags"]
    assert "without nested virtualization" in virt.summary
    assert "kvm_intel nested=1" in virt.remediation
    assert report.host["hypervisor"] == "KVM"  # DMI "Amazon EC2" with the hypervisor flag
    assert "vmx/svm" in results["kvm.modules"].detail


def test_firmware_disabled_names_the_bios_setting_and_the_log_line(host_root):
    _, results = run_on(host_root("intel-firmware-disabled"))
    fw = results["firmware.vt-enabled"]
    assert fw.evidence["log_lines"] == ["x86/cpu: VMX (outside TXT) disabled by BIOS"]
    assert "Intel Virtualization Technology (VT-x)" in fw.remediation
    # cpu.virt-flags follows from firmware.vt-enabled, so its fix points there (the runner's cause chain).
    virt = results["cpu.virt-flags"]
    assert virt.caused_by == ["firmware.vt-enabled"] and "firmware.vt-enabled" in virt.remediation


def test_blacklist_is_reported_with_file_and_line(host_root):
    _, results = run_on(host_root("amd-baremetal-no-svm"))
    mods = results["kvm.modules"]
    assert mods.evidence["blocked_by"] == [
        "/etc/modprobe.d/blacklist-kvm.conf:2: blacklist kvm_amd",
        "/etc/modprobe.d/blacklist-kvm.conf:3: install kvm_amd /bin/false",
    ]
    assert "Remove these lines" in mods.remediation
    assert "SVM Mode" in results["cpu.virt-flags"].remediation


def test_old_kernel_is_32bit_and_too_old(host_root):
    _, results = run_on(host_root("old-32bit-kernel"))
    assert results["cpu.64bit"].evidence["kernel_bits"] == 32
    assert results["kernel.version"].evidence == {
        "release": "2.6.18-419.el5PAE", "version": "2.6.18", "minimum": "2.6.20",
        "source": "/proc/sys/kernel/osrelease"}


def test_minimum_kernel_is_configurable(host_root):
    from kvmcheck.facts.context import Settings

    root = host_root("intel-baremetal-vmx")
    report = kvmcheck.run(str(root), only=["kernel.version"], settings=Settings(min_kernel="6.1"))
    assert [(r.id, r.status.value) for r in report.checks] == [("kernel.version", "fail")]


def test_group_members_and_locked_out_users(host_root):
    root = host_root("intel-baremetal-vmx")
    (root / "etc" / "group").write_text("root:x:0:\nkvm:x:36:qemu\nalice:x:1000:\n")
    _, results = run_on(root, only=["kvm.device"])
    dev = results["kvm.device"]
    assert (dev.status.value, dev.evidence["group"], dev.evidence["locked_out"]) == ("warn", "kvm", ["alice"])


def test_kickstart_target_without_sys_uses_installed_modules(tmp_path):
    # A %post --nochroot target: /lib/modules of the installed kernel, no /sys/module.
    kdir = tmp_path / "lib/modules/5.14.0-427.el9.x86_64/kernel/arch/x86/kvm"
    kdir.mkdir(parents=True)
    for name in ("kvm.ko.xz", "kvm-intel.ko.xz", "kvm-amd.ko.xz"):
        (kdir / name).write_bytes(b"")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: lm vmx\n")
    report = kvmcheck.run(str(tmp_path), only=["kvm.modules", "kernel.version"])
    assert [(r.id, r.status.value) for r in report.checks] == [("kernel.version", "pass"), ("kvm.modules", "pass")]
    assert report.checks[0].evidence["release"] == "5.14.0-427.el9.x86_64"


def test_empty_root_gives_skips_not_errors(tmp_path):
    report = kvmcheck.run(str(tmp_path))
    assert {r.status.value for r in report.checks} <= {"skip"}, [(r.id, r.status.value, r.summary) for r in report.checks]


def test_locked_out_advice_never_says_join_the_root_group(host_root):
    _, results = run_on(host_root("pvm-host"), only=["kvm.device"])
    fix = results["kvm.device"].remediation
    assert "usermod -aG root" not in fix and "groupadd --system kvm" in fix  # this root has no kvm group


def test_an_etc_file_hides_the_vendor_file_of_the_same_name(host_root):
    # modprobe.d(5): /etc/modprobe.d/x.conf replaces /usr/lib/modprobe.d/x.conf; /lib -> usr/lib counts once.
    root = host_root("amd-baremetal-no-svm")
    vendor = root / "usr/lib/modprobe.d"
    vendor.mkdir(parents=True)
    (vendor / "blacklist-kvm.conf").write_text("blacklist kvm\n")  # hidden by the /etc file of that name
    (vendor / "vendor-extra.conf").write_text("blacklist kvm_intel\n")
    (root / "lib").symlink_to("usr/lib")
    _, results = run_on(root, only=["kvm.modules"])
    assert results["kvm.modules"].evidence["blocked_by"] == [
        "/etc/modprobe.d/blacklist-kvm.conf:2: blacklist kvm_amd",
        "/etc/modprobe.d/blacklist-kvm.conf:3: install kvm_amd /bin/false",
        "/usr/lib/modprobe.d/vendor-extra.conf:1: blacklist kvm_intel",
    ]


def test_kvm_device_names_qemus_users_apart_from_login_users(host_root):
    root = host_root("pvm-host")  # /dev/kvm 0600 root:root; cloudsdk logs in
    with open(root / "etc" / "passwd", "a") as passwd:
        passwd.write("libvirt-qemu:x:64055:108:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n")
    dev = run_on(root)[1]["kvm.device"]
    assert dev.status.value == "warn"
    assert dev.detail == "Locked out: QEMU's user libvirt-qemu; login user cloudsdk."
    assert (dev.evidence["locked_out_qemu"], dev.evidence["locked_out_login"]) == (["libvirt-qemu"], ["cloudsdk"])


def test_missing_dev_kvm_in_a_captured_dev_is_a_finding_caused_by_the_modules(host_root):
    _, results = run_on(host_root("cloud-vm-dev-captured"))
    dev = results["kvm.device"]
    assert (dev.status.value, dev.caused_by) == ("fail", ["kvm.modules"])  # firmware.vt-enabled skipped: no cause
    assert dev.evidence == {"dev_captured": True, "dev_nodes": ["/dev/null", "/dev/net/tun", "/dev/vhost-net"]}


def test_missing_dev_kvm_without_a_captured_dev_is_skipped(host_root):
    _, results = run_on(host_root("cloud-vm-no-nested"), only=["kvm.device"])
    dev = results["kvm.device"]
    assert (dev.status.value, dev.evidence) == ("skip", {"dev_captured": False})


def test_xen_dom0_fails_although_its_flags_list_vmx(host_root):
    report, results = run_on(host_root("xen-dom0"))
    virt = results["cpu.virt-flags"]
    assert virt.summary == "Xen dom0: the Xen hypervisor owns VT-x/AMD-V"
    assert "without the Xen hypervisor" in virt.remediation
    assert (report.host["hypervisor"], virt.evidence["xen"]) == ("Xen", "dom0")
