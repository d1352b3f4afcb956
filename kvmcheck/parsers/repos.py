# SPDX-License-Identifier: GPL-2.0-or-later
"""Package sources: dnf/yum and zypper .repo files, apt one-line and deb822 sources.

Every parser takes the file's text (and its path, kept for the report) and
returns :class:`Source` records, disabled ones included, in file order.
Names are kept exactly as written: no variable expansion, no unescaping.
"""
from __future__ import annotations

import re
from types import MappingProxyType
from typing import Dict, List, Mapping, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

# libdnf OptionBool; anything else makes dnf refuse the repository.
_DNF_TRUE = ("1", "yes", "true", "on")
_DNF_FALSE = ("0", "no", "false", "off")
# libzypp str::strToTrue: these are true, everything else false.
_ZYPP_TRUE = ("1", "yes", "true", "on", "always", "+")
_DNF_ID = pattern(r"^[A-Za-z0-9_.:-]+$")  # libdnf Repo::verifyId
APT_TYPES = ("deb", "deb-src")


# The default of a mapping field: shared by every instance, so read-only (nothing mutates these).
_NO_ENTRIES: Mapping[str, str] = MappingProxyType({})


class Source(Record):
    """One repository section, deb822 stanza or one-line entry."""

    manager: str  # "dnf", "zypper" or "apt"
    file: str
    line: int  # where the section, stanza or line starts (1-based)
    id: str  # dnf/zypper section id, apt: "" (apt sources have no name)
    name: str  # the display name as written (dnf/zypper name=, else the id; apt: the first URI)
    enabled: bool
    urls: Tuple[str, ...] = ()
    url_key: str = ""  # baseurl, mirrorlist, metalink, URIs, uri
    types: Tuple[str, ...] = ()  # apt: deb / deb-src
    suites: Tuple[str, ...] = ()
    components: Tuple[str, ...] = ()
    options: Mapping[str, str] = _NO_ENTRIES  # apt [options] / other deb822 fields
    format: str = ""  # "ini", "one-line", "deb822"
    commented: bool = False  # a one-line entry disabled by a leading '#'
    problems: Tuple[str, ...] = ()  # why the package manager would not use it

    @property
    def usable(self) -> bool:
        """Enabled, and complete enough for the package manager to fetch from it."""
        return self.enabled and not self.problems and bool(self.urls)

    @property
    def label(self) -> str:
        if self.manager == "apt":
            suites = " ".join(self.suites)
            comps = " ".join(self.components)
            return " ".join(p for p in (self.urls[0] if self.urls else "?", suites, comps) if p)
        if self.name and self.name != self.id:
            return f"{self.id} ({self.name})"
        return self.id

    def to_evidence(self) -> Dict[str, object]:
        ev: Dict[str, object] = {"file": self.file, "line": self.line}
        if self.manager != "apt":
            ev.update(id=self.id, name=self.name)
        ev["enabled"] = self.enabled
        ev["urls"] = list(self.urls)
        if self.url_key and self.manager != "apt":
            ev["url_key"] = self.url_key
        if self.manager == "apt":
            ev.update(format=self.format, types=list(self.types), suites=list(self.suites),
                      components=list(self.components))
            if self.options:
                ev["options"] = dict(self.options)
            if self.commented:
                ev["commented_out"] = True
        if self.problems:
            ev["problems"] = list(self.problems)
        return ev


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")


def _split_urls(value: str) -> Tuple[str, ...]:
    """baseurl and friends: several URLs separated by whitespace, commas or continuation lines."""
    return tuple(u for u in re.split(r"[\s,]+", value) if u)


_MAX_BAD_LINES = 10  # unparsable lines named one by one; every section repeats the file's problems
_NO_CONTINUATION = 1 << 62  # configparser: indent_level = sys.maxsize


