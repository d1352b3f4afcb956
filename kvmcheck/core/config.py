# SPDX-License-Identifier: GPL-2.0-or-later
"""Configuration and profiles: thresholds, severity overrides, ignores and requirements in TOML.

A profile is a configuration file shipped in kvmcheck/profiles/NAME.toml; a user's file is
the same format and may ``extends`` a profile or another file.  The layers, weakest first:
``--profile``, then the configuration file's ``extends`` chain, then the file itself.  Tables
merge key by key; a list (``[require]``) replaces the one it overrides.

Every mistake is a ConfigError naming the file, the line and what was expected: the CLI turns
it into exit status 2, never a traceback.
"""
from __future__ import annotations

import fnmatch
import os
import stat
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from kvmcheck.core.model import Result, Status
from kvmcheck.core.settings import CONFIG_FILE, PROFILE, Settings
from kvmcheck.parsers import pattern as _pattern

DEFAULT_CONFIG = "/etc/kvmcheck/config.toml"  # read on the live machine only (root "/")
MAX_BYTES = 1 << 20
MAX_DEPTH = 16  # extends chains longer than this are surely a mistake
# Arrays and inline tables nested deeper than this, or tables (dotted keys) deeper than this, are refused
# before and after tomllib: it parses nesting by recursion, and 2,000 '[' (2 KB) raise RecursionError.
MAX_NESTING = 32

# [thresholds] key -> (type name for messages, Settings field, validator or None)
THRESHOLDS: Dict[str, str] = {
    "min_kernel": "a kernel version string such as \"5.14\"",
    "check_timeout": "a number of seconds > 0",
    "min_host_cpus": "an integer >= 1",
    "min_host_memory_gib": "a number >= 0",
    "guest_vcpus": "an integer >= 1",
    "guest_memory_gib": "a number > 0",
    "host_reserve_gib": "a number >= 0",
    "host_reserve_percent": "a number from 0 to 100",
    "images_min_free_gib": "a number >= 0",
}
# The words [require] shared_storage accepts (checks/storage.py names what it finds with them).
SHARED_STORAGE_TYPES = ("nfs", "nfs4", "cifs", "smb", "glusterfs", "ceph", "cephfs", "ocfs2", "gfs2", "lustre",
                        "gpfs", "beegfs", "iscsi", "fc", "multipath")
REQUIRE = {"shared_storage": "required_shared_storage", "packages": "required_packages", "repos": "required_repos"}
ACCEPT = {"software_kvm": "accept_software_kvm"}
TOP_KEYS = ("description", "extends", "thresholds", "severity", "ignore", "require", "accept", "verdict")
STATUSES = tuple(s.value for s in Status)
TARGETS = ("pass", "warn", "fail", "skip")  # "error" is kvmcheck's own trouble, never a verdict to choose


class ConfigError(ValueError):
    """A configuration problem: the file, the line and what was expected."""


def _toml():  # type: ignore[no-untyped-def]
    if sys.version_info >= (3, 11):
        import tomllib
        return tomllib
    try:
        import tomli
    except ImportError:  # pragma: no cover - a dependency on Python < 3.11
        raise ConfigError("reading TOML needs the 'tomli' package on Python < 3.11 (pip install tomli)")
    return tomli


# -- finding a key's line --------------------------------------------------------------------------------------

