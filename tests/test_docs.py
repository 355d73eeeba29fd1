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

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
_REQUIRES = re.compile(r"^# requires: (\S+)", re.M)


def python_blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text())


@pytest.mark.timeout(180)
def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed (pip install -e '.[docs]')")
        pytest.skip("mkdocs is not installed")
    p = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    for name in ("h2pool.Client", "h2pool.Response", "TooManyRedirects", "read_raw"):
        assert name in reference, name
    import h2pool

    # Every public name has its entry in the reference.
    missing = [n for n in h2pool.__all__ if n[0] != "_" and f'id="h2pool.{n}"' not in reference]
    assert missing == [], missing
    # Docstrings are Markdown: a Sphinx role would show as literal text.
    for page in (tmp_path / "site").rglob("*.html"):
        raw = re.findall(r":(?:class|mod|meth|func|attr|exc|data|obj):`[^`]*`", page.read_text())
        assert raw == [], (page.name, raw[:5])


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
