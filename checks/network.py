# SPDX-License-Identifier: GPL-2.0-or-later
"""Guest networking: libvirt's default NAT network, bridges, /dev/net/tun and vhost-net."""
from __future__ import annotations

import ipaddress
from typing import Dict, List, Optional, Tuple

from kvmcheck.facts.context import Context
from kvmcheck.facts.drivers import TUN, VHOST_NET, Driver, availability, driver_facts, kernel_is_known
from kvmcheck.core.model import Outcome
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.libvirt_xml import parse_network_xml
from kvmcheck.parsers.netroute import Route, parse_proc_net_route
from kvmcheck.core.registry import check

NETDIR = "/etc/libvirt/qemu/networks"
BIG_ENDIAN = ("s390", "s390x", "ppc", "ppc64", "sparc", "sparc64", "mips", "mips64", "m68k", "parisc", "parisc64")
# Bridges that are NAT'ed by their owner, so nothing outside the host reaches guests on them.
NAT_BRIDGE_PREFIXES = ("virbr",)  # libvirt's own networks
CONTAINER_BRIDGES = ("docker0", "lxcbr0", "lxdbr0", "cni0", "podman0", "cni-podman0")
GUEST_PORT_PREFIXES = ("vnet", "tap", "veth", "macvtap")


def routes(ctx: Context) -> Tuple[Optional[List[Route]], str]:
    """The IPv4 routing table, or (None, why not)."""
    try:
        text = ctx.host.read_optional("/proc/net/route")
    except OSError as exc:
        return None, f"cannot read /proc/net/route: {exc.strerror or exc}"
    if text is None:
        return None, "no /proc/net/route in this root"
    hint = "big" if (ctx.arch()[0] or "") in BIG_ENDIAN else "little"
    try:
        return parse_proc_net_route(text, hint=hint), "/proc/net/route"
    except ParseError as exc:
        return None, f"/proc/net/route cannot be parsed: {exc}"


def _free_subnet(taken: List[ipaddress.IPv4Network]) -> str:
    for third in range(100, 255):
        cand = ipaddress.IPv4Network(f"192.168.{third}.0/24")
        if not any(cand.overlaps(t) for t in taken):
            return f"192.168.{third}.1 netmask 255.255.255.0"
    return "an unused private /24"