_KEY_PART = _pattern(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*')


def _dotted(text: str) -> Optional[Tuple[Tuple[str, ...], str]]:
    """Parse a dotted TOML key at the start of text: (parts, rest), or None."""
    parts: List[str] = []
    pos = 0
    while True:
        m = _KEY_PART.match(text, pos)
        if not m:
            return None
        parts.append(m.group(1) if m.group(1) is not None else m.group(2) if m.group(2) is not None else m.group(3))
        pos = m.end()
        if pos < len(text) and text[pos] == ".":
            pos += 1
            continue
        return tuple(parts), text[pos:]


def key_lines(text: str) -> Dict[Tuple[str, ...], int]:
    """Where each table header and key is defined: {(table..., key...): 1-based line}.

    A line scanner, not a TOML parser: keys inside inline tables and multi-line strings are not
    found, and their errors name the nearest enclosing key that is.
    """
    found: Dict[Tuple[str, ...], int] = {}
    table: Tuple[str, ...] = ()
    in_multiline = None
    for number, line in enumerate(text.splitlines(), 1):
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            parsed = _dotted(stripped[1:])
            if parsed and parsed[1].lstrip().startswith("]"):
                table = parsed[0]
                found.setdefault(table, number)
            continue
        parsed = _dotted(stripped)
        if parsed and parsed[1].startswith("="):
            path = table + parsed[0]
            found.setdefault(path, number)
            value = parsed[1][1:].strip()
            for quote in ('"""', "'''"):
                if value.startswith(quote) and value.count(quote) == 1:
                    in_multiline = quote
    return found


@dataclass
class _Source:
    """One file as read: its name for messages, its text and its key lines."""

    name: str
    text: str
    lines: Dict[Tuple[str, ...], int] = field(default_factory=dict)

    def where(self, *path: str) -> str:
        """"FILE:LINE" for path (or the nearest enclosing key that has a line), else "FILE"."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return f"{self.name}:{self.lines[p]}"
            p = p[:-1]
        return self.name

    def error(self, path: Sequence[str], message: str) -> ConfigError:
        return ConfigError(f"{self.where(*path)}: {message}")


# -- the merged configuration --------------------------------------------------------------------------------

@dataclass
class Config:
    """What the layers add up to; ``apply_settings`` and ``apply`` put it to use."""

    profile: Optional[str] = None
    description: str = ""
    files: List[str] = field(default_factory=list)  # every file read, weakest first
    thresholds: Dict[str, Any] = field(default_factory=dict)
    severity: Dict[str, Dict[str, Tuple[str, str]]] = field(default_factory=dict)  # pattern -> from -> (to, file)
    ignore: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # pattern -> (reason, file)
    require: Dict[str, List[str]] = field(default_factory=dict)
    accept: Dict[str, bool] = field(default_factory=dict)
    # [verdict] essential: the checks a "ready" needs evidence from (None: kvmcheck's default chain)
    essential: Optional[List[str]] = None
    # The layer (settings.PROFILE or settings.CONFIG_FILE) that last set each Settings field, by field name
    origin: Dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.files

    def setting_values(self) -> Dict[str, Any]:
        """The Settings fields this configuration sets ([thresholds], [require], [accept]), by field name."""
        values: Dict[str, Any] = dict(self.thresholds)
        for key, name in REQUIRE.items():
            if key in self.require:
                values[name] = tuple(self.require[key])
        for key, name in ACCEPT.items():
            if key in self.accept:
                values[name] = self.accept[key]
        return values

    def settings(self, command_line: Optional[Mapping[str, Any]] = None) -> Settings:
        """The run's Settings: command_line (the values given there, and only those) over this configuration's
        file layer over its profile layer over the defaults (kvmcheck.core.settings)."""
        values = self.setting_values()
        return Settings.layered(
            command_line,
            config_file={k: v for k, v in values.items() if self.origin.get(k) == CONFIG_FILE},
            profile={k: v for k, v in values.items() if self.origin.get(k) == PROFILE})

    @staticmethod
    def _lookup(table: Dict[str, Any], check_id: str) -> Any:
        if check_id in table:
            return table[check_id]
        for pattern, value in table.items():
            if fnmatch.fnmatchcase(check_id, pattern):
                return value
        return None

    def apply(self, results: Sequence[Result]) -> List[Result]:
        """The results with the severity overrides, then the ignores: new Results (the given ones are values,
        never edited)."""
        return [self.applied(r) for r in results]

    def applied(self, r: Result) -> Result:
        """r with its severity override, then its ignore (r itself when neither applies)."""
        override = self._lookup(self.severity, r.id)
        if override and r.status.value in override:
            to, source = override[r.status.value]
            if to != r.status.value:
                note = f"kvmcheck configuration ({source}): {r.status.value} turned into {to}."
                remediation = r.remediation
                if Status(to) in (Status.WARN, Status.FAIL) and not remediation:
                    remediation = f"The configuration ({source}) asks for this; see the detail."
                r = replace(r, original_status=r.status, status=Status(to), detail=f"{r.detail} {note}".strip(),
                            remediation=remediation)
        ignored = self._lookup(self.ignore, r.id)
        if ignored:
            reason, source = ignored
            r = replace(r, ignored=True, ignore_reason=reason,
                        detail=f"{r.detail} Ignored by the configuration ({source}): {reason}".strip())
        return r

    def to_dict(self) -> Dict[str, Any]:
        return {"profile": self.profile, "files": list(self.files)}


# -- reading and validating one file ------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


def _check_threshold(src: _Source, key: str, value: Any) -> Any:
    path = ("thresholds", key)
    expected = THRESHOLDS[key]
    if key == "min_kernel":
        if not isinstance(value, str):
            raise src.error(path, f"thresholds.min_kernel is {_type_name(value)}; expected {expected}")
        from kvmcheck.parsers import ParseError
        from kvmcheck.parsers.kernel_version import parse_min_version

        try:
            parse_min_version(value)
        except ParseError as exc:
            raise src.error(path, f"thresholds.min_kernel {value!r}: {exc}")
        return value
    if key in ("min_host_cpus", "guest_vcpus"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise src.error(path, f"thresholds.{key} is {value!r} ({_type_name(value)}); expected {expected}")
        return value
    ok = _is_number(value) and value >= 0 and not (key == "guest_memory_gib" and value <= 0) \
        and not (key == "host_reserve_percent" and value > 100) and not (key == "check_timeout" and value <= 0)
    if not ok:
        raise src.error(path, f"thresholds.{key} is {value!r} ({_type_name(value)}); expected {expected}")
    return float(value)


def _check_pattern(src: _Source, path: Sequence[str], pattern: str, known: Sequence[str]) -> None:
    if not known:
        return  # no check list to validate against (list_profiles, a unit test)
    if any(fnmatch.fnmatchcase(k, pattern) for k in known):
        return
    close = [k for k in known if k.split(".")[0] == pattern.split(".")[0]][:6]
    hint = f" (checks in {pattern.split('.')[0]}: {', '.join(close)})" if close else " ('kvmcheck list' shows them)"
    raise src.error(path, f"unknown check id {pattern!r} in [{path[0]}]; expected a check id or a glob "
                          f"matching one{hint}")


def _read(path: str, live_host: bool) -> str:
    """A configuration file's text: a regular file, at most MAX_BYTES, UTF-8."""
    if live_host:
        from kvmcheck.core.host import Host

        try:
            text = Host("/").read_optional(path, limit=MAX_BYTES)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}")
        if text is None:
            raise ConfigError(f"{path}: cannot read: No such file or directory")
        return text
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if st.st_size > MAX_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_BYTES} bytes; a configuration file is small")
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8")


