# SPDX-License-Identifier: GPL-2.0-or-later
"""libvirt.layout and the network.* checks: captured roots per branch, the parsers, and the live host."""
from __future__ import annotations

import ipaddress
import os
import socket
import stat

import pytest

import kvmcheck
from kvmcheck.facts.context import Context
from kvmcheck.core.host import CommandResult, Host
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.libvirt_xml import parse_network_xml
from kvmcheck.parsers.netroute import parse_proc_net_route

IDS = ["libvirt.layout", "network.default-nat", "network.bridge", "network.tun", "network.vhost-net"]

EXPECTED = {
    # Debian 12, monolithic libvirtd enabled, default network running, br0 holds eno1, tun and vhost-net nodes.
    "libvirt-debian-monolithic": {
        "libvirt.layout": "pass", "network.default-nat": "pass", "network.bridge": "pass",
        "network.tun": "pass", "network.vhost-net": "pass"},
    # Fedora 40, modular virtqemud enabled, default defined but not autostarted, only virbr0, no /dev: modules.
    "libvirt-fedora-modular": {
        "libvirt.layout": "pass", "network.default-nat": "warn", "network.bridge": "warn",
        "network.tun": "pass", "network.vhost-net": "pass"},
    # Ubuntu without libvirt, no bridge, a kernel without tun and vhost_net.
    "libvirt-not-installed": {
        "libvirt.layout": "warn", "network.default-nat": "skip", "network.bridge": "warn",
        "network.tun": "fail", "network.vhost-net": "warn"},
    # 192.168.122.0/24 is also routed through a WireGuard tunnel; br0 has no ports.
    "net-subnet-collision": {
        "libvirt.layout": "pass", "network.default-nat": "fail", "network.bridge": "warn",
        "network.tun": "pass", "network.vhost-net": "pass"},
    # default.xml cut off mid-attribute; network/ and dnsmasq/ state directories missing; no /sys, /dev.
    "net-malformed-default": {
        "libvirt.layout": "warn", "network.default-nat": "fail", "network.bridge": "skip",
        "network.tun": "skip", "network.vhost-net": "skip"},
    # virtqemud installed but not enabled; no 'default' network; br0 with an uplink, docker0 ignored.
    "net-no-default-network": {
        "libvirt.layout": "warn", "network.default-nat": "warn", "network.bridge": "pass",
        "network.tun": "pass", "network.vhost-net": "warn"},
}


def run_on(root, only=IDS):
    report = kvmcheck.run(str(root), only=only)
    return {r.id: r for r in report.checks}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_exact_statuses(host_root, scenario):
    results = run_on(host_root(scenario))
    assert {i: r.status.value for i, r in results.items()} == EXPECTED[scenario]
    for r in results.values():
        assert r.summary, r.id
        if r.status.value in ("fail", "warn"):
            assert r.detail and r.remediation, f"{scenario} {r.id} must explain and fix"


def test_empty_root_skips_everything(tmp_path):
    assert {i: r.status.value for i, r in run_on(tmp_path).items()} == {i: "skip" for i in IDS}


def test_monolithic_layout_and_running_network(host_root):
    results = run_on(host_root("libvirt-debian-monolithic"))
    layout = results["libvirt.layout"]
    assert layout.evidence["daemon"] == ["libvirtd"]
    assert layout.evidence["enabled"] == ["libvirtd.service", "libvirtd.socket"]
    assert "monolithic" in layout.summary
    nat = results["network.default-nat"]
    # The 192.168.122.0/24 route through virbr0 is the network's own, not a collision.
    assert nat.evidence["collisions"] == [] and nat.evidence["active"] is True
    assert nat.evidence["subnets"] == ["192.168.122.0/24"]
    bridge = results["network.bridge"]
    assert bridge.evidence["nat_bridges"] == ["virbr0"] and "virbr0" in bridge.detail
    assert results["network.tun"].evidence["sys_module"] == "loaded"


