# SPDX-License-Identifier: GPL-2.0-or-later
"""modprobe.d(5) configuration and modules.builtin, as far as KVM cares."""
from __future__ import annotations

from typing import Dict, FrozenSet, List, Optional, Tuple

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


def parameter_name(name: str) -> str:
    """A module parameter's name: the kernel matches '-' and '_' alike there too (kernel/params.c parameq)."""
    return name.replace("-", "_")


def option_values(words: Tuple[str, ...]) -> List[Tuple[str, Optional[str]]]:
    """(parameter, value) of each word of an 'options' line, as the kernel's parse_args splits them: a bare
    word is the parameter without a value (None), which a bool parameter takes as true (param_set_bool)."""
    pairs: List[Tuple[str, Optional[str]]] = []
    for word in words:
        name, sep, value = word.partition("=")
        pairs.append((parameter_name(name), value if sep else None))
    return pairs


def _kernel_bool(value: Optional[str]) -> Optional[str]:
    """kstrtobool (lib/kstrtox.c): y/Y/1 and n/N/0 by their first character, on/off by the first two; kernels
    since 2022 also take t/T (true) and f/F (false), which older ones refuse.  No value at all sets the bool."""
    if value is None:
        return "Y"
    first, second = value[:1], value[1:2].lower()
    if first in ("y", "Y", "1", "t", "T"):
        return "Y"
    if first in ("n", "N", "0", "f", "F"):
        return "N"
    if first in ("o", "O") and second in ("n", "f"):
        return "Y" if second == "n" else "N"
    return None


def _kernel_integer(value: Optional[str], unsigned: bool) -> Optional[str]:
    """kstrtoint/kstrtouint with base 0 (lib/kstrtox.c): an optional '+' (and '-' for a signed one), 0x for
    hexadecimal, a leading 0 for octal, one trailing newline, within 32 bits; anything else is refused."""
    if value is None:
        return None
    text = value[:-1] if value.endswith("\n") else value
    sign = 1
    if text[:1] == "+" or (text[:1] == "-" and not unsigned):
        sign, text = (-1 if text[0] == "-" else 1), text[1:]
    base, digits = 10, text
    if text[:2].lower() == "0x":
        base, digits = 16, text[2:]
    elif text[:1] == "0" and len(text) > 1:
        base, digits = 8, text[1:]
    allowed = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}[base]
    if not digits or any(c not in allowed for c in digits):
        return None
    number = sign * int(digits, base)
    limit = (1 << 32) if unsigned else (1 << 31)
    if not (-limit <= number < limit) or (unsigned and number < 0):
        return None
    return str(number)


def kernel_value(kind: str, value: Optional[str]) -> Optional[str]:
    """value as the kernel prints it back in /sys/module/MODULE/parameters/NAME once a parameter of this
    module_param type ("bool", "int", "uint", "string") is set from it: "Y"/"N" for a bool, decimal for an
    integer, the text itself for a string.  None: the kernel would refuse the value (a module given a value
    its parameter cannot take does not load)."""
    if kind == "bool":
        return _kernel_bool(value)
    if kind in ("int", "uint"):
        return _kernel_integer(value, kind == "uint")
    return value
