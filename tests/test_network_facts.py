# SPDX-License-Identifier: GPL-2.0-or-later
"""libvirt.layout, network.* and paravirt.virtio as judges of their facts (issue 15).

The judges are called directly with fact records, no root needed; the facts are gathered on captured roots,
and read as nobody where a file may not be read, to show that "denied" stays apart from "absent".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kvmcheck.checks.libvirt import libvirt_layout
from kvmcheck.checks.network import availability, default_nat, network_bridge, network_tun, network_vhost_net
from kvmcheck.checks.paravirt import paravirt_virtio
from kvmcheck.core.host import Host, Node
from kvmcheck.facts import Facts, Later, Readout
from kvmcheck.facts.drivers import TUN, VHOST_NET, VHOST_SCSI, VHOST_VSOCK, DriverFacts
from kvmcheck.facts.libvirt import STATE, STATE_DIRS, LibvirtFiles, PathState, UnitActivity
from kvmcheck.facts.network import BridgeSet, DefaultNetwork, NetworkStack, RouteTable
from kvmcheck.facts.system import KernelConfigFact
from kvmcheck.parsers.kconfig import KConfig
from kvmcheck.parsers.libvirt_xml import parse_network_xml
from kvmcheck.parsers.netroute import parse_proc_net_route

from conftest import as_nobody


def driver(dev=TUN, sys_module=None, registered=None, kernels=(), installed=(), builtin=(), devname=(),
           config_value=None):
    config = f"{dev.config}={config_value} (/boot/config-6.1.0)" if config_value is not None else None
    return DriverFacts(dev, sys_module, registered, "ok" if registered is not None else "absent", tuple(kernels),
                       tuple(installed), tuple(builtin), tuple(devname), config, config_value)


CHAR_TUN = Node("char", 0o666, 0, 0, 10, 200)
INSTALLED = ("/lib/modules/6.1.0/kernel/drivers/net/tun.ko.xz",)


# -- network.tun and network.vhost-net ------------------------------------------------------------------------
@pytest.mark.parametrize("facts, node, live, expected", [
    (driver(sys_module="loaded", registered=True), CHAR_TUN, True, ("pass", "character device 10:200, mode 0666; "
                                                                             "module loaded")),
    (driver(), CHAR_TUN, True, ("pass", "character device 10:200, mode 0666")),
    (driver(registered=False, kernels=("6.1.0",)), CHAR_TUN, False,
     ("fail", "/dev/net/tun exists but no tun driver is in the kernel or installed")),
    (driver(sys_module="loaded"), Node("dir", 0o755, 0, 0), True,
     ("fail", "/dev/net/tun is a dir, not a character device")),
    (driver(sys_module="loaded"), Node("char", 0o666, 0, 0, 10, 238), True,
     ("fail", "/dev/net/tun is character device 10:238, not 10:200")),
    (driver(kernels=("6.1.0",), installed=INSTALLED), None, True,
     ("fail", "/dev/net/tun does not exist (tun: installed as a module, loaded on first open through its "
              "char-major alias)")),
    (driver(registered=False, kernels=("6.1.0",)), None, True,
     ("fail", "/dev/net/tun does not exist and the kernel has no tun driver")),
    (driver(kernels=("6.1.0",), installed=INSTALLED, devname=("6.1.0",)), None, False,
     ("pass", "tun installed as a module, loaded on first open through its modules.devname entry (offline root: "
              "no /dev/net/tun, /dev is populated at boot)")),
    (driver(config_value="y"), None, False,
     ("pass", "tun built into the kernel (offline root: no /dev/net/tun, /dev is populated at boot)")),
    (driver(), None, False, ("skip", "cannot tell: no /dev/net/tun, /proc/misc, /sys/module or /lib/modules in "
                                     "this root")),
    (driver(config_value="n"), None, False, ("fail", "the kernel in this root has no tun driver")),
])
def test_tun_judge(facts, node, live, expected):
    out = network_tun.func(tun_driver=facts, tun_node=node, live=live)
    assert (out.status.value, out.summary) == expected
    assert out.evidence["driver"] == availability(facts)


def test_a_tun_node_only_root_may_open_is_noted():
    out = network_tun.func(tun_driver=driver(sys_module="built-in"), tun_node=Node("char", 0o600, 0, 0, 10, 200),
                           live=True)
    assert (out.status.value, out.summary) == ("pass", "character device 10:200, mode 0600; built into the kernel")
    assert out.detail.startswith("Mode 0600: only root")


def test_vhost_net_missing_is_a_warning():
    out = network_vhost_net.func(vhost_net_driver=driver(VHOST_NET, registered=False, kernels=("6.1.0",)),
                                 vhost_net_node=None, live=True)
    assert (out.status.value, out.summary) == (
        "warn", "/dev/vhost-net does not exist and the kernel has no vhost_net driver")


# -- network.default-nat ---------------------------------------------------------------------------------------
XML = ("<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>"
       "<ip address='192.168.122.1' netmask='255.255.255.0'/></network>")
HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
OWN = "virbr0\t007AA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
VPN = "wg0\t007AA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
ROUTES = RouteTable("ok", tuple(parse_proc_net_route(HEADER + OWN)))
FORWARD_ON = Readout("/proc/sys/net/ipv4/ip_forward", "ok", "1\n")
FORWARD_OFF = Readout("/proc/sys/net/ipv4/ip_forward", "ok", "0\n")
DEFINED = DefaultNetwork(True, defined=True, autostart=True, network=parse_network_xml(XML), active=True)
WHAT = "'default' (nat, 192.168.122.0/24, bridge virbr0)"


@pytest.mark.parametrize("net, forward, routes, expected", [
    (DefaultNetwork(False), FORWARD_ON, ROUTES,
     ("skip", "libvirt's daemon is not installed (no /etc/libvirt/qemu.conf); see libvirt.layout")),
    (DefaultNetwork(True, "Permission denied"), FORWARD_ON, ROUTES,
     ("skip", "cannot read /etc/libvirt/qemu/networks/default.xml: Permission denied")),
    (DefaultNetwork(True, others=("lan",), others_autostarted=("lan",)), FORWARD_ON, ROUTES,
     ("pass", "no 'default' network; autostarted instead: lan")),
    (DefaultNetwork(True, others=("lan",)), FORWARD_ON, ROUTES, ("warn", "libvirt's default NAT network is not defined")),
    (DefaultNetwork(True, defined=True, parse_error="no element found: line 1"), FORWARD_ON, ROUTES,
     ("fail", "cannot parse /etc/libvirt/qemu/networks/default.xml: no element found: line 1")),
    (DEFINED, FORWARD_ON, ROUTES, ("pass", f"{WHAT}, autostarted, running")),
    (DEFINED, FORWARD_ON, RouteTable("ok", tuple(parse_proc_net_route(HEADER + VPN))),
     ("fail", f"{WHAT} collides with the host route 192.168.122.0/24 dev wg0")),
    (DEFINED, FORWARD_OFF, ROUTES, ("fail", f"{WHAT} runs but net.ipv4.ip_forward is 0")),
    (DEFINED._replace(active=False), FORWARD_OFF, ROUTES, ("pass", f"{WHAT}, autostarted")),
    (DEFINED._replace(autostart=False), FORWARD_ON, RouteTable("denied", None, "Permission denied"),
     ("warn", f"{WHAT} is defined but not autostarted")),
])
def test_default_nat_judge(net, forward, routes, expected):
    out = default_nat.func(default_network=net, ip_forward=forward, ipv4_routes=routes)
    assert (out.status.value, out.summary) == expected


def test_unreadable_routes_are_named_not_taken_for_none():
    out = default_nat.func(default_network=DEFINED, ip_forward=FORWARD_ON,
                           ipv4_routes=RouteTable("denied", None, "Permission denied"))
    assert out.evidence["routes"] == "cannot read /proc/net/route: Permission denied"
    assert "Route collisions not checked: cannot read /proc/net/route: Permission denied." in out.detail
    absent = default_nat.func(default_network=DEFINED, ip_forward=Readout("/proc/sys/net/ipv4/ip_forward", "absent"),
                              ipv4_routes=RouteTable("absent", None))
    assert absent.evidence["routes"] == "no /proc/net/route in this root" and absent.evidence["ip_forward"] is None


# -- network.bridge -----------------------------------------------------------------------------------------
UPLINK = RouteTable("ok", tuple(parse_proc_net_route(HEADER + "enp1s0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000"
                                                              "\t0\t0\t0\n")))
NETPLAN = Later(lambda: NetworkStack("netplan", "/etc/netplan/*.yaml"))


@pytest.mark.parametrize("found, expected", [
    (BridgeSet(False, {}, frozenset()), ("skip", "no /sys/class/net in this root: bridges are runtime state")),
    (BridgeSet(True, {}, frozenset()), ("warn", "no Linux bridge")),
    (BridgeSet(True, {"virbr0": ("vnet0",), "docker0": ()}, frozenset()),
     ("warn", "only NAT bridges (virbr0, docker0): guests are not reachable from outside")),
    (BridgeSet(True, {"br0": ()}, frozenset()), ("warn", "br0 has no ports")),
    (BridgeSet(True, {"br0": ("vm7",)}, frozenset({"vm7"})), ("warn", "br0 has only guest ports (vm7)")),
    (BridgeSet(True, {"br0": ("enp1s0", "vnet0"), "virbr0": ()}, frozenset()),
     ("pass", "br0 (ports: enp1s0, vnet0)")),
])
def test_bridge_judge(found, expected):
    out = network_bridge.func(bridges=found, ipv4_routes=UPLINK, network_stack=NETPLAN)
    assert (out.status.value, out.summary) == expected
    if out.status.value == "warn":
        assert out.remediation.startswith(("With netplan (/etc/netplan/*.yaml)", "Add the uplink: 'ip link set "
                                                                                  "enp1s0 master br0'"))


def test_the_network_stack_is_asked_only_for_a_fix():
    def unreadable():
        raise PermissionError(13, "Permission denied", "/etc/network/interfaces")

    found = BridgeSet(True, {"br0": ("enp1s0",)}, frozenset())
    out = network_bridge.func(bridges=found, ipv4_routes=UPLINK, network_stack=Later(unreadable))
    assert out.status.value == "pass"
    with pytest.raises(PermissionError):  # the runner names the file (skip, permission denied)
        network_bridge.func(bridges=found._replace(ports={"br0": ()}), ipv4_routes=UPLINK,
                            network_stack=Later(unreadable))


@pytest.mark.parametrize("stack, start", [
    (NetworkStack("networkmanager", None, "rhel"), "With NetworkManager (the rhel family's default)"),
    (NetworkStack(None, None, "gentoo"), "This host's network configuration tool could not be told (no netplan, "),
    (NetworkStack("ifupdown", "/etc/network/interfaces"), "With ifupdown (/etc/network/interfaces)"),
])
def test_bridge_fix_names_where_the_stack_was_seen(stack, start):
    out = network_bridge.func(bridges=BridgeSet(True, {}, frozenset()), ipv4_routes=UPLINK,
                              network_stack=Later(lambda: stack))
    assert out.remediation.startswith(start) and "enp1s0" in out.remediation


# -- libvirt.layout --------------------------------------------------------------------------------------------
FILE, DIR = PathState("file", True), PathState("dir", True)
STATE_OK = {path: DIR for path in [STATE] + [f"{STATE}/{s}" for s in STATE_DIRS]}
MODULAR = LibvirtFiles(
    True, {"libvirtd": None, "virtqemud": "/usr/sbin/virtqemud"}, True, True,
    confs={"qemu.conf": FILE, "libvirtd.conf": PathState(None, False), "virtqemud.conf": FILE},
    conf_exists={"libvirtd.conf": False, "virtqemud.conf": True}, state_dirs=STATE_OK,
    enabled=("virtqemud.socket",))
OFFLINE = Later(lambda: UnitActivity({}, "offline"))


@pytest.mark.parametrize("files, units, live, expected", [
    (LibvirtFiles(False, {}, False, False), OFFLINE, False,
     ("skip", "no /etc in this root: not an installed system")),
    (LibvirtFiles(True, {"libvirtd": None, "virtqemud": None}, True, False), OFFLINE, False,
     ("warn", "libvirt is not installed")),
    (MODULAR, OFFLINE, False, ("pass", "virtqemud (modular), enabled at boot; configuration and state directories "
                                       "in place")),
    (MODULAR._replace(enabled=()), OFFLINE, False,
     ("warn", "virtqemud (modular): no libvirt daemon is enabled at boot (no virtqemud unit in "
              "/etc/systemd/system/*.wants/)")),
    (MODULAR._replace(enabled=(), masked=("virtqemud.service",)), OFFLINE, False,
     ("warn", "virtqemud (modular): masked: virtqemud.service")),
    (MODULAR._replace(enabled=("libvirtd.service", "virtqemud.socket")), OFFLINE, False,
     ("warn", "libvirtd and virtqemud (unknown mode), enabled at boot: /etc/libvirt/libvirtd.conf: missing; both the "
              "monolithic libvirtd and the modular virtqemud are enabled or running; they would manage the same QEMU "
              "guests")),
    (MODULAR._replace(state_dirs={**STATE_OK, f"{STATE}/dnsmasq": PathState(None, False)}), OFFLINE, False,
     ("warn", "virtqemud (modular), enabled at boot: /var/lib/libvirt/dnsmasq: missing")),
    (MODULAR._replace(confs={**MODULAR.confs, "qemu.conf": PathState(None, False, "Permission denied")}), OFFLINE,
     False, ("warn", "virtqemud (modular), enabled at boot: /etc/libvirt/qemu.conf: cannot be examined (Permission "
                     "denied)")),
    (MODULAR, Later(lambda: UnitActivity({u: "inactive" for u in ("libvirtd.service", "libvirtd.socket",
                                                                   "virtqemud.service", "virtqemud.socket")},
                                         "systemctl")), True,
     ("warn", "virtqemud (modular), enabled at boot: virtqemud is not running (no socket in /run/libvirt), though "
              "enabled at boot")),
    (MODULAR._replace(sockets={"virtqemud": "socket"}), Later(lambda: UnitActivity({}, "no-systemd")), True,
     ("pass", "virtqemud (modular), running (/run/libvirt/virtqemud-sock), enabled at boot; configuration and state "
              "directories in place")),
])
def test_layout_judge(files, units, live, expected):
    out = libvirt_layout.func(libvirt_files=files, libvirt_units=units, distro_family="rhel", live=live)
    assert (out.status.value, out.summary) == expected


def test_a_file_readable_by_root_only_is_a_note_for_another_user():
    files = MODULAR._replace(confs={**MODULAR.confs, "virtqemud.conf": PathState("file", False)})
    assert libvirt_layout.func(libvirt_files=files, libvirt_units=OFFLINE, distro_family=None,
                               live=False).status.value == "warn"  # root cannot read it: 'not readable'
    out = libvirt_layout.func(libvirt_files=files._replace(euid=65534), libvirt_units=OFFLINE, distro_family=None,
                              live=False)
    assert out.status.value == "pass"
    assert "/etc/libvirt/virtqemud.conf is readable by root only (as shipped)" in out.detail


def test_unit_state_sources_are_worded_as_before():
    out = libvirt_layout.func(libvirt_files=MODULAR, libvirt_units=Later(lambda: UnitActivity(
        {}, "unexpected", "Failed to connect to bus")), distro_family="rhel", live=True)
    assert out.evidence["unit_state_source"] == "'systemctl is-active' answered unexpectedly: Failed to connect to bus"


# -- paravirt.virtio -------------------------------------------------------------------------------------------
NO_CONFIG = KernelConfigFact(None, None, ())
CONFIG = KernelConfigFact(KConfig({"CONFIG_VHOST_NET": "m", "CONFIG_VHOST_VSOCK": "n", "CONFIG_KVM_GUEST": "y"}),
                          "/boot/config-6.1.0", ())


def virtio(net=None, vsock=None, scsi=None, dep=None, config=NO_CONFIG, nested=False, seen=()):
    return paravirt_virtio.func(
        vhost_net_driver=net or driver(VHOST_NET), vhost_vsock_driver=vsock or driver(VHOST_VSOCK),
        vhost_scsi_driver=scsi or driver(VHOST_SCSI), modules_dep=dep or {}, kernel_config=config,
        host_is_guest=nested, guest_modules=Later(lambda: seen))


@pytest.mark.parametrize("kwargs, expected", [
    ({}, ("skip", "nothing readable about the kernel's vhost drivers")),
    ({"dep": {"vhost_net": ("6.1.0",), "vhost_vsock": ("6.1.0",)}},
     ("pass", "vhost_net installed as a module (modules.dep), vhost_vsock installed as a module (modules.dep), "
              "vhost_scsi unknown")),
    ({"config": CONFIG, "net": driver(VHOST_NET, config_value="m"), "vsock": driver(VHOST_VSOCK, config_value="n")},
     ("pass", "vhost_net a module of this kernel build (config), vhost_vsock missing, vhost_scsi unknown "
              "(/boot/config-6.1.0)")),
    ({"net": driver(VHOST_NET, registered=False), "vsock": driver(VHOST_VSOCK, registered=True)},
     ("warn", "vhost_net missing, vhost_vsock registered in /proc/misc, vhost_scsi unknown")),
])
def test_paravirt_judge(kwargs, expected):
    out = virtio(**kwargs)
    assert (out.status.value, out.summary) == expected


def test_a_nested_host_without_a_config_lists_its_virtio_modules():
    out = virtio(net=driver(VHOST_NET, sys_module="loaded"), nested=True, seen=("virtio_pci", "virtio_net"))
    assert out.evidence["guest_modules"] == ["virtio_pci", "virtio_net"] and out.evidence["host_is_guest"] is True
    assert "virtio drivers in /sys/module: virtio_pci, virtio_net" in out.detail
    bare = virtio(net=driver(VHOST_NET, sys_module="loaded"), seen=None)  # not asked: not a guest
    assert "guest_modules" not in bare.evidence


# -- the facts on captured roots, and as a user who may not read ------------------------------------------------
def gather(root, name):
    import kvmcheck.checks.libvirt  # noqa: F401 - registers the facts
    import kvmcheck.checks.network  # noqa: F401
    import kvmcheck.checks.paravirt  # noqa: F401

    return Facts(Host(str(root))).get(name)


def test_driver_facts_of_a_captured_debian_host(host_root):
    root = host_root("libvirt-debian-monolithic")
    tun = gather(root, "tun_driver")
    assert (tun.sys_module, tun.misc_state, tun.registered) == ("loaded", "ok", True)
    assert availability(tun) == "module loaded" and tun.unreadable == ()
    assert gather(root, "tun_node") == Node("char", 0o666, 0, 0, 10, 200)


def test_driver_facts_of_an_offline_fedora_root(host_root):
    root = host_root("libvirt-fedora-modular")
    vhost = gather(root, "vhost_net_driver")
    assert vhost.misc_state == "absent" and vhost.registered is None
    assert vhost.installed and vhost.modules_devname
    assert gather(root, "vhost_net_node") is None


def _open_to_nobody(root):
    for folder in (root, *root.parents):
        if str(folder) in ("/", "/tmp"):
            break
        os.chmod(folder, 0o755)


NOBODY = """
import json, sys
import kvmcheck.checks.libvirt, kvmcheck.checks.network, kvmcheck.checks.paravirt
from kvmcheck.core.host import Host
from kvmcheck.facts import Facts
facts = Facts(Host(sys.argv[1]))
misc, routes, net = facts.get("misc_devices"), facts.get("ipv4_routes"), facts.get("default_network")
trees, files = facts.get("module_trees"), facts.get("libvirt_files")
print(json.dumps({"misc": misc.state, "routes": routes.state, "net_error": net.error,
                  "builtin": {r: got.state for r, got in trees.builtin.items()},
                  "tun_unreadable": list(facts.get("tun_driver").unreadable),
                  "qemu_conf": list(files.confs["qemu.conf"]), "forward": facts.get("ip_forward").state}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_files_nobody_may_read_are_denied_not_absent(host_root):
    root = host_root("libvirt-debian-monolithic")
    release = (root / "proc/sys/kernel/osrelease").read_text().strip()
    (root / f"lib/modules/{release}").mkdir(parents=True)
    (root / f"lib/modules/{release}/modules.builtin").write_text("kernel/drivers/net/tun.ko\n")
    for path in ("proc/misc", "proc/net/route", "proc/sys/net/ipv4/ip_forward", f"lib/modules/{release}/modules.builtin",
                 "etc/libvirt/qemu.conf"):
        os.chmod(root / path, 0o000)
    os.chmod(root / "etc/libvirt/qemu/networks", 0o700)
    _open_to_nobody(root)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(as_nobody([sys.executable, "-c", NOBODY, str(root)]), capture_output=True, text=True,
                          timeout=120, env=env, cwd="/")
    got = json.loads(proc.stdout or "null") if proc.returncode == 0 else proc.stderr
    assert got == {"misc": "denied", "routes": "denied", "net_error": "Permission denied",
                   "builtin": {release: "denied"},
                   "tun_unreadable": [f"/lib/modules/{release}/modules.builtin: Permission denied"],
                   "qemu_conf": ["file", False, None], "forward": "denied"}
    # As root the same files are read (root reads whatever the mode), and absent ones are absent, not denied.
    (root / "proc/misc").unlink()
    assert gather(root, "misc_devices").state == "absent"
    assert gather(root, "ipv4_routes").state == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_the_judges_say_so_as_nobody(host_root):
    """End to end as nobody: the statuses the denied facts lead to (as before the facts were split out)."""
    root = host_root("libvirt-debian-monolithic")
    os.chmod(root / "etc/libvirt/qemu/networks", 0o700)
    os.chmod(root / "proc/net/route", 0o000)
    _open_to_nobody(root)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = as_nobody([sys.executable, "-m", "kvmcheck", "check", "--root", str(root), "-f", "json",
                      "--only", "network.default-nat", "--only", "network.bridge"])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd="/")
    got = {c["id"]: (c["status"], c["summary"]) for c in json.loads(proc.stdout)["checks"]}
    assert got == {
        "network.default-nat": ("skip", "cannot read /etc/libvirt/qemu/networks/default.xml: Permission denied"),
        "network.bridge": ("pass", "br0 (ports: eno1, vnet0)"),
    }, proc.stderr


def test_network_facts_of_captured_roots(host_root):
    malformed = gather(host_root("net-malformed-default"), "default_network")
    assert (malformed.installed, malformed.defined, malformed.network) == (True, True, None)
    assert malformed.parse_error and malformed.error is None
    none = gather(host_root("net-no-default-network"), "default_network")
    assert (none.defined, none.others, none.others_autostarted) == (False, ("isolated",), ())
    collision = host_root("net-subnet-collision")
    assert gather(collision, "bridges") == BridgeSet(True, {"br0": ()}, frozenset())
    routes = gather(collision, "ipv4_routes")
    assert routes.state == "ok" and "192.168.122.0/24 dev wg0" in [r.describe() for r in routes.routes]
    stack = gather(host_root("libvirt-not-installed"), "network_stack")
    assert isinstance(stack, Later) and stack.get() == NetworkStack("netplan", None, "ubuntu")
