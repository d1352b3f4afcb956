# SPDX-License-Identifier: GPL-2.0-or-later
"""Configuration and profiles (issue 8): each profile on captured roots, ignores, overrides, and config errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kvmcheck
from kvmcheck.core import config as kconfig
from kvmcheck.core.config import ConfigError, list_profiles, load
from kvmcheck.core.model import Status
from kvmcheck.core.registry import load_checks

from conftest import HOSTS, validate_report

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]
PROFILES = ("default", "rhel-virt-host", "openstack-compute", "proxmox-ve", "gpu-passthrough", "migration-pool",
            "pvm-sandbox")
IDS = [c.id for c in load_checks()[0]]


@pytest.fixture(autouse=True)
def _no_site_config(monkeypatch, tmp_path):
    """Never read this machine's /etc/kvmcheck/config.toml in tests."""
    monkeypatch.setattr(kconfig, "DEFAULT_CONFIG", str(tmp_path / "no-such-config.toml"))


def cli(*args, cwd=None):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120, cwd=cwd)


def by_id(report):
    return {r.id: r for r in report.checks}


def blocking(report):
    return sorted(r.id for r in report.blocking)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# -- variants of captured roots ------------------------------------------------------------------------------

def without_nfs(root: Path) -> Path:
    """prepared-intel-host with its NFS images mount taken away (the images directory is then on /)."""
    mounts = root / "proc" / "mounts"
    mounts.write_text("".join(line + "\n" for line in mounts.read_text().splitlines() if " nfs4 " not in line))
    return root


def with_kvm_modules(root: Path) -> Path:
    """An IOMMU capture plus the kvm and kvm_intel modules of prepared-intel-host (it lacked only those)."""
    for mod in ("kvm", "kvm_intel"):
        shutil.copytree(HOSTS / "prepared-intel-host" / "sys" / "module" / mod, root / "sys" / "module" / mod)
    return root


PVE_DPKG = """
Package: pve-qemu-kvm
Status: install ok installed
Architecture: amd64
Version: 9.0.2-3

Package: proxmox-ve
Status: install ok installed
Architecture: all
Version: 8.2.0
"""


def as_proxmox(root: Path) -> Path:
    """A Debian 12 capture turned into a Proxmox VE 8 node: pve-qemu-kvm, the no-subscription repository."""
    status = root / "var" / "lib" / "dpkg" / "status"
    status.write_text(status.read_text().rstrip("\n") + "\n" + PVE_DPKG)
    (root / "etc" / "apt" / "sources.list.d" / "pve-install-repo.list").write_text(
        "deb http://download.proxmox.com/debian/pve bookworm pve-no-subscription\n")
    return root


# -- the profiles ------------------------------------------------------------------------------------------

def test_profiles_listed_with_descriptions():
    listed = dict(list_profiles())
    assert set(PROFILES) <= set(listed)
    assert list(listed)[0] == "default"
    assert all(desc and not desc.startswith("(broken") for desc in listed.values())
    proc = cli("profiles")
    assert proc.returncode == 0, proc.stderr
    for name in PROFILES:
        assert any(line.split()[0] == name for line in proc.stdout.splitlines())


@pytest.mark.parametrize("name", PROFILES)
def test_shipped_profile_is_valid_against_the_real_check_ids(name):
    cfg = load(profile=name, known_ids=IDS)
    assert cfg.profile == name and cfg.files[-1].endswith(f"{name}.toml")


def test_migration_pool_needs_shared_storage(host_root):
    root = without_nfs(host_root("prepared-intel-host"))
    default = kvmcheck.run(str(root), profile="default")
    assert default.ready, blocking(default)
    assert by_id(default)["storage.shared"].status == Status.WARN
    pool = kvmcheck.run(str(root), profile="migration-pool")
    assert blocking(pool) == ["storage.shared"]
    shared = by_id(pool)["storage.shared"]
    assert shared.status == Status.FAIL and shared.original_status == Status.WARN
    d = pool.to_dict()
    assert d["config"]["profile"] == "migration-pool"
    res = next(c for c in d["checks"] if c["id"] == "storage.shared")
    assert res["status"] == "fail" and res["original_status"] == "warn" and "ignored" not in res
    # with its NFS mount the same host is a fine pool member
    assert not kvmcheck.run(str(host_root("storage-nfs4")), profile="migration-pool").blocking


