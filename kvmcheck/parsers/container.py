# SPDX-License-Identifier: GPL-2.0-or-later
"""Whether a process runs in a container, and which runtime made it, from what the runtime cannot leave
behind in an image: PID 1's cgroup path and the mount table (the root's file system and the files the
runtime bind-mounts over /etc/hostname, /etc/hosts and /etc/resolv.conf).

A marker file alone (/.dockerenv, /run/.containerenv) is not evidence: an image built with 'docker
export' or a VM image made from a container file system keeps it (this project's own build machine, a
Firecracker microVM, has an empty /.dockerenv, and systemd-detect-virt wrongly says docker there).
"""
from __future__ import annotations

import re
from typing import List, Optional, Sequence

from kvmcheck.core.record import Record
from kvmcheck.parsers import pattern

# Runtime names by what they write into cgroup paths and mount sources, most specific first: a
# Kubernetes pod runs under containerd, CRI-O or docker, and is reported as kubernetes.
_PATTERNS = (
    ("kubernetes", pattern(r"kubepods|/var/lib/kubelet/pods/")),
    ("podman", pattern(r"libpod|/containers/storage/")),
    ("docker", pattern(r"/docker[/-]|/var/lib/docker/")),
    ("cri-o", pattern(r"crio-")),
    ("containerd", pattern(r"containerd")),
    ("lxc", pattern(r"/lxc[./]|lxc\.payload|/var/lib/lxc/")),
    ("systemd-nspawn", pattern(r"/machine\.slice/systemd-nspawn|/var/lib/machines/")),
)
_BIND_TARGETS = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


class ContainerFacts(Record):
    runtime: Optional[str]  # None: not in a container (or no evidence of one)
    evidence: List[str]  # what decided it, in words
    markers: List[str]  # marker files seen (not evidence on their own)
    looked: bool = True  # False: neither PID 1's cgroup nor the mount table was there to look at


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _shown(text: str) -> str:
    """Text from the mount table or a cgroup file as evidence: control characters replaced, cut short."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:160]


def _runtime_in(text: str) -> Optional[str]:
    return next((name for name, pattern in _PATTERNS if pattern.search(text)), None)


def detect_container(pid1_cgroup: Optional[str], mountinfo: Optional[str],
                     markers: Sequence[str] = ()) -> ContainerFacts:
    """The runtime, from PID 1's cgroup path (cgroup v1, or v2 without a cgroup namespace) or from the mount
    table: the root's overlay lower directories and the sources of the runtime's bind mounts over /etc files
    (those stay visible in a cgroup namespace too)."""
    evidence: List[str] = []
    seen: List[str] = []
    for line in (pid1_cgroup or "").splitlines():
        path = line.split(":", 2)[-1]
        found = _runtime_in(path)
        if found:
            seen.append(found)
            evidence.append(f"/proc/1/cgroup: {_shown(line.strip())}")
            break
    binds = 0
    for line in (mountinfo or "").splitlines():
        pre, sep, post = line.partition(" - ")
        fields = pre.split()
        if not sep or len(fields) < 5:
            continue
        root, target = _unescape(fields[3]), _unescape(fields[4])
        post_fields = post.split()
        options = post_fields[2] if len(post_fields) > 2 else ""
        if target == "/" and post_fields and post_fields[0] == "overlay":
            found = _runtime_in(options)
            if found:
                seen.append(found)
                evidence.append(f"the root file system is an overlay of {found}'s image layers")
        elif target in _BIND_TARGETS and root not in ("/", ""):
            binds += 1
            found = _runtime_in(root)
            if found:
                seen.append(found)
            evidence.append(f"{target} is bind-mounted from {_shown(root)}")
    runtime = next((name for name, _ in _PATTERNS if name in seen), None)
    if runtime is None and binds >= 2:
        runtime = "container"  # a runtime this list does not name: the bind mounts are its handwriting
    return ContainerFacts(runtime, evidence if runtime else [], list(markers),
                          looked=pid1_cgroup is not None or mountinfo is not None)
