# SPDX-License-Identifier: GPL-2.0-or-later
"""What QEMU and libvirt say about themselves: qemu.conf's run identity, a QMP conversation, virsh's answers."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional

from . import ParseError

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

_SETTING = pattern(r'^\s*(user|group)\s*=\s*"([^"\n]*)"\s*(?:#.*)?$')


def parse_qemu_conf_identity(text: str) -> Dict[str, str]:
    """{"user": ..., "group": ...} as set (not commented out) in libvirt's qemu.conf; the last setting wins,
    as in libvirt's own config parser.  Values keep libvirt's forms: "qemu", "+107" (a uid), "107"."""
    found: Dict[str, str] = {}
    for line in text.splitlines():
        m = _SETTING.match(line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


_SHIPPED_DEFAULT = pattern(r'^#(user|group) = "([^"\n]*)"\s*$')


def parse_qemu_conf_defaults(text: str) -> Dict[str, str]:
    """The built-in user and group as the package's own qemu.conf documents them: the commented-out
    '#user = "libvirt-qemu"' lines (libvirt's qemu.conf.in fills them from the build's qemu_user and
    qemu_group; the indented '#       user = "qemu"   # A user named ...' examples above them do not match)."""
    found: Dict[str, str] = {}
    for line in text.splitlines():
        m = _SHIPPED_DEFAULT.match(line)
        if m:
            found.setdefault(m.group(1), m.group(2))
    return found


class QmpAnswers(Record):
    greeting: Optional[Dict[str, Any]]
    returns: List[Any]  # one per command, in order: the "return" value, or {"error": {...}}


def parse_qmp(stdout: str) -> QmpAnswers:
    """QEMU's QMP output on stdio: the greeting, then one answer per command; events are left out."""
    greeting = None
    returns: List[Any] = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            continue  # not a QMP message (a warning QEMU printed to stdout; arrays nested thousands deep)
        if not isinstance(msg, dict):
            continue
        if "QMP" in msg and greeting is None:
            greeting = msg["QMP"] if isinstance(msg["QMP"], dict) else {}
        elif "return" in msg:
            returns.append(msg["return"])
        elif "error" in msg:
            returns.append({"error": msg["error"]})
    return QmpAnswers(greeting, returns)


def qemu_version(value: Any) -> Optional[str]:
    """'7.2.22' from query-version's (or the greeting's) {"qemu": {"major": 7, ...}}."""
    try:
        q = value["qemu"]
        return f"{int(q['major'])}.{int(q['minor'])}.{int(q['micro'])}"
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: int() of an infinite float
        return None


def _xml(text: str) -> ET.Element:
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ParseError("XML with a document type or entities is refused")
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise ParseError(f"not well-formed XML: {exc}") from None


def kvm_guest_arches(capabilities_xml: str) -> List[str]:
    """Architectures of the <guest> entries of 'virsh capabilities' that offer <domain type='kvm'>."""
    root = _xml(capabilities_xml)
    arches = []
    for guest in root.findall("guest"):
        arch = guest.find("arch")
        if arch is not None and any(d.get("type") == "kvm" for d in arch.findall("domain")):
            arches.append(arch.get("name") or "?")
    return arches


def domcaps_kvm(domcapabilities_xml: str) -> Dict[str, Optional[str]]:
    """{"domain", "machine", "path" (the emulator)} of 'virsh domcapabilities --virttype kvm'."""
    root = _xml(domcapabilities_xml)
    return {k: (root.findtext(k) or "").strip() or None for k in ("domain", "machine", "path")}


class VirshNetwork(Record):
    name: str
    active: bool
    autostart: bool
    persistent: bool


def parse_net_list(text: str) -> List[VirshNetwork]:
    """'virsh net-list --all' (LC_ALL=C): a header, a rule, then 'NAME  active|inactive  yes|no  yes|no'."""
    nets = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 4 and words[1] in ("active", "inactive") and words[2] in ("yes", "no"):
            nets.append(VirshNetwork(words[0], words[1] == "active", words[2] == "yes", words[3] == "yes"))
    return nets


def pool_target(pool_xml: str) -> Optional[str]:
    """The <target><path> of 'virsh pool-dumpxml NAME'."""
    root = _xml(pool_xml)
    path = root.findtext("target/path")
    return path.strip() if path else None
