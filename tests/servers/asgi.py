"""hypercorn (a real ASGI server, HTTP/2 over TLS) serving a small ASGI app.

The app sends trailers only when the server offers the ``http.response.trailers``
extension, which hypercorn does only for requests carrying ``te: trailers``: the
behaviour of gRPC-style servers that a client must ask for trailers to get them.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .certs import CertPair
from .util import free_port, stop_process, wait_for_port

BODY = b"hello from hypercorn\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    trailers = "http.response.trailers" in scope.get("extensions", {})
    te = dict(scope["headers"]).get(b"te", b"").decode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"x-seen-te", te.encode())],
            "trailers": trailers,
        }
    )
    await send({"type": "http.response.body", "body": BODY, "more_body": False})
    if trailers:
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-checksum", b"abc")],
                "more_trailers": False,
            }
        )


@dataclass
class HypercornServer:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


def start_hypercorn(workdir: Path, cert: CertPair) -> HypercornServer:
    port = free_port()
    log = workdir / "hypercorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hypercorn",
                "--certfile",
                str(cert.cert_path),
                "--keyfile",
                str(cert.key_path),
                "--bind",
                f"127.0.0.1:{port}",
                "servers.asgi:app",
            ],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = HypercornServer(proc, port)
    try:
        wait_for_port(port, proc, log=log)
    except BaseException:
        server.stop()
        raise
    return server
