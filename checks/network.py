# SPDX-License-Identifier: GPL-2.0-or-later
"""Guest networking: libvirt's default NAT network, bridges, /dev/net/tun and vhost-net."""
from __future__ import annotations

import ipaddress
from typing import Dict, List, Optional

from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts import Readout
from kvmcheck.facts.drivers import TUN, VHOST_NET, Driver, DriverFacts
from kvmcheck.facts.network import DEFAULT_XML, DefaultNetwork, NetworkStack, RouteTable

# Bridges that are NAT'ed by their owner, so nothing outside the host reaches guests on them.
NAT_BRIDGE_PREFIXES = ("virbr",)  # libvirt's own networks
CONTAINER_BRIDGES = ("docker0", "lxcbr0", "lxdbr0", "cni0", "podman0", "cni-podman0")
GUEST_PORT_PREFIXES = ("vnet", "tap", "veth", "macvtap")


def _route_source(table: RouteTable) -> str:
    """Where the routes came from, or why there are none (the evidence's 'routes')."""
    if table.state == "ok":
        return "/proc/net/route"
    if table.state == "absent":
        return "no /proc/net/route in this root"
    if table.state == "unparsable":
        return f"/proc/net/route cannot be parsed: {table.reason}"
    return f"cannot read /proc/net/route: {table.reason}"


def _first_line(got: Readout) -> Optional[str]:
    return (got.text or "").split("\n", 1)[0].strip() if got.ok else None


def _free_subnet(taken: List[ipaddress.IPv4Network]) -> str:
    for third in range(100, 255):
        cand = ipaddress.IPv4Network(f"192.168.{third}.0/24")
        if not any(cand.overlaps(t) for t in taken):
            return f"192.168.{third}.1 netmask 255.255.255.0"
    return "an unused private /24"


# --- network.default-nat ------------------------------------------------------------------------------
NAT_NOT_INSTALLED = "libvirt's daemon is not installed (no /etc/libvirt/qemu.conf); see libvirt.layout"
NAT_ROOT_ONLY = "libvirt keeps network definitions readable by root only; run kvmcheck as root."
NAT_DEFINE = ("'virsh net-define /usr/share/libvirt/networks/default.xml', 'virsh net-autostart default', 'virsh "
              "net-start default' (the file comes with libvirt-daemon-config-network on Fedora/RHEL and with "
              "libvirt-daemon-system on Debian/Ubuntu); or attach guests to a host bridge (see network.bridge).")
NAT_UNPARSABLE_WHY = ("libvirt skips a network definition it cannot parse, so 'default' does not exist for it and "
                      "guests attached to it fail to start ('Network not found').")
NAT_UNPARSABLE_FIX = (f"Move {DEFAULT_XML} aside, then 'virsh net-define /usr/share/libvirt/networks/default.xml', "
                      "'virsh net-autostart default' and 'virsh net-start default'. Edit networks with 'virsh "
                      "net-edit', not in /etc directly.")
FORWARD_OFF_WHY = ("libvirt turned forwarding on when it started the network; something turned it off since (a "
                   "'sysctl --system' with net.ipv4.ip_forward = 0 in /etc/sysctl.d, or a firewall script), so "
                   "guests cannot reach beyond the host.")
FORWARD_OFF_FIX = ("'sysctl -w net.ipv4.ip_forward=1' now, remove the net.ipv4.ip_forward = 0 setting, or restart "
                   "the network ('virsh net-destroy default; virsh net-start default').")
FORWARD_OFF_NOTE = ("net.ipv4.ip_forward is 0, which is fine while the network is stopped: libvirt turns it on "
                    "when it starts a NAT network.")
NOT_AUTOSTARTED_WHY = ("After a reboot the network stays down and guests attached to it fail to start ('network "
                       "'default' is not active'). ")


