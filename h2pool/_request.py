"""The internal request: built and validated in the caller's thread, then owned by the
I/O thread once queued. Also the future type callers wait on."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ._config import Timeout
from ._errors import clone
from ._urls import URL

if TYPE_CHECKING:
    from ._connection import Connection
    from ._loop import Timer
    from ._response import Response
    from ._stream import UploadPipe

__all__ = ["Request", "ResponseFuture"]


class ResponseFuture(Future["Response"]):
    """A `concurrent.futures.Future` whose ``cancel()`` also resets the stream.

    The future stays PENDING while the request is in flight so that ``cancel()`` (and
    ``asyncio.wrap_future``'s cancellation) works at any time before the response.
    """

    _on_cancel: Callable[[], None] | None = None

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        hook = self._on_cancel
        if hook is not None:
            hook()
        return True


_RESOLVED: ResponseFuture = ResponseFuture()
_RESOLVED.set_result(None)  # type: ignore[arg-type]  # a done placeholder, result unused


class Request:
    """One request.

    Ownership moves once. The caller's thread builds it, ``upload``, ``upload_source``,
    ``upload_start`` and ``header_size`` included (``_prepare.RequestBuilder``), and
    hands it over with ``IOLoop.call_soon_threadsafe``; from then on only the I/O
    thread writes it (``conn``, ``attempts``, ``bounces``, ``replayable``, ``done``,
    ``pool_timer``; a retry may replace ``upload``). ``future`` is the one field both
    sides use, through its own lock.
    """

    __slots__ = (
        "attempts",
        "body",
        "bounces",
        "conn",
        "done",
        "future",
        "header_size",
        "headers",
        "method",
        "pool_timer",
        "replayable",
        "started",
        "stream",
        "timeout",
        "upload",
        "upload_source",
        "upload_start",
        "url",
    )

    def __init__(
        self,
        method: str,
        url: URL,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        timeout: Timeout,
        stream: bool,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers  # pseudo-headers first, validated and lower-cased
        self.body = body
        self.timeout = timeout
        self.stream = stream
        self.started = 0.0  # when the caller handed it over (Response.elapsed)
        self.future = ResponseFuture()
        self.replayable = True
        self.upload: UploadPipe | None = None  # a streamed body (file or iterable)
        self.upload_source: Any = None
        self.upload_start: int | None = None  # seekable file: where to rewind for a retry
        self.attempts = 0
        self.bounces = 0
        self.header_size = 0
        self.conn: Connection | None = None  # the connection carrying it, while it has a stream
        self.pool_timer: Timer | None = None
        self.done = False

    def resolve(self, response: Response) -> bool:
        """Deliver the response; False if the caller cancelled meanwhile."""
        self.done = True
        fut = self.future
        if fut.done():
            return False
        try:
            fut.set_result(response)
        except Exception:  # InvalidStateError: cancelled in a race
            return False
        # The I/O thread keeps this Request while a streamed body arrives; it must not
        # keep the Response (the future's result) alive with it, or a Response the
        # caller drops is never collected and its stream never reset.
        self.future = _RESOLVED
        return True

    def fail(self, exc: BaseException) -> None:
        self.done = True
        if self.upload is not None:
            self.upload.abort()  # a producer blocked on a full pipe must not hang
        fut = self.future
        if fut.done():
            return
        try:
            fut.set_exception(clone(exc))
        except Exception:  # InvalidStateError: cancelled in a race
            pass
