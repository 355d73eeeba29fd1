"""Small helpers shared by the server fixtures: free ports, readiness polling, stdlib
servers on a thread."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    There is a window between closing the probe socket and the server binding
    it; on a loopback-only test machine nothing else races for it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 10.0,
    log: Path | None = None,
) -> None:
    """Poll until 127.0.0.1:port accepts a TCP connection.

    Fails early with the server's log if ``proc`` exits first.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if proc is not None and proc.poll() is not None:
            detail = log.read_text(errors="replace") if log is not None and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before listening:\n{detail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                detail = log.read_text(errors="replace") if log is not None and log.exists() else ""
                raise RuntimeError(
                    f"port {port} not listening after {timeout}s:\n{detail}"
                ) from None
            # The server is still starting: there is no event to wait on for a
            # foreign process binding a port, so back off briefly and retry.
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def read_log(path: Path) -> str:
    """A server's log file as it is now ('' before the server has written it)."""
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_log(path: Path, needle: str, count: int = 1, timeout: float = 5.0) -> str:
    """The log once ``needle`` occurs ``count`` times (or as it is at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        text = read_log(path)
        if text.count(needle) >= count or time.monotonic() > deadline:
            return text
        # Another process writes the file: nothing to wait on but the clock.
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate ``proc`` (SIGTERM, then SIGKILL) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` (state of another thread, e.g. ``client.stats()``) until it is
    truthy; return its value, or raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)  # polling: there is nothing to wait on


def rss() -> int:
    """This process's resident set size in bytes (VmRSS, Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@contextlib.contextmanager
def serve_in_thread(server: socketserver.BaseServer) -> Iterator[socketserver.BaseServer]:
    """Run one of the stdlib's servers (``http.server``, ``xmlrpc.server``) on a thread
    for the ``with`` block; it is shut down and closed, its thread joined, after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
