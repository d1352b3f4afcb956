# SPDX-License-Identifier: GPL-2.0-or-later
"""The run's settings: thresholds and switches from the command line, the configuration and the profile."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass
class Settings:
    min_kernel: str = "2.6.20"  # the first release with KVM (February 2007)
    check_timeout: float = 5.0
    online: bool = False  # --online: checks may reach the network (repository URLs)
    images_min_free_gib: float = 20.0  # storage.images-dir warns below this
    # capacity.resources: the host's floor, and the guest size used to count how many fit
    min_host_cpus: int = 2
    min_host_memory_gib: float = 2.0
    guest_vcpus: int = 2
    guest_memory_gib: float = 2.0
    host_reserve_gib: float = 1.0  # kept back for the host: the larger of this and host_reserve_percent
    host_reserve_percent: float = 10.0
    # From the configuration's [require] and [accept] tables (kvmcheck.core.config)
    required_shared_storage: Tuple[str, ...] = ()  # storage.shared fails unless one of these types is there
    required_packages: Tuple[str, ...] = ()  # packages.virt fails unless all are installed
    required_repos: Tuple[str, ...] = ()  # repos.configured fails unless each matches an enabled source
    accept_software_kvm: bool = False  # cpu.virt-flags: KVM through PVM (kvm_pvm) passes
