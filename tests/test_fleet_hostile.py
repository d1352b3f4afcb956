# SPDX-License-Identifier: GPL-2.0-or-later
"""kvmcheck fleet and diff on hostile directories, files and documents (issue 14 items 10 and 12): link
loops, FIFOs, devices, huge files and malformed reports, each built for real; every run ends, bounded,
with an exit status in {0, 1, 2} and the refused files named."""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HERE, fixed_report, materialize, validate_json
from kvmcheck.tools import drift
from kvmcheck.tools import fleet

CLI = [sys.executable, "-c", "from kvmcheck.cli import main; main()"]
DIFF_SCHEMA = HERE.parent / "reports" / "diff.schema.json"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    doc = fixed_report(materialize("amd-baremetal-no-svm", tmp_path_factory.mktemp("roots"))).to_dict()
    doc["generated_at"] = fleet._iso(__import__("time").time() - 60)
    return doc


def write(path: Path, doc) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def run(args, timeout=60):
    """The real command in a child, under a memory limit: a hang is a timeout, a blow-up a MemoryError."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=timeout, preexec_fn=limit)


def test_directory_links_are_not_followed(tmp_path, report):
    """`ln -s . DIR/loop` counted one report 41 times; two self-links made the walk exponential."""
    d = tmp_path / "d"
    write(d / "a.json", report)
    os.symlink(".", d / "loop")
    os.symlink(".", d / "loop2.json")  # named like a report, too
    (d / "sub").mkdir()
    os.symlink("..", d / "sub" / "up")
    os.symlink(str(d / "a.json"), d / "sub" / "link-to-a.json")  # a link to a regular file is read
    data = fleet.build([str(d)])[0]
    # hostname null: each file is its own host, named after the file
    assert (data["totals"]["files"], data["totals"]["hosts"]) == (2, 2)
    refused = {Path(u["file"]).name: u["reason"] for u in data["unreadable"]}
    assert set(refused) == {"loop", "loop2.json", "up"}
    assert all("symbolic link to a directory is not followed" in r for r in refused.values())


def test_directory_reached_twice_is_walked_once(tmp_path, report):
    """A bind mount of a directory inside itself: the (st_dev, st_ino) of every directory is remembered."""
    d = tmp_path / "d"
    write(d / "a.json", report)
    (d / "again").mkdir()
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    if subprocess.run(["mount", "--bind", str(d), str(d / "again")], capture_output=True).returncode:
        pytest.skip("mount --bind is not permitted here")
    try:
        data = fleet.build([str(d)])[0]
    finally:
        subprocess.run(["umount", str(d / "again")], check=True)
    assert data["totals"]["files"] == 1 and data["unreadable"] == []


def test_fifo_device_and_huge_files_are_refused(tmp_path, report):
    """A FIFO named x.json blocked forever; zero.json -> /dev/zero reached 4.7 GB; a 200 MB file cost 631 MB."""
    d = tmp_path / "d"
    write(d / "a.json", report)
    os.mkfifo(d / "x.json")
    os.symlink("/dev/zero", d / "zero.json")
    os.symlink("/dev/null", d / "null.json")
    with open(d / "huge.json", "wb") as fh:  # sparse: costs no disk
        fh.truncate(fleet.MAX_REPORT_BYTES + 1)
    out = run(["fleet", str(d), "--format", "json", "--no-progress"])
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    # the walk refuses what is not a regular file; a regular file's size is judged when it is opened
    assert (data["totals"]["hosts"], data["totals"]["files"]) == (1, 2), data["unreadable"]
    refused = {Path(u["file"]).name: u["reason"] for u in data["unreadable"]}
    assert refused == {
        "x.json": "refused: a FIFO, not a regular file",
        "zero.json": "refused: a character device, not a regular file",
        "null.json": "refused: a character device, not a regular file",
        "huge.json": f"refused: {fleet.MAX_REPORT_BYTES + 1} bytes, larger than a report can be (16 MiB)"}
    for name, reason in refused.items():  # and on stderr
        assert f"kvmcheck fleet: skipped {d / name}: {reason}\n" in out.stderr
    # named explicitly, they are refused the same way
    out = run(["fleet", str(d / "x.json"), "/dev/zero", str(d / "a.json"), "--format", "json"])
    data = json.loads(out.stdout)
    assert [u["reason"] for u in data["unreadable"]] == ["refused: a character device, not a regular file",
                                                         "refused: a FIFO, not a regular file"]


def test_explicit_link_to_a_report_is_read(tmp_path, report):
    target = write(tmp_path / "real" / "a.json", report)
    os.symlink(target, tmp_path / "link.json")
    data = fleet.build([str(tmp_path / "link.json")])[0]
    assert data["totals"]["hosts"] == 1 and data["hosts"][0]["file"] == str(tmp_path / "link.json")


def test_read_bytes_refuses_what_fstat_does_not_call_regular(tmp_path):
    """The read itself checks what it opened (a FIFO swapped in after the walk must not block it)."""
    os.mkfifo(tmp_path / "late.json")
    with pytest.raises(fleet.Refusal, match="a FIFO"):
        fleet.read_bytes(str(tmp_path / "late.json"))
    assert fleet.read_report(str(tmp_path / "late.json")) == fleet.Refused(
        str(tmp_path / "late.json"), "refused: a FIFO, not a regular file")


def test_diff_refuses_fifo_device_and_huge(tmp_path, report):
    """diff A /dev/zero reached 3.1 GB; diff on a FIFO hung."""
    a = write(tmp_path / "a.json", report)
    os.mkfifo(tmp_path / "fifo.json")
    with open(tmp_path / "huge.json", "wb") as fh:
        fh.truncate(fleet.MAX_REPORT_BYTES + 1)
    for other, reason in (("/dev/zero", "a character device"), (str(tmp_path / "fifo.json"), "a FIFO"),
                          (str(tmp_path / "huge.json"), "larger than a report can be")):
        out = run(["diff", a, other])
        assert out.returncode == 2 and f"kvmcheck diff: {other}: refused: " in out.stderr and reason in out.stderr
        assert "Traceback" not in out.stderr


def fleet_doc(tmp_path, report) -> dict:
    d = tmp_path / "fl"
    write(d / "a.json", report)
    write(d / "b.json", dict(report, host=dict(report["host"], hostname="b")))
    return fleet.build([str(d)])[0]


@pytest.mark.parametrize("mutate, field", [
    (lambda f: f["hosts"][0]["problems"].update({"kvm.modules": "bogus"}), "hosts[0].problems['kvm.modules']"),
    (lambda f: f["hosts"].__setitem__(0, ["a", "list"]), "hosts[0]: not an object"),
    (lambda f: f.__setitem__("totals", [1, 2]), "totals: not an object"),
    (lambda f: f["checks"][0]["counts"].update({"fail": -1}), "checks[0].counts.fail"),
    (lambda f: f["checks"][0]["counts"].update({"fail": "3"}), "checks[0].counts.fail"),
    (lambda f: f["hosts"][1].update({"verdict": None}), "hosts[1].verdict"),
    (lambda f: f.__setitem__("schema_version", 7), "schema_version 7 is not supported"),
])
def test_diff_malformed_fleet_report_is_a_usage_error(tmp_path, report, capsys, mutate, field):
    """Issue 14 item 12: a status "bogus" (KeyError), a host as a list (TypeError), totals as a list
    (AttributeError) gave tracebacks with exit 1."""
    good = fleet_doc(tmp_path, report)
    bad = json.loads(json.dumps(good))
    mutate(bad)
    a, b = write(tmp_path / "good.json", good), write(tmp_path / "bad.json", bad)
    assert drift.diff_command(a, b, "json") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kvmcheck diff: {b}: ") and field in err, err
    assert drift.diff_command(b, a, "text") == 2
    out = run(["diff", a, b])
    assert out.returncode == 2 and "Traceback" not in out.stderr and field in out.stderr


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["checks"][0].update({"status": "bogus"}), "checks[0].status"),
    (lambda r: r.__setitem__("host", ["x"]), "host: not an object"),
    (lambda r: r.__setitem__("checks", {"a": 1}), "checks: not a list"),
    (lambda r: r["checks"].append(7), "checks[" ),
    (lambda r: r.__setitem__("verdict", "maybe"), "verdict: 'maybe'"),
])
def test_diff_malformed_host_report_is_a_usage_error(tmp_path, report, capsys, mutate, field):
    bad = json.loads(json.dumps(report))
    mutate(bad)
    a, b = write(tmp_path / "good.json", report), write(tmp_path / "bad.json", bad)
    assert drift.diff_command(a, b, "json") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kvmcheck diff: {b}: malformed report: ") and field in err, err


def test_diff_output_follows_its_schema(tmp_path, report, capsys):
    edited = json.loads(json.dumps(report))
    for c, status in zip(edited["checks"], ("skip", "error", "fail", "warn", "pass")):
        c["status"] = status
    edited["checks"].pop()
    edited["verdict"] = "unknown"
    a, b = write(tmp_path / "a.json", report), write(tmp_path / "b.json", edited)
    for pair in ((a, b), (b, a)):
        drift.diff_command(*pair, "json")
        validate_json(DIFF_SCHEMA, json.loads(capsys.readouterr().out))
    f1 = fleet_doc(tmp_path / "1", report)
    f2 = json.loads(json.dumps(f1))
    f2["hosts"][0]["verdict"] = "unknown"
    f2["hosts"][1]["problems"]["kvm.device"] = "fail"
    f2["checks"][0]["counts"]["fail"] += 1
    x, y = write(tmp_path / "f1.json", f1), write(tmp_path / "f2.json", f2)
    for pair in ((x, y), (y, x)):
        drift.diff_command(*pair, "json")
        d = validate_json(DIFF_SCHEMA, json.loads(capsys.readouterr().out))
        assert d["kind"] == "fleet"
        if pair == (x, y):  # not-ready -> unknown: evidence lost; a check newly failing: a regression
            name0, name1 = f1["hosts"][0]["host"], f1["hosts"][1]["host"]
            assert d["newly_unknown"] == [name0] and d["newly_not_ready"] == [] and d["newly_ready"] == []
            assert d["host_regressions"] == [{"host": name1, "checks": [{"id": "kvm.device", "old": "pass",
                                                                         "new": "fail"}]}]
            assert d["regressed"] is True
        else:  # unknown -> not-ready is a regression
            assert d["newly_not_ready"] == [f1["hosts"][0]["host"]] and d["regressed"] is True


# --- fuzzing: mutated reports never crash diff or fleet ------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["pass", "warn", "fail", "skip", "error", "bogus", "ready", "not-ready", "unknown"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def paths_of(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:4]):
            yield from paths_of(v, prefix + (i,))


def mutated(doc, data):
    doc = json.loads(json.dumps(doc))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in paths_of(doc) if p]
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON_VALUES)
    return doc


@pytest.fixture(scope="module")
def fleet_sample(tmp_path_factory, report):
    return fleet_doc(tmp_path_factory.mktemp("fleet"), report)


@hypothesis.settings(max_examples=150, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(data=st.data())
def test_fuzz_diff_and_fleet_never_crash(tmp_path_factory, report, fleet_sample, data):
    d = tmp_path_factory.mktemp("fuzz")
    host_bad = mutated(report, data)
    fleet_bad = mutated(fleet_sample, data)
    good_host, bad_host = write(d / "h0.json", report), write(d / "h1.json", host_bad)
    good_fleet, bad_fleet = write(d / "f0.json", fleet_sample), write(d / "f1.json", fleet_bad)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        for pair in ((good_host, bad_host), (bad_host, good_host), (good_fleet, bad_fleet), (bad_fleet, good_fleet)):
            for fmt in ("json", "text"):
                assert drift.diff_command(*pair, fmt) in (0, 1, 2)
        assert fleet.fleet_command([str(d)], "json", show_progress=False) in (0, 1, 2)
        assert fleet.fleet_command([bad_host], "csv", show_progress=False) in (0, 1, 2)
        assert fleet.fleet_command([bad_host, good_host], "text", show_progress=False) in (0, 1, 2)
    # whatever a host report holds, the fleet report follows its schema
    validate_json(HERE.parent / "reports" / "fleet.schema.json", fleet.build([bad_host, good_host])[0])


def test_only_finite_numbers_are_kept_as_measurements(tmp_path, report):
    assert fleet._values({"rate": 5.0, "n": 3, "inf": float("inf"), "nan": float("nan"), "flag": True,
                          "path": "/x", "nested": {"a": 1}, "k" * 81: 1}) == (("rate", 5.0), ("n", 3))
    d = tmp_path / "nan"
    for i in (1, 2):
        doc = json.loads(json.dumps(report))
        c = next(c for c in doc["checks"] if c["status"] == "fail")
        c["summary"], c["evidence"] = f"measured {i}", {"rate": float(i), "big": float("inf")}
        write(d / f"h{i}.json", json.dumps(dict(doc, host=dict(doc["host"], hostname=f"h{i}"))))  # Infinity
    data = fleet.build([str(d)])[0]
    json.loads(fleet.render_json(data), parse_constant=lambda name: pytest.fail(f"{name} in the fleet JSON"))
    cause = next(cause for cause in data["causes"] if cause["check"] == c["id"])
    assert cause["measured"] == [{"host": "h1", "summary": "measured 1", "values": {"rate": 1.0}},
                                 {"host": "h2", "summary": "measured 2", "values": {"rate": 2.0}}]
