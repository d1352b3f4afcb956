# SPDX-License-Identifier: GPL-2.0-or-later
"""The HTML report (reports/html.html.j2): structure, escaping of hostile host data, a golden file,
and a real headless browser (Debian's chromium) that renders it: screenshot pixels and the live DOM."""
from __future__ import annotations

import difflib
import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import HERE, fixed_report

from kvmcheck.core.render import render

GOLDEN = HERE / "golden" / "report.html"
GOLDEN_ROOT = "intel-firmware-disabled"
REGEN = "KVMCHECK_REGEN_GOLDEN"
LABELS = {"pass": "✔ PASS", "warn": "⚠ WARN", "fail": "✖ FAIL", "error": "‼ ERROR", "skip": "– SKIP"}
BANNER = {"not-ready": (0xC6, 0x28, 0x28), "ready": (0x1B, 0x7A, 0x33)}  # .verdict-* backgrounds in the CSS


# --- a small DOM built with the standard library's html.parser ---------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def find_all(self, tag=None, cls=None, **attrs):
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and (cls is None or cls in n.attrs.get("class", "").split())
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]


class DomBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#document", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(html: str) -> Node:
    builder = DomBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def render_html(report) -> str:
    return render(report, "html")


# --- structure -----------------------------------------------------------------------------------------
def test_html_has_verdict_host_facts_and_one_row_per_check_grouped_by_area(host_root):
    report = fixed_report(host_root(GOLDEN_ROOT))
    data = report.to_dict()
    html = render_html(report)
    assert html.startswith("<!DOCTYPE html>")
    dom = parse(html)

    verdicts = dom.find_all(id="verdict")
    assert len(verdicts) == 1 and verdicts[0].attrs["data-verdict"] == data["verdict"] == "not-ready"
    assert "✖ NOT READY" in verdicts[0].text()
    assert "verdict-not-ready" in verdicts[0].attrs["class"].split()
    assert "Kernel" in dom.find_all(id="host")[0].text()

    rows = dom.find_all("tr", cls="check")
    order = [c["id"].split(".")[0] for c in data["checks"]]  # areas in order of their first check
    assert [r.attrs["data-check"] for r in rows] == sorted((c["id"] for c in data["checks"]),
                                                           key=lambda i: order.index(i.split(".")[0]))
    assert len(rows) == len(data["checks"])
    by_id = {c["id"]: c for c in data["checks"]}
    for row in rows:
        check = by_id[row.attrs["data-check"]]
        assert row.attrs["id"] == "check-" + check["id"]
        assert row.attrs["data-status"] == check["status"]
        badge = row.find_all("span", cls="badge")[0]
        assert badge.text() == LABELS[check["status"]]  # the status reads without colour
        assert check["id"] in row.find_all("code")[0].text()
        assert check["summary"] in row.text()
        if check["detail"] or check["remediation"] or check["evidence"]:
            details = row.find_all("details")
            assert len(details) == 1 and details[0].find_all("summary")
            if check["remediation"]:
                assert check["remediation"] in details[0].find_all("p", cls="fix")[0].text()
            for key in check["evidence"]:
                assert key in [dt.text() for dt in details[0].find_all("dt")]

    groups = dom.find_all("tbody", cls="area")
    areas = [g.attrs["data-area"] for g in groups]
    assert len(areas) == len(set(areas)) and {"cpu", "kvm", "firmware"} <= set(areas)
    for group in groups:
        ids = [r.attrs["data-check"] for r in group.find_all("tr", cls="check")]
        assert ids and all(i.split(".")[0] == group.attrs["data-area"] for i in ids)

    for c in data["checks"]:  # the most-severe-first list links every fail/warn to its row
        if c["status"] in ("fail", "error", "warn"):
            assert dom.find_all("a", href="#check-" + c["id"])


def test_html_is_self_contained_and_printable(host_root):
    html = render_html(fixed_report(host_root(GOLDEN_ROOT)))
    dom = parse(html)
    assert not dom.find_all("script") and not dom.find_all("link") and not dom.find_all("img")
    for node in dom.iter():
        assert not [a for a in node.attrs if a.startswith("on")], node.tag
        for attr in ("src", "href", "action", "srcset"):
            assert node.attrs.get(attr) is None or node.attrs[attr].startswith("#"), (node.tag, node.attrs)
    style = dom.find_all("style")[0].text()
    assert "url(" not in style and "@import" not in style
    assert "@media print" in style


def test_ready_host_gets_a_ready_banner(host_root):
    dom = parse(render_html(fixed_report(host_root("intel-baremetal-vmx"))))
    verdict = dom.find_all(id="verdict")[0]
    assert verdict.attrs["data-verdict"] == "ready" and "✔ READY" in verdict.text()
    assert "NOT READY" not in verdict.text()


# --- escaping: hostile host data never becomes markup ----------------------------------------------------
HOSTILE_HOSTNAME = "<script>alert(1)</script>"
HOSTILE_OS = "<img src=x onerror=alert(1)>"
HOSTILE_MOUNT = '/srv/<b>vm</b> &amp; "q"'  # in /proc/mounts with \040 for the spaces


def hostile_root(host_root) -> Path:
    root = host_root("storage-nfs4")
    (root / "proc/sys/kernel").mkdir(parents=True, exist_ok=True)
    (root / "proc/sys/kernel/hostname").write_text(HOSTILE_HOSTNAME + "\n")
    (root / "etc/os-release").write_text(f'NAME="{HOSTILE_OS}"\nID=debian\nVERSION_ID="12"\n')
    with open(root / "proc/mounts", "a") as mounts:
        mounts.write("nas:/x " + HOSTILE_MOUNT.replace(" ", "\\040") + " nfs4 rw,relatime,vers=4.2 0 0\n")
    return root