def test_pvm_sandbox_accepts_software_kvm(host_root):
    root = host_root("pvm-host")
    default = kvmcheck.run(str(root))
    assert "cpu.virt-flags" in blocking(default)
    sandbox = kvmcheck.run(str(root), profile="pvm-sandbox")
    assert sandbox.ready, blocking(sandbox)
    flags = by_id(sandbox)["cpu.virt-flags"]
    assert flags.status == Status.PASS and "PVM (kvm_pvm)" in flags.summary and "accepted" in flags.summary
    ignored = {r.id for r in sandbox.checks if r.ignored}
    assert ignored == {"libvirt.layout", "network.default-nat", "storage.images-dir"}
    # a VM without nested virtualization and without PVM still has no KVM at all
    cloud = kvmcheck.run(str(host_root("cloud-vm-no-nested")), profile="pvm-sandbox")
    assert {"cpu.virt-flags", "kvm.modules"} <= set(blocking(cloud))


def test_pvm_sandbox_turns_an_acceleration_failure_into_a_warning():
    cfg = load(profile="pvm-sandbox", known_ids=IDS)
    from kvmcheck.core.model import Result

    r = Result("kvm.acceleration", "t", Status.FAIL, "guest code is not hardware-accelerated", "d", "fix")
    [r] = cfg.apply([r])  # a new Result: results are values
    assert r.status == Status.WARN and r.original_status == Status.FAIL and "fail turned into warn" in r.detail


def test_gpu_passthrough_needs_isolated_gpus(host_root, tmp_path):
    shared = with_kvm_modules(host_root("iommu-intel-gpu-shared"))
    default = kvmcheck.run(str(shared))
    assert not default.blocking, blocking(default)  # a captured IOMMU root: no verdict, nothing blocks
    assert by_id(default)["iommu.enabled"].status == Status.WARN
    gpu = kvmcheck.run(str(shared), profile="gpu-passthrough")
    assert blocking(gpu) == ["iommu.enabled"]
    assert "cannot be assigned alone" in by_id(gpu)["iommu.enabled"].summary
    isolated = with_kvm_modules(host_root("iommu-intel-gpu-isolated"))
    assert not kvmcheck.run(str(isolated), profile="gpu-passthrough").blocking


def test_rhel_virt_host(host_root):
    assert kvmcheck.run(str(host_root("prepared-intel-host")), profile="rhel-virt-host").ready
    # RHEL 9 packages in place, but no SELinux: fine for kvmcheck, not for a RHEL virtualization host
    rhel = kvmcheck.run(str(host_root("pkg-rhel9-enabled")), profile="rhel-virt-host")
    assert blocking(rhel) == ["security.svirt"]
    # a Debian host lacks qemu-kvm, libvirt-daemon-kvm and virt-install (as RHEL names them)
    deb = by_id(kvmcheck.run(str(host_root("pkg-debian12-deb822")), profile="rhel-virt-host"))["packages.virt"]
    assert deb.status == Status.FAIL and "qemu-kvm" in deb.summary and "dnf install" not in deb.remediation


def test_openstack_compute(host_root):
    assert not kvmcheck.run(str(host_root("cap-plenty")), profile="openstack-compute").blocking
    # prepared-intel-host has 2 CPU threads: a fine KVM host, too small for a compute node
    prepared = str(host_root("prepared-intel-host"))
    small = kvmcheck.run(prepared, profile="openstack-compute")
    assert kvmcheck.run(prepared).ready
    assert blocking(small) == ["capacity.resources"]
    assert "minimum 8" in by_id(small)["capacity.resources"].detail
    vuln = kvmcheck.run(str(host_root("vuln-one-vulnerable")), profile="openstack-compute")
    assert "cpu.vulnerabilities" in blocking(vuln)


