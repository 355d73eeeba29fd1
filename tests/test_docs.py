"""The documentation: the MkDocs site builds with warnings as errors, and every
```python example in docs/*.md and README.md runs against the local nginx.

Examples are written against ``https://example.org`` (``"example.org:443"`` and
``"example.org", 443`` for the http.client-shaped classes); here that becomes the nginx
fixture's address and ``SSL_CERT_FILE`` trusts the test CA (``verify=True`` honours it).
All blocks of one page run in order in one fresh interpreter, so a page may build on
its earlier blocks. A block whose first lines say ``# requires: NAME`` is left out when
``NAME`` is not importable.
"""

from __future__ import annotations

import functools
import html
import http.server
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
_REQUIRES = re.compile(r"^# requires: (\S+)", re.M)


def python_blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module's tests with ``mkdocs build --strict``."""
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed (pip install -e '.[docs]')")
        pytest.skip("mkdocs is not installed")
    out = tmp_path_factory.mktemp("docs") / "site"
    p = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=ROOT,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def _text(html_fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", html_fragment))


@pytest.mark.timeout(180)
def test_mkdocs_build_strict(site):
    reference = (site / "reference" / "index.html").read_text()
    for name in ("h2pool.Client", "h2pool.Response", "TooManyRedirects", "read_raw"):
        assert name in reference, name
    import h2pool

    # Every public name has its entry in the reference.
    missing = [n for n in h2pool.__all__ if n[0] != "_" and f'id="h2pool.{n}"' not in reference]
    assert missing == [], missing
    # Docstrings are Markdown: a Sphinx role would show as literal text.
    for page in site.rglob("*.html"):
        raw = re.findall(r":(?:class|mod|meth|func|attr|exc|data|obj):`[^`]*`", page.read_text())
        assert raw == [], (page.name, raw[:5])


@pytest.mark.timeout(180)
def test_doctest_examples_are_code_blocks(site):
    """A ``>>>`` paragraph in a docstring is Markdown for a nested block quote;
    docs/doctest_fences.py makes it a highlighted code block, without doctest's flags."""
    reference = (site / "reference" / "index.html").read_text()
    blocks = [_text(b) for b in re.findall(r"<pre\b.*?</pre>", reference, re.S)]
    example = '>>> h = Headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2")])\n'
    example += '>>> h["SET-COOKIE"], h.get_all("set-cookie")\n'
    example += "('a=1, b=2', ['a=1', 'b=2'])"
    assert any(example in b for b in blocks), "the Headers example is not in a code block"
    assert "<blockquote>\n<blockquote>" not in reference
    assert "doctest:" not in _text(reference)


# An absolute (or scheme-relative) URL in an attribute that the browser fetches while
# loading the page, and in a stylesheet's url() or @import.
_EXTERNAL_ATTR = re.compile(
    r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=\"(?:https?:)?//"
)
_EXTERNAL_CSS = re.compile(r"(?:url\(\s*['\"]?|@import\s+['\"])(?:https?:)?//")


@pytest.mark.timeout(180)
def test_site_loads_nothing_from_elsewhere(site):
    """Pages work offline: no web fonts, no scripts or styles from a CDN."""
    for page in site.rglob("*.html"):
        found = _EXTERNAL_ATTR.findall(page.read_text())
        assert found == [], (page.relative_to(site), found)
    for css in site.rglob("*.css"):
        assert not _EXTERNAL_CSS.search(css.read_text()), css.relative_to(site)


@pytest.mark.timeout(180)
def test_index_shows_the_benchmark_chart(site):
    index = (site / "index.html").read_text()
    chart = index.find('src="img/bench-threads.png"')
    assert chart != -1
    assert chart < index.find('id="install"'), "the chart comes before the Install section"
    assert (site / "img" / "bench-threads.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert page.name in nav, page.name


@pytest.mark.timeout(120)
@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_examples_run(page, nginx, ca_path, tmp_path):
    blocks = []
    for block in python_blocks(page):
        required = _REQUIRES.search(block)
        if required and importlib.util.find_spec(required.group(1)) is None:
            continue
        block = block.replace("https://example.org", nginx.https_url)
        block = block.replace('"example.org:443"', f'"localhost:{nginx.https_port}"')
        block = block.replace('"example.org", 443', f'"localhost", {nginx.https_port}')
        blocks.append(block)
    assert blocks
    script = tmp_path / f"{page.stem}_examples.py"
    script.write_text("\n\n".join(blocks))
    env = dict(os.environ, SSL_CERT_FILE=ca_path, REQUESTS_CA_BUNDLE=ca_path)
    env.pop("SSL_CERT_DIR", None)
    p = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert p.returncode == 0, f"{page.name} examples failed:\n{p.stdout}\n{p.stderr}"


CHROMIUM = Path("/usr/bin/chromium")
# The pages opened in the browser: the one with the chart, a long prose page, the
# generated reference.
BROWSER_PAGES = ("", "guide/", "reference/")
# Each page loads in a 1280x900 same-origin frame; on its load event (images, styles and
# the theme's script done) the probe measures it and writes the figures as JSON into
# its own DOM, which `chromium --dump-dom` prints once the probe itself has loaded.
_PROBE = """<!doctype html><meta charset="utf-8"><title>probe</title>
<script>
const results = {};
function measure(frame) {
  const w = frame.contentWindow, d = w.document, root = d.documentElement;
  const box = (el) => el && el.getBoundingClientRect().toJSON();
  const nav = [...d.querySelectorAll(
    ".md-sidebar--primary .md-nav--primary > .md-nav__list > .md-nav__item > .md-nav__link"
  )].filter((a) => a.getBoundingClientRect().width > 0);
  const header = d.querySelector(".md-header__inner");
  results[frame.dataset.page] = {
    viewport: [root.clientWidth, w.innerHeight],
    scrollWidth: root.scrollWidth,
    header: box(d.querySelector(".md-header")),
    headerOverflow: header ? header.scrollWidth - header.clientWidth : null,
    search: box(d.querySelector(".md-search__form")),
    sidebar: box(d.querySelector(".md-sidebar--primary")),
    content: box(d.querySelector(".md-content")),
    nav: nav.map((a) => ({text: a.textContent.trim(), box: box(a),
                          overflow: a.scrollWidth - a.clientWidth})),
    images: [...d.images].map((i) => ({src: i.getAttribute("src"), width: i.naturalWidth,
                                       box: box(i)})),
    code: d.querySelectorAll(".highlight pre code span").length,
    resources: [d.URL, ...w.performance.getEntriesByType("resource").map((r) => r.name)],
  };
  document.getElementById("result").textContent = JSON.stringify(results);
}
</script>
%s
<pre id="result"></pre>
"""
_FRAME = (
    '<iframe data-page="%s" src="/%s" onload="measure(this)" width="1280" height="900"></iframe>'
)


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            # Any host but the local server fails to resolve: nothing leaves the machine.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def _png_row(png: bytes, y: int) -> tuple[int, list[tuple[int, ...]]]:
    """The PNG's width and the pixels of row ``y`` (8-bit RGB or RGBA, not interlaced)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    channels = 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, _, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data)
            assert (depth, interlace) == (8, 0) and colour in (2, 6), (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    prev = bytearray(stride)
    for row in range(y + 1):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
    return width, [tuple(prev[x : x + channels]) for x in range(0, stride, channels)]


@pytest.fixture
def served_site(site: Path) -> Iterator[str]:
    """The built site over HTTP on a free loopback port (listening once this returns)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(site))
    )
    server.daemon_threads = False  # server_close() joins the request threads
    thread = threading.Thread(target=server.serve_forever, name="docs-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.timeout(120)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)")
