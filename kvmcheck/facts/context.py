# SPDX-License-Identifier: GPL-2.0-or-later
"""The Context: what a plugin check written as ``def my_check(ctx)`` is handed (docs/plugins.md).

Built-in checks name their facts as parameters instead (kvmcheck.facts) and never see the Host; a plugin
check of one parameter named ``ctx`` still gets the Host (``ctx.host``), the settings, and the shared facts
through the methods below, computed once per run for every check.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Optional, Tuple

from kvmcheck.core.host import Host
from kvmcheck.core.settings import Settings
from kvmcheck.facts import Facts
from kvmcheck.facts.system import (  # noqa: F401 - the names plugins import from kvmcheck.context
    DMI_FIELDS, KVM_MODULES, MOUNT_TABLES, OFFLINE_LOGS, arch_family, arch_from_cpuinfo, cpu_arch_from_cpuinfo,
    is_name, module_state, quoted)

if TYPE_CHECKING:  # pragma: no cover
    from kvmcheck.parsers.cmdline import KernelCmdline
    from kvmcheck.parsers.container import ContainerFacts
    from kvmcheck.parsers.cpuinfo import CpuInfo
    from kvmcheck.parsers.hypervisor import VirtFacts
    from kvmcheck.parsers.kconfig import KConfig
    from kvmcheck.parsers.kernel_log import KernelLogFacts
    from kvmcheck.parsers.kernel_version import KernelVersion
    from kvmcheck.parsers.mounts import Mount


class Context:
    def __init__(self, host: Host, settings: Optional[Settings] = None, facts: Optional[Facts] = None) -> None:
        self.facts = facts or Facts(host, settings or Settings())
        self.host = host
        self.settings = self.facts.settings

    def cpuinfo(self) -> Optional["CpuInfo"]:
        return self.facts.get("cpuinfo")

    def arch(self) -> Tuple[Optional[str], str]:
        return tuple(self.facts.get("arch"))  # type: ignore[return-value]

    def cpu_arch(self) -> Optional[str]:
        return self.facts.get("cpu_arch")

    def family(self) -> str:
        return self.facts.get("family")

    def x86_flags_first_cpu(self) -> FrozenSet[str]:
        return self.facts.get("x86_flags_first_cpu")

    def in_guest(self) -> bool:
        return self.virt().in_guest

    def osrelease_text(self) -> Optional[str]:
        return self.facts.get("osrelease_text")

    def osrelease(self) -> Optional[str]:
        return self.facts.get("osrelease")

    def kernel_version(self) -> Optional["KernelVersion"]:
        return self.facts.get("kernel_version")

    def cmdline(self) -> Optional["KernelCmdline"]:
        return self.facts.get("cmdline")

    def kernel_config(self) -> Tuple[Optional["KConfig"], Optional[str], List[str]]:
        found = self.facts.get("kernel_config")
        return found.config, found.path, list(found.notes)

    def kernel_log(self) -> Tuple["KernelLogFacts", List[str]]:
        found = self.facts.get("kernel_log")
        return found.facts, list(found.sources)

    def module_state(self, name: str) -> Optional[str]:
        return module_state(self.host, name)

    def modules(self) -> Dict[str, str]:
        return self.facts.get("modules")

    def mounts(self) -> Tuple[Optional[str], List["Mount"]]:
        table = self.facts.get("mounts")
        return table.path, list(table.entries)

    def mount_table_problems(self) -> List[str]:
        return list(self.facts.get("mounts").problems)

    def cpuid(self, leaf: int, subleaf: int = 0) -> Optional[Tuple[int, int, int, int]]:
        return self.facts.get("cpuid").get((leaf, subleaf))

    def virt(self) -> "VirtFacts":
        return self.facts.get("virt")

    def os_name(self) -> Optional[Dict[str, str]]:
        return self.facts.get("os_name")

    def distro_family(self) -> Optional[str]:
        return self.facts.get("distro_family")

    def cpu_model(self) -> Tuple[Optional[str], Optional[str]]:
        return self.facts.get("cpu_model")

    def container(self) -> "ContainerFacts":
        return self.facts.get("container")

    def host_facts(self) -> Dict[str, Any]:
        return self.facts.get("host_block")


__all__ = ["Context", "Settings", "is_name", "quoted", "arch_family"]
