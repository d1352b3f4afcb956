# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck fix (issue 20, items 2 and 3): the remedies, and the proof that the scripts work.

Every script emitted for every captured root passes sh -n and shellcheck, every play passes
ansible-playbook --syntax-check and ansible-lint's production profile.  Three roots are fixed for real: the
shell script runs inside a throwaway copy of the root (unshare --mount --root, Debian's static busybox as
the shell and its tools), with stubs for the commands that touch the running kernel, the services or the
package manager; kvmcheck then checks the copy again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HOSTS, materialize
from kvmcheck.core.runner import run
from kvmcheck.tools.fix import fix_text

BIN = Path(sys.executable).parent
ROOTS = sorted(p.name for p in HOSTS.iterdir() if p.is_dir())
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
STUBS = "kvmcheck-stubs"  # the directory in the copy that holds busybox, its applets and the stubs
APPLETS = ("grep", "sed", "printf", "mkdir", "cat", "id", "echo", "test", "[", "dirname", "chmod", "chgrp",
           "stat", "rm", "ln", "cp", "awk", "tr", "basename", "true", "false")


def report_of(root: Path) -> dict:
    return run(str(root)).to_dict()


@pytest.fixture(scope="module")
def every_root(tmp_path_factory):
    """{name: (shell script, ansible play)} for every captured root, its device nodes created."""
    base = tmp_path_factory.mktemp("roots")
    out = {}
    for name in ROOTS:
        try:
            root = materialize(name, base)
        except pytest.skip.Exception:  # a root whose nodes need root or whose rpm database needs rpmbuild
            root = HOSTS / name
        report = report_of(root)
        out[name] = (fix_text(report, "shell"), fix_text(report, "ansible"))
    return out


def test_every_script_passes_sh_n_and_shellcheck(every_root, tmp_path):
    scripts = []
    for name, (script, _) in every_root.items():
        path = tmp_path / f"{name}.sh"
        path.write_text(script)
        scripts.append(str(path))
        assert script.startswith("#!/bin/sh\n") and "\nset -eu\n" in script
        proc = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, (name, proc.stderr)
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (Debian package shellcheck, in .ci/apt-packages)")
    proc = subprocess.run(["shellcheck", "--shell=sh"] + scripts, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:]


def test_every_play_passes_syntax_check_and_ansible_lint(every_root, tmp_path):
    plays = tmp_path / "plays"
    (plays / "playbooks").mkdir(parents=True)
    for name, (_, play) in every_root.items():
        (plays / "playbooks" / f"{name}.yml").write_text(play)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(HOME=str(home), ANSIBLE_HOME=str(home / ".ansible"), ANSIBLE_NOCOLOR="1", LC_ALL="C.UTF-8",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}")
    files = sorted(str(p) for p in (plays / "playbooks").iterdir())
    proc = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,"] + files, env=env,
                          capture_output=True, text=True, timeout=600, cwd=plays)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    if not (BIN / "ansible-lint").exists():
        pytest.skip("ansible-lint is not installed (pip install -e '.[test]' installs it)")
    subprocess.run(["git", "init", "-q", str(plays)], check=True)  # ansible-lint's project root
    proc = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--nocolor", "--profile", "production",
                           "playbooks"], env=env, capture_output=True, text=True, timeout=900, cwd=plays)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]