def test_modular_layout_and_offline_modules(host_root):
    results = run_on(host_root("libvirt-fedora-modular"))
    assert "virtqemud (modular)" in results["libvirt.layout"].summary
    nat = results["network.default-nat"]
    assert "not autostarted" in nat.summary and nat.remediation.startswith("'virsh net-autostart default'")
    assert nat.evidence["ipv6"] == ["fd00:dead:beef::1/64"] and nat.evidence["subnets"] == ["192.168.124.0/24"]
    bridge = results["network.bridge"]
    assert "only NAT bridges (virbr0)" in bridge.summary and "nmcli" in bridge.remediation
    for cid, dev in (("network.tun", "/dev/net/tun"), ("network.vhost-net", "/dev/vhost-net")):
        r = results[cid]
        assert "offline root" in r.summary and dev in r.summary and "modules.devname" in r.summary
        assert r.evidence["installed"]


def test_not_installed_names_the_next_step(host_root):
    results = run_on(host_root("libvirt-not-installed"))
    assert "apt-get install libvirt-daemon-system" in results["libvirt.layout"].remediation
    assert "netplan" in results["network.bridge"].remediation
    assert "enp1s0" in results["network.bridge"].remediation  # the default route's interface
    assert "modprobe tun" in results["network.tun"].remediation


def test_collision_names_route_interface_and_fix(host_root):
    results = run_on(host_root("net-subnet-collision"))
    nat = results["network.default-nat"]
    assert "192.168.122.0/24 dev wg0" in nat.summary
    assert "already in use by interface wg0" in nat.detail
    assert "virsh net-edit default" in nat.remediation
    assert "192.168.100.1" in nat.remediation  # a free /24, not 172.16/16 nor the tunnel's
    assert results["network.bridge"].summary == "br0 has no ports"
    # A Debian root with no network configuration captured: no ifupdown edit on a guess, the runtime commands
    assert "could not be told" in results["network.bridge"].remediation
    assert "/etc/network/interfaces" not in results["network.bridge"].remediation


def test_overlap_without_exact_match_is_a_collision_too(host_root):
    root = host_root("net-subnet-collision")
    route = (root / "proc/net/route").read_text().replace("007AA8C0", "0000A8C0").replace(
        "wg0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF", "wg0\t0000A8C0\t00000000\t0001\t0\t0\t0\t0000FFFF")
    (root / "proc/net/route").write_text(route)
    nat = run_on(root)["network.default-nat"]
    assert nat.status.value == "fail" and "192.168.0.0/16 dev wg0" in nat.summary
    assert "wrong way" in nat.detail


def test_malformed_default_xml_says_cannot_parse(host_root):
    results = run_on(host_root("net-malformed-default"))
    nat = results["network.default-nat"]
    assert nat.summary.startswith("cannot parse /etc/libvirt/qemu/networks/default.xml")
    assert "/var/lib/libvirt/dnsmasq: missing" in results["libvirt.layout"].summary


def test_running_network_with_forwarding_off_fails(host_root):
    root = host_root("libvirt-debian-monolithic")
    (root / "proc/sys/net/ipv4/ip_forward").write_text("0\n")
    nat = run_on(root)["network.default-nat"]
    assert nat.status.value == "fail" and "ip_forward is 0" in nat.summary


def test_stopped_network_with_forwarding_off_is_fine(host_root):
    root = host_root("net-subnet-collision")
    (root / "proc/net/route").write_text((root / "proc/net/route").read_text().replace("wg0", "wg9").replace(
        "007AA8C0", "0064A8C0"))  # the tunnel now routes 192.168.100.0/24
    nat = run_on(root)["network.default-nat"]
    assert nat.status.value == "pass" and "libvirt turns it on" in nat.detail


def test_both_daemons_enabled_is_a_warning(host_root):
    root = host_root("libvirt-debian-monolithic")
    wants = root / "etc/systemd/system/sockets.target.wants"
    os.symlink("/lib/systemd/system/virtqemud.socket", wants / "virtqemud.socket")
    layout = run_on(root)["libvirt.layout"]
    assert layout.status.value == "warn" and "both the monolithic libvirtd and the modular virtqemud" in layout.summary


def test_masked_daemon(host_root):
    root = host_root("net-no-default-network")
    (root / "etc/systemd/system").mkdir(parents=True)
    os.symlink("/dev/null", root / "etc/systemd/system/virtqemud.service")
    layout = run_on(root)["libvirt.layout"]
    assert layout.status.value == "warn" and "masked: virtqemud.service" in layout.summary
    assert "systemctl unmask virtqemud.service" in layout.remediation