def test_pages_in_chromium_at_1280px(site, served_site, tmp_path):
    """The quickstart, guide and reference pages as headless Chromium lays them out in
    a 1280x900 window.

    Layout is checked from the DOM rather than from pixels, because the DOM says exactly
    what overflows: a probe page on the same server frames each page at 1280x900 and,
    on the frame's load event, records the boxes of the header, the search form, the
    left navigation and the content; ``--dump-dom`` prints what it recorded. Asserted:
    nothing is wider than the window, the navigation lists the pages of mkdocs.yml in
    order, each entry on screen, unclipped and left of the content; the header's row
    does not overflow; every image decoded; the chart is on the quickstart's first
    screen; code is highlighted; every request went to the local server.

    The screenshots check what the DOM cannot: that a page was painted (a blank one
    compresses to a few kB), 1280 px wide, with the header's colour band reaching the
    right edge (the second pixel row is one colour from edge to edge, and not white).
    """
    profile = tmp_path / "profile"
    probe = site / "probe.html"
    probe.write_text(_PROBE % "\n".join(_FRAME % (p, p) for p in BROWSER_PAGES))
    try:
        p = _chromium(profile, "--dump-dom", f"{served_site}/probe.html")
    finally:
        probe.unlink()
    assert p.returncode == 0, p.stderr[-2000:]
    found = re.search(r'<pre id="result">(.*?)</pre>', p.stdout, re.S)
    assert found and found.group(1), p.stdout[-2000:]
    results = json.loads(html.unescape(found.group(1)))
    assert sorted(results) == sorted(BROWSER_PAGES)

    titles = re.findall(r"^  - (.+?): \S+\.md$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert len(titles) == len(PAGES) - 1
    for page, r in results.items():
        width, height = r["viewport"]
        assert width == 1280, (page, r["viewport"])
        assert r["scrollWidth"] <= width, (page, "wider than the window", r["scrollWidth"])
        assert r["header"]["left"] == 0 and r["header"]["right"] == width, (page, r["header"])
        assert r["headerOverflow"] == 0, (page, "header row overflows")
        assert r["search"]["left"] > 0 and r["search"]["right"] <= width, (page, r["search"])
        assert [n["text"] for n in r["nav"]] == titles, page
        for n in r["nav"]:
            box = n["box"]
            assert n["overflow"] <= 0, (page, n)
            assert box["left"] >= 0 and box["bottom"] <= height, (page, n)
            assert box["right"] <= r["content"]["left"], (page, n, r["content"])
        assert r["sidebar"]["right"] <= r["content"]["left"], page
        for image in r["images"]:
            assert image["width"] > 0, (page, "image did not load", image)
        origin = served_site + "/"
        assert all(u.startswith(origin) for u in r["resources"]), (page, r["resources"])
    chart = [i for i in results[""]["images"] if i["src"] == "img/bench-threads.png"]
    assert chart and chart[0]["box"]["top"] < results[""]["viewport"][1], results[""]["images"]
    assert results["guide/"]["code"] > 0, "no highlighted code on the guide page"

    for page in BROWSER_PAGES:
        shot = tmp_path / f"{page.strip('/') or 'index'}.png"
        p = _chromium(profile, f"--screenshot={shot}", f"{served_site}/{page}")
        assert p.returncode == 0, p.stderr[-2000:]
        png = shot.read_bytes()
        assert len(png) > 20_000, (page, len(png))
        width, top_row = _png_row(png, 1)
        assert width == 1280, (page, width)
        assert len(set(top_row)) == 1, (page, "header band is not one colour", set(top_row))
        assert top_row[-1][:3] != (255, 255, 255), (page, "no header band at the right edge")