_AT = _pattern(r"\(at line (\d+), column (\d+)\)|at line (\d+), column (\d+)")


_NESTING_TOKEN = _pattern("[\\[\\]{}#\"']")


def _nesting(text: str) -> Optional[int]:
    """The line where '[' and '{' outside strings and comments first nest deeper than MAX_NESTING, else None.

    A pre-scan, not only `except RecursionError`: how deep tomllib can go depends on the stack already in
    use (a plugin, a thread), and a RecursionError can surface anywhere; a fixed limit refuses the same file
    the same way every time, naming its line. Linear: one pass from token to token, strings skipped by find()
    (a hostile 1 MiB file takes about as long as tomllib's own parse, 0.3-0.4 s). A table header [a.b] or
    [[a]] nests 1 or 2, far below the limit; the scan never judges syntax (tomllib does).
    """
    depth, i, n = 0, 0, len(text)
    while True:
        m = _NESTING_TOKEN.search(text, i)
        if m is None:
            return None
        i, ch = m.start(), m.group()
        if ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return text.count("\n", 0, i) + 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == "#":  # a comment runs to the end of the line
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        else:  # a string: basic "..." (backslash escapes), literal '...', or their multi-line """ / ''' forms
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            j = i + len(quote)
            while True:
                end = text.find(quote, j)
                if end < 0:
                    return None  # unterminated: tomllib says where
                if ch == '"' and _escaped(text, end):
                    j = end + 1
                    continue
                break
            if len(quote) == 1 and "\n" in text[i:end]:
                return None  # a one-line string across lines: tomllib says where
            i = end + len(quote)
            continue
        i += 1


def _escaped(text: str, at: int) -> bool:
    """Whether the quote at text[at] is escaped: an odd run of backslashes before it."""
    k = at
    while k > 0 and text[k - 1] == "\\":
        k -= 1
    return (at - k) % 2 == 1


