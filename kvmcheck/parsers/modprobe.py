# SPDX-License-Identifier: GPL-2.0-or-later
"""modprobe.d(5) configuration and modules.builtin, as far as KVM cares."""
from __future__ import annotations

from typing import Dict, FrozenSet, List, Tuple

from kvmcheck.core.record import Record


def normalize(name: str) -> str:
    """Module names treat '-' and '_' alike (kvm-intel is kvm_intel)."""
    return name.strip().replace("-", "_")


class Block(Record):
    module: str
    how: str  # "blacklist" or "install /bin/false"
    line: int


def parse_modprobe_conf(text: str) -> List[Block]:
    """Lines that keep a module from loading.

    ``blacklist X`` stops alias/udev loading only; ``install X /bin/false``
    (or /bin/true, or ``false``) stops every load, the usual hardening recipe.
    Backslash continuations are joined as modprobe does.
    """
    blocks = []
    for start, line in logical_lines(text):
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "blacklist":
            blocks.append(Block(normalize(words[1]), "blacklist", start))
        elif len(words) >= 3 and words[0] == "install":
            cmd = " ".join(words[2:])
            if words[2].rsplit("/", 1)[-1] in ("false", "true") or cmd in ("exit 1",):
                blocks.append(Block(normalize(words[1]), "install " + cmd, start))
    return blocks


class Option(Record):
    module: str
    words: Tuple[str, ...]  # the parameters, as written: ("nested=1", "ept=0")
    line: int  # where the (possibly continued) line starts


def logical_lines(text: str) -> List[Tuple[int, str]]:
    """(first line number, text) of each logical line: backslash continuations joined as kmod does."""
    out: List[Tuple[int, str]] = []
    pending: List[str] = []
    start = 0
    for num, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = num
        if raw.endswith("\\"):
            pending.append(raw[:-1] + " ")
            continue
        out.append((start, "".join(pending) + raw))
        pending = []
    if pending:
        out.append((start, "".join(pending)))
    return out


def parse_modprobe_options(text: str) -> List[Option]:
    """'options MODULE PARAM=VALUE ...' lines, continuations joined, comments dropped."""
    found = []
    for start, line in logical_lines(text):
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[0] == "options":
            found.append(Option(normalize(words[1]), tuple(words[2:]), start))
    return found


def parse_modules_builtin(text: str) -> FrozenSet[str]:
    """Module names from /lib/modules/$(uname -r)/modules.builtin (``kernel/arch/x86/kvm/kvm.ko``)."""
    names = set()
    for line in text.splitlines():
        base = line.strip().rsplit("/", 1)[-1]
        if base.endswith(".ko"):
            names.add(normalize(base[:-3]))
    return frozenset(names)


def parse_proc_modules(text: str) -> Dict[str, Tuple[str, ...]]:
    """/proc/modules: name -> the modules that use it."""
    mods = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            # "[permanent]" marks a module that cannot be unloaded; it is not a user.
            users = tuple(u for u in parts[3].split(",") if u and u != "-" and not u.startswith("["))
            mods[normalize(parts[0])] = users
    return mods


def parse_modules_dep(text: str) -> List[str]:
    """Module names listed in modules.dep (``kernel/drivers/vhost/vhost_net.ko.xz: kernel/drivers/vhost/vhost.ko.xz``)."""
    names = []
    for line in text.splitlines():
        path = line.split(":", 1)[0].strip()
        if ".ko" in path:
            names.append(normalize(path.rsplit("/", 1)[-1].split(".ko", 1)[0]))
    return names
