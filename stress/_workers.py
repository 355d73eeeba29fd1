"""Running one measurement in a fresh interpreter, for bench.py and latency.py.

Each measurement runs as ``python SCRIPT --_worker SPEC_JSON`` so that clients never
share a process (or a GIL) with the servers, relays or other clients of the run. The
worker prints ``RESULT <json>``; the parent kills it after a deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["kill_current", "run_worker"]

_current: subprocess.Popen[str] | None = None  # the worker running now (signal handlers)


def kill_current() -> None:
    """Kill the worker running now, if any (from a signal handler)."""
    proc = _current
    if proc is not None and proc.poll() is None:
        proc.kill()


def run_worker(
    script: str | Path,
    spec: dict[str, Any],
    timeout: float,
    cwd: str | Path | None = None,
    python: str | None = None,
) -> dict[str, Any]:
    """Run ``script --_worker spec`` and return its result, or ``{"fatal": ...}``.

    ``python`` is the interpreter (default: this one); compare.py runs some clients
    in a virtual environment of their own.
    """
    global _current
    cmd = [python or sys.executable, str(Path(script).resolve()), "--_worker", json.dumps(spec)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=None if cwd is None else str(cwd),
    )
    _current = proc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"fatal": f"worker killed after {timeout:.0f}s (hung)", "stderr": err[-2000:]}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _current = None
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            res: dict[str, Any] = json.loads(line[7:])
            if err.strip():
                res["stderr"] = err[-2000:]
            return res
    return {"fatal": f"worker exited {proc.returncode} without a result", "stderr": err[-2000:]}