# -- the stubs ------------------------------------------------------------------------------------------------
# Each stub appends the argv of a call that would change the host to /kvmcheck-stubs/log (queries are not
# logged), and where kvmcheck reads the result from a file, it makes that file change with a minimal faithful
# emulation of the real tool, in sh for busybox.  usermod is the exception: the test reads the log and
# applies each call with the real usermod --root from outside, on the copy's real account files.
LOG = f'echo "$(basename "$0") $*" >> /{STUBS}/log'
STUB_SCRIPTS = {
    # modprobe: a load makes /sys/module/NAME with the options modprobe.d gives it (module_param bools show
    # Y); an 'install NAME /bin/false' line makes it fail as modprobe does; -r removes the directory.
    "modprobe": f"""{LOG}
if [ "$1" = -r ]; then rm -rf "/sys/module/$2"; exit 0; fi
m=$1
if cat /etc/modprobe.d/*.conf 2>/dev/null | grep -Eq "^[[:space:]]*install[[:space:]]+$m[[:space:]]+/bin/false"; then
    echo "modprobe: ERROR: ../libkmod/libkmod-module.c: command '/bin/false' failed" >&2; exit 1
fi
mkdir -p "/sys/module/$m/parameters"
echo live > "/sys/module/$m/initstate"
for opt in $(cat /etc/modprobe.d/*.conf 2>/dev/null | sed -n "s/^[[:space:]]*options[[:space:]]\\{{1,\\}}$m[[:space:]]\\{{1,\\}}//p"); do
    value=${{opt#*=}}
    case $value in 1|y) [ "${{opt%%=*}}" = nested ] && value=Y ;; esac
    echo "$value" > "/sys/module/$m/parameters/${{opt%%=*}}"
done
""",
    # grubby: --info=ALL prints each BLS entry's options as args="..."; --update-kernel=ALL edits the options
    # line of every entry and, as grubby >= 8.40-63 does, GRUB_CMDLINE_LINUX in /etc/default/grub.
    "grubby": f"""case "$1" in --info=ALL)
    for f in /boot/loader/entries/*.conf; do echo "index=0"; sed -n 's/^options \\(.*\\)$/args="\\1"/p' "$f"; done
    exit 0 ;;
esac
{LOG}
add=; del=
for a in "$@"; do case $a in --args=*) add=${{a#--args=}} ;; --remove-args=*) del=${{a#--remove-args=}} ;; esac; done
edit() {{
    out=
    for w in $1; do case " $del " in *" $w "*) ;; *) out="$out $w" ;; esac; done
    for w in $add; do case " $out " in *" $w "*) ;; *) out="$out $w" ;; esac; done
    echo "${{out# }}"
}}
for f in /boot/loader/entries/*.conf; do
    new=$(edit "$(sed -n 's/^options //p' "$f")")
    sed -i "s|^options .*|options $new|" "$f"
done
if [ -f /etc/default/grub ]; then
    new=$(edit "$(sed -n 's/^GRUB_CMDLINE_LINUX="\\(.*\\)"$/\\1/p' /etc/default/grub)")
    sed -i "s|^GRUB_CMDLINE_LINUX=.*|GRUB_CMDLINE_LINUX=\\"$new\\"|" /etc/default/grub
fi
""",
    # systemctl: enable links the unit into its target's .wants (what kvmcheck reads offline); --now and
    # the queries keep the running state in /run/kvmcheck-stub.
    "systemctl": f"""case "$1" in
    is-enabled) for d in /etc/systemd/system/*.wants; do [ -e "$d/$3" ] && exit 0; done; exit 1 ;;
    is-active) [ -e "/run/kvmcheck-stub/active/$3" ]; exit ;;
esac
{LOG}
if [ "$1" = enable ]; then
    [ "$2" = --now ] && unit=$3 || unit=$2
    case $unit in *.socket) target=sockets.target ;; *) target=multi-user.target ;; esac
    mkdir -p "/etc/systemd/system/$target.wants"
    ln -sf "/lib/systemd/system/$unit" "/etc/systemd/system/$target.wants/$unit"
    if [ "$2" = --now ]; then mkdir -p /run/kvmcheck-stub/active; : > "/run/kvmcheck-stub/active/$unit"; fi
fi
""",
    # virsh: the default network's definition, its autostart link and libvirt's state file of a running network
    "virsh": f"""{LOG}
d=/etc/libvirt/qemu/networks
case "$1" in
    net-define) mkdir -p "$d"; printf '%s\\n' "<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/><ip address='192.168.122.1' netmask='255.255.255.0'/></network>" > "$d/default.xml" ;;
    net-autostart) mkdir -p "$d/autostart"; ln -sf "$d/default.xml" "$d/autostart/default.xml" ;;
    net-start) mkdir -p /run/libvirt/network; cp "$d/default.xml" /run/libvirt/network/default.xml ;;
esac
""",
}
LOG_ONLY = ("usermod", "groupadd", "udevadm", "update-grub", "grub2-mkconfig", "kernelstub", "sysctl", "apt-get",
            "dnf", "zypper", "dpkg-query", "rpm")


