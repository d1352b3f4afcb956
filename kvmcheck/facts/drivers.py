# SPDX-License-Identifier: GPL-2.0-or-later
"""Is a kernel driver available on this host, and by which evidence?

Facts for the checks that need a driver behind a device node (tun, vhost-net,
vhost-vsock...) or a module (vhost-scsi).  Every source is read through the
Host, so a Kickstart target or a captured tree answers too: /sys/module
(loaded or built in), /proc/misc, /lib/modules (installed .ko files,
modules.builtin, modules.devname, modules.dep) and the kernel's build
configuration.  The device node is never opened: opening /dev/vhost-net can
load a module, and kvmcheck changes nothing.
"""
from __future__ import annotations

import fnmatch
from typing import Dict, FrozenSet, List, Optional, Tuple

from kvmcheck.core.host import Node
from kvmcheck.core.record import Record
from kvmcheck.facts import Readout, fact, read
from kvmcheck.facts.system import KernelConfigFact, module_state
from kvmcheck.parsers.modprobe import parse_modules_dep


class Driver(Record):
    """A character-device driver the host needs, and where each source of truth names it."""

    path: str
    rdev: Tuple[int, int]
    misc: str  # its name in /proc/misc ("" for a driver with no misc device)
    module: str
    ko: str  # under /lib/modules/RELEASE/
    config: str
    devname: str  # what modules.devname maps the module to


TUN = Driver("/dev/net/tun", (10, 200), "tun", "tun", "kernel/drivers/net/tun.ko", "CONFIG_TUN", "net/tun")
VHOST_NET = Driver("/dev/vhost-net", (10, 238), "vhost-net", "vhost_net", "kernel/drivers/vhost/vhost_net.ko",
                    "CONFIG_VHOST_NET", "vhost-net")
VHOST_VSOCK = Driver("/dev/vhost-vsock", (10, 241), "vhost-vsock", "vhost_vsock",
                      "kernel/drivers/vhost/vhost_vsock.ko", "CONFIG_VHOST_VSOCK", "vhost-vsock")
# vhost-scsi has no device node: targets are set up through configfs (targetcli).
VHOST_SCSI = Driver("", (0, 0), "", "vhost_scsi", "kernel/drivers/vhost/vhost_scsi.ko", "CONFIG_VHOST_SCSI", "")


# -- records ------------------------------------------------------------------------------------------------
class MiscDevices(Record):
    """/proc/misc: the misc devices the running kernel registered (names only when state is "ok")."""

    state: str  # a Readout state: ok, absent, denied, unreadable
    names: FrozenSet[str]
    reason: Optional[str] = None


class ModuleTrees(Record):
    """The kernels under /lib/modules this root's drivers are looked up in, and their module lists."""

    releases: Tuple[str, ...]  # the running kernel's when installed, else every installed one
    complete: Tuple[str, ...]  # those with modules.builtin (every kernel package ships it)
    builtin: Dict[str, Readout]  # release -> its modules.builtin
    devname: Dict[str, Readout]  # release -> its modules.devname
    dep: Dict[str, Readout]  # release -> its modules.dep


class DriverFacts(Record):
    """What this root says about one driver; None or () where a source says nothing."""

    driver: Driver
    sys_module: Optional[str]  # "loaded", "built-in", or None (not in /sys/module)
    registered: Optional[bool]  # listed in /proc/misc; None when /proc/misc was not read (see misc_state)
    misc_state: str  # the Readout state of /proc/misc ("none" for a driver with no misc device)
    kernels: Tuple[str, ...]  # releases with a complete module record (modules.builtin)
    installed: Tuple[str, ...]  # its .ko files
    modules_builtin: Tuple[str, ...]  # releases whose modules.builtin lists it
    modules_devname: Tuple[str, ...]  # releases whose modules.devname maps it to its node
    config: Optional[str]  # "CONFIG_X=VALUE (PATH)"
    config_value: Optional[str]
    unreadable: Tuple[str, ...] = ()  # module lists that exist but could not be read: "PATH: reason"

    def evidence(self) -> Dict[str, object]:
        """The sources that said something, in a stable order (the checks' evidence)."""
        found: Dict[str, object] = {}
        if self.sys_module:
            found["sys_module"] = self.sys_module
        if self.registered is not None:
            found["registered"] = self.registered
        for key in ("kernels", "installed", "modules_builtin", "modules_devname"):
            if getattr(self, key):
                found[key] = list(getattr(self, key))
        if self.config_value is not None:
            found["config"] = self.config
            found["config_value"] = self.config_value
        return found

    @property
    def kernel_is_known(self) -> bool:
        """Whether any source describes the kernel's drivers at all."""
        return (self.registered is not None or bool(self.kernels) or self.config_value is not None
                or self.sys_module is not None)


# -- facts ------------------------------------------------------------------------------------------------------
@fact(reads=("/proc/misc",))
def misc_devices(host) -> MiscDevices:
    got = read(host, "/proc/misc", limit=65536)
    if not got.ok:
        return MiscDevices(got.state, frozenset(), got.reason)
    names = frozenset(line.split()[1] for line in (got.text or "").splitlines() if len(line.split()) >= 2)
    return MiscDevices("ok", names)


