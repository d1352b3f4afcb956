"""Tests for the pure parsers in kvmcheck/parsers/ and context.py's arch helpers.

Inputs are real: the 22 util-linux lscpu dumps in ../shared/corpus/lscpu (with
lscpu's own verdicts in expected.tsv), captured files in tests/data/parsers/
(see its README.md), and kernel, kmod and firmware strings quoted from the
sources that print them.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kvmcheck.facts.context import arch_family, arch_from_cpuinfo
from kvmcheck.parsers import ParseError
from kvmcheck.parsers.accounts import Group, User, parse_group, parse_passwd
from kvmcheck.parsers.cpuinfo import parse_cpuinfo, riscv_extensions
from kvmcheck.parsers.hypervisor import VirtFacts, VirtInputs, detect_hypervisor, sysinfo_hypervisor
from kvmcheck.parsers.kernel_log import parse_kernel_log
from kvmcheck.parsers.kernel_version import parse_kernel_release, parse_min_version
from kvmcheck.parsers.modprobe import (
    Block,
    parse_modprobe_conf,
    parse_modules_builtin,
    parse_proc_modules,
)

DATA = Path(__file__).parent / "data" / "parsers"
CORPUS = Path(__file__).parents[1] / ".." / "shared" / "corpus" / "lscpu"


def read(path: Path):
    """A file as the checker reads it: text with bad bytes replaced, or None when absent."""
    return path.read_bytes().decode("utf-8", "replace") if path.is_file() else None


def data(name: str) -> str:
    return read(DATA / name)


def corpus_cpuinfo(dump: str):
    return parse_cpuinfo(read(CORPUS / dump / "proc" / "cpuinfo"))


def expected_rows():
    tsv = CORPUS / "expected.tsv"
    if not tsv.is_file():
        return []  # no corpus checked out: the parametrized tests are skipped as empty
    with tsv.open(newline="") as f:
        return [pytest.param(row, id=row["dump"]) for row in csv.DictReader(f, delimiter="\t")]


EXPECTED = expected_rows()
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/lscpu not present")


# --------------------------------------------------------------------------- cpuinfo


def test_flags_after_byte_1024_are_seen():
    text = data("long-flags-vmx-last.cpuinfo")
    flags_line = next(line for line in text.splitlines() if line.startswith("flags"))
    assert len(flags_line) > 2000 and flags_line.index(" vmx") > 2000
    cpu = parse_cpuinfo(text)
    assert len(cpu.x86_flags) == 2
    assert cpu.all_have("vmx", "flags") is True
    assert "hypervisor" not in cpu.x86_flags[0]


@needs_corpus
def test_real_flags_line_longer_than_1024_bytes_keeps_its_last_flag():
    # Linux 6.2 on a Sapphire Rapids class CPU: a 1,055-byte flags line.
    cpu = corpus_cpuinfo("x86_64-64cpu-linux6.2")
    assert len(cpu.x86_flags) == 8
    assert cpu.all_have("arch_capabilities", "flags") is True
    assert cpu.all_have("vmx", "flags") is True


def test_one_cpu_without_vmx_makes_all_have_false_but_any_has_true():
    cpu = parse_cpuinfo(data("one-cpu-lacks-vmx.cpuinfo"))
    assert cpu.cpu_count == 2
    assert [("vmx" in s) for s in cpu.x86_flags] == [True, False]
    assert cpu.all_have("vmx", "flags") is False
    assert cpu.any_has("vmx", "flags") is True


@needs_corpus
def test_vmware_guest_with_lwp_on_half_its_cpus_is_not_all_have():
    # vmware_fpe: 16 vCPUs, 8 of which report AMD's lwp flag.
    cpu = corpus_cpuinfo("vmware_fpe")
    assert sum("lwp" in s for s in cpu.x86_flags) == 8
    assert cpu.all_have("lwp", "flags") is False
    assert cpu.all_have("svm", "flags") is True


def test_all_have_is_none_when_no_line_has_the_key():
    cpu = parse_cpuinfo(data("amd-epyc-kvm-guest.cpuinfo"))
    assert cpu.all_have("vmx", "features") is None
    assert cpu.any_has("vmx", "features") is False


def test_kvm_guest_cpuinfo_has_hypervisor_but_no_svm():
    cpu = parse_cpuinfo(data("amd-epyc-kvm-guest.cpuinfo"))
    assert cpu.cpu_count == 2
    assert cpu.first("vendor_id") == "AuthenticAMD"
    assert cpu.first("model name") == "AMD EPYC"
    assert cpu.all_have("hypervisor", "flags") is True
    assert cpu.all_have("svm", "flags") is False
    assert cpu.all_have("lm", "flags") is True


def test_flag_words_match_whole_words_only():
    # "lahf_lm" and "cr8_legacy" must not make "lm" or "cr8" present by substring.
    cpu = parse_cpuinfo("processor\t: 0\nflags\t\t: fpu lahf_lm cr8_legacy\n")
    assert cpu.x86_flags == [frozenset({"fpu", "lahf_lm", "cr8_legacy"})]
    assert cpu.any_has("lm", "flags") is False


def test_empty_value_line_power_management_is_kept_with_empty_value():
    cpu = parse_cpuinfo(data("amd-epyc-kvm-guest.cpuinfo"))
    assert cpu.values("power management") == ["", ""]


def test_keys_are_lowercased_and_inner_whitespace_collapsed():
    cpu = parse_cpuinfo(data("amd-epyc-kvm-guest.cpuinfo"))
    assert cpu.first("tlb size") == "2560 4K pages"
    assert cpu.first("cpu mhz") is not None
    assert cpu.first("TLB size") is None  # callers ask in lower case


def test_crlf_line_endings_leave_no_carriage_returns():
    cpu = parse_cpuinfo(data("crlf.cpuinfo"))
    assert cpu.cpu_count == 2
    assert not [e for e in cpu.entries if "\r" in e[0] or "\r" in e[1]]
    assert cpu.all_have("svm", "flags") is True
    assert cpu.first("model name") == "AMD EPYC 7451 24-Core Processor"


def test_invalid_utf8_is_replaced_and_the_rest_parses():
    raw = (DATA / "invalid-utf8.cpuinfo").read_bytes()
    cpu = parse_cpuinfo(raw.decode("utf-8", "replace"))
    assert cpu.first("model name") == "Intel(R)\ufffd Core(TM)\ufffd\ufffd i5 CPU       M 560  @ 2.67GHz"
    assert cpu.cpu_count == 1
    assert cpu.all_have("vmx", "flags") is True


def test_empty_cpuinfo_is_empty_not_an_error():
    cpu = parse_cpuinfo(data("empty.cpuinfo"))
    assert cpu.entries == ()
    assert cpu.x86_flags == []
    assert cpu.cpu_count == 0
    assert cpu.first("vendor_id") is None
    assert cpu.all_have("vmx", "flags") is None
    assert arch_from_cpuinfo(cpu) is None


@needs_corpus
def test_s390_processor_lines_are_not_flags():
    cpu = corpus_cpuinfo("s390-kvm")
    assert cpu.first("vendor_id") == "IBM/S390"
    assert cpu.x86_flags == []
    assert cpu.values("processor") == []
    assert cpu.first("processor 0") == "version = FF,  identification = 29AA14,  machine = 2817"
    assert cpu.word_sets("features") == [
        frozenset("esan3 zarch stfle msa ldisp eimm dfp edat etf3eh highgprs".split())
    ]
    assert cpu.first("# processors") == "3"
    assert cpu.first("bogomips per cpu") == "14367.00"
    assert cpu.cpu_count == 3


@needs_corpus
def test_s390_lpar_numbering_starting_at_1_still_counts_17():
    cpu = corpus_cpuinfo("s390-lpar")
    assert cpu.first("processor 0") is None
    assert cpu.first("# processors") == "17"
    assert cpu.cpu_count == 17


@needs_corpus
def test_value_with_more_colons_keeps_them():
    cpu = corpus_cpuinfo("loongarch-loongson_3a5000_hv")
    assert cpu.first("hardware watchpoint") == "yes, iwatch count: 8, dwatch count: 8"
    assert cpu.first("isa") == "loongarch32 loongarch64"
    assert cpu.any_has("lvz", "features") is True  # LoongArch virtualization extension


@needs_corpus
def test_sparc64_bare_state_header_is_kept_and_there_are_no_processor_lines():
    cpu = corpus_cpuinfo("sparc64")
    assert cpu.first("state") == ""
    assert cpu.first("cpu6") == "online"
    assert cpu.first("ncpus active") == "6"
    assert cpu.first("d$ parity tl1") == "0"
    assert cpu.cpu_count == 0  # documented: sparc64 says "ncpus active" instead


@needs_corpus
def test_powerpc_trailer_lines_after_the_last_cpu_are_kept():
    cpu = corpus_cpuinfo("ppc64-POWER7")
    assert cpu.cpu_count == 16
    assert cpu.first("platform") == "pSeries"
    assert cpu.first("machine") == "CHRP IBM,8233-E8B"
    assert cpu.values("cpu")[0] == "POWER7 (architected), altivec supported"


@needs_corpus
def test_riscv_hart_isa_key_is_separate_from_isa():
    cpu = corpus_cpuinfo("rv64-visionfive2")
    assert cpu.cpu_count == 4
    assert len(cpu.values("isa")) == 4
    assert cpu.first("hart isa") == "rv64imafdc_zicntr_zicsr_zifencei_zihpm_zba_zbb"


@needs_corpus
def test_armv7_capitalised_processor_model_line_is_not_a_cpu():
    # 2 CPUs (sys/devices/system/cpu/online is 0-1), but the model line lower-cases to "processor".
    cpu = corpus_cpuinfo("armv7")
    assert cpu.cpu_count == 2


@pytest.mark.parametrize(
    "isa, expected",
    [
        ("rv64imafdch_zicsr_sstc", "imafdch"),
        ("rv64gc", "gcimafd"),
        ("rv64imafdc_zicntr_zicsr_zifencei_zihpm_zba_zbb", "imafdc"),
        ("RV64IMAFDCV", "imafdcv"),
        ("rv32imac", "imac"),
        ("rv64imafdc_zihintpause_zicbom", "imafdc"),  # the "h" of zihintpause is not H
        ("loongarch64", ""),
        ("", ""),
    ],
)
def test_riscv_extensions_single_letters_only(isa, expected):
    assert riscv_extensions(isa) == frozenset(expected)


def test_riscv_g_is_not_the_hypervisor_extension():
    assert "h" not in riscv_extensions("rv64gc")


@needs_corpus
def test_riscv_milkv_pioneer_has_vector_but_no_hypervisor():
    cpu = corpus_cpuinfo("rv64-milkvpioneer")
    assert cpu.cpu_count == 64
    assert riscv_extensions(cpu.first("isa")) == frozenset("imafdcv")


# --------------------------------------------------------------------------- arch helpers


@needs_corpus
@pytest.mark.parametrize("row", EXPECTED)
def test_arch_from_cpuinfo_agrees_with_lscpu(row):
    assert arch_from_cpuinfo(corpus_cpuinfo(row["dump"])) == row["arch"]


def test_arch_from_cpuinfo_kvm_guest_capture_is_x86_64():
    assert arch_from_cpuinfo(parse_cpuinfo(data("amd-epyc-kvm-guest.cpuinfo"))) == "x86_64"


def test_arch_from_cpuinfo_without_lm_is_i686():
    cpu = parse_cpuinfo("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme de pse tsc msr pae vmx\n")
    assert arch_from_cpuinfo(cpu) == "i686"


def test_arch_from_cpuinfo_s390_without_zarch_is_31_bit_s390():
    cpu = parse_cpuinfo("vendor_id       : IBM/S390\nfeatures\t: esan3 msa ldisp\n")
    assert arch_from_cpuinfo(cpu) == "s390"


def test_arch_from_cpuinfo_old_arm64_kernel_says_aarch64_in_words():
    assert arch_from_cpuinfo(parse_cpuinfo(data("arm64-linux-3.13.cpuinfo"))) == "aarch64"


@pytest.mark.parametrize(
    "arch, family",
    [
        ("x86_64", "x86"),
        ("i686", "x86"),
        ("i386", "x86"),
        ("aarch64", "arm64"),
        ("arm64", "arm64"),
        ("armv7l", "arm"),
        ("armv8l", "arm"),
        ("s390x", "s390"),
        ("s390", "s390"),
        ("ppc64le", "ppc64"),
        ("ppc64", "ppc64"),
        ("ppc", "ppc"),
        ("riscv64", "riscv"),
        ("loongarch64", "loongarch"),
        ("sparc64", "sparc"),
        ("mips64", "mips64"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_arch_family(arch, family):
    assert arch_family(arch) == family


# --------------------------------------------------------------------------- kernel_version


@pytest.mark.parametrize(
    "release, version, extra, hint",
    [
        ("5.14.0-427.13.1.el9_4.x86_64", (5, 14, 0), "-427.13.1.el9_4.x86_64", ("x86_64", 64)),
        ("6.18.44-fc-v669", (6, 18, 44), "-fc-v669", None),
        ("2.6.18-419.el5PAE", (2, 6, 18), "-419.el5PAE", ("i686", 32)),
        ("6.1.0-18-amd64", (6, 1, 0), "-18-amd64", ("x86_64", 64)),
        ("6.1.0-18-686-pae", (6, 1, 0), "-18-686-pae", ("i686", 32)),
        ("6.1.0-18-armmp-lpae", (6, 1, 0), "-18-armmp-lpae", None),  # "-lpae" is not x86 PAE
        ("4.4.0-19041-Microsoft", (4, 4, 0), "-19041-Microsoft", None),
        ("3.0", (3, 0, 0), "", None),
        ("6.8.0-rc3", (6, 8, 0), "-rc3", None),
        ("5.15.0-1051-azure", (5, 15, 0), "-1051-azure", None),
        ("4.18.0-553.el8_10.aarch64", (4, 18, 0), "-553.el8_10.aarch64", ("aarch64", 64)),
        ("3.10.0-1160.el7.ppc64le", (3, 10, 0), "-1160.el7.ppc64le", ("ppc64", 64)),
        ("4.18.0-553.el8_10.s390x", (4, 18, 0), "-553.el8_10.s390x", ("s390x", 64)),
        ("5.14.0-427.13.1.el9_4.x86_64+debug", (5, 14, 0), "-427.13.1.el9_4.x86_64+debug", ("x86_64", 64)),
        ("2.6.32.59-0.7-default", (2, 6, 32), ".59-0.7-default", None),
        ("2.6.20", (2, 6, 20), "", None),
    ],
)
def test_parse_kernel_release(release, version, extra, hint):
    kv = parse_kernel_release(release)
    assert (kv.release, kv.version, kv.extra, kv.arch_hint) == (release, version, extra, hint)


def test_kernel_release_newline_from_proc_is_stripped():
    kv = parse_kernel_release("6.1.0-18-amd64\n")
    assert kv.release == "6.1.0-18-amd64"
    assert str(kv) == "6.1.0"


def test_two_component_release_prints_three():
    assert str(parse_kernel_release("3.0")) == "3.0.0"


@pytest.mark.parametrize("garbage", ["", "linux", "v6.1", "   \n", "6", "Linux 6.1.0"])
def test_garbage_release_raises_parse_error(garbage):
    with pytest.raises(ParseError, match="not a kernel release string"):
        parse_kernel_release(garbage)


def test_parse_error_is_a_value_error():
    assert issubclass(ParseError, ValueError)


@pytest.mark.parametrize("text, version", [("2.6.20", (2, 6, 20)), ("5.14", (5, 14, 0)), (" 6.8 ", (6, 8, 0))])
def test_parse_min_version(text, version):
    assert parse_min_version(text) == version


def test_min_version_compares_numerically_not_as_text():
    assert parse_min_version("2.6.20") < parse_kernel_release("2.6.100").version
    assert parse_min_version("5.9") < parse_min_version("5.10")


# --------------------------------------------------------------------------- kernel_log


def test_kmsg_record_prefix_is_stripped():
    facts = parse_kernel_log("6,1234,5678,-;x86/cpu: VMX (outside TXT) disabled by BIOS\n")
    assert facts.firmware_disabled == ("x86/cpu: VMX (outside TXT) disabled by BIOS",)
    assert facts.hypervisor is None


def test_kmsg_record_with_caller_field_is_stripped():
    facts = parse_kernel_log("3,512,1024,-,caller=T1;kvm: disabled by bios")
    assert facts.firmware_disabled == ("kvm: disabled by bios",)


def test_syslog_hypervisor_detected_line():
    facts = parse_kernel_log("Jan  1 00:00:00 host kernel: [    0.000000] Hypervisor detected: KVM\n")
    assert facts.hypervisor == "KVM"
    assert facts.firmware_disabled == ()


def test_last_hypervisor_detected_wins_across_boots():
    log = "[    0.000000] Hypervisor detected: Microsoft Hyper-V\n[    0.000000] Hypervisor detected: KVM\n"
    assert parse_kernel_log(log).hypervisor == "KVM"


def test_pre_5_6_kvm_disabled_by_bios_in_syslog_loses_prefix_and_timestamp():
    line = "Mar  3 10:00:01 host kernel: [    5.120000] kvm: disabled by bios"
    assert parse_kernel_log(line).firmware_disabled == ("kvm: disabled by bios",)


def test_same_message_at_two_boots_in_kern_log_is_listed_once():
    log = (
        "Mar  3 10:00:01 host kernel: [    5.120000] kvm: disabled by bios\n"
        "Mar  4 09:12:44 host kernel: [    4.981113] kvm: disabled by bios\n"
        "Mar  5 08:00:00 host kernel: kvm: disabled by bios\n"  # journalctl export: no timestamp
    )
    assert parse_kernel_log(log).firmware_disabled == ("kvm: disabled by bios",)


def test_svm_disabled_by_bios_in_msr_vm_cr():
    facts = parse_kernel_log("3,700,9000000,-;kvm_amd: SVM disabled (by BIOS) in MSR_VM_CR on CPU 0\n")
    assert facts.firmware_disabled == ("kvm_amd: SVM disabled (by BIOS) in MSR_VM_CR on CPU 0",)


def test_svm_disabled_by_bios_boot_line_from_amd_c_without_cpu_number():
    # Linux >= 6.7 clears X86_FEATURE_SVM at boot and says so once, without a CPU number.
    facts = parse_kernel_log("5,210,310000,-;SVM disabled (by BIOS) in MSR_VM_CR")
    assert facts.firmware_disabled == ("SVM disabled (by BIOS) in MSR_VM_CR",)


def test_vmx_not_enabled_in_feat_ctl():
    msg = "kvm_intel: VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU 3"
    assert parse_kernel_log(msg).firmware_disabled == (msg,)


def test_same_kmsg_message_twice_is_listed_once():
    log = "3,10,100,-;kvm: disabled by bios\n3,11,200,-;kvm: disabled by bios\n"
    assert parse_kernel_log(log).firmware_disabled == ("kvm: disabled by bios",)


@pytest.mark.parametrize(
    "line",
    [
        "[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
        "6,2,0,-;BIOS-provided physical RAM map:",
        "[    0.151000] x86/cpu: SGX disabled by BIOS.",
        "6,80,130000,-;DMI: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.3-debian-1.16.3-2 04/01/2014",
        "kvm_intel: VMX not supported by CPU 0",
    ],
)
def test_lines_that_merely_mention_bios_do_not_count(line):
    assert parse_kernel_log(line).firmware_disabled == ()


def test_empty_log_has_no_facts():
    facts = parse_kernel_log("")
    assert (facts.firmware_disabled, facts.hypervisor) == ((), None)


def test_vmx_inside_txt_disabled_by_bios_counts():
    # arch/x86/kernel/cpu/feat_ctl.c with tboot: pr_err_once("VMX (%s TXT) disabled by BIOS\n", "inside")
    facts = parse_kernel_log("3,300,400,-;x86/cpu: VMX (inside TXT) disabled by BIOS")
    assert facts.firmware_disabled == ("x86/cpu: VMX (inside TXT) disabled by BIOS",)


def test_svm_not_supported_in_a_guest_is_not_firmware_disabled():
    # svm.c __kvm_is_svm_supported(): printed when the SVM feature bit is absent, e.g. in this
    # AMD EPYC KVM guest without nested virt.  Firmware-disabled SVM has its own line: from
    # kvm_amd before 6.7, from arch/x86/kernel/cpu/amd.c at boot since (tested above).
    facts = parse_kernel_log("3,900,5000000,-;kvm_amd: SVM not supported by CPU 0")
    assert facts.firmware_disabled == ()


# --------------------------------------------------------------------------- modprobe


def test_blacklist_with_dash_is_normalized():
    assert parse_modprobe_conf("blacklist kvm-intel\n") == [Block("kvm_intel", "blacklist", 1)]


def test_install_bin_false_and_bin_true_block():
    conf = "install kvm_amd /bin/false\ninstall kvm /bin/true\n"
    assert parse_modprobe_conf(conf) == [
        Block("kvm_amd", "install /bin/false", 1),
        Block("kvm", "install /bin/true", 2),
    ]


def test_install_usr_bin_false_and_exit_1_block():
    conf = "install kvm_intel /usr/bin/false\ninstall kvm exit 1\n"
    assert parse_modprobe_conf(conf) == [
        Block("kvm_intel", "install /usr/bin/false", 1),
        Block("kvm", "install exit 1", 2),
    ]


def test_backslash_continuation_is_joined_and_reports_first_line():
    conf = "# hardening\ninstall kvm_intel \\\n    /bin/false\nblacklist kvm\n"
    assert parse_modprobe_conf(conf) == [
        Block("kvm_intel", "install /bin/false", 2),
        Block("kvm", "blacklist", 4),
    ]


def test_comments_and_trailing_comments():
    conf = "# blacklist kvm\n  # blacklist kvm_amd\nblacklist kvm_intel # nested is broken\n\n"
    assert parse_modprobe_conf(conf) == [Block("kvm_intel", "blacklist", 3)]


def test_options_and_softdep_are_not_blocks():
    conf = "options kvm_intel nested=1\noptions kvm ignore_msrs=1\nsoftdep kvm_amd pre: ccp\nalias kvm-foo kvm\n"
    assert parse_modprobe_conf(conf) == []


def test_install_that_chains_modprobe_is_not_a_block():
    conf = "install kvm_intel /sbin/modprobe --ignore-install kvm_intel $CMDLINE_OPTS\n"
    assert parse_modprobe_conf(conf) == []


def test_bare_blacklist_without_module_is_ignored():
    assert parse_modprobe_conf("blacklist\ninstall kvm\n") == []


def test_modules_builtin_paths_become_names():
    text = "kernel/arch/x86/kvm/kvm.ko\nkernel/arch/x86/kvm/kvm-intel.ko\nkernel/drivers/vhost/vhost.ko\n\n"
    assert parse_modules_builtin(text) == frozenset({"kvm", "kvm_intel", "vhost"})


def test_modules_builtin_ignores_non_ko_lines():
    assert parse_modules_builtin("kernel/arch/x86/kvm/kvm.ko.xz\nmodules.order\n") == frozenset()


def test_proc_modules_users():
    text = (
        "kvm_intel 364544 0 - Live 0x0000000000000000\n"
        "kvm 1081344 1 kvm_intel, Live 0x0\n"
        "irqbypass 12288 1 kvm, Live 0x0000000000000000\n"
    )
    assert parse_proc_modules(text) == {"kvm_intel": (), "kvm": ("kvm_intel",), "irqbypass": ("kvm",)}


def test_proc_modules_taint_suffix_and_several_users():
    # VirtualBox's out-of-tree driver, which fights KVM for VT-x.
    text = "vboxdrv 643072 2 vboxnetadp,vboxnetflt, Live 0xffffffffc0a4a000 (OE)\n"
    assert parse_proc_modules(text) == {"vboxdrv": ("vboxnetadp", "vboxnetflt")}


def test_proc_modules_short_line_is_skipped():
    assert parse_proc_modules("kvm 1081344\n\n") == {}


def test_proc_modules_permanent_marker_is_not_a_user():
    # kernel/module/procfs.c print_unload_info(): "[permanent]," for a module with init but no exit.
    text = "ipv6 401408 20 [permanent], Live 0xffffffffa0145000\n"
    assert parse_proc_modules(text) == {"ipv6": ()}


# --------------------------------------------------------------------------- accounts


PASSWD = """\
root:x:0:0:root:/root:/bin/bash
qemu:x:107:107:qemu user:/nonexistent:/usr/sbin/nologin
broken:x:notanumber:100::/home/broken:/bin/sh
short:x:1002:100
# old account
alice:x:1000:1000:Alice,,,:/home/alice:/bin/zsh\r
+@sysadmins::::::
-mallory::::::
+::::::
"""

GROUP = """\
root:x:0:
kvm:x:36:qemu,alice
libvirt:x:120:alice, bob ,
+:::
kvm-dup:x:36:nobody
broken:x:abc:alice
"""


def test_passwd_skips_nis_comment_short_and_malformed_lines():
    assert parse_passwd(PASSWD) == [
        User("root", 0, 0, "/bin/bash"),
        User("qemu", 107, 107, "/usr/sbin/nologin"),
        User("alice", 1000, 1000, "/bin/zsh"),
    ]


def test_empty_passwd():
    assert parse_passwd("") == []


def test_group_members_are_split_and_trimmed():
    groups = parse_group(GROUP)
    assert groups[36] == Group("kvm", 36, ("qemu", "alice"))
    assert groups[120] == Group("libvirt", 120, ("alice", "bob"))
    assert groups[0] == Group("root", 0, ())


def test_group_first_line_wins_for_a_duplicate_gid_and_bad_gid_is_skipped():
    groups = parse_group(GROUP)
    assert sorted(groups) == [0, 36, 120]
    assert groups[36].name == "kvm"


# --------------------------------------------------------------------------- hypervisor


VENDOR_FROM_LSCPU = {"pHyp": "PowerVM", "Oracle": "Oracle", "KVM": "KVM"}


def corpus_virt_inputs(dump: str) -> VirtInputs:
    root = CORPUS / dump
    cpu = parse_cpuinfo(read(root / "proc" / "cpuinfo"))
    flags = cpu.x86_flags
    dt_dir = root / "proc" / "device-tree"
    device_tree = {p.name: read(p) for p in sorted(dt_dir.iterdir())} if dt_dir.is_dir() else {}
    return VirtInputs(
        x86_flags=flags[0] if flags else frozenset(),
        sysinfo=read(root / "proc" / "sysinfo"),
        pci_devices=read(root / "proc" / "bus" / "pci" / "devices"),
        device_tree=device_tree,
        family=arch_family(arch_from_cpuinfo(cpu)),
        s390_versions=cpu.s390_versions,
        ppc_platform=cpu.first("platform"),
        ppc_machine=cpu.first("machine"),
    )


# Where lscpu names no hypervisor: x86 bare metal shows itself (flags without 'hypervisor'), a pSeries LPAR
# with an IBM model is PowerVM (lscpu reads only the device tree); elsewhere the files cannot tell.
NO_LSCPU_VENDOR = {"vmware_fpe": None, "x86_64-64cpu": None, "x86_64-64cpu-linux6.2": None,
                   "x86_64-dell_e4310": None, "x86_64-epyc_7451": None, "ppc64-POWER7": "PowerVM"}


@needs_corpus
@pytest.mark.parametrize("row", EXPECTED)
def test_detect_hypervisor_agrees_with_lscpu(row):
    facts = detect_hypervisor(corpus_virt_inputs(row["dump"]))
    lscpu = row["hypervisor_vendor"]
    if not lscpu:
        expected = NO_LSCPU_VENDOR.get(row["dump"], "unknown")
        assert (facts.vendor, facts.in_guest) == (expected, expected == "PowerVM")
    elif lscpu == "IBM":
        assert facts.vendor.startswith("IBM") and facts.in_guest
    else:
        assert (facts.vendor, facts.in_guest) == (VENDOR_FROM_LSCPU[lscpu], True)


@needs_corpus
def test_powervm_lpar_from_device_tree_files_with_nuls():
    inp = corpus_virt_inputs("ppc64-POWER7-64cpu")
    assert set(inp.device_tree) == {"ibm,partition-name", "hmc-managed?"}
    assert detect_hypervisor(inp) == VirtFacts("PowerVM", "device-tree ibm,partition-name + hmc-managed?", True)


@needs_corpus
def test_virtualbox_found_by_pci_graphics_id():
    facts = detect_hypervisor(corpus_virt_inputs("vbox-win"))
    assert facts == VirtFacts("Oracle", "PCI device 80ee:beef", True)


@needs_corpus
@pytest.mark.parametrize(
    "dump, vendor",
    [
        ("s390-lpar", "IBM PR/SM"),
        ("s390-lpar-drawer", "IBM PR/SM"),
        ("s390-zvm", "IBM z/VM 6.1.0"),  # "z/VM    6.1.0   " with its padding collapsed
        ("s390-kvm", "KVM"),
        ("s390-nested-virt", "KVM"),  # VM00 KVM/Linux inside VM01 z/VM: the innermost level counts
    ],
)
def test_sysinfo_hypervisor_levels(dump, vendor):
    assert sysinfo_hypervisor(read(CORPUS / dump / "proc" / "sysinfo")) == vendor


def test_sysinfo_without_lpar_or_vm_levels_is_none():
    assert sysinfo_hypervisor("Manufacturer:         IBM\nType:                 2817\n") is None
    assert sysinfo_hypervisor("") is None


@pytest.mark.parametrize(
    "signature, vendor, shown",
    [
        ("KVMKVMKVM\0\0\0", "KVM", "KVMKVMKVM"),
        ("Microsoft Hv", "Microsoft", "Microsoft Hv"),
        ("VMwareVMware", "VMware", "VMwareVMware"),
        ("XenVMMXenVMM", "Xen", "XenVMMXenVMM"),
        ("TCGTCGTCGTCG", "QEMU (TCG)", "TCGTCGTCGTCG"),
        ("bhyve bhyve ", "bhyve", "bhyve bhyve"),
    ],
)
def test_cpuid_signature(signature, vendor, shown):
    facts = detect_hypervisor(VirtInputs(x86_flags=frozenset({"hypervisor"}), cpuid_signature=signature))
    assert facts == VirtFacts(vendor, f"CPUID 0x40000000 signature {shown!r}", True)


def test_unknown_cpuid_signature_with_hypervisor_flag_is_an_unknown_guest():
    facts = detect_hypervisor(VirtInputs(x86_flags=frozenset({"hypervisor"}), cpuid_signature="NotARealHv!!"))
    assert facts == VirtFacts("unknown", "CPU flag 'hypervisor' (vendor not identified)", True)


def test_kvm_with_hyperv_enlightenments_is_kvm():
    facts = detect_hypervisor(VirtInputs(x86_flags=frozenset({"hypervisor"}), cpuid_signature="Linux KVM Hv"))
    assert (facts.vendor, facts.in_guest) == ("KVM", True)


def test_boot_log_hyperv_name_matches_the_cpuid_name():
    facts = detect_hypervisor(VirtInputs(boot_log_hypervisor="Microsoft Hyper-V"))
    assert facts.vendor == "Microsoft"


def test_ec2_nitro_guest_with_hypervisor_flag_is_kvm():
    dmi = {"sys_vendor": "Amazon EC2", "product_name": "m5.large"}
    facts = detect_hypervisor(VirtInputs(x86_flags=frozenset({"hypervisor"}), dmi=dmi))
    assert (facts.vendor, facts.in_guest) == ("KVM", True)
    assert facts.source == "DMI product_name='m5.large', sys_vendor='Amazon EC2'"


def test_ec2_metal_without_hypervisor_flag_stays_bare_metal():
    dmi = {"sys_vendor": "Amazon EC2", "product_name": "m5.metal", "bios_vendor": "Amazon EC2"}
    assert detect_hypervisor(VirtInputs(x86_flags=frozenset({"vmx", "lm"}), dmi=dmi)) == VirtFacts(
        None, "x86 flags without the CPUID hypervisor bit", False
    )


def test_innotek_dmi_is_virtualbox_even_without_flag():
    dmi = {"sys_vendor": "innotek GmbH", "product_name": "VirtualBox", "bios_vendor": "innotek GmbH"}
    assert detect_hypervisor(VirtInputs(dmi=dmi)).vendor == "Oracle"


def test_hyper_v_dmi_needs_both_microsoft_corporation_and_virtual_machine():
    hyperv = {"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine"}
    surface = {"sys_vendor": "Microsoft Corporation", "product_name": "Surface Pro 7"}
    assert detect_hypervisor(VirtInputs(dmi=hyperv)).vendor == "Microsoft"
    assert detect_hypervisor(VirtInputs(x86_flags=frozenset({"lm"}), dmi=surface)) == VirtFacts(
        None, "x86 flags without the CPUID hypervisor bit", False)


def test_qemu_dmi_counts_only_with_hypervisor_flag():
    dmi = {"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)"}
    assert detect_hypervisor(VirtInputs(x86_flags=frozenset({"hypervisor"}), dmi=dmi)).vendor == "KVM"
    assert detect_hypervisor(VirtInputs(x86_flags=frozenset({"lm"}), dmi=dmi)).vendor is None


def test_firecracker_without_dmi_is_found_by_kvm_clock():
    cpu = parse_cpuinfo(data("amd-epyc-kvm-guest.cpuinfo"))
    inp = VirtInputs(x86_flags=cpu.x86_flags[0], clocksources="tsc kvm-clock \n")
    assert detect_hypervisor(inp) == VirtFacts("KVM", "clock source kvm-clock", True)


def test_kvm_guest_capture_with_only_the_flag_is_unknown_guest():
    cpu = parse_cpuinfo(data("amd-epyc-kvm-guest.cpuinfo"))
    facts = detect_hypervisor(VirtInputs(x86_flags=cpu.x86_flags[0], clocksources="tsc"))
    assert facts == VirtFacts("unknown", "CPU flag 'hypervisor' (vendor not identified)", True)


def test_boot_log_hypervisor_is_used_when_nothing_else_names_one():
    facts = detect_hypervisor(VirtInputs(boot_log_hypervisor="KVM"))
    assert facts == VirtFacts("KVM", "kernel log 'Hypervisor detected'", True)


def test_xen_dom0_control_d_is_not_a_guest():
    inp = VirtInputs(has_proc_xen=True, xen_capabilities="control_d\n", x86_flags=frozenset({"hypervisor"}))
    assert detect_hypervisor(inp) == VirtFacts("Xen", "/proc/xen/capabilities control_d (Xen dom0)", False, "dom0")


def test_xen_domu_with_empty_capabilities_is_xen_guest():
    assert detect_hypervisor(VirtInputs(has_proc_xen=True, xen_capabilities="")) == VirtFacts(
        "Xen", "/proc/xen without control_d (Xen domU)", True)
    assert detect_hypervisor(VirtInputs(has_proc_xen=True)).vendor == "Xen"


@pytest.mark.parametrize("osrelease", ["4.4.0-19041-Microsoft", "5.15.153.1-microsoft-standard-WSL2"])
def test_wsl_osrelease_is_microsoft(osrelease):
    assert detect_hypervisor(VirtInputs(osrelease=osrelease)) == VirtFacts(
        "Microsoft", "osrelease names Microsoft (WSL)", True
    )


def test_azure_kernel_release_alone_is_not_evidence():
    assert detect_hypervisor(VirtInputs(osrelease="5.15.0-1051-azure")).vendor == "unknown"


def test_powernv_device_tree_is_bare_metal_power():
    dt = {"compatible": "ibm,powernv\0", "ibm,partition-name": "x\0", "hmc-managed?": ""}
    assert detect_hypervisor(VirtInputs(device_tree=dt)) == VirtFacts(
        None, "device-tree compatible ibm,powernv", False
    )


def test_qemu_pseries_device_tree_is_kvm():
    dt = {"compatible": "qemu,pseries\0"}
    assert detect_hypervisor(VirtInputs(device_tree=dt)).vendor == "KVM"


def test_iseries_wins_over_everything():
    inp = VirtInputs(has_iseries=True, device_tree={"compatible": "ibm,powernv"})
    assert detect_hypervisor(inp) == VirtFacts("OS/400", "/proc/iSeries", True)


def test_no_inputs_is_unknown_not_bare_metal():
    assert detect_hypervisor(VirtInputs()) == VirtFacts(
        "unknown", "nothing read tells bare metal from a guest", False)


# --- MSRs (kvmcheck/parsers/msr.py) ---------------------------------------------------------------

from kvmcheck.parsers.msr import amd_vm_cr, intel_feature_control, msr_value  # noqa: E402


@pytest.mark.parametrize("value, disabled, locked", [
    (0x5, False, True),   # typical server firmware: locked, VMX outside SMX on
    (0x1, True, True),    # locked with VMX off: "Intel Virtualization Technology" disabled in setup
    (0x0, False, False),  # unlocked: the kernel sets and locks it (Linux >= 5.6)
    (0x3, True, True),    # VMX inside SMX only (TXT) is still off for KVM
])
def test_intel_feature_control_bits(value, disabled, locked):
    state = intel_feature_control(value)
    assert (state.disabled, state.locked) == (disabled, locked)


@pytest.mark.parametrize("value, disabled", [(0x0, False), (0x8, False), (0x10, True), (0x18, True)])
def test_amd_vm_cr_svmdis(value, disabled):
    assert amd_vm_cr(value).disabled is disabled


def test_msr_value_needs_exactly_eight_bytes():
    assert msr_value(b"\x05" + b"\0" * 7) == 5
    assert msr_value(b"\x05\0\0") is None


# --- kvmcheck/parsers/bootloader.py: the next boot's command line -----------------------------------------------
from kvmcheck.parsers import bootloader as bl  # noqa: E402 - this section's parser
from kvmcheck.parsers.cmdline import parse_cmdline  # noqa: E402

GRUB_MENU = """
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
else
   set default="${saved_entry}"
