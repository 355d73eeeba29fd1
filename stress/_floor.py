"""The floor of h2pool's design in pure Python: what one I/O thread can do with no
protocol library at all.

``FloorClient`` is built the way h2pool is (caller threads hand each request to one
I/O thread through a deque, wake it through h2pool's own wake-up channel only when it
may sleep, and wait on a lock the I/O thread releases; its reads stop at an empty socket
the way h2pool's do), but its I/O thread does nothing beyond the
bytes: a request is one pre-encoded HEADERS frame (HPACK from the static table and
literals), a response is recognised by its END_STREAM flag, its status by the first
HPACK byte (0x88, ``:status: 200`` from the static table) and its body is the DATA
payloads. No validation, no flow control beyond one huge connection window, no
timeouts, no errors handled: it is a measuring stick, not a client, and works only
against a well-behaved server (the bench nginx) for small GETs.

Measured in the same run as the real clients (``python stress/compare.py --clients
floor,h2pool,pyreqwest``), it tells how far h2pool's own work is from the cost of the
architecture itself (the cross-thread hand-offs, TLS, the syscalls), and so which
ratio to a compiled client pure Python can reach at all with this design.
"""

from __future__ import annotations

import _thread
import collections
import selectors
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from h2pool._loop import WakeChannel
from h2pool._sockio import TLS_RECORD, read_probe

__all__ = ["FloorClient"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_STATUS_200 = 0x88  # HPACK static table entry 8, ":status: 200"


def _frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def _literal(index: int, value: bytes) -> bytes:
    """HPACK literal without indexing, name from the static table (index < 16), value
    not Huffman-coded and shorter than 127 bytes."""
    return bytes((index, len(value))) + value


class _Pending:
    __slots__ = ("body", "lock", "status")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.status = 0
        self.body: list[bytes] = []


class FloorClient:
    """GETs over one HTTP/2 connection through one I/O thread; see the module doc."""

    def __init__(self, ca: str, url: str) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "localhost", parts.port or 443
        ctx = ssl.create_default_context(cafile=ca)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection((host, port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock = ctx.wrap_socket(raw, server_hostname=host)
        if sock.selected_alpn_protocol() != "h2":
            raise RuntimeError("the server did not choose h2")
        window = (1 << 30).to_bytes(4, "big")
        sock.sendall(_PREFACE + _frame(4, 0, 0) + _frame(8, 0, 0, window))
        sock.setblocking(False)
        self._authority = f"{host}:{port}".encode()
        self._blocks: dict[str, bytes] = {}
        self._queue: collections.deque[tuple[bytes, _Pending]] = collections.deque()
        self._asleep = False
        self._stopping = False
        self._wake = WakeChannel()  # h2pool's own: an eventfd on Linux
        self._more_waiting = read_probe(sock)  # and its check after a short read
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake.fd, selectors.EVENT_READ, False)
        self._selector.register(sock, selectors.EVENT_READ, True)
        self._thread = threading.Thread(target=self._run, name="floor-io", daemon=True)
        self._thread.start()

    def get(self, url: str) -> tuple[int, bytes]:
        """(status, body) of GET ``url`` (same origin as the first one)."""
        path = urlsplit(url).path or "/"
        block = self._blocks.get(path)
        if block is None:  # :method GET, :scheme https, :path, :authority
            block = b"\x82\x87" + _literal(0x04, path.encode()) + _literal(0x01, self._authority)
            self._blocks[path] = block
        pending = _Pending()
        self._queue.append((block, pending))
        if self._asleep:
            self._wake.write()
        pending.lock.acquire()
        return pending.status, b"".join(pending.body)

    def close(self) -> None:
        self._stopping = True
        self._wake.write()
        self._thread.join(10)
        self._sock.close()
        self._wake.close()

    # -- the I/O thread ---------------------------------------------------------------
    def _run(self) -> None:
        sock, queue, select = self._sock, self._queue, self._selector.select
        inflight: dict[int, _Pending] = {}
        buf = bytearray()
        next_sid = 1
        while not self._stopping:
            self._asleep = True
            events = select(0 if queue else None)
            self._asleep = False
            for key, _ in events:
                if not key.data:
                    try:
                        self._wake.read()
                    except BlockingIOError:
                        pass
                    continue
                while True:
                    try:
                        chunk = sock.recv(65536)
                    except (ssl.SSLWantReadError, BlockingIOError):
                        break
                    if not chunk:
                        return
                    buf += chunk
                    if len(chunk) < TLS_RECORD and not self._more_waiting():
                        break
                out = self._frames(buf, inflight)
                if out:
                    sock.sendall(out)
            batch = []
            while queue:
                block, pending = queue.popleft()
                inflight[next_sid] = pending
                batch.append(_frame(1, 5, next_sid, block))  # END_STREAM | END_HEADERS
                next_sid += 2
            if batch:
                sock.sendall(b"".join(batch))  # one send per turn

    @staticmethod
    def _frames(buf: bytearray, inflight: dict[int, Any]) -> bytes:
        """Consume the whole frames in ``buf``; release finished requests; return the
        SETTINGS ACKs owed."""
        pos, out = 0, b""
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            stop = pos + 9 + length
            if stop > len(buf):
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            if kind == 4 and not flags & 1:
                out += _frame(4, 1, 0)
            elif kind == 1 and sid in inflight and length:
                if buf[pos + 9] == _STATUS_200:
                    inflight[sid].status = 200
            elif kind == 0 and sid in inflight:
                inflight[sid].body.append(bytes(buf[pos + 9 : stop]))
            if flags & 1 and kind in (0, 1) and sid in inflight:
                inflight.pop(sid).lock.release()
            pos = stop
        del buf[:pos]
        return out