def install_stubs(root: Path) -> None:
    """busybox's applets, the stubs, and sh: Debian's dash with its loader and libc beside it.

    Not busybox's own sh: Debian's busybox-static is built with FEATURE_SH_STANDALONE, so its sh runs its
    modprobe, sysctl and rpm applets before anything on PATH, and the stubs would never be called."""
    stubs = root / STUBS
    (stubs / "lib").mkdir(parents=True)
    shutil.copy(BUSYBOX, stubs / "busybox")
    for applet in APPLETS:
        (stubs / applet).symlink_to("busybox")
    dash = shutil.which("dash") or "/bin/dash"
    loader = "/lib64/ld-linux-x86-64.so.2"
    libc = "/lib/x86_64-linux-gnu/libc.so.6"
    if not all(os.path.exists(p) for p in (dash, loader, libc)):
        pytest.skip("needs dash and the x86-64 glibc (Debian) to run the script with the stubs")
    for path in (dash, loader, libc):
        shutil.copy(path, stubs / "lib" / Path(path).name)
    (stubs / "sh").write_text(f"#!/{STUBS}/busybox sh\nexec /{STUBS}/lib/{Path(loader).name} --library-path "
                              f"/{STUBS}/lib /{STUBS}/lib/dash \"$@\"\n")
    (stubs / "sh").chmod(0o755)
    scripts = dict(STUB_SCRIPTS, **{name: LOG + "\n" for name in LOG_ONLY})
    for name, body in scripts.items():
        (stubs / name).write_text(f"#!/{STUBS}/busybox sh\n{body}")
        (stubs / name).chmod(0o755)
    (root / "dev").mkdir(exist_ok=True)
    if not (root / "dev" / "null").exists():
        os.mknod(root / "dev" / "null", 0o20666, os.makedev(1, 3))
    (root / STUBS / "log").write_text("")