def test_client_only_install_is_not_installed(host_root):
    root = host_root("libvirt-not-installed")
    (root / "etc/libvirt").mkdir()
    (root / "etc/libvirt/libvirt.conf").write_text("#uri_default = \"qemu:///system\"\n")
    results = run_on(root)
    layout = results["libvirt.layout"]
    assert layout.status.value == "warn" and "only client configuration" in layout.detail
    assert results["network.default-nat"].status.value == "skip"


def test_bridge_with_only_guest_ports(host_root):
    root = host_root("net-subnet-collision")
    port = root / "sys/class/net/br0/brif/vnet7"
    port.mkdir(parents=True)
    bridge = run_on(root)["network.bridge"]
    assert bridge.status.value == "warn" and bridge.summary == "br0 has only guest ports (vnet7)"


def test_a_directory_where_tun_belongs_fails(host_root):
    root = host_root("libvirt-fedora-modular")
    (root / "dev/net/tun").mkdir(parents=True)
    tun = run_on(root)["network.tun"]
    assert tun.status.value == "fail" and "not a character device" in tun.summary


# --- the live daemon branch, on a root made to look live ---------------------------------------------------------
def _live_layout(root, systemctl):
    host = Host(str(root))
    host.live = True  # resolve paths inside the root, but take the live branches
    host.run = systemctl  # type: ignore[assignment]
    host.invoking_user = lambda: (0, [0])  # type: ignore[assignment]
    from kvmcheck.checks.libvirt import libvirt_layout
    return libvirt_layout(Context(host))


def _answers(*states):
    def run(argv, timeout=5.0, offline_ok=False):
        assert argv[:2] == ["systemctl", "is-active"]
        return CommandResult(tuple(argv), 3, "".join(f"{s}\n" for s in states), "")
    return run


def test_live_modular_daemon_with_its_socket(host_root, monkeypatch):
    root = host_root("libvirt-fedora-modular")
    (root / "run/systemd/system").mkdir(parents=True)
    (root / "run/libvirt").mkdir(parents=True)
    monkeypatch.chdir(root / "run/libvirt")  # the full path is too long for a socket address
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind("virtqemud-sock")
        out = _live_layout(root, _answers("inactive", "inactive", "inactive", "active"))
    finally:
        sock.close()
    assert out.status.value == "pass", out.summary
    assert "running (/run/libvirt/virtqemud-sock)" in out.summary
    assert out.evidence["active"]["virtqemud.socket"] == "active"


def test_live_enabled_but_stopped_daemon(host_root):
    root = host_root("libvirt-debian-monolithic")
    (root / "run/systemd/system").mkdir(parents=True)
    out = _live_layout(root, _answers("inactive", "inactive", "inactive", "inactive"))
    assert out.status.value == "warn" and "not running" in out.summary and "enabled at boot" in out.summary
    assert out.remediation == "'systemctl enable --now libvirtd'."


def test_live_without_systemctl_or_systemd(host_root):
    root = host_root("libvirt-debian-monolithic")

    def missing(argv, timeout=5.0, offline_ok=False):
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    out = _live_layout(root, missing)
    assert "not booted with systemd" in out.detail and out.status.value == "warn"
    (root / "run/systemd/system").mkdir(parents=True)
    out = _live_layout(root, missing)
    assert "The systemctl command is not installed" in out.detail


# --- parsers ------------------------------------------------------------------------------------------------------
NET = "<network><name>n</name>{fwd}<bridge name='virbr9'/>{ip}</network>"


def test_prefix_and_netmask_mean_the_same():
    a = parse_network_xml(NET.format(fwd="<forward mode='nat'/>", ip="<ip address='10.1.2.1' prefix='24'/>"))
    b = parse_network_xml(NET.format(fwd="<forward mode='nat'/>", ip="<ip address='10.1.2.1' netmask='255.255.255.0'/>"))
    assert a.ipv4[0].network == b.ipv4[0].network == ipaddress.ip_network("10.1.2.0/24")
    assert (a.name, a.bridge, a.forward_mode) == ("n", "virbr9", "nat")