def test_hostile_host_data_is_escaped(host_root):
    report = fixed_report(hostile_root(host_root))
    data = report.to_dict()
    assert data["host"]["hostname"] == HOSTILE_HOSTNAME and data["host"]["os"]["name"] == HOSTILE_OS
    assert any(HOSTILE_MOUNT in c["summary"] for c in data["checks"]), "the fixture no longer reaches a check"
    html = render_html(report)
    dom = parse(html)

    for tag in ("script", "img", "b"):
        assert not dom.find_all(tag), f"host data became a <{tag}> element"
    for node in dom.iter():
        assert not [a for a in node.attrs if a.startswith("on")], (node.tag, node.attrs)
    text = dom.text()
    assert HOSTILE_HOSTNAME in dom.find_all(id="verdict")[0].text()  # visible, as text
    assert HOSTILE_HOSTNAME in dom.find_all("title")[0].text()
    assert HOSTILE_OS in dom.find_all(id="host")[0].text()
    assert HOSTILE_MOUNT in text  # the literal "&amp;" survives: escaped once, not interpreted
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;vm&lt;/b&gt; &amp;amp;" in html
    assert "<script" not in html and "<img" not in html and "<b>" not in html


# --- golden file -----------------------------------------------------------------------------------------
def test_html_golden(host_root):
    """tests/golden/report.html is the HTML report of a fixed captured root; KVMCHECK_REGEN_GOLDEN=1 rewrites it."""
    root = host_root(GOLDEN_ROOT)
    html = render_html(fixed_report(root))
    if os.environ.get(REGEN) == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(html, encoding="utf-8")
    expected = GOLDEN.read_text(encoding="utf-8")
    if html != expected:
        diff = "".join(list(difflib.unified_diff(expected.splitlines(True), html.splitlines(True),
                                                 "tests/golden/report.html", "rendered"))[:60])
        pytest.fail(f"HTML report differs from the golden file (first lines of the diff below).\n{diff}\n"
                    f"If the change is intended, regenerate it with:\n"
                    f"  {REGEN}=1 python -m pytest -q tests/test_report_html.py -k golden\n"
                    f"and review 'git diff tests/golden/report.html'.")


# --- a real browser ---------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")


def chromium(tmp_path: Path, *args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    """Run headless chromium with a fresh profile, no network chatter, bounded by a timeout."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    env = dict(os.environ, HOME=str(tmp_path))
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within {timeout} s: {' '.join(argv)}")


def decode_png(data: bytes):
    """(width, height, bytes per pixel, rows) of an 8-bit RGB/RGBA non-interlaced PNG: stdlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, ctype, _, _, interlace = header
    assert depth == 8 and ctype in (2, 6) and not interlace, f"unsupported PNG: {header}"
    bpp = 3 if ctype == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    low, high = int.from_bytes(b"\x7f" * stride, "big"), int.from_bytes(b"\x80" * stride, "big")
    prev, rows = bytes(stride), []
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], raw[start + 1:start + 1 + stride]
        if ftype == 0:
            cur = line
        elif ftype == 2:  # Up: bytewise (line + prev) mod 256, all bytes at once on big integers
            a, b = int.from_bytes(line, "big"), int.from_bytes(prev, "big")
            cur = (((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(stride, "big")
        else:
            out = bytearray(line)
            for i in range(stride):
                left = out[i - bpp] if i >= bpp else 0
                if ftype == 1:
                    out[i] = (out[i] + left) & 255
                elif ftype == 3:
                    out[i] = (out[i] + ((left + prev[i]) >> 1)) & 255
                else:  # Paeth
                    up, corner = prev[i], (prev[i - bpp] if i >= bpp else 0)
                    p = left + up - corner
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                    out[i] = (out[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
            cur = bytes(out)
        rows.append(cur)
        prev = cur
    return width, height, bpp, rows


def near(pixel, colour, tolerance=8) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, colour))


@needs_chromium
@pytest.mark.parametrize("name, verdict", [(GOLDEN_ROOT, "not-ready"), ("intel-baremetal-vmx", "ready")])
def test_browser_renders_the_report(host_root, tmp_path, name, verdict):
    report = fixed_report(host_root(name))
    assert report.to_dict()["verdict"] == verdict
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    url = page.as_uri()

    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert shot.exists() and shot.stat().st_size > 1000, f"no screenshot (rc {run.returncode}): {run.stderr[-2000:]}"
    width, height, bpp, rows = decode_png(shot.read_bytes())
    assert (width, height) == (1280, 2000)
    pixels = [row[i:i + 3] for row in rows[::4] for i in range(0, len(row), 4 * bpp)]  # every 4th pixel both ways
    ink = sum(1 for p in pixels if min(p) < 230) / len(pixels)
    assert ink > 0.05, f"the page looks blank: only {ink:.1%} of the pixels are not (near) white"
    top = [row[i:i + 3] for row in rows[:160] for i in range(0, len(row), bpp)]
    banner = sum(1 for p in top if near(p, BANNER[verdict])) / len(top)
    other = sum(1 for p in top if near(p, BANNER["ready" if verdict == "not-ready" else "not-ready"])) / len(top)
    assert banner > 0.2 and other < 0.01, f"verdict banner colour: {banner:.1%} of the top band, other {other:.1%}"

    dump = chromium(tmp_path, "--dump-dom", url)
    assert dump.returncode == 0, dump.stderr[-2000:]
    dom = parse(dump.stdout)
    banner_el = dom.find_all(id="verdict")
    assert banner_el and banner_el[0].attrs["data-verdict"] == verdict
    assert ("✖ NOT READY" if verdict == "not-ready" else "✔ READY") in banner_el[0].text()
    assert len(dom.find_all("tr", cls="check")) == len(report.checks)
