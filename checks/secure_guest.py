# SPDX-License-Identifier: GPL-2.0-or-later
"""Secure guest checks: confidential computing support (AMD SEV, Intel TDX, IBM Secure Execution).

Confidential guests are optional, so a host without them passes ("not available"),
and a host whose hardware can do it but whose kernel or KVM has it off also
passes, with the state in the summary and the way to turn it on in the detail:
an operator who did not ask for confidential guests should not get a warning.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts.secure_guest import ModuleParams, SevHost, Ultravisor
from kvmcheck.facts.system import quoted

_AMD = ("AuthenticAMD", "HygonGenuine")
SEV_HIDDEN_HINT = (" On EPYC CPUs the kernel hides sme/sev when the firmware leaves memory encryption off (SMEE / "
                   "'SEV control' in the firmware setup).")
NO_SEV = ("The CPU flags list no 'sev', so AMD SEV, SEV-ES and SEV-SNP guests cannot run here. They are "
          "optional; ordinary guests are unaffected.")
SEV_NO_KVM_AMD = ("The CPU offers SEV, but kvm_amd is not loaded, so its sev/sev_es/sev_snp parameters cannot be read. "
                  "See kvm.modules. To use SEV guests, load kvm_amd (modprobe kvm_amd sev=1).")
SEV_NOT_BUILT = ("kvm_amd has no 'sev' parameter: the kernel was built without CONFIG_KVM_AMD_SEV. To run SEV guests, "
                 "use a distribution kernel built with it (all major distributions do).")
SEV_OFF = ("Confidential guests are optional, so this is not a warning. To enable them: "
           "echo 'options kvm_amd sev=1 sev_es=1 sev_snp=1' > /etc/modprobe.d/kvm-sev.conf and reload kvm_amd "
           "(or boot with kvm_amd.sev=1). If sev stays N, the firmware gives SEV no ASIDs or the PSP firmware "
           "did not initialize: enable SEV and set 'SEV-ES ASID space limit' / 'SNP memory coverage' in the "
           "firmware setup, update the firmware, and check 'dmesg | grep -i -e SEV -e ccp'.")
NO_DEV_SEV = ("kvm_amd has sev=Y, but /dev/sev, the interface to the AMD Secure Processor that launches SEV guests, "
              "does not exist: the ccp driver is not loaded or the SEV firmware failed to initialize. Load ccp "
              "(modprobe ccp), update the firmware and the SEV firmware (amd_sev_fam*.sbin in linux-firmware), "
              "and check 'dmesg | grep -i ccp'.")
SEV_READY = ("kvm_amd has sev=Y and /dev/sev exists, so SEV guests can be launched "
             "(libvirt <launchSecurity type='sev'/> or 'sev-snp').")
NO_TDX = ("The CPU flags list no 'tdx_host_platform'. The kernel sets it only when the CPU supports TDX, "
          "the firmware enabled it (TME-MK with TDX key IDs, the SEAM loader) and the kernel was built with "
          "CONFIG_INTEL_TDX_HOST; absent any of these there are no TD guests, which are optional.")
TDX_NO_KVM_INTEL = "kvm_intel is not loaded, so whether KVM can use TDX is unknown; load it with tdx=1"
TDX_NOT_BUILT = ("kvm_intel has no 'tdx' parameter: KVM in this kernel has no TDX support "
                 "(Linux 6.16 or later, or a distribution kernel with the TDX backports, is needed)")
TDX_OFF = ("Confidential guests are optional, so this is not a warning. To enable TD guests: "
           "echo 'options kvm_intel tdx=1' > /etc/modprobe.d/kvm-tdx.conf and reload kvm_intel (or boot with "
           "kvm_intel.tdx=1).")
NO_FACILITIES = ("Older s390 kernels do not list the facilities in /proc/cpuinfo, so facility 158 (Ultravisor) cannot "
                 "be looked for; KVM support for Secure Execution itself needs Linux 5.7 or later.")
NO_FACILITY_158 = ("The facilities list lacks 158 (the Ultravisor call facility): this machine or its firmware level "
                   "does not offer Secure Execution (IBM z15/LinuxONE III and later do).")
NO_UV = ("The machine has facility 158, but the kernel has no Ultravisor support. Use a kernel >= 5.7 built "
         "with CONFIG_KVM (protected virtualization host support), then boot with prot_virt=1.")
PROT_VIRT_OFF = ("Confidential guests are optional, so this is not a warning. To enable them add prot_virt=1 to the "
                 "parameters line in /etc/zipl.conf (or 'zipl -P prot_virt=1' / grubby --args=prot_virt=1), run zipl "
                 "and reboot.")
SE_READY = ("Facility 158, the Ultravisor and prot_virt are in place: secure guests (genprotimg images) "
            "can run.")
NOT_PROBED = ("kvmcheck checks AMD SEV, Intel TDX and IBM Secure Execution; ARM CCA (Realms) and POWER PEF are not "
              "probed yet.")


def _on(value: Optional[str]) -> Optional[bool]:
    """Y/N (bool parameters) or 1/0 (older int parameters) -> True/False; None when absent."""
    if value is None or value == "":
        return None
    return value[:1] in ("1", "Y", "y")


def _guest_note(virt: Any, family: str) -> str:
    if not virt.in_guest or (virt.vendor or "").startswith("IBM PR/SM"):  # an s390 LPAR is the normal KVM host
        return ""
    where = "an LPAR" if family == "s390" else "a bare-metal host"
    return (f" This system is itself a {virt.vendor or 'virtual'} guest; confidential guests need {where} "
            "(they cannot be nested).")


def _unreadable_param(params: ModuleParams, name: str, evidence: Dict[str, Any]) -> Optional[Outcome]:
    """A parameter file that is there but cannot be read: its state cannot be told (never taken for absent)."""
    found = params.unreadable(name)
    if found is None:
        return None
    if found.state == "denied":
        return Outcome.skipped(f"permission denied reading {found.path}",
                               f"The user running kvmcheck may not read {found.path}, so whether {params.module} "
                               f"has {name} on cannot be told.", **evidence)
    return Outcome.skipped(f"cannot read {found.path}: {found.reason}",
                           f"{found.path} exists but is not readable as a file ({found.reason}).", **evidence)


def _asids(capacity: Optional[str]) -> Dict[str, int]:
    """SEV and SEV-ES ASIDs of the misc cgroup controller's capacity."""
    asids = {}
    for line in (capacity or "").splitlines():
        key, _, value = line.partition(" ")
        if key in ("sev", "sev_es") and value.strip().isdigit():
            asids[key] = int(value)
    return asids