fi
if [ -n "${boot_counter}" -a "${boot_success}" = "0" ]; then
  if  [ "${boot_counter}" = "0" -o "${boot_counter}" = "-1" ]; then
    set default=1
  fi
fi
function load_video {
  insmod all_video
}
menuentry 'Ubuntu' --class ubuntu $menuentry_id_option 'gnulinux-simple-u' {
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	linux	/boot/vmlinuz-6.8.0-45-generic root=UUID=u ro  quiet splash $vt_handoff
}
submenu 'Advanced options for Ubuntu' $menuentry_id_option 'gnulinux-advanced-u' {
	menuentry 'Ubuntu, with Linux 6.8.0-45-generic' $menuentry_id_option 'gnulinux-6.8.0-45-generic-advanced-u' {
		linux	/boot/vmlinuz-6.8.0-45-generic root=UUID=u ro  quiet splash intel_iommu=on $vt_handoff
	}
	menuentry 'Ubuntu, with Linux 6.8.0-45-generic (recovery mode)' $menuentry_id_option 'gnulinux-6.8.0-45-generic-recovery-u' {
		linux	/boot/vmlinuz-6.8.0-45-generic root=UUID=u ro recovery nomodeset dis_ucode_ldr
	}
}
menuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {
	fwsetup
}
"""


def test_grub_words_quote_and_expand_like_grub_without_running_anything():
    words = bl.split_words("""a 'b $x' "c $x" $x ${y} `uname -r` $(id) d\\ e""", {"x": "1 2"})
    assert words.words == ("a", "b $x", "c 1 2", "1", "2", "`uname -r`", "$(id)", "d e")
    assert words.unresolved == ("y", "`uname -r`", "$(id)")
    # A shell assignment's value is never split; without variables nothing expands.
    assert bl.split_words('"$x"', {"x": " a  b "}).words == (" a  b ",)
    assert bl.split_words("${saved_entry}", None).words == ("${saved_entry}",)


def test_grub_cfg_menu_default_paths_and_guards():
    cfg = bl.parse_grub_cfg(GRUB_MENU)
    assert [(i.kind, i.title) for i in cfg.items] == [("entry", "Ubuntu"), ("submenu", "Advanced options for Ubuntu"),
                                                      ("entry", "UEFI Firmware Settings")]
    assert cfg.defaults == (("next_entry", "${next_entry}"), ("", "${saved_entry}"), ("boot_counter", "1"))
    # no saved_entry: the first entry; $vt_handoff unset in grubenv expands to nothing, as in GRUB
    first = bl.grub_next_boot(cfg, {})
    assert (first.title, first.args[-2:], first.unresolved) == ("Ubuntu", ("quiet", "splash"), ("vt_handoff",))
    for saved in ("1>0", "gnulinux-advanced-u>gnulinux-6.8.0-45-generic-advanced-u",
                  "Advanced options for Ubuntu>Ubuntu, with Linux 6.8.0-45-generic"):
        choice = bl.grub_next_boot(cfg, {"saved_entry": saved, "vt_handoff": "vt.handoff=7"})
        assert (choice.entry_id, choice.args[-2:]) == ("gnulinux-6.8.0-45-generic-advanced-u",
                                                       ("intel_iommu=on", "vt.handoff=7")), saved
    assert bl.grub_next_boot(cfg, {"saved_entry": "1>1"}).special  # a recovery entry
    assert bl.grub_next_boot(cfg, {"next_entry": "0"}).once
    assert bl.grub_next_boot(cfg, {"saved_entry": "gone"}).how.endswith("names no entry: GRUB boots the first")
    assert bl.grub_next_boot(cfg, {"saved_entry": "1"}).why == "the default names a submenu, not an entry"
    assert bl.grub_next_boot(cfg, {"saved_entry": "2"}).args is None  # the firmware menu has no linux line
    # RHEL/Fedora 08_fallback_counting: a boot counter run out takes entry 1, otherwise it is ignored
    assert bl.grub_next_boot(cfg, {"boot_counter": "0", "boot_success": "0"}).how.startswith("boot_counter")
    assert bl.grub_next_boot(cfg, {"boot_counter": "2", "boot_success": "0"}).title == "Ubuntu"
    # the EFI partition's stub on Ubuntu and RHEL >= 9 only loads the real grub.cfg
    stub = "search.fs_uuid 0c4a-11d2 root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n"
    assert bl.parse_grub_cfg(stub).stub and not bl.parse_grub_cfg(GRUB_MENU).stub


def test_grubenv_block_and_escapes():
    env = bl.parse_grubenv("# GRUB Environment Block\nsaved_entry=a>b\nkernelopts=root=/dev/sda1 ro \nx=1\\n2\n"
                           + "#" * 900)
    assert env == {"saved_entry": "a>b", "kernelopts": "root=/dev/sda1 ro ", "x": "1\n2"}


def test_bls_versions_sort_newest_first_and_rescue_last():
    assert bl.vercmp("5.14.0-427.16.1.el9_4", "5.14.0-427.13.1.el9_4") == 1
    assert bl.vercmp("6.1.0-18-amd64", "6.1.0-9-amd64") == 1  # numbers, not text
    assert bl.vercmp("1.0~rc1", "1.0") == -1 and bl.vercmp("1.0", "1.0") == 0
    entries = [bl.parse_bls_entry(f"m-{v}.conf", f"title T\nversion {v}\nlinux /vmlinuz-{v}\noptions ro\n")
               for v in ("0-rescue-m", "5.14.0-427.13.1.el9_4.x86_64", "5.14.0-427.16.1.el9_4.x86_64")]
    assert [e.version for e in bl.grub_bls_order(entries)] == [
        "5.14.0-427.16.1.el9_4.x86_64", "5.14.0-427.13.1.el9_4.x86_64", "0-rescue-m"]
    two = bl.parse_bls_entry("x.conf", "options root=/dev/vda1 ro\noptions intel_iommu=on\n# options no\n")
    assert (two.id, two.options) == ("x", "root=/dev/vda1 ro intel_iommu=on")


def test_systemd_boot_sort_keys_and_default_glob():
    def entry(name, version, sort_key=""):
        return bl.BlsEntry(name, version=version, sort_key=sort_key, linux="/linux", options=f"v={version}")

    # Without a sort-key, by file name in reverse version order: kernel-install's MACHINEID-VERSION names put
    # the newest kernel first; a sort-key puts its entry before all of them.
    entries = [entry("m-6.1.0-9", "6.1.0-9"), entry("m-6.1.0-18", "6.1.0-18"), entry("other", "")]
    assert [e.id for e in bl.systemd_boot_order(entries)] == ["other", "m-6.1.0-18", "m-6.1.0-9"]
    entries.append(entry("z-5.10", "5.10", "debian"))
    assert bl.systemd_boot_order(entries)[0].id == "z-5.10"
    assert bl.systemd_boot_next({"default": "m-*-9"}, entries).args == ("v=6.1.0-9",)
    assert bl.systemd_boot_next({"default": "m-6.1.0-9.conf"}, entries).args == ("v=6.1.0-9",)
    assert bl.systemd_boot_next({}, entries).entry_id == "z-5.10"
    assert bl.systemd_boot_next({"default": "@saved"}, entries).args is None


def test_default_grub_assignments_are_read_not_run():
    files = [("/etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n'
                                   '# GRUB_CMDLINE_LINUX="ignored"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n'
                                   'GRUB_CMDLINE_LINUX=""\nif [ -e /x ]; then GRUB_CMDLINE_LINUX="never"; fi\n'),
             ("/etc/default/grub.d/50-kvm.cfg", "export GRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT} "
                                                "intel_iommu=on\"\nGRUB_CMDLINE_LINUX='$HOME kvm-intel.nested=1'\n")]
    found = bl.parse_shell_assignments(files)
    assert found.values["GRUB_CMDLINE_LINUX_DEFAULT"] == "quiet splash intel_iommu=on"
    assert found.values["GRUB_CMDLINE_LINUX"] == "$HOME kvm-intel.nested=1"  # single quotes: literal
    assert found.where["GRUB_CMDLINE_LINUX_DEFAULT"] == "/etc/default/grub.d/50-kvm.cfg"
    assert found.unresolved == ("`lsb_release -i -s 2> /dev/null || echo Debian`",)
    # 'if', 'then GRUB_CMDLINE_LINUX="never"' and 'fi' are statements kvmcheck does not evaluate
    assert found.skipped == 3
    assert bl.tracked(bl.grub_default_args(found)) == {"kvm_intel.nested": ("kvm_intel.nested=1",),
                                                       "intel_iommu": ("intel_iommu=on",)}


def test_differences_in_the_judged_parameters_only():
    now = parse_cmdline("BOOT_IMAGE=/vmlinuz ro quiet kvm-intel.nested=1 hugepagesz=1G hugepages=4 mitigations=off")
    later = parse_cmdline("BOOT_IMAGE=/vmlinuz-new ro kvm_intel.nested=1 hugepagesz=2M hugepages=4 intel_iommu=on")
    changes = bl.differences(now, later)
    assert changes == (bl.ArgChange("hugepages", ("hugepagesz=1G", "hugepages=4"), ("hugepagesz=2M", "hugepages=4")),
                       bl.ArgChange("intel_iommu", (), ("intel_iommu=on",)),
                       bl.ArgChange("mitigations", ("mitigations=off",), ()))
    assert bl.describe(changes, "/proc/cmdline", "grub.cfg") == (
        "intel_iommu=on is in grub.cfg, not in /proc/cmdline; mitigations=off is in /proc/cmdline, not in grub.cfg; "
        "grub.cfg has hugepagesz=2M hugepages=4 where /proc/cmdline has hugepagesz=1G hugepages=4")
    assert bl.tracked_key("kvm_amd.avic") == "kvm_amd.avic" and bl.tracked_key("kvmfoo.x") is None
