# SPDX-License-Identifier: GPL-2.0-or-later
"""libvirt network XML (/etc/libvirt/qemu/networks/NAME.xml): the parts a host check needs.

Only what decides whether guests get a working network: the name, the
forward mode (``<forward/>`` without a mode is NAT; no ``<forward>`` at all
is an isolated network), the bridge device, and the addresses with their
prefixes and DHCP ranges.
"""
from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from typing import List, Optional, Tuple, Union

from . import ParseError

from kvmcheck.core.record import Record

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class NetworkIP(Record):
    family: str  # "ipv4" or "ipv6"
    address: str
    prefix: Optional[int]  # None when the netmask or prefix is unusable
    dhcp_ranges: Tuple[Tuple[str, str], ...] = ()

    @property
    def network(self) -> Optional[IPNetwork]:
        """The subnet, e.g. 192.168.122.0/24; None when address or prefix is unusable."""
        if self.prefix is None:
            return None
        try:
            return ipaddress.ip_network(f"{self.address}/{self.prefix}", strict=False)
        except ValueError:
            return None


class LibvirtNetwork(Record):
    name: Optional[str]
    forward_mode: Optional[str]  # "nat", "route", "bridge", "open", ...; None: isolated (no <forward>)
    bridge: Optional[str]  # <bridge name='virbr0'/>
    ips: Tuple[NetworkIP, ...]
    forward_dev: Optional[str] = None

    @property
    def ipv4(self) -> List[NetworkIP]:
        return [ip for ip in self.ips if ip.family == "ipv4"]

    @property
    def ipv6(self) -> List[NetworkIP]:
        return [ip for ip in self.ips if ip.family == "ipv6"]


def _classful_prefix(address: str) -> Optional[int]:
    """libvirt's default prefix for an IPv4 <ip> without netmask or prefix: the old class A/B/C size."""
    try:
        first = int(ipaddress.IPv4Address(address)) >> 24
    except ValueError:
        return None
    if first < 128:
        return 8
    if first < 192:
        return 16
    if first < 224:
        return 24
    return None


def _prefix(elem: ET.Element, family: str, address: str) -> Optional[int]:
    prefix = (elem.get("prefix") or "").strip()
    netmask = (elem.get("netmask") or "").strip()
    limit = 32 if family == "ipv4" else 128
    if prefix:
        # isdecimal, not isdigit: int() refuses superscripts such as "\u00b2" that isdigit accepts;
        # and a few digits at most, since int() also refuses thousands of them.
        return int(prefix) if prefix.isdecimal() and len(prefix) <= 3 and int(prefix) <= limit else None
    if netmask:
        if family != "ipv4":
            return None  # libvirt accepts netmask= for IPv4 only
        try:
            return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
        except ValueError:
            return None  # not a contiguous mask
    return _classful_prefix(address) if family == "ipv4" else 64


def parse_network_xml(text: str) -> LibvirtNetwork:
    """Parse one <network> definition; ParseError when it is not well-formed XML or not a <network>."""
    if "<!ENTITY" in text:
        raise ParseError("entity declarations are not allowed in a libvirt network definition")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ParseError(f"not well-formed XML: {exc}") from None
    if root.tag != "network":
        raise ParseError(f"the top element is <{root.tag}>, not <network>")
    name_el = root.find("name")
    name = ((name_el.text or "").strip() or None) if name_el is not None else None
    fwd = root.find("forward")
    forward_mode = None
    forward_dev = None
    if fwd is not None:
        forward_mode = (fwd.get("mode") or "nat").strip().lower()
        forward_dev = fwd.get("dev")
    br = root.find("bridge")
    bridge = (br.get("name") or None) if br is not None else None
    ips = []
    for el in root.findall("ip"):
        address = (el.get("address") or "").strip()
        if not address:
            continue  # <ip> may carry only <tftp>; nothing routable
        family = (el.get("family") or ("ipv6" if ":" in address else "ipv4")).strip().lower()
        if family not in ("ipv4", "ipv6"):
            continue
        ranges = tuple((r.get("start", ""), r.get("end", "")) for r in el.findall("dhcp/range"))
        ips.append(NetworkIP(family, address, _prefix(el, family, address), ranges))
    return LibvirtNetwork(name=name, forward_mode=forward_mode, bridge=bridge, ips=tuple(ips),
                          forward_dev=forward_dev)