def test_proxmox_ve(host_root):
    plain = host_root("pkg-debian12-deb822")
    assert not kvmcheck.run(str(plain)).blocking
    report = kvmcheck.run(str(plain), profile="proxmox-ve")
    assert blocking(report) == ["packages.virt", "repos.configured"]
    checks = by_id(report)
    assert "pve-qemu-kvm" in checks["packages.virt"].summary
    assert "proxmox.com" in checks["repos.configured"].summary
    pve = kvmcheck.run(str(as_proxmox(plain)), profile="proxmox-ve")
    assert not pve.blocking, blocking(pve)  # a captured package root: no verdict, nothing blocks
    assert by_id(pve)["libvirt.layout"].ignored


# -- thresholds and requirements from a user's file -----------------------------------------------------------

def test_thresholds_and_extends_a_profile(host_root, tmp_path):
    root = without_nfs(host_root("prepared-intel-host"))
    conf = write(tmp_path / "site.toml", 'extends = "migration-pool"\n\n[thresholds]\nmin_kernel = "6.1"\n'
                                         'min_host_memory_gib = 256\n')
    report = kvmcheck.run(str(root), config=conf)
    assert blocking(report) == ["capacity.resources", "kernel.version", "storage.shared"]
    assert report.config == {"profile": "migration-pool", "files": [str(Path(kconfig.__file__).parent.parent / "profiles"
                                                                         / "migration-pool.toml"), conf]}
    # a command-line setting that differs from the default wins over the file
    from kvmcheck.facts.context import Settings

    report = kvmcheck.run(str(root), config=conf, settings=Settings(min_kernel="5.0"))
    assert by_id(report)["kernel.version"].status == Status.PASS


def test_required_shared_storage_types(host_root, tmp_path):
    root = host_root("storage-nfs4")
    ok = kvmcheck.run(str(root), config=write(tmp_path / "a.toml", '[require]\nshared_storage = ["nfs4", "ceph"]\n'))
    assert by_id(ok)["storage.shared"].status == Status.PASS
    bad = kvmcheck.run(str(root), config=write(tmp_path / "b.toml", '[require]\nshared_storage = ["ceph"]\n'))
    shared = by_id(bad)["storage.shared"]
    assert shared.status == Status.FAIL and "ceph" in shared.summary and "NFS" in shared.summary
    assert shared.evidence["found_types"] == ["nfs", "nfs4"]


def test_required_repos_and_packages(host_root, tmp_path):
    root = host_root("pkg-debian12-deb822")
    conf = write(tmp_path / "r.toml", '[require]\nrepos = ["deb.debian.org/debian-security"]\n'
                                      'packages = ["qemu-system-x86", "ovmf"]\n')
    assert not kvmcheck.run(str(root), config=conf).blocking


# -- ignores -------------------------------------------------------------------------------------------------

def test_ignored_check_still_runs_and_shows(host_root, tmp_path):
    root = host_root("pvm-host")
    conf = write(tmp_path / "i.toml", '[ignore]\n"cpu.virt-flags" = "this CI runner only serves PVM sandboxes"\n'
                                      '"network.*" = "networking is provided by the sandbox runtime"\n')
    report = kvmcheck.run(str(root), config=conf)
    assert report.ready and report.verdict == "ready"
    flags = by_id(report)["cpu.virt-flags"]
    assert flags.status == Status.FAIL and flags.ignored  # the status is shown, not vanished
    assert flags.ignore_reason == "this CI runner only serves PVM sandboxes"
    assert "Ignored by the configuration" in flags.detail
    assert all(r.ignored for r in report.checks if r.id.startswith("network."))
    assert report.summary["fail"] >= 1
    d = report.to_dict()  # validated against the schema by conftest
    res = next(c for c in d["checks"] if c["id"] == "cpu.virt-flags")
    assert res["ignored"] is True and res["ignore_reason"].startswith("this CI runner")
    # --strict: an ignored warning does not block either
    strict = kvmcheck.run(str(root), config=conf, strict=True)
    assert not any(r.ignored for r in strict.blocking)


