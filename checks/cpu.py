# SPDX-License-Identifier: GPL-2.0-or-later
"""CPU checks: hardware virtualization extensions, 64-bit capability, vulnerabilities open to guests.

Judges only: what they judge is gathered in kvmcheck.facts.system (cpuinfo, arch, virt, ...) and
kvmcheck.facts.cpu (vulnerabilities, smt, kernel_bits, ...).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from kvmcheck.core.model import Outcome
from kvmcheck.core.registry import check
from kvmcheck.facts import boot as _boot  # noqa: F401 - boot_cmdline, judged here
from kvmcheck.facts import cpu as _facts  # noqa: F401 - the facts judged here
from kvmcheck.facts.cpu import VULN_DIR, Smt, VulnerabilityFiles
from kvmcheck.parsers import vulnerabilities as vuln
from kvmcheck.parsers.cpuinfo import CpuInfo, riscv_extensions
from kvmcheck.parsers.hypervisor import UNKNOWN, VirtFacts
from kvmcheck.parsers.vulnerabilities import Vulnerability

# --- cpu.virt-flags: the words ---------------------------------------------------------------------
# The firmware setup option that switches VT on, as vendors label it.
FIRMWARE_SETTING = {
    "GenuineIntel": "Intel Virtualization Technology (VT-x)",
    "AuthenticAMD": "SVM Mode (AMD-V)",
    "HygonGenuine": "SVM Mode",
}
X86_EXTENSION = {"vmx": "VT-x (vmx)", "svm": "AMD-V (svm)"}
NESTED_FIX = {
    "KVM": "On a KVM/libvirt host: set {mod} nested=1 ('echo \"options {mod} nested=1\" > "
           "/etc/modprobe.d/kvm-nested.conf', reload the module) and give this VM <cpu mode='host-passthrough'/>. On a "
           "public cloud, pick an instance type that supports nested virtualization (for example GCE with "
           "--enable-nested-virtualization, Azure Dv3/Ev3 and newer), or a bare-metal instance.",
    "Microsoft": "On Hyper-V: 'Set-VMProcessor -VMName <vm> -ExposeVirtualizationExtensions $true' (VM powered "
                 "off).",
    "VMware": "On VMware: enable 'Expose hardware assisted virtualization to the guest OS' (vhv.enable = \"TRUE\").",
    "Xen": "On Xen: set nestedhvm=1 in the guest configuration.",
    "Oracle": "On VirtualBox: 'VBoxManage modifyvm <vm> --nested-hw-virt on'.",
}
XEN_OWNS_VT = {  # virt.xen -> (summary, detail, fix)
    "dom0": (
        "Xen dom0: the Xen hypervisor owns VT-x/AMD-V",
        "This kernel is Xen's control domain (dom0). Xen itself runs in VMX root mode / owns SVM below it, "
        "and does not offer nested virtualization to dom0, so KVM cannot load here whatever the CPU flags say.",
        "Run KVM on this machine by booting the same kernel without the Xen hypervisor (a plain GRUB entry, "
        "not 'Xen hypervisor'), or keep Xen and create Xen guests (xl/libvirt's xen driver) instead."),
    "pv": (
        "Xen PV guest (domU): a paravirtualized kernel cannot use VT-x/AMD-V",
        "This kernel runs as a Xen paravirtualized guest: deprivileged (not in ring 0), under a Xen that owns "
        "the hardware extensions. The vmx/svm bits in its flags leak through from the physical CPU; KVM "
        "cannot use them.",
        "Run the workload on bare metal, or have the Xen administrator convert this guest to HVM/PVH with "
        "nested virtualization (nestedhvm=1 in the guest configuration, Xen >= 4.x)."),
}
SOME_CPUS_DETAIL = ("The flags differ between CPUs, which happens when firmware enables VT on some sockets only "
                    "or after a partial microcode or BIOS update.")
PVM_ACCEPTED = (
    "The CPU flags list neither vmx nor svm: {where} has no hardware virtualization. /dev/kvm comes "
    "from kvm_pvm, the Pagetable-based Virtual Machine, and the configuration accepts a software KVM "
    "provider ([accept] software_kvm). Only PVM-enabled guest kernels run well on it; standard guests "
    "are emulated and run orders of magnitude slower.")
PVM_DETAIL = (
    "The CPU flags list neither vmx nor svm: {where} has no hardware virtualization{because}. KVM is still "
    "available through kvm_pvm, the Pagetable-based Virtual Machine: a software KVM "
    "provider that runs guests with shadow paging in ring 3. Only PVM-enabled guest kernels run well on it "
    "(Kata/Cloud Hypervisor-style sandboxes with a PVM guest kernel); standard guests (stock distribution "
    "kernels, Windows, SeaBIOS/OVMF) are emulated instruction by instruction and run orders of magnitude slower.")
PVM_NOT_EXPOSED = " because the outer hypervisor does not expose it (nested virtualization is off)"
PVM_FIX = ("For general-purpose KVM guests, run on bare metal or on an instance type with nested virtualization "
           "exposed. {nested} If this host only serves PVM sandboxes, this failure is expected.")
GUEST_DETAIL = (
    "The CPU flags list neither vmx nor svm, and this system runs under a hypervisor ({vendor}, "
    "found by {source}). The physical CPU very likely has the extensions, but the outer hypervisor "
    "does not pass them to this VM, so KVM cannot use hardware acceleration here.")
BARE_METAL_DETAIL = (
    "The CPU flags list neither vmx nor svm and no hypervisor was detected, so this looks like bare metal. "
    "Almost every x86 server CPU since 2006 has the extensions; when they are missing, firmware has usually "
    "disabled them (Linux >= 5.6 removes vmx from the flags when firmware locked VT off). "
    "See firmware.vt-enabled for the firmware's own answer.")
BARE_METAL_FIX = (
    "Reboot into the BIOS/UEFI setup and enable '{setting}' (often under Advanced > CPU Configuration), "
    "save, and power-cycle. If the option does not exist, the CPU does not support hardware virtualization.")
NO_ARCH_DETAIL = (
    "No architecture can be told: /proc/sys/kernel/arch is absent or holds no machine name, and "
    "/proc/cpuinfo has none of the lines of a layout kvmcheck knows. The root may be damaged.")
S390_OLD_KERNEL = (
    "this kernel predates the 'sie' feature flag (Linux 4.5)",
    "s390 kernels list 'sie' in cpuinfo only since Linux 4.5 (commit 7f16d7e787b7), and this one looks "
    "older, so a missing flag proves nothing. An LPAR provides SIE; a z/VM or KVM guest needs nested SIE.")
S390_KVM_FIX = ("On the KVM host, enable nested virtualization ('options kvm nested=1' in /etc/modprobe.d/kvm.conf, "
                "then reload kvm, or boot it with kvm.nested=1) and restart this guest with a CPU model that "
                "includes 'sie' (libvirt <cpu mode='host-model'/>).")
S390_ZVM_FIX = ("Under z/VM: z/VM 6.4 and later pass SIE to their guests (their cpuinfo lists 'sie'); update z/VM or "
                "ask its administrator why this guest lacks it.")
S390_LPAR_FIX = "Or run Linux directly in an LPAR, which always has SIE."
SIE = ("SIE interpretive execution",)
LOONGARCH = ("LoongArch Virtualization (LVZ)",
             "Use a CPU with LVZ (for example the Loongson 3A5000-HV or 3C5000) on bare metal.")
MIPS = ("MIPS Virtualization ASE", "Use a MIPS64 CPU with the VZ ASE (for example Loongson-3A3000 or later).")
RISCV_NO_H = (
    "no RISC-V hypervisor extension (H) in the ISA string",
    "The ISA string ({isa}) has no 'h' among its single-letter extensions, "
    "so KVM for RISC-V (which needs H, ratified 2021) cannot run guests.",
    "Use a RISC-V CPU that implements the H extension (and a kernel >= 5.16 with CONFIG_KVM).")
POWER_LPAR = (
    "KVM-HV needs the CPU's hypervisor mode, which only a bare-metal (PowerNV/OPAL) host has. In an "
    "LPAR or KVM guest only KVM-PR (problem-state emulation) is possible, which is slow and unmaintained.",
    "Run the host on bare-metal POWER8/9 firmware (OPAL, PowerNV) rather than in a PowerVM LPAR.",
    " In a KVM guest on a POWER9 or later host, nested KVM-HV is possible instead: load kvm_hv with "
    "nested=1 on the host (Linux >= 4.20).")
ARM64_DEV_KVM = (
    "arm64: /dev/kvm present (EL2 is not visible in cpuinfo)",
    "arm64 CPUs do not list virtualization support in cpuinfo; the kernel created /dev/kvm, so it "
    "booted at EL2 with KVM.")
ARM64_UNKNOWN = (
    "arm64: virtualization support cannot be read from cpuinfo",
    "arm64 does not show EL2 in cpuinfo and /dev/kvm is absent in this root; see kvm.device and kvm.modules. "
    "Firmware must boot the kernel at EL2 for KVM (many phones and some boards boot at EL1).")
NOT_KVM_ARCH = {
    "arm": "KVM for 32-bit ARM was removed in Linux 5.7.",
    "ppc": "32-bit PowerPC KVM (Book E) is unmaintained and has no hardware-assisted mode on these CPUs.",
    "sparc": "Linux has no KVM for sparc.",
    "ia64": "KVM for Itanium (ia64) was removed in Linux 3.19, and ia64 itself in Linux 6.7.",
}
KVM_ARCHES = "Linux KVM supports x86, arm64, s390, POWER (64-bit), RISC-V and LoongArch."
KVM_ARCH_FIX = "Use an x86-64, arm64, s390x, ppc64le, riscv64 or loongarch64 machine for KVM."


def _nested_fix(hypervisor: Optional[str], vendor: str) -> str:
    mod = "kvm_amd" if vendor in ("AuthenticAMD", "HygonGenuine") else "kvm_intel"
    flag = "svm" if mod == "kvm_amd" else "vmx"
    common = f"Ask the outer hypervisor to expose {flag} to this VM (nested virtualization), then reboot the VM. "
    return common + NESTED_FIX.get(hypervisor or "", NESTED_FIX["KVM"]).format(mod=mod)


def _a_guest(vendor: Optional[str]) -> str:
    """'a KVM guest', or 'a guest' when the hypervisor is certain but not named."""
    return "a guest" if vendor in (None, UNKNOWN) else f"a {vendor} guest"


def _s390_sie_fix(vendor: Optional[str]) -> str:
    if vendor == "KVM":
        return f"{S390_KVM_FIX} {S390_LPAR_FIX}"
    if vendor and vendor.startswith("IBM z/VM"):
        return f"{S390_ZVM_FIX} {S390_LPAR_FIX}"
    return f"Find the hypervisor in /proc/sysinfo (VM00 Control Program). {S390_KVM_FIX} {S390_ZVM_FIX} {S390_LPAR_FIX}"


# --- cpu.virt-flags: the judges, one per architecture ------------------------------------------------
@check("cpu.virt-flags", "Hardware virtualization extensions")
def virt_flags(cpuinfo, family, arch, virt, modules, osrelease, s390_reports_sie, dev_kvm_exists,
               settings) -> Outcome:
    """The CPU offers hardware virtualization to this kernel.

    What: x86 vmx (Intel VT-x) or svm (AMD-V) on every CPU's flags line; s390
    'sie'; LoongArch 'lvz'; RISC-V the 'h' extension in the ISA string; POWER
    bare-metal PowerNV (KVM-HV).  arm64 does not show EL2 in cpuinfo, so there
    /dev/kvm decides.  32-bit ARM, 32-bit PowerPC and sparc are not KVM hosts.

    Why: without the extensions KVM either does not load or (with a software
    provider such as PVM) emulates standard guests far too slowly.

    Fix: on bare metal, enable VT in the firmware setup; in a VM, have the outer
    hypervisor expose nested virtualization.
    """
    if cpuinfo is None:
        return Outcome.skipped("no /proc/cpuinfo in this root", "Without cpuinfo the CPU cannot be judged.")
    if arch.name is None:
        what = "is empty" if not cpuinfo.entries else "is not readable text of the expected form"
        return Outcome.skipped(f"/proc/cpuinfo {what}", NO_ARCH_DETAIL, arch_source=arch.source)
    if family == "x86":
        return _xen_owns_vt(virt) or _x86(cpuinfo, virt, modules, settings.accept_software_kvm)
    if family == "s390":
        if not cpuinfo.any_has("sie", "features") and not s390_reports_sie.get():
            return Outcome.skipped(*S390_OLD_KERNEL, kernel=osrelease)
        return _flag_check(cpuinfo, virt, "sie", ("features",), *SIE, _s390_sie_fix(virt.vendor))
    if family == "loongarch":
        return _flag_check(cpuinfo, virt, "lvz", ("features",), *LOONGARCH)
    if family == "riscv":
        return _riscv(cpuinfo)
    if family == "ppc64":
        return _power(cpuinfo.first("platform"), virt)
    if family == "arm64":
        return _arm64(dev_kvm_exists.get())
    if family in ("mips", "mips64"):
        return _mips(cpuinfo, arch.name, virt)
    return Outcome.failed(f"{arch.name or 'this architecture'} is not a KVM host architecture",
                          NOT_KVM_ARCH.get(family, KVM_ARCHES), KVM_ARCH_FIX, arch=arch.name)


def _xen_owns_vt(virt: VirtFacts) -> Optional[Outcome]:
    """A Xen dom0 or PV domU cannot use VT-x/AMD-V whatever its flags say (Xen passes the host's bits through)."""
    if virt.xen not in XEN_OWNS_VT:
        return None
    return Outcome.failed(*XEN_OWNS_VT[virt.xen], hypervisor=virt.vendor, xen=virt.xen, found_by=virt.source)


def _x86(cpu: CpuInfo, virt: VirtFacts, modules: Dict[str, str], accept_software_kvm: bool) -> Outcome:
    flag_sets = cpu.x86_flags
    vendor = cpu.first("vendor_id") or "unknown"
    evidence = {"cpus": len(flag_sets), "vendor_id": vendor}
    present = [f for f in ("vmx", "svm") if any(f in s for s in flag_sets)]
    if present:
        name = X86_EXTENSION[present[0]].split(" ")[0]
        missing_on = [i for i, s in enumerate(flag_sets) if not any(f in s for f in present)]
        evidence.update(extension=present[0], cpus_without=missing_on)
        if missing_on:
            return Outcome.warned(
                f"{name} on some CPUs only ({len(missing_on)} of {len(flag_sets)} lack it)", SOME_CPUS_DETAIL,
                f"Enable {FIRMWARE_SETTING.get(vendor, 'virtualization')} in the firmware setup for every socket and "
                "update the BIOS, then reboot.", **evidence)
        return Outcome.passed(f"{name} present on all {len(flag_sets)} CPUs", **evidence)
    pvm = "kvm_pvm" in modules
    evidence.update(hypervisor=virt.vendor, in_guest=virt.in_guest, kvm_pvm=pvm)
    if pvm:
        return _pvm(virt, vendor, accept_software_kvm, evidence)
    if virt.in_guest:
        return Outcome.failed(f"no VT-x/AMD-V: this is {_a_guest(virt.vendor)} without nested virtualization",
                              GUEST_DETAIL.format(vendor=virt.vendor, source=virt.source),
                              _nested_fix(virt.vendor, vendor), **evidence)
    setting = FIRMWARE_SETTING.get(vendor, "the CPU virtualization option")
    return Outcome.failed("no VT-x/AMD-V in the CPU flags", BARE_METAL_DETAIL, BARE_METAL_FIX.format(setting=setting),
                          **evidence).because("firmware.vt-enabled")  # firmware's "disabled" is then the cause


def _pvm(virt: VirtFacts, vendor: str, accepted: bool, evidence: dict) -> Outcome:
    """No VT, and /dev/kvm from kvm_pvm: a pass only where the configuration accepts software KVM
    ([accept] software_kvm, profile pvm-sandbox)."""
    where = f"this {virt.vendor} virtual machine" if virt.in_guest else "this host"
    if accepted:
        return Outcome.passed("software KVM through PVM (kvm_pvm), accepted by the configuration; no VT-x/AMD-V",
                              PVM_ACCEPTED.format(where=where), **evidence)
    return Outcome.failed("no VT-x/AMD-V; /dev/kvm comes from the software provider PVM (kvm_pvm)",
                          PVM_DETAIL.format(where=where, because=PVM_NOT_EXPOSED if virt.in_guest else ""),
                          PVM_FIX.format(nested=_nested_fix(virt.vendor, vendor)), **evidence)


def _flag_check(cpu: CpuInfo, virt: VirtFacts, word: str, keys: tuple, name: str, guest_note: str) -> Outcome:
    evidence = {"feature": word, "hypervisor": virt.vendor, "in_guest": virt.in_guest}
    if cpu.any_has(word, *keys):
        return Outcome.passed(f"{name} ({word}) present", **evidence)
    if virt.in_guest:
        return Outcome.failed(
            f"no {name} ({word}): this is {_a_guest(virt.vendor)} without nested virtualization",
            f"The CPU features lack '{word}'. This system runs under a hypervisor ({virt.source}), which does not "
            "pass the extension to this guest.", guest_note, **evidence)
    return Outcome.failed(f"no {name} ({word}) in the CPU features",
                          f"The CPU features lack '{word}', so the kernel cannot run KVM guests with hardware support.",
                          guest_note, **evidence)


def _riscv(cpu: CpuInfo) -> Outcome:
    isas = cpu.values("isa") or cpu.values("hart isa")
    if isas and all("h" in riscv_extensions(i) for i in isas):
        return Outcome.passed("RISC-V hypervisor extension (H) present", isa=isas[0])
    summary, detail, fix = RISCV_NO_H
    return Outcome.failed(summary, detail.format(isa=isas[0] if isas else "absent"), fix,
                          isa=isas[0] if isas else None)


def _power(platform: Optional[str], virt: VirtFacts) -> Outcome:
    if platform == "PowerNV":
        return Outcome.passed("POWER bare metal (PowerNV): KVM-HV possible", platform=platform)
    if platform == "pSeries" or virt.in_guest:
        under = {"PowerVM": "a PowerVM logical partition", "KVM": "a KVM guest"}.get(
            virt.vendor or "", "a logical partition or guest")
        detail, fix, nested = POWER_LPAR
        return Outcome.failed(f"POWER {under} ({platform or virt.vendor}): no hypervisor mode", detail,
                              fix + (nested if virt.vendor == "KVM" else ""), platform=platform, hypervisor=virt.vendor)
    return Outcome.skipped("POWER platform not recorded in cpuinfo",
                           "cpuinfo has no 'platform' line, so bare metal (PowerNV) cannot be told from an LPAR.")


def _arm64(dev_kvm: bool) -> Outcome:
    if dev_kvm:
        return Outcome.passed(*ARM64_DEV_KVM, dev_kvm=True)
    return Outcome.skipped(*ARM64_UNKNOWN, dev_kvm=False)


def _mips(cpu: CpuInfo, arch: str, virt: VirtFacts) -> Outcome:
    """arch/mips/kvm: VZ-only since Linux 5.13 (trap-and-emulate removed), on 64-bit VZ cores (Loongson-3 ...)."""
    ases = cpu.first("ases implemented")
    if ases is None:
        return Outcome.skipped("MIPS: no 'ASEs implemented' line in cpuinfo",
                               "KVM for MIPS needs the VZ ASE, which this cpuinfo does not say.")
    if "vz" in ases.split() and arch == "mips64":
        return Outcome.passed("MIPS Virtualization ASE (vz) present on a 64-bit MIPS CPU", ases=ases)
    if arch != "mips64":
        return Outcome.skipped(
            "32-bit MIPS: not judged",
            "KVM for MIPS runs on 64-bit cores with the VZ ASE; kvmcheck does not judge 32-bit MIPS systems.",
            ases=ases)
    return _flag_check(cpu, virt, "vz", ("ases implemented",), *MIPS)


# --- cpu.64bit -------------------------------------------------------------------------------------------
CPU_64BIT_ARCHES = ("aarch64", "s390x", "ppc64", "ppc64le", "riscv64", "loongarch64", "sparc64")
NO_KERNEL_BITS = "{neither} /proc/sys/kernel/arch, a release suffix nor /boot/config-<release> says how the kernel " \
                 "was built."
UNKNOWN_ARCH = "The architecture is unknown (see cpu.virt-flags), and neither"


@check("cpu.64bit", "64-bit CPU and kernel")
def cpu_64bit(cpuinfo, family, arch, kernel_bits, cpu_arch) -> Outcome:
    """The CPU can run 64-bit guests and the kernel itself is 64-bit.

    What: x86 'lm' (long mode) in the flags; the kernel's bitness from uname,
    /proc/sys/kernel/arch, the release suffix (.x86_64, .i686, PAE) or
    CONFIG_64BIT in /boot/config-<release>.

    Why: a 32-bit kernel cannot run 64-bit guests, and current KVM, QEMU and
    libvirt releases are 64-bit only.

    Fix: install a 64-bit distribution (x86_64, aarch64, ...).
    """
    if cpuinfo is None:
        return Outcome.skipped("no /proc/cpuinfo in this root")
    # x86: the CPU's long mode, whatever the kernel's bitness
    cpu_64 = cpuinfo.all_have("lm", "flags") if family == "x86" else (arch.name in CPU_64BIT_ARCHES or None)
    bits, how = kernel_bits
    evidence = {"cpu_64bit": cpu_64, "cpu_arch": cpu_arch, "kernel_arch": arch.name, "kernel_bits": bits,
                "kernel_bits_from": how}
    if cpu_64 is False:
        return Outcome.failed("the CPU is 32-bit only (no long mode)",
                              "Without long mode ('lm') the CPU cannot run 64-bit guests or a 64-bit host kernel.",
                              "Use a 64-bit (x86-64) CPU for a KVM host.", **evidence)
    if bits == 32:
        return Outcome.failed(
            "32-bit kernel on a 64-bit CPU" if cpu_64 else "32-bit kernel",
            f"The kernel is 32-bit ({how}). It can run only 32-bit guests, and current QEMU and libvirt no longer "
            "support 32-bit hosts.",
            "Reinstall with the 64-bit edition of the distribution (x86_64/amd64); a 32-bit userland cannot be "
            "upgraded in place.", **evidence)
    if bits == 64:
        return Outcome.passed(f"64-bit CPU and 64-bit kernel ({how})", **evidence)
    if cpu_64 is None:
        return Outcome.skipped("neither the CPU's nor the kernel's bitness is recorded in this root",
                               NO_KERNEL_BITS.format(neither=UNKNOWN_ARCH), **evidence)
    return Outcome.skipped("the CPU is 64-bit; the kernel's bitness is not recorded in this root",
                           NO_KERNEL_BITS.format(neither="Neither"), **evidence)


# --- cpu.vulnerabilities ---------------------------------------------------------------------------
# Bugs a guest can use against the host or other guests, worst first (Documentation/admin-guide/hw-vuln).
GUEST_RELEVANT = ("l1tf", "mds", "itlb_multihit", "mmio_stale_data", "tsx_async_abort", "retbleed",
                  "spec_rstack_overflow", "srbds", "gather_data_sampling", "reg_file_data_sampling", "vmscape",
                  "tsa", "indirect_target_selection", "spectre_v2", "old_microcode", "spec_store_bypass",
                  "spectre_v1", "meltdown")
# What turns each mitigation on; the kernel update and microcode advice is added for every bug.
VULN_FIX = {
    "l1tf": "boot with l1tf=full,force (or at least kvm-intel.vmentry_l1d_flush=always) and turn SMT off",
    "mds": "boot with mds=full,nosmt (the default 'full' needs the MD_CLEAR microcode)",
    "tsx_async_abort": "boot with tsx_async_abort=full,nosmt or tsx=off",
    "mmio_stale_data": "boot with mmio_stale_data=full,nosmt",
    "itlb_multihit": "remove kvm.nx_huge_pages=off (use kvm.nx_huge_pages=force or the default auto)",
    "retbleed": "boot with retbleed=auto,nosmt (remove retbleed=off)",
    "spec_rstack_overflow": "remove spec_rstack_overflow=off (the default is safe-ret; ibpb needs the SRSO microcode)",
    "srbds": "update the microcode (the mitigation is in microcode only; remove srbds=off)",
    "gather_data_sampling": "update the microcode; without it, gather_data_sampling=force disables AVX as a fallback",
    "reg_file_data_sampling": "update the microcode and boot with reg_file_data_sampling=on",
    "vmscape": "update to a kernel with the VMSCAPE fix (Linux 6.17 or a stable/distribution backport; vmscape=ibpb)",
    "tsa": "update the microcode and boot with tsa=on (remove tsa=off)",
    "indirect_target_selection": "update the kernel and microcode; remove indirect_target_selection=off",
    "spectre_v2": "remove spectre_v2=off / nospectre_v2 (use spectre_v2=auto); set the sysctl "
                  "kernel.unprivileged_bpf_disabled=1 when the text mentions unprivileged eBPF",
    "spectre_v1": "remove nospectre_v1",
    "spec_store_bypass": "remove spec_store_bypass_disable=off / nospec_store_bypass_disable",
    "meltdown": "remove nopti / pti=off",
    "old_microcode": "install the current microcode package and reboot",
}
MICROCODE_PACKAGE = {"debian": "intel-microcode / amd64-microcode", "ubuntu": "intel-microcode / amd64-microcode",
                     "rhel": "microcode_ctl (Intel) / linux-firmware (AMD)", "suse": "ucode-intel / ucode-amd",
                     "arch": "intel-ucode / amd-ucode"}
SMT_FIX = ("turn SMT off: add nosmt to the kernel command line (persistent) or run "
           "'echo off > /sys/devices/system/cpu/smt/control' (until reboot); alternatively accept the risk only for "
           "guests you trust or that use core scheduling")
NO_REPORT = (
    "no CPU vulnerability report (/sys/devices/system/cpu/vulnerabilities)",
    "The directory appeared in Linux 4.15 (January 2018); an older kernel, or a root captured without it, "
    "cannot be judged. A kernel that old lacks most mitigations: update it.")
NOT_KERNEL_TEXT = ("None of its {n} file(s) starts with 'Not affected', 'Vulnerable', 'Mitigation' or 'Unknown', "
                   "as the kernel writes them; the root may be damaged.")
OPEN_DETAIL = "Untrusted guests can use these CPU flaws against the host or other guests. "
MITIGATIONS_OFF = "The kernel command line has mitigations=off: every CPU mitigation is skipped. "
ATTACK_VECTORS_OFF = ("The kernel command line has mitigations={mitigations}, so the kernel skips mitigations "
                      "that only protect the host from guests (or guests from each other) even where the files "
                      "say 'Mitigation'. ")
REMOVE_OPT_OUT = ("Remove {what} on the kernel command line (mitigations=auto is the default), "
                  "unless every guest is trusted.")
UNKNOWN_NOTE = ("nothing to switch on (in a VM it depends on the host; on an out-of-service CPU no "
                "mitigation exists)")
UNJUDGED = (vuln.UNKNOWN, vuln.OTHER)


def _attack_vectors(mitigations: Optional[str]) -> List[str]:
    """mitigations= choices that leave guests unprotected: off, or the attack-vector opt-outs (Linux 6.17)."""
    if mitigations is None:
        return []
    items = [i.strip().lower() for i in mitigations.split(",") if i.strip()]
    if "off" in items:
        return ["off"]
    return [i for i in items if i in ("no_guest_host", "no_guest_guest")]


@check("cpu.vulnerabilities", "CPU vulnerabilities mitigated for untrusted guests")
def cpu_vulnerabilities(vulnerabilities, smt, cmdline, distro_family, cpu_vendor_id, boot_cmdline=None) -> Outcome:
    """The kernel reports every CPU vulnerability as not affecting this CPU or mitigated.

    What: each file in /sys/devices/system/cpu/vulnerabilities (l1tf, mds,
    mmio_stale_data, retbleed, spec_rstack_overflow, vmscape, spectre_v2, ...):
    'Vulnerable' (or a 'VMX: vulnerable' / 'KVM: Vulnerable' part) and 'SMT
    vulnerable' warn; mitigations=off or the no_guest_host / no_guest_guest
    attack-vector opt-outs on the command line warn too (they declare guests
    trusted).  SMT state is evidence.  A mitigations= that the boot loader's
    default entry or /etc/default/grub sets (or drops) differently from
    /proc/cmdline is reported as pending.

    Why: a host running untrusted guests relies on these mitigations to keep a
    guest from reading host or other guests' memory (L1TF, MDS, Retbleed, SRSO,
    VMSCAPE ...).  With SMT on, some of them cannot be fully mitigated.

    Fix: update the kernel and the CPU microcode, remove mitigations=off and
    per-bug '=off' options, and turn SMT off (nosmt) where the text says
    'SMT vulnerable'.
    """
    outcome = _vulnerabilities(vulnerabilities, smt, cmdline, distro_family, cpu_vendor_id)
    pending = boot_cmdline.pending(("mitigations",)) if boot_cmdline is not None else None  # None: judged alone
    return outcome.awaiting(*pending) if pending else outcome


def _vulnerabilities(vulnerabilities: VulnerabilityFiles, smt: Smt, cmdline: Any, distro_family: Optional[str],
                     cpu_vendor_id: Any) -> Outcome:
    unreadable = [f"{VulnerabilityFiles.name(r)}: {r.reason}" for r in vulnerabilities.unreadable]
    if not vulnerabilities.found and unreadable:
        return Outcome.skipped(f"{VULN_DIR}: {len(unreadable)} file(s) unreadable ({unreadable[0]})",
                               f"Unreadable: {', '.join(unreadable)}.", unreadable=unreadable)
    if not vulnerabilities.found:
        return Outcome.skipped(*NO_REPORT, unreadable=None)
    order = {n: i for i, n in enumerate(GUEST_RELEVANT)}
    ranked = sorted(vulnerabilities.found.values(), key=lambda v: (order.get(v.name, len(order)), v.name))
    mitigations = cmdline.get("mitigations") if cmdline else None
    opt_outs = _attack_vectors(mitigations)
    evidence = _vuln_evidence(ranked, smt, mitigations, unreadable)
    if all(v.state == vuln.OTHER for v in ranked) and not opt_outs:
        return Outcome.skipped(f"{VULN_DIR} is not readable text of the expected form",
                               NOT_KERNEL_TEXT.format(n=len(ranked)), **evidence)
    open_ = [v for v in ranked if v.open_to_guests]
    smt_open = [v for v in ranked if v.smt_vulnerable and not v.open_to_guests]
    if open_ or smt_open or opt_outs:
        package = _microcode_package(distro_family, cpu_vendor_id.get())
        return Outcome.warned(_open_summary(open_, smt_open, opt_outs, mitigations),
                              _open_detail(open_ + smt_open, opt_outs, mitigations, Smt.line(smt.control)),
                              _open_fix(ranked, open_, smt_open, opt_outs, package), **evidence)
    return _all_closed(ranked, evidence)


def _vuln_evidence(ranked: List[Vulnerability], smt: Smt, mitigations: Optional[str], unreadable: List[str]) -> dict:
    mitigated = [v.name for v in ranked if v.state not in ("not-affected",) + UNJUDGED and not v.open_to_guests]
    evidence = {
        "entries": {v.name: v.text for v in ranked},
        "vulnerable": [v.name for v in ranked if v.open_to_guests],
        "smt_vulnerable": [v.name for v in ranked if v.smt_vulnerable],
        "mitigated": mitigated, "unknown": [v.name for v in ranked if v.state in UNJUDGED],
        "smt_control": Smt.line(smt.control), "smt_active": Smt.line(smt.active), "mitigations": mitigations,
    }
    if unreadable:
        evidence["unreadable"] = unreadable
    return evidence


def _microcode_package(distro_family: Optional[str], vendor: str) -> str:
    """The distribution's microcode package; the vendor's alone when the vendor is Intel or AMD."""
    package = MICROCODE_PACKAGE.get(distro_family or "", "the distribution's microcode package")
    if " / " in package and vendor in ("GenuineIntel", "AuthenticAMD"):
        package = package.split(" / ")[0 if vendor == "GenuineIntel" else 1]
        package = package.replace(" (Intel)", "").replace(" (AMD)", "")
    return package


def _open_summary(open_: List[Vulnerability], smt_open: List[Vulnerability], opt_outs: List[str],
                  mitigations: Optional[str]) -> str:
    what = []
    if open_:
        what.append(f"{len(open_)} vulnerable ({', '.join(v.name for v in open_)})")
    if smt_open:
        what.append(f"{len(smt_open)} mitigated only with SMT off, which is on ({', '.join(v.name for v in smt_open)})")
    if opt_outs:
        what.append(f"guest mitigations switched off (mitigations={mitigations})")
    return "CPU vulnerabilities open to guests: " + "; ".join(what)


def _open_detail(shown: List[Vulnerability], opt_outs: List[str], mitigations: Optional[str],
                 smt_control: Optional[str]) -> str:
    lines = [f"{v.name}: {v.text}" for v in shown]
    switched_off = (MITIGATIONS_OFF if opt_outs == ["off"] else
                    ATTACK_VECTORS_OFF.format(mitigations=mitigations) if opt_outs else "")
    return (OPEN_DETAIL + (". ".join(lines) + ". " if lines else "") + switched_off
            + f"SMT control: {smt_control or 'unknown'}.")


def _open_fix(ranked: List[Vulnerability], open_: List[Vulnerability], smt_open: List[Vulnerability],
              opt_outs: List[str], package: str) -> str:
    remediation = []
    if opt_outs:
        what = "mitigations=off" if opt_outs == ["off"] else f"{', '.join(opt_outs)} from mitigations="
        remediation.append(REMOVE_OPT_OUT.format(what=what))
    if open_:
        fixes = [f"{v.name}: {VULN_FIX.get(v.name, 'update the kernel and microcode')}" for v in open_]
        remediation.append("; ".join(fixes) + f". Keep the kernel and the CPU microcode ({package}) current.")
    if smt_open or any(v.smt_vulnerable for v in open_):
        remediation.append("For " + ", ".join(v.name for v in ranked if v.smt_vulnerable) + " (SMT vulnerable): "
                           + SMT_FIX + ".")
    return " ".join(remediation)


def _all_closed(ranked: List[Vulnerability], evidence: dict) -> Outcome:
    not_affected = sum(1 for v in ranked if v.state == vuln.NOT_AFFECTED)
    unknown = [v for v in ranked if v.state in UNJUDGED]
    mitigated = evidence["mitigated"]
    detail = (f"{not_affected} of {len(ranked)} do not affect this CPU; mitigated: {', '.join(mitigated) or 'none'}. "
              f"SMT control: {evidence['smt_control'] or 'unknown'}.")
    if unknown:
        detail += f" The kernel cannot tell for {'; '.join(f'{v.name} ({v.text})' for v in unknown)}: {UNKNOWN_NOTE}."
    notes = [f"{v.name}: {'; '.join(v.vulnerable_parts)}" for v in ranked if v.vulnerable_parts and v.kvm_covered]
    if notes:
        detail += " Host user space only, guests covered by KVM: " + ", ".join(notes) + "."
    return Outcome.passed(f"no CPU vulnerability open: {len(mitigated)} mitigated, {not_affected} not affected"
                          + (f", {len(unknown)} unknown" if unknown else ""), detail, **evidence)