def _amd(flags: frozenset, modules: Dict[str, str], params: ModuleParams, platform: SevHost, note: str,
         evidence: Dict[str, Any]) -> Outcome:
    cpu_has = {f: f in flags for f in ("sme", "sev", "sev_es", "sev_snp")}
    loaded = "kvm_amd" in modules
    values = {p: params.value(p) for p in ("sev", "sev_es", "sev_snp")}
    asids = _asids(platform.misc_capacity)
    evidence.update(cpu_flags=cpu_has, kvm_amd_loaded=loaded, kvm_amd_parameters=values, dev_sev=platform.dev_sev,
                    asids=asids or None)
    if not cpu_has["sev"]:
        hint = "" if cpu_has["sme"] or evidence["in_guest"] else SEV_HIDDEN_HINT
        return Outcome.passed("no confidential-guest support: AMD SEV not available (optional)",
                              NO_SEV + hint + note, **evidence)
    if not loaded:
        return Outcome.passed("AMD SEV in the CPU; kvm_amd is not loaded, so KVM's SEV state is unknown",
                              SEV_NO_KVM_AMD, **evidence)
    for name in ("sev", "sev_es", "sev_snp"):
        unreadable = _unreadable_param(params, name, evidence)
        if unreadable:
            return unreadable
    if values["sev"] is None:
        return Outcome.passed("AMD SEV in the CPU, but this kernel's KVM has no SEV support", SEV_NOT_BUILT,
                              **evidence)
    state = lambda f, p: ("on" if _on(values[p]) else "off in KVM") if cpu_has[f] else "not in the CPU"  # noqa: E731
    levels = f"SEV-ES {state('sev_es', 'sev_es')}, SEV-SNP {state('sev_snp', 'sev_snp')}"
    if not _on(values["sev"]):
        return Outcome.passed(f"AMD SEV supported by the CPU but disabled in KVM (kvm_amd sev={values['sev']})",
                              SEV_OFF, **evidence)
    if not platform.dev_sev:
        return Outcome.passed("AMD SEV enabled in KVM, but /dev/sev is missing: the PSP firmware is not available",
                              NO_DEV_SEV, **evidence)
    return Outcome.passed(f"AMD SEV available to KVM ({levels})", SEV_READY, **evidence)