def _undefined(net: DefaultNetwork, evidence: dict) -> Outcome:
    others, auto = list(net.others), list(net.others_autostarted)
    evidence.update(other_networks=others, other_autostarted=auto)
    if auto:
        return Outcome.passed(f"no 'default' network; autostarted instead: {', '.join(auto)}",
                              "Guests must name one of these networks (or a bridge) instead of 'default'.", **evidence)
    return Outcome.warned(
        "libvirt's default NAT network is not defined",
        f"No {DEFAULT_XML}" + (f"; defined but not autostarted: {', '.join(others)}" if others else "")
        + ". virt-install and virt-manager attach new guests to 'default' and fail without it.", NAT_DEFINE, **evidence)


def _collision(what: str, collisions: list, routes: tuple, bridge: str, evidence: dict) -> Outcome:
    subnet, r = collisions[0]
    taken = [x.network for x in routes if not x.is_default and x.iface != bridge]
    return Outcome.failed(
        f"{what} collides with the host route {r.describe()}",
        "; ".join(f"{s} overlaps {x.describe()}" for s, x in collisions) + ". "
        + (f"libvirt refuses to start the network ('Network is already in use by interface {r.iface}')."
           if r.network == subnet else "Traffic between the host and that route's destinations goes the wrong way, "
           "and guests cannot reach them."),
        f"'virsh net-edit default' and move <ip address=...> and the <dhcp> range to an unused subnet (for "
        f"example {_free_subnet(taken)}), then 'virsh net-destroy default; virsh net-start default'.", **evidence)


@check("network.default-nat", "libvirt default NAT network")
def default_nat(default_network, ip_forward, ipv4_routes) -> Outcome:
    """libvirt's 'default' NAT network is defined, autostarted, and its subnet is free.

    What: /etc/libvirt/qemu/networks/default.xml (forward mode, bridge,
    addresses), its autostart link, whether it runs (libvirt's status file
    /run/libvirt/network/default.xml or the bridge in /sys/class/net),
    net.ipv4.ip_forward, and whether a host route other than through the
    network's own bridge overlaps its IPv4 subnet (/proc/net/route; the
    default route is no collision).  ip_forward=0 is fine while the network
    is stopped (libvirt turns it on at start); while it runs, something
    turned it off again and guests cannot get past the host: a failure.

    Why: virt-install, virt-manager and most guest definitions attach to
    'default'.  Not autostarted, guests fail to start after a reboot with
    "network 'default' is not active".  A subnet that overlaps a LAN or VPN
    route either keeps the network from starting ("Network is already in
    use by interface ...") or sends guest traffic the wrong way.

    Fix: 'virsh net-autostart default' and 'virsh net-start default'; for a
    collision, 'virsh net-edit default' and move <ip> to an unused subnet,
    then 'virsh net-destroy default; virsh net-start default'.
    """
    net = default_network
    if not net.installed:
        return Outcome.skipped(NAT_NOT_INSTALLED)
    if net.error:
        return Outcome.skipped(f"cannot read {DEFAULT_XML}: {net.error}", NAT_ROOT_ONLY)
    evidence: Dict[str, object] = {"path": DEFAULT_XML, "defined": net.defined, "autostart": net.autostart}
    if not net.defined:
        return _undefined(net, evidence)
    if net.network is None:
        return Outcome.failed(f"cannot parse {DEFAULT_XML}: {net.parse_error}", NAT_UNPARSABLE_WHY,
                              NAT_UNPARSABLE_FIX, **evidence)
    conf, routes, forward = net.network, ipv4_routes.routes, _first_line(ip_forward)
    bridge, mode = conf.bridge or "virbr0", conf.forward_mode or "isolated"
    subnets = [ip.network for ip in conf.ipv4 if ip.network is not None]
    evidence.update(forward_mode=mode, bridge=bridge, subnets=[str(s) for s in subnets],
                    ipv6=[f"{ip.address}/{ip.prefix}" for ip in conf.ipv6], active=net.active, ip_forward=forward,
                    routes=_route_source(ipv4_routes))
    collisions = [(s, r) for s in subnets for r in routes or ()
                  if r.iface != bridge and not r.is_default and s.overlaps(r.network)]
    evidence["collisions"] = [f"{s} overlaps {r.describe()}" for s, r in collisions]
    what = f"'default' ({mode}, {', '.join(map(str, subnets)) or 'no IPv4 subnet'}, bridge {bridge})"
    notes = [f"Route collisions not checked: {_route_source(ipv4_routes)}."] if routes is None else [
        "No IPv4 subnet, so no IPv4 route collision to check."] if not subnets else []
    if collisions:
        return _collision(what, collisions, routes or (), bridge, evidence)
    if net.active and forward == "0" and mode in ("nat", "route"):
        return Outcome.failed(f"{what} runs but net.ipv4.ip_forward is 0", FORWARD_OFF_WHY, FORWARD_OFF_FIX,
                              **evidence)
    notes += [FORWARD_OFF_NOTE] if forward == "0" else []
    if not net.autostart:
        return Outcome.warned(f"{what} is defined but not autostarted", NOT_AUTOSTARTED_WHY + " ".join(notes),
                              "'virsh net-autostart default' and 'virsh net-start default'.", **evidence)
    return Outcome.passed(f"{what}, autostarted" + (", running" if net.active else ""), " ".join(notes), **evidence)