def _too_deep(data: Any) -> bool:
    """Whether parsed tables and arrays nest deeper than MAX_NESTING (dotted keys a.b.c... build them
    without brackets); iterative, so the check itself cannot overflow."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False


def _parse(name: str, text: str) -> Tuple[_Source, Dict[str, Any]]:
    toml = _toml()
    src = _Source(name, text)
    deep = _nesting(text)
    if deep is not None:
        raise ConfigError(f"{name}:{deep}: arrays or inline tables nested more than {MAX_NESTING} deep; "
                          "a kvmcheck configuration nests two or three levels")
    try:
        data = toml.loads(text)
    except RecursionError:  # the pre-scan's backstop: refused all the same, never a traceback
        raise ConfigError(f"{name}: nested too deeply for the TOML parser") from None
    except toml.TOMLDecodeError as exc:
        msg = str(exc)
        m = _AT.search(msg)
        if m:
            line, col = m.group(1) or m.group(3), m.group(2) or m.group(4)
            what = _AT.sub("", msg).strip().rstrip(".")
            raise ConfigError(f"{name}:{line}:{col}: invalid TOML: {what}")
        raise ConfigError(f"{name}: invalid TOML: {msg}")
    if _too_deep(data):
        raise ConfigError(f"{name}: tables or arrays nested more than {MAX_NESTING} deep (dotted keys such as "
                          "a.b.c... count); a kvmcheck configuration nests two or three levels")
    src.lines = key_lines(text)
    return src, data


def _merge_file(cfg: Config, src: _Source, data: Dict[str, Any], known: Sequence[str], layer: str = CONFIG_FILE) -> None:
    """Validate one file's tables and lay them over cfg; the Settings fields it sets come from layer."""
    for key, value in data.items():
        if key not in TOP_KEYS:
            raise src.error((key,), f"unknown key {key!r}; expected one of: {', '.join(TOP_KEYS)}")
    if "description" in data:
        if not isinstance(data["description"], str):
            raise src.error(("description",), f"description is {_type_name(data['description'])}; expected a string")
        cfg.description = data["description"]

    def table(name: str) -> Dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise src.error((name,), f"{name} is {_type_name(value)}; expected a table ([{name}])")
        return value

    for key, value in table("thresholds").items():
        if key not in THRESHOLDS:
            raise src.error(("thresholds", key), f"unknown key {key!r} in [thresholds]; expected one of: "
                                                 f"{', '.join(THRESHOLDS)}")
        cfg.thresholds[key] = _check_threshold(src, key, value)
        cfg.origin[key] = layer

    for pattern, mapping in table("severity").items():
        path = ("severity", pattern)
        _check_pattern(src, path, pattern, known)
        if not isinstance(mapping, dict):
            raise src.error(path, f"severity.{pattern!r} is {_type_name(mapping)}; expected a table mapping a "
                                  f"status to a status, e.g. [severity.\"{pattern}\"] warn = \"fail\"")
        entry = cfg.severity.setdefault(pattern, {})
        for frm, to in mapping.items():
            if frm not in STATUSES:
                raise src.error(path + (frm,), f"unknown status {frm!r} in [severity.\"{pattern}\"]; expected "
                                               f"one of: {', '.join(STATUSES)}")
            if not isinstance(to, str) or to not in TARGETS:
                raise src.error(path + (frm,), f"severity.\"{pattern}\".{frm} is {to!r}; expected one of: "
                                               f"{', '.join(TARGETS)} (as a string)")
            entry[frm] = (to, src.name)

    for pattern, reason in table("ignore").items():
        path = ("ignore", pattern)
        _check_pattern(src, path, pattern, known)
        if not isinstance(reason, str):
            raise src.error(path, f"ignore.\"{pattern}\" is {_type_name(reason)}; expected the reason as a "
                                  f"string, e.g. \"{pattern}\" = \"why this does not matter here\"")
        if not reason.strip():
            raise src.error(path, f"ignore.\"{pattern}\" has an empty reason; a reason is mandatory")
        cfg.ignore[pattern] = (reason.strip(), src.name)

    for key, value in table("require").items():
        path = ("require", key)
        if key not in REQUIRE:
            raise src.error(path, f"unknown key {key!r} in [require]; expected one of: {', '.join(REQUIRE)}")
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise src.error(path, f"require.{key} is {_type_name(value)}; expected an array of non-empty strings")
        if key == "shared_storage":
            bad = [v for v in value if v not in SHARED_STORAGE_TYPES]
            if bad:
                raise src.error(path, f"unknown shared storage type {bad[0]!r}; expected any of: "
                                      f"{', '.join(SHARED_STORAGE_TYPES)}")
        cfg.require[key] = [v.strip() for v in value]
        cfg.origin[REQUIRE[key]] = layer

    for key, value in table("accept").items():
        path = ("accept", key)
        if key not in ACCEPT:
            raise src.error(path, f"unknown key {key!r} in [accept]; expected one of: {', '.join(ACCEPT)}")
        if not isinstance(value, bool):
            raise src.error(path, f"accept.{key} is {_type_name(value)}; expected true or false")
        cfg.accept[key] = value
        cfg.origin[ACCEPT[key]] = layer

    for key, value in table("verdict").items():
        path = ("verdict", key)
        if key != "essential":
            raise src.error(path, f"unknown key {key!r} in [verdict]; expected: essential")
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise src.error(path, f"verdict.essential is {_type_name(value)}; expected an array of check ids")
        for check_id in value:
            if known and check_id.strip() not in known:
                raise src.error(path, f"verdict.essential names {check_id!r}, which is not a check id "
                                      "(see 'kvmcheck list')")
        cfg.essential = [v.strip() for v in value]


