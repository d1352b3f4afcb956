# SPDX-License-Identifier: GPL-2.0-or-later
"""What confidential guests depend on: kvm_amd's SEV and kvm_intel's TDX parameters, the AMD Secure
Processor's /dev/sev and the SEV ASIDs of the misc cgroup, and the s390 Ultravisor."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from kvmcheck.core.record import Record
from kvmcheck.facts import Later, Readout, fact, read

SEV_PARAMS = ("sev", "sev_es", "sev_snp")
MISC_CAPACITY = "/sys/fs/cgroup/misc.capacity"
UV = "/sys/firmware/uv"


def _param_path(module: str, name: str) -> str:
    return f"/sys/module/{module}/parameters/{name}"


class ModuleParams(Record):
    """Parameters of one module, each as read from /sys/module/MODULE/parameters/NAME."""

    module: str
    readouts: Dict[str, Readout]

    def value(self, name: str) -> Optional[str]:
        """The parameter's first line; None when it is absent or could not be read (see unreadable())."""
        found = self.readouts.get(name)
        if found is None or not found.ok or found.text is None:
            return None
        return found.text.split("\n", 1)[0].strip()

    def unreadable(self, name: str) -> Optional[Readout]:
        """The parameter's Readout when the file is there but could not be read (denied, unreadable)."""
        found = self.readouts.get(name)
        return found if found is not None and found.state in ("denied", "unreadable") else None


def _params(host, module: str, names: Tuple[str, ...]) -> ModuleParams:
    return ModuleParams(module, {name: read(host, _param_path(module, name), limit=4096) for name in names})


@fact(reads=tuple(_param_path("kvm_amd", p) for p in SEV_PARAMS))
def sev_params(host) -> ModuleParams:
    """kvm_amd's sev, sev_es and sev_snp parameters (Y/N, or 1/0 on older kernels)."""
    return _params(host, "kvm_amd", SEV_PARAMS)


@fact(reads=(_param_path("kvm_intel", "tdx"),))
def tdx_param(host) -> ModuleParams:
    """kvm_intel's tdx parameter (Linux >= 6.16)."""
    return _params(host, "kvm_intel", ("tdx",))


class SevHost(Record):
    dev_sev: bool  # /dev/sev, the AMD Secure Processor's interface that launches SEV guests
    misc_capacity: Optional[str]  # /sys/fs/cgroup/misc.capacity; None when absent


@fact(reads=("/dev/sev", MISC_CAPACITY))
def sev_host(host) -> Later:
    """Later (AMD hosts only): /dev/sev and the misc cgroup's capacity.  An unreadable misc.capacity
    propagates its OSError, as the check always let it (the runner names the file)."""
    return Later(lambda: SevHost(host.exists("/dev/sev"), host.read_optional(MISC_CAPACITY)))


class Ultravisor(Record):
    present: bool  # /sys/firmware/uv: the kernel supports the s390 Ultravisor
    prot_virt_host: Readout  # /sys/firmware/uv/prot_virt_host: "1" when the kernel is a protected-virtualization host


@fact(reads=(UV, f"{UV}/prot_virt_host"))
def ultravisor(host) -> Ultravisor:
    return Ultravisor(host.is_dir(UV), read(host, f"{UV}/prot_virt_host", limit=4096))