def _ini_sections(text: str) -> Tuple[List[Tuple[str, int, Dict[str, str]]], List[str]]:
    """(section, line, options) in file order, and problems with the file as a whole.

    The reading of configparser.RawConfigParser (delimiter "=", "#" and ";" full-line comments,
    indented continuation lines, no interpolation, keys lower-cased, repeated sections merged,
    the last of repeated keys wins), done here because configparser is not fit for hostile files:
    its option pattern backtracks quadratically over a run of blanks in a line, its ParsingError
    grows its message by string concatenation per bad line (both took minutes on a 1 MB file),
    and its section pattern differs between Python versions (3.9 "[^]]+", 3.11 ".+").
    """
    lines = _normalize_newlines(text).split("\n")
    problems: List[str] = []
    bad: List[int] = []
    sections: Dict[str, Dict[str, List[str]]] = {}
    starts: Dict[str, int] = {}
    current: Optional[Dict[str, List[str]]] = None
    key: Optional[str] = None
    indent = 0
    for num, raw in enumerate(lines, 1):
        value = raw.strip()
        if not value or value.startswith(("#", ";")):
            indent = _NO_CONTINUATION  # a blank or comment line ends a continued value
            continue
        level = len(raw) - len(raw.lstrip())
        if current is not None and key is not None and level > indent:
            current[key].append(value)  # a continuation line
            continue
        indent = level
        close = value.rfind("]")
        if value.startswith("[") and close >= 2:  # configparser's "\[(?P<header>.+)\]", matched at the start
            name = value[1:close]
            current = sections.setdefault(name, {})
            starts.setdefault(name, num)
            key = None
            continue
        if current is None:
            if value.startswith("["):  # configparser gives up at once: MissingSectionHeaderError
                problems.append(f"line {num}: cannot parse {value[:80]}")
                return [], problems
            # dnf and zypper ignore what comes before the first section; say so
            problems.append(f"line {num}: settings before the first [section] header")
            current = {}
        option, sep, rest = value.partition("=")
        if not sep or not option.rstrip():
            bad.append(num)
            if not sep:
                continue
        key = option.rstrip().lower()
        current[key] = [rest.strip()]
    for num in bad[:_MAX_BAD_LINES]:
        problems.append(f"line {num}: cannot parse {lines[num - 1].strip()[:80]}")
    if len(bad) > _MAX_BAD_LINES:  # else a file of bad lines and sections gave quadratic output
        problems.append(f"{len(bad) - _MAX_BAD_LINES} more lines cannot be parsed")
    out = [(name, starts[name], {k: "\n".join(v).rstrip() for k, v in opts.items()})
           for name, opts in sections.items()]
    return out, problems


def _parse_repo_ini(text: str, path: str, manager: str) -> List[Source]:
    sections, file_problems = _ini_sections(text)
    found = []
    for sect, line, opts in sections:
        if manager == "dnf" and sect.lower() == "main":
            continue  # dnf.conf / yum.conf settings, not a repository
        problems = list(file_problems)
        if manager == "dnf" and not _DNF_ID.match(sect):
            problems.append(f"dnf refuses the repository id [{sect}]: only letters, digits and -_.: are allowed")
        raw_enabled = (opts.get("enabled") or "").strip()
        if not raw_enabled:
            enabled = True  # dnf and zypper both default to enabled
        elif manager == "dnf":
            low = raw_enabled.lower()
            if low in _DNF_TRUE:
                enabled = True
            elif low in _DNF_FALSE:
                enabled = False
            else:
                enabled = False
                problems.append(f"enabled={raw_enabled} is not a boolean (1/0, yes/no, true/false, on/off)")
        else:
            enabled = raw_enabled.lower() in _ZYPP_TRUE
        urls: Tuple[str, ...] = ()
        url_key = ""
        for key in ("baseurl", "mirrorlist", "metalink"):
            value = _split_urls(opts.get(key) or "")
            if value:
                urls, url_key = value, key
                break
        if not urls:
            problems.append("no baseurl, mirrorlist or metalink")
        name = (opts.get("name") or "").strip() or sect
        extra = {k: v for k, v in opts.items() if k in ("type", "gpgcheck", "priority", "autorefresh", "module_hotfixes")}
        found.append(Source(manager=manager, file=path, line=line, id=sect, name=name, enabled=enabled, urls=urls,
                            url_key=url_key, options=extra, format="ini", problems=tuple(problems)))
    return found


def parse_dnf_repo(text: str, path: str = "") -> List[Source]:
    """A yum/dnf .repo file (or the repository sections of dnf.conf / yum.conf)."""
    return _parse_repo_ini(text, path, "dnf")


def parse_zypper_repo(text: str, path: str = "") -> List[Source]:
    """A zypper /etc/zypp/repos.d/*.repo file."""
    return _parse_repo_ini(text, path, "zypper")


_ONE_LINE = pattern(r"^(?P<type>[A-Za-z][\w-]*)\s+(?:\[(?P<opts>[^\]]*)\]\s*)?(?P<rest>\S.*)?$")