# -- profiles and extends ------------------------------------------------------------------------------------

_PROFILE_NAME = _pattern(r"^[a-z0-9][a-z0-9-]*$")


def _profiles_dir():  # type: ignore[no-untyped-def]
    from importlib import resources

    return resources.files("kvmcheck.profiles")


def profile_names() -> List[str]:
    names = sorted(p.name[:-5] for p in _profiles_dir().iterdir() if p.name.endswith(".toml"))
    return (["default"] if "default" in names else []) + [n for n in names if n != "default"]


def _is_path(ref: str) -> bool:
    return "/" in ref or ref.endswith(".toml")


def _locate(ref: str, base_dir: Optional[str], where: str) -> Tuple[str, str, bool]:
    """(identity, name for messages, is a built-in profile) of a profile name or a file path."""
    if _is_path(ref):
        path = os.path.expanduser(ref)
        if not os.path.isabs(path):
            path = os.path.join(base_dir or os.getcwd(), path)
        path = os.path.normpath(path)
        return path, path, False
    if not _PROFILE_NAME.match(ref) or ref not in profile_names():
        raise ConfigError(f"{where}: no profile {ref!r}; expected one of: {', '.join(profile_names())} "
                          "(or a path to a TOML file)")
    return f"profile:{ref}", str(_profiles_dir().joinpath(f"{ref}.toml")), True


def _load_chain(ref: str, base_dir: Optional[str], where: str, known: Sequence[str], cfg: Config,
                seen: List[str], live_default: bool = False, layer: str = CONFIG_FILE) -> None:
    """Load ref after its extends chain (depth first), laying each over cfg."""
    ident, name, builtin = _locate(ref, base_dir, where)
    if ident in seen:
        loop = " -> ".join(s.replace("profile:", "") for s in seen[seen.index(ident):] + [ident])
        raise ConfigError(f"{where}: extends loop: {loop}")
    if len(seen) >= MAX_DEPTH:
        raise ConfigError(f"{where}: extends chain deeper than {MAX_DEPTH} files")
    if builtin:
        text = _profiles_dir().joinpath(f"{ref}.toml").read_text(encoding="utf-8")
    else:
        text = _read(name, live_default)
    src, data = _parse(name, text)
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str) or not parent.strip():
            raise src.error(("extends",), f"extends is {_type_name(parent)}; expected a profile name or a path "
                                          "as a string")
        _load_chain(parent.strip(), None if builtin else os.path.dirname(name), src.where("extends"), known, cfg,
                    seen + [ident], layer=layer)
    _merge_file(cfg, src, data, known, layer)
    cfg.files.append(name)


def load(config: Optional[str] = None, profile: Optional[str] = None, root: str = "/",
         known_ids: Sequence[str] = ()) -> Config:
    """The configuration for one run.

    profile: a built-in profile name (or a path); config: a TOML file.  Without config and
    with root "/", DEFAULT_CONFIG is read from the live machine when it exists.  For another
    root nothing is read implicitly: a captured tree must not vouch for itself.
    """
    cfg = Config(profile=profile)
    if profile is not None:
        if not profile.strip():
            raise ConfigError("--profile: empty profile name")
        _load_chain(profile.strip(), None, "--profile", known_ids, cfg, [], layer=PROFILE)
    if config is not None:
        _load_chain(config if _is_path(config) else "./" + config, None, "--config", known_ids, cfg, [])
    elif os.path.realpath(root) == "/" and os.path.lexists(DEFAULT_CONFIG):
        _load_chain(DEFAULT_CONFIG, None, DEFAULT_CONFIG, known_ids, cfg, [], live_default=True)
    if profile is None and cfg.files:
        cfg.profile = _root_profile(cfg)
    return cfg


def _root_profile(cfg: Config) -> Optional[str]:
    """The built-in profile at the bottom of the chain, if any (for the report)."""
    base = str(_profiles_dir())
    first = cfg.files[0]
    if os.path.dirname(first) == base.rstrip("/"):
        return os.path.basename(first)[:-5]
    return None


def list_profiles() -> List[Tuple[str, str]]:
    """(name, description) of every built-in profile, default first."""
    out = []
    for name in profile_names():
        try:
            cfg = load(profile=name)
        except ConfigError as exc:  # a broken shipped profile: say so rather than crash the listing
            out.append((name, f"(broken: {exc})"))
            continue
        out.append((name, cfg.description))
    return out