def test_network_xml_odd_inputs():
    ipv6_only = parse_network_xml(NET.format(fwd="<forward/>", ip="<ip family='ipv6' address='fd00::1' prefix='64'/>"))
    assert ipv6_only.ipv4 == [] and str(ipv6_only.ipv6[0].network) == "fd00::/64"
    assert ipv6_only.forward_mode == "nat"  # <forward/> without a mode is NAT
    isolated = parse_network_xml(NET.format(fwd="", ip="<ip address='10.9.8.1'/>"))
    assert isolated.forward_mode is None and isolated.ipv4[0].prefix == 8  # classful default, as libvirt does
    assert parse_network_xml(NET.format(fwd="", ip="<ip address='192.168.9.1'/>")).ipv4[0].prefix == 24
    holey = parse_network_xml(NET.format(fwd="", ip="<ip address='10.0.0.1' netmask='255.0.255.0'/>"))
    assert holey.ipv4[0].prefix is None and holey.ipv4[0].network is None
    dhcp = parse_network_xml(NET.format(fwd="", ip="<ip address='10.0.0.1' prefix='16'><dhcp><range start='10.0.0.2' "
                                                   "end='10.0.0.9'/></dhcp></ip><ip><tftp root='/x'/></ip>"))
    assert dhcp.ipv4[0].dhcp_ranges == (("10.0.0.2", "10.0.0.9"),) and len(dhcp.ips) == 1
    for bad in ("", "<network><name>x</name>", "<domain/>", "not xml at all",
                "<!DOCTYPE n [<!ENTITY a 'b'>]><network><name>&a;</name></network>"):
        with pytest.raises(ParseError):
            parse_network_xml(bad)


ROUTE = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
         "eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
         "eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n")


def test_route_table_little_endian_with_default_route():
    routes = parse_proc_net_route(ROUTE)
    assert [r.describe() for r in routes] == ["0.0.0.0/0 via 192.168.0.1 dev eth0", "192.168.0.0/24 dev eth0"]
    assert [r.is_default for r in routes] == [True, False] and routes[0].metric == 100 and routes[1].up


def test_route_table_odd_inputs():
    assert parse_proc_net_route("") == []
    assert parse_proc_net_route(ROUTE.splitlines()[0] + "\n") == []  # header only: no routes at all
    no_default = ROUTE.splitlines()[0] + "\n" + ROUTE.splitlines()[2] + "\n"
    assert [r.is_default for r in parse_proc_net_route(no_default)] == [False]
    junk = ROUTE + "eth1\tZZZZZZZZ\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\ntruncated line\n\n" \
                   "eth2\t0000000A\t00000000\t0001\t0\t0\t0\t00FF00FF\t0\t0\t0\n"
    assert [r.iface for r in parse_proc_net_route(junk)] == ["eth0", "eth0"]  # bad hex, short, holey mask
    with pytest.raises(ParseError):
        parse_proc_net_route("<html>not a routing table</html>\n")


def test_route_table_big_endian_is_recognised_by_its_masks():
    big = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
           "enc1\tC0A87A00\t00000000\t0001\t0\t0\t0\tFFFFFF00\t0\t0\t0\n")
    assert [str(r.network) for r in parse_proc_net_route(big)] == ["192.168.122.0/24"]
    assert [str(r.network) for r in parse_proc_net_route(big, byteorder="big")] == ["192.168.122.0/24"]


# --- the machine running the tests --------------------------------------------------------------------------------
def _char(path):
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _misc():
    try:
        with open("/proc/misc") as fh:
            return {line.split()[1] for line in fh if len(line.split()) == 2}
    except OSError:
        return set()


@pytest.fixture(scope="module")
def live():
    return run_on("/")


def test_live_has_no_errors(live):
    assert [r.id for r in live.values() if r.status.value == "error"] == []


def test_live_libvirt_matches_the_file_system(live):
    installed = any(os.path.exists(f"{d}/{b}") for d in ("/usr/sbin", "/usr/bin", "/sbin")
                    for b in ("libvirtd", "virtqemud")) or os.path.exists("/etc/libvirt/qemu.conf")
    layout = live["libvirt.layout"]
    if not installed:
        assert (layout.status.value, layout.summary) == ("warn", "libvirt is not installed")
    if not os.path.isdir("/etc/libvirt"):
        assert live["network.default-nat"].status.value == "skip"


