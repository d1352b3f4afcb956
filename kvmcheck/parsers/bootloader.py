# SPDX-License-Identifier: GPL-2.0-or-later
"""What the boot loader will put on the kernel command line at the next boot, and what its configuration asks for.

Pure: text in, records out.  Three boot loaders are read:

- GRUB 2's generated grub.cfg (grub-mkconfig): the menu, its ``set default=`` and the ``linux`` line of the
  default entry, with ``saved_entry``, ``next_entry`` and ``kernelopts`` from grubenv;
- the Boot Loader Specification entries GRUB reads with its ``blscfg`` command (Fedora >= 30, RHEL 8 and 9);
- systemd-boot: loader.conf's ``default`` and the entries beside it.

And the configuration that produces them: /etc/default/grub (and Debian's /etc/default/grub.d/*.cfg), read as
shell assignments without running a shell, and /etc/kernel/cmdline (kernel-install).

Then the kernel parameters kvmcheck judges are compared, command line against command line (``differences``).
"""
from __future__ import annotations

import fnmatch
import functools
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern
from kvmcheck.parsers.cmdline import KernelCmdline, parse_cmdline

# --- the parameters compared ---------------------------------------------------------------------------------
HUGEPAGE_NAMES = ("hugepagesz", "hugepages", "default_hugepagesz")
TRACKED_NAMES = ("intel_iommu", "amd_iommu", "iommu", "mitigations") + HUGEPAGE_NAMES
TRACKED_MODULES = ("kvm", "kvm_intel", "kvm_amd")  # kvm.*, kvm_intel.*, kvm_amd.* (built-in or not)
HUGEPAGES = "hugepages"  # one key for the three: hugepages= counts the pool of the hugepagesz= before it

# The kernel's own spelling: '-' and '_' are the same in a parameter name (kernel/params.c parameq).
_NAME = pattern(r"[A-Za-z_][A-Za-z0-9_]*")
_SET = pattern(r"\s*set\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)")
_WORD_END = " \t\n;"


def tracked_key(name: str) -> Optional[str]:
    """The key a parameter is compared under, or None when kvmcheck does not judge it."""
    key = name.replace("-", "_")
    if key in HUGEPAGE_NAMES:
        return HUGEPAGES
    if key in TRACKED_NAMES:
        return key
    module, dot, _ = key.partition(".")
    return key if dot and module in TRACKED_MODULES else None


def _word(name: str, value: Optional[str]) -> str:
    if value is None:
        return name
    return f'{name}="{value}"' if any(c.isspace() for c in value) else f"{name}={value}"


def tracked(cmdline: KernelCmdline) -> Dict[str, Tuple[str, ...]]:
    """key -> the judged parameters under it, in command-line order, named the kernel's way (kvm-intel.nested=1
    is kvm_intel.nested=1: both spellings set the same parameter)."""
    found: Dict[str, List[str]] = {}
    for name, value in cmdline.params:
        key = tracked_key(name)
        if key is not None:
            found.setdefault(key, []).append(_word(name.replace("-", "_"), value))
    return {k: tuple(v) for k, v in found.items()}


class ArgChange(Record):
    """A judged parameter that one command line gives differently from another (before: now; after: later)."""

    key: str  # intel_iommu, kvm_intel.nested, or "hugepages" for hugepagesz=/hugepages=/default_hugepagesz=
    before: Tuple[str, ...]
    after: Tuple[str, ...]

    def concerns(self, keys: Iterable[str]) -> bool:
        """Whether this change is about one of keys (a key ending in '.' names all of a module's parameters)."""
        return any(self.key == k or (k.endswith(".") and self.key.startswith(k)) for k in keys)



