"""Debian's Dante (``danted``) as a real SOCKS5 proxy on 127.0.0.1.

Runs in the foreground with a generated config and log under a temporary directory. It
tunnels (``command: connect``) to loopback only, to every port except those in
``blocked_ports`` (refused by rule: reply 2). ``socksmethod`` is ``none`` or ``username``
(RFC 1929), which Dante checks against the system's password database, so the
username proxy needs a real system user: `system_user` creates a throwaway one (root
only).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .util import free_port, read_log, wait_for_log, wait_for_port

DANTED = shutil.which("danted") or "/usr/sbin/danted"


def dante_installed() -> bool:
    return Path(DANTED).exists()


@dataclass
class DanteProxy:
    proc: subprocess.Popen[bytes]
    prefix: Path
    port: int

    def url(self, scheme: str = "socks5", auth: tuple[str, str] | None = None) -> str:
        cred = f"{auth[0]}:{auth[1]}@" if auth else ""
        return f"{scheme}://{cred}127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.prefix / "danted.log"

    def log(self) -> str:
        return read_log(self.log_path)

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 5.0) -> str:
        """The log once ``needle`` occurs ``count`` times (Dante writes it as it goes)."""
        return wait_for_log(self.log_path, needle, count, timeout)

    def stop(self) -> None:
        # danted forks negotiate/request/io children: signal the whole process group.
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_dante(
    prefix: Path, socksmethod: str = "none", blocked_ports: tuple[int, ...] = ()
) -> DanteProxy:
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = "error connect disconnect"
    blocks = "".join(
        f"""
socks block {{
    from: 0.0.0.0/0 to: 127.0.0.0/8 port = {p}
    log: {log}
}}
"""
        for p in blocked_ports
    )
    conf = f"""
logoutput: {prefix / "danted.log"}
debug: 0
internal: 127.0.0.1 port = {port}
external: lo
clientmethod: none
socksmethod: {socksmethod}
user.privileged: root
user.unprivileged: nobody

client pass {{
    from: 127.0.0.0/8 to: 0.0.0.0/0
    log: {log}
}}
{blocks}
socks pass {{
    from: 0.0.0.0/0 to: 127.0.0.0/8
    command: connect
    log: {log}
}}

socks block {{
    from: 0.0.0.0/0 to: 0.0.0.0/0
    log: {log}
}}
"""
    conf_path = prefix / "danted.conf"
    conf_path.write_text(conf)
    out_path = prefix / "stderr.log"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [DANTED, "-f", str(conf_path), "-p", str(prefix / "danted.pid")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DanteProxy(proc=proc, prefix=prefix, port=port)
    try:
        wait_for_port(port, proc, log=out_path)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def system_user() -> Iterator[tuple[str, str]]:
    """A throwaway system user (no home, no shell) with a random password, removed on
    exit: what Dante's ``username`` method checks credentials against. Root only."""
    name = f"h2psocks{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            ["chpasswd"], input=f"{name}:{password}\n".encode(), check=True, capture_output=True
        )
        yield name, password
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
