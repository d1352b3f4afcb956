# SPDX-License-Identifier: GPL-2.0-or-later
"""Build kvmcheck.pyz: one file that runs kvmcheck with any Python >= 3.9 and nothing installed.

    python3 -m kvmcheck.tools.build [-o dist/kvmcheck.pyz] [-c constraints.txt]

The zip holds kvmcheck (taken from this installation, so an editable work tree builds what it is) and its
pure-Python runtime dependencies, installed by pip for CPython 3.9 wheels (`pip install --target`): every
dependency is taken whatever its environment marker (tomli too), because the file must run on 3.9 as on 3.13.
Compiled modules (MarkupSafe's optional _speedups) are left out: they would fit one Python only, and the
pure-Python code they speed up is always there.  Bytecode for the building Python is added beside the sources
(other Pythons compile the sources).  Entries are sorted and dated 1980-01-01 with fixed permissions, so two
builds from the same inputs with the same Python are byte-identical.  Only the build asks a package index
(pip's own configuration: --index-url, --find-links, PIP_* variables); the hosts that run the file never do.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from typing import Iterator, List, Optional, Sequence, Tuple

SHEBANG = b"#!/usr/bin/env python3\n"
MAIN = (
    "# kvmcheck.pyz entry point: python3 kvmcheck.pyz check ...\n"
    "import sys\n"
    "if sys.version_info < (3, 9):\n"
    "    sys.exit('kvmcheck needs Python 3.9 or newer; this is %d.%d' % sys.version_info[:2])\n"
    "sys.argv[0] = 'kvmcheck'\n"
    "from kvmcheck.cli import main\n"
    "main()\n"
)
# kvmcheck's packages and the data files each carries (pyproject.toml's packages and package-data).
PACKAGES = {
    "kvmcheck": (".py",),
    "kvmcheck.core": (".py",),
    "kvmcheck.facts": (".py",),
    "kvmcheck.tools": (".py",),
    "kvmcheck.parsers": (".py",),
    "kvmcheck.checks": (".py",),
    "kvmcheck.reports": (".py", ".j2", ".json"),
    "kvmcheck.profiles": (".py", ".toml"),
}
COMPILED = (".so", ".pyd", ".dylib")
# Installer bookkeeping that describes the build machine, not the code (RECORD lists the dropped .so files).
DROPPED_METADATA = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry


def requirements() -> List[str]:
    """kvmcheck's runtime requirements, markers dropped: the zip serves every Python >= 3.9."""
    from importlib import metadata

    reqs = []
    for line in metadata.requires("kvmcheck") or []:
        spec, _, marker = line.partition(";")
        if "extra" in marker:  # test and bench extras are not runtime dependencies
            continue
        reqs.append(spec.strip())
    return sorted(reqs)


def own_files() -> Iterator[Tuple[str, str]]:
    """(name in the zip, path on disk) of kvmcheck's own modules and data, from the installed packages."""
    import importlib

    for package, suffixes in PACKAGES.items():
        folder = list(importlib.import_module(package).__path__)[0]
        prefix = package.replace(".", "/")
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and name.endswith(suffixes):
                yield f"{prefix}/{name}", path


def pip_install(target: str, reqs: Sequence[str], constraints: Sequence[str]) -> None:
    machine = os.uname().machine
    # Wheels for CPython 3.9 (the oldest supported Python) on any glibc from 2.17 on; only MarkupSafe has a
    # compiled one, whose extension is dropped below.
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(39, 16, -1)] + [f"manylinux2014_{machine}"]
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--quiet", "--target", target,
            "--no-compile", "--only-binary=:all:", "--python-version", "3.9", "--implementation", "cp",
            "--abi", "cp39", "--abi", "abi3", "--abi", "none", *(f"--platform={p}" for p in platforms)]
    for path in constraints:
        argv += ["--constraint", path]
    subprocess.run(argv + list(reqs), check=True)


def too_new(target: str) -> List[Tuple[str, str]]:
    """(name, version) of the installed distributions whose Requires-Python excludes 3.9.

    pip does not always hold --python-version against Requires-Python (not for links without
    data-requires-python, as from --find-links directories), so the build checks the result itself."""
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
    except ImportError:  # packaging is not installed: pip always carries a copy
        from pip._vendor.packaging.specifiers import InvalidSpecifier, SpecifierSet  # type: ignore[no-redef]
    from email.parser import HeaderParser

    bad = []
    for entry in sorted(os.listdir(target)):
        meta = os.path.join(target, entry, "METADATA")
        if not (entry.endswith(".dist-info") and os.path.isfile(meta)):
            continue
        with open(meta, encoding="utf-8", errors="replace") as fh:
            headers = HeaderParser().parse(fh)
        try:
            if "3.9" not in SpecifierSet(headers.get("Requires-Python") or ""):
                bad.append((headers["Name"], headers["Version"]))
        except InvalidSpecifier:
            continue
    return bad


