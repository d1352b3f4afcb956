# SPDX-License-Identifier: GPL-2.0-or-later
"""Named x86 CPU models a guest can be given, as the /proc/cpuinfo flags a host needs to offer each.

The feature lists are those of libvirt's src/cpu_map/x86_<model>.xml (libvirt 10.x, 2024; the same sets as
QEMU's builtin_x86_defs in target/i386/cpu.c for these versions of the models), with libvirt's feature
names turned into the names Linux prints in /proc/cpuinfo (arch/x86/include/asm/cpufeatures.h), and
without the features /proc/cpuinfo cannot show or that say nothing about a guest's instructions:

- nested virtualization (svm, npt, nrip-save, svme-addr-chk and every vmx-* capability): a migration
  pool is about the guest's instruction set, and nested guests are a separate decision;
- speculation-control bits (spec-ctrl, ssbd, ibpb, ibrs, amd-stibp, amd-ssbd): Linux hides some of them
  (X86_FEATURE_SPEC_CTRL prints no name) and shows others as synthetic flags, so /proc/cpuinfo cannot
  decide them;
- mpx: removed from Linux 5.6's flags, so newer kernels never show it although the CPU has it;
- monitor and x2apic: QEMU sets them for every model under KVM whatever the host has (kvm_default_props in
  target/i386/cpu.c, later target/i386/kvm/kvm-cpu.c: "monitor" off, KVM does not pass MONITOR/MWAIT to
  guests; "x2apic" on, KVM emulates it), so a host without them runs the model all the same (a KVM guest
  such as this project's EPYC Genoa VM lists no monitor).

Each vendor's models are listed oldest first; the baseline of a pool is the newest model of its vendor
whose flags all hosts offer.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, Tuple

# libvirt/QEMU feature name -> /proc/cpuinfo flag, where they differ
LINUX_NAME = {
    "pclmuldq": "pclmulqdq", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "tsc-deadline": "tsc_deadline_timer",
    "sha-ni": "sha_ni", "avx512-vpopcntdq": "avx512_vpopcntdq", "avx512vbmi2": "avx512_vbmi2",
    "avx512vnni": "avx512_vnni", "avx512bitalg": "avx512_bitalg", "intel-pt": "intel_pt",
    "cr8legacy": "cr8_legacy",
}
NOT_JUDGED = frozenset({"svm", "npt", "nrip-save", "svme-addr-chk", "spec-ctrl", "ssbd", "ibpb", "ibrs",
                        "amd-stibp", "amd-ssbd", "mpx", "monitor", "x2apic"})

_BASE = "apic clflush cmov cx16 cx8 de fpu fxsr lm mca mce mmx msr mtrr nx pae pat pge pni pse pse36 sep sse sse2 " \
        "syscall tsc"
_NEHALEM = _BASE + " lahf_lm popcnt sse4.1 sse4.2 ssse3"
_SANDY = _NEHALEM + " aes avx pclmuldq rdtscp tsc-deadline x2apic xsave"
_HASWELL = _SANDY + " avx2 bmi1 bmi2 erms fma fsgsbase invpcid movbe pcid smep"
_EPYC = (_BASE + " 3dnowprefetch abm adx aes arat avx avx2 bmi1 bmi2 clflushopt cr8legacy f16c fma fsgsbase fxsr_opt "
         "lahf_lm misalignsse mmxext monitor movbe osvw pclmuldq pdpe1gb popcnt rdrand rdseed rdtscp sha-ni smap smep "
         "sse4.1 sse4.2 sse4a ssse3 vme xgetbv1 xsave xsavec xsaveopt")
_ROME = (_EPYC.replace(" monitor", "") + " clwb clzero perfctr_core rdpid umip wbnoinvd xsaveerptr")
_OPTERON_G3 = _BASE + " abm lahf_lm misalignsse monitor popcnt rdtscp sse4a"
_OPTERON_G4 = (_BASE + " 3dnowprefetch abm aes avx fma4 lahf_lm misalignsse pclmuldq pdpe1gb popcnt rdtscp sse4.1 "
               "sse4.2 sse4a ssse3 xop xsave")

# (name, vendor_id, libvirt feature names), oldest first within a vendor
_MODELS = (
    ("qemu64", "", _BASE),
    ("Penryn", "GenuineIntel", _BASE + " lahf_lm sse4.1 ssse3"),
    ("Nehalem", "GenuineIntel", _NEHALEM),
    ("Westmere", "GenuineIntel", _NEHALEM + " aes"),
    ("SandyBridge", "GenuineIntel", _SANDY),
    ("IvyBridge", "GenuineIntel", _SANDY + " erms f16c fsgsbase rdrand smep vme"),
    ("Haswell-noTSX", "GenuineIntel", _HASWELL),
    ("Broadwell-noTSX", "GenuineIntel", _HASWELL + " 3dnowprefetch adx rdseed smap"),
    ("Skylake-Client-noTSX-IBRS", "GenuineIntel",
     _HASWELL + " 3dnowprefetch abm adx arat f16c rdrand rdseed smap vme xgetbv1 xsavec xsaveopt"),
    ("Icelake-Server-noTSX", "GenuineIntel",
     _HASWELL + " 3dnowprefetch abm adx arat avx512-vpopcntdq avx512bitalg avx512bw avx512cd avx512dq avx512f "
     "avx512vbmi avx512vbmi2 avx512vl avx512vnni clflushopt clwb f16c gfni intel-pt la57 pdpe1gb pku rdrand rdseed "
     "smap umip vaes vme vpclmulqdq wbnoinvd xgetbv1 xsavec xsaveopt"),
    ("Opteron_G3", "AuthenticAMD", _OPTERON_G3),
    ("Opteron_G4", "AuthenticAMD", _OPTERON_G4),
    ("Opteron_G5", "AuthenticAMD", _OPTERON_G4 + " f16c fma tbm"),
    ("EPYC", "AuthenticAMD", _EPYC),
    ("EPYC-Rome", "AuthenticAMD", _ROME),
    ("EPYC-Milan", "AuthenticAMD", _ROME + " erms fsrm invpcid pcid pku xsaves"),
)


def linux_flags(features: str) -> FrozenSet[str]:
    return frozenset(LINUX_NAME.get(f, f) for f in features.split() if f not in NOT_JUDGED)


MODELS: Tuple[Tuple[str, str, FrozenSet[str]], ...] = tuple((n, v, linux_flags(f)) for n, v, f in _MODELS)
BY_NAME: Dict[str, FrozenSet[str]] = {name: flags for name, _, flags in MODELS}
# Every flag some named model needs: the part of a host's flags that decides which models it can run.
MODEL_FLAGS: FrozenSet[str] = frozenset().union(*(flags for _, _, flags in MODELS))


def newest_model(vendor: str, flags: FrozenSet[str]) -> str:
    """The newest named model of vendor (or the generic qemu64) whose flags are all in flags; "" when none fits."""
    fitting = [name for name, model_vendor, need in MODELS if model_vendor in ("", vendor) and need <= flags]
    return fitting[-1] if fitting else ""