# --- network.default-nat ------------------------------------------------------------------------------
@check("network.default-nat", "libvirt default NAT network", reads=(
    f"{NETDIR}/*.xml", f"{NETDIR}/autostart/*.xml", "/run/libvirt/network/default.xml",
    "/proc/sys/net/ipv4/ip_forward", "/proc/net/route", "/sys/class/net/virbr0",
))
def default_nat(ctx: Context) -> Outcome:
    """libvirt's 'default' NAT network is defined, autostarted, and its subnet is free.

    What: /etc/libvirt/qemu/networks/default.xml (parsed: forward mode,
    bridge, addresses), its autostart link in networks/autostart/, whether
    it runs (libvirt's status file /run/libvirt/network/default.xml or the
    bridge in /sys/class/net), net.ipv4.ip_forward, and whether a host
    route other than through the network's own bridge overlaps its IPv4
    subnet (from /proc/net/route; the default route is not a collision).
    ip_forward=0 is fine while the network is stopped: libvirt turns it on
    when it starts a NAT or routed network.  It is a failure only while the
    network runs, because then something turned it off again (a sysctl
    reload, a firewall script) and guests cannot get past the host.

    Why: virt-install, virt-manager and most guest definitions attach to
    'default'.  Not autostarted, guests fail to start after a reboot with
    "network 'default' is not active".  A subnet that overlaps a LAN or VPN
    route either keeps the network from starting ("Network is already in
    use by interface ...") or sends guest traffic the wrong way.

    Fix: 'virsh net-autostart default' and 'virsh net-start default'; for a
    collision, 'virsh net-edit default' and move <ip> to an unused subnet,
    then 'virsh net-destroy default; virsh net-start default'.
    """
    host = ctx.host
    path = f"{NETDIR}/default.xml"
    try:
        if not (host.exists("/etc/libvirt/qemu.conf") or host.is_dir(NETDIR)):
            return Outcome.skipped("libvirt's daemon is not installed (no /etc/libvirt/qemu.conf); see libvirt.layout")
        text = host.read_optional(path, limit=1 << 20)
        autostart = host.node(f"{NETDIR}/autostart/default.xml") is not None
    except OSError as exc:
        return Outcome.skipped(f"cannot read {path}: {exc.strerror or exc}",
                               "libvirt keeps network definitions readable by root only; run kvmcheck as root.")
    evidence: Dict[str, object] = {"path": path, "defined": text is not None, "autostart": autostart}
    if text is None:
        try:
            others = [n[:-4] for n in host.listdir(NETDIR) if n.endswith(".xml")]
            auto = [n for n in others if host.node(f"{NETDIR}/autostart/{n}.xml") is not None]
        except OSError:
            others, auto = [], []
        evidence.update(other_networks=others, other_autostarted=auto)
        if auto:
            return Outcome.passed(f"no 'default' network; autostarted instead: {', '.join(auto)}",
                                  "Guests must name one of these networks (or a bridge) instead of 'default'.",
                                  **evidence)
        return Outcome.warned(
            "libvirt's default NAT network is not defined",
            f"No {path}" + (f"; defined but not autostarted: {', '.join(others)}" if others else "")
            + ". virt-install and virt-manager attach new guests to 'default' and fail without it.",
            "'virsh net-define /usr/share/libvirt/networks/default.xml', 'virsh net-autostart default', 'virsh "
            "net-start default' (the file comes with libvirt-daemon-config-network on Fedora/RHEL and with "
            "libvirt-daemon-system on Debian/Ubuntu); or attach guests to a host bridge (see network.bridge).",
            **evidence)
    try:
        net = parse_network_xml(text)
    except ParseError as exc:
        return Outcome.failed(
            f"cannot parse {path}: {exc}",
            "libvirt skips a network definition it cannot parse, so 'default' does not exist for it and guests "
            "attached to it fail to start ('Network not found').",
            f"Move {path} aside, then 'virsh net-define /usr/share/libvirt/networks/default.xml', 'virsh "
            "net-autostart default' and 'virsh net-start default'. Edit networks with 'virsh net-edit', not in "
            "/etc directly.", **evidence)
    bridge = net.bridge or "virbr0"
    subnets = [ip.network for ip in net.ipv4 if ip.network is not None]
    try:
        active = host.exists("/run/libvirt/network/default.xml") or host.is_dir(f"/sys/class/net/{bridge}")
    except OSError:  # /run/libvirt closed to this user
        active = host.is_dir(f"/sys/class/net/{bridge}")
    forward = host.first_line("/proc/sys/net/ipv4/ip_forward")
    table, table_source = routes(ctx)
    mode = net.forward_mode or "isolated"
    evidence.update(forward_mode=mode, bridge=bridge, subnets=[str(s) for s in subnets],
                    ipv6=[f"{ip.address}/{ip.prefix}" for ip in net.ipv6], active=active, ip_forward=forward,
                    routes=table_source)
    collisions = []
    for subnet in subnets:
        for r in table or []:
            if r.iface != bridge and not r.is_default and subnet.overlaps(r.network):
                collisions.append((subnet, r))
    evidence["collisions"] = [f"{s} overlaps {r.describe()}" for s, r in collisions]
    what = f"'default' ({mode}, {', '.join(map(str, subnets)) or 'no IPv4 subnet'}, bridge {bridge})"
    notes = []
    if table is None:
        notes.append(f"Route collisions not checked: {table_source}.")
    elif not subnets:
        notes.append("No IPv4 subnet, so no IPv4 route collision to check.")
    if collisions:
        subnet, r = collisions[0]
        exact = r.network == subnet
        taken = [x.network for x in table or [] if not x.is_default and x.iface != bridge]
        return Outcome.failed(
            f"{what} collides with the host route {r.describe()}",
            "; ".join(f"{s} overlaps {x.describe()}" for s, x in collisions) + ". "
            + ("libvirt refuses to start the network ('Network is already in use by interface "
               f"{r.iface}')." if exact else
               "Traffic between the host and that route's destinations goes the wrong way, and guests cannot "
               "reach them."),
            f"'virsh net-edit default' and move <ip address=...> and the <dhcp> range to an unused subnet (for "
            f"example {_free_subnet(taken)}), then 'virsh net-destroy default; virsh net-start default'.",
            **evidence)
    if active and forward == "0" and mode in ("nat", "route"):
        return Outcome.failed(
            f"{what} runs but net.ipv4.ip_forward is 0",
            "libvirt turned forwarding on when it started the network; something turned it off since (a "
            "'sysctl --system' with net.ipv4.ip_forward = 0 in /etc/sysctl.d, or a firewall script), so guests "
            "cannot reach beyond the host.",
            "'sysctl -w net.ipv4.ip_forward=1' now, remove the net.ipv4.ip_forward = 0 setting, or restart the "
            "network ('virsh net-destroy default; virsh net-start default').", **evidence)
    if forward == "0":
        notes.append("net.ipv4.ip_forward is 0, which is fine while the network is stopped: libvirt turns it on "
                     "when it starts a NAT network.")
    if not autostart:
        return Outcome.warned(
            f"{what} is defined but not autostarted",
            "After a reboot the network stays down and guests attached to it fail to start ('network "
            "'default' is not active'). " + " ".join(notes),
            "'virsh net-autostart default' and 'virsh net-start default'.", **evidence)
    return Outcome.passed(f"{what}, autostarted" + (", running" if active else ""), " ".join(notes), **evidence)