def install_for_python39(target: str, reqs: Sequence[str], constraint: Optional[str]) -> None:
    """pip install into target; every release that needs a newer Python is excluded and pip runs again."""
    excluded: List[str] = []
    for _ in range(10):
        pins = os.path.join(target + ".pins", "constraints.txt")
        os.makedirs(os.path.dirname(pins), exist_ok=True)
        with open(pins, "w", encoding="utf-8") as fh:
            fh.write("".join(f"{line}\n" for line in excluded))
        if os.path.isdir(target):
            import shutil

            shutil.rmtree(target)
        pip_install(target, reqs, [pins] + ([constraint] if constraint else []))
        bad = too_new(target)
        if not bad:
            return
        excluded += [f"{name}<{version}" for name, version in bad]
    raise SystemExit(f"kvmcheck.tools.build: no set of dependencies for Python 3.9 found; excluded {excluded}")


def dependency_files(target: str) -> Iterator[Tuple[str, str]]:
    for folder, dirs, files in os.walk(target):
        rel = os.path.relpath(folder, target)
        top = rel.split(os.sep)[0]
        if top == "bin" or "__pycache__" in rel.split(os.sep):  # console scripts name the build's Python
            dirs[:] = []
            continue
        for name in files:
            if name.endswith(COMPILED) or (top.endswith(".dist-info") and name in DROPPED_METADATA):
                continue
            path = os.path.join(folder, name)
            yield os.path.relpath(path, target).replace(os.sep, "/"), path


def compiled(entries: Sequence[Tuple[str, str]]) -> List[Tuple[str, bytes]]:
    """Bytecode of every module for the building Python, as module.pyc beside module.py (where zipimport looks).

    Compiling the sources at every start costs about 0.4 s on this machine; a Python of another version finds
    a bad magic number in these files and compiles the source instead, as without them.  Unchecked hash-based
    files carry no date, so the build stays reproducible (for the same building Python)."""
    import py_compile

    out = []
    with tempfile.TemporaryDirectory(prefix="kvmcheck-pyc-") as tmp:
        for name, path in entries:
            if not name.endswith(".py"):
                continue
            target = os.path.join(tmp, "module.pyc")
            try:
                py_compile.compile(path, cfile=target, dfile=f"kvmcheck.pyz/{name}", doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            except py_compile.PyCompileError:  # source for a newer Python (a dependency's optional module)
                continue
            with open(target, "rb") as fh:
                out.append((name + "c", fh.read()))
    return out


def write_zip(output: str, entries: Sequence[Tuple[str, str]]) -> None:
    """Write the zipapp atomically: shebang, then sorted entries with fixed dates and modes."""
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kvmcheck-pyz-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(SHEBANG)
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                contents = [("__main__.py", MAIN.encode())]
                for name, path in entries:
                    with open(path, "rb") as src:
                        contents.append((name, src.read()))
                contents += compiled(entries)
                for name, data in sorted(contents):
                    info = zipfile.ZipInfo(name, EPOCH)
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.create_system = 3  # Unix, whatever the build machine
                    zf.writestr(info, data, compresslevel=9)
        os.chmod(tmp, 0o755)
        os.replace(tmp, output)
    except BaseException:
        os.unlink(tmp)
        raise


def build(output: str, constraint: Optional[str] = None) -> str:
    with tempfile.TemporaryDirectory(prefix="kvmcheck-build-") as work:
        target = os.path.join(work, "site")
        install_for_python39(target, requirements(), constraint)
        entries = dict(dependency_files(target))
        for name in [n for n in entries if n.split("/")[0] == "kvmcheck"]:
            del entries[name]  # a kvmcheck pulled in by a dependency would shadow this one
        entries.update(own_files())
        write_zip(output, sorted(entries.items()))
    return output


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m kvmcheck.tools.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default=os.path.join("dist", "kvmcheck.pyz"),
                        help="the zipapp to write (default: dist/kvmcheck.pyz)")
    parser.add_argument("-c", "--constraint", help="pip constraints file pinning the dependencies' versions")
    args = parser.parse_args(argv)
    try:
        path = build(args.output, args.constraint)
    except subprocess.CalledProcessError as exc:
        print(f"kvmcheck.tools.build: pip failed (exit {exc.returncode}); the build needs a package index or "
              "--find-links with the dependencies' wheels", file=sys.stderr)
        return 1
    print(f"{path}: {os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
