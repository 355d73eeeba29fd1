"""The I/O thread of one Client as its callers see it: started on the first request,
restarted after a fork, failed over when it dies, stopped when the Client is dropped.

Runs in caller threads, except `Runtime._on_loop_death` (the dying I/O thread),
the at-fork hook (the child's only thread) and `_close_abandoned` (whichever thread
garbage-collects the Client). A `Runtime` owns its Client's ``IOLoop`` and
``Pool`` references, the closed flag and the reason the loop died; the loop and pool
themselves belong to the I/O thread and are only ever handed commands.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ._errors import ClientClosed
from ._loop import IOLoop
from ._pool import Pool, Stats, empty_stats
from ._request import Request

__all__ = ["Runtime"]


class Runtime:
    """Starts, submits to and stops one I/O thread and its pool.

    Only its Client refers to a Runtime (the loop's crash handler holds it weakly), so
    a Client dropped without ``close()`` takes its Runtime with it, and the Runtime's
    finalizer stops the thread.
    """

    def __init__(self, make_pool: Callable[[IOLoop], Pool]) -> None:
        # Builds the pool for a new loop; must not refer to the Client (see above).
        self._make_pool = make_pool
        # _lock guards starting the I/O thread and `closed`; taken by callers on their
        # first request and in close(), held only for those assignments, never across
        # I/O or while waiting for a response.
        self._lock = threading.Lock()
        self.loop: IOLoop | None = None  # guarded by _lock; read without it
        self.pool: Pool | None = None  # guarded by _lock; read without it
        self.closed = False  # guarded by _lock; read without it
        # Set once, by the dying I/O thread: new requests raise it as their cause.
        self.broken: BaseException | None = None
        self._pid = os.getpid()
        self._gc_finalizer: weakref.finalize[Any, Any] | None = None
        _live_runtimes.add(self)

    def refuse_if_closed(self) -> None:
        """Raise `ClientClosed` once closed; checked before a request is built,
        so a closed client says so whatever else is wrong with the request."""
        if self.closed:
            raise ClientClosed("the client is closed")

    def after_fork_in_child(self) -> None:
        """The child of a fork has no I/O thread, only copies of the parent's sockets.

        Close those copies (the parent's connections are unaffected: no FIN is sent while
        the parent holds them) and start afresh on the next request.
        """
        self._lock = threading.Lock()
        loop, pool = self.loop, self.pool
        self.loop = None
        self.pool = None
        if loop is not None:
            loop.abandon_after_fork(pool)

    def ensure(self) -> tuple[IOLoop, Pool]:
        """The running loop and its pool, started now if need be; raises
        `ClientClosed` once closed."""
        loop, pool = self.loop, self.pool
        if loop is not None and pool is not None:
            if self._pid == os.getpid():
                return loop, pool
            self.after_fork_in_child()  # a fork the at-fork hook did not see
        return self._start()

    def _start(self) -> tuple[IOLoop, Pool]:
        with self._lock:
            self.refuse_if_closed()
            if self.loop is None:
                loop = IOLoop()
                pool = self._make_pool(loop)
                # The I/O thread must not keep the Client alive: a Client dropped without
                # close() is garbage collected, and its finalizer stops the thread and
                # closes the sockets instead of leaking them for the life of the process.
                loop.on_death = _death_handler(weakref.ref(self), pool)
                self._gc_finalizer = weakref.finalize(self, _close_abandoned, loop, pool)
                self.pool = pool
                self.loop = loop
                self._pid = os.getpid()
                loop.start()
            assert self.loop is not None and self.pool is not None
            return self.loop, self.pool

    def submit(self, req: Request) -> None:
        """Hand ``req`` to the I/O thread; ``req.future.cancel()`` then resets it there."""
        if self.broken is not None:
            raise ClientClosed("the client's I/O thread has stopped") from self.broken
        loop, pool = self.ensure()
        req.future._on_cancel = lambda: loop.call_soon_threadsafe(pool.cancel, req)
        loop.call_soon_threadsafe(pool.submit, req)
        if loop.stopping:
            self.fail_leftovers()

    def stats(self) -> Stats:
        """The pool's counters, taken on the I/O thread (zeros before the first request)."""
        loop, pool = self.loop, self.pool
        if loop is None or pool is None:
            return empty_stats()
        if loop.stopping:
            return _stopped_stats(pool)
        take = _StatsTake(pool)
        loop.call_soon_threadsafe(take)
        if loop.stopping:
            # As in submit: the loop may have stopped before its last turn saw the
            # command; then one of the drains (ours or the closer's) answers it.
            self.fail_leftovers()
        try:
            return take.future.result(timeout=10.0)
        except Exception:
            return empty_stats()

    def close(self, timeout: float | None) -> None:
        """Refuse new requests, let in-flight ones run for ``timeout`` seconds, join the
        I/O thread and fail whatever it left queued. Called from ``Client.close``; the
        ResourceWarning names that method's caller."""
        with self._lock:
            already = self.closed
            self.closed = True
            loop, pool = self.loop, self.pool
        if loop is None or pool is None:
            return
        if self._gc_finalizer is not None:
            self._gc_finalizer.detach()
        if not already:
            loop.call_soon_threadsafe(pool.close, timeout)
        if not loop.join(None if timeout is None else timeout + 5.0):
            warnings.warn("h2pool I/O thread did not stop in time", ResourceWarning, stacklevel=3)
        self.fail_leftovers()

    def _on_loop_death(self, exc: BaseException) -> None:  # I/O thread, dying
        err = ClientClosed(f"the h2pool I/O thread crashed: {exc!r}")
        err.__cause__ = exc
        self.broken = err
        assert self.loop is not None and self.pool is not None
        self.pool.abort(err)
        # Stopping before the drain, not after it (the loop's own flag is only set once
        # this handler returns): a caller that checked `broken` before it was set may
        # queue its request after this drain, and then only its own `loop.stopping`
        # check in `submit` can fail it. After pool.abort, so that stats(), which reads
        # a stopped pool from the caller's thread, never sees abort half done.
        self.loop.stop()
        self.fail_leftovers()

    def fail_leftovers(self) -> None:
        """Requests queued after the loop stopped would never run: fail them."""
        loop = self.loop
        if loop is None:
            return
        for fn, args in loop.drain_commands():
            if isinstance(fn, _StatsTake):
                fn.answer_stopped()
            for arg in args:
                if isinstance(arg, Request):
                    arg.fail(self.broken or ClientClosed("the client is closed"))


def _stopped_stats(pool: Pool) -> Stats:
    snap = pool.stats()
    # Stopped: the counters stand, nothing is open or waiting any more.
    snap["connections"] = snap["open_streams"] = snap["queued"] = 0
    snap["origins"], snap["per_origin"] = {}, {}
    return snap


class _StatsTake:
    """A ``stats()`` request: run on the I/O thread, or answered by whoever drains it
    from a stopped loop's queue, so a ``stats()`` racing ``close()`` never waits out
    its timeout."""

    __slots__ = ("future", "pool")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.future: Future[Stats] = Future()

    def __call__(self) -> None:
        self.future.set_result(self.pool.stats())

    def answer_stopped(self) -> None:
        self.future.set_result(_stopped_stats(self.pool))


def _death_handler(
    ref: weakref.ReferenceType[Runtime], pool: Pool
) -> Callable[[BaseException], None]:
    """The I/O thread's crash handler, holding the Runtime only weakly."""

    def on_death(exc: BaseException) -> None:
        runtime = ref()
        if runtime is not None:
            runtime._on_loop_death(exc)
        else:
            pool.abort(ClientClosed(f"the h2pool I/O thread crashed: {exc!r}"))

    return on_death


def _close_abandoned(loop: IOLoop, pool: Pool) -> None:
    """A Client was garbage collected without close(): stop its I/O thread at once
    (runs in whatever thread collected it; only posts to the loop, never joins)."""
    if not loop.stopping:
        loop.call_soon_threadsafe(pool.close, 0.0)


# -- fork safety ------------------------------------------------------------------------
_live_runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for runtime in list(_live_runtimes):
        try:
            runtime.after_fork_in_child()
        except Exception:  # one broken client must not leave the others pointing at
            pass  # the parent's (absent) I/O thread


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
