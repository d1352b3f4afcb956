# SPDX-License-Identifier: GPL-2.0-or-later
"""The front door: README's first command and the console script it installs, run as a newcomer runs them.

- README's first set-up command, read from README.md and run verbatim by /bin/sh in a copy of the work
  tree, here (the session fixture `installed`) and inside a fresh Debian 12 root that has nothing but the
  distribution's python3 and python3-venv (whose system Python refuses pip, PEP 668).
- The console script that command leaves in .venv: bare `kvmcheck`, `python -m kvmcheck`, --version,
  --help and every command's --help, run from a directory outside the checkout so that the installed
  package, not the source tree, is what runs.
- The suite itself, in a copy with no ../shared beside it: collection works and the corpus tests skip.

pip installs from a wheelhouse of kvmcheck's dependencies downloaded once on this machine (PIP_NO_INDEX,
PIP_FIND_LINKS in the environment; the command's text stays README's): a chroot has no proxy settings or CA
bundle of its own, and repeated runs need no network.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fresh_systems import (DEBIAN_PYTHON, REPO, bounded, checkout_copy, debian_root, host_glibc, mounts_under,
                           needs_tools, offline_pip_env, readme_setup_commands, wheelhouse)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux only")

RUN_EXIT = {0, 1, 3}  # ready, not ready, could not decide: a run never exits 2 (usage) or crashes
COMMANDS = ["check", "list", "explain", "profiles", "fleet", "diff", "snapshot", "schema", "fix"]
INSTALL_TIMEOUT = 600


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def clean_env(**extra) -> dict:
    """The test's environment without what would make another kvmcheck than the installed one run."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def assert_ran(proc, what):
    assert proc.returncode in RUN_EXIT, f"{what}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert re.search(r"^Verdict: ", proc.stdout, re.M), f"{what}: no verdict\n{proc.stdout[-2000:]}"
    assert "Traceback" not in proc.stderr, f"{what}:\n{proc.stderr}"