# --- network.bridge -----------------------------------------------------------------------------------
def _nat_bridge(name: str) -> bool:
    if name.startswith(NAT_BRIDGE_PREFIXES) or name in CONTAINER_BRIDGES:
        return True
    tail = name[3:]
    return name.startswith("br-") and len(tail) == 12 and all(c in "0123456789abcdef" for c in tail)  # Docker


def _uplink_guess(table: RouteTable, bridges: List[str]) -> str:
    for r in table.routes or ():
        if r.is_default and r.iface not in bridges:
            return r.iface
    return "eno1"


def bridge_howto(stack: NetworkStack, nic: str) -> str:
    """How to bridge nic with the network stack this host really uses."""
    why = stack.source or (f"the {stack.family} family's default" if stack.name else
                           "no netplan, NetworkManager, systemd-networkd or ifupdown configuration")
    console = " Work from a console: the host's address moves to br0."
    if stack.name == "netplan":
        return (f"With netplan ({why}): in /etc/netplan/01-br0.yaml put 'network: {{version: 2, ethernets: "
                f"{{{nic}: {{dhcp4: false}}}}, bridges: {{br0: {{interfaces: [{nic}], dhcp4: true}}}}}}', then "
                "'netplan try'." + console)
    if stack.name == "networkmanager":
        return (f"With NetworkManager ({why}): 'nmcli con add type bridge ifname br0 con-name br0', "
                f"'nmcli con add type ethernet ifname {nic} master br0', then 'nmcli con up br0' and move the IP "
                f"settings from {nic} to br0." + console)
    if stack.name == "networkd":
        return (f"With systemd-networkd ({why}): create /etc/systemd/network/25-br0.netdev with "
                f"'[NetDev] Name=br0 Kind=bridge', 25-br0-port.network with '[Match] Name={nic}' and "
                f"'[Network] Bridge=br0', and 25-br0.network with '[Match] Name=br0' and '[Network] DHCP=yes' "
                f"(move {nic}'s address settings there), then 'networkctl reload'." + console)
    if stack.name == "ifupdown":
        return (f"With ifupdown ({why}): 'apt-get install bridge-utils'; in /etc/network/interfaces change the "
                f"{nic} stanza to 'iface {nic} inet manual' and add 'auto br0', 'iface br0 inet dhcp', "
                f"'bridge_ports {nic}', then 'ifdown {nic}; ifup br0'." + console)
    return (f"This host's network configuration tool could not be told ({why}). For now, at runtime: "
            f"'ip link add br0 type bridge && ip link set {nic} master br0 && ip link set br0 up', then move "
            f"{nic}'s address to br0; make it permanent in the tool that configures the network here." + console)


