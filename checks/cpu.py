# SPDX-License-Identifier: GPL-2.0-or-later
"""CPU checks: hardware virtualization extensions and 64-bit capability."""
from __future__ import annotations

from typing import List, Optional

from kvmcheck.facts.context import Context
from kvmcheck.core.model import Outcome
from kvmcheck.parsers.cpuinfo import riscv_extensions
from kvmcheck.parsers.hypervisor import UNKNOWN
from kvmcheck.core.registry import check

# The firmware setup option that switches VT on, as vendors label it.
FIRMWARE_SETTING = {
    "GenuineIntel": "Intel Virtualization Technology (VT-x)",
    "AuthenticAMD": "SVM Mode (AMD-V)",
    "HygonGenuine": "SVM Mode",
}
X86_EXTENSION = {"vmx": "VT-x (vmx)", "svm": "AMD-V (svm)"}


def _nested_fix(hypervisor: Optional[str], vendor: str) -> str:
    flag = "svm" if vendor in ("AuthenticAMD", "HygonGenuine") else "vmx"
    mod = "kvm_amd" if flag == "svm" else "kvm_intel"
    common = (
        f"Ask the outer hypervisor to expose {flag} to this VM (nested virtualization), then reboot the VM. "
    )
    per_vendor = {
        "KVM": f"On a KVM/libvirt host: set {mod} nested=1 ('echo \"options {mod} nested=1\" > "
               "/etc/modprobe.d/kvm-nested.conf', reload the module) and give this VM <cpu mode='host-passthrough'/>. On a public cloud, pick an "
               "instance type that supports nested virtualization (for example GCE with --enable-nested-virtualization, "
               "Azure Dv3/Ev3 and newer), or a bare-metal instance.",
        "Microsoft": "On Hyper-V: 'Set-VMProcessor -VMName <vm> -ExposeVirtualizationExtensions $true' (VM powered "
                     "off).",
        "VMware": "On VMware: enable 'Expose hardware assisted virtualization to the guest OS' (vhv.enable = \"TRUE\").",
        "Xen": "On Xen: set nestedhvm=1 in the guest configuration.",
        "Oracle": "On VirtualBox: 'VBoxManage modifyvm <vm> --nested-hw-virt on'.",
    }
    return common + per_vendor.get(hypervisor or "", per_vendor["KVM"])


def _xen_owns_vt(ctx: Context, vendor: str) -> Optional[Outcome]:
    """A Xen dom0 or PV domU cannot use VT-x/AMD-V whatever its flags say (Xen passes the host's bits through)."""
    virt = ctx.virt()
    evidence = {"hypervisor": virt.vendor, "xen": virt.xen, "found_by": virt.source}
    if virt.xen == "dom0":
        return Outcome.failed(
            "Xen dom0: the Xen hypervisor owns VT-x/AMD-V",
            "This kernel is Xen's control domain (dom0). Xen itself runs in VMX root mode / owns SVM below it, "
            "and does not offer nested virtualization to dom0, so KVM cannot load here whatever the CPU flags say.",
            "Run KVM on this machine by booting the same kernel without the Xen hypervisor (a plain GRUB entry, "
            "not 'Xen hypervisor'), or keep Xen and create Xen guests (xl/libvirt's xen driver) instead.",
            **evidence)
    if virt.xen == "pv":
        return Outcome.failed(
            "Xen PV guest (domU): a paravirtualized kernel cannot use VT-x/AMD-V",
            "This kernel runs as a Xen paravirtualized guest: deprivileged (not in ring 0), under a Xen that owns "
            "the hardware extensions. The vmx/svm bits in its flags leak through from the physical CPU; KVM "
            "cannot use them.",
            "Run the workload on bare metal, or have the Xen administrator convert this guest to HVM/PVH with "
            "nested virtualization (nestedhvm=1 in the guest configuration, Xen >= 4.x).", **evidence)
    return None


