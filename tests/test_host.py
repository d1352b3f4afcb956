# SPDX-License-Identifier: GPL-2.0-or-later
"""The Host seam: rooted reads that never leave the root, never block, and name their failures."""
from __future__ import annotations

import os
import threading

import pytest

from kvmcheck.core import host as host_module
from kvmcheck.core.host import Host, NotRegularFileError, OfflineError

HAS_OPENAT2 = Host.use_openat2 and host_module._openat2(os.open("/", os.O_PATH), "/", os.O_PATH) >= 0


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def lookup(request, monkeypatch):
    """Every test here twice: lookups through openat2 (RESOLVE_IN_ROOT) and through the component walk."""
    if request.param == "openat2" and not HAS_OPENAT2:
        pytest.skip("this kernel has no openat2 (Linux < 5.6) or a filter refuses it")
    monkeypatch.setattr(Host, "use_openat2", request.param == "openat2")
    return request.param


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text("ID=rhel\n")
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.1.0\n")
    return tmp_path


def test_reads_are_relative_to_the_root(root):
    assert Host(str(root)).read_text("/proc/sys/kernel/osrelease") == "6.1.0\n"


def test_absolute_symlink_resolves_inside_the_root(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_text("host secret")
    (root / "etc/passwd").symlink_to(outside / "secret")  # absolute: must mean ROOT/<that path>
    host = Host(str(root))
    with pytest.raises(FileNotFoundError):
        host.read_text("/etc/passwd")
    (root / "etc/link").symlink_to("/etc/os-release")
    assert host.read_text("/etc/link") == "ID=rhel\n"


def test_dotdot_cannot_climb_out_of_the_root(root):
    (root / "etc/up").symlink_to("../../../../../../etc/os-release")
    host = Host(str(root))
    assert host.read_text("/etc/up") == "ID=rhel\n"
    assert host.read_text("/../../etc/os-release") == "ID=rhel\n"
    assert host.resolve("/../..").startswith(str(root))


def test_symlink_loop_is_an_error_not_a_hang(root):
    (root / "a").symlink_to("/b")
    (root / "b").symlink_to("/a")
    with pytest.raises(OSError) as err:
        Host(str(root)).read_text("/a")
    assert err.value.errno == 40  # ELOOP


def test_fifo_is_refused_without_blocking(root):
    os.mkfifo(root / "etc/fifo")
    done = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(NotRegularFileError, Host(str(root)).read_text,
                                                                   "/etc/fifo")), daemon=True)
    t.start()
    t.join(5)
    assert done, "reading a FIFO blocked"


def test_missing_permission_and_directory_are_told_apart(root):
    host = Host(str(root))
    with pytest.raises(FileNotFoundError):
        host.read_text("/etc/nothing")
    assert host.read_optional("/etc/nothing") is None
    assert host.read_optional("/etc/os-release/child") is None  # a file used as a directory
    with pytest.raises(IsADirectoryError):
        host.read_text("/etc")
    secret = root / "etc/shadow"
    secret.write_text("x")
    secret.chmod(0)
    if os.geteuid() == 0:
        pytest.skip("root reads mode-000 files; the permission branch needs an unprivileged user")
    with pytest.raises(PermissionError):
        host.read_optional("/etc/shadow")


def test_read_limit_caps_huge_files(root):
    (root / "big").write_bytes(b"x" * (3 << 20))
    assert len(Host(str(root)).read_text("/big", limit=1 << 20)) == 1 << 20


def test_invalid_utf8_is_replaced(root):
    (root / "bin.txt").write_bytes(b"ok \xff\xfe end")
    assert Host(str(root)).read_text("/bin.txt") == "ok \ufffd\ufffd end"


def test_glob_and_listdir_stay_in_the_root(root):
    host = Host(str(root))
    assert host.glob("/proc/sys/kernel/*") == ["/proc/sys/kernel/osrelease"]
    assert host.listdir("/etc") == ["os-release"]
    assert host.listdir("/nowhere") == []


def test_live_probes_refuse_an_offline_root(root):
    host = Host(str(root))
    assert not host.live
    for call in (lambda: host.run(["true"]), lambda: host.open_device("/dev/kvm"), host.kernel_log):
        with pytest.raises(OfflineError):
            call()


def test_commands_run_without_a_shell_and_time_out():
    host = Host("/")
    result = host.run(["echo", "a;b", "$HOME"])
    assert (result.returncode, result.stdout) == (0, "a;b $HOME\n")  # no shell expanded or split anything
    with pytest.raises(TimeoutError):
        host.run(["sleep", "5"], timeout=0.2)