def _one_line(body: str) -> Optional[Tuple[str, Dict[str, str], List[str]]]:
    m = _ONE_LINE.match(body.strip())
    if not m or m.group("type") not in APT_TYPES:
        return None
    opts: Dict[str, str] = {}
    for item in (m.group("opts") or "").split():
        key, sep, value = item.partition("=")
        if sep:
            opts[key] = value
    return m.group("type"), opts, (m.group("rest") or "").split()


def parse_apt_list(text: str, path: str = "") -> List[Source]:
    """sources.list(5) one-line style: ``deb [opt=val ...] URI SUITE [COMPONENT...]``.

    Everything after '#' is a comment, as apt does it.  A commented-out entry
    ("# deb-src http://...") is returned as disabled with commented=True.
    """
    found = []
    for num, raw in enumerate(_normalize_newlines(text).split("\n"), 1):
        stripped = raw.strip()
        commented = stripped.startswith("#")
        body = stripped.lstrip("#").strip() if commented else stripped
        body = body.split("#", 1)[0].strip()
        if not body:
            continue
        parsed = _one_line(body)
        if parsed is None:
            if not commented:
                found.append(Source("apt", path, num, "", body[:80], False, format="one-line",
                                    problems=(f"not a source line: {body[:80]}",)))
            continue
        kind, opts, rest = parsed
        problems = []
        if len(rest) < 2:
            if commented:
                continue  # prose in a comment that happens to start with "deb"
            problems.append("needs a URI and a suite")
        uri = rest[0] if rest else ""
        suite = rest[1] if len(rest) > 1 else ""
        comps = tuple(rest[2:])
        if suite and not suite.endswith("/") and not comps and not commented:
            problems.append("a suite without a trailing '/' needs at least one component")
        found.append(Source(manager="apt", file=path, line=num, id="", name=uri, enabled=not commented,
                            urls=(uri,) if uri else (), url_key="uri", types=(kind,),
                            suites=(suite,) if suite else (), components=comps, options=opts,
                            format="one-line", commented=commented, problems=tuple(problems)))
    return found


def _deb822_stanzas(text: str) -> List[Tuple[int, Dict[str, str]]]:
    """Stanzas as (first line, {lowercased field: value}); continuation lines are joined with newlines."""
    stanzas: List[Tuple[int, Dict[str, str]]] = []
    # Each field's lines, joined at the stanza's end: "+=" on a dict value copied the whole value
    # for every continuation line (quadratic in a long embedded key).
    fields: Dict[str, List[str]] = {}
    start = 0
    key = None

    def flush() -> None:
        if fields:
            stanzas.append((start, {k: "\n".join(v) for k, v in fields.items()}))

    for num, raw in enumerate(_normalize_newlines(text).split("\n"), 1):
        if raw.startswith("#"):
            continue  # a comment line, even between continuation lines
        if not raw.strip():
            flush()
            fields, key = {}, None
            continue
        if raw[0] in " \t":
            if key is not None:
                cont = raw.strip()
                fields[key].append("" if cont == "." else cont)
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        if not fields:
            start = num
        key = name.strip().lower()
        fields[key] = [value.strip()]
    flush()
    return stanzas


def parse_apt_sources(text: str, path: str = "") -> List[Source]:
    """A deb822 ``.sources`` file: stanzas of Types, URIs, Suites, Components, Enabled, ..."""
    found = []
    for line, fields in _deb822_stanzas(text):
        types = tuple(fields.get("types", "").split())
        uris = tuple(fields.get("uris", "").split())
        suites = tuple(fields.get("suites", "").split())
        comps = tuple(fields.get("components", "").split())
        enabled_raw = fields.get("enabled", "yes").strip().lower()
        enabled = enabled_raw not in ("no", "false", "0", "off")
        problems = []
        for fname, value in (("Types", types), ("URIs", uris), ("Suites", suites)):
            if not value:
                problems.append(f"no {fname} field")
        bad_types = [t for t in types if t not in APT_TYPES]
        if bad_types:
            problems.append(f"unknown type {' '.join(bad_types)}")
        if suites and not comps and any(not s.endswith("/") for s in suites):
            problems.append("a suite without a trailing '/' needs Components")
        opts = {k: ("(embedded OpenPGP key)" if "BEGIN PGP" in v else " ".join(v.split()))
                for k, v in fields.items() if k not in ("types", "uris", "suites", "components", "enabled")}
        found.append(Source(manager="apt", file=path, line=line, id="", name=uris[0] if uris else "",
                            enabled=enabled, urls=uris, url_key="URIs", types=types, suites=suites,
                            components=comps, options=opts, format="deb822", problems=tuple(problems)))
    return found
