"""h2pool: a thread-safe, connection-pooling HTTP/2 client.

One `Client` is shared by every thread of a program; one background I/O thread
owns every socket and h2 state machine, and caller threads wait on futures.
"""

from __future__ import annotations

import logging as _logging

from ._api import delete, get, head, options, patch, post, put, request, submit
from ._async import AsyncClient
from ._auth import Auth, BasicAuth, BearerAuth
from ._client import Client, InsecureRequestWarning, default_client
from ._config import Limits, Timeout
from ._errors import (
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    DecodingError,
    H2PoolError,
    HTTPStatusError,
    InvalidHeader,
    InvalidURL,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    RedirectError,
    RequestBodyError,
    StreamClosed,
    StreamReset,
    TimeoutError,
    TLSError,
    TooManyRedirects,
    WriteTimeout,
)
from ._headers import Headers
from ._outgoing import Request
from ._pool import Stats
from ._response import Response
from ._retry import Retries
from ._transport import MockTransport, Transport, WSGITransport
from ._version import __version__
from .compat import HTTP20Connection, HTTPConnection, HTTPSConnection

__all__ = [
    "AsyncClient",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "Client",
    "ClientClosed",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLost",
    "DecodingError",
    "H2PoolError",
    "HTTP20Connection",
    "HTTPConnection",
    "HTTPSConnection",
    "HTTPStatusError",
    "Headers",
    "InsecureRequestWarning",
    "InvalidHeader",
    "InvalidURL",
    "Limits",
    "MockTransport",
    "PoolTimeout",
    "ProtocolError",
    "ReadTimeout",
    "RedirectError",
    "Request",
    "RequestBodyError",
    "Response",
    "Retries",
    "Stats",
    "StreamClosed",
    "StreamReset",
    "TLSError",
    "Timeout",
    "TimeoutError",
    "TooManyRedirects",
    "Transport",
    "WSGITransport",
    "WriteTimeout",
    "__version__",
    "default_client",
    "delete",
    "get",
    "head",
    "options",
    "patch",
    "post",
    "put",
    "request",
    "submit",
]

# A library never prints: without a handler of the application's, Python's last-resort
# handler would write WARNING records (a server's protocol error) to stderr.
_logging.getLogger("h2pool").addHandler(_logging.NullHandler())