def test_nonexistent_root_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        Host(str(tmp_path / "typo"))


def test_reads_are_recorded_as_evidence(root):
    host = Host(str(root))
    host.read_optional("/etc/os-release")
    host.read_optional("/etc/missing")
    assert host.reads == ["/etc/os-release", "/etc/missing"]


def test_statvfs_runs_in_a_child_and_reports_free_space(root):
    host = Host(str(root))
    st = host.statvfs("/etc")
    assert st is not None and st.total_bytes > 0 and 0 <= st.free_bytes <= st.total_bytes
    assert host.statvfs("/no/such/dir") is None


def test_no_program_runs_against_an_offline_root(root):
    # Not even one that takes the root itself (rpm --root): it would resolve the root's links on its own.
    with pytest.raises(OfflineError):
        Host(str(root)).run(["rpm", "--root", str(root), "-qa"])


def test_probe_url_refuses_local_schemes_without_touching_them(root):
    assert Host(str(root)).probe_url("file:///etc/shadow") == (False, "not a network URL: file:///etc/shadow")


def test_statvfs_many_answers_each_path(root):
    out = Host(str(root)).statvfs_many(["/etc", "/proc", "/missing"])
    assert out["/missing"] is None and out["/etc"].total_bytes > 0 and out["/proc"].total_bytes > 0


def _reached(host, path, follow=True):
    """What a lookup of path reaches: the (device, inode) it holds, or the exception's class and errno."""
    from kvmcheck.core.host import _Missing

    try:
        found = host._lookup(path, follow)
    except _Missing as missing:
        return type(missing.exc).__name__, missing.exc.errno
    except OSError as exc:
        return type(exc).__name__, exc.errno
    os.close(found.fd)
    return found.st.st_dev, found.st.st_ino


def test_openat2_and_the_walk_reach_the_same_objects(tmp_path, tmp_path_factory, lookup):
    """A hostile tree: absolute and relative links, '..' past the root, chains, a loop, a link through a
    file, /proc's magic links; openat2 (when this kernel has it) must reach what the walk reaches."""
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_text("host secret")
    root = tmp_path / "root"
    (root / "etc/sub").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\n")
    links = {
        "etc/abs": "/etc/os-release", "etc/rel": "os-release", "etc/up": "../../../../etc/os-release",
        "etc/out": str(outside / "secret"), "etc/outdir": str(outside), "etc/dirlink": "/etc/sub",
        "etc/chain1": "chain2", "etc/chain2": "/etc/abs", "etc/loop1": "loop2", "etc/loop2": "loop1",
        "etc/dangling": "/nowhere", "etc/magic": "/proc/self/root/etc/os-release", "etc/procself": "/proc/self",
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    paths = ["/etc/os-release", "etc/os-release", "/etc/abs", "/etc/rel", "/etc/up", "/etc/out", "/etc/outdir/secret",
             "/etc/dirlink/../os-release", "/etc/chain1", "/etc/loop1", "/etc/dangling", "/etc/os-release/x",
             "/../../etc/os-release", "/etc/./sub/../os-release", "/etc/magic", "/etc/procself/status", "/",
             "/missing/deeper", "/etc/sub"]
    host = Host(str(root))
    for follow in (True, False):
        walked = {}
        Host.use_openat2 = False
        for path in paths:
            walked[path] = _reached(host, path, follow)
        Host.use_openat2 = lookup == "openat2"
        assert {path: _reached(host, path, follow) for path in paths} == walked
    assert _reached(host, "/etc/out") == ("FileNotFoundError", 2)  # the outside's file is never reached
    assert _reached(host, "/etc/up") == _reached(host, "/etc/os-release")
    assert _reached(host, "/etc/magic") == ("FileNotFoundError", 2)  # the root has no /proc: nothing to follow
    assert _reached(host, "/etc/loop1") == ("OSError", 40)  # ELOOP


def test_on_the_running_system_magic_links_are_walked_as_text(lookup):
    """/proc/self/root is a magic link: openat2 refuses it (RESOLVE_NO_MAGICLINKS) and the walk follows its
    text ("/"), inside the root, as before; both reach the same objects."""
    host = Host("/")
    paths = ["/proc/self/root/etc/os-release", "/proc/self/root", "/proc/cpuinfo", "/proc/self/status", "/etc/os-release"]
    Host.use_openat2 = False
    walked = {path: _reached(host, path) for path in paths}
    Host.use_openat2 = lookup == "openat2"
    assert {path: _reached(host, path) for path in paths} == walked
    assert walked["/proc/self/root/etc/os-release"] == walked["/etc/os-release"]
