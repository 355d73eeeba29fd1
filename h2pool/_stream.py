"""The hand-off between the I/O thread and a caller reading a streamed body.

The I/O thread *feeds* received DATA into a `BodyPipe`; the caller *reads*
from it. Flow control follows consumption: the I/O thread does not return window
credit to the server on receipt, the caller posts "consumed n bytes" back to the I/O
thread as it reads. A slow reader therefore holds at most one stream window of
buffered data, however large the body (RFC 9113 §5.2).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._errors import ReadTimeout

if TYPE_CHECKING:
    from ._headers import Headers


class StreamOwner(Protocol):
    """What the pipe needs from its connection; each call only *posts* to the I/O thread."""

    def post_consumed(self, stream_id: int, nbytes: int) -> None: ...
    def post_cancel(self, stream_id: int, unread: int) -> None: ...


class BodyPipe:
    """A bounded body buffer shared by the I/O thread (writer) and one caller (reader)."""

    __slots__ = (
        "_chunks",
        "_closed",
        "_cond",
        "_eof",
        "_error",
        "_owner",
        "_read_timeout",
        "_size",
        "_threshold",
        "_unacked",
        "_waker",
        "stream_id",
        "trailers",
    )

    def __init__(
        self, owner: StreamOwner, stream_id: int, window: int, read_timeout: float | None
    ) -> None:
        # _cond's lock guards every attribute below; it is never held across I/O or
        # user code (feed/read only move references and count bytes). Re-entrant: the
        # Response's finalizer calls close(), and a garbage collection can run it on the
        # I/O thread while that thread is inside feed() for the same pipe.
        self._cond = threading.Condition(threading.RLock())
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._closed = False
        self._unacked = 0
        # Post credit in quarters of the window: h2 emits WINDOW_UPDATE at half a
        # window, so this keeps updates few while never letting the window run dry.
        self._threshold = max(window // 4, 16384)
        self._owner = owner
        self._read_timeout = read_timeout
        # An asyncio reader waiting for data: called once (then cleared) by the I/O thread
        # after the next feed, EOF or error, outside the lock. One wake-up per wait,
        # however many chunks arrive before the reader runs.
        self._waker: Callable[[], None] | None = None
        self.stream_id = stream_id
        self.trailers: Headers | None = None

    # -- I/O thread side -------------------------------------------------------------
    def feed(self, data: bytes) -> bool:
        """Append received data; returns False when the reader has gone (the caller
        then returns the credit itself)."""
        with self._cond:
            if self._closed:
                return False
            self._chunks.append(data)
            self._size += len(data)
            self._cond.notify()
            waker, self._waker = self._waker, None
        if waker is not None:
            waker()
        return True

    def feed_eof(self, trailers: Headers | None) -> None:
        with self._cond:
            self.trailers = trailers
            self._eof = True
            self._cond.notify_all()
            waker, self._waker = self._waker, None
        if waker is not None:
            waker()

    def feed_error(self, exc: BaseException) -> None:
        with self._cond:
            if not self._eof and self._error is None:
                self._error = exc
            self._cond.notify_all()
            waker, self._waker = self._waker, None
        if waker is not None:
            waker()

    @property
    def finished(self) -> bool:
        return self._eof or self._error is not None

    @property
    def exhausted(self) -> bool:
        """The whole body arrived and was read: closing loses nothing. (Read without
        the lock: once true, the I/O thread can no longer change it.)"""
        return self._eof and not self._chunks and self._error is None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read (a snapshot: read without the lock)."""
        return self._size

    # -- caller side -----------------------------------------------------------------
    def read(self, amt: int | None = None, partial: bool = False) -> bytes:
        """``amt`` bytes (fewer only at the end; all remaining if None); b"" at the end.

        With ``partial`` it returns as soon as any data is buffered. Blocks while the
        buffer is empty, at most ``Timeout.read`` between bytes.
        """
        parts: list[bytes] = []
        want = amt if amt is not None else -1
        credit = 0
        with self._cond:
            while True:
                while self._chunks and want != 0:
                    chunk = self._chunks.popleft()
                    if 0 < want < len(chunk):
                        self._chunks.appendleft(chunk[want:])
                        chunk = chunk[:want]
                    parts.append(chunk)
                    self._size -= len(chunk)
                    credit += len(chunk)
                    if want > 0:
                        want -= len(chunk)
                if want == 0 or (parts and partial):
                    break
                if self._eof:
                    break
                if self._error is not None:
                    if parts and (want > 0 or partial):
                        break  # deliver what we have; the error comes on the next read
                    # read() of the whole rest must not pass a truncated body as complete.
                    raise self._error
                if self._closed:
                    break
                # About to wait: hand back every byte consumed so far first, or a
                # server blocked on a closed window and a reader blocked on an empty
                # buffer would wait for each other.
                owed = self._unacked + credit
                self._unacked = 0
                credit = 0
                if owed:
                    self._cond.release()
                    try:
                        self._owner.post_consumed(self.stream_id, owed)
                    finally:
                        self._cond.acquire()
                    if self._chunks or self.finished:
                        continue
                if not self._cond.wait(self._read_timeout):
                    if self._chunks or self.finished:
                        continue
                    exc = ReadTimeout(f"no data for {self._read_timeout} s on a streamed response")
                    self._error = exc
                    self._closed = True
                    unread = self._size
                    self._cond.release()
                    try:
                        self._owner.post_cancel(self.stream_id, unread)
                    finally:
                        self._cond.acquire()
                    raise exc
            self._unacked += credit
            post = 0
            if self._unacked >= self._threshold or (self._eof and self._unacked):
                post, self._unacked = self._unacked, 0
        if post:
            self._owner.post_consumed(self.stream_id, post)
        return b"".join(parts) if len(parts) != 1 else parts[0]

    # -- asyncio reader side ------------------------------------------------------------
    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    def read_nowait(self, amt: int) -> bytes | None:
        """Up to ``amt`` buffered bytes without waiting; ``b""`` at the end; None when
        nothing is buffered yet (then `arm` a waker and wait). Raises the
        stream's error once what arrived before it has been read. Credit is returned
        as `read` does: in quarter-window batches, and all of it before a wait."""
        parts: list[bytes] = []
        post = 0
        with self._cond:
            # Decided here, not after the lock: once it is released the I/O thread may
            # feed the last chunk and END_STREAM, and "empty" must not become "the end".
            ended = False
            got = 0
            while self._chunks and got < amt:
                chunk = self._chunks.popleft()
                if got + len(chunk) > amt:
                    self._chunks.appendleft(chunk[amt - got :])
                    chunk = chunk[: amt - got]
                parts.append(chunk)
                got += len(chunk)
            if parts:
                self._size -= got
                self._unacked += got
                if self._unacked >= self._threshold or (self._eof and self._unacked):
                    post, self._unacked = self._unacked, 0
            elif self._eof:
                ended = True
                if self._unacked:
                    post, self._unacked = self._unacked, 0
            elif self._error is not None:
                # Before _closed, as in read(): a body a timeout or a reset cut short
                # must not read as complete when it is read again.
                raise self._error
            elif self._closed:
                ended = True
            else:
                post, self._unacked = self._unacked, 0  # about to wait: hand it all back
        if post:
            self._owner.post_consumed(self.stream_id, post)
        if parts:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        return b"" if ended else None

    def arm(self, waker: Callable[[], None]) -> bool:
        """Have ``waker`` called (once, from the I/O thread) when data, EOF or an error
        arrives; False if something already has (read again instead of waiting)."""
        with self._cond:
            if self._chunks or self._eof or self._error is not None or self._closed:
                return False
            self._waker = waker
            return True

    def expire(self) -> ReadTimeout | None:
        """The asyncio reader's read timeout ran out: fail and reset the stream, unless
        data arrived meanwhile (then None: read again)."""
        with self._cond:
            if self._chunks or self._eof or self._error is not None or self._closed:
                return None
            exc = ReadTimeout(f"no data for {self._read_timeout} s on a streamed response")
            self._error = exc
            self._closed = True
            self._waker = None
            unread = self._size
        self._owner.post_cancel(self.stream_id, unread)
        return exc

    def close(self) -> None:
        """Stop reading: unread bytes return their credit, an unfinished stream is reset."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            unread = self._size + self._unacked
            self._chunks.clear()
            self._size = 0
            self._unacked = 0
            finished = self._eof or self._error is not None
        if not finished:
            self._owner.post_cancel(self.stream_id, unread)
        elif unread:
            self._owner.post_consumed(self.stream_id, unread)


class UploadPipe:
    """A bounded buffer between a body producer and the I/O thread.

    The producer (the caller's thread for ``request()``, a short-lived pump thread for
    ``submit()``) pulls from the user's file or iterable and ``put``s chunks here; it
    blocks while ``capacity`` bytes are buffered, so memory stays bounded however large
    the body. The I/O thread ``take``s what the flow-control window allows. User code
    never runs on the I/O thread.
    """

    __slots__ = (
        "_chunks",
        "_cond",
        "_eof",
        "_error",
        "_resume",
        "_size",
        "aborted",
        "capacity",
        "declared_length",
        "produced",
        "pump_done",
        "taken",
        "waiting",
    )

    def __init__(self, capacity: int, declared_length: int | None) -> None:
        # _cond's lock guards every attribute below; never held across I/O or user code.
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[bytes | memoryview] = deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self.aborted = False
        self.capacity = capacity
        self.declared_length = declared_length
        self.produced = 0
        self.taken = 0  # bytes the I/O thread has taken: > 0 means not replayable as is
        self.pump_done = threading.Event()  # set when the producer has let go of the source
        # Set by the I/O thread when it found the pipe empty; the producer then posts
        # ``_resume`` to the I/O thread on its next put (once, not per chunk).
        self.waiting = False
        self._resume: Any = None

    # -- producer side ---------------------------------------------------------------------
    def put(self, data: bytes) -> bool:
        """Queue a chunk, blocking while the pipe is full; False once the request is over."""
        resume = None
        with self._cond:
            while self._size >= self.capacity and not self.aborted:
                self._cond.wait()
            if self.aborted:
                return False
            self._chunks.append(data)
            self._size += len(data)
            self.produced += len(data)
            if self.waiting:
                self.waiting = False
                resume = self._resume
        if resume is not None:
            resume()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        """The producer is done (``error``: the user's source raised)."""
        resume = None
        with self._cond:
            if error is not None:
                self._error = error
            self._eof = True
            if self.waiting:
                self.waiting = False
                resume = self._resume
        if resume is not None:
            resume()

    # -- I/O thread side -------------------------------------------------------------------
    def bind(self, resume: Any) -> None:
        with self._cond:
            self._resume = resume

    def take(self, limit: int) -> tuple[bytes | memoryview, bool, BaseException | None]:
        """Up to ``limit`` bytes without blocking: (data, at end, producer error)."""
        with self._cond:
            if self._error is not None:
                return b"", True, self._error
            parts: list[bytes | memoryview] = []
            got = 0
            while self._chunks and got < limit:
                chunk = self._chunks.popleft()
                if got + len(chunk) > limit:
                    # Split through a view: slicing bytes copies the rest of the chunk,
                    # once per frame (a 1 MiB chunk sent in 16 KiB frames: 32 MiB copied).
                    view = chunk if type(chunk) is memoryview else memoryview(chunk)
                    self._chunks.appendleft(view[limit - got :])
                    chunk = view[: limit - got]
                parts.append(chunk)
                got += len(chunk)
            self._size -= got
            self.taken += got
            end = self._eof and not self._chunks
            if not got and not end:
                self.waiting = True
            if got:
                self._cond.notify()
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return data, end, None

    def abort(self) -> None:
        """The request is over (done, failed, cancelled): release a blocked producer."""
        with self._cond:
            self.aborted = True
            self._chunks.clear()
            self._size = 0
            self._cond.notify_all()


def rewind_point(source: Any) -> int | None:
    """Where a seekable file body starts, so a retry or a redirect can read it again;
    None for anything else."""
    try:
        if callable(getattr(source, "read", None)) and source.seekable():
            return int(source.tell())
    except (AttributeError, OSError, ValueError):
        pass
    return None


def pump_body(source: Any, pipe: UploadPipe, chunk_size: int = 64 * 1024) -> None:
    """Read the user's body source into ``pipe``; runs on a caller or pump thread."""
    try:
        _pump(source, pipe, chunk_size)
    finally:
        pipe.pump_done.set()


def replay_body(source: Any, start: int, old: UploadPipe, new: UploadPipe) -> None:
    """Pump a seekable file again from ``start`` for a retried request; runs on a pump
    thread. The previous pump (aborted) must have let go of the file first."""
    try:
        if not old.pump_done.wait(30.0):
            new.finish(RuntimeError("the previous read of the request body did not stop"))
            return
        try:
            source.seek(start)
        except (OSError, ValueError) as exc:
            new.finish(exc)
            return
        pump_body(source, new)
    finally:
        new.pump_done.set()  # on every path, so a further retry does not wait in vain


def _pump(source: Any, pipe: UploadPipe, chunk_size: int) -> None:
    try:
        read = getattr(source, "read", None)
        if callable(read):
            while True:
                chunk = read(chunk_size)
                if not chunk:
                    break
                if isinstance(chunk, str):
                    chunk = chunk.encode("utf-8")
                if not pipe.put(bytes(chunk)):
                    return
        else:
            for chunk in source:
                if isinstance(chunk, str):
                    chunk = chunk.encode("utf-8")
                elif not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise TypeError(f"body iterable yielded {type(chunk).__name__}, not bytes")
                if chunk and not pipe.put(bytes(chunk)):
                    return
    except BaseException as exc:
        pipe.finish(exc)
        if not isinstance(exc, Exception):
            raise
        return
    pipe.finish()
