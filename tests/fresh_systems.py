# SPDX-License-Identifier: GPL-2.0-or-later
"""Fresh systems for the tests that install kvmcheck as a user would (test_kickstart, test_fresh_install).

- debian_root(suite): a real Debian root made by debootstrap with only the distribution's python3 and
  python3-venv, built once into $KVMCHECK_CHROOT_CACHE (default /var/cache/kvmcheck-test)/SUITE and never
  changed afterwards (tests mount an overlay on it).
- wheelhouse(...): wheels of kvmcheck's dependencies and build requirements, downloaded once into the same
  cache, so installs in a chroot or a throw-away venv run offline (PIP_NO_INDEX, PIP_FIND_LINKS).
- checkout_copy(dest): the work tree as a fresh clone of it would look (tracked and new files, no .git, no
  .venv, no build output), uncommitted changes included.

Everything that needs what this machine may lack (root, debootstrap, the Debian mirror, PyPI) skips with
the reason.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KVMCHECK_CHROOT_CACHE", "/var/cache/kvmcheck-test"))
MIRROR = os.environ.get("KVMCHECK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBOOTSTRAP_TIMEOUT = 1200
DOWNLOAD_TIMEOUT = 300
# What each suite's python3 is, for the wheels its pip can install: (Python version, glibc version).
DEBIAN_PYTHON = {"bullseye": ((3, 9), (2, 31)), "bookworm": ((3, 11), (2, 36))}


def bounded(argv, timeout, **kwargs) -> Tuple[int, str]:
    """Run argv in its own session, stdout and stderr together; on timeout kill the whole group, then fail."""
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{argv[0]} did not finish within {timeout} s:\n{out[-4000:]}")
    return proc.returncode, out


def needs_tools(*tools: str) -> None:
    """Skip unless this is root with unshare, chroot and tools (mounts and chroot need root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: debootstrap, mount and chroot")
    for tool in ("unshare", "chroot", *tools):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install debootstrap util-linux coreutils)")


def mounts_under(*dirs) -> List[str]:
    text = Path("/proc/mounts").read_text()
    return [line for line in text.splitlines() if any(f" {d}" in line for d in map(str, dirs))]


def mirror_reachable(suite: str) -> Optional[str]:
    """None, or why the Debian mirror cannot serve suite (the reason to skip with)."""
    url = f"{MIRROR}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15):
            return None
    except Exception as exc:  # any network trouble means: skip, with the reason
        return f"the Debian mirror is unreachable ({url}: {exc}); set KVMCHECK_DEBIAN_MIRROR"


def debian_root(suite: str) -> Path:
    """The cached minimal debootstrap of suite with python3 and python3-venv (bullseye: about a minute and
    263 MB); built on first use under a lock, renamed into place only when complete."""
    target = CACHE / suite
    if (target / "usr" / "bin" / "python3").exists():
        return target
    needs_tools("debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be building it
        if (target / "usr" / "bin" / "python3").exists():
            return target
        reason = mirror_reachable(suite)
        if reason:
            pytest.skip(reason)
        partial = CACHE / f"{suite}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        rc, out = bounded(["debootstrap", "--variant=minbase", "--include=python3,python3-venv",
                           suite, str(partial), MIRROR], DEBOOTSTRAP_TIMEOUT)
        if rc != 0:
            shutil.rmtree(partial, ignore_errors=True)
            if re.search(r"Couldn't download|Failed getting release file|Temporary failure|unable to resolve", out):
                pytest.skip(f"debootstrap could not download from {MIRROR}:\n{out[-1500:]}")
            pytest.fail(f"debootstrap {suite} failed (rc {rc}):\n{out[-4000:]}")
        os.rename(partial, target)  # the cache is complete or absent, never half built
    return target


# --- the work tree as a clone would have it -----------------------------------------------------------------
JUNK = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", ".pytest_cache",
                              "__pycache__", ".hypothesis", ".benchmarks")