def _x86(ctx: Context) -> Outcome:
    cpu = ctx.cpuinfo()
    flag_sets = cpu.x86_flags if cpu else []
    vendor = (cpu.first("vendor_id") if cpu else None) or "unknown"
    xen = _xen_owns_vt(ctx, vendor)
    if xen is not None:
        return xen
    found = [X86_EXTENSION[f] for f in ("vmx", "svm") if any(f in s for s in flag_sets)]
    evidence = {"cpus": len(flag_sets), "vendor_id": vendor}
    if found:
        name = found[0].split(" ")[0]
        short = [f for f in ("vmx", "svm") if any(f in s for s in flag_sets)]
        missing_on = [i for i, s in enumerate(flag_sets) if not any(f in s for f in short)]
        evidence.update(extension=short[0], cpus_without=missing_on)
        if missing_on:
            return Outcome.warned(
                f"{name} on some CPUs only ({len(missing_on)} of {len(flag_sets)} lack it)",
                "The flags differ between CPUs, which happens when firmware enables VT on some sockets only "
                "or after a partial microcode or BIOS update.",
                f"Enable {FIRMWARE_SETTING.get(vendor, 'virtualization')} in the firmware setup for every socket and "
                "update the BIOS, then reboot.", **evidence,
            )
        return Outcome.passed(f"{name} present on all {len(flag_sets)} CPUs", **evidence)

    virt = ctx.virt()
    pvm = "kvm_pvm" in ctx.modules()
    evidence.update(hypervisor=virt.vendor, in_guest=virt.in_guest, kvm_pvm=pvm)
    if pvm:
        where = f"this {virt.vendor} virtual machine" if virt.in_guest else "this host"
        if ctx.settings.accept_software_kvm:  # the configuration's [accept] software_kvm (profile pvm-sandbox)
            return Outcome.passed(
                "software KVM through PVM (kvm_pvm), accepted by the configuration; no VT-x/AMD-V",
                f"The CPU flags list neither vmx nor svm: {where} has no hardware virtualization. /dev/kvm comes "
                "from kvm_pvm, the Pagetable-based Virtual Machine, and the configuration accepts a software KVM "
                "provider ([accept] software_kvm). Only PVM-enabled guest kernels run well on it; standard guests "
                "are emulated and run orders of magnitude slower.", **evidence,
            )
        return Outcome.failed(
            "no VT-x/AMD-V; /dev/kvm comes from the software provider PVM (kvm_pvm)",
            f"The CPU flags list neither vmx nor svm: {where} has no hardware virtualization"
            + (" because the outer hypervisor does not expose it (nested virtualization is off)" if virt.in_guest else "")
            + ". KVM is still available through kvm_pvm, the Pagetable-based Virtual Machine: a software KVM "
            "provider that runs guests with shadow paging in ring 3. Only PVM-enabled guest kernels run well on it "
            "(Kata/Cloud Hypervisor-style sandboxes with a PVM guest kernel); standard guests (stock distribution "
            "kernels, Windows, SeaBIOS/OVMF) are emulated instruction by instruction and run orders of magnitude slower.",
            "For general-purpose KVM guests, run on bare metal or on an instance type with nested virtualization "
            "exposed. " + _nested_fix(virt.vendor, vendor) + " If this host only serves PVM sandboxes, this "
            "failure is expected.", **evidence,
        )
    if virt.in_guest:
        return Outcome.failed(
            f"no VT-x/AMD-V: this is {_a_guest(virt.vendor)} without nested virtualization",
            f"The CPU flags list neither vmx nor svm, and this system runs under a hypervisor ({virt.vendor}, "
            f"found by {virt.source}). The physical CPU very likely has the extensions, but the outer hypervisor "
            "does not pass them to this VM, so KVM cannot use hardware acceleration here.",
            _nested_fix(virt.vendor, vendor), **evidence,
        )
    setting = FIRMWARE_SETTING.get(vendor, "the CPU virtualization option")
    return Outcome.failed(
        "no VT-x/AMD-V in the CPU flags",
        "The CPU flags list neither vmx nor svm and no hypervisor was detected, so this looks like bare metal. "
        "Almost every x86 server CPU since 2006 has the extensions; when they are missing, firmware has usually "
        "disabled them (Linux >= 5.6 removes vmx from the flags when firmware locked VT off). "
        "See firmware.vt-enabled for the firmware's own answer.",
        f"Reboot into the BIOS/UEFI setup and enable '{setting}' (often under Advanced > CPU Configuration), "
        "save, and power-cycle. If the option does not exist, the CPU does not support hardware virtualization.",
        **evidence,
    ).because("firmware.vt-enabled")  # when firmware's own answer is "disabled", that is the cause


def _a_guest(vendor: Optional[str]) -> str:
    """'a KVM guest', or 'a guest' when the hypervisor is certain but not named."""
    return "a guest" if vendor in (None, UNKNOWN) else f"a {vendor} guest"


