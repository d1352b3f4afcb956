# SPDX-License-Identifier: GPL-2.0-or-later
"""Kernel arguments configured for the next boot but not in effect (issue 20): the boot loader's default entry
against /proc/cmdline (pending reboot) and /etc/default/grub against the generated configuration (pending
regenerate-bootloader), on captured roots of Debian 12 (GRUB), RHEL 9 (GRUB with BLS entries) and RHEL 8
(BLS entries whose options are grubenv's kernelopts), and on variants made from them in the test."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import kvmcheck
from conftest import as_nobody, materialize
from kvmcheck.core.host import Host
from kvmcheck.facts import Facts

MINE = ["iommu.enabled", "cpu.vulnerabilities", "memory.hugepages"]
MID = "3b9e4c1f0a2d4e6f8b7c5d1e2f3a4b5c"
RHEL9_ENTRY = f"/boot/loader/entries/{MID}-5.14.0-427.13.1.el9_4.x86_64.conf"

EXPECTED = {
    # grub.cfg's default entry has intel_iommu=on iommu=pt and a 1 GiB pool, and has dropped mitigations=off;
    # /proc/cmdline is the boot before update-grub ran.
    "pending-boot-debian": {("iommu.enabled", "warn", "reboot"), ("cpu.vulnerabilities", "warn", "reboot"),
                            ("memory.hugepages", "pass", "reboot")},
    # the same change made in /etc/default/grub.d/kvm-host.cfg and /etc/default/grub, update-grub not run
    "pending-boot-debian-unregenerated": {("iommu.enabled", "warn", "regenerate-bootloader"),
                                          ("cpu.vulnerabilities", "warn", "regenerate-bootloader"),
                                          ("memory.hugepages", "pass", "regenerate-bootloader")},
    # the twin after the reboot: configuration, grub.cfg and /proc/cmdline agree
    "pending-boot-debian-applied": {("iommu.enabled", "pass", None), ("cpu.vulnerabilities", "pass", None),
                                    ("memory.hugepages", "pass", None)},
    "pending-boot-rhel9-bls": {("iommu.enabled", "warn", "reboot"), ("cpu.vulnerabilities", "skip", None),
                               ("memory.hugepages", "skip", None)},
    "pending-boot-rhel8-kernelopts": {("iommu.enabled", "warn", "reboot"), ("cpu.vulnerabilities", "skip", None),
                                      ("memory.hugepages", "skip", None)},
    # a root without any boot loader configuration: nothing is pending
    "iommu-intel-off": {("iommu.enabled", "warn", None), ("cpu.vulnerabilities", "skip", None),
                        ("memory.hugepages", "skip", None)},
}


def triples(root, only=MINE):
    return {(r.id, r.status.value, r.pending) for r in kvmcheck.run(str(root), only=only).checks}


def notes(root, only=MINE):
    return {r.id: r.pending_note for r in kvmcheck.run(str(root), only=only).checks}


def boot(root):
    return Facts(Host(str(root))).get("boot_cmdline")


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_exact_triples(host_root, scenario):
    assert triples(host_root(scenario)) == EXPECTED[scenario]


def test_debian_reboot_notes_name_the_entry_and_the_words(host_root):
    said = notes(host_root("pending-boot-debian"))
    grub = "/boot/grub/grub.cfg's default entry"
    assert said == {
        "iommu.enabled": f"configured, not yet in effect: intel_iommu=on iommu=pt are in {grub}, not in /proc/cmdline: "
                         "reboot",
        "cpu.vulnerabilities": f"configured, not yet in effect: mitigations=off is in /proc/cmdline, not in {grub}: "
                               "reboot",
        "memory.hugepages": "configured, not yet in effect: default_hugepagesz=1G hugepagesz=1G hugepages=8 are in "
                            f"{grub}, not in /proc/cmdline: reboot",
    }


def test_debian_unregenerated_names_the_drop_in_and_update_grub(host_root):
    said = notes(host_root("pending-boot-debian-unregenerated"))
    assert said["iommu.enabled"] == (
        "configured, not yet in effect: intel_iommu=on iommu=pt are in GRUB_CMDLINE_LINUX_DEFAULT in "
        "/etc/default/grub.d/kvm-host.cfg, not in /boot/grub/grub.cfg's default entry: run update-grub, then reboot")
    assert said["cpu.vulnerabilities"] == (
        "configured, not yet in effect: mitigations=off is in /boot/grub/grub.cfg's default entry, not in "
        "GRUB_CMDLINE_LINUX or GRUB_CMDLINE_LINUX_DEFAULT (/etc/default/grub, /etc/default/grub.d/kvm-host.cfg): "
        "run update-grub, then reboot")


def test_the_pending_step_keeps_the_status_and_reaches_the_report(host_root):
    report = kvmcheck.run(str(host_root("pending-boot-debian")), only=MINE)
    assert report.pending == {"reboot": ["cpu.vulnerabilities", "iommu.enabled", "memory.hugepages"]}
    data = report.to_dict()
    assert data["pending"]["reboot"] == ["cpu.vulnerabilities", "iommu.enabled", "memory.hugepages"]
    assert "pending reboot: cpu.vulnerabilities, iommu.enabled, memory.hugepages" in data["verdict_reason"]


def test_rhel9_saved_entry_picks_an_older_bls_entry_over_the_newest(host_root):
    root = host_root("pending-boot-rhel9-bls")
    found = boot(root)
    assert (found.next_boot.loader, found.next_boot.source) == ("grub-bls", f"{RHEL9_ENTRY} (GRUB's default entry)")
    assert notes(root, ["iommu.enabled"])["iommu.enabled"] == (
        f"configured, not yet in effect: {RHEL9_ENTRY} (GRUB's default entry) has intel_iommu=on where /proc/cmdline "
        "has intel_iommu=off: reboot")
    # Without saved_entry GRUB boots the first entry of blscfg's order: the newest kernel.
    (root / "boot/grub2/grubenv").write_text("# GRUB Environment Block\nboot_success=1\n" + "#" * 984)
    assert boot(root).next_boot.choice.entry_id == f"{MID}-5.14.0-427.16.1.el9_4.x86_64"


def test_kvm_intel_nested_on_the_command_line_is_a_fact_kvm_nested_can_use(host_root):
    found = boot(host_root("pending-boot-rhel9-bls"))
    assert found.pending(("kvm_intel.nested", "kvm_amd.nested")) == (
        "reboot", f"configured, not yet in effect: kvm_intel.nested=1 is in {RHEL9_ENTRY} (GRUB's default entry), not "
                  "in /proc/cmdline: reboot")
    assert found.pending(("kvm_intel.",)) == found.pending(("kvm_intel.nested",))
    assert found.pending(("kvm_amd.nested",)) is None


def test_rhel9_grub_default_behind_the_entries_is_fixed_with_grubby(host_root):
    root = host_root("pending-boot-rhel9-bls")
    conf = root / "etc/default/grub"
    conf.write_text(conf.read_text().replace(" kvm_intel.nested=1", ""))
    assert boot(root).pending(("kvm_intel.",)) == (
        "regenerate-bootloader",
        f"configured, not yet in effect: kvm_intel.nested=1 is in {RHEL9_ENTRY} (GRUB's default entry), not in "
        "GRUB_CMDLINE_LINUX (/etc/default/grub); kvm_intel.nested=1 is in "
        f"{RHEL9_ENTRY} (GRUB's default entry), not in /proc/cmdline: run grubby --update-kernel=ALL "
        "--remove-args='kvm_intel.nested', then reboot")


def test_rhel8_options_come_from_grubenv_kernelopts(host_root):
    root = host_root("pending-boot-rhel8-kernelopts")
    found = boot(root)
    entry = f"/boot/loader/entries/{MID}-4.18.0-513.5.1.el8_9.x86_64.conf"
    assert found.next_boot.source == f"kernelopts in /boot/grub2/grubenv (the options of {entry}, GRUB's default entry)"
    assert found.next_boot.cmdline.get("intel_iommu") == "on"
    # No kernelopts in grubenv: grub.cfg's fallback 'set kernelopts=...' (written before intel_iommu=on was added)
    # is used, and /etc/default/grub is now ahead of it.
    (root / "boot/grub2/grubenv").write_text(f"# GRUB Environment Block\nsaved_entry={MID}-4.18.0-513.5.1.el8_9.x86_64\n")
    found = boot(root)
    assert found.next_boot.cmdline.get("intel_iommu") is None
    assert triples(root, ["iommu.enabled"]) == {("iommu.enabled", "warn", "regenerate-bootloader")}
    assert found.pending(("intel_iommu",))[1].endswith("run grubby --update-kernel=ALL --args='intel_iommu=on', "
                                                       "then reboot")


def test_grub_reboot_next_entry_is_the_next_boot(host_root):
    root = host_root("pending-boot-debian")
    (root / "boot/grub/grubenv").write_text(
        "# GRUB Environment Block\nnext_entry=gnulinux-advanced-4f1c3e0a-7d2b-4c55-9a8e-2b6f0d9e5c41>"
        "gnulinux-6.1.0-18-amd64-recovery-4f1c3e0a-7d2b-4c55-9a8e-2b6f0d9e5c41\n")
    found = boot(root)
    assert found.next_boot.choice.title == "Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)"
    assert found.next_boot.choice.how == "next_entry in grubenv (grub-reboot: for the next boot only)"
    # The recovery entry has only GRUB_CMDLINE_LINUX (empty here): no IOMMU option, and mitigations=off is gone.
    assert triples(root) == {("iommu.enabled", "warn", None), ("cpu.vulnerabilities", "warn", "reboot"),
                             ("memory.hugepages", "pass", None)}


def test_an_offline_root_without_proc_cmdline_still_compares_the_configuration(host_root):
    root = host_root("pending-boot-debian-unregenerated")
    (root / "proc/cmdline").unlink()
    found = boot(root)
    assert (found.running, found.reboot) == (None, ())
    assert [c.key for c in found.regenerate] == ["intel_iommu", "iommu", "hugepages", "mitigations"]


def test_systemd_boot_default_entry_and_etc_kernel_cmdline(host_root):
    root = host_root("pending-boot-debian")
    shutil.rmtree(root / "boot/grub")
    (root / "etc/default/grub").unlink()
    esp = root / "boot/efi/loader"
    (esp / "entries").mkdir(parents=True)
    (esp / "loader.conf").write_text("#timeout 3\n#console-mode keep\ndefault 4f1c3e0a*-6.1.0-17-amd64.conf\n")
    for version, extra in (("6.1.0-18-amd64", " intel_iommu=on"), ("6.1.0-17-amd64", "")):
        (esp / f"entries/4f1c3e0a7d2b4c559a8e2b6f0d9e5c41-{version}.conf").write_text(
            f"# Boot Loader Specification type#1 entry\ntitle      Debian GNU/Linux 12 (bookworm)\nversion    {version}\n"
            "machine-id 4f1c3e0a7d2b4c559a8e2b6f0d9e5c41\nsort-key   debian\n"
            f"options    root=UUID=4f1c3e0a-7d2b-4c55-9a8e-2b6f0d9e5c41 ro quiet{extra}\n"
            f"linux      /4f1c3e0a7d2b4c559a8e2b6f0d9e5c41/{version}/linux\n"
            f"initrd     /4f1c3e0a7d2b4c559a8e2b6f0d9e5c41/{version}/initrd.img-{version}\n")
    (root / "etc/kernel").mkdir()
    (root / "etc/kernel/cmdline").write_text("root=UUID=4f1c3e0a-7d2b-4c55-9a8e-2b6f0d9e5c41 ro quiet intel_iommu=on\n")
    found = boot(root)
    entry = "/boot/efi/loader/entries/4f1c3e0a7d2b4c559a8e2b6f0d9e5c41-6.1.0-17-amd64.conf"
    assert (found.next_boot.loader, found.next_boot.source) == ("systemd-boot", f"{entry} (systemd-boot's default entry)")
    assert found.pending(("intel_iommu",)) == (
        "regenerate-bootloader",
        f"configured, not yet in effect: intel_iommu=on is in /etc/kernel/cmdline, not in {entry} (systemd-boot's "
        "default entry): run 'kernel-install add VERSION KERNEL' for the installed kernels (reinstalling the kernel "
        "package does it), then reboot")
    # Without a default, the newest entry: 6.1.0-18, which has intel_iommu=on: a reboot is all that is pending.
    (esp / "loader.conf").write_text("timeout 3\n")
    assert boot(root).pending(("intel_iommu",)) == (
        "reboot", "configured, not yet in effect: intel_iommu=on is in /boot/efi/loader/entries/"
                  "4f1c3e0a7d2b4c559a8e2b6f0d9e5c41-6.1.0-18-amd64.conf (systemd-boot's default entry), not in "
                  "/proc/cmdline: reboot")
    (esp / "loader.conf").write_text("default @saved\n")
    found = boot(root)
    assert found.next_boot.cmdline is None and "EFI variable" in found.next_boot.why
    assert found.reboot == ()


# --- what an unprivileged user sees on RHEL: grub.cfg and grubenv are 0600 -----------------------------------
NOBODY_RUN = """
import json, sys
import kvmcheck
report = kvmcheck.run(sys.argv[1], only=["iommu.enabled"])
print(json.dumps([(r.id, r.status.value, r.pending, r.pending_note) for r in report.checks]))
"""


def test_unreadable_grub_cfg_compares_the_configuration_with_proc_cmdline(public_tmp):
    root = materialize("pending-boot-rhel9-bls", public_tmp)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (root / "boot/grub2/grub.cfg").chmod(0o600)
    (root / "boot/grub2/grubenv").chmod(0o600)
    (root / "boot/efi/EFI/redhat").mkdir(parents=True)
    (root / "boot/efi").chmod(0o700)  # vfat mounted umask=0077
    proc = subprocess.run(as_nobody([sys.executable, "-c", NOBODY_RUN, str(root)]), capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr
    [(check_id, status, pending, note)] = json.loads(proc.stdout)
    assert (check_id, status, pending) == ("iommu.enabled", "warn", "regenerate-bootloader")
    assert note == (
        "configured, not yet in effect: GRUB_CMDLINE_LINUX in /etc/default/grub has intel_iommu=on where "
        "/proc/cmdline has intel_iommu=off (the boot loader's configuration is unreadable: "
        "/boot/efi/loader/loader.conf: Permission denied; /boot/efi/EFI/*/grub.cfg: Permission denied; "
        "/boot/grub2/grub.cfg: Permission denied): run grubby --update-kernel=ALL --args='intel_iommu=on', "
        "then reboot")


def test_kvm_nested_on_the_command_line_is_pending_a_reboot_and_joins_a_pending_reload(host_root):
    """kvm_intel.nested=1 in the default BLS entry, nested=N loaded: kvm.nested passes (informational) and
    waits for the reboot; with nested=1 also in modprobe.d, the reboot (the later step) covers both."""
    root = host_root("pending-boot-rhel9-bls")
    (root / "sys/module/kvm_intel/parameters").mkdir(parents=True)
    (root / "sys/module/kvm").mkdir(parents=True)
    (root / "sys/module/kvm_intel/parameters/nested").write_text("N\n")
    for module in ("kvm", "kvm_intel"):  # loadable modules, loaded (a built-in one has no initstate)
        (root / f"sys/module/{module}/initstate").write_text("live\n")
    (root / "proc/modules").write_text("kvm_intel 409600 0 - Live 0x0000000000000000\n"
                                       "kvm 1146880 1 kvm_intel, Live 0x0000000000000000\n")
    assert triples(root, ["kvm.nested"]) == {("kvm.nested", "pass", "reboot")}
    assert notes(root, ["kvm.nested"])["kvm.nested"] == (
        f"configured, not yet in effect: kvm_intel.nested=1 is in {RHEL9_ENTRY} (GRUB's default entry), not in "
        "/proc/cmdline: reboot")
    (root / "etc/modprobe.d").mkdir(parents=True)
    (root / "etc/modprobe.d/kvm.conf").write_text("options kvm_intel nested=1\n")
    assert triples(root, ["kvm.nested"]) == {("kvm.nested", "pass", "reboot")}
    note = notes(root, ["kvm.nested"])["kvm.nested"]
    assert note.startswith("configured, not yet in effect: nested=1 for kvm_intel in /etc/modprobe.d/kvm.conf; "
                           "reload kvm_intel")
    assert note.endswith(f"; and kvm_intel.nested=1 is in {RHEL9_ENTRY} (GRUB's default entry), not in "
                         "/proc/cmdline: reboot")
