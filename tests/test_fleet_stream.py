# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck fleet folds each report in as it is read (Fleet) and writes its output in pieces: every format
byte for byte what the old path (tests/fleet_oracle.py: all records in a list, then aggregate, then render)
wrote for the same generated fleet, whatever the order the records arrive in."""
from __future__ import annotations

import copy
import datetime
import json
import random
from pathlib import Path

import pytest

import fleet_oracle
from conftest import materialize
from kvmcheck.tools import fleet
from test_fleet import offline_report

FORMATS = ("json", "csv", "text", "html")
SUMMARIES = {
    "warn": ["{n} of 4 items missing", "not configured: see the remediation", "rate {n}.5 Hz below 10 Hz"],
    "fail": ["required module not loaded", "only {n} MiB free (need 4 MiB)"],
    "error": ["probe timed out after 10 s"],
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Reports of captured roots with different check lists (layouts)."""
    roots = tmp_path_factory.mktemp("roots")
    return [offline_report(name, roots) for name in ("intel-baremetal-vmx", "cloud-vm-no-nested", "arm64-kvm")]


def iso(ts: float, zulu: bool = False) -> str:
    text = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if zulu else text


def generate(folder: Path, bases, seed: int, now: float, count: int = 90) -> None:
    """count reports of about 60 hosts: duplicates (older, newer, tied, from the future), stale and future
    reports, nameless hosts, statuses and summaries with measurements, cause keys and caused_by, broken files."""
    rng = random.Random(seed)
    for i in range(count):
        doc = copy.deepcopy(rng.choice(bases))
        doc["host"]["hostname"] = None if i % 23 == 0 else f"host-{rng.randrange(60):02d}"
        hours = rng.choice([0.5, 2.0, 7.25, 30.0, 80.0, -1.0, -0.05])  # -1: an hour ahead; -0.05: NTP skew
        doc["generated_at"] = iso(now - hours * 3600, zulu=i % 5 == 0)
        for c in doc["checks"]:
            r = rng.random()
            status = "fail" if r < 0.08 else "error" if r < 0.1 else "warn" if r < 0.3 else \
                "skip" if r < 0.35 else "pass"
            c["status"] = status
            if status in SUMMARIES:
                n = rng.randint(1, 3)
                c["summary"] = rng.choice(SUMMARIES[status]).format(n=n)
                # numbers that are equal but written apart in JSON (1 and 1.0, 0.0 and -0.0) must stay apart
                c["evidence"] = {"n": n, "rate": rng.choice([1, 1.0, 0.0, -0.0, n + 0.5]), "path": "/dev/kvm",
                                 "ok": True}
                c["cause"] = rng.choice([None, "", "module-missing"])
                c["caused_by"] = rng.choice([[], ["cpu.virt-flags"], ["kvm.modules", "cpu.virt-flags"]])
        counts = {s: sum(c["status"] == s for c in doc["checks"]) for s in fleet.STATUSES}
        doc["summary"] = counts
        doc["verdict"] = "not-ready" if counts["fail"] or counts["error"] else rng.choice(["ready", "unknown"])
        path = folder / f"dc{i % 3}" / f"r{i:03d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2))
        if i % 31 == 0:  # the same report under another name: a tie, the later path wins
            (folder / f"dc{i % 3}" / f"z{i:03d}.json").write_text(json.dumps(doc))
    (folder / "truncated.json").write_text(json.dumps(bases[0])[:3000])
    (folder / "dc1" / "notjson.json").write_text("hello\n")
    (folder / "notes.txt").write_text("not a report\n")


def old_output(folder: Path, fmt: str, now: float):
    data, kept = fleet_oracle.build([str(folder)], 24.0, now=now, summaries=fmt == "csv")
    text = fleet_oracle.render_json(data) if fmt == "json" else fleet_oracle.render_csv(data, kept) \
        if fmt == "csv" else fleet_oracle.render_template(data, fmt)
    return text, fleet_oracle.exit_code(data)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streamed_outputs_equal_the_old_path(tmp_path, bases, monkeypatch, capsys, seed):
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    folder = tmp_path / "reports"
    generate(folder, bases, seed, now)
    monkeypatch.setattr(fleet, "CHUNK", 4)  # many chunks, returned by two workers in whatever order
    monkeypatch.setattr(fleet, "PIECE", 2000)  # and many pieces of output
    for fmt in FORMATS:
        expected, code = old_output(folder, fmt, now)
        for workers in (1, 2):
            out = tmp_path / f"fleet-{workers}.{fmt}"
            assert fleet.fleet_command([str(folder)], fmt, output=str(out), workers=workers, now=now,
                                       show_progress=False) == code
            assert out.read_bytes() == expected.encode("utf-8"), (fmt, workers)
        assert fleet.fleet_command([str(folder)], fmt, workers=2, now=now, show_progress=False) == code
        assert capsys.readouterr().out == expected  # on stdout, piece by piece
    # the API: build's report has every list made
    data, kept = fleet.build([str(folder)], now=now, workers=2)
    assert fleet.render_json(data) == old_output(folder, "json", now)[0]
    assert fleet.render_csv(data, kept) == old_output(folder, "csv", now)[0]
    assert all(type(v) is not fleet.Lazy for v in data.values())