def _flag_check(ctx: Context, words: List[str], keys: tuple, name: str, guest_note: str) -> Outcome:
    cpu = ctx.cpuinfo()
    word = words[0]
    has = cpu.any_has(word, *keys) if cpu else False
    virt = ctx.virt()
    evidence = {"feature": word, "hypervisor": virt.vendor, "in_guest": virt.in_guest}
    if has:
        return Outcome.passed(f"{name} ({word}) present", **evidence)
    if virt.in_guest:
        return Outcome.failed(
            f"no {name} ({word}): this is {_a_guest(virt.vendor)} without nested virtualization",
            f"The CPU features lack '{word}'. This system runs under a hypervisor ({virt.source}), which does not "
            "pass the extension to this guest.", guest_note, **evidence,
        )
    return Outcome.failed(
        f"no {name} ({word}) in the CPU features",
        f"The CPU features lack '{word}', so the kernel cannot run KVM guests with hardware support.",
        guest_note, **evidence,
    )


@check("cpu.virt-flags", "Hardware virtualization extensions", reads=(
    "/proc/cpuinfo", "/proc/sysinfo", "/proc/bus/pci/devices", "/proc/device-tree", "/sys/class/dmi/id",
    "/sys/module/kvm_pvm", "/dev/kvm", "/dev/cpu/0/cpuid",
))
def virt_flags(ctx: Context) -> Outcome:
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
    family = ctx.family()
    arch, arch_source = ctx.arch()
    cpu = ctx.cpuinfo()
    if cpu is None:
        return Outcome.skipped("no /proc/cpuinfo in this root", "Without cpuinfo the CPU cannot be judged.")
    if arch is None:
        what = "is empty" if not cpu.entries else "is not readable text of the expected form"
        return Outcome.skipped(
            f"/proc/cpuinfo {what}",
            "No architecture can be told: /proc/sys/kernel/arch is absent or holds no machine name, and "
            "/proc/cpuinfo has none of the lines of a layout kvmcheck knows. The root may be damaged.",
            arch_source=arch_source)
    if family == "x86":
        return _x86(ctx)
    if family == "s390":
        if not cpu.any_has("sie", "features") and not _s390_reports_sie(ctx):
            return Outcome.skipped(
                "this kernel predates the 'sie' feature flag (Linux 4.5)",
                "s390 kernels list 'sie' in cpuinfo only since Linux 4.5 (commit 7f16d7e787b7), and this one looks "
                "older, so a missing flag proves nothing. An LPAR provides SIE; a z/VM or KVM guest needs nested SIE.",
                kernel=ctx.osrelease())
        return _flag_check(ctx, ["sie"], ("features",), "SIE interpretive execution", _s390_sie_fix(ctx.virt().vendor))
    if family == "loongarch":
        return _flag_check(ctx, ["lvz"], ("features",), "LoongArch Virtualization (LVZ)",
                           "Use a CPU with LVZ (for example the Loongson 3A5000-HV or 3C5000) on bare metal.")
    if family == "riscv":
        isas = ctx.cpuinfo().values("isa") or ctx.cpuinfo().values("hart isa")  # type: ignore[union-attr]
        has_h = bool(isas) and all("h" in riscv_extensions(i) for i in isas)
        if has_h:
            return Outcome.passed("RISC-V hypervisor extension (H) present", isa=isas[0])
        return Outcome.failed(
            "no RISC-V hypervisor extension (H) in the ISA string",
            f"The ISA string ({isas[0] if isas else 'absent'}) has no 'h' among its single-letter extensions, "
            "so KVM for RISC-V (which needs H, ratified 2021) cannot run guests.",
            "Use a RISC-V CPU that implements the H extension (and a kernel >= 5.16 with CONFIG_KVM).",
            isa=isas[0] if isas else None,
        )
    if family == "ppc64":
        platform = ctx.cpuinfo().first("platform")  # type: ignore[union-attr]
        virt = ctx.virt()
        if platform == "PowerNV":
            return Outcome.passed("POWER bare metal (PowerNV): KVM-HV possible", platform=platform)
        if platform == "pSeries" or virt.in_guest:
            under = {"PowerVM": "a PowerVM logical partition", "KVM": "a KVM guest"}.get(
                virt.vendor or "", "a logical partition or guest")
            return Outcome.failed(
                f"POWER {under} ({platform or virt.vendor}): no hypervisor mode",
                "KVM-HV needs the CPU's hypervisor mode, which only a bare-metal (PowerNV/OPAL) host has. In an "
                "LPAR or KVM guest only KVM-PR (problem-state emulation) is possible, which is slow and unmaintained.",
                "Run the host on bare-metal POWER8/9 firmware (OPAL, PowerNV) rather than in a PowerVM LPAR."
                + (" In a KVM guest on a POWER9 or later host, nested KVM-HV is possible instead: load kvm_hv with "
                   "nested=1 on the host (Linux >= 4.20)." if virt.vendor == "KVM" else ""),
                platform=platform, hypervisor=virt.vendor,
            )
        return Outcome.skipped("POWER platform not recorded in cpuinfo",
                               "cpuinfo has no 'platform' line, so bare metal (PowerNV) cannot be told from an LPAR.")
    if family == "arm64":
        st = ctx.host.stat("/dev/kvm")
        if st is not None:
            return Outcome.passed(
                "arm64: /dev/kvm present (EL2 is not visible in cpuinfo)",
                "arm64 CPUs do not list virtualization support in cpuinfo; the kernel created /dev/kvm, so it "
                "booted at EL2 with KVM.", dev_kvm=True,
            )
        return Outcome.skipped(
            "arm64: virtualization support cannot be read from cpuinfo",
            "arm64 does not show EL2 in cpuinfo and /dev/kvm is absent in this root; see kvm.device and kvm.modules. "
            "Firmware must boot the kernel at EL2 for KVM (many phones and some boards boot at EL1).",
            dev_kvm=False,
        )
    if family in ("mips", "mips64"):
        # arch/mips/kvm: VZ-only since Linux 5.13 (trap-and-emulate removed), on 64-bit VZ cores (Loongson-3 ...).
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
        return _flag_check(ctx, ["vz"], ("ases implemented",), "MIPS Virtualization ASE",
                           "Use a MIPS64 CPU with the VZ ASE (for example Loongson-3A3000 or later).")
    return Outcome.failed(
        f"{arch or 'this architecture'} is not a KVM host architecture",
        {"arm": "KVM for 32-bit ARM was removed in Linux 5.7.", "ppc": "32-bit PowerPC KVM (Book E) is unmaintained "
         "and has no hardware-assisted mode on these CPUs.", "sparc": "Linux has no KVM for sparc.",
         "ia64": "KVM for Itanium (ia64) was removed in Linux 3.19, and ia64 itself in Linux 6.7."}.get(
            family, "Linux KVM supports x86, arm64, s390, POWER (64-bit), RISC-V and LoongArch."),
        "Use an x86-64, arm64, s390x, ppc64le, riscv64 or loongarch64 machine for KVM.", arch=arch,
    )


