"""A cleartext server that answers every request with the same bytes, exactly as given:
for response heads no real server writes (odd status lines, oversized fields) and for
comparing the drop-in with the stdlib on identical input.

Thread model: socketserver's, one daemon thread per connection; run it with
``servers.util.serve_in_thread(canned(answer))``.
"""

from __future__ import annotations

import socketserver
from typing import Any


class _Canned(socketserver.StreamRequestHandler):
    """Reads each request's head (and a Content-Length body), answers with the
    server's canned bytes; closes after one answer if the server says so. Each request's
    head is recorded in ``server.heads``."""

    def handle(self) -> None:
        server: Any = self.server
        while True:
            length = 0
            line = self.rfile.readline(65537)
            if not line:
                return
            head = [line]
            while line not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                line = self.rfile.readline(65537)
                head.append(line)
            server.heads.append(b"".join(head))  # list.append: atomic, no lock
            self.rfile.read(length)
            self.wfile.write(server.answer)
            self.wfile.flush()
            if server.close_after:
                return


def canned(answer: bytes, close_after: bool = False) -> socketserver.ThreadingTCPServer:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Canned)
    server.daemon_threads = True
    server.answer = answer  # type: ignore[attr-defined]
    server.close_after = close_after  # type: ignore[attr-defined]
    server.heads = []  # type: ignore[attr-defined]  # each request's head, as received
    return server
