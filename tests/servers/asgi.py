"""hypercorn (a real ASGI server, HTTP/2 over TLS) serving a small ASGI app.

``/`` sends trailers only when the server offers the ``http.response.trailers``
extension, which hypercorn does only for requests carrying ``te: trailers``: the
behaviour of gRPC-style servers that a client must ask for trailers to get them.

``/echo`` answers with JSON describing exactly what the server received (method, raw
path and query, every header, the body's length, SHA-256 and, when short, the body);
``/flaky?key=K&fail=N&status=S[&retry_after=V]`` answers S for the first N requests
with that key, then 200, and ``/count?key=K`` says how many requests it has seen;
``/lines`` streams a body whose line breaks fall across chunk boundaries; ``/sleep``
answers after 30 s (time enough to cancel); ``/stall`` sends its headers and one chunk,
then nothing for 30 s.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .certs import CertPair
from .util import free_port, stop_process, wait_for_port

BODY = b"hello from hypercorn\n"
LINE_CHUNKS = [b"alpha\r", b"\nbeta\n", b"gam", b"ma\r\r\n", b"\xce", b"\xb4elta", b"\nlast"]
_seen: Counter[str] = Counter()


async def _reply(send: Any, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    digest = hashlib.sha256()
    size = 0
    small = bytearray()
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        digest.update(chunk)
        size += len(chunk)
        if len(small) < 65536:
            small += chunk[: 65536 - len(small)]
        if not message.get("more_body"):
            break
    answer = {
        "method": scope["method"],
        "path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "length": size,
        "sha256": digest.hexdigest(),
        "body": small.decode("latin-1") if size <= 65536 else None,
    }
    await _reply(send, 200, json.dumps(answer).encode(), [(b"content-type", b"application/json")])


async def _flaky(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from urllib.parse import parse_qs

    # Read the whole request body first: hypercorn fails the whole connection
    # (KeyError in its h2 protocol) when DATA arrives for a stream it has answered.
    while (await receive()).get("more_body"):
        pass
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    key = q.get("key", "")
    _seen[key] += 1
    if scope["path"] == "/count":
        await _reply(send, 200, str(_seen[key]).encode())
        return
    if _seen[key] <= int(q.get("fail", "0")):
        headers = []
        if "retry_after" in q:
            headers.append((b"retry-after", q["retry_after"].encode()))
        await _reply(send, int(q.get("status", "503")), b"try again\n", headers)
        return
    await _reply(send, 200, f"ok after {_seen[key]}\n".encode())


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        await _echo(scope, receive, send)
        return
    if path in ("/flaky", "/count"):
        await _flaky(scope, receive, send)
        return
    if path == "/sleep":
        import asyncio

        await asyncio.sleep(30)
        await _reply(send, 200, b"late\n")
        return
    if path == "/stall":
        import asyncio

        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(30)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/lines":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in LINE_CHUNKS:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
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
