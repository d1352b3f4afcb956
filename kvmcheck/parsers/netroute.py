# SPDX-License-Identifier: GPL-2.0-or-later
"""The IPv4 routing table from /proc/net/route.

Each address field is the kernel's __be32 printed with %08X, so its digits
come out in the CPU's byte order: reversed on little-endian machines
(192.168.122.0 is "007AA8C0") and in network order on big-endian ones
(s390x, ppc64, sparc64).  With byteorder=None the order is taken from the
masks, which must be contiguous runs of ones; the hint breaks a tie.
"""
from __future__ import annotations

import ipaddress
from typing import List, Optional, Tuple

from . import ParseError

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

_HEX8 = pattern(r"[0-9A-Fa-f]{8}")
RTF_UP, RTF_GATEWAY, RTF_HOST, RTF_REJECT = 0x1, 0x2, 0x4, 0x200


class Route(Record):
    iface: str
    destination: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address
    mask: ipaddress.IPv4Address
    flags: int
    metric: int

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.destination}/{self.mask}", strict=False)

    @property
    def is_default(self) -> bool:
        return int(self.mask) == 0

    @property
    def up(self) -> bool:
        return bool(self.flags & RTF_UP)

    def describe(self) -> str:
        via = f" via {self.gateway}" if self.flags & RTF_GATEWAY else ""
        return f"{self.network}{via} dev {self.iface}"


def _contiguous(value: int) -> bool:
    inverted = ~value & 0xFFFFFFFF
    return inverted & (inverted + 1) == 0


def _addr(field: str, order: str) -> int:
    return int.from_bytes(bytes.fromhex(field), order)  # type: ignore[arg-type]


def parse_proc_net_route(text: str, byteorder: Optional[str] = None, hint: str = "little") -> List[Route]:
    """Routes in table order; lines that do not parse are skipped.

    ParseError when the text is non-empty but holds neither the header nor a
    single usable route.
    """
    rows: List[Tuple[str, str, str, str, str, str]] = []
    header = False
    for line in text.splitlines():
        cols = line.split()
        if not cols:
            continue
        if cols[0] == "Iface":
            header = True
            continue
        if len(cols) < 8:
            continue
        iface, dest, gw, flags, _, _, metric, mask = cols[:8]
        # Exactly eight hex digits: int(f, 16) alone also takes "0x", "_" and non-ASCII digits, which
        # bytes.fromhex then refuses with a ValueError.
        if not all(_HEX8.fullmatch(f) for f in (dest, gw, mask)):
            continue
        try:
            int(flags, 16)
            int(metric)
        except ValueError:
            continue
        rows.append((iface, dest, gw, flags, metric, mask))
    if not rows:
        if text.strip() and not header:
            raise ParseError("no routing table here: neither the /proc/net/route header nor a route line")
        return []
    order = byteorder
    if order is None:
        fits = [o for o in ("little", "big") if all(_contiguous(_addr(r[5], o)) for r in rows)]
        order = fits[0] if len(fits) == 1 else hint
    routes = []
    for iface, dest, gw, flags, metric, mask in rows:
        m = _addr(mask, order)
        if not _contiguous(m):
            continue
        routes.append(Route(iface, ipaddress.IPv4Address(_addr(dest, order)), ipaddress.IPv4Address(_addr(gw, order)),
                            ipaddress.IPv4Address(m), int(flags, 16), int(metric)))
    return routes