# s390 hwcaps the kernel printed only after it learned 'sie' (Linux 4.5): vxd and vxe came with z14 support
# (Linux 4.11), gs in 4.12, the rest later (arch/s390/kernel/processor.c hwcap_str).  'vx' (Linux 4.1) and
# everything before it are older than 'sie' and prove nothing.
S390_HWCAPS_AFTER_SIE = frozenset({"vxd", "vxe", "gs", "vxe2", "vxp", "sort", "dflt", "vxp2", "nnpa", "pcimio"})


def _s390_sie_fix(vendor: Optional[str]) -> str:
    kvm = ("On the KVM host, enable nested virtualization ('options kvm nested=1' in /etc/modprobe.d/kvm.conf, "
           "then reload kvm, or boot it with kvm.nested=1) and restart this guest with a CPU model that includes "
           "'sie' (libvirt <cpu mode='host-model'/>).")
    zvm = ("Under z/VM: z/VM 6.4 and later pass SIE to their guests (their cpuinfo lists 'sie'); update z/VM or "
           "ask its administrator why this guest lacks it.")
    lpar = "Or run Linux directly in an LPAR, which always has SIE."
    if vendor == "KVM":
        return f"{kvm} {lpar}"
    if vendor and vendor.startswith("IBM z/VM"):
        return f"{zvm} {lpar}"
    return f"Find the hypervisor in /proc/sysinfo (VM00 Control Program). {kvm} {zvm} {lpar}"


