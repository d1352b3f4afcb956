# SPDX-License-Identifier: GPL-2.0-or-later
"""rpm's sqlite package database (rpm >= 4.16: /var/lib/rpm/rpmdb.sqlite, /usr/lib/sysimage/rpm/rpmdb.sqlite),
read without running rpm: kvmcheck never points a program at an offline root.

The database has a table ``Packages (hnum INTEGER PRIMARY KEY, blob BLOB)``; each blob is one package's
header as rpm stores it (lib/header.c, headerExport/hdrblobInit), without the 8-byte header magic::

    int32 il        number of index entries    (big-endian, as everything here)
    int32 dl        size of the data store
    il x { int32 tag; int32 type; int32 offset; int32 count; }
    dl bytes        the data store; offset is relative to its start

Only NAME (1000), VERSION (1001), RELEASE (1002) are taken (STRING, type 6), the fields of
``rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\n'``.  Every count and offset is checked against rpm's
own limits (HEADER_TAGS_MAX, HEADER_DATA_MAX) and the blob's length: a hostile blob is skipped, never
read out of bounds, and allocates nothing beyond its own size.
"""
from __future__ import annotations

import struct
from typing import Dict, Iterable, List, Optional, Tuple

from . import ParseError

TAG_NAME, TAG_VERSION, TAG_RELEASE = 1000, 1001, 1002
TYPE_STRING = 6
HEADER_TAGS_MAX = 0x0000FFFF  # rpm lib/header_internal.h: most index entries in one header
HEADER_DATA_MAX = 0x0FFFFFFF  # and the largest data store
MAX_FIELD = 4096  # a name, version or release longer than this is not a package's
MAX_PACKAGES = 200_000  # a large distribution installs a few thousand
WANTED = (TAG_NAME, TAG_VERSION, TAG_RELEASE)


def header_fields(blob: bytes) -> Optional[Tuple[str, str, str]]:
    """(NAME, VERSION, RELEASE) of one header blob, or None when the blob is not a sound rpm header."""
    if len(blob) < 8:
        return None
    il, dl = struct.unpack_from(">ii", blob, 0)
    if not (0 < il <= HEADER_TAGS_MAX and 0 <= dl <= HEADER_DATA_MAX):
        return None
    store = 8 + 16 * il
    if store + dl > len(blob):  # rpm's hdrblobInit refuses a blob shorter than il and dl say
        return None
    found: Dict[int, str] = {}
    for i in range(il):
        tag, kind, offset, count = struct.unpack_from(">iiii", blob, 8 + 16 * i)
        if tag not in WANTED or tag in found:
            continue
        if kind != TYPE_STRING or count != 1 or not 0 <= offset < dl:
            return None
        start = store + offset
        end = blob.find(b"\0", start, min(store + dl, start + MAX_FIELD + 1))
        if end < 0:  # no terminator inside the data store (or longer than a field can be)
            return None
        text = blob[start:end].decode("utf-8", errors="replace")
        # rpm refuses names and versions with whitespace; here one would also break the NAME\tV-R line.
        if not text or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
            return None
        found[tag] = text
        if len(found) == len(WANTED):
            break
    if len(found) != len(WANTED):
        return None
    return found[TAG_NAME], found[TAG_VERSION], found[TAG_RELEASE]


def rpm_qa_from_headers(blobs: Iterable[bytes]) -> Tuple[str, int]:
    """('rpm -qa' text: NAME<TAB>VERSION-RELEASE lines, how many blobs were not sound headers)."""
    lines: List[str] = []
    bad = 0
    for n, blob in enumerate(blobs):
        if n >= MAX_PACKAGES:
            raise ParseError(f"more than {MAX_PACKAGES} packages: not a package database")
        fields = header_fields(blob) if isinstance(blob, bytes) else None
        if fields is None:
            bad += 1
            continue
        lines.append(f"{fields[0]}\t{fields[1]}-{fields[2]}\n")
    return "".join(lines), bad