def test_severity_can_raise_a_pass(host_root, tmp_path):
    conf = write(tmp_path / "s.toml", '[severity."kernel.version"]\npass = "fail"\n')
    r = by_id(kvmcheck.run(str(host_root("prepared-intel-host")), config=conf))["kernel.version"]
    assert r.status == Status.FAIL and r.remediation  # the schema wants a remediation for a failure


# -- errors: file, line and what was expected ----------------------------------------------------------------

ERRORS = [
    ("unknown-key", '[thresholds]\nmin_kernel = "5.4"\nmin_ram_gib = 4\n', ":3: unknown key 'min_ram_gib' in [thresholds]"),
    ("unknown-top", 'description = "x"\n\n[treshold]\nx = 1\n', ":3: unknown key 'treshold'"),
    ("wrong-type", '[thresholds]\nmin_host_cpus = "eight"\n', ":2: thresholds.min_host_cpus is 'eight' (a string); expected an integer >= 1"),
    ("wrong-status", '[severity."storage.shared"]\nwarn = "fatal"\n', ":2: severity.\"storage.shared\".warn is 'fatal'; expected one of: pass, warn, fail, skip"),
    ("unknown-id", '\n[severity."storage.shraed"]\nwarn = "fail"\n', ":2: unknown check id 'storage.shraed' in [severity]"),
    ("unknown-ignore", '[ignore]\n"cpu.virtflags" = "why"\n', ":2: unknown check id 'cpu.virtflags' in [ignore]"),
    ("no-reason", '[ignore]\n"cpu.virt-flags" = ""\n', ":2: ignore.\"cpu.virt-flags\" has an empty reason"),
    ("reason-table", '[ignore."cpu.virt-flags"]\nwhy = "x"\n', ":1: ignore.\"cpu.virt-flags\" is a table; expected the reason as a string"),
    ("bad-storage", '[require]\nshared_storage = ["nfs5"]\n', ":2: unknown shared storage type 'nfs5'"),
    ("bad-kernel", '[thresholds]\nmin_kernel = "five"\n', ":2: thresholds.min_kernel 'five'"),
    ("syntax", '[thresholds]\nmin_kernel = 5.4.1\n', ":2:"),
    ("unknown-profile", 'extends = "migraton-pool"\n', ":1: no profile 'migraton-pool'; expected one of: default"),
]


@pytest.mark.parametrize("name,text,expected", ERRORS, ids=[e[0] for e in ERRORS])
def test_config_errors_name_file_and_line(tmp_path, name, text, expected):
    conf = write(tmp_path / f"{name}.toml", text)
    with pytest.raises(ConfigError) as err:
        load(config=conf, known_ids=IDS)
    assert str(err.value).startswith(conf + expected), str(err.value)


def test_syntax_error_has_line_and_column(tmp_path):
    conf = write(tmp_path / "x.toml", 'description = "a"\n[severity."storage.shared"\nwarn = "fail"\n')
    with pytest.raises(ConfigError, match=r"x\.toml:2:\d+: invalid TOML: "):
        load(config=conf)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read: No such file or directory"):
        load(config=str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="not a regular file"):
        load(config=str(tmp_path))
    with pytest.raises(ConfigError, match="--profile: no profile 'nope'; expected one of: default, "):
        load(profile="nope")


def test_extends_loop(tmp_path):
    write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write(tmp_path / "b.toml", '# b\nextends = "./a.toml"\n')
    with pytest.raises(ConfigError) as err:
        load(config=str(tmp_path / "a.toml"))
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path}/b.toml:2: extends loop: {tmp_path}/a.toml -> {tmp_path}/b.toml -> "
                          f"{tmp_path}/a.toml"), msg
    write(tmp_path / "self.toml", 'extends = "self.toml"\n')
    with pytest.raises(ConfigError, match="extends loop"):
        load(config=str(tmp_path / "self.toml"))