NO_SYSFS_NET = ("no /sys/class/net in this root: bridges are runtime state",
                "An offline root records interfaces in its network configuration, not in sysfs.")
NAT_ONLY_WHY = ("Guests can use libvirt's NAT network: they reach out through the host but nothing on the LAN "
                "reaches them. ")
NO_BRIDGE_WHY = "Without a bridge, guests only get NAT: libvirt's default network or QEMU's user networking. "
BRIDGE_WHY = "For guests that serve the network, bridge the host's uplink and attach them to the bridge."


@check("network.bridge", "Linux bridge for guests")
def network_bridge(bridges, ipv4_routes, network_stack) -> Outcome:
    """A Linux bridge with a real uplink exists, for guests the network must reach.

    What: the bridges in /sys/class/net (those with a bridge/ directory)
    and their ports (brif/).  libvirt's NAT bridges (virbr*) and container
    bridges (docker0, Docker's br-<id>, lxcbr0, lxdbr0, cni0, podman0) do not
    count: guests on them are NAT'ed and unreachable from outside.  A bridge
    with no ports, or only guest ports (tap, vnet, veth), connects guests to
    nothing but each other.

    Why: with NAT alone, guests reach out but cannot serve the LAN; bridged
    guests get addresses on the LAN like any other machine.

    Fix: create a bridge holding the host's uplink, with the network stack
    the host uses (found from its files: netplan, NetworkManager,
    systemd-networkd or ifupdown; else the distribution's default).
    """
    if not bridges.sysfs:
        return Outcome.skipped(*NO_SYSFS_NET)
    ports = bridges.ports
    nat = [b for b in ports if _nat_bridge(b)]
    external = [b for b in ports if b not in nat]
    portless = [b for b in external if not ports[b]]
    no_uplink = [b for b in external if ports[b] and all(
        p.startswith(GUEST_PORT_PREFIXES) or p in bridges.tap_ports for p in ports[b])]
    good = [b for b in external if b not in portless and b not in no_uplink]
    evidence: Dict[str, object] = {"bridges": {b: list(p) for b, p in ports.items()}, "nat_bridges": nat,
                                   "portless": portless, "no_uplink": no_uplink}
    nic = _uplink_guess(ipv4_routes, list(ports))
    if not external:
        head = f"only NAT bridges ({', '.join(nat)}): guests are not reachable from outside" if nat else "no Linux bridge"
        return Outcome.warned(head, (NAT_ONLY_WHY if nat else NO_BRIDGE_WHY) + BRIDGE_WHY,
                              bridge_howto(network_stack.get(), nic) + " Then attach guests with '--network bridge=br0'.",
                              **evidence)
    if portless or no_uplink:
        bad = [f"{b} has no ports" for b in portless] + [
            f"{b} has only guest ports ({', '.join(ports[b])})" for b in no_uplink]
        return Outcome.warned(
            "; ".join(bad), "Guests attached to these bridges reach each other and nothing else."
            + (f" Usable: {', '.join(good)}." if good else ""),
            f"Add the uplink: 'ip link set {nic} master {(portless + no_uplink)[0]}' for now, and the same in the "
            "network configuration to keep it; or remove the bridge if it is unused. "
            + bridge_howto(network_stack.get(), nic), **evidence)
    listing = "; ".join(f"{b} (ports: {', '.join(ports[b]) or 'none'})" for b in external)
    return Outcome.passed(listing, ("NAT bridges not counted: " + ", ".join(nat) + ".") if nat else "", **evidence)


# --- network.tun and network.vhost-net ----------------------------------------------------------------------
def availability(drv: DriverFacts) -> Optional[str]:
    """How the driver is available (the evidence's 'driver'), or None."""
    if drv.sys_module == "loaded":
        return "module loaded"
    if drv.sys_module == "built-in" or drv.modules_builtin or drv.config_value == "y":
        return "built into the kernel"
    if drv.registered:
        return "registered in /proc/misc"
    if drv.installed:
        how = "installed as a module"
        return how + (", loaded on first open through its modules.devname entry" if drv.modules_devname
                      else ", loaded on first open through its char-major alias")
    return None


