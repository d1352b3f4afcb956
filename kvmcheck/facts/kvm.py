# SPDX-License-Identifier: GPL-2.0-or-later
"""Facts of the KVM modules and the kernel: modprobe.d as kmod applies it, /sys/module, installed kernels."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Later, Readout, fact, read
from kvmcheck.facts.system import module_state
from kvmcheck.parsers.modprobe import (Block, Option, kernel_value, option_values, parameter_name,
                                       parse_modprobe_conf, parse_modprobe_options)

# Every directory kmod reads, in its order of precedence (libkmod-config.c, modprobe.d(5)).
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d",
                 "/lib/modprobe.d")
MODPROBE_LIMIT = 1 << 20


class ModprobeFile(Record):
    """One modprobe.d file kmod applies: where, how it read, what it says."""

    path: str
    readout: Readout  # its text is dropped once parsed (state and reason kept)
    blocks: Tuple[Block, ...]
    options: Tuple[Option, ...]


class ModprobeD(Record):
    """modprobe.d as kmod applies it: the files in the order kmod reads them (by file name across all the
    directories, libkmod-config.c conf_files_insert_sorted), a name in an earlier directory hiding the same
    name in a later one, a directory reached twice (/lib -> usr/lib) counted once."""

    dirs: Tuple[str, ...]  # the directories that exist in this root
    files: Tuple[ModprobeFile, ...]
    shadowed: Tuple[str, ...]  # files hidden by a file of the same name in an earlier directory

    def blocks(self, names) -> List[Tuple[str, Block]]:
        """(path, block) of each line that keeps one of these modules from loading."""
        return [(f.path, b) for f in self.files for b in f.blocks if b.module in names]

    def options(self, module: str, param: str) -> List[Tuple[str, int, str]]:
        """(path, line, "PARAM=VALUE") of each 'options MODULE PARAM=...' (the last one wins)."""
        return [(f.path, o.line, w) for f in self.files for o in f.options if o.module == module
                for w in o.words if w.startswith(param + "=")]

    def setting(self, module: str, param: str) -> Optional[Tuple[str, int, str, Optional[str]]]:
        """(path, line, word, value) of the 'options MODULE ...' word that sets PARAM last, None when none
        does.  kmod hands the module every options line in file order and the kernel applies the
        parameters in turn, so the last one wins; '-' and '_' match alike in both names."""
        wanted = parameter_name(param)
        found = None
        for f in self.files:
            for o in f.options:
                if o.module != module:
                    continue
                for word, (name, value) in zip(o.words, option_values(o.words)):
                    if name == wanted:
                        found = (f.path, o.line, word, value)
        return found


@fact(reads=MODPROBE_DIRS + tuple(f"{d}/*" for d in MODPROBE_DIRS))
def modprobe_d(host) -> ModprobeD:
    """Every *.conf of the five modprobe.d directories kmod reads, shadowing applied.  A directory that
    cannot be listed (a hung mount) raises, as the runner reports; a file that cannot be read is kept
    with its state (denied, unreadable) and contributes nothing, as kmod skips it."""
    dirs, files, shadowed = [], [], []
    seen_names, seen_dirs = set(), set()
    for d in MODPROBE_DIRS:
        if host.is_dir(d):
            dirs.append(d)
        real = host.resolve(d)
        if real in seen_dirs:
            continue
        seen_dirs.add(real)
        for fname in host.listdir(d):
            if not fname.endswith(".conf"):
                continue
            path = f"{d}/{fname}"
            if fname in seen_names:
                shadowed.append(path)
                continue
            seen_names.add(fname)
            got = read(host, path, limit=MODPROBE_LIMIT)
            text = got.text or ""
            files.append(ModprobeFile(path, got._replace(text=None), tuple(parse_modprobe_conf(text)),
                                      tuple(parse_modprobe_options(text))))
    # kmod reads the surviving files sorted by name whatever their directory (/usr/lib/modprobe.d/a.conf before
    # /etc/modprobe.d/z.conf), which decides which 'options' line comes last.
    files.sort(key=lambda f: f.path.rsplit("/", 1)[1])
    return ModprobeD(tuple(dirs), tuple(files), tuple(shadowed))


@fact(reads=("/sys/module",))
def sys_module(host) -> bool:
    """Whether the root has /sys/module (an installer target or a bare capture has not)."""
    return host.is_dir("/sys/module")


# Listed level by level rather than globbed: a glob notes every directory on its way (/lib), and a snapshot
# captures a declared directory as a whole tree.
@fact(reads=("/lib/modules", "/lib/modules/*/kernel/arch", "/lib/modules/*/kernel/arch/*/kvm"))
def installed_kvm_modules(host) -> Later:
    """Later: kvm*.ko files installed under /lib/modules (a Kickstart target has these, not /sys/module):
    {name: path}.  Later because only a root without /sys/module needs it."""
    def walk() -> Dict[str, str]:
        found: Dict[str, str] = {}
        for rel in host.listdir("/lib/modules"):
            for arch in host.listdir(f"/lib/modules/{rel}/kernel/arch"):
                for fname in host.listdir(f"/lib/modules/{rel}/kernel/arch/{arch}/kvm"):
                    if ".ko" in fname:
                        found.setdefault(fname.split(".ko", 1)[0].replace("-", "_"),
                                         f"/lib/modules/{rel}/kernel/arch/{arch}/kvm/{fname}")
        return found

    return Later(walk)


@fact(reads=("/lib/modules", "/lib/modules/*"))
def installed_kernels(host) -> Later:
    """Later: names of the directories under /lib/modules (one per installed kernel release), a tuple.
    Later because only a root without /proc/sys/kernel/osrelease needs it."""
    return Later(lambda: tuple(n for n in host.listdir("/lib/modules") if host.is_dir(f"/lib/modules/{n}")))


# Modules whose blacklisting costs KVM, networking or device assignment (kernel.modules-blacklist).
WATCHED_MODULES = ("kvm", "kvm_intel", "kvm_amd", "kvm_hv", "vhost_net", "vhost", "tun", "vfio", "vfio_pci",
                   "vfio_iommu_type1")


@fact(reads=tuple(f"/sys/module/{m}" for m in WATCHED_MODULES)
      + tuple(f"/sys/module/{m}/initstate" for m in WATCHED_MODULES))
def watched_module_states(host) -> Dict[str, Optional[str]]:
    """name -> "loaded", "built-in" or None (not in /sys/module), for WATCHED_MODULES."""
    return {m: module_state(host, m) for m in WATCHED_MODULES}


@fact(reads=tuple(f"/sys/module/{m}/holders" for m in WATCHED_MODULES))
def module_holders(host, watched_module_states) -> Dict[str, Tuple[str, ...]]:
    """name -> the modules using it (/sys/module/NAME/holders), for the loaded WATCHED_MODULES: they must be
    unloaded before it (modprobe -r kvm_intel kvm)."""
    return {m: tuple(n.replace("-", "_") for n in host.listdir(f"/sys/module/{m}/holders"))
            for m, state in watched_module_states.items() if state == "loaded"}


def module_parameter(host, module: str, name: str) -> Optional[str]:
    """The stripped first line of /sys/module/MODULE/parameters/NAME, None when absent or unreadable."""
    return host.first_line(f"/sys/module/{module}/parameters/{name}")


NESTED_MODULES = ("kvm_intel", "kvm_amd", "kvm_hv", "kvm")


@fact(reads=tuple(f"/sys/module/{m}/parameters/nested" for m in NESTED_MODULES))
def nested_parameters(host) -> Dict[str, Optional[str]]:
    """module -> its nested parameter's first line (None: absent or unreadable), for kvm_intel, kvm_amd,
    kvm_hv and kvm."""
    return {m: module_parameter(host, m, "nested") for m in NESTED_MODULES}


# --- configured (modprobe.d) against effective (/sys/module) ----------------------------------------------
class JudgedParameter(Record):
    """A module parameter whose modprobe.d value kvmcheck compares with the running one: its type, as the
    module declares it (module_param(NAME, TYPE, PERM)), decides how the kernel parses a value and prints it
    back; writable: mode 0644, so root may also set it at run time through sysfs."""

    module: str
    name: str
    kind: str  # "bool", "int", "uint" or "string"
    writable: bool = False


JUDGED_PARAMETERS = (
    JudgedParameter("kvm_intel", "nested", "bool"),  # arch/x86/kvm/vmx/vmx.c
    JudgedParameter("kvm_amd", "nested", "int"),  # arch/x86/kvm/svm/svm.c
    JudgedParameter("kvm_hv", "nested", "bool"),  # arch/powerpc/kvm/book3s_hv.c
    JudgedParameter("kvm", "nested", "int"),  # arch/s390/kvm/kvm-s390.c (x86's kvm has no nested parameter)
    JudgedParameter("kvm", "halt_poll_ns", "uint", True),  # virt/kvm/kvm_main.c, 0644
    JudgedParameter("kvm", "ignore_msrs", "bool", True),  # arch/x86/kvm/x86.c, 0644
    # drivers/vfio/pci/vfio_pci.c declares ids with permission 0: sysfs never shows it, so its effective value
    # is absent and nothing is compared.  The devices bound to /sys/bus/pci/drivers/vfio-pci are no stand-in:
    # a device with a configured id may be held by a driver that loaded first (a softdep or initramfs order
    # matter, not a module reload), and ids only adds dynamic ids, so a match there proves nothing either.
    JudgedParameter("vfio_pci", "ids", "string"),
)


class ModuleParameter(Record):
    """One judged parameter: what modprobe.d sets and what the running module has."""

    module: str
    name: str
    writable: bool
    state: Optional[str]  # "loaded", "built-in", or None (not in /sys/module)
    word: Optional[str]  # the last 'options' word that sets it, as written ("nested=1"); None: none does
    where: Optional[str]  # "PATH:LINE" of that line
    configured: Optional[str]  # its value as the kernel prints it ("Y"); None: not set, or a value it refuses
    effective: Optional[str]  # /sys/module/MODULE/parameters/NAME the same way; None: absent or unreadable
    holders: Tuple[str, ...]  # modules using MODULE (/sys/module/MODULE/holders): unloaded before it

    @property
    def differs(self) -> bool:
        return self.configured is not None and self.effective is not None and self.configured != self.effective

    @property
    def pending(self) -> bool:
        """Configured in modprobe.d, loaded with another value: the next load applies it.  A module not loaded
        takes the option when it loads, and a built-in one never reads modprobe.d (its options come from the
        kernel command line): neither is pending here."""
        return self.differs and self.state == "loaded"

    @property
    def path(self) -> str:
        return (self.where or "").rsplit(":", 1)[0]


class ModuleParameters(Record):
    parameters: Tuple[ModuleParameter, ...]

    def get(self, module: str, name: str) -> Optional[ModuleParameter]:
        return next((p for p in self.parameters if (p.module, p.name) == (module, name)), None)

    def pending(self, module: str) -> List[ModuleParameter]:
        return [p for p in self.parameters if p.module == module and p.pending]


@fact(reads=tuple(f"/sys/module/{p.module}/parameters/{p.name}" for p in JUDGED_PARAMETERS))
def module_parameters(host, modprobe_d, watched_module_states, module_holders) -> ModuleParameters:
    """JUDGED_PARAMETERS, each as modprobe.d configures it (kmod's order, the last setting winning) and as the
    running module has it, both in the form the kernel prints (Y/N for a bool, decimal for an integer)."""
    found = []
    states, holders = watched_module_states, module_holders
    for p in JUDGED_PARAMETERS:
        setting = modprobe_d.setting(p.module, p.name)
        raw = module_parameter(host, p.module, p.name) if states[p.module] else None
        found.append(ModuleParameter(
            p.module, p.name, p.writable, states[p.module], setting[2] if setting else None,
            f"{setting[0]}:{setting[1]}" if setting else None,
            kernel_value(p.kind, setting[3]) if setting else None,
            None if raw is None else kernel_value(p.kind, raw), holders.get(p.module, ())))
    return ModuleParameters(tuple(found))


# --- /dev/kvm ----------------------------------------------------------------------------------------------
# Nodes devtmpfs creates at boot on any KVM-capable kernel: one of them in a root shows its /dev was captured.
DEVTMPFS_NODES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/net/tun", "/dev/vhost-net")


@fact(reads=("/dev/kvm",))
def kvm_node(host):
    """The node at /dev/kvm (kvmcheck.core.host.Node: kind, mode, uid, gid, major, minor), None when absent."""
    return host.node("/dev/kvm")


@fact(reads=DEVTMPFS_NODES)
def devtmpfs_nodes(host) -> Later:
    """Later: which of DEVTMPFS_NODES the root holds (a tuple): whether its /dev was captured."""
    return Later(lambda: tuple(p for p in DEVTMPFS_NODES if host.exists(p)))


class Accounts(Record):
    """/etc/group and /etc/passwd, parsed; ok is False when either exists but cannot be read."""

    group: Readout  # text dropped once parsed
    passwd: Readout
    groups: Dict[int, object]  # gid -> kvmcheck.parsers.accounts.Group
    users: Tuple[object, ...]  # kvmcheck.parsers.accounts.User

    @property
    def ok(self) -> bool:
        return self.group.state in ("ok", "absent") and self.passwd.state in ("ok", "absent")


@fact(reads=("/etc/group", "/etc/passwd"))
def accounts(host) -> Accounts:
    """The root's groups and users (an absent file is empty; a denied or unreadable one is kept apart)."""
    from kvmcheck.parsers.accounts import parse_group, parse_passwd

    group, passwd = read(host, "/etc/group"), read(host, "/etc/passwd")
    return Accounts(group._replace(text=None), passwd._replace(text=None), parse_group(group.text or ""),
                    tuple(parse_passwd(passwd.text or "")))


class KvmOpen(Record):
    """Whether the invoking user can use /dev/kvm on a live host."""

    euid: int
    accessible: bool  # read/write access by mode, owner and groups
    open_errno: Optional[int]  # None: it opened (or was not tried because not accessible)


@fact(reads=("/dev/kvm",))
def kvm_open(host) -> Later:
    """Later: KvmOpen for the process running kvmcheck; the device is opened once (no ioctl) only when the
    user may open it.  Later because it only makes sense for a live host whose /dev/kvm is a char device."""
    def probe() -> KvmOpen:
        euid, _ = host.invoking_user()
        can_use = host.access("/dev/kvm", "rw")
        return KvmOpen(euid, can_use, host.device_open_error("/dev/kvm") if can_use else None)

    return Later(probe)
