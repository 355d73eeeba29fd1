"""requests' own test suite run with h2pool's ``HTTP2Adapter`` mounted on every Session.

    python3 stress/requests_suite.py             # every Session sends through h2pool
    python3 stress/requests_suite.py --stock     # requests' own adapter: the reference
    python3 stress/requests_suite.py -k digest   # a subset (pytest's -k)

The suite needs a real urllib3 and pytest-httpbin, so it runs in a virtual environment of
its own (``stress/results/requests-suite/venv``, built on first use from the package
index: requests at the version installed here, or ``--requests``, its sdist for the
tests, pytest, pytest-httpbin, trustme, PySocks, and h2pool from this checkout). Later
runs reuse it and need no network. A plugin given to pytest with ``-p`` replaces
``requests.Session.__init__`` so that each new Session mounts a fresh ``HTTP2Adapter``
for ``http://`` and ``https://``; the tests themselves are unmodified.

Prints one line per test that did not pass (with the first line of its error), then
``passed N failed M skipped K``. The same machine gives the stock figure with
``--stock``: tests that fail there too (connect timeouts to an unroutable address, on a
machine without a route) are marked ``(fails stock too)`` when both runs are asked for
with ``--compare``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "stress" / "results" / "requests-suite"

# Loaded by pytest with ``-p h2pool_mount`` from a directory put on PYTHONPATH.
PLUGIN = """\
import requests
from h2pool.contrib.requests import HTTP2Adapter

_init = requests.Session.__init__


def _mounting_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.mount("https://", HTTP2Adapter())
    self.mount("http://", HTTP2Adapter())


requests.Session.__init__ = _mounting_init
"""


def _run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def prepare(version: str) -> tuple[Path, Path]:
    """The venv's python and the extracted test directory, built if missing."""
    venv = WORK / f"venv-{version}"
    python = venv / "bin" / "python"
    src = WORK / f"requests-{version}"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)])
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run(
            [
                *pip,
                f"requests=={version}",
                "pytest",
                "pytest-httpbin",
                "httpbin",
                "trustme",
                "PySocks",
                "pytest-timeout",
            ]
        )
        _run([*pip, str(ROOT)])
    else:  # h2pool from this checkout, as it is now
        _run(
            [
                str(python),
                *["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"],
                "--force-reinstall",
                str(ROOT),
            ]
        )
    if not (src / "tests").is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            _run(
                [
                    sys.executable,
                    *["-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"],
                    f"requests=={version}",
                    "-d",
                    tmp,
                ]
            )
            (sdist,) = Path(tmp).glob("requests-*.tar.gz")
            with tarfile.open(sdist) as tar:
                tar.extractall(WORK, filter="data")
    return python, src


def run_suite(python: Path, src: Path, stock: bool, select: str | None) -> dict[str, str]:
    """Run the suite; every test's outcome ("passed", "skipped", or "failed: why")."""
    report = WORK / ("stock.xml" if stock else "h2pool.xml")
    plugin_dir = WORK / "plugin"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    (plugin_dir / "h2pool_mount.py").write_text(PLUGIN)
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "90"]
    cmd += ["--junitxml", str(report), "tests"]
    if not stock:
        cmd[3:3] = ["-p", "h2pool_mount"]
    if select:
        cmd += ["-k", select]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(plugin_dir)
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        env.pop(var, None)
        env.pop(var.upper(), None)
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=src, env=env, stdout=subprocess.DEVNULL, check=False)
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            why = (bad.get("message") or "").strip().splitlines()
            outcomes[name] = "failed: " + (why[0][:140] if why else bad.tag)
        elif case.find("skipped") is not None:
            outcomes[name] = "skipped"
        else:
            outcomes[name] = "passed"
    return outcomes


def _tally(outcomes: dict[str, str]) -> str:
    passed = sum(1 for v in outcomes.values() if v == "passed")
    skipped = sum(1 for v in outcomes.values() if v == "skipped")
    failed = len(outcomes) - passed - skipped
    return f"passed {passed} failed {failed} skipped {skipped}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stock", action="store_true", help="requests' own adapter only")
    parser.add_argument("--compare", action="store_true", help="run stock too and compare")
    parser.add_argument("--requests", help="requests version (default: the installed one)")
    parser.add_argument("-k", dest="select", help="pytest -k expression")
    args = parser.parse_args()
    version = args.requests or importlib.metadata.version("requests")
    WORK.mkdir(parents=True, exist_ok=True)
    python, src = prepare(version)
    stock = run_suite(python, src, True, args.select) if args.stock or args.compare else None
    ours = None if args.stock else run_suite(python, src, False, args.select)
    shown = ours if ours is not None else stock
    assert shown is not None
    for name, outcome in sorted(shown.items()):
        if outcome.startswith("failed"):
            also = ""
            if ours is not None and stock is not None and stock.get(name, "").startswith("failed"):
                also = "  (fails stock too)"
            print(f"{name}  {outcome}{also}")
    if stock is not None:
        print(f"stock requests {version}: {_tally(stock)}")
    if ours is not None:
        print(f"requests {version} through h2pool: {_tally(ours)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