# --- README's first command on this machine, and the console script it leaves ---------------------------------
@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """A copy of the work tree in which README's first command ran (venv, `pip install .`, `kvmcheck`)."""
    python3 = shutil.which("python3")
    if python3 is None:
        pytest.skip("no python3 on PATH: README's commands start with it")
    probe = subprocess.run([python3, "-c", "import ensurepip, sys; print(*sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"{python3} cannot make a venv (Debian/Ubuntu: apt-get install python3-venv): "
                    f"{probe.stderr[-300:]}")
    glibc = host_glibc()
    if glibc is None:
        pytest.skip("the wheelhouse is for glibc systems")
    wheels = wheelhouse(tuple(int(v) for v in probe.stdout.split()), glibc)
    base = tmp_path_factory.mktemp("front-door")
    checkout = checkout_copy(base / "kvmcheck")
    first = readme_setup_commands()[0]
    proc = subprocess.run(["/bin/sh", "-c", first], cwd=checkout, capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT, env=offline_pip_env(wheels, clean_env()))
    elsewhere = base / "elsewhere"  # not the checkout: `python -m kvmcheck` there must not find the sources
    elsewhere.mkdir()
    return {"checkout": checkout, "bin": checkout / ".venv" / "bin", "first": proc, "cwd": elsewhere}


def installed_run(installed, *argv, timeout=120):
    """Run a program of the installed venv (kvmcheck, python) from outside the checkout."""
    program = str(installed["bin"] / argv[0])
    return subprocess.run([program, *argv[1:]], cwd=installed["cwd"], capture_output=True, text=True,
                          timeout=timeout, env=clean_env())


def test_readme_first_command_installs_a_real_copy_and_runs_it(installed):
    assert_ran(installed["first"], "README's first command")
    assert (installed["bin"] / "kvmcheck").is_file()
    where = installed_run(installed, "python", "-c", "import kvmcheck; print(kvmcheck.__file__)")
    # `pip install .`, not -e: the package lives in the venv, not in the checkout
    assert where.returncode == 0 and "/site-packages/kvmcheck/" in where.stdout, where.stdout + where.stderr


def test_bare_kvmcheck_runs_check(installed):
    assert_ran(installed_run(installed, "kvmcheck"), "kvmcheck")


def test_python_m_kvmcheck_is_the_console_script(installed):
    assert_ran(installed_run(installed, "python", "-m", "kvmcheck"), "python -m kvmcheck")
    helped = installed_run(installed, "python", "-m", "kvmcheck", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: kvmcheck "), helped.stdout + helped.stderr


def test_version(installed):
    proc = installed_run(installed, "kvmcheck", "--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"kvmcheck {project_version()}\n", "")


def test_help_lists_every_command(installed):
    proc = installed_run(installed, "kvmcheck", "--help")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    listed = re.findall(r"^  (\w[\w-]*)\s", proc.stdout.split("Commands:", 1)[1], re.M)
    assert sorted(listed) == sorted(COMMANDS), "a new command? add it to COMMANDS so its --help is tested"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(installed, command):
    proc = installed_run(installed, "kvmcheck", command, "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"Usage: kvmcheck {command} ") and "Traceback" not in proc.stderr, proc.stderr


# --- README's first command in a fresh Debian 12 -------------------------------------------------------------
SUITE = "bookworm"
# In a private mount namespace (every mount goes when it ends, even on a kill): an overlay on the cached
# root, the host's /dev, /proc and /sys in it, the checkout at /root/kvmcheck and the wheels at /wheelhouse;
# then README's first command in the checkout, as root, with a bare environment.
DRIVER = r"""
set -eu
LOWER=$1 W=$2 WHEELS=$3 SRC=$4
M=$W/merged
mkdir -p "$W/upper" "$W/work" "$M"
if ! mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$W/upper,workdir=$W/work" "$M" 2>/dev/null; then
    echo "driver: no overlayfs, copying the root"
    cp -a "$LOWER/." "$W/upper/"
    mount --bind "$W/upper" "$M"
fi
mount --bind /dev "$M/dev"
mount -t proc proc "$M/proc"
mount -t sysfs sysfs "$M/sys"
mkdir -p "$M/root/kvmcheck" "$M/wheelhouse"
cp -a "$SRC/." "$M/root/kvmcheck/"
cp "$WHEELS"/*.whl "$M/wheelhouse/"
cp "$W/first-command.sh" "$M/tmp/first-command.sh"
set +e
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse PIP_DISABLE_PIP_VERSION_CHECK=1 \
    chroot "$M" /bin/sh /tmp/first-command.sh > "$W/stdout" 2> "$W/stderr"
echo $? > "$W/rc"
"""


def test_readme_first_command_on_a_fresh_debian_12(tmp_path):
    needs_tools()
    lower = debian_root(SUITE)
    python = lower / "usr" / "lib" / ("python%d.%d" % DEBIAN_PYTHON[SUITE][0])
    assert (python / "EXTERNALLY-MANAGED").is_file(), "bookworm's python3 refuses pip: the case this proves"
    assert not (python / ".." / "python3" / "dist-packages" / "pip").exists(), "only python3 and python3-venv"
    wheels = wheelhouse(*DEBIAN_PYTHON[SUITE])
    src = checkout_copy(tmp_path / "src")
    work = tmp_path / "target"
    work.mkdir()
    first = readme_setup_commands()[0]
    (work / "first-command.sh").write_text(f"cd /root/kvmcheck\n{first}\n")
    (work / "driver.sh").write_text(DRIVER)
    try:
        rc, out = bounded(["unshare", "--mount", "--propagation", "private", "--kill-child", "/bin/sh",
                           str(work / "driver.sh"), str(lower), str(work), str(wheels), str(src)], INSTALL_TIMEOUT)
    finally:
        leaked = mounts_under(work, lower)
    assert not leaked, f"mounts left behind: {leaked}"
    assert rc == 0, f"the driver failed (rc {rc}):\n{out}"
    proc = subprocess.CompletedProcess(first, int((work / "rc").read_text()), (work / "stdout").read_text(),
                                       (work / "stderr").read_text())
    assert_ran(proc, f"{first!r} in a fresh Debian 12")
    assert (work / "upper" / "root" / "kvmcheck" / ".venv" / "bin" / "kvmcheck").is_file()
    assert not (work / "upper" / "usr" / "lib" / "python3" / "dist-packages" / "kvmcheck").exists()


# --- the suite without ../shared -----------------------------------------------------------------------------
def test_suite_collects_and_skips_the_corpus_without_shared(tmp_path):
    """A clone on its own (no ../shared beside it): collection works, the corpus tests skip with the reason."""
    checkout = checkout_copy(tmp_path / "alone" / "kvmcheck")
    assert not (checkout.parent / "shared").exists()
    pytest_argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    collect = subprocess.run([*pytest_argv, "--collect-only", "-q"], cwd=checkout, capture_output=True, text=True,
                             timeout=300, env=clean_env())
    assert collect.returncode == 0, collect.stdout[-3000:] + collect.stderr[-3000:]
    assert "error" not in collect.stdout.splitlines()[-1].lower(), collect.stdout[-3000:]
    corpus_tests = ["tests/test_corpus.py", "tests/test_iommu_secure.py::test_corpus_dumps",
                    "tests/test_storage.py::test_lscpu_dumps_skip"]
    corpus = subprocess.run([*pytest_argv, "-q", "-rs", *corpus_tests], cwd=checkout, capture_output=True, text=True,
                            timeout=300, env=clean_env())
    assert corpus.returncode == 0, corpus.stdout[-3000:] + corpus.stderr[-3000:]
    assert " passed" not in corpus.stdout and "the lscpu corpus is not beside the checkout" in corpus.stdout
