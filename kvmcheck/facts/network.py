# SPDX-License-Identifier: GPL-2.0-or-later
"""Guest networking as the root shows it: libvirt's 'default' network, the IPv4 routes, forwarding, the
Linux bridges and their ports, and the tool that configures the host's network."""
from __future__ import annotations

import fnmatch
from typing import Dict, FrozenSet, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Later, Readout, fact, read
from kvmcheck.facts import system  # noqa: F401 - the facts these are computed from
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.libvirt_xml import LibvirtNetwork, parse_network_xml
from kvmcheck.parsers.netroute import Route, parse_proc_net_route

NETDIR = "/etc/libvirt/qemu/networks"
DEFAULT_XML = f"{NETDIR}/default.xml"
NET_STATUS = "/run/libvirt/network/default.xml"  # libvirt's status file of a running 'default'
BIG_ENDIAN = ("s390", "s390x", "ppc", "ppc64", "sparc", "sparc64", "mips", "mips64", "m68k", "parisc", "parisc64")
SYS_NET = "/sys/class/net"
# Where each network stack keeps its state or configuration, most specific first: netplan renders to
# NetworkManager or systemd-networkd, so its files decide before theirs.
NETWORK_STACK_EVIDENCE = (
    ("netplan", ("/etc/netplan/*.yaml",)),
    ("networkmanager", ("/run/NetworkManager", "/etc/NetworkManager/system-connections/*")),
    ("networkd", ("/run/systemd/netif", "/etc/systemd/network/*.network")),
    ("ifupdown", ("/etc/network/interfaces.d/*", "/run/network/ifstate")),
)
# Without such evidence, the distribution's default: Ubuntu server uses netplan, the RHEL family and SUSE
# NetworkManager.  Debian has no single default (ifupdown, networkd or NetworkManager by installer choice).
STACK_BY_FAMILY = {"ubuntu": "netplan", "rhel": "networkmanager", "fedora": "networkmanager",
                   "suse": "networkmanager"}


class RouteTable(Record):
    """The IPv4 routing table (/proc/net/route), or why there is none."""

    state: str  # a Readout state (ok, absent, denied, unreadable) or "unparsable"
    routes: Optional[Tuple[Route, ...]]  # None unless state is ok
    reason: Optional[str] = None  # strerror, or the parser's complaint


class DefaultNetwork(Record):
    """libvirt's 'default' network definition and whether it runs."""

    installed: bool  # /etc/libvirt/qemu.conf or the networks folder exists
    error: Optional[str] = None  # strerror when the definitions could not be read (root only, as shipped)
    defined: bool = False
    autostart: bool = False
    others: Tuple[str, ...] = ()  # the other networks defined, when 'default' is not
    others_autostarted: Tuple[str, ...] = ()
    network: Optional[LibvirtNetwork] = None  # the parsed definition
    parse_error: Optional[str] = None
    active: bool = False  # libvirt's status file or the network's bridge exists


class BridgeSet(Record):
    """The Linux bridges in /sys/class/net and their ports."""

    sysfs: bool  # the root has /sys/class/net (runtime state)
    ports: Dict[str, Tuple[str, ...]]  # bridge -> its ports (brif/), in /sys/class/net's order
    tap_ports: FrozenSet[str]  # ports that are tun/tap devices (they have tun_flags): a guest's side


class NetworkStack(Record):
    """The tool that configures this host's network, and what says so."""

    name: Optional[str]  # netplan, networkmanager, networkd, ifupdown; None when nothing tells
    source: Optional[str]  # the path that shows it; None when it is the family's default or unknown
    family: Optional[str] = None  # the distribution family whose default it is


@fact(reads=("/proc/net/route",), uses=("arch",))
def ipv4_routes(host, facts) -> RouteTable:
    got = read(host, "/proc/net/route")
    if not got.ok:
        return RouteTable(got.state, None, got.reason)
    # /proc/net/route prints addresses in the kernel's byte order; the parser checks the masks to be sure.
    hint = "big" if (facts.get("arch").name or "") in BIG_ENDIAN else "little"
    try:
        return RouteTable("ok", tuple(parse_proc_net_route(got.text or "", hint=hint)))
    except ParseError as exc:
        return RouteTable("unparsable", None, str(exc))


