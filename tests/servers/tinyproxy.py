"""Debian's tinyproxy as a real HTTP CONNECT proxy on 127.0.0.1.

Runs in the foreground (``-d``) with a generated config, log and pid file under a
temporary directory; it only tunnels to the ``ConnectPort`` ports it is given and,
with ``basic_auth``, asks for ``Proxy-Authorization`` (tinyproxy >= 1.10).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .util import free_port, read_log, stop_process, wait_for_log, wait_for_port

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"


def tinyproxy_installed() -> bool:
    return Path(TINYPROXY).exists()


@dataclass
class TinyProxy:
    proc: subprocess.Popen[bytes]
    prefix: Path
    port: int
    auth: tuple[str, str] | None

    @property
    def url(self) -> str:
        """``http://[user:password@]127.0.0.1:port`` (with the credentials it requires)."""
        cred = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        return f"http://{cred}127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.prefix / "tinyproxy.log"

    def log(self) -> str:
        return read_log(self.log_path)

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 5.0) -> str:
        """The log once ``needle`` occurs ``count`` times (tinyproxy writes it as it goes)."""
        return wait_for_log(self.log_path, needle, count, timeout)

    def stop(self) -> None:
        stop_process(self.proc)


def start_tinyproxy(
    prefix: Path, connect_ports: list[int], basic_auth: tuple[str, str] | None = None
) -> TinyProxy:
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 30",
        "MaxClients 64",
        "Allow 127.0.0.1",
        "LogLevel Connect",
        f'LogFile "{prefix / "tinyproxy.log"}"',
        f'PidFile "{prefix / "tinyproxy.pid"}"',
        *(f"ConnectPort {p}" for p in connect_ports),
    ]
    if basic_auth is not None:
        lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
    conf = prefix / "tinyproxy.conf"
    conf.write_text("\n".join(lines) + "\n")
    out_path = prefix / "stderr.log"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [TINYPROXY, "-d", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = TinyProxy(proc=proc, prefix=prefix, port=port, auth=basic_auth)
    try:
        wait_for_port(port, proc, log=out_path)
    except BaseException:
        server.stop()
        raise
    return server
