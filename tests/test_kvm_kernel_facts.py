# SPDX-License-Identifier: GPL-2.0-or-later
"""kvm.* and kernel.* as judges of facts; modprobe.d read once, as kmod applies it (kvmcheck.facts.kvm)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvmcheck.checks.kernel import kernel_modules_blacklist, kernel_version
from kvmcheck.checks.kvm import kvm_modules, kvm_nested
from kvmcheck.core.host import Host
from kvmcheck.core.settings import Settings
from kvmcheck.facts import Later, Readout
from kvmcheck.facts.kvm import Accounts, ModprobeD, ModuleParameters, accounts, modprobe_d
from kvmcheck.facts.system import Arch
from kvmcheck.parsers.cpuinfo import parse_cpuinfo
from kvmcheck.parsers.modprobe import Option, parse_modprobe_options

from conftest import as_nobody

INTEL = parse_cpuinfo("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vmx\n")
NO_MODPROBE = ModprobeD((), (), ())
NO_PARAMETERS = ModuleParameters(())


def _modprobe(root, files):
    for rel, text in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return modprobe_d(Host(str(root)))


def test_options_join_continuations():
    assert parse_modprobe_options("# x\noptions kvm_intel \\\n  nested=1 ept=0\noptions kvm-amd nested=0 # c\n") == [
        Option("kvm_intel", ("nested=1", "ept=0"), 2), Option("kvm_amd", ("nested=0",), 4)]


def test_modprobe_d_applies_shadowing_and_continuations_the_old_inline_parse_did_not(tmp_path):
    # The old kvm.nested parse read /etc/modprobe.d only, line by line: it missed the continued line and
    # took the package's nested=1 in /usr/lib, which kmod never reads (the /etc file of the same name hides it).
    conf = _modprobe(tmp_path, {"/etc/modprobe.d/kvm.conf": "options kvm_intel \\\n nested=0\n",
                                "/usr/lib/modprobe.d/kvm.conf": "options kvm_intel nested=1\nblacklist kvm\n",
                                "/run/modprobe.d/b.conf": "install kvm_amd /bin/false\n"})
    assert conf.dirs == ("/etc/modprobe.d", "/run/modprobe.d", "/usr/lib/modprobe.d")
    assert conf.shadowed == ("/usr/lib/modprobe.d/kvm.conf",)
    assert conf.options("kvm_intel", "nested") == [("/etc/modprobe.d/kvm.conf", 1, "nested=0")]
    assert [(p, b.module, b.how) for p, b in conf.blocks(["kvm", "kvm_amd"])] == [
        ("/run/modprobe.d/b.conf", "kvm_amd", "install /bin/false")]
    nested = kvm_nested.func(family="x86", modules={"kvm": "loaded", "kvm_intel": "loaded"}, cmdline=None,
                             sys_module=True, nested_parameters={"kvm_intel": "N"}, modprobe_d=conf,
                             module_parameters=NO_PARAMETERS)
    assert (nested.status.value, nested.evidence["configured"]) == ("pass", ["/etc/modprobe.d/kvm.conf:1: nested=0"])


def test_a_denied_modprobe_file_is_denied_not_absent():
    import shutil
    import tempfile
    from pathlib import Path

    tmp_path = Path(tempfile.mkdtemp(prefix="kvmcheck-denied-"))  # pytest's tmp_path is 0700: nobody cannot enter
    try:
        _denied_case(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _denied_case(tmp_path):
    (tmp_path / "etc/modprobe.d").mkdir(parents=True)
    (tmp_path / "etc/modprobe.d/secret.conf").write_text("blacklist kvm\n")
    (tmp_path / "etc/modprobe.d/secret.conf").chmod(0)
    (tmp_path / "etc/group").write_text("kvm:x:36:\n")
    (tmp_path / "etc/group").chmod(0)
    tmp_path.chmod(0o755)
    code = ("import json, sys; from kvmcheck.core.host import Host; from kvmcheck.facts.kvm import modprobe_d, accounts\n"
            "h = Host(sys.argv[1]); m = modprobe_d(h); a = accounts(h)\n"
            "print(json.dumps([[f.path, f.readout.state] for f in m.files] + [[a.group.state, a.passwd.state, a.ok]]))")
    out = subprocess.run(as_nobody([sys.executable, "-c", code, str(tmp_path)]), capture_output=True, text=True,
                         cwd="/")
    assert json.loads(out.stdout) == [["/etc/modprobe.d/secret.conf", "denied"], ["denied", "absent", False]], out.stderr


def test_accounts_absent_files_are_empty_not_denied(tmp_path):
    got = accounts(Host(str(tmp_path)))
    assert (got.group.state, got.passwd.state, got.ok, got.groups, got.users) == ("absent", "absent", True, {}, ())


MODULES = {"kvm": "loaded", "kvm_intel": "loaded"}


@pytest.mark.parametrize("modules, sys_module, installed, want", [
    (MODULES, True, {}, ("pass", "kvm (loaded), kvm_intel (loaded)")),
    ({"kvm": "loaded", "kvm_pvm": "loaded"}, True, {}, ("pass", "kvm (loaded), kvm_pvm (loaded): KVM through the software provider PVM")),
    ({"kvm": "loaded"}, True, {}, ("fail", "missing: kvm_intel")),
    ({}, False, {}, ("skip", "no /sys/module in this root and no KVM modules under /lib/modules")),
    ({}, False, {"kvm": "a", "kvm_intel": "b"}, ("pass", "installed as modules: kvm, kvm_intel (udev loads them at boot)")),
    ({}, False, {"kvm": "a"}, ("fail", "installed kernel lacks kvm_intel")),
])
def test_kvm_modules_judge(modules, sys_module, installed, want):
    r = kvm_modules.func(modules=modules, family="x86", cpuinfo=INTEL, sys_module=sys_module,
                         installed_kvm_modules=Later(lambda: installed), modprobe_d=NO_MODPROBE,
                         module_parameters=NO_PARAMETERS)
    assert (r.status.value, r.summary) == want


@pytest.mark.parametrize("osrelease, text, installed, want", [
    ("6.1.0-18-amd64", "6.1.0-18-amd64", (), ("pass", "6.1.0-18-amd64 (>= 2.6.20)")),
    (None, "two words", (), ("fail", "/proc/sys/kernel/osrelease does not hold a kernel release")),
    (None, None, ("5.14.0-1.el9", "6.8.5-301.fc40", "junk"), ("pass", "6.8.5-301.fc40 (>= 2.6.20)")),
    (None, None, (), ("skip", "no kernel release in this root")),
    ("2.6.18-1", "2.6.18-1", (), ("fail", "kernel 2.6.18 is older than 2.6.20")),
])
def test_kernel_version_judge(osrelease, text, installed, want):
    r = kernel_version.func(settings=Settings(), osrelease=osrelease, osrelease_text=text,
                            installed_kernels=Later(lambda: installed))
    assert (r.status.value, r.summary) == want


def test_kernel_modules_blacklist_judge(tmp_path):
    conf = _modprobe(tmp_path, {"/etc/modprobe.d/x.conf": "blacklist kvm_intel\nblacklist kvm_amd\nblacklist tun\n"})
    states = {"tun": "built-in"}
    args = dict(cmdline=None, family="x86", cpuinfo=INTEL, arch=Arch("x86_64", "uname"), modules={},
                module_holders={})
    r = kernel_modules_blacklist.func(modprobe_d=conf, watched_module_states=states, **args)
    assert (r.status.value, r.evidence["fatal"], r.evidence["noted"], r.evidence["warnings"]) == (
        "fail", ["/etc/modprobe.d/x.conf:1: blacklist kvm_intel"],
        ["/etc/modprobe.d/x.conf:2: blacklist kvm_amd (not this CPU's module)"],
        ["/etc/modprobe.d/x.conf:3: blacklist tun (ineffective: tun is built into the kernel; a stale line)"])
    r = kernel_modules_blacklist.func(modprobe_d=NO_MODPROBE, watched_module_states={}, **args)
    assert (r.status.value, r.summary) == ("skip", "no modprobe.d directory and no /proc/cmdline in this root")
