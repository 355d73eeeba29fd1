"""Logging: every record comes from the "h2pool" logger, and no header value or body
byte reaches the log at DEBUG, through connections, GOAWAY retries and redirects."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

SECRETS = ("Bearer tok-AAAA-1234", "sid=cookie-BBBB-5678", "Basic cHJveHktQ0NDQw==")
BODY = b"body-DDDD-9999"


def _all_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


@pytest.mark.timeout(60)
def test_debug_logs_carry_no_credentials_or_bodies(nginx, make_client, caplog):
    caplog.set_level(logging.DEBUG, logger="h2pool")
    client = make_client(headers={"proxy-authorization": SECRETS[2]})
    headers = {"authorization": SECRETS[0], "cookie": SECRETS[1]}
    # goaway100: nginx sends GOAWAY after 100 streams, so 300 requests from 16 threads
    # open several connections and retry the streams above each GOAWAY.
    with ThreadPoolExecutor(16) as pool:
        urls = [nginx.goaway100_url + "/discard"] * 300
        for r in pool.map(lambda u: client.post(u, body=BODY, headers=headers), urls):
            assert r.status == 200
    r = client.post(
        nginx.https_url + "/r/307?token=EEEE", body=BODY, headers=headers, follow_redirects=True
    )
    assert r.status == 200 and r.history
    client.close()
    text = _all_text(caplog)
    assert caplog.records, "expected DEBUG records (connections, redirects)"
    assert {rec.name for rec in caplog.records} == {"h2pool"}
    assert "following 307 redirect" in text
    for secret in (*SECRETS, BODY.decode(), "EEEE"):
        assert secret not in text, secret


_PRINTS_NOTHING = """
import sys
import h2pool

client = h2pool.Client(http2_prior_knowledge=True)
try:
    client.get(sys.argv[1], timeout=5)
except h2pool.H2PoolError as exc:
    print(type(exc).__name__)
client.close()
"""


@pytest.mark.timeout(60)
def test_the_library_prints_nothing_without_a_handler(tmp_path):
    # An h2c request to an HTTP/1.1 server is a protocol error, logged at WARNING. With
    # no handler configured by the application, Python's last-resort handler would
    # print it to stderr; the library's NullHandler keeps it quiet.
    import socket
    import subprocess
    import sys
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PRINTS_NOTHING, f"http://127.0.0.1:{port}/"],
            capture_output=True,
            timeout=30,
        )
    finally:
        t.join(10)
        listener.close()
    assert proc.stdout == b"ProtocolError\n"
    assert proc.stderr == b""