def _s390_reports_sie(ctx: Context) -> bool:
    """Is the kernel new enough (>= 4.5) that a missing 'sie' flag means no SIE?"""
    kv = ctx.kernel_version()
    if kv is not None:
        return kv.version >= (4, 5, 0)
    cpu = ctx.cpuinfo()
    if cpu is not None and any(s & S390_HWCAPS_AFTER_SIE for s in cpu.word_sets("features")):
        return True  # the kernel printed hwcaps newer than 'sie', so it would have printed 'sie' too
    # No release string (a capture): /sys/devices/system/cpu/vulnerabilities appeared in Linux 4.15.
    return ctx.host.is_dir("/sys/devices/system/cpu/vulnerabilities")


@check("cpu.64bit", "64-bit CPU and kernel", reads=("/proc/cpuinfo", "/proc/sys/kernel/osrelease",
                                                     "/proc/sys/kernel/arch", "/boot/config-*"))
def cpu_64bit(ctx: Context) -> Outcome:
    """The CPU can run 64-bit guests and the kernel itself is 64-bit.

    What: x86 'lm' (long mode) in the flags; the kernel's bitness from uname,
    /proc/sys/kernel/arch, the release suffix (.x86_64, .i686, PAE) or
    CONFIG_64BIT in /boot/config-<release>.

    Why: a 32-bit kernel cannot run 64-bit guests, and current KVM, QEMU and
    libvirt releases are 64-bit only.

    Fix: install a 64-bit distribution (x86_64, aarch64, ...).
    """
    cpu = ctx.cpuinfo()
    family = ctx.family()
    arch, arch_source = ctx.arch()
    if cpu is None:
        return Outcome.skipped("no /proc/cpuinfo in this root")
    if family == "x86":
        cpu_64 = cpu.all_have("lm", "flags")  # the CPU's long mode, whatever the kernel's bitness
    else:
        cpu_64 = arch in ("aarch64", "s390x", "ppc64", "ppc64le", "riscv64", "loongarch64", "sparc64") or None
    kernel_bits, how = _kernel_bits(ctx, arch, arch_source)
    evidence = {"cpu_64bit": cpu_64, "cpu_arch": ctx.cpu_arch(), "kernel_arch": arch, "kernel_bits": kernel_bits,
                "kernel_bits_from": how}
    if cpu_64 is False:
        return Outcome.failed("the CPU is 32-bit only (no long mode)",
                              "Without long mode ('lm') the CPU cannot run 64-bit guests or a 64-bit host kernel.",
                              "Use a 64-bit (x86-64) CPU for a KVM host.", **evidence)
    if kernel_bits == 32:
        return Outcome.failed(
            "32-bit kernel on a 64-bit CPU" if cpu_64 else "32-bit kernel",
            f"The kernel is 32-bit ({how}). It can run only 32-bit guests, and current QEMU and libvirt no longer "
            "support 32-bit hosts.",
            "Reinstall with the 64-bit edition of the distribution (x86_64/amd64); a 32-bit userland cannot be "
            "upgraded in place.", **evidence)
    if kernel_bits == 64:
        return Outcome.passed(f"64-bit CPU and 64-bit kernel ({how})", **evidence)
    if cpu_64 is None:
        return Outcome.skipped(
            "neither the CPU's nor the kernel's bitness is recorded in this root",
            "The architecture is unknown (see cpu.virt-flags), and neither /proc/sys/kernel/arch, a release suffix "
            "nor /boot/config-<release> says how the kernel was built.", **evidence)
    return Outcome.skipped(
        "the CPU is 64-bit; the kernel's bitness is not recorded in this root",
        "Neither /proc/sys/kernel/arch, a release suffix nor /boot/config-<release> says how the kernel was built.",
        **evidence)


def _kernel_bits(ctx: Context, arch: Optional[str], arch_source: str):  # type: ignore[no-untyped-def]
    if arch and arch_source != "inferred from /proc/cpuinfo":
        bits = 64 if arch.endswith("64") or arch in ("s390x",) else 32
        return bits, f"{arch_source}: {arch}"
    kv = ctx.kernel_version()
    if kv and kv.arch_hint:
        return kv.arch_hint[1], f"release {kv.release}"
    cpu = ctx.cpuinfo()
    if cpu is not None and cpu.x86_32bit_kernel:
        return 32, "/proc/cpuinfo fdiv_bug/hlt_bug/f00f_bug lines (printed only by 32-bit x86 kernels)"
    if cpu is not None and cpu.x86_flags and cpu.first("wp") is not None:
        # A 32-bit kernel prints fdiv_bug right before 'wp' on every CPU (show_cpuinfo_misc); a 64-bit one never.
        return 64, "/proc/cpuinfo without fdiv_bug lines (32-bit x86 kernels print them)"
    config, path, _ = ctx.kernel_config()
    if config is not None and config.get("CONFIG_64BIT") is not None:
        return (64 if config.get("CONFIG_64BIT") == "y" else 32), path
    return None, "unknown"