@fact(reads=("/lib/modules", "/lib/modules/*", "/lib/modules/*/modules.builtin", "/lib/modules/*/modules.devname",
             "/lib/modules/*/modules.dep"))
def module_trees(host, osrelease) -> ModuleTrees:
    """The running kernel's module tree when installed, else every one; a list that cannot be read is kept
    apart (denied, unreadable) from one that is absent."""
    rel = osrelease
    releases = [rel] if rel and host.is_dir(f"/lib/modules/{rel}") else host.listdir("/lib/modules")
    releases = [r for r in releases if host.is_dir(f"/lib/modules/{r}")]
    complete = tuple(r for r in releases if host.exists(f"/lib/modules/{r}/modules.builtin"))
    lists = {name: {r: read(host, f"/lib/modules/{r}/modules.{name}") for r in releases}
             for name in ("builtin", "devname", "dep")}
    return ModuleTrees(tuple(releases), complete, lists["builtin"], lists["devname"], lists["dep"])


@fact()
def modules_dep(module_trees) -> Dict[str, Tuple[str, ...]]:
    """Module name -> the releases whose modules.dep lists it (the installed, loadable modules)."""
    found: Dict[str, List[str]] = {}
    for r, got in module_trees.dep.items():
        for name in parse_modules_dep(got.text or "") if got.ok else ():
            found.setdefault(name, []).append(r)
    return {name: tuple(rels) for name, rels in found.items()}


def driver_facts(host, drv: Driver, misc: MiscDevices, trees: ModuleTrees,
                 kernel_config: KernelConfigFact) -> DriverFacts:
    """Everything this root says about drv: /sys/module, /proc/misc, /lib/modules, the kernel config."""
    registered = None
    if drv.misc and misc.state == "ok":
        registered = drv.misc in misc.names
    folder, _, stem = f"{drv.ko}*".rpartition("/")
    # Listed folder by folder, not globbed: Host.glob stats every directory on the way (/lib included).
    installed = tuple(sorted(f"/lib/modules/{r}/{folder}/{name}" for r in trees.releases
                             for name in host.listdir(f"/lib/modules/{r}/{folder}") if fnmatch.fnmatchcase(name, stem)))
    builtin, devname, unreadable = [], [], []
    for r in trees.releases:
        listed, names = trees.builtin[r], trees.devname[r]
        bad = [got for got in (listed, names) if got.state not in ("ok", "absent")]
        if bad:
            unreadable.extend(f"{got.path}: {got.reason or got.state}" for got in bad)
            continue
        if f"{drv.ko}\n" in (listed.text or "") + "\n":
            builtin.append(r)
        if any(line.split()[:2] == [drv.module, drv.devname] for line in (names.text or "").splitlines()):
            devname.append(r)
    config = kernel_config.config
    value = config.get(drv.config) if config is not None else None
    return DriverFacts(drv, module_state(host, drv.module), registered, misc.state if drv.misc else "none",
                       trees.complete, installed, tuple(builtin), tuple(devname),
                       None if value is None else f"{drv.config}={value} ({kernel_config.path})", value,
                       tuple(unreadable))


def _driver_reads(drv: Driver) -> Tuple[str, ...]:
    folder = drv.ko.rpartition("/")[0]
    return (f"/sys/module/{drv.module}", f"/sys/module/{drv.module}/initstate", f"/lib/modules/*/{folder}",
            f"/lib/modules/*/{drv.ko}*")


@fact(reads=_driver_reads(TUN))
def tun_driver(host, misc_devices, module_trees, kernel_config) -> DriverFacts:
    return driver_facts(host, TUN, misc_devices, module_trees, kernel_config)


@fact(reads=_driver_reads(VHOST_NET))
def vhost_net_driver(host, misc_devices, module_trees, kernel_config) -> DriverFacts:
    return driver_facts(host, VHOST_NET, misc_devices, module_trees, kernel_config)


@fact(reads=_driver_reads(VHOST_VSOCK))
def vhost_vsock_driver(host, misc_devices, module_trees, kernel_config) -> DriverFacts:
    return driver_facts(host, VHOST_VSOCK, misc_devices, module_trees, kernel_config)


@fact(reads=_driver_reads(VHOST_SCSI))
def vhost_scsi_driver(host, misc_devices, module_trees, kernel_config) -> DriverFacts:
    return driver_facts(host, VHOST_SCSI, misc_devices, module_trees, kernel_config)


@fact(reads=(TUN.path,))
def tun_node(host) -> Optional[Node]:
    """The node at /dev/net/tun or None; never opened."""
    return host.node(TUN.path)


@fact(reads=(VHOST_NET.path,))
def vhost_net_node(host) -> Optional[Node]:
    """The node at /dev/vhost-net or None; never opened."""
    return host.node(VHOST_NET.path)
