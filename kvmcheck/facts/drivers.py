# SPDX-License-Identifier: GPL-2.0-or-later
"""Is a kernel driver available on this host, and by which evidence?

Shared by the checks that need a driver behind a device node (tun, vhost-net,
vhost-vsock...).  Every source is read through the Host, so a Kickstart target
or a captured tree answers too: /sys/module (loaded or built in), /proc/misc,
/lib/modules (installed .ko files, modules.builtin, modules.devname,
modules.dep) and the kernel's build configuration.  The device node is never
opened: opening /dev/vhost-net can load a module, and kvmcheck changes nothing.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

from kvmcheck.facts.context import Context
from kvmcheck.parsers.modprobe import parse_modules_dep


class Driver(NamedTuple):
    """A character-device driver the host needs, and where each source of truth names it."""

    path: str
    rdev: Tuple[int, int]
    misc: str  # its name in /proc/misc
    module: str
    ko: str  # under /lib/modules/RELEASE/
    config: str
    devname: str  # what modules.devname maps the module to


TUN = Driver("/dev/net/tun", (10, 200), "tun", "tun", "kernel/drivers/net/tun.ko", "CONFIG_TUN", "net/tun")
VHOST_NET = Driver("/dev/vhost-net", (10, 238), "vhost-net", "vhost_net", "kernel/drivers/vhost/vhost_net.ko",
                    "CONFIG_VHOST_NET", "vhost-net")


def driver_facts(ctx: Context, drv: Driver) -> Dict[str, object]:
    """Everything this root says about the driver: /sys/module, /proc/misc, /lib/modules, the kernel config."""
    host = ctx.host
    facts: Dict[str, object] = {}
    state = ctx.module_state(drv.module)
    if state:
        facts["sys_module"] = state
    try:
        misc = host.read_optional("/proc/misc", limit=65536)
    except OSError:
        misc = None
    if misc is not None:
        facts["registered"] = any(line.split()[1:2] == [drv.misc] for line in misc.splitlines())
    rel = ctx.osrelease()
    releases = [rel] if rel and host.is_dir(f"/lib/modules/{rel}") else host.listdir("/lib/modules")
    releases = [r for r in releases if host.is_dir(f"/lib/modules/{r}")]
    if releases:
        # Only a release with modules.builtin (every kernel package ships it) is a complete record:
        # a captured tree may hold a few .ko files and nothing else.
        complete = [r for r in releases if host.exists(f"/lib/modules/{r}/modules.builtin")]
        if complete:
            facts["kernels"] = complete
        installed = [p for r in releases for p in host.glob(f"/lib/modules/{r}/{drv.ko}*")]
        if installed:
            facts["installed"] = installed
        builtin, devname = [], []
        for r in releases:
            try:
                listed = host.read_optional(f"/lib/modules/{r}/modules.builtin") or ""
                names = host.read_optional(f"/lib/modules/{r}/modules.devname") or ""
            except OSError:
                continue
            if f"{drv.ko}\n" in listed + "\n":
                builtin.append(r)
            if any(line.split()[:2] == [drv.module, drv.devname] for line in names.splitlines()):
                devname.append(r)
        if builtin:
            facts["modules_builtin"] = builtin
        if devname:
            facts["modules_devname"] = devname
    config, path, _ = ctx.kernel_config()
    value = config.get(drv.config) if config is not None else None
    if value is not None:  # a partial capture without the line says nothing
        facts["config"] = f"{drv.config}={value} ({path})"
        facts["config_value"] = value
    return facts


def availability(facts: Dict[str, object]) -> Optional[str]:
    """How the driver is available, or None."""
    if facts.get("sys_module") == "loaded":
        return "module loaded"
    if facts.get("sys_module") == "built-in" or facts.get("modules_builtin") or facts.get("config_value") == "y":
        return "built into the kernel"
    if facts.get("registered"):
        return "registered in /proc/misc"
    if facts.get("installed"):
        how = "installed as a module"
        return how + (", loaded on first open through its modules.devname entry" if facts.get("modules_devname")
                      else ", loaded on first open through its char-major alias")
    return None


def kernel_is_known(facts: Dict[str, object]) -> bool:
    return "registered" in facts or "kernels" in facts or "config_value" in facts or "sys_module" in facts


def modules_dep(ctx: Context) -> Dict[str, List[str]]:
    """Module name -> the releases whose modules.dep lists it (the installed, loadable modules)."""
    host = ctx.host
    rel = ctx.osrelease()
    releases = [rel] if rel and host.is_dir(f"/lib/modules/{rel}") else host.listdir("/lib/modules")
    found: Dict[str, List[str]] = {}
    for r in releases:
        try:
            text = host.read_optional(f"/lib/modules/{r}/modules.dep") or ""
        except OSError:
            continue
        for name in parse_modules_dep(text):
            found.setdefault(name, []).append(r)
    return found