# --- cpu.vulnerabilities ---------------------------------------------------------------------------
VULN_DIR = "/sys/devices/system/cpu/vulnerabilities"
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


def _attack_vectors(mitigations: Optional[str]) -> List[str]:
    """mitigations= choices that leave guests unprotected: off, or the attack-vector opt-outs (Linux 6.17)."""
    if mitigations is None:
        return []
    items = [i.strip().lower() for i in mitigations.split(",") if i.strip()]
    if "off" in items:
        return ["off"]
    return [i for i in items if i in ("no_guest_host", "no_guest_guest")]


@check("cpu.vulnerabilities", "CPU vulnerabilities mitigated for untrusted guests", reads=(
    VULN_DIR + "/*", "/sys/devices/system/cpu/smt/control", "/sys/devices/system/cpu/smt/active", "/proc/cmdline",
))
def cpu_vulnerabilities(ctx: Context) -> Outcome:
    """The kernel reports every CPU vulnerability as not affecting this CPU or mitigated.

    What: each file in /sys/devices/system/cpu/vulnerabilities (l1tf, mds,
    mmio_stale_data, retbleed, spec_rstack_overflow, vmscape, spectre_v2, ...):
    'Vulnerable' (or a 'VMX: vulnerable' / 'KVM: Vulnerable' part) and 'SMT
    vulnerable' warn; SMT state and mitigations= on the command line are
    evidence, and mitigations=off or the no_guest_host / no_guest_guest attack
    vector opt-outs warn, since they tell the kernel that guests are trusted.

    Why: a host running untrusted guests relies on these mitigations to keep a
    guest from reading host or other guests' memory (L1TF, MDS, Retbleed, SRSO,
    VMSCAPE ...).  With SMT on, some of them cannot be fully mitigated.

    Fix: update the kernel and the CPU microcode, remove mitigations=off and
    per-bug '=off' options, and turn SMT off (nosmt) where the text says
    'SMT vulnerable'.
    """
    from kvmcheck.parsers.vulnerabilities import UNKNOWN, parse_vulnerabilities

    host = ctx.host
    names = [n for n in host.listdir(VULN_DIR) if not n.startswith(".")]
    files = {}
    unreadable = []
    for name in names:
        try:
            text = host.read_optional(f"{VULN_DIR}/{name}", limit=4096)
        except OSError as exc:
            unreadable.append(f"{name}: {exc.strerror or exc}")
            continue
        if text is not None:
            files[name] = text
    if not files and unreadable:
        return Outcome.skipped(
            f"{VULN_DIR}: {len(unreadable)} file(s) unreadable ({unreadable[0]})",
            f"Unreadable: {', '.join(unreadable)}.", unreadable=unreadable)
    if not files:
        return Outcome.skipped(
            "no CPU vulnerability report (/sys/devices/system/cpu/vulnerabilities)",
            "The directory appeared in Linux 4.15 (January 2018); an older kernel, or a root captured without it, "
            "cannot be judged. A kernel that old lacks most mitigations: update it." +
            (f" Unreadable: {', '.join(unreadable)}." if unreadable else ""), unreadable=unreadable or None)
    vulns = parse_vulnerabilities(files)
    smt_control = host.first_line("/sys/devices/system/cpu/smt/control")
    smt_active = host.first_line("/sys/devices/system/cpu/smt/active")
    cmdline = ctx.cmdline()
    mitigations = cmdline.get("mitigations") if cmdline else None
    opt_outs = _attack_vectors(mitigations)
    order = {n: i for i, n in enumerate(GUEST_RELEVANT)}
    ranked = sorted(vulns.values(), key=lambda v: (order.get(v.name, len(order)), v.name))
    open_ = [v for v in ranked if v.open_to_guests]
    smt_open = [v for v in ranked if v.smt_vulnerable and not v.open_to_guests]
    mitigated = [v.name for v in ranked if v.state not in ("not-affected", UNKNOWN, "other") and not v.open_to_guests]
    evidence = {
        "entries": {v.name: v.text for v in ranked},
        "vulnerable": [v.name for v in open_], "smt_vulnerable": [v.name for v in ranked if v.smt_vulnerable],
        "mitigated": mitigated, "unknown": [v.name for v in ranked if v.state in (UNKNOWN, "other")],
        "smt_control": smt_control, "smt_active": smt_active, "mitigations": mitigations,
    }
    if unreadable:
        evidence["unreadable"] = unreadable
    if all(v.state == "other" for v in ranked) and not opt_outs:
        return Outcome.skipped(
            f"{VULN_DIR} is not readable text of the expected form",
            f"None of its {len(ranked)} file(s) starts with 'Not affected', 'Vulnerable', 'Mitigation' or 'Unknown', "
            "as the kernel writes them; the root may be damaged.", **evidence)
    if open_ or smt_open or opt_outs:
        lines = [f"{v.name}: {v.text}" for v in open_ + smt_open]
        fixes = []
        for v in open_:
            fixes.append(f"{v.name}: {VULN_FIX.get(v.name, 'update the kernel and microcode')}")
        package = MICROCODE_PACKAGE.get(ctx.distro_family() or "", "the distribution's microcode package")
        vendor = (ctx.cpuinfo().first("vendor_id") if ctx.cpuinfo() else None) or ""
        if " / " in package and vendor in ("GenuineIntel", "AuthenticAMD"):
            package = package.split(" / ")[0 if vendor == "GenuineIntel" else 1].replace(" (Intel)", "").replace(" (AMD)", "")
        remediation = []
        if opt_outs:
            what_out = "mitigations=off" if opt_outs == ["off"] else f"{', '.join(opt_outs)} from mitigations="
            remediation.append(f"Remove {what_out} on the kernel command line (mitigations=auto is the default), "
                               "unless every guest is trusted.")
        if fixes:
            remediation.append("; ".join(fixes) + f". Keep the kernel and the CPU microcode ({package}) current.")
        if smt_open or any(v.smt_vulnerable for v in open_):
            remediation.append("For " + ", ".join(v.name for v in ranked if v.smt_vulnerable) + " (SMT vulnerable): "
                               + SMT_FIX + ".")
        what = []
        if open_:
            what.append(f"{len(open_)} vulnerable ({', '.join(v.name for v in open_)})")
        if smt_open:
            what.append(f"{len(smt_open)} mitigated only with SMT off, which is on "
                        f"({', '.join(v.name for v in smt_open)})")
        if opt_outs:
            what.append(f"guest mitigations switched off (mitigations={mitigations})")
        detail = ("Untrusted guests can use these CPU flaws against the host or other guests. "
                  + (". ".join(lines) + ". " if lines else "")
                  + ("The kernel command line has mitigations=off: every CPU mitigation is skipped. "
                     if opt_outs == ["off"] else
                     f"The kernel command line has mitigations={mitigations}, so the kernel skips mitigations "
                     "that only protect the host from guests (or guests from each other) even where the files "
                     "say 'Mitigation'. " if opt_outs else "")
                  + f"SMT control: {smt_control or 'unknown'}.")
        return Outcome.warned("CPU vulnerabilities open to guests: " + "; ".join(what), detail,
                              " ".join(remediation), **evidence)
    not_affected = sum(1 for v in ranked if v.state == "not-affected")
    unknown = [v for v in ranked if v.state in (UNKNOWN, "other")]
    detail = (f"{not_affected} of {len(ranked)} do not affect this CPU; mitigated: {', '.join(mitigated) or 'none'}. "
              f"SMT control: {smt_control or 'unknown'}.")
    if unknown:
        detail += (" The kernel cannot tell for " + "; ".join(f"{v.name} ({v.text})" for v in unknown)
                   + ": nothing to switch on (in a VM it depends on the host; on an out-of-service CPU no "
                   "mitigation exists).")
    notes = [f"{v.name}: {'; '.join(v.vulnerable_parts)}" for v in ranked if v.vulnerable_parts and v.kvm_covered]
    if notes:
        detail += " Host user space only, guests covered by KVM: " + ", ".join(notes) + "."
    return Outcome.passed(
        f"no CPU vulnerability open: {len(mitigated)} mitigated, {not_affected} not affected"
        + (f", {len(unknown)} unknown" if unknown else ""), detail, **evidence)