def _recreate(dev: Driver) -> str:
    return f"'rm {dev.path}; mknod -m 0666 {dev.path} c {dev.rdev[0]} {dev.rdev[1]}'"


def _with_node(dev: Driver, drv: DriverFacts, node, missing, why: str, fix_module: str,  # type: ignore[no-untyped-def]
               evidence: dict) -> Outcome:
    """The verdict when something sits at the device's path."""
    avail = evidence["driver"]
    if node.kind != "char":
        return missing(f"{dev.path} is a {node.kind}, not a character device",
                       f"Something other than the {dev.module} driver's node sits at {dev.path}. {why}",
                       f"Remove it and recreate the node: {_recreate(dev)} (udev does this at boot).", **evidence)
    if (node.major, node.minor) != dev.rdev:
        return missing(f"{dev.path} is character device {node.major}:{node.minor}, not {dev.rdev[0]}:{dev.rdev[1]}",
                       f"The node points at another driver. {why}", f"{_recreate(dev)}.", **evidence)
    # A captured /proc/misc says what the running kernel had registered, as the live one does.
    if avail is None and drv.registered is False and drv.kernels:
        return missing(f"{dev.path} exists but no {dev.module} driver is in the kernel or installed",
                       f"/proc/misc does not list {dev.misc} and there is no {dev.ko}* under /lib/modules, "
                       f"so opening the node fails with ENODEV. {why}", fix_module, **evidence)
    notes = []
    if dev is TUN and node.mode & 0o006 != 0o006:
        notes.append(f"Mode {node.mode:04o}: only root (and its group) can open it. That is enough for libvirt's "
                     "system daemon; unprivileged QEMU (qemu:///session with a tap the user owns), passt and "
                     "rootless containers need the usual 0666.")
    if not avail:
        notes.insert(0, "The driver could not be confirmed from this root (no /proc/misc, /sys/module or "
                        "/lib/modules entry); the node is taken as its sign.")
    return Outcome.passed(f"character device {node.major}:{node.minor}, mode {node.mode:04o}"
                          + (f"; {avail}" if avail else ""), " ".join(notes), **evidence)


def _without_node(dev: Driver, drv: DriverFacts, live: bool, missing, why: str,  # type: ignore[no-untyped-def]
                  fix_module: str, evidence: dict) -> Outcome:
    """The verdict when the device's path is empty: live, a missing node; offline, the modules decide."""
    avail = evidence["driver"]
    config = f", {drv.config}" if drv.config_value is not None else ""
    if live and avail:
        fix = (f"'modprobe {dev.module}' creates it." if avail.startswith("installed") else
               f"The driver is there but the node is not (no devtmpfs or udev?): 'mkdir -p "
               f"{dev.path.rsplit('/', 1)[0]}; mknod -m 0666 {dev.path} c {dev.rdev[0]} {dev.rdev[1]}'.")
        return missing(f"{dev.path} does not exist ({dev.module}: {avail})", f"No node at {dev.path}. {why}", fix,
                       **evidence)
    if live:
        return missing(f"{dev.path} does not exist and the kernel has no {dev.module} driver",
                       f"No node at {dev.path}, no {dev.misc} in /proc/misc, no /sys/module/{dev.module}"
                       + ("" if drv.kernels else ", and no /lib/modules for this kernel") + f"{config}. {why}",
                       fix_module, **evidence)
    if avail:
        return Outcome.passed(f"{dev.module} {avail} (offline root: no {dev.path}, /dev is populated at boot)",
                              f"Decided from the kernel modules in this root, since an offline root rarely holds "
                              f"/dev; at boot udev or kmod-static-nodes creates {dev.path}.", **evidence)
    if not drv.kernel_is_known:
        return Outcome.skipped(f"cannot tell: no {dev.path}, /proc/misc, /sys/module or /lib/modules in this root",
                               "The root holds no record of the kernel's devices or modules.", **evidence)
    return missing(f"the kernel in this root has no {dev.module} driver",
                   f"No {dev.path}, no /sys/module/{dev.module}, no {dev.ko}* under /lib/modules{config}. {why}",
                   fix_module, **evidence)