def checkout_copy(dest: Path) -> Path:
    """Copy the work tree to dest as a fresh clone of it would hold it: the files git tracks plus new ones it
    does not ignore (so uncommitted work is tested too); .git, .venv and build output stay behind."""
    listed = None
    if shutil.which("git") and (REPO / ".git").exists():  # .git is a file in a worktree
        proc = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                              capture_output=True, timeout=60)
        if proc.returncode == 0:
            listed = [name for name in proc.stdout.decode().split("\0") if name]
    if listed is None:  # not a git checkout (an unpacked sdist, say): the tree minus what git would ignore
        shutil.copytree(REPO, dest, symlinks=True, ignore=JUNK)
        return dest
    dest.mkdir(parents=True)
    for name in listed:
        src = REPO / name
        if not os.path.lexists(src):  # deleted in the work tree, not yet in the index
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / name)
        else:
            shutil.copy2(src, dest / name)
    return dest


# --- wheels, so that installs run offline -------------------------------------------------------------------
def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11: tomli is one of kvmcheck's own dependencies there
        import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def install_requirements(python: Tuple[int, int]) -> List[str]:
    """kvmcheck's run-time dependencies that apply on that Python, and its build requirements (pip builds
    kvmcheck from the checkout in an isolated environment, which needs setuptools from the wheelhouse too)."""
    from packaging.markers import Marker

    meta = _pyproject()
    wanted = []
    version = "%d.%d" % python
    env = {"python_version": version, "python_full_version": version + ".0", "sys_platform": "linux",
           "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython"}
    for requirement in meta["project"]["dependencies"]:
        spec, _, marker = requirement.partition(";")
        if not marker.strip() or Marker(marker.strip()).evaluate(env):
            wanted.append(spec.strip())
    # setuptools < 70.1 asks for 'wheel' to build a wheel: bring it, whichever setuptools pip picks.
    return sorted(wanted + list(meta["build-system"]["requires"]) + ["wheel"])


def wheelhouse(python: Tuple[int, int], glibc: Tuple[int, int]) -> Path:
    """A cached directory of wheels of install_requirements(python) for CPython python on a glibc system.

    Downloaded once (the only step that needs PyPI), all or nothing, under a lock."""
    requires = install_requirements(python)
    machine = os.uname().machine
    tag = "cp%d%d" % python
    platforms = [f"manylinux_{glibc[0]}_{minor}_{machine}" for minor in range(glibc[1], 4, -1)]  # all it runs
    platforms += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    key = hashlib.sha256("\n".join([machine, tag, *platforms, *requires]).encode()).hexdigest()[:12]
    cache = _writable_cache()
    deps = cache / f"wheels-{tag}-{key}"
    with open(cache / "wheels.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if deps.is_dir():
            return deps
        partial = cache / f"{deps.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        # pip download --python-version does not apply environment markers: install_requirements decided them.
        rc, out = bounded([sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "-q",
                           "--dest", str(partial), "--only-binary=:all:", "--python-version", "%d.%d" % python,
                           "--implementation", "cp", "--abi", tag, *(f"--platform={p}" for p in platforms),
                           *requires], DOWNLOAD_TIMEOUT)
        if rc != 0:
            shutil.rmtree(partial, ignore_errors=True)
            pytest.skip(f"cannot download wheels for CPython {'%d.%d' % python} of {requires} "
                        f"(is PyPI reachable?):\n{out[-1500:]}")
        os.rename(partial, deps)
    return deps


def host_glibc() -> Optional[Tuple[int, int]]:
    """This system's glibc version, or None (musl, or not Linux)."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (ValueError, OSError, AttributeError):
        return None
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _writable_cache() -> Path:
    """CACHE, or a per-user directory when CACHE cannot be written (a normal user's test run)."""
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        if os.access(CACHE, os.W_OK):
            return CACHE
    except OSError:
        pass
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvmcheck-test"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def offline_pip_env(wheels: Path, base: Optional[dict] = None) -> dict:
    """Environment under which pip installs only from wheels (the command's own text stays as written)."""
    env = dict(os.environ if base is None else base)
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def readme_setup_commands() -> List[str]:
    """The two set-up commands README.md starts with: install-and-run, then install-tests-and-test."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]