def apply(root: Path, script: str) -> list:
    """Run the script in the copy; returns the logged calls of commands that change the host."""
    (root / STUBS / "fix.sh").write_text(script)
    log = root / STUBS / "log"
    log.write_text("")
    proc = subprocess.run([shutil.which("unshare") or "unshare", "--mount", f"--root={root}", f"/{STUBS}/sh", f"/{STUBS}/fix.sh"],
                          env={"PATH": f"/{STUBS}", "LC_ALL": "C"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    for call in calls:  # usermod: the real tool, from outside, on the copy's account files
        if call.startswith("usermod "):
            subprocess.run(["usermod", "--root", str(root)] + call.split()[1:], check=True, capture_output=True)
    return calls


def tree(root: Path) -> dict:
    """Every path under root (but the stubs) with its type, mode and content digest."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel == STUBS or rel.startswith(STUBS + "/"):
            continue
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else (
            os.readlink(path) if path.is_symlink() else "")
        out[rel] = (st.st_mode, digest)
    return out


def checked(root: Path) -> dict:
    """{check id: result} of kvmcheck on the copy, without the stubs in it."""
    saved = root.parent / "saved-stubs"
    shutil.move(str(root / STUBS), str(saved))
    try:
        return {r["id"]: r for r in report_of(root)["checks"]}
    finally:
        shutil.move(str(saved), str(root / STUBS))


@pytest.fixture
def copy_of(tmp_path):
    def make(name: str) -> Path:
        if os.geteuid() != 0 or not shutil.which("unshare") or not os.path.exists(BUSYBOX):
            pytest.skip("applying a script in a copy needs root, unshare and busybox (Debian busybox-static)")
        root = materialize(name, tmp_path)
        install_stubs(root)
        return root
    return make


def fix_twice(root: Path, only) -> str:
    first = fix_text(report_of(root), "shell", only=only)
    assert fix_text(report_of(root), "shell", only=only) == first  # byte for byte
    return first


def apply_twice(root: Path, script: str) -> list:
    """Apply the script, then again: the second run changes no file and runs no changing command."""
    calls = apply(root, script)
    before = tree(root)
    assert apply(root, script) == []
    assert tree(root) == before
    return calls


def fixed_rhel(copy_of) -> dict:
    root = copy_of("fix-rhel-nested-iommu-off")
    script = fix_twice(root, ["iommu.enabled", "kvm.nested"])
    calls = apply_twice(root, script)
    assert calls == ["modprobe -r kvm_intel", "modprobe kvm_intel", "grubby --update-kernel=ALL --args=intel_iommu=on"]
    entry = next((root / "boot/loader/entries").iterdir()).read_text()
    assert " intel_iommu=on" in entry.split("\noptions ", 1)[1].splitlines()[0]
    assert (root / "etc/modprobe.d/zz-kvmcheck-nested-kvm_intel.conf").read_text().endswith(
        "options kvm_intel nested=1\n")
    return checked(root)


def test_rhel_nested_off_and_iommu_off_are_fixed(copy_of):
    results = fixed_rhel(copy_of)
    assert (results["kvm.nested"]["status"], results["kvm.nested"]["evidence"]["value"]) == ("pass", "Y")
    assert results["iommu.enabled"]["status"] == "warn"  # /proc/cmdline is the running kernel's



def test_rhel_iommu_fix_is_pending_a_reboot(copy_of):
    """The kernel argument is configured for the next boot (the BLS entries): the check says a reboot is pending."""
    results = fixed_rhel(copy_of)
    assert (results["iommu.enabled"]["status"], results["iommu.enabled"].get("pending")) == ("warn", "reboot")


def test_debian_users_outside_kvm_and_blocked_vhost_net_are_fixed(copy_of):
    root = copy_of("fix-debian-user-vhost")
    only = ["kvm.device", "kvm.consumer", "kernel.modules-blacklist", "network.vhost-net"]
    before = checked(root)
    assert {i: before[i]["status"] for i in only} == {"kvm.device": "warn", "kvm.consumer": "fail",
                                                      "kernel.modules-blacklist": "warn", "network.vhost-net": "pass"}
    script = fix_twice(root, only)
    calls = apply_twice(root, script)
    assert calls == ["modprobe vhost_net", "usermod -aG kvm alice", "usermod -aG kvm libvirt-qemu",
                     "systemctl try-restart libvirtd.service"]
    assert "kvm:x:108:alice,libvirt-qemu" in (root / "etc/group").read_text()
    assert (root / "sys/module/vhost_net/initstate").read_text() == "live\n"
    results = checked(root)
    assert {i: results[i]["status"] for i in only} == {"kvm.device": "pass", "kvm.consumer": "pass",
                                                       "kernel.modules-blacklist": "pass", "network.vhost-net": "pass"}


def test_a_pending_reboot_changes_nothing(copy_of):
    """intel_iommu=on is in /etc/default/grub and the generated grub.cfg, not in /proc/cmdline: the script's
    guard sees the next boot has it already, so nothing runs; what is left is the reboot."""
    root = copy_of("fix-pending-reboot")
    script = fix_twice(root, ["iommu.enabled"])
    before = tree(root)
    assert apply(root, script) == []
    assert tree(root) == before
    assert "still to do (reboot): iommu.enabled" in script
    assert checked(root)["iommu.enabled"]["status"] == "warn"


def test_a_pending_reboot_root_is_reported_pending(tmp_path):
    results = {r["id"]: r for r in report_of(materialize("fix-pending-reboot", tmp_path))["checks"]}
    assert (results["iommu.enabled"]["status"], results["iommu.enabled"].get("pending")) == ("warn", "reboot")


# -- remedies from stored reports ------------------------------------------------------------------------------
def stored(tmp_path, name: str, **changes) -> dict:
    report = report_of(materialize(name, tmp_path))
    for check_id, fields in changes.items():
        result = next(r for r in report["checks"] if r["id"] == check_id)
        result.update(fields)
    return report


def test_a_pending_finding_gets_the_step_that_makes_it_effective(tmp_path):
    report = stored(tmp_path, "fix-rhel-nested-iommu-off", **{
        "iommu.enabled": {"pending": "reboot", "pending_note": "configured, not yet in effect: reboot"},
        "kvm.nested": {"pending": "module-reload", "pending_note": "reload kvm_intel (no guest may be running) or reboot"}})
    script = fix_text(report, "shell", only=["iommu.enabled", "kvm.nested"])
    assert "grubby --update-kernel" not in script and "modprobe.d" not in script
    assert "modprobe -r kvm_intel && modprobe kvm_intel" in script
    assert "echo 'kvmcheck fix: still to do (reboot): iommu.enabled'" in script


def test_from_report_and_root_give_the_same_script(tmp_path):
    root = materialize("fix-debian-user-vhost", tmp_path)
    path = tmp_path / "report.json"
    proc = subprocess.run([str(BIN / "kvmcheck"), "check", "--root", str(root), "-f", "json", "-o", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1, 3), proc.stderr
    from_root = subprocess.run([str(BIN / "kvmcheck"), "fix", "--root", str(root), "-f", "ansible"],
                               capture_output=True, text=True)
    from_report = subprocess.run([str(BIN / "kvmcheck"), "fix", "--from-report", str(path), "-f", "ansible"],
                                 capture_output=True, text=True)
    assert (from_root.returncode, from_report.returncode) == (0, 0), from_root.stderr + from_report.stderr
    assert from_root.stdout == from_report.stdout


def test_values_that_do_not_validate_become_manual_comments(tmp_path):
    report = stored(tmp_path, "fix-debian-user-vhost")
    result = next(r for r in report["checks"] if r["id"] == "kvm.consumer")
    result.update(status="fail", summary="evil\nrm -rf / #", evidence=dict(result["evidence"], user="x;reboot"))
    script = fix_text(report, "shell", only=["kvm.consumer"])
    commands = [line for line in script.splitlines() if not line.startswith("#")]
    assert not [line for line in commands if "usermod" in line or "x;reboot" in line or "rm -rf" in line]
    assert "MANUAL" in script


def test_nothing_to_fix_still_writes_a_script(tmp_path):
    report = stored(tmp_path, "amd-baremetal-svm")
    script = fix_text(report, "shell", only=["cpu.64bit"])
    assert "Nothing to fix" in script and script.startswith("#!/bin/sh\n")


def test_cli_usage_errors_exit_2_and_explain_prints_the_commands(tmp_path):
    root = materialize("fix-rhel-nested-iommu-off", tmp_path)
    kvmcheck = str(BIN / "kvmcheck")
    bad = subprocess.run([kvmcheck, "fix", "--root", str(root), "--only", "no.such-check"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "matches no check" in bad.stderr
    missing = subprocess.run([kvmcheck, "fix", "--from-report", str(tmp_path / "none.json")], capture_output=True,
                             text=True)
    assert missing.returncode == 2
    explained = subprocess.run([kvmcheck, "fix", "--root", str(root), "--explain", "iommu.enabled"],
                               capture_output=True, text=True)
    assert explained.returncode == 0
    assert explained.stdout.startswith("iommu.enabled (warn): Intel VT-d is in the firmware")
    assert "grubby --update-kernel=ALL --args=intel_iommu=on" in explained.stdout
    assert "[impact: reboot]" in explained.stdout


def test_an_enabled_libvirt_daemon_that_is_not_running_is_started_before_virsh_needs_it(tmp_path):
    """libvirtd enabled at boot but not running (no socket): the default network's virsh steps would fail under
    set -eu, so the script starts the daemon first (guarded: nothing runs when it is enabled and active)."""
    report = stored(tmp_path, "libvirt-debian-monolithic")
    layout = next(r for r in report["checks"] if r["id"] == "libvirt.layout")
    layout.update(status="warn", summary="libvirtd is not running", evidence=dict(
        layout["evidence"], daemon=["libvirtd"], enabled=["libvirtd.service"], masked=[], sockets={}, problems=[]))
    nat = next(r for r in report["checks"] if r["id"] == "network.default-nat")
    nat.update(status="warn", summary="the default network is not running",
               evidence={"defined": True, "autostart": True, "active": False})
    script = fix_text(report, "shell", only=["libvirt.layout", "network.default-nat"])
    start = script.index("    systemctl enable --now libvirtd.service")
    assert "systemctl is-enabled --quiet libvirtd.service && systemctl is-active --quiet libvirtd.service" in script
    assert start < script.index("virsh net-start default")
    layout["evidence"]["sockets"] = {"libvirt-sock": "/run/libvirt/libvirt-sock"}  # running: nothing to start
    assert "enable --now" not in fix_text(report, "shell", only=["libvirt.layout"])
