"""The internal request: built and validated in the caller's thread, then owned by the
I/O thread once queued. Also the future type callers wait on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import TYPE_CHECKING, Any, Union

from ._config import Timeout
from ._errors import clone
from ._urls import URL

if TYPE_CHECKING:
    from ._connection import Connection
    from ._loop import Timer
    from ._response import Response
    from ._stream import UploadPipe

__all__ = ["Request", "ResponseFuture", "Waiter"]


class ResponseFuture(Future["Response"]):
    """A `concurrent.futures.Future` whose ``cancel()`` also resets the stream.

    The future stays PENDING while the request is in flight so that ``cancel()`` (and
    ``asyncio.wrap_future``'s cancellation) works at any time before the response.
    """

    _on_cancel: Callable[[], None] | None = None

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        hook, self._on_cancel = self._on_cancel, None  # it refers to the Request
        if hook is not None:
            hook()
        return True


class Waiter:
    """What a blocking call waits on: the part of `ResponseFuture` the engine uses
    (``done``, ``set_result``, ``set_exception``, ``cancel``, ``_on_cancel``) and one
    ``wait()``, without a Condition, an RLock and a callback list per request.

    The I/O thread completes it by releasing ``_gate``, which the caller is blocked on:
    one lock hand-off wakes the caller (a Future's ``notify_all`` wakes it while the I/O
    thread still holds the condition's lock, so it often blocks a second time). ``_mu``
    guards the state change against ``cancel()``, which the waiting thread calls when it
    is interrupted (Ctrl-C); both hold it only for a few assignments.
    """

    __slots__ = ("_gate", "_mu", "_on_cancel", "_state", "_value")

    _PENDING, _RESULT, _ERROR, _CANCELLED = 0, 1, 2, 3

    def __init__(self) -> None:
        self._gate = threading.Lock()
        self._gate.acquire()
        self._mu = threading.Lock()
        self._state = 0
        self._value: Any = None
        self._on_cancel: Callable[[], None] | None = None

    def done(self) -> bool:
        return self._state != 0

    def _complete(self, state: int, value: Any) -> None:
        with self._mu:
            if self._state:
                raise InvalidStateError("the request is already complete")
            self._value = value
            self._state = state
        self._gate.release()

    def set_result(self, result: Any) -> None:
        self._complete(1, result)

    def set_exception(self, exc: BaseException) -> None:
        self._complete(2, exc)

    def cancel(self) -> bool:
        """Give up the request (the stream is reset); False if it already completed."""
        with self._mu:
            if self._state:
                return self._state == 3
            self._state = 3
        hook, self._on_cancel = self._on_cancel, None  # it refers to the Request
        if hook is not None:
            hook()
        return True

    def wait(self) -> Any:
        """Block until complete; the result, or raise the request's exception. Called
        once, by the thread that made the request (after a ``cancel()`` it is not)."""
        self._gate.acquire()
        state, value = self._state, self._value
        if state == 1:
            return value
        if state == 2:
            # Called once: drop the waiter's and this frame's hold on the exception,
            # whose traceback holds the caller's frames (and their request body) and,
            # through them, this Waiter: a cycle only the cyclic GC would free.
            self._value = None
            try:
                raise value
            finally:
                del value
        raise CancelledError


Completion = Union[ResponseFuture, Waiter]

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

    future: Completion

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
        # Client._submit puts the completion here before the hand-off: a ResponseFuture
        # for submit(), a Waiter for a blocking call (no Future built for nothing).
        self.future = _RESOLVED
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
        # A completed future cannot be cancelled, and its cancel hook would keep this
        # Request (and its body) alive for as long as the caller keeps the future.
        fut._on_cancel = None
        return True

    def fail(self, exc: BaseException) -> None:
        self.done = True
        if self.upload is not None:
            self.upload.abort()  # a producer blocked on a full pipe must not hang
        fut = self.future
        # As in resolve; and while the future's cancel hook refers to this Request, the
        # two form a cycle that only the cyclic GC frees, request body included.
        self.future = _RESOLVED
        if fut.done():
            return
        try:
            fut.set_exception(clone(exc))
        except Exception:  # InvalidStateError: cancelled in a race
            return
        fut._on_cancel = None