def describe(changes: Sequence[ArgChange], before_where: str, after_where: str) -> str:
    """The changes in words: what after_where has that before_where has not, the reverse, then each value
    that differs ("intel_iommu=on iommu=pt are in A, not in B; A has intel_iommu=on where B has
    intel_iommu=off")."""
    def be(words: List[str]) -> str:
        return "is" if len(words) == 1 else "are"

    added = [w for c in changes if not c.before for w in c.after]
    removed = [w for c in changes if not c.after for w in c.before]
    parts = []
    if added:
        parts.append(f"{' '.join(added)} {be(added)} in {after_where}, not in {before_where}")
    if removed:
        parts.append(f"{' '.join(removed)} {be(removed)} in {before_where}, not in {after_where}")
    parts.extend(f"{after_where} has {' '.join(c.after)} where {before_where} has {' '.join(c.before)}"
                 for c in changes if c.before and c.after)
    return "; ".join(parts)


def differences(before: KernelCmdline, after: KernelCmdline) -> Tuple[ArgChange, ...]:
    """The judged parameters that differ, in the order they first appear (after's first)."""
    was, will = tracked(before), tracked(after)
    keys = list(dict.fromkeys(list(will) + list(was)))
    return tuple(ArgChange(k, was.get(k, ()), will.get(k, ())) for k in keys if was.get(k, ()) != will.get(k, ()))


def cmdline_of(words: Sequence[str]) -> KernelCmdline:
    """A KernelCmdline from words already split (and unquoted) the way GRUB hands them to the kernel."""
    params: List[Tuple[str, Optional[str]]] = []
    for i, word in enumerate(words):
        if word == "--":
            return KernelCmdline(tuple(params), tuple(words[i + 1:]))
        name, sep, value = word.partition("=")
        if name:
            params.append((name, value if sep else None))
    return KernelCmdline(tuple(params))


# --- words: GRUB script and POSIX shell quoting, expanded without evaluating anything ------------------------
class Words(Record):
    words: Tuple[str, ...]
    unresolved: Tuple[str, ...] = ()  # variables with no known value (expanded as empty), command substitutions


def _variable(text: str, i: int) -> Tuple[str, int]:
    """The variable name at text[i] (just after '$') and the index after it; '' when none."""
    if text.startswith("{", i):
        end = text.find("}", i)
        return (text[i + 1:end], end + 1) if end > i else ("", i)
    match = _NAME.match(text, i)
    if match:
        return match.group(0), match.end()
    if i < len(text) and (text[i].isdigit() or text[i] in "?#@*"):  # positional and special parameters
        return text[i], i + 1
    return "", i


