"""Run the test suite repeatedly with forced thread switching, as a race detector.

On a GIL build a thread normally runs 5 ms before the interpreter switches; most
races need a switch inside a window of a few bytecodes and never show. Each run here
is ``pytest --switch-interval 1e-6`` in its own subprocess (the interval is set by
tests/conftest.py), with a wall-clock cap per run; the JUnit XML of every run is
parsed and the failures are counted per test across runs::

    python3 stress/race_suite.py --runs 4                       # the whole suite, 4 times
    python3 stress/race_suite.py --runs 10 -k test_goaway       # a subset, 10 times
    python3 stress/race_suite.py --runs 3 -- tests/test_pool.py -m "not slow"

The exit status is 1 if any test failed (or errored) in any run, or a run hit its cap.
Arguments after ``--`` go to pytest as they are.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def failures(junit: Path) -> tuple[int, list[str]]:
    """(tests run, ids of the tests that failed or errored) from one JUnit XML file."""
    tree = ET.parse(junit)
    ran = 0
    failed: list[str] = []
    for case in tree.iter("testcase"):
        ran += 1
        if case.find("failure") is not None or case.find("error") is not None:
            module = case.get("classname", "").replace(".", "/")
            failed.append(f"{module}.py::{case.get('name', '?')}")
    return ran, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=4, help="how many times to run (default 4)")
    ap.add_argument("-k", dest="keyword", help="pytest -k expression: run only these tests")
    ap.add_argument(
        "--switch-interval",
        type=float,
        default=1e-6,
        help="seconds between forced thread switches (default 1e-6)",
    )
    ap.add_argument(
        "--cap", type=float, default=1800, help="wall-clock seconds per run (default 1800)"
    )
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = ap.parse_args(argv)

    counts: collections.Counter[str] = collections.Counter()
    capped = 0
    with tempfile.TemporaryDirectory(prefix="h2pool-race-") as tmp:
        for run in range(1, args.runs + 1):
            junit = Path(tmp) / f"run{run}.xml"
            cmd = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:randomly",
                "--switch-interval",
                repr(args.switch_interval),
                f"--junitxml={junit}",
            ]
            if args.keyword:
                cmd += ["-k", args.keyword]
            cmd += args.pytest_args
            t0 = time.monotonic()
            env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin"}
            # Its own session, so a run that hits the cap is stopped with the servers
            # its fixtures started (nginx, nghttpd), not just pytest.
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, start_new_session=True
            )
            try:
                rc = proc.wait(timeout=args.cap)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                capped += 1
                print(f"run {run}: hit the {args.cap:g} s cap", flush=True)
                continue
            elapsed = time.monotonic() - t0
            if not junit.exists():
                capped += 1  # pytest did not get as far as running tests
                print(f"run {run}: pytest exited {rc} without a report", flush=True)
                continue
            ran, failed = failures(junit)
            counts.update(failed)
            print(
                f"run {run}: {ran} tests, {len(failed)} failed, exit {rc}, {elapsed:.0f} s",
                flush=True,
            )
            for test_id in failed:
                print(f"    {test_id}", flush=True)

    print(f"\nfailures across {args.runs} runs (interval {args.switch_interval:g} s):")
    if not counts:
        print("    none")
    for test_id, n in counts.most_common():
        print(f"    {n}/{args.runs}  {test_id}")
    if capped:
        print(f"    {capped} run(s) did not finish")
    return 1 if counts or capped else 0


if __name__ == "__main__":
    sys.exit(main())