# --- network.bridge -----------------------------------------------------------------------------------
def _nat_bridge(name: str) -> bool:
    if name.startswith(NAT_BRIDGE_PREFIXES) or name in CONTAINER_BRIDGES:
        return True
    tail = name[3:]
    return name.startswith("br-") and len(tail) == 12 and all(c in "0123456789abcdef" for c in tail)  # Docker


def _uplink_guess(ctx: Context, bridges: List[str]) -> str:
    table, _ = routes(ctx)
    for r in table or []:
        if r.is_default and r.iface not in bridges:
            return r.iface
    return "eno1"


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


def network_stack(ctx: Context) -> Tuple[Optional[str], str]:
    """(the network stack this host uses or None, what says so)."""
    host = ctx.host
    for stack, paths in NETWORK_STACK_EVIDENCE:
        for path in paths:
            if host.glob(path) if "*" in path else host.exists(path):
                return stack, path
    interfaces = host.read_optional("/etc/network/interfaces") or ""
    if any(line.split()[:1] == ["iface"] and line.split()[1:2] != ["lo"] for line in interfaces.splitlines()):
        return "ifupdown", "/etc/network/interfaces"
    family = ctx.distro_family()
    if family in STACK_BY_FAMILY:
        return STACK_BY_FAMILY[family], f"the {family} family's default"
    return None, "no netplan, NetworkManager, systemd-networkd or ifupdown configuration"


def bridge_howto(ctx: Context, nic: str) -> str:
    """How to bridge nic with the network stack this host really uses."""
    stack, why = network_stack(ctx)
    console = " Work from a console: the host's address moves to br0."
    if stack == "netplan":
        return (f"With netplan ({why}): in /etc/netplan/01-br0.yaml put 'network: {{version: 2, ethernets: "
                f"{{{nic}: {{dhcp4: false}}}}, bridges: {{br0: {{interfaces: [{nic}], dhcp4: true}}}}}}', then "
                "'netplan try'." + console)
    if stack == "networkmanager":
        return (f"With NetworkManager ({why}): 'nmcli con add type bridge ifname br0 con-name br0', "
                f"'nmcli con add type ethernet ifname {nic} master br0', then 'nmcli con up br0' and move the IP "
                f"settings from {nic} to br0." + console)
    if stack == "networkd":
        return (f"With systemd-networkd ({why}): create /etc/systemd/network/25-br0.netdev with "
                f"'[NetDev] Name=br0 Kind=bridge', 25-br0-port.network with '[Match] Name={nic}' and "
                f"'[Network] Bridge=br0', and 25-br0.network with '[Match] Name=br0' and '[Network] DHCP=yes' "
                f"(move {nic}'s address settings there), then 'networkctl reload'." + console)
    if stack == "ifupdown":
        return (f"With ifupdown ({why}): 'apt-get install bridge-utils'; in /etc/network/interfaces change the "
                f"{nic} stanza to 'iface {nic} inet manual' and add 'auto br0', 'iface br0 inet dhcp', "
                f"'bridge_ports {nic}', then 'ifdown {nic}; ifup br0'." + console)
    return (f"This host's network configuration tool could not be told ({why}). For now, at runtime: "
            f"'ip link add br0 type bridge && ip link set {nic} master br0 && ip link set br0 up', then move "
            f"{nic}'s address to br0; make it permanent in the tool that configures the network here." + console)