def test_later_layers_win(tmp_path):
    base = write(tmp_path / "base.toml", '[thresholds]\nmin_host_cpus = 4\nguest_vcpus = 4\n[require]\n'
                                         'packages = ["a", "b"]\n[severity."storage.*"]\nwarn = "fail"\n')
    top = write(tmp_path / "top.toml", f'extends = "{base}"\n[thresholds]\nmin_host_cpus = 16\n[require]\n'
                                       'packages = ["c"]\n[severity."storage.shared"]\nwarn = "pass"\n')
    cfg = load(config=top, profile="migration-pool", known_ids=IDS)
    assert cfg.files[1:] == [base, top] and cfg.profile == "migration-pool"
    assert cfg.thresholds == {"min_host_cpus": 16, "guest_vcpus": 4}
    assert cfg.require == {"packages": ["c"]}
    from kvmcheck.core.model import Result

    shared = Result("storage.shared", "t", Status.WARN, "s")
    images = Result("storage.images-dir", "t", Status.WARN, "s", remediation="r")
    shared, images = cfg.apply([shared, images])
    assert shared.status == Status.PASS and images.status == Status.FAIL  # the exact id before the glob


def test_key_lines_scanner():
    text = ('a = 1\n[severity."storage.shared"]\nwarn = "fail"\n[ignore]\n"cpu.virt-flags" = """\nx\n"""\n'
            "'kvm.device' = 'y'\n[ thresholds ]\nmin_kernel=\"1\"\n")
    lines = kconfig.key_lines(text)
    assert lines[("severity", "storage.shared", "warn")] == 3
    assert lines[("ignore", "cpu.virt-flags")] == 5
    assert lines[("ignore", "kvm.device")] == 8
    assert lines[("thresholds", "min_kernel")] == 10


def test_site_config_only_on_the_live_root(host_root, tmp_path, monkeypatch):
    site = write(tmp_path / "config.toml", '[ignore]\n"cpu.virt-flags" = "site policy"\n')
    monkeypatch.setattr(kconfig, "DEFAULT_CONFIG", site)
    assert load(root="/").files == [site]
    root = host_root("pvm-host")
    (root / "etc" / "kvmcheck").mkdir(parents=True)
    (root / "etc" / "kvmcheck" / "config.toml").write_text('[ignore]\n"cpu.virt-flags" = "I vouch for myself"\n')
    report = kvmcheck.run(str(root))  # neither the site file nor the root's own file applies to --root
    assert report.config is None and not report.ready


# -- the command line: exit codes -----------------------------------------------------------------------------

def test_cli_migration_pool_exit_codes(host_root):
    root = str(without_nfs(host_root("prepared-intel-host")))
    pool = cli("check", "--root", root, "--profile", "migration-pool", "--no-color")
    assert pool.returncode == 1, pool.stderr
    assert "storage.shared" in pool.stdout and "FAIL" in pool.stdout
    default = cli("check", "--root", root, "--profile", "default", "--no-color")
    assert default.returncode == 0, default.stdout + default.stderr


