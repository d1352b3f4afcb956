# SPDX-License-Identifier: GPL-2.0-or-later
"""The run's settings: thresholds and switches from the command line, the configuration and the profile.

Precedence is explicit, strongest first (LAYERS): the command line (or the keyword arguments of
kvmcheck.run), the configuration file (with its extends chain), the profile (--profile), the defaults.
Each layer holds only the values it was given, so a value typed on the command line wins even when it
equals the default (``--timeout 5`` with a file that says 10 runs with 5); nothing is guessed by comparing
a value with its default.  The resolved Settings says where each value came from (``source``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

COMMAND_LINE, CONFIG_FILE, PROFILE, DEFAULT = "command line", "config file", "profile", "default"
LAYERS = (COMMAND_LINE, CONFIG_FILE, PROFILE, DEFAULT)  # strongest first


@dataclass(init=False)
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

    def __init__(self, **given: Any) -> None:
        """Settings(name=value, ...): the fields given are this object's explicit values (``given``), the
        others keep their defaults."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise TypeError(f"Settings() got unknown settings: {', '.join(unknown)}")
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, given.get(f.name, f.default))
        object.__setattr__(self, "_given", frozenset(given))
        object.__setattr__(self, "_sources", {name: COMMAND_LINE for name in given})

    def __setattr__(self, name: str, value: Any) -> None:
        """A field set after construction (s.min_kernel = "5.0") is given too: the caller chose it."""
        object.__setattr__(self, name, value)
        if not name.startswith("_"):
            object.__setattr__(self, "_given", self._given | {name})
            self._sources[name] = COMMAND_LINE

    def given(self) -> Dict[str, Any]:
        """The values this object was made with (not its defaults): a caller's explicit choices."""
        return {name: getattr(self, name) for name in sorted(self._given)}

    def source(self, name: str) -> str:
        """Where the value of field name came from: one of LAYERS."""
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(name)
        return self._sources.get(name, DEFAULT)

    @classmethod
    def layered(cls, command_line: Optional[Mapping[str, Any]] = None, config_file: Optional[Mapping[str, Any]] = None,
                profile: Optional[Mapping[str, Any]] = None) -> "Settings":
        """The settings of a run from its layers (each holds only the values it sets): command line over
        config file over profile over the defaults, with the source of each value recorded."""
        values: Dict[str, Any] = {}
        sources: Dict[str, str] = {}
        for layer, given in ((PROFILE, profile), (CONFIG_FILE, config_file), (COMMAND_LINE, command_line)):
            for name, value in (given or {}).items():
                values[name], sources[name] = value, layer
        settings = cls(**values)
        object.__setattr__(settings, "_sources", sources)
        return settings