@check("network.bridge", "Linux bridge for guests", reads=(
    "/sys/class/net/*/bridge", "/sys/class/net/*/brif", "/sys/class/net/*/tun_flags", "/proc/net/route",
    "/etc/os-release", "/etc/netplan/*.yaml", "/run/NetworkManager", "/etc/NetworkManager/system-connections/*",
    "/run/systemd/netif", "/etc/systemd/network/*.network", "/etc/network/interfaces.d/*", "/run/network/ifstate",
    "/etc/network/interfaces",
))
def network_bridge(ctx: Context) -> Outcome:
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
    host = ctx.host
    if not host.is_dir("/sys/class/net"):
        return Outcome.skipped("no /sys/class/net in this root: bridges are runtime state",
                               "An offline root records interfaces in its network configuration, not in sysfs.")
    names = host.listdir("/sys/class/net")
    bridges = [n for n in names if host.is_dir(f"/sys/class/net/{n}/bridge")]
    ports = {b: host.listdir(f"/sys/class/net/{b}/brif") for b in bridges}
    nat = [b for b in bridges if _nat_bridge(b)]
    external = [b for b in bridges if b not in nat]

    def guest_side(port: str) -> bool:
        return port.startswith(GUEST_PORT_PREFIXES) or host.exists(f"/sys/class/net/{port}/tun_flags")

    portless = [b for b in external if not ports[b]]
    no_uplink = [b for b in external if ports[b] and all(guest_side(p) for p in ports[b])]
    good = [b for b in external if b not in portless and b not in no_uplink]
    evidence: Dict[str, object] = {"bridges": {b: ports[b] for b in bridges}, "nat_bridges": nat,
                                   "portless": portless, "no_uplink": no_uplink}
    listing = "; ".join(f"{b} (ports: {', '.join(ports[b]) or 'none'})" for b in external)
    nic = _uplink_guess(ctx, bridges)
    if not external:
        head = (f"only NAT bridges ({', '.join(nat)}): guests are not reachable from outside" if nat
                else "no Linux bridge")
        return Outcome.warned(
            head, ("Guests can use libvirt's NAT network: they reach out through the host but nothing on the LAN "
                   "reaches them. " if nat else "Without a bridge, guests only get NAT: libvirt's default network or QEMU's user networking. ")
            + "For guests that serve the network, bridge the host's uplink and attach them to the bridge.",
            bridge_howto(ctx, nic) + " Then attach guests with '--network bridge=br0'.", **evidence)
    if portless or no_uplink:
        bad = [f"{b} has no ports" for b in portless] + [
            f"{b} has only guest ports ({', '.join(ports[b])})" for b in no_uplink]
        return Outcome.warned(
            "; ".join(bad), "Guests attached to these bridges reach each other and nothing else."
            + (f" Usable: {', '.join(good)}." if good else ""),
            f"Add the uplink: 'ip link set {nic} master {(portless + no_uplink)[0]}' for now, and the same in the "
            "network configuration to keep it; or remove the bridge if it is unused. " + bridge_howto(ctx, nic),
            **evidence)
    return Outcome.passed(listing, ("NAT bridges not counted: " + ", ".join(nat) + ".") if nat else "", **evidence)


