"""Transports a Client can use instead of the network, for testing code that shares one
Client: `MockTransport` (a function answers) and `WSGITransport` (a WSGI
app answers, in process).

``Client(transport=...)`` keeps everything above the wire: URL and header
validation, ``params=``/``json=``/``data=``/``files=`` encoding, auth, event hooks,
``Retries`` and redirects all run exactly as on the network path; only the exchange
itself is replaced. The transport runs in the caller's thread (there is no I/O thread
and no socket), so ``submit()`` runs it before returning a future that is already done.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from ._outgoing import Request
from ._response import Response

__all__ = ["MockTransport", "Transport", "WSGITransport"]


class Transport(Protocol):
    """What ``Client(transport=...)`` calls for each request (each redirect hop and each
    retry included). Raise an `h2pool.H2PoolError` (``ConnectError``,
    ``ReadTimeout``, ...) to simulate a network failure."""

    def handle_request(self, request: Request) -> Response: ...


class MockTransport:
    """Answers every request with ``handler(request)``.

    >>> def handler(request: h2pool.Request) -> h2pool.Response:   # doctest: +SKIP
    ...     return h2pool.Response(200, json={"path": request.url})
    >>> client = h2pool.Client(transport=h2pool.MockTransport(handler))  # doctest: +SKIP
    """

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        if not callable(handler):
            raise TypeError("MockTransport needs a callable handler(request) -> Response")
        self._handler = handler

    def handle_request(self, request: Request) -> Response:
        response = self._handler(request)
        if not isinstance(response, Response):
            raise TypeError(
                f"MockTransport handler returned {type(response).__name__}, not h2pool.Response"
            )
        return response

    def __repr__(self) -> str:
        return f"<MockTransport {self._handler!r}>"


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WSGITransport:
    """Sends each request to a WSGI application (Flask, Django, ...) in this process.

    The app runs in the thread that made the request; its response is read whole.
    Exceptions raised by the app reach the caller unchanged.
    """

    def __init__(self, app: WSGIApp, *, script_name: str = "", remote_addr: str = "127.0.0.1"):
        self._app = app
        self._script_name = script_name
        self._remote_addr = remote_addr

    def handle_request(self, request: Request) -> Response:
        parts = urlsplit(request.url)
        body = request.content
        scheme = parts.scheme or "http"
        port = parts.port or (443 if scheme == "https" else 80)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": self._script_name,
            # PEP 3333: PATH_INFO is the decoded path, as latin-1 "bytes in a str".
            "PATH_INFO": unquote(parts.path or "/", encoding="latin-1"),
            "QUERY_STRING": parts.query,
            "SERVER_NAME": parts.hostname or "localhost",
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self._remote_addr,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if body or request.method in ("POST", "PUT", "PATCH"):
            environ["CONTENT_LENGTH"] = str(len(body))
        for name, value in request.headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
                continue
            if key == "CONTENT_LENGTH":
                continue
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        if "HTTP_HOST" not in environ:
            environ["HTTP_HOST"] = parts.netloc.rsplit("@", 1)[-1]
        status: list[str] = []
        headers: list[tuple[str, str]] = []
        written: list[bytes] = []

        def start_response(
            status_line: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            if exc_info is not None and status:
                raise exc_info[1].with_traceback(exc_info[2])
            status[:] = [status_line]
            headers[:] = response_headers
            return written.append

        result = self._app(environ, start_response)
        try:
            for chunk in result:
                written.append(bytes(chunk))
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not status:
            raise RuntimeError("the WSGI app returned without calling start_response")
        code = int(status[0].split(" ", 1)[0])
        return Response(
            code, headers, content=b"".join(written), url=request.url, http_version="HTTP/1.1"
        )

    def __repr__(self) -> str:
        return f"<WSGITransport {self._app!r}>"