def split_words(text: str, variables: Optional[Dict[str, str]] = None, split_expansions: bool = True) -> Words:
    """Split text into words the way GRUB's script parser (and, for these cases, sh) does: blanks and ';'
    end a word outside quotes, '...' is literal, "..." and bare text expand $NAME and ${NAME}, a backslash
    escapes the next character.

    variables None keeps every $NAME as written (a raw ``set default="${saved_entry}"``).  An unknown variable
    expands to nothing, as in GRUB and sh, and is named in unresolved; so is a $(...) or `...` command
    substitution, which is never run (kept as written).  split_expansions: an unquoted expansion is split
    on blanks (GRUB and sh field splitting: ``linux ... $kernelopts`` hands the kernel several words); off
    for the value of a shell assignment, which sh never splits."""
    words: List[str] = []
    unresolved: List[str] = []
    current: List[str] = []
    started = False
    quote = ""
    i, n = 0, len(text)

    def end_word() -> None:
        nonlocal current, started
        if started:
            words.append("".join(current))
        current, started = [], False

    while i < n:
        ch = text[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                current.append(ch)
            i += 1
            continue
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "\n":  # a line continuation
                i += 2
                continue
            if quote == '"' and nxt not in '$`"\\':
                current.append(ch)  # inside "..." only these are escaped; the backslash stays otherwise
            current.append(nxt)
            started = True
            i += 2
            continue
        if ch == '"':
            quote = "" if quote else '"'
            started = True
            i += 1
            continue
        if ch == "'" and not quote:
            quote = "'"
            started = True
            i += 1
            continue
        if ch == "`" or text.startswith("$(", i):  # one chunk, never run (nested ones are not followed)
            close = text.find("`", i + 1) if ch == "`" else text.find(")", i + 2)
            close = n - 1 if close < 0 else close
            if variables is not None:
                unresolved.append(text[i:close + 1])
            current.append(text[i:close + 1])
            started = True
            i = close + 1
            continue
        if ch == "$" and variables is not None:
            name, after = _variable(text, i + 1)
            if name:
                value = variables.get(name)
                if value is None:
                    unresolved.append(name)
                    value = ""
                if split_expansions and not quote:
                    parts = value.split()
                    if value[:1].isspace():
                        end_word()
                    for k, part in enumerate(parts):
                        if k:
                            end_word()
                        current.append(part)
                        started = True
                    if value[-1:].isspace():
                        end_word()
                else:
                    current.append(value)
                    started = started or bool(value) or bool(quote)
                i = after
                continue
        if not quote and ch in _WORD_END:
            end_word()
            i += 1
            continue
        current.append(ch)
        started = True
        i += 1
    end_word()
    return Words(tuple(words), tuple(dict.fromkeys(unresolved)))


# --- grubenv -----------------------------------------------------------------------------------------------
def parse_grubenv(text: str) -> Dict[str, str]:
    """grubenv: a 1024-byte block of 'name=value' lines padded with '#' (grub-editenv).  A value's newline
    and backslash are escaped with a backslash."""
    env: Dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        if _NAME.fullmatch(name):
            env[name] = value.replace("\\n", "\n").replace("\\\\", "\\")
    return env


# --- grub.cfg ------------------------------------------------------------------------------------------------
class MenuItem(Record):
    kind: str  # "entry", "submenu", "blscfg" (where GRUB inserts the BLS entries) or "bls" (one of those)
    title: str = ""
    id: str = ""
    linux: Optional[str] = None  # the arguments of its linux/linuxefi/linux16 line, after the kernel, as written
    children: Tuple["MenuItem", ...] = ()


class GrubConfig(Record):
    items: Tuple[MenuItem, ...]
    # every top-level 'set default=' value as written ("0", "${saved_entry}" ...), with the grubenv variable
    # its 'if' depends on ("next_entry", "boot_counter"; "" when it is not conditional on one: an else branch)
    defaults: Tuple[Tuple[str, str], ...]
    variables: Dict[str, str]  # other top-level 'set NAME=value', as written (RHEL 8: kernelopts)
    stub: bool  # no menu at all, only a 'configfile' of the real one (the EFI partition's grub.cfg on
    # Ubuntu and on RHEL >= 9 and Fedora >= 34, which point at /boot/grub[2]/grub.cfg)


# GRUB's kernel loaders: linux; linuxefi and linux16 on RHEL 7 and older Fedora (EFI, BIOS 16-bit entry).
LINUX_COMMANDS = ("linux", "linuxefi", "linux16")
_MENU_VARIABLES = {"menuentry_id_option": "--id"}  # what 00_header sets on every GRUB >= 2.00


def _menu_header(line: str, kind: str) -> MenuItem:
    words = split_words(line, _MENU_VARIABLES).words
    args = [w for w in words[1:] if w != "{"]
    title = args[0] if args else ""
    ident = args[args.index("--id") + 1] if "--id" in args[:-1] else ""
    return MenuItem(kind, title, ident)


def parse_grub_cfg(text: str) -> GrubConfig:
    """The menu of a generated grub.cfg: menuentry and submenu blocks (a submenu's entries as children), the
    blscfg command's place, and the top-level 'set' lines.  Blocks are brace-delimited lines ('... {' and
    '}', as grub-mkconfig writes them); 'function NAME {' blocks are skipped."""
    root: List[MenuItem] = []
    stack: List[Tuple[str, MenuItem, List[MenuItem]]] = []  # (kind, header, children) of open blocks
    defaults: List[Tuple[str, str]] = []
    variables: Dict[str, str] = {}
    conditions: List[str] = []  # the open 'if's at the top level: the guarding variable, or "" (else, other)
    configfile = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split(None, 1)[0]
        if line == "}":
            if stack:
                kind, header, children = stack.pop()
                in_function = any(k == "function" for k, _, _ in stack)
                if kind in ("entry", "submenu") and not in_function:
                    item = header._replace(children=tuple(children)) if kind == "submenu" else header
                    parent = next((c for k, _, c in reversed(stack) if k == "submenu"), root)
                    parent.append(item)
            continue
        if line.endswith("{"):
            kind = {"menuentry": "entry", "submenu": "submenu"}.get(first, "function" if first == "function"
                                                                  else "block")
            header = _menu_header(line, kind) if kind in ("entry", "submenu") else MenuItem(kind)
            stack.append((kind, header, []))
            continue
        inside = stack[-1] if stack else None
        if inside is not None and inside[0] == "entry":
            if first in LINUX_COMMANDS and inside[1].linux is None:
                parts = line.split(None, 2)  # linux KERNEL ARGS...
                stack[-1] = ("entry", inside[1]._replace(linux=parts[2] if len(parts) > 2 else ""), inside[2])
            continue
        if stack:
            continue
        if first in ("if", "elif", "else", "fi") and not (first == "if" and line.endswith("fi")):
            _follow_if(conditions, first, line)
        elif first == "configfile":
            configfile = True
        elif first == "blscfg":
            root.append(MenuItem("blscfg"))
        else:
            match = _SET.fullmatch(line)
            if match:
                value = " ".join(split_words(match.group(2)).words)
                if match.group(1) == "default":
                    defaults.append((conditions[-1] if conditions else "", value))
                else:
                    variables.setdefault(match.group(1), value)
    return GrubConfig(tuple(root), tuple(defaults), variables, configfile and not root)


# The grubenv variables whose 'if' branch sets another default: 00_header's next_entry (grub-reboot) and
# 08_fallback_counting's boot_counter (RHEL and Fedora, for OSTree rollbacks).
GUARDS = ("next_entry", "boot_counter")


def _follow_if(conditions: List[str], keyword: str, line: str) -> None:
    """Keep the stack of open 'if's: a then-branch is marked with the GUARDS variable its test names."""
    if keyword == "fi":
        if conditions:
            conditions.pop()
        return
    guard = next((g for g in GUARDS if g in line), "") if keyword != "else" else ""
    if keyword == "if":
        conditions.append(guard)
    elif conditions:
        conditions[-1] = guard


# --- Boot Loader Specification entries ---------------------------------------------------------------------
class BlsEntry(Record):
    id: str  # the file name without .conf: what saved_entry, grubby --set-default and loader.conf name
    title: str = ""
    version: str = ""
    options: str = ""  # every options line, joined with a blank (the specification allows several)
    linux: str = ""
    efi: str = ""  # a unified kernel image or EFI program instead of linux (its command line is built in)
    sort_key: str = ""
    machine_id: str = ""


def parse_bls_entry(file_name: str, text: str) -> BlsEntry:
    """One /loader/entries/*.conf: 'key value' lines, '#' comments."""
    fields: Dict[str, str] = {}
    options: List[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        key, value = key.strip(), value.strip()
        if key == "options":
            options.append(value)
        elif key and key not in fields:
            fields[key] = value
    ident = file_name[:-5] if file_name.endswith(".conf") else file_name
    return BlsEntry(ident, fields.get("title", ""), fields.get("version", ""), " ".join(options),
                    fields.get("linux", ""), fields.get("efi", ""), fields.get("sort-key", ""),
                    fields.get("machine-id", ""))


_SEGMENT = pattern(r"[0-9]+|[A-Za-z]+|~")


def vercmp(a: str, b: str) -> int:
    """rpm's version comparison (rpmvercmp), as GRUB's blscfg and systemd-boot use it: digit runs compare as
    numbers and beat letter runs, letter runs compare as text, '~' sorts before anything; 1 when a is newer."""
    xs, ys = _SEGMENT.findall(a), _SEGMENT.findall(b)
    for x, y in zip(xs, ys):
        if x == "~" or y == "~":
            if x != y:
                return -1 if x == "~" else 1
            continue
        if x.isdigit() != y.isdigit():
            return 1 if x.isdigit() else -1
        if x.isdigit():
            xi, yi = int(x), int(y)
            if xi != yi:
                return 1 if xi > yi else -1
        elif x != y:
            return 1 if x > y else -1
    rest_x, rest_y = xs[len(ys):], ys[len(xs):]
    if rest_x or rest_y:
        # A trailing '~' makes the longer one older (1.0~rc1 < 1.0); anything else makes it newer.
        longer = rest_x or rest_y
        newer = 1 if rest_x else -1
        return -newer if longer[0] == "~" else newer
    return 0


def grub_bls_order(entries: Iterable[BlsEntry]) -> List[BlsEntry]:
    """The order GRUB's blscfg lists entries in: newest first, by the version field (an entry without one
    last), then by file name (grub2 2.06 blscfg.c bls_cmp; RHEL 8's older blscfg compared the file names
    alone, which for kernel-install's MACHINEID-VERSION names gives the same order)."""
    def cmp(x: BlsEntry, y: BlsEntry) -> int:
        if bool(x.version) != bool(y.version):
            return -1 if x.version else 1
        return -(vercmp(x.version, y.version) or vercmp(x.id, y.id))

    return sorted(entries, key=functools.cmp_to_key(cmp))


def systemd_boot_order(entries: Iterable[BlsEntry]) -> List[BlsEntry]:
    """systemd-boot's menu order (systemd >= 251): entries with a sort-key first, by sort-key, machine-id, then
    version newest first; the others by file name, newest version first."""
    def cmp(x: BlsEntry, y: BlsEntry) -> int:
        if bool(x.sort_key) != bool(y.sort_key):
            return -1 if x.sort_key else 1
        if x.sort_key:
            for a, b in ((x.sort_key, y.sort_key), (x.machine_id, y.machine_id)):
                if a != b:
                    return -1 if a < b else 1
            order = -vercmp(x.version, y.version)
            if order:
                return order
        return -vercmp(x.id, y.id)

    return sorted(entries, key=functools.cmp_to_key(cmp))


# --- the next boot -------------------------------------------------------------------------------------------
class Choice(Record):
    """The entry a boot loader will boot next, and its kernel arguments (None when they cannot be known)."""

    args: Optional[Tuple[str, ...]]
    title: str = ""
    entry_id: str = ""
    how: str = ""  # how it was chosen ("set default=\"0\"", "saved_entry in grubenv" ...)
    why: str = ""  # why the arguments cannot be known (args None)
    bls_id: str = ""  # the BLS entry's id when the entry is one
    from_env: Tuple[str, ...] = ()  # grubenv variables its arguments were expanded from (RHEL 8: kernelopts)
    unresolved: Tuple[str, ...] = ()  # variables with no value (expanded as empty, as GRUB does)
    once: bool = False  # grub-reboot's next_entry: this boot only, then the default again

    @property
    def special(self) -> bool:
        """A one-shot boot or a recovery/rescue entry: grub-mkconfig gives it other arguments than the default
        entry's (GRUB_CMDLINE_LINUX without _DEFAULT, 'single'), so the configuration is not compared with it."""
        return self.once or any(w in self.entry_id for w in ("-recovery-", "-rescue"))


def _menu(cfg: GrubConfig, bls: Sequence[BlsEntry]) -> List[MenuItem]:
    items: List[MenuItem] = []
    for item in cfg.items:
        if item.kind == "blscfg":
            # blscfg turns each entry into 'linux KERNEL OPTIONS', OPTIONS expanded with GRUB's variables.
            items.extend(MenuItem("bls", e.title or e.version or e.id, e.id, e.options if e.linux else None)
                         for e in grub_bls_order(bls))
        else:
            items.append(item)
    return items


def _find(items: Sequence[MenuItem], part: str) -> Optional[MenuItem]:
    """GRUB's lookup of one step of a default: a number is a position, anything else an id, then a title."""
    if part.isdigit():
        index = int(part)
        return items[index] if index < len(items) else None
    return next((i for i in items if i.id == part), None) or next((i for i in items if i.title == part), None)


def _default_value(cfg: GrubConfig, env: Dict[str, str]) -> Tuple[str, str]:
    """The default GRUB will take, and how it came to it."""
    # 00_header: 'if [ "${next_entry}" ]; then set default="${next_entry}" ... else set default="..." fi'.
    guarded = {guard: value for guard, value in cfg.defaults if guard}
    if env.get("next_entry") and "next_entry" in guarded:
        return env["next_entry"], "next_entry in grubenv (grub-reboot: for the next boot only)"
    # 08_fallback_counting (RHEL, Fedora): a boot counter run down after failed boots selects entry 1.
    if env.get("boot_counter") in ("0", "-1") and env.get("boot_success") == "0" and "boot_counter" in guarded:
        return guarded["boot_counter"], "boot_counter in grubenv ran out: the fallback entry"
    plain = [value for guard, value in cfg.defaults if not guard]
    raw = plain[-1] if plain else "0"  # no 'set default': GRUB boots the first entry
    value = " ".join(split_words(raw, env, split_expansions=False).words)
    if "saved_entry" in raw:
        return value or "0", (f"saved_entry={value} in grubenv" if value else
                              "set default=\"${saved_entry}\" with no saved_entry in grubenv: the first entry")
    return value or "0", f'set default="{raw}"'


def grub_next_boot(cfg: GrubConfig, env: Dict[str, str], bls: Sequence[BlsEntry] = ()) -> Choice:
    """The default entry of a generated grub.cfg and the arguments its linux line (or BLS options line) gives
    the kernel, with grubenv's variables (kernelopts, tuned_params) and grub.cfg's own top-level ones
    (RHEL 8 sets kernelopts there only when grubenv has none)."""
    value, how = _default_value(cfg, env)
    items = _menu(cfg, bls)
    if not items:
        return Choice(None, how=how, why="the menu has no entry")
    found: Optional[MenuItem] = None
    level: Sequence[MenuItem] = items
    for part in value.split(">"):
        found = _find(level, part)
        if found is None:
            break
        level = found.children
    if found is None:
        # GRUB: a default naming no entry falls back to the first one.
        found, how = items[0], f"{how}, which names no entry: GRUB boots the first"
    if found.kind == "submenu":
        return Choice(None, found.title, found.id, how, "the default names a submenu, not an entry")
    if found.linux is None:
        return Choice(None, found.title, found.id, how, "the default entry has no linux line (another OS or a "
                                                        "firmware menu)")
    variables = {k: " ".join(split_words(v, env, split_expansions=False).words) for k, v in cfg.variables.items()}
    variables.update(env)
    words = split_words(found.linux, variables)
    from_env = tuple(v for v in env if f"${v}" in found.linux or f"${{{v}}}" in found.linux)
    bls_id = found.id if found.kind == "bls" else ""
    return Choice(words.words, found.title, found.id, how, "", bls_id, from_env, words.unresolved,
                  how.startswith("next_entry"))


def parse_loader_conf(text: str) -> Dict[str, str]:
    """systemd-boot's loader.conf: 'key value' lines, '#' comments; the last of a key wins."""
    out: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key.strip()] = value.strip()
    return out


def systemd_boot_next(loader: Dict[str, str], entries: Sequence[BlsEntry]) -> Choice:
    """The entry systemd-boot boots by default: loader.conf's 'default' glob against the entry ids (with or
    without .conf), else the first in its menu order; systemd-boot expands nothing in 'options'."""
    ordered = systemd_boot_order(entries)
    wanted = loader.get("default", "")
    if wanted.startswith("@"):
        # @saved, @default, @current: the choice lives in EFI variables (LoaderEntryLastBooted ...).
        return Choice(None, how=f"default {wanted} in loader.conf",
                      why=f"'default {wanted}' is kept in an EFI variable kvmcheck does not read")
    if not ordered:
        return Choice(None, how="loader.conf", why="no type #1 entry in loader/entries (unified kernel images "
                                                   "carry their command line built in)")
    chosen = next((e for e in ordered if wanted and (fnmatch.fnmatchcase(e.id, wanted)
                                                     or fnmatch.fnmatchcase(e.id + ".conf", wanted))), None)
    how = f"default {wanted} in loader.conf" if chosen else "the first entry in systemd-boot's order"
    chosen = chosen or ordered[0]
    if not chosen.linux:
        return Choice(None, chosen.title, chosen.id, how, "the default entry boots an EFI image, whose command "
                                                          "line kvmcheck does not read")
    words = tuple(_word(n, v) for n, v in parse_cmdline(chosen.options).params)
    return Choice(words, chosen.title, chosen.id, how, "", chosen.id)


# --- /etc/default/grub ---------------------------------------------------------------------------------------
class ShellAssignments(Record):
    values: Dict[str, str]
    where: Dict[str, str]  # name -> the file that assigned it last
    unresolved: Tuple[str, ...]  # variables and command substitutions left as they were (never evaluated)
    skipped: int  # statements that are not plain assignments (if, source, commands): not evaluated


def parse_shell_assignments(files: Iterable[Tuple[str, str]]) -> ShellAssignments:
    """NAME=value statements of shell files sourced in this order (grub-mkconfig sources /etc/default/grub,
    then, on Debian and Ubuntu only, /etc/default/grub.d/*.cfg).  Quoting as sh reads it; $NAME and ${NAME}
    take what an earlier assignment gave (GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT x" in a
    drop-in), the environment's are unknown and stay empty; nothing is run.  Control flow is not followed: an
    assignment on a line of its own inside a multi-line 'if' counts as if unconditional (generated and
    packaged files have none)."""
    values: Dict[str, str] = {}
    where: Dict[str, str] = {}
    unresolved: List[str] = []
    skipped = 0
    for path, text in files:
        for statement in _statements(text):
            words = split_words(statement, None).words
            if words and words[0] == "export":
                statement = statement.split("export", 1)[1]
                words = words[1:]
            name, eq, _ = (words[0].partition("=") if words else ("", "", ""))
            if not (eq and _NAME.fullmatch(name)) or len(words) > 1:
                skipped += 1 if words else 0
                continue
            raw = statement.strip()[len(name) + 1:]
            parsed = split_words(raw, values, split_expansions=False)
            values[name], where[name] = " ".join(parsed.words), path
            unresolved.extend(parsed.unresolved)
    return ShellAssignments(values, where, tuple(dict.fromkeys(unresolved)), skipped)


def _statements(text: str) -> List[str]:
    """Shell statements: text split at newlines and ';' outside quotes, comments dropped."""
    out, current, quote, i = [], [], "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"' and i + 1 < len(text):
                current.append(text[i:i + 2])
                i += 2
                continue
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        elif ch == "#" and (not current or current[-1][-1:].isspace()):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif ch in "\n;":
            out.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    out.append("".join(current))
    return [s for s in (s.strip() for s in out) if s]


def grub_default_args(assignments: ShellAssignments) -> KernelCmdline:
    """What grub-mkconfig's 10_linux puts on the default entry's linux line: GRUB_CMDLINE_LINUX, then
    GRUB_CMDLINE_LINUX_DEFAULT (recovery entries get the first only)."""
    text = " ".join(assignments.values.get(n, "") for n in ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"))
    return parse_cmdline(text)