def _intel(flags: frozenset, modules: Dict[str, str], param: ModuleParams, kernel_log: Any, note: str,
           evidence: Dict[str, Any]) -> Outcome:
    platform = "tdx_host_platform" in flags
    loaded = "kvm_intel" in modules
    tdx = param.value("tdx")
    log = list(kernel_log.facts.tdx)
    evidence.update(tdx_host_platform=platform, kvm_intel_loaded=loaded, kvm_intel_tdx=tdx,
                    tdx_log=log, log_sources=list(kernel_log.sources))
    initialized = any(line.endswith("module initialized") for line in log)
    if _on(tdx):
        return Outcome.passed("Intel TDX available to KVM (kvm_intel tdx=Y)",
                              "The TDX module is " + ("initialized (kernel log)" if initialized else "enabled")
                              + "; TD guests can be launched (libvirt <launchSecurity type='tdx'/>).", **evidence)
    if not platform:
        return Outcome.passed("no confidential-guest support: Intel TDX not available (optional)", NO_TDX + note,
                              **evidence)
    unreadable = _unreadable_param(param, "tdx", evidence)
    if unreadable:
        return unreadable
    if tdx is None:
        summary = ("Intel TDX enabled by the platform; kvm_intel is not loaded" if not loaded else
                   "Intel TDX enabled by the platform, but this kernel's KVM has no TDX support")
        return Outcome.passed(summary,
                              f"The firmware enabled TDX (tdx_host_platform), but "
                              f"{TDX_NO_KVM_INTEL if not loaded else TDX_NOT_BUILT}. Confidential guests are "
                              "optional, so this is not a warning.", **evidence)
    failed = [line for line in log if "failed" in line]
    return Outcome.passed(
        f"Intel TDX enabled by the platform but disabled in KVM (kvm_intel tdx={tdx})",
        TDX_OFF + (f" The kernel log says: {'; '.join(failed)}; update the firmware and the TDX module."
                   if failed else ""), **evidence)


def _s390(cpuinfo: Any, uv: Ultravisor, cmdline: Any, note: str, evidence: Dict[str, Any]) -> Outcome:
    line = cpuinfo.first("facilities")
    if line is None:
        return Outcome.skipped(
            "this kernel's /proc/cpuinfo has no facilities line: IBM Secure Execution cannot be judged",
            NO_FACILITIES, **evidence)
    has_158 = "158" in set(line.split())
    pv_host = uv.prot_virt_host.text.split("\n", 1)[0].strip() if uv.prot_virt_host.ok else None
    prot_virt = cmdline.get("prot_virt") if cmdline is not None else None
    evidence.update(facility_158=has_158, sys_firmware_uv=uv.present, prot_virt_host=pv_host, prot_virt=prot_virt)
    if not has_158:
        return Outcome.passed("no confidential-guest support: IBM Secure Execution not available (optional)",
                              NO_FACILITY_158 + note, **evidence)
    if not uv.present:
        return Outcome.passed(
            "IBM Secure Execution in the machine, but not supported by this kernel (no /sys/firmware/uv)",
            NO_UV, **evidence)
    enabled = pv_host == "1" if pv_host is not None else (prot_virt or "").lower().startswith(("y", "on", "1"))
    if not enabled:
        return Outcome.passed("IBM Secure Execution supported but disabled in the kernel (no prot_virt=1)",
                              PROT_VIRT_OFF, **evidence)
    return Outcome.passed("IBM Secure Execution available (prot_virt enabled)", SE_READY, **evidence)


@check("secure-guest.support", "Confidential guest support")
def secure_guest_support(cpuinfo, family, virt, x86_flags_first_cpu, modules, sev_params, sev_host, tdx_param,
                         kernel_log, ultravisor, cmdline) -> Outcome:
    """Which confidential-guest technology the host can offer: AMD SEV, Intel TDX, IBM Secure Execution.

    What: AMD: the sev/sev_es/sev_snp CPU flags, kvm_amd's sev, sev_es and
    sev_snp parameters and /dev/sev.  Intel: the tdx_host_platform flag,
    kvm_intel's tdx parameter and the 'virt/tdx: module initialized' log line.
    s390: facility 158, /sys/firmware/uv and prot_virt= on the command line.

    Why: confidential guests keep their memory encrypted from the host.  They
    are optional: a host without them passes, and so does one whose hardware
    can but whose kernel has them off (the summary says which, the detail how
    to turn them on).  ARM CCA and POWER PEF are not probed (skip).

    Fix: AMD: kvm_amd sev=1 (plus SEV in the firmware); Intel: TDX in the
    firmware, Linux >= 6.16, kvm_intel tdx=1; s390: prot_virt=1.
    """
    if cpuinfo is None:
        return Outcome.skipped("no /proc/cpuinfo in this root")
    evidence: Dict[str, Any] = {"in_guest": virt.in_guest}
    note = _guest_note(virt, family)
    if family == "x86":
        vendor = cpuinfo.first("vendor_id")
        evidence["vendor_id"] = vendor
        if vendor in _AMD:
            return _amd(x86_flags_first_cpu, modules, sev_params, sev_host.get(), note, evidence)
        if vendor == "GenuineIntel":
            return _intel(x86_flags_first_cpu, modules, tdx_param, kernel_log, note, evidence)
        return Outcome.passed(f"no confidential-guest support known for CPU vendor {quoted(vendor)} (optional)",
                              "kvmcheck knows AMD SEV and Intel TDX on x86.", **evidence)
    if family == "s390":
        return _s390(cpuinfo, ultravisor, cmdline, note, evidence)
    return Outcome.skipped(
        f"confidential guests are not probed on {family if family != 'unknown' else 'an unknown architecture'}",
        NOT_PROBED, **evidence)