@fact(reads=("/proc/sys/net/ipv4/ip_forward",))
def ip_forward(host) -> Readout:
    """net.ipv4.ip_forward of the running kernel (its first line is the value)."""
    return read(host, "/proc/sys/net/ipv4/ip_forward", limit=4096)


def _others(host) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    try:
        others = [n[:-4] for n in host.listdir(NETDIR) if n.endswith(".xml")]
        auto = [n for n in others if host.node(f"{NETDIR}/autostart/{n}.xml") is not None]
    except OSError:
        return (), ()
    return tuple(others), tuple(auto)


def _active(host, bridge: str) -> bool:
    try:
        return host.exists(NET_STATUS) or host.is_dir(f"{SYS_NET}/{bridge}")
    except OSError:  # /run/libvirt closed to this user
        return host.is_dir(f"{SYS_NET}/{bridge}")


@fact(reads=("/etc/libvirt/qemu.conf", NETDIR, f"{NETDIR}/*.xml", f"{NETDIR}/autostart/*.xml", NET_STATUS,
             f"{SYS_NET}/*"))
def default_network(host) -> DefaultNetwork:
    """The 'default' network's definition, parsed; whether it is autostarted and running."""
    try:
        if not (host.exists("/etc/libvirt/qemu.conf") or host.is_dir(NETDIR)):
            return DefaultNetwork(False)
        text = host.read_optional(DEFAULT_XML, limit=1 << 20)
        autostart = host.node(f"{NETDIR}/autostart/default.xml") is not None
    except OSError as exc:
        return DefaultNetwork(True, str(exc.strerror or exc))
    if text is None:
        others, auto = _others(host)
        return DefaultNetwork(True, autostart=autostart, others=others, others_autostarted=auto)
    try:
        net = parse_network_xml(text)
    except ParseError as exc:
        return DefaultNetwork(True, defined=True, autostart=autostart, parse_error=str(exc))
    return DefaultNetwork(True, defined=True, autostart=autostart, network=net,
                          active=_active(host, net.bridge or "virbr0"))


@fact(reads=(SYS_NET, f"{SYS_NET}/*/bridge", f"{SYS_NET}/*/brif", f"{SYS_NET}/*/tun_flags"))
def bridges(host) -> BridgeSet:
    if not host.is_dir(SYS_NET):
        return BridgeSet(False, {}, frozenset())
    names = host.listdir(SYS_NET)
    ports = {n: tuple(host.listdir(f"{SYS_NET}/{n}/brif")) for n in names if host.is_dir(f"{SYS_NET}/{n}/bridge")}
    taps = frozenset(p for found in ports.values() for p in found if host.exists(f"{SYS_NET}/{p}/tun_flags"))
    return BridgeSet(True, ports, taps)


def _has(host, pattern: str) -> bool:
    """Whether pattern names something; a wildcard only in the last component, whose folder is listed (not
    globbed: Host.glob stats every directory on the way, /etc included)."""
    folder, _, name = pattern.rpartition("/")
    if "*" not in name:
        return host.exists(pattern)
    return any(fnmatch.fnmatchcase(entry, name) for entry in host.listdir(folder))


def network_stack_of(host, facts) -> NetworkStack:
    for stack, paths in NETWORK_STACK_EVIDENCE:
        for path in paths:
            if _has(host, path):
                return NetworkStack(stack, path)
    interfaces = host.read_optional("/etc/network/interfaces") or ""
    if any(line.split()[:1] == ["iface"] and line.split()[1:2] != ["lo"] for line in interfaces.splitlines()):
        return NetworkStack("ifupdown", "/etc/network/interfaces")
    family = facts.get("distro_family")
    if family in STACK_BY_FAMILY:
        return NetworkStack(STACK_BY_FAMILY[family], None, family)
    return NetworkStack(None, None, family)


@fact(reads=("/etc/netplan/**", "/run/NetworkManager", "/etc/NetworkManager/system-connections/**",
             "/run/systemd/netif", "/etc/systemd/network/**", "/etc/network/interfaces.d/**", "/run/network/ifstate",
             "/etc/network/interfaces"), uses=("distro_family",))
def network_stack(host, facts) -> Later:
    """Later: the NetworkStack, asked only when a fix has to say how to make a bridge (an unreadable
    /etc/network/interfaces then propagates, and the runner names it)."""
    return Later(lambda: network_stack_of(host, facts))
