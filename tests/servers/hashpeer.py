"""An :class:`~servers.h2peer.H2Peer` that hashes request bodies instead of keeping them.

Uploads of hundreds of MiB would otherwise sit in ``Request.body`` inside the test
process and swamp any RSS measurement; here each received DATA frame only updates a
sha256 and a byte count. Everything else (routes, verbs, ``requests``, ``resets``,
``wait_for``) is the scripted peer's.

Two extra kinds of route:

``hash_route``
    at END_STREAM, answer 200 with JSON ``{"sha256", "length", "content_length"}``:
    what the peer received and the Content-Length header it saw (``null`` if none).
``early_routes={path: handler}``
    ``handler(conn, stream_id, request)`` runs as soon as the request's HEADERS
    arrive, before any of its body (a server that answers without reading the
    upload). The path's ordinary route still runs at END_STREAM, if that comes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .h2peer import H2Peer, Handler, PeerConnection, Request


class HashingBody:
    """Stands in for ``Request.body`` (a bytearray): ``+=`` hashes and counts."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.length = 0

    def __iadd__(self, data: bytes) -> HashingBody:
        self._sha.update(data)
        self.length += len(data)
        return self

    def __len__(self) -> int:
        return self.length

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def hash_route(conn: PeerConnection, stream_id: int, req: Request) -> None:
    body = req.body
    assert isinstance(body, HashingBody)
    report = {
        "sha256": body.hexdigest(),
        "length": body.length,
        "content_length": req.header("content-length"),
    }
    conn.respond(
        stream_id, 200, json.dumps(report).encode(), [("content-type", "application/json")]
    )


def blob_route(blob: bytes) -> Handler:
    """A route answering 200 with ``blob`` (flow-controlled, with Content-Length)."""

    def handler(conn: PeerConnection, stream_id: int, req: Request) -> None:
        conn.respond(stream_id, 200, blob)

    return handler


class HashPeer(H2Peer):
    def __init__(self, *args: Any, early_routes: dict[str, Handler] | None = None, **kw: Any):
        kw.setdefault("default", hash_route)
        super().__init__(*args, **kw)
        self.early_routes = dict(early_routes or {})

    def received(self, path: str) -> list[HashingBody]:
        """The bodies received so far for ``path`` (complete or not)."""
        return [r.body for r in self.requests_for(path)]  # type: ignore[misc]

    def _record_request(self, req: Request) -> None:
        # Runs on the connection thread with the connection's lock held, right after
        # the HEADERS and before any DATA of this stream is processed.
        req.body = HashingBody()  # type: ignore[assignment]
        super()._record_request(req)
        early = self.early_routes.get(req.path.split("?", 1)[0])
        if early is not None:
            with self._cond:
                conn = next(c for c in self.connections if c.index == req.conn_index)
            try:
                early(conn, req.stream_id, req)
            except Exception as exc:
                self._record_error(exc)