# --- network.tun and network.vhost-net ----------------------------------------------------------------------
def _device(ctx: Context, dev: Driver, missing, why: str, fix_module: str) -> Outcome:  # type: ignore[no-untyped-def]
    host = ctx.host
    facts = driver_facts(ctx, dev)
    node = host.node(dev.path)
    avail = availability(facts)
    evidence: Dict[str, object] = dict(facts)
    evidence["driver"] = avail
    if node is not None:
        evidence.update(kind=node.kind, mode=f"{node.mode:04o}", rdev=f"{node.major}:{node.minor}")
    if node is not None and node.kind != "char":
        return missing(f"{dev.path} is a {node.kind}, not a character device",
                       f"Something other than the {dev.module} driver's node sits at {dev.path}. {why}",
                       f"Remove it and recreate the node: 'rm {dev.path}; mknod -m 0666 {dev.path} c "
                       f"{dev.rdev[0]} {dev.rdev[1]}' (udev does this at boot).", **evidence)
    if node is not None:
        notes = []
        if (node.major, node.minor) != dev.rdev:
            return missing(f"{dev.path} is character device {node.major}:{node.minor}, not "
                           f"{dev.rdev[0]}:{dev.rdev[1]}", f"The node points at another driver. {why}",
                           f"'rm {dev.path}; mknod -m 0666 {dev.path} c {dev.rdev[0]} {dev.rdev[1]}'.", **evidence)
        # A captured /proc/misc says what the running kernel had registered, as the live one does.
        if avail is None and facts.get("registered") is False and "kernels" in facts:
            return missing(f"{dev.path} exists but no {dev.module} driver is in the kernel or installed",
                           f"/proc/misc does not list {dev.misc} and there is no {dev.ko}* under /lib/modules, "
                           f"so opening the node fails with ENODEV. {why}", fix_module, **evidence)
        if dev is TUN and node.mode & 0o006 != 0o006:
            notes.append(f"Mode {node.mode:04o}: only root (and its group) can open it. That is enough for libvirt's "
                         "system daemon; unprivileged QEMU (qemu:///session with a tap the user owns), passt and "
                         "rootless containers need the usual 0666.")
        return Outcome.passed(f"character device {node.major}:{node.minor}, mode {node.mode:04o}"
                              + (f"; {avail}" if avail else ""),
                              " ".join(notes) if avail else " ".join(
                                  ["The driver could not be confirmed from this root (no /proc/misc, /sys/module "
                                   "or /lib/modules entry); the node is taken as its sign."] + notes), **evidence)
    # No node.
    if host.live:
        if avail:
            fix = (f"'modprobe {dev.module}' creates it." if avail.startswith("installed") else
                   f"The driver is there but the node is not (no devtmpfs or udev?): 'mkdir -p "
                   f"{dev.path.rsplit('/', 1)[0]}; mknod -m 0666 {dev.path} c {dev.rdev[0]} {dev.rdev[1]}'.")
            return missing(f"{dev.path} does not exist ({dev.module}: {avail})",
                           f"No node at {dev.path}. {why}", fix, **evidence)
        return missing(f"{dev.path} does not exist and the kernel has no {dev.module} driver",
                       f"No node at {dev.path}, no {dev.misc} in /proc/misc, no /sys/module/{dev.module}"
                       + ("" if "kernels" in facts else ", and no /lib/modules for this kernel")
                       + (f", {facts['config']}" if "config" in facts else "") + f". {why}", fix_module, **evidence)
    if avail:
        return Outcome.passed(f"{dev.module} {avail} (offline root: no {dev.path}, /dev is populated at boot)",
                              f"Decided from the kernel modules in this root, since an offline root rarely holds "
                              f"/dev; at boot udev or kmod-static-nodes creates {dev.path}.", **evidence)
    if not kernel_is_known(facts):
        return Outcome.skipped(f"cannot tell: no {dev.path}, /proc/misc, /sys/module or /lib/modules in this root",
                               "The root holds no record of the kernel's devices or modules.", **evidence)
    return missing(f"the kernel in this root has no {dev.module} driver",
                   f"No {dev.path}, no /sys/module/{dev.module}, no {dev.ko}* under /lib/modules"
                   + (f", {facts['config']}" if "config" in facts else "") + f". {why}", fix_module, **evidence)


@check("network.tun", "TUN/TAP device", reads=(
    "/dev/net/tun", "/sys/module/tun", "/proc/misc", "/lib/modules/*/kernel/drivers/net/tun.ko*",
    "/lib/modules/*/modules.builtin", "/lib/modules/*/modules.devname", "/boot/config-*",
))
def network_tun(ctx: Context) -> Outcome:
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
    return _device(ctx, TUN, Outcome.failed,
                   "Every tap interface of a guest NIC is created through /dev/net/tun, so guests with a NIC on a "
                   "bridge or libvirt network fail to start ('Could not open /dev/net/tun').",
                   "'modprobe tun'; if there is no such module, install the distribution's full kernel modules "
                   "package (for example linux-modules-extra or kernel-modules-core) or a kernel with CONFIG_TUN.")


@check("network.vhost-net", "vhost-net in-kernel virtio networking", reads=(
    "/dev/vhost-net", "/sys/module/vhost_net", "/proc/misc", "/lib/modules/*/kernel/drivers/vhost/vhost_net.ko*",
    "/lib/modules/*/modules.builtin", "/lib/modules/*/modules.devname", "/boot/config-*",
))
def network_vhost_net(ctx: Context) -> Outcome:
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
    return _device(ctx, VHOST_NET, Outcome.warned,
                   "Without vhost-net, QEMU moves virtio-net packets in userspace: guests work, with more CPU per "
                   "packet and higher latency.",
                   "'modprobe vhost_net'; if there is no such module, install the distribution's full kernel "
                   "modules package or a kernel built with CONFIG_VHOST_NET=m.")