def test_live_tun_and_vhost_net_match_the_file_system(live):
    misc = _misc()
    tun, vhost = live["network.tun"], live["network.vhost-net"]
    if _char("/dev/net/tun") and os.stat("/dev/net/tun").st_rdev == os.makedev(10, 200) and "tun" in misc:
        assert tun.status.value == "pass"
    if not os.path.exists("/dev/net/tun"):
        assert tun.status.value == "fail"
    if not os.path.exists("/dev/vhost-net"):
        assert vhost.status.value == "warn" and "/dev/vhost-net does not exist" in vhost.summary
    elif _char("/dev/vhost-net") and "vhost-net" in misc:
        assert vhost.status.value == "pass"


def test_live_bridges_match_sysfs(live):
    names = os.listdir("/sys/class/net") if os.path.isdir("/sys/class/net") else []
    bridges = [n for n in names if os.path.isdir(f"/sys/class/net/{n}/bridge")]
    bridge = live["network.bridge"]
    assert sorted(bridge.evidence.get("bridges", {})) == sorted(bridges)
    if not bridges:
        assert (bridge.status.value, bridge.summary) == ("warn", "no Linux bridge")


def test_kernel_config_decides_an_offline_root(host_root):
    root = host_root("libvirt-not-installed")
    (root / "boot").mkdir()
    (root / "boot/config-6.8.0-31-generic").write_text("CONFIG_TUN=y\n# CONFIG_VHOST_NET is not set\n")
    results = run_on(root)
    assert results["network.tun"].status.value == "pass" and "built into the kernel" in results["network.tun"].summary
    vhost = results["network.vhost-net"]
    assert vhost.status.value == "warn" and "CONFIG_VHOST_NET=n" in vhost.detail


def test_a_partial_kernel_config_says_nothing(host_root):
    # A captured config with only the KVM lines, and no modules.builtin: tun cannot be judged.
    root = host_root("amd-baremetal-svm")
    assert {i: r.status.value for i, r in run_on(root, ["network.tun", "network.vhost-net"]).items()} == {
        "network.tun": "skip", "network.vhost-net": "skip"}


@pytest.mark.parametrize("evidence, tool", [
    ({"etc/netplan/50-cloud-init.yaml": "network: {version: 2}\n"}, "With netplan (/etc/netplan/*.yaml)"),
    ({"run/NetworkManager/": None}, "With NetworkManager (/run/NetworkManager)"),
    ({"etc/NetworkManager/system-connections/eth.nmconnection": "[connection]\n"}, "With NetworkManager"),
    ({"run/systemd/netif/links/": None}, "With systemd-networkd (/run/systemd/netif)"),
    ({"etc/systemd/network/10-wired.network": "[Match]\nName=en*\n"}, "With systemd-networkd"),
    ({"etc/network/interfaces": "auto lo\niface lo inet loopback\n\nauto enp1s0\niface enp1s0 inet dhcp\n"},
     "With ifupdown (/etc/network/interfaces)"),
    ({"etc/network/interfaces": "auto lo\niface lo inet loopback\n"}, "With netplan (the ubuntu family's default)"),
])
def test_the_bridge_fix_uses_the_network_stack_the_host_has(host_root, evidence, tool):
    root = host_root("libvirt-not-installed")  # an Ubuntu root whose default route leaves through enp1s0
    for path, text in evidence.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            target.mkdir(exist_ok=True)
        else:
            target.write_text(text)
    fix = run_on(root)["network.bridge"].remediation
    assert fix.startswith(tool), fix
    assert "enp1s0" in fix


def test_a_host_without_a_known_network_stack_gets_the_runtime_commands(host_root):
    root = host_root("libvirt-not-installed")
    osr = root / "etc" / "os-release"
    osr.write_text(osr.read_text().replace("ID=ubuntu", "ID=gentoo").replace("ID_LIKE=debian", ""))
    fix = run_on(root)["network.bridge"].remediation
    assert fix.startswith("This host's network configuration tool could not be told")
    assert "'ip link add br0 type bridge && ip link set enp1s0 master br0 && ip link set br0 up'" in fix
