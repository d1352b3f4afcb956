# SPDX-License-Identifier: GPL-2.0-or-later
"""Remedies as code (issue 20): for each finding of a report, the steps that fix it, as data.

A remedy is computed from the report alone (a result's check id, cause, evidence and pending step, and the
host block's distribution), so that a fleet can generate fixes from stored reports and a live run gives the
same script as its JSON report would.  A step is one of a few primitives (a file written whole, a line
commented out, a guarded command, a group membership, a service, packages, kernel arguments, a manual
instruction); kvmcheck.tools.fix renders them as POSIX sh or as an Ansible task list.

Nothing from the host's files reaches a command unvalidated: names (users, groups, modules, packages, units,
kernel arguments, paths) are matched against strict patterns, and a value that does not match turns the step
into a manual one that quotes it in a comment (sanitized to one printable line).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from kvmcheck.core.record import Record
from kvmcheck.core.model import PENDING_KINDS

# What a step costs the host, least disruptive first (the summary at the end of a script groups by it).
IMPACTS: Tuple[str, ...] = ("runtime", "service-restart", "relogin", "reboot", "power-cycle", "manual")

# Strict patterns for every value that reaches a command (fullmatch).
USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
MODULE = re.compile(r"[a-z0-9_]{1,56}")  # module names as the kernel prints them (modprobe maps - to _)
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+._-]{0,99}")  # Debian policy 5.6.1, RPM names likewise
UNIT = re.compile(r"[a-z0-9][a-z0-9@._-]{0,99}\.(service|socket)")
KERNEL_ARG = re.compile(r"[a-z0-9_.-]{1,64}(=[A-Za-z0-9_.,:-]{1,64})?")
PATH = re.compile(r"/(?:[A-Za-z0-9_.+@-]+/)*[A-Za-z0-9_.+@-]+")
MODPROBE_ETC = re.compile(r"/etc/modprobe\.d/[A-Za-z0-9_.+@-]+\.conf")

# Drop-ins are written whole under a name that sorts after the distribution's and the operator's files:
# modprobe.d(5) and sysctl.d(5) apply files in lexical order and the last setting wins.
MARKER = "# Written by kvmcheck fix ({check}); kvmcheck owns this file: edits are overwritten."
QEMU_USERS = ("libvirt-qemu", "qemu")


class Step(Record):
    """One change.  kind says how it is rendered; args are validated values (see the module's docstring).

    kinds: file (path, lines, mode); comment-out (path, regex, check id) comments out the lines
    that match; run (commands, guard argv whose exit 0 means done or None, soft: a failure is reported, not
    fatal); group (user, group, units to restart after a change); service (unit); packages (manager, names);
    kernel-args (tool, add, remove, check id); manual (what says it)."""

    kind: str
    what: str  # one line for the comment above the step
    impact: str
    args: Tuple[Any, ...] = ()


class Remedy(Record):
    """The steps for one result, and why (the finding, or why kvmcheck leaves it to a person)."""

    check_id: str
    status: str
    summary: str
    steps: Tuple[Step, ...]
    note: str = ""  # "follows from kvm.consumer: fixed there", "pending reboot: ..."
    pending: Optional[str] = None


class HostInfo(Record):
    """What the remedies need to know about the host, from the report's host block."""

    family: Optional[str]  # debian, ubuntu, rhel, suse, arch or None
    os_id: str
    label: str  # for the header: hostname or root, os name and version
    boot_tool: Optional[str]  # grubby, grub-dropin, kernelstub or None (manual)
    package_manager: Optional[str]  # apt-get, dnf, zypper or None


def host_info(report: Dict[str, Any]) -> HostInfo:
    from kvmcheck.facts.system import family_of

    host = report.get("host") or {}
    os_block = host.get("os") if isinstance(host.get("os"), dict) else {}
    family = family_of({k: str(v) for k, v in os_block.items() if isinstance(v, str)}) if os_block else None
    os_id = str(os_block.get("id") or "")
    name = " ".join(str(os_block.get(k) or "") for k in ("name", "version")).strip() or "unknown system"
    where = host.get("hostname") or host.get("root") or "this host"
    # The tool that changes the kernel command line for the next boot, by distribution: grubby edits every
    # BLS entry on the RHEL family; Debian and Ubuntu's grub-mkconfig sources /etc/default/grub.d/*.cfg;
    # Pop!_OS boots with systemd-boot through kernelstub.  Others (SUSE, Arch, systemd-boot elsewhere): by hand.
    boot_tool = ("kernelstub" if os_id == "pop" else "grubby" if family == "rhel" else
                 "grub-dropin" if family in ("debian", "ubuntu") else None)
    manager = {"debian": "apt-get", "ubuntu": "apt-get", "rhel": "dnf", "suse": "zypper"}.get(family or "")
    return HostInfo(family, os_id, one_line(f"{where} ({name})"), boot_tool, manager)


def one_line(text: Any, limit: int = 2000) -> str:
    """text on one printable line: it may quote a hostile file, and goes into comments of a script."""
    return "".join(ch if ch.isprintable() else "?" for ch in " ".join(str(text).split()))[:limit]


def valid(pattern: "re.Pattern[str]", value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def manual(text: str, impact: str = "manual") -> Step:
    return Step("manual", one_line(text), impact)


# -- building blocks -----------------------------------------------------------------------------------------
def drop_in(path: str, check_id: str, lines: Sequence[str], what: str, impact: str) -> Step:
    return Step("file", what, impact, (path, (MARKER.format(check=check_id),) + tuple(lines), "0644"))


def load_module(module: str) -> Step:
    """modprobe MODULE unless it is loaded; a refusal (no VT, a blacklist elsewhere) is reported, not fatal."""
    return Step("run", f"load {module} now", "runtime",
                ((("modprobe", module),), ("test", "-d", f"/sys/module/{module}"), True))


def reload_module(module: str, param: str, values: str) -> Step:
    """Reload MODULE so that modprobe.d's options apply, unless PARAM already holds one of values."""
    return Step("run", f"reload {module} so that its new options apply (no guest may be running; else reboot)",
                "runtime", ((("modprobe", "-r", module), ("modprobe", module)),
                            ("grep", "-qxE", values, f"/sys/module/{module}/parameters/{param}"), True))


def join_group(user: str, group: str, impact: str, restart: Tuple[str, ...] = ()) -> Step:
    """usermod -aG unless the user is in the group; restart: units to restart when it was not (a daemon that
    starts processes as the user hands them its groups only from its next start)."""
    then = f", then restart {', '.join(restart)}" if restart else ""
    return Step("group", f"add {user} to the {group} group{then}", impact, (user, group, restart))


def kernel_args(host: HostInfo, check_id: str, add: Sequence[str], remove: Sequence[str] = ()) -> Step:
    words = " ".join(list(add) + [f"without {r}" for r in remove])
    if not all(valid(KERNEL_ARG, a) for a in list(add) + list(remove)):
        return manual(f"kernel command line: {words} (a value kvmcheck does not pass to a command)", "reboot")
    if host.boot_tool is None:
        return manual(f"kernel command line for the next boot: {words}, with this host's boot loader "
                      "(GRUB: /etc/default/grub GRUB_CMDLINE_LINUX, then grub2-mkconfig -o /boot/grub2/grub.cfg; "
                      "systemd-boot: /etc/kernel/cmdline, then reinstall the kernel entries), then reboot", "reboot")
    return Step("kernel-args", f"kernel command line for the next boot: {words}", "reboot",
                (host.boot_tool, tuple(add), tuple(remove), check_id))


def install(host: HostInfo, names: Sequence[str], what: str) -> Step:
    bad = [n for n in names if not valid(PACKAGE, n)]
    if bad or not host.package_manager or not names:
        return manual(f"{what}: install {' '.join(names)} with the distribution's package manager")
    return Step("packages", what, "runtime", (host.package_manager, tuple(names)))


# -- remedies by check -----------------------------------------------------------------------------------------
Builder = Callable[[Dict[str, Any], HostInfo, Dict[str, Dict[str, Any]]], List[Step]]
REMEDIES: Dict[str, Builder] = {}
# Checks whose passing result still has an optional change to offer when named exactly with --only.
OPT_IN = ("kvm.nested",)


def remedy(check_id: str) -> Callable[[Builder], Builder]:
    def wrap(func: Builder) -> Builder:
        REMEDIES[check_id] = func
        return func
    return wrap


def _ev(result: Dict[str, Any]) -> Dict[str, Any]:
    ev = result.get("evidence")
    return ev if isinstance(ev, dict) else {}


@remedy("kvm.nested")
def _nested(result, host, results) -> List[Step]:
    ev = _ev(result)
    module = ev.get("module")
    if ev.get("family") == "arm64":
        return [kernel_args(host, "kvm.nested", ["kvm-arm.mode=nested"])]
    if not valid(MODULE, module) or module not in ("kvm_intel", "kvm_amd", "kvm_hv"):
        return [manual("set the vendor module's nested=1 in /etc/modprobe.d, then reload it")]
    if str(ev.get("value", "")).upper() in ("Y", "1"):
        return []
    steps = [drop_in(f"/etc/modprobe.d/zz-kvmcheck-nested-{module}.conf", "kvm.nested",
                     [f"options {module} nested=1"], f"enable nested virtualization in {module} at its next load",
                     "runtime")]
    return steps + [reload_module(module, "nested", "Y|y|1")]


@remedy("kvm.modules")
def _modules(result, host, results) -> List[Step]:
    ev = _ev(result)
    present = ev.get("present") if isinstance(ev.get("present"), dict) else None
    expected = [m for m in ev.get("expected") or [] if isinstance(m, str)]
    if present is None:  # an offline root without /sys/module: what is installed is missing
        return [manual("install the distribution's full kernel package (kernel-modules, linux-modules-extra): "
                       "the installed kernel lacks the KVM modules")]
    missing = [m for m in expected if m not in present]
    if not missing or not all(valid(MODULE, m) for m in missing):
        return [manual(result.get("remediation") or "load the KVM modules")]
    return [load_module(missing[-1])]  # the vendor module pulls in kvm


BLOCK_LINE = re.compile(r"(?P<path>/[^:]+):(?P<line>[0-9]+): (?P<how>blacklist|install) (?P<module>[A-Za-z0-9_-]+)")


@remedy("kernel.modules-blacklist")
def _blacklist(result, host, results) -> List[Step]:
    steps: List[Step] = []
    loads: List[str] = []
    for entry in _ev(result).get("blocked_by") or []:
        found = BLOCK_LINE.match(str(entry))
        module = found.group("module").replace("-", "_") if found else ""
        if not found or not valid(MODPROBE_ETC, found.group("path")) or not valid(MODULE, module):
            steps.append(manual(f"remove {entry} (on the kernel command line: edit the boot loader's "
                                "configuration; a /usr/lib/modprobe.d file: override it with an edited copy "
                                "of the same name in /etc/modprobe.d)"))
            continue
        # modprobe.d(5) allows '-' for '_' in names and any blanks between words: match both.
        name = module.replace("_", "[-_]")
        regex = (f"^[[:space:]]*blacklist[[:space:]]+{name}[[:space:]]*$" if found.group("how") == "blacklist" else
                 f"^[[:space:]]*install[[:space:]]+{name}([[:space:]].*)?$")
        steps.append(Step("comment-out", f"comment out '{found.group('how')} {module}' in {found.group('path')}",
                          "runtime", (found.group("path"), regex, "kernel.modules-blacklist")))
        if module not in loads:
            loads.append(module)
    return steps + [load_module(m) for m in loads]


def _net_module(module: str) -> Builder:
    def build(result, host, results) -> List[Step]:
        driver = str(_ev(result).get("driver") or "")
        if driver.startswith("installed") or driver == "":
            blocked = any(module in str(b) for b in _ev(results.get("kernel.modules-blacklist", {})).get(
                "blocked_by") or [])
            if driver == "" and not blocked:
                return [manual(f"install a kernel that has the {module} module (the distribution's full kernel "
                               f"modules package), then 'modprobe {module}'")]
            return [load_module(module)]
        return [manual(result.get("remediation") or f"modprobe {module}")]
    return build


remedy("network.vhost-net")(_net_module("vhost_net"))
remedy("network.tun")(_net_module("tun"))

UDEV_RULE = 'KERNEL=="kvm", GROUP="kvm", MODE="0660"'


def _give_kvm_to_group(host: HostInfo, ev: Dict[str, Any]) -> List[Step]:
    """/dev/kvm to the kvm group, mode 0660: at boot (a udev rule) and now."""
    steps: List[Step] = []
    if ev.get("kvm_group_exists") is False:
        steps.append(Step("run", "create the kvm group", "runtime",
                          ((("groupadd", "--system", "kvm"),), ("grep", "-q", "^kvm:", "/etc/group"), False)))
    steps.append(drop_in("/etc/udev/rules.d/65-kvm.rules", "kvm.device", [UDEV_RULE],
                         "give /dev/kvm to the kvm group at every boot (udev)", "runtime"))
    steps.append(Step("run", "give /dev/kvm to the kvm group now", "runtime",
                      ((("chgrp", "kvm", "/dev/kvm"), ("chmod", "0660", "/dev/kvm")),
                       ("sh", "-c", '[ ! -e /dev/kvm ] || [ "$(stat -c %G:%a /dev/kvm)" = kvm:660 ]'), False)))
    return steps


def _users(names: Any) -> Tuple[List[str], List[str]]:
    """(valid user names, the others) of a list from the evidence."""
    names = [n for n in names or [] if isinstance(n, str)]
    return [n for n in names if valid(USER, n)], [n for n in names if not valid(USER, n)]


@remedy("kvm.device")
def _device(result, host, results) -> List[Step]:
    ev = _ev(result)
    if "locked_out" not in ev:
        return [manual(result.get("remediation") or "see kvm.modules")]
    group = ev.get("group")
    steps: List[Step] = []
    if not (ev.get("group_rw") and valid(USER, group) and group != "root"):
        steps += _give_kvm_to_group(host, ev)
        group = "kvm"
    users, bad = _users(ev.get("locked_out_login"))
    qemu, bad_qemu = _users(ev.get("locked_out_qemu"))
    steps += [join_group(u, group, "relogin") for u in users]
    steps += [join_group(u, group, "service-restart", tuple(_libvirt_units(results))) for u in qemu]
    steps += [manual(f"add the user {one_line(u)!r} to the {group} group (a name kvmcheck does not pass to "
                     "usermod)") for u in bad + bad_qemu]
    return steps


def _libvirt_units(results: Dict[str, Dict[str, Any]]) -> List[str]:
    daemons = _ev(results.get("libvirt.layout", {})).get("daemon") or []
    return ["virtqemud.service" if "virtqemud" in daemons else "libvirtd.service"]


@remedy("kvm.consumer")
def _consumer(result, host, results) -> List[Step]:
    ev = _ev(result)
    user = ev.get("user")
    if not valid(USER, user):
        return [manual(result.get("remediation") or "see the finding")]
    kvm = (ev.get("devices") or {}).get("/dev/kvm") or {}
    group = kvm.get("group")
    steps: List[Step] = []
    if kvm.get("present") and not (valid(USER, group) and group != "root" and int(str(kvm.get("mode") or "0"), 8)
                                   & 0o060 == 0o060):
        steps += _give_kvm_to_group(host, {"kvm_group_exists": True})
        group = "kvm"
    if not valid(USER, group) or group == "root":
        group = "kvm"
    # QEMU's user takes its groups when libvirt starts QEMU: restart the daemon (running guests keep going).
    steps.append(join_group(user, group, "service-restart", tuple(_libvirt_units(results))))
    return steps


IOMMU_OFF = ("intel_iommu=off", "amd_iommu=off", "iommu=off")


@remedy("iommu.enabled")
def _iommu(result, host, results) -> List[Step]:
    ev = _ev(result)
    if ev.get("in_guest"):
        return [manual("give this VM a virtual IOMMU (libvirt: <iommu model='intel'/> with the q35 machine)")]
    if ev.get("firmware_table_present") is False or ev.get("shared_groups"):
        return [manual(result.get("remediation") or "see the finding", "power-cycle"
                       if ev.get("firmware_table_present") is False else "manual")]
    disabled = ev.get("disabled_by")
    remove = [disabled] if disabled in IOMMU_OFF else []
    intel = ev.get("vendor_id") == "GenuineIntel"
    options = ev.get("options") if isinstance(ev.get("options"), dict) else {}
    add = ["intel_iommu=on"] if intel and not options.get("intel_iommu") else []
    if not add and not remove:
        return [manual(result.get("remediation") or "see the finding")]
    return [kernel_args(host, "iommu.enabled", add, remove)]


@remedy("packages.virt")
def _packages(result, host, results) -> List[Step]:
    command = str(_ev(result).get("install_command") or "")
    words = command.split()
    if "install" not in words:
        return [manual(result.get("remediation") or "install the KVM packages")]
    names = [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return [install(host, names, "install the missing KVM packages")]


LIBVIRT_PACKAGE = {"apt-get": "libvirt-daemon-system", "dnf": "libvirt", "zypper": "libvirt"}
MISSING = re.compile(r"(?P<path>/\S+): missing")


@remedy("libvirt.layout")
def _layout(result, host, results) -> List[Step]:
    ev = _ev(result)
    if not ev.get("etc") and not ev.get("binaries"):  # libvirt is not installed
        name = LIBVIRT_PACKAGE.get(host.package_manager or "")
        return [install(host, [name] if name else [], "install libvirt")]
    steps: List[Step] = []
    missing = [m.group("path") for p in ev.get("problems") or [] for m in [MISSING.fullmatch(str(p))] if m]
    paths = [p for p in missing if valid(PATH, p)]
    name = LIBVIRT_PACKAGE.get(host.package_manager or "")
    if paths and name:
        reinstall = {"apt-get": ("apt-get", "install", "-y", "--reinstall", "libvirt-daemon-system"),
                     "dnf": ("dnf", "-y", "reinstall", "libvirt-daemon"),
                     "zypper": ("zypper", "--non-interactive", "install", "--force", "libvirt-daemon")}[
            host.package_manager or ""]
        steps.append(Step("run", "reinstall the libvirt daemon package to restore " + ", ".join(paths), "runtime",
                          ((reinstall,), ("sh", "-c", 'for p; do [ -e "$p" ] || exit 1; done', "sh") + tuple(paths),
                           False)))
    daemons = [d for d in ev.get("daemon") or [] if d in ("libvirtd", "virtqemud")]
    if daemons and not ev.get("masked") and (not ev.get("enabled") or not ev.get("sockets")):
        # Not enabled, or enabled and not running (no socket in /run/libvirt): the steps after this one (the
        # default network's virsh) need the daemon.  The units the check's remedy names: libvirtd's service
        # (monolithic), virtqemud's socket (modular: the socket starts the daemon on the first connection).
        unit = "virtqemud.socket" if daemons[0] == "virtqemud" else "libvirtd.service"
        steps.append(Step("service", f"enable and start {unit}", "runtime", (unit,)))
    if not steps:
        steps.append(manual(result.get("remediation") or "see the finding"))
    return steps


NETDIR = "/etc/libvirt/qemu/networks"


def _default_network(ev: Dict[str, Any]) -> List[Step]:
    steps: List[Step] = []
    if not ev.get("defined"):
        steps.append(Step("run", "define libvirt's default network from the shipped definition", "runtime",
                          ((("virsh", "net-define", "/usr/share/libvirt/networks/default.xml"),),
                           ("test", "-e", f"{NETDIR}/default.xml"), False)))
    if not ev.get("autostart"):
        steps.append(Step("run", "start the default network at boot", "runtime",
                          ((("virsh", "net-autostart", "default"),), ("test", "-e", f"{NETDIR}/autostart/default.xml"),
                           False)))
    if not ev.get("active"):
        # libvirt keeps the state of each running network in /run/libvirt/network (both daemon layouts).
        steps.append(Step("run", "start the default network now", "runtime",
                          ((("virsh", "net-start", "default"),), ("test", "-e", "/run/libvirt/network/default.xml"),
                           False)))
    return steps


@remedy("network.default-nat")
def _nat(result, host, results) -> List[Step]:
    ev = _ev(result)
    if ev.get("collisions") or ("cannot parse" in str(result.get("summary"))):
        return [manual(result.get("remediation") or "see the finding")]
    return _default_network(ev) or [manual(result.get("remediation") or "see the finding")]


@remedy("memory.overcommit")
def _overcommit(result, host, results) -> List[Step]:
    if str(_ev(result).get("mode")) != "2" and str(_ev(result).get("configured")) != "2":
        return [manual(result.get("remediation") or "see the finding")]
    return [
        manual("strict accounting may be a deliberate policy: if so, skip this finding (--skip memory.overcommit) "
               "and raise vm.overcommit_ratio instead"),
        drop_in("/etc/sysctl.d/zz-kvmcheck-overcommit.conf", "memory.overcommit", ["vm.overcommit_memory = 0"],
                "heuristic overcommit at every boot (sysctl.d)", "runtime"),
        Step("run", "heuristic overcommit now", "runtime",
             ((("sysctl", "-w", "vm.overcommit_memory=0"),), ("grep", "-qx", "0", "/proc/sys/vm/overcommit_memory"),
              False)),
    ]


@remedy("memory.hugepages")
def _hugepages(result, host, results) -> List[Step]:
    if _ev(result).get("thp") != "never":
        return [manual(result.get("remediation") or "see the finding")]
    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    return [Step("run", "transparent huge pages on request (madvise) now", "runtime",
                 ((("sh", "-c", f"echo madvise > {thp}"),), ("grep", "-qF", "[madvise]", thp), False)),
            kernel_args(host, "memory.hugepages", ["transparent_hugepage=madvise"])]


FIRMWARE = ("firmware.vt-enabled",)


def pending_steps(result: Dict[str, Any], host: HostInfo, results: Dict[str, Dict[str, Any]]) -> List[Step]:
    """The step that makes a configured change effective: never the configuration again."""
    kind = result.get("pending")
    note = one_line(result.get("pending_note") or "")
    ev = _ev(result)
    if kind == "module-reload":
        module, param = ev.get("module"), ev.get("parameter")
        if valid(MODULE, module) and valid(PATH, param) and str(param).startswith(f"/sys/module/{module}/parameters/"):
            return [Step("run", f"reload {module} so that its configured options apply (no guest may be running; "
                         "else reboot)", "runtime", ((("modprobe", "-r", module), ("modprobe", module)), None, True))]
        return [manual(note or "reload the module (or reboot)", "reboot")]
    if kind == "regenerate-bootloader":
        regenerate = {"grubby": None, "grub-dropin": ("update-grub",), "kernelstub": None}.get(host.boot_tool or "")
        if host.family in ("rhel", "suse"):
            regenerate = ("grub2-mkconfig", "-o", "/boot/grub2/grub.cfg")
        if regenerate:
            return [Step("run", "regenerate the boot loader's configuration", "reboot",
                         ((regenerate,), None, False)), manual("reboot to boot with it", "reboot")]
        return [manual(note or "regenerate the boot loader's configuration, then reboot", "reboot")]
    if kind == "service-restart":
        return [Step("run", f"restart {unit}", "service-restart", ((("systemctl", "try-restart", unit),), None, False))
                for unit in _libvirt_units(results)]
    if kind in ("reboot", "power-cycle", "relogin"):
        words = {"reboot": "reboot", "power-cycle": "power the machine off and on (a reset keeps the old firmware "
                 "state)", "relogin": "log out and in again (or restart the services that run as the user)"}[kind]
        return [manual(f"{words}: {note}" if note else words, kind)]
    return [manual(note or "see the finding")]


def remedies(report: Dict[str, Any], selected: Sequence[str], opted_in: Sequence[str] = ()) -> List[Remedy]:
    """A Remedy for each selected result that is a finding (warn, fail) or has a pending change, in the
    report's order; opted_in: passing results whose optional change was asked for by name (OPT_IN)."""
    host = host_info(report)
    results = {r.get("id"): r for r in report.get("checks") or [] if isinstance(r, dict)}
    chosen = [r for r in report.get("checks") or [] if isinstance(r, dict) and r.get("id") in selected]
    findings = {r.get("id") for r in chosen if r.get("status") in ("fail", "warn")}
    out: List[Remedy] = []
    done: set = set()  # steps already taken for an earlier finding
    for r in chosen:
        check_id, status = str(r.get("id")), str(r.get("status"))
        pending = r.get("pending") if r.get("pending") in PENDING_KINDS else None
        wanted = status in ("fail", "warn") or pending or (check_id in opted_in and check_id in OPT_IN)
        if not wanted:
            continue
        summary = one_line(r.get("summary") or "", 400)
        if r.get("ignored"):
            out.append(Remedy(check_id, status, summary, (), "ignored by the configuration: left as it is"))
            continue
        if pending:
            out.append(Remedy(check_id, status, summary, tuple(pending_steps(r, host, results)),
                              f"configured, not yet in effect ({pending}): {one_line(r.get('pending_note') or '')}",
                              pending))
            continue
        causes = [c for c in r.get("caused_by") or [] if c in findings]
        build = REMEDIES.get(check_id)
        # A finding that follows from another is fixed there, unless both have steps of their own (kvm.device
        # follows from kvm.consumer, and also locks out login users that kvm.consumer does not name).
        if causes and (build is None or not any(c in REMEDIES for c in causes)):
            out.append(Remedy(check_id, status, summary, (), f"follows from {', '.join(causes)}: fixed there"))
            continue
        if build is not None:
            steps = build(r, host, results)
        else:
            impact = "power-cycle" if check_id in FIRMWARE else "manual"
            steps = [manual(r.get("remediation") or "see 'kvmcheck explain " + check_id + "'", impact)]
        fresh = [s for s in steps if s.kind == "manual" or s not in done]
        done.update(steps)
        note = f"also follows from {', '.join(causes)}" if causes else ""
        if len(fresh) < len(steps):
            note += ("; " if note else "") + "some steps are taken above already"
        out.append(Remedy(check_id, status, summary, tuple(fresh), note))
    return out
