# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck fleet --migration end to end: host reports made by kvmcheck.run from captured roots of real x86
machines (the lscpu corpus, tests/data/machines, this project's EPYC Genoa VM), written as files, read by the
streaming fleet, pooled, rendered in json, text and html (in headless chromium when it is installed), and
--explain A B."""
from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path

import pytest

import kvmcheck
from conftest import CORPUS, HERE, HOSTS, fixed_report, needs_corpus, validate_json
from kvmcheck.tools import fleet
from kvmcheck.tools.cpu_models import BY_NAME
from kvmcheck.tools.migration import MATRIX_MAX, PALETTE, compact

MACHINES = HERE / "data" / "machines"
FLEET_SCHEMA = HERE.parent / "reports" / "fleet.schema.json"
REPORT_SCHEMA = HERE.parent / "reports" / "report.schema.json"
# Real machines: (root, what it is)
ROOTS = {
    "tigerlake": (CORPUS / "x86_64-64cpu-linux6.2", "Core i7-1165G7, Tiger Lake"),
    "westmere": (CORPUS / "x86_64-dell_e4310", "Core i5 M 560, Westmere"),
    "epyc-naples": (CORPUS / "x86_64-epyc_7451", "EPYC 7451, Zen 1"),
    "nehalem": (MACHINES / "ul-x86_64-dell_poweredgeR610", "Xeon E5520, Nehalem-EP"),
    "core2": (MACHINES / "ul-x86_64-dell_poweredge1950", "Xeon E5345, Core 2 (Clovertown)"),
    "ryzen": (MACHINES / "pyc-ubuntu_22_04_x86_64", "Ryzen 7 2700X, Zen+"),
    "genoa": (HOSTS / "migration-epyc-genoa-vm", "EPYC (family 25 model 17, Genoa), a KVM guest"),
}
NAS = {"type": "nfs4", "source": "nas01:/vm", "target": "/var/lib/libvirt/images"}


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@pytest.fixture(scope="module")
def real():
    """kind -> the report kvmcheck.run makes of that real machine's root (as a dict)."""
    if not (CORPUS / "expected.tsv").is_file():
        pytest.skip(f"the lscpu corpus is not beside the checkout ({CORPUS}): put the shared material at ../shared")
    return {kind: fixed_report(root).to_dict() for kind, (root, _) in ROOTS.items()}


def host(real, kind: str, name: str, qemu="8.2.2", machines=("pc-q35-8.2", "pc-q35-7.2", "pc-i440fx-8.2"),
         storage=(NAS,)) -> dict:
    """A copy of kind's report as host name, with the QEMU and storage a fleet of such hosts would have (the
    captured roots hold the CPU only)."""
    doc = copy.deepcopy(real[kind])
    doc["host"]["hostname"] = name
    doc["generated_at"] = now_iso()
    doc["migration"]["qemu"] = {"version": qemu, "source": "qmp", "machine_types": list(machines)} if qemu else None
    doc["migration"]["shared_storage"] = [dict(s) for s in storage]
    return doc


def write(folder: Path, docs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        (folder / f"{doc['host']['hostname']}.json").write_text(json.dumps(doc))
    return folder


def pools_of(folder: Path, capsys) -> dict:
    assert fleet.fleet_command([str(folder)], "json", show_progress=False, migration=True) in (0, 1)
    data = json.loads(capsys.readouterr().out)
    validate_json(FLEET_SCHEMA, data)
    return data["migration"]


# --- what each report records -------------------------------------------------------------------------
@needs_corpus
def test_reports_record_what_migration_depends_on_offline(real):
    genoa = real["genoa"]
    validate_json(REPORT_SCHEMA, genoa)
    block = genoa["migration"]
    assert {k: v for k, v in block["cpu"].items() if k != "flags"} == {
        "vendor": "AuthenticAMD", "family": 25, "model": 17, "stepping": 1, "microcode": "0x1000065"}
    flags = set(block["cpu"]["flags"])
    assert {"avx512f", "avx512_bf16", "vaes", "sha_ni", "xsaves"} <= flags
    assert not flags & {"hypervisor", "constant_tsc", "rep_good", "svm", "monitor", "x2apic", "cpuid"}
    assert (block["kernel"], block["numa_nodes"], block["kvm_works"], block["qemu"]) == (
        (HOSTS / "migration-epyc-genoa-vm/proc/sys/kernel/osrelease").read_text().strip(), 1, None, None)
    assert real["tigerlake"]["migration"]["cpu"]["vendor"] == "GenuineIntel"


def test_a_report_names_its_shared_storage_and_images_dir(host_root):
    block = fixed_report(host_root("prepared-intel-host")).to_dict()["migration"]
    assert block["shared_storage"] == [{"type": "nfs4", "source": "nas01.example.com:/export/vmstore",
                                        "target": "/var/lib/libvirt/images"}]
    assert block["images_dir"] == "/var/lib/libvirt/images"
    assert block["cpu"]["vendor"] == "GenuineIntel" and BY_NAME["Westmere"] <= set(block["cpu"]["flags"])


def test_the_live_report_records_what_this_machine_runs():
    report = kvmcheck.run("/", only=["kvm.device", "kvm.guest-run", "qemu.accel", "packages.virt"]).to_dict()
    validate_json(REPORT_SCHEMA, report)
    block = report["migration"]
    vendor = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("vendor_id"))
    assert block["cpu"]["vendor"] == vendor
    guest = next(c for c in report["checks"] if c["id"] == "kvm.guest-run")
    assert block["kvm_works"] == {"pass": True, "fail": False}.get(guest["status"])
    accel = next(c for c in report["checks"] if c["id"] == "qemu.accel")
    if accel["evidence"].get("version"):  # QEMU answered: its version and the machine types it listed
        assert block["qemu"]["version"] == accel["evidence"]["version"] and block["qemu"]["source"] == "qmp"
        assert len(block["qemu"]["machine_types"]) == accel["evidence"]["machine_types"]


# --- pools -----------------------------------------------------------------------------------------------
@needs_corpus
def test_two_hosts_of_one_generation_share_a_pool_with_every_flag(real, tmp_path, capsys):
    folder = write(tmp_path / "f", [host(real, "tigerlake", "tl-1"), host(real, "tigerlake", "tl-2")])
    (pool,) = pools_of(folder, capsys)["pools"]
    assert (pool["vendor"], pool["hosts"], pool["costs"]) == ("GenuineIntel", ["tl-1", "tl-2"], [])
    assert pool["baseline_flags"] == real["tigerlake"]["migration"]["cpu"]["flags"]
    assert pool["model"] == "Skylake-Client-noTSX-IBRS"
    assert (pool["newest_machine_types"], pool["shared_storage"]) == (
        ["pc-i440fx-8.2", "pc-q35-8.2"], [{"source": "nas01:/vm", "target": "/var/lib/libvirt/images"}])


@needs_corpus
def test_an_older_intel_host_lowers_the_baseline_and_names_the_flags_it_removes(real, tmp_path, capsys):
    docs = [host(real, "tigerlake", "tl-1"), host(real, "tigerlake", "tl-2"),
            host(real, "westmere", "old", qemu="6.2.0", machines=("pc-q35-6.2", "pc-i440fx-6.2"))]
    (pool,) = pools_of(write(tmp_path / "f", docs), capsys)["pools"]
    new, old = (set(real[k]["migration"]["cpu"]["flags"]) for k in ("tigerlake", "westmere"))
    assert pool["model"] == "Westmere" and set(pool["baseline_flags"]) == new & old
    assert pool["costs"] == [{"host": "old", "flags": sorted(new - old), "older_qemu": "6.2.0"}]
    assert {"avx", "avx2", "avx512f", "xsave", "sha_ni"} <= set(pool["costs"][0]["flags"])
    assert pool["generations"] == [{"model": "Westmere", "hosts": ["old"]},
                                   {"model": "Skylake-Client-noTSX-IBRS", "hosts": ["tl-1", "tl-2"]}]
    assert (pool["machine_types"], pool["oldest_qemu"]) == ([], "6.2.0")  # no machine type every QEMU offers


@needs_corpus
def test_an_amd_host_is_in_a_pool_of_its_own(real, tmp_path, capsys):
    docs = [host(real, "tigerlake", "tl-1"), host(real, "westmere", "old"), host(real, "epyc-naples", "epyc")]
    found = pools_of(write(tmp_path / "f", docs), capsys)
    assert [(p["vendor"], p["hosts"], p["model"]) for p in found["pools"]] == [
        ("GenuineIntel", ["old", "tl-1"], "Westmere"), ("AuthenticAMD", ["epyc"], "EPYC")]
    assert found["outside"] == []


@needs_corpus
def test_generations_of_both_vendors(real, tmp_path, capsys):
    """Nehalem to Tiger Lake, Zen 1 to Zen+: each vendor's pool falls to what its oldest host runs.  The Core 2
    server (its dump shows no vmx: VT off in its firmware) and the Genoa VM (no nested virtualization) cannot
    take guests at all: cpu.virt-flags failed on them, so they are in no pool, whatever their flags."""
    docs = [host(real, kind, kind) for kind in ROOTS]
    found = pools_of(write(tmp_path / "f", docs), capsys)
    intel, amd = found["pools"]
    assert [(g["model"], g["hosts"]) for g in intel["generations"]] == [
        ("Nehalem", ["nehalem"]), ("Westmere", ["westmere"]), ("Skylake-Client-noTSX-IBRS", ["tigerlake"])]
    assert intel["model"] == "Nehalem"
    assert intel["costs"][0]["host"] == "nehalem" and "aes" in intel["costs"][0]["flags"]
    assert [(g["model"], g["hosts"]) for g in amd["generations"]] == [("EPYC", ["epyc-naples", "ryzen"])]
    assert amd["model"] == "EPYC"
    outside = {o["host"]: o["reason"] for o in found["outside"]}
    assert sorted(outside) == ["core2", "genoa"]
    assert all("cpu.virt-flags failed" in why for why in outside.values())


def test_hosts_without_a_block_or_with_a_broken_one_are_outside(host_root, tmp_path, capsys):
    base = fixed_report(host_root("prepared-intel-host")).to_dict()
    old = copy.deepcopy(base)
    del old["migration"]  # a report of an earlier kvmcheck
    old["host"]["hostname"] = "old-kvmcheck"
    hostile = copy.deepcopy(base)
    hostile["host"]["hostname"] = "hostile"
    hostile["migration"] = {"cpu": {"vendor": ["x"], "flags": "avx"}, "qemu": 7, "shared_storage": {"a": 1}}
    broken = copy.deepcopy(base)
    broken["host"]["hostname"] = "no-kvm"
    broken["migration"]["kvm_works"] = False
    for doc in (base, old, hostile, broken):
        doc["generated_at"] = now_iso()
    found = pools_of(write(tmp_path / "f", [base, old, hostile, broken]), capsys)
    assert [p["hosts"] for p in found["pools"]] == [["virt01"]]
    assert [(o["host"], o["reason"].split(" (")[0].split(":")[0]) for o in found["outside"]] == [
        ("hostile", "its report has no CPU flags"), ("no-kvm", "/dev/kvm did not run a guest"),
        ("old-kvmcheck", "its report has no CPU flags")]


def test_without_migration_nothing_is_kept_and_the_output_is_unchanged(host_root, tmp_path, capsys):
    doc = fixed_report(host_root("prepared-intel-host")).to_dict()
    doc["generated_at"] = now_iso()
    folder = write(tmp_path / "f", [doc])
    fleet.fleet_command([str(folder)], "json", show_progress=False)
    assert "migration" not in json.loads(capsys.readouterr().out)
    view = fleet.collect([str(folder)], keep=fleet.FORMAT_KEEPS["json"])
    assert [r.migration for r in view.newest.values()] == [None]


@needs_corpus
def test_hosts_of_one_kind_share_one_flag_set(real, tmp_path):
    """The memory profile: 300 hosts of three CPUs, read by two workers in chunks, hold three flag sets."""
    docs = [host(real, kind, f"{kind}-{i}") for i in range(100) for kind in ("tigerlake", "westmere", "genoa")]
    folder = write(tmp_path / "f", docs)
    view = fleet.collect([str(folder)], workers=2, keep=fleet.FORMAT_KEEPS["json"] + (fleet.MIGRATION,))
    blocks = [r.migration for r in view.newest.values()]
    assert len(blocks) == 300
    assert len({id(b.flags) for b in blocks}) == 3 and len({id(b) for b in blocks}) == 3
    assert len({id(b.storage) for b in blocks}) == 1


def test_compact_bounds_a_hostile_block():
    block = {"cpu": {"vendor": "GenuineIntel", "flags": ["f%d" % i for i in range(100000)] + ["x" * 1000, 5]},
             "qemu": {"version": "9.0.0", "machine_types": ["pc-q35-9.0"] * 3 + [None]},
             "shared_storage": [{"source": "a", "target": "/b"}, {"source": 1}], "kvm_works": "yes"}
    got = compact(block, "x86_64")
    assert len(got.flags) == 512 and "x" * 1000 not in got.flags
    assert (got.machine_types, got.storage, got.kvm_works) == (frozenset({"pc-q35-9.0"}), frozenset({("a", "/b")}),
                                                               None)
    assert compact(None, "x86_64") is None and compact([], None) is None


# --- views -----------------------------------------------------------------------------------------------
@pytest.fixture
def mixed(real, tmp_path):
    docs = [host(real, "tigerlake", "tl-1"), host(real, "tigerlake", "tl-2"),
            host(real, "westmere", "old", qemu="6.2.0", machines=("pc-q35-6.2",), storage=()),
            host(real, "epyc-naples", "epyc")]
    return write(tmp_path / "mixed", docs)


@needs_corpus
def test_text_view(mixed, capsys):
    fleet.fleet_command([str(mixed)], "text", show_progress=False, migration=True)
    out = capsys.readouterr().out
    section = out[out.index("Migration pools"):]
    assert "  GenuineIntel: 3 hosts, model Westmere, baseline" in section
    assert "  AuthenticAMD: 1 host, model EPYC" in section
    assert "cost of old: lacks" in section and "; older QEMU 6.2.0" in section
    assert "shared storage: none on every host: disks move with the guest (--copy-storage-all)" in section


@needs_corpus
def test_explain_names_flags_machine_type_and_storage(mixed, capsys):
    status = fleet.fleet_command([str(mixed)], "text", show_progress=False, explain=("tl-1", "old"))
    out = capsys.readouterr().out
    assert status == 1
    lines = out.splitlines()
    assert lines[0] == "kvmcheck fleet: can a guest move from tl-1 to old?"
    assert lines[1] == "  host-model / host-passthrough: no"
    assert lines[2].startswith("      old lacks ") and " flags of tl-1's CPU: " in lines[2] and "avx2" in lines[2]
    assert "old's QEMU does not offer the machine types pc-i440fx-8.2, pc-q35-8.2" in out
    assert "old does not mount tl-1's shared storage nas01:/vm at /var/lib/libvirt/images" in out
    assert "  the pool's baseline model (Westmere): no" in out  # the model fits; machine type and storage do not

    assert fleet.fleet_command([str(mixed)], "json", show_progress=False, explain=("tl-1", "tl-2")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(m["mode"], m["possible"], m["model"], m["reasons"]) for m in doc["moves"]] == [
        ("host-model", True, None, []), ("baseline", True, "Westmere", [])]

    assert fleet.fleet_command([str(mixed)], "json", show_progress=False, explain=("old", "epyc")) == 1
    doc = json.loads(capsys.readouterr().out)
    assert all(not m["possible"] and "different CPU vendors" in m["blockers"][0] for m in doc["moves"])

    assert fleet.fleet_command([str(mixed)], "text", show_progress=False, explain=("tl-1", "nope")) == 2
    assert "no report of nope among the fleet's hosts" in capsys.readouterr().err
    assert fleet.fleet_command([str(mixed)], "html", show_progress=False, explain=("tl-1", "old")) == 2


@needs_corpus
def test_explain_on_the_command_line(mixed):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", "from kvmcheck.cli import main; main()", "fleet", str(mixed),
                          "--migration", "--explain", "old", "tl-2", "--max-age", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert run.stdout.splitlines()[1:3] == ["  host-model / host-passthrough: no",
                                            "      tl-2's QEMU does not offer the machine type pc-q35-6.2 that a guest "
                                            "defined on old gets (define the guest with a machine type both offer)"]


def html_page(mixed, tmp_path) -> str:
    out = tmp_path / "fleet.html"
    fleet.fleet_command([str(mixed)], "html", output=str(out), show_progress=False, migration=True)
    return out.read_text()


@needs_corpus
def test_html_shows_the_pools_as_a_picture(mixed, tmp_path):
    from test_fleet import Collect

    page = html_page(mixed, tmp_path)
    parser = Collect()
    parser.feed(page)
    assert "script" not in parser.tags and not any(t in parser.tags for t in ("link", "img", "iframe"))
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert page.count('class="pool"') == 2  # a bar per pool
    assert page.count('aria-label="host by host migration matrix"') == 1
    assert page.count('class="move-') == 16  # 4 x 4 hosts
    # tl-1 -> tl-2: a host-model guest moves; tl-1 -> old: not even the baseline (machine type, storage)
    assert page.count('class="move-host-model"') == 2  # tl-1 <-> tl-2; old -> tl-*: no pc-q35-6.2 there
    assert "tl-1 → old: no guest moves" in page and "epyc → tl-1: no guest moves: different CPU vendors" in page


@pytest.mark.skipif(MATRIX_MAX < 4, reason="the matrix is drawn for small fleets only")
@needs_corpus
def test_browser_renders_the_pools(mixed, tmp_path):
    from test_report_html import CHROMIUM, chromium, decode_png, near, parse

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    html_page(mixed, tmp_path)
    page = tmp_path / "fleet.html"
    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri())
    assert shot.exists(), run.stderr[-2000:]
    width, height, bpp, rows = decode_png(shot.read_bytes())
    pool_blue = tuple(int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5))
    pool_orange = tuple(int(PALETTE[1][i:i + 2], 16) for i in (1, 3, 5))
    pixels = [row[i:i + 3] for row in rows[::2] for i in range(0, len(row), 2 * bpp)]
    assert sum(1 for p in pixels if near(p, pool_blue)) > 200, "the Intel pool's colour is not on the page"
    assert sum(1 for p in pixels if near(p, pool_orange)) > 50, "the AMD pool's colour is not on the page"
    dom = parse(chromium(tmp_path, "--dump-dom", page.as_uri()).stdout)
    assert len(dom.find_all("rect", cls="move-host-model")) == 2
    # a cell where no guest moves is grey, inside a pool too (tl-1 -> old: the machine type, the storage)
    nones = dom.find_all("rect", cls="move-none")
    assert nones and all(r.attrs.get("fill") == "#d0d7de" for r in nones)
    assert len(dom.find_all("g", cls="pool")) == 2