def _device(dev: Driver, drv: DriverFacts, node, live: bool, missing, why: str,  # type: ignore[no-untyped-def]
            fix_module: str) -> Outcome:
    evidence: Dict[str, object] = drv.evidence()
    evidence["driver"] = availability(drv)
    if node is None:
        return _without_node(dev, drv, live, missing, why, fix_module, evidence)
    evidence.update(kind=node.kind, mode=f"{node.mode:04o}", rdev=f"{node.major}:{node.minor}")
    return _with_node(dev, drv, node, missing, why, fix_module, evidence)


TUN_WHY = ("Every tap interface of a guest NIC is created through /dev/net/tun, so guests with a NIC on a "
           "bridge or libvirt network fail to start ('Could not open /dev/net/tun').")
TUN_FIX = ("'modprobe tun'; if there is no such module, install the distribution's full kernel modules "
           "package (for example linux-modules-extra or kernel-modules-core) or a kernel with CONFIG_TUN.")
VHOST_NET_WHY = ("Without vhost-net, QEMU moves virtio-net packets in userspace: guests work, with more CPU per "
                 "packet and higher latency.")
VHOST_NET_FIX = ("'modprobe vhost_net'; if there is no such module, install the distribution's full kernel "
                 "modules package or a kernel built with CONFIG_VHOST_NET=m.")


@check("network.tun", "TUN/TAP device")
def network_tun(tun_driver, tun_node, live) -> Outcome:
    """/dev/net/tun is a character device (10:200) backed by the tun driver.

    What: the node, and the tun driver: loaded or built in (/sys/module/tun,
    /proc/misc, modules.builtin, /boot/config-RELEASE) or installed under
    /lib/modules/RELEASE/kernel/drivers/net/tun.ko*, which the kernel loads
    at the first open of the node.  An offline root rarely has /dev: then
    the answer comes from the modules alone.  The node is not opened, so
    kvmcheck never loads a module itself.

    Why: libvirt and QEMU create every tap interface of a bridged or NAT
    guest NIC through /dev/net/tun; without it guests with network
    interfaces fail to start ("Could not open /dev/net/tun").

    Fix: 'modprobe tun' (it creates the node); a kernel without the module
    needs the distribution's full modules package (linux-modules-extra,
    kernel-modules-core).
    """
    return _device(TUN, tun_driver, tun_node, live, Outcome.failed, TUN_WHY, TUN_FIX)


@check("network.vhost-net", "vhost-net in-kernel virtio networking")
def network_vhost_net(vhost_net_driver, vhost_net_node, live) -> Outcome:
    """/dev/vhost-net is a character device (10:238) backed by the vhost_net driver.

    What: the node, and vhost_net loaded or built in (/sys/module/vhost_net,
    /proc/misc, modules.builtin, /boot/config-RELEASE) or installed under
    /lib/modules/RELEASE/kernel/drivers/vhost/vhost_net.ko*.  The module
    declares the alias devname:vhost-net, so modules.devname makes
    kmod-static-nodes create /dev/vhost-net at boot and the first open
    loads it: an installed module is enough.  Offline roots are judged from
    the modules alone.

    Why: with vhost-net, virtio-net packets are moved by the kernel; without
    it QEMU falls back to its userspace virtio-net, which costs CPU and
    latency on every packet.  Guests still work, so this is a warning.

    Fix: 'modprobe vhost_net' (it creates the node); or install a kernel
    built with CONFIG_VHOST_NET.
    """
    return _device(VHOST_NET, vhost_net_driver, vhost_net_node, live, Outcome.warned, VHOST_NET_WHY, VHOST_NET_FIX)