def records_of(folder: Path, keep=fleet.KEEP_ALL):
    files, bad, _ = fleet.find_reports([str(folder)])
    return fleet.read_all(files, workers=1, keep=keep) + bad


def test_any_arrival_order_gives_one_report(tmp_path, bases):
    """Workers return chunks in any order: the fold must not depend on it (duplicates, counts, lists)."""
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    generate(tmp_path, bases, 7, now)
    records = records_of(tmp_path)
    expected = fleet.render_json(fleet.aggregate(records, now=now))
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(records)
        assert fleet.render_json(fleet.aggregate(records, now=now)) == expected
    chunks = [records[i:i + 5] for i in range(0, len(records), 5)]
    for order in (chunks[::-1], chunks[1::2] + chunks[::2]):
        view = fleet.Fleet(24.0, now)
        for part in order:
            view.add_all(part)
        assert fleet.render_json(fleet.materialize(view.report())) == expected


def host(name: str, path: str, when: float, codes: str, layout=("a.one", "b.two", "c.three")):
    problems = ()
    for index, code in enumerate(codes):
        if code in "wfe":
            problems += (index, f"{layout[index]} cause", f"{layout[index]} is {code}", (), ())
    verdict = "not-ready" if "f" in codes or "e" in codes else "ready"
    return fleet.HostRecord(path, name, iso(when), when, verdict, layout, codes, None, problems)


@pytest.mark.parametrize("newer_first", [True, False])
def test_duplicate_arriving_after_its_newer_twin(newer_first):
    """The newest report of a host wins whichever comes first; what the loser counted is taken back."""
    now = 1_800_000_000.0
    old = host("web", "/r/web-old.json", now - 7200, "ffw", layout=("a.one", "b.two", "z.only-old"))
    new = host("web", "/r/web-new.json", now - 60, "pwp")
    other = host("db", "/r/db.json", now - 60, "pfp")
    data = fleet.aggregate([new, old, other] if newer_first else [old, new, other], now=now)
    assert [h["file"] for h in data["hosts"]] == ["/r/db.json", "/r/web-new.json"]
    assert data["duplicates"] == [{"host": "web", "kept": "/r/web-new.json", "dropped": ["/r/web-old.json"]}]
    assert data["totals"]["ready"] == 1 and data["totals"]["not_ready"] == 1 and data["totals"]["duplicates"] == 1
    counts = {c["id"]: c["counts"] for c in data["checks"]}
    assert list(counts) == ["a.one", "b.two", "c.three"]  # a check only the dropped report had is gone
    assert counts["a.one"] == {"pass": 2, "warn": 0, "fail": 0, "skip": 0, "error": 0}
    assert counts["b.two"] == {"pass": 0, "warn": 1, "fail": 1, "skip": 0, "error": 0}
    assert [(c["check"], c["status"], c["hosts"]) for c in data["causes"]] == \
        [("b.two", "fail", ["db"]), ("b.two", "warn", ["web"])]


def test_believable_report_wins_over_an_earlier_future_one():
    now = 1_800_000_000.0
    forged = host("web", "/r/forged.json", now + 86400, "fff")
    real = host("web", "/r/real.json", now - 3600, "ppp")
    for order in ([forged, real], [real, forged]):
        data = fleet.aggregate(order, now=now)
        assert [h["file"] for h in data["hosts"]] == ["/r/real.json"] and not data["future"]
        assert data["totals"]["ready"] == 1 and not data["causes"]
        assert all(c["counts"]["fail"] == 0 for c in data["checks"])


def test_records_keep_only_what_the_format_prints(tmp_path, bases):
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    generate(tmp_path, bases, 5, now, count=12)
    by_format = {fmt: [r for r in records_of(tmp_path, fleet.FORMAT_KEEPS[fmt]) if type(r) is fleet.HostRecord]
                 for fmt in FORMATS}
    csv_records = by_format["csv"]
    assert all(r.problems == () and len(r.texts) == len(r.layout) for r in csv_records)
    assert all(r.texts is None for fmt in ("json", "text", "html") for r in by_format[fmt])
    measured = [values for r in by_format["json"] for _, _, _, values, _ in fleet.problems(r) if values]
    assert measured and all(values == () for r in by_format["text"] for _, _, _, values, _ in fleet.problems(r))
    # every warn, fail and error result, in report order
    for r in by_format["text"]:
        assert [index for index, *_ in fleet.problems(r)] == [i for i, code in enumerate(r.codes) if code in "wfe"]