def test_cli_json_carries_ignored_and_original_status(host_root, tmp_path):
    conf = write(tmp_path / "c.toml", 'extends = "pvm-sandbox"\n[ignore]\n"kvm.device" = "root runs the VMs"\n')
    proc = cli("check", "--root", str(host_root("pvm-host")), "--config", conf, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = validate_report(json.loads(proc.stdout))
    assert data["config"]["profile"] == "pvm-sandbox" and data["config"]["files"][-1] == conf
    device = next(c for c in data["checks"] if c["id"] == "kvm.device")
    assert device["status"] == "warn" and device["ignored"] is True


@pytest.mark.parametrize("args,message", [
    (["--config", "nope.toml"], "nope.toml: cannot read: No such file or directory"),
    (["--profile", "nope"], "--profile: no profile 'nope'"),
    (["--config", "bad.toml"], "bad.toml:2: unknown check id 'storage.shraed'"),
    (["--config", "syntax.toml"], "syntax.toml:1:"),
])
def test_cli_config_errors_exit_2_without_traceback(host_root, tmp_path, args, message):
    write(tmp_path / "bad.toml", '[severity]\n"storage.shraed" = { warn = "fail" }\n')
    write(tmp_path / "syntax.toml", '[thresholds\n')
    proc = cli("check", "--root", str(host_root("storage-none")), *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""


# -- precedence: command line > config file > profile > defaults, recorded, never guessed -----------------------

SETTINGS_PROBE = '''
from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check


@check("probe.settings", "Says the run's check timeout and minimum kernel, and where each came from", reads=())
def probe(ctx):
    """What: the settings.  Why: to see their precedence.  Fix: none."""
    s = ctx.settings
    return Outcome.passed(f"check_timeout {s.check_timeout:g} from the {s.source('check_timeout')}; "
                          f"min_kernel {s.min_kernel} from the {s.source('min_kernel')}")
'''


@pytest.fixture(scope="module")
def probe_site(tmp_path_factory):
    from test_plugin import install_fake_distribution

    site = tmp_path_factory.mktemp("settings-probe")
    install_fake_distribution(site, "kvmcheck-settings-probe", {"probe": "kvmcheck_settings_probe"},
                              {"kvmcheck_settings_probe.py": SETTINGS_PROBE})
    return site


def test_the_command_line_beats_the_config_file_which_beats_the_profile_which_beats_the_defaults(
        probe_site, host_root, tmp_path):
    from test_plugin import kvmcheck as plugin_cli

    root = str(host_root("prepared-intel-host"))
    profile = write(tmp_path / "profile.toml", '[thresholds]\ncheck_timeout = 9\nmin_kernel = "5.1"\n')
    conf = write(tmp_path / "site.toml", '[thresholds]\ncheck_timeout = 7\n')

    def said(*args):
        proc = plugin_cli("check", "--root", root, "--only", "probe.settings", "-f", "json", *args, sites=[probe_site])
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["checks"][-1]["summary"]

    assert said() == "check_timeout 5 from the default; min_kernel 2.6.20 from the default"
    assert said("--profile", profile) == "check_timeout 9 from the profile; min_kernel 5.1 from the profile"
    assert said("--profile", profile, "--config", conf) == \
        "check_timeout 7 from the config file; min_kernel 5.1 from the profile"
    # typed, even when equal to the default: the command line wins (it lost to the file before)
    assert said("--profile", profile, "--config", conf, "--timeout", "5", "--min-kernel", "2.6.20") == \
        "check_timeout 5 from the command line; min_kernel 2.6.20 from the command line"
    assert said("--config", conf, "--timeout", "5") == \
        "check_timeout 5 from the command line; min_kernel 2.6.20 from the default"


def test_the_api_treats_the_keyword_arguments_given_as_the_command_line(host_root, tmp_path):
    from kvmcheck.core.settings import Settings

    root = str(host_root("prepared-intel-host"))
    conf = write(tmp_path / "site.toml", '[thresholds]\nmin_kernel = "99.0"\ncheck_timeout = 7\n')

    def minimum(**options):
        check = by_id(kvmcheck.run(root, only=["kernel.version"], config=conf, **options))["kernel.version"]
        return check.status, check.evidence["minimum"]

    assert minimum() == (Status.FAIL, "99.0.0")
    assert minimum(settings=Settings(min_kernel="2.6.20")) == (Status.PASS, "2.6.20")  # given: wins
    assert minimum(settings=Settings(online=False)) == (Status.FAIL, "99.0.0")  # min_kernel not given
    cfg = load(config=conf, known_ids=IDS)
    assert cfg.settings({"check_timeout": 5.0}).check_timeout == 5.0
    assert cfg.settings({}).check_timeout == 7.0 and cfg.settings({}).source("check_timeout") == "config file"
    assert Settings(guest_vcpus=2).given() == {"guest_vcpus": 2} and Settings().given() == {}


def test_the_check_timeout_threshold_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match=r":2: thresholds.check_timeout is 0 \(an integer\); expected a number of "
                                          r"seconds > 0"):
        load(config=write(tmp_path / "c.toml", "[thresholds]\ncheck_timeout = 0\n"), known_ids=IDS)


def test_a_setting_assigned_after_construction_is_given_too():
    from kvmcheck.core.settings import Settings

    s = Settings()
    s.images_min_free_gib = 1.0
    assert s.given() == {"images_min_free_gib": 1.0} and s.source("images_min_free_gib") == "command line"
