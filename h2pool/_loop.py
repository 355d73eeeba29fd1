"""The I/O thread: one selector loop per Client.

Caller threads never touch sockets or h2 state. They append a command (a function and
its arguments) to ``_commands`` and, only if the loop may be asleep in ``select()``,
write to the wake-up channel (`WakeChannel`: an eventfd on Linux). Each turn the loop
handles ready sockets, drains *all* queued commands, runs due timers, and flushes each
dirty connection once, so a burst of requests costs one wake-up and one ``send()`` per
connection, not one each.

Everything in this module runs on the I/O thread except `IOLoop.call_soon_threadsafe`
and `IOLoop.start`/`IOLoop.join`.
"""

from __future__ import annotations

import collections
import errno
import io
import itertools
import logging
import math
import os
import select
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from sortedcontainers import SortedList

log = logging.getLogger("h2pool")

# The shared receive buffer: a turn's feed (512 KiB) plus a carried partial frame and
# one more read. A bytearray's worth of address space; pages are touched as used.
READ_BUFFER_SIZE = 640 * 1024
_NEVER = float("inf")
_DEBUG = bool(os.environ.get("H2POOL_DEBUG_THREADS"))


class Flushable(Protocol):
    def flush(self) -> None: ...


class Timer:
    """A handle to a scheduled call; ``cancel()`` from the I/O thread only."""

    __slots__ = ("_loop", "args", "callback", "key", "when")

    def __init__(self, loop: IOLoop, key: tuple[float, int], cb: Callable[..., None], args: Any):
        self._loop = loop
        self.key = key
        self.when = key[0]
        self.callback = cb
        self.args = args

    def cancel(self) -> None:
        if self.callback is not None:
            loop = self._loop
            loop._timers.discard(self.key)
            loop._timer_map.pop(self.key, None)
            if self.when == loop._due:
                loop._due = loop._timers[0][0] if loop._timer_map else _NEVER
            self.callback = None  # type: ignore[assignment]


class WakeChannel:
    """How a caller wakes the I/O thread out of select(): an eventfd on Linux, a socket
    pair elsewhere.

    An eventfd is one kernel counter: ``write`` adds to it and ``read`` takes all of it
    in one syscall, with no socket buffer behind either. With one caller thread (where
    the loop sleeps between requests, so every request wakes it) it took 2-11 us of
    kernel time per request off the I/O thread and 1-6 us off the caller, against the
    socket pair's ``send``/``recv`` (``/proc`` per-thread CPU, A/B in the same run;
    0.6 us against 2.2 us for the bare pair of calls).
    """

    def __init__(self) -> None:
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._file: io.FileIO | None = None
        if hasattr(os, "eventfd"):
            # A file object rather than a bare descriptor number: once closed it
            # refuses writes itself, as a socket does, so a caller that races close()
            # can never write into a descriptor number the process has reused since.
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._file = io.FileIO(efd, "r+b", closefd=True)
            self.fd = efd
        else:
            r, w = self._pair = socket.socketpair()
            r.setblocking(False)
            w.setblocking(False)
            self.fd = r.fileno()

    def write(self) -> None:
        """Wake the loop (any thread); OSError once closed."""
        if self._file is not None:
            try:
                self._file.write(_ONE)  # None if the counter is full: awake anyway
            except ValueError as exc:  # "I/O operation on closed file"
                raise OSError(errno.EBADF, "wake-up channel closed") from exc
        else:
            assert self._pair is not None
            self._pair[1].send(b"\0")

    def read(self) -> None:
        """Take every pending wake-up (I/O thread); BlockingIOError if there is none."""
        if self._file is not None:
            if self._file.read(8) is None:
                raise BlockingIOError(errno.EAGAIN, "no wake-up pending")
        else:
            assert self._pair is not None
            self._pair[0].recv(4096)

    def close(self) -> None:
        """Close the channel; a second call does nothing."""
        if self._file is not None:
            self._file.close()
        else:
            assert self._pair is not None
            self._pair[0].close()
            self._pair[1].close()


_ONE = (1).to_bytes(8, sys.byteorder)  # what an eventfd write adds: a native uint64

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
Callback = Callable[[int], None]


def _fileno(fileobj: Any) -> int:
    fd = fileobj if isinstance(fileobj, int) else int(fileobj.fileno())
    if fd < 0:
        raise ValueError(f"invalid file descriptor: {fd}")
    return fd


class Poller:
    """Which sockets are ready: ``register``/``modify``/``unregister`` as in
    ``selectors``, and a ``poll`` that returns ``(callback, mask)`` pairs.

    On Linux it drives an epoll object itself. ``selectors.EpollSelector.select`` is a
    Python function (a timeout conversion, a key lookup and a mask conversion per
    event, a list of SelectorKey tuples) that the loop runs every turn, twice per
    request with one caller thread. Calling epoll here took 1.3% off the whole
    process's instructions per small GET with one caller thread (callgrind: 289.4k to
    285.6k). Elsewhere it wraps ``selectors.DefaultSelector``. I/O thread only, except
    ``close`` after the loop has stopped.
    """

    def __init__(self) -> None:
        self._epoll: Any = select.epoll() if hasattr(select, "epoll") else None
        self._selector = None if self._epoll is not None else selectors.DefaultSelector()
        # fd -> [file object, selectors mask, callback] (epoll only)
        self._entries: dict[int, list[Any]] = {}

    def _lookup(self, fileobj: Any) -> int:
        """The registered fd of ``fileobj``, also once it is closed (fileno() -1), found
        by identity as ``selectors`` does; KeyError if it is not registered."""
        try:
            fd = _fileno(fileobj)
        except ValueError:
            for fd, entry in self._entries.items():
                if entry[0] is fileobj:
                    return fd
            raise
        if fd not in self._entries:
            raise KeyError(f"{fileobj!r} is not registered")
        return fd

    @staticmethod
    def _to_epoll(events: int) -> int:
        if not events or events & ~(_READ | _WRITE):
            raise ValueError(f"invalid events: {events!r}")
        return (select.EPOLLIN if events & _READ else 0) | (
            select.EPOLLOUT if events & _WRITE else 0
        )

    def register(self, fileobj: Any, events: int, callback: Callback) -> None:
        if self._selector is not None:
            self._selector.register(fileobj, events, callback)
            return
        fd = _fileno(fileobj)
        if fd in self._entries:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        self._epoll.register(fd, self._to_epoll(events))
        self._entries[fd] = [fileobj, events, callback]

    def modify(self, fileobj: Any, events: int, callback: Callback) -> None:
        if self._selector is not None:
            self._selector.modify(fileobj, events, callback)
            return
        fd = self._lookup(fileobj)
        entry = self._entries[fd]
        if events != entry[1]:
            try:
                self._epoll.modify(fd, self._to_epoll(events))
            except BaseException:
                self.unregister(fileobj)  # as selectors does: never half-registered
                raise
            entry[1] = events
        entry[2] = callback

    def unregister(self, fileobj: Any) -> None:
        if self._selector is not None:
            self._selector.unregister(fileobj)
            return
        fd = self._lookup(fileobj)
        del self._entries[fd]
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # closed since it was registered: the kernel dropped it already

    def fileobjs(self) -> list[Any]:
        """Every registered file object."""
        if self._selector is not None:
            fd_map = self._selector.get_map()
            return [key.fileobj for key in fd_map.values()] if fd_map is not None else []
        return [entry[0] for entry in self._entries.values()]

    def poll(self, timeout: float | None) -> list[tuple[Callback, int]]:
        """Wait up to ``timeout`` seconds (None: no limit) for readiness; the callbacks
        of the ready sockets with their ``selectors`` masks (an error or a hang-up sets
        both bits, as in ``selectors``), limited to the events asked for."""
        if self._selector is not None:
            return [(key.data, mask) for key, mask in self._selector.select(timeout)]
        entries = self._entries
        if timeout is None:
            timeout = -1
        elif timeout <= 0:
            timeout = 0  # epoll would read a negative timeout as "no limit"
        else:
            # epoll counts milliseconds: round up, so as not to wake before a deadline
            # and spin until it.
            timeout = math.ceil(timeout * 1e3) * 1e-3
        ready = []
        for fd, event in self._epoll.poll(timeout, max(len(entries), 1)):
            entry = entries.get(fd)
            if entry is not None:  # None: unregistered since (selectors skips it too)
                if event == 1:  # EPOLLIN alone, by far the most frequent
                    mask = _READ
                else:
                    mask = (_WRITE if event & ~select.EPOLLIN else 0) | (
                        _READ if event & ~select.EPOLLOUT else 0
                    )
                ready.append((entry[2], mask & entry[1]))
        return ready

    def close(self) -> None:
        if self._selector is not None:
            self._selector.close()
        else:
            self._entries.clear()
            self._epoll.close()


class IOLoop:
    """The selector loop. Created by the Client; started lazily on the first request."""

    def __init__(
        self, name: str = "h2pool-io", *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._name = name
        # Every time the loop and its connections read (``now``, timer deadlines, the
        # select() timeout) comes from this clock, so a test can step timers by hand.
        self._clock = clock
        self.selector = Poller()
        self._poll = self.selector.poll
        # Commands from caller threads. deque.append/popleft are atomic, so the queue
        # itself needs no lock.
        self._commands: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            collections.deque()
        )
        # The wake-up channel (WakeChannel): ``_wake_write`` from any thread,
        # ``_wake_read`` drains it on the I/O thread; select() watches its fd.
        self._wake = WakeChannel()
        self._wake_read = self._wake.read
        self._wake_write = self._wake.write
        # _asleep is written only by the loop: True from just before it checks the
        # command queue until select() returns. A caller that appends a command and then
        # sees _asleep False knows the loop will still see its command (the loop sets
        # _asleep before looking at the queue), so it skips the wake-up syscall.
        self._asleep = False
        # _wake_lock guards _wake_pending, so that of several callers racing to wake the
        # sleeping loop only one writes to the socket. Held for two attribute accesses;
        # never across I/O.
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        # Timers, ordered by (deadline, sequence). SortedList keeps insert and removal
        # O(log n); the selector's timeout is the nearest deadline.
        self._timers = SortedList()
        self._timer_map: dict[tuple[float, int], Timer] = {}
        # The nearest deadline (_NEVER without timers), kept by call_at, Timer.cancel
        # and the loop, so a turn reads one attribute rather than indexing SortedList
        # (a Python-level __len__ and __getitem__, four of each per request).
        self._due = _NEVER
        self._seq = itertools.count()
        self._dirty: dict[Flushable, None] = {}
        # One receive buffer for every connection: the loop reads one socket at a time
        # and each reader consumes what it read before returning (copying out only what
        # it keeps), so TLS decrypts straight into it and nothing is allocated per read.
        self._read_view: memoryview | None = None
        self.now = clock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.died: BaseException | None = None
        # Called (on the I/O thread) if the loop crashes, to fail every waiter.
        self.on_death: Callable[[BaseException], None] | None = None
        self.selector.register(self._wake.fd, selectors.EVENT_READ, self._on_wake)

    # -- caller-thread API --------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` to run on the I/O thread; wakes it only if it may sleep."""
        self._commands.append((fn, args))
        if self._asleep:
            with self._wake_lock:
                if self._wake_pending:
                    return
                self._wake_pending = True
            try:
                self._wake_write()
            except OSError:
                pass  # the buffer is full of wake-ups already, or we are closing

    @property
    def stopping(self) -> bool:
        """True once the loop has been told to stop (or has died): from then on a queued
        command may never run, so whoever queues one must also `drain_commands`."""
        return self._stopping

    def drain_commands(self) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
        """Take every queued command off the queue without running it (any thread).

        For failing the requests a stopped loop will never see. Each ``popleft`` is
        atomic, so a command is taken either here or by the loop's last turn, never both.
        """
        taken = []
        popleft = self._commands.popleft
        while True:
            try:
                taken.append(popleft())
            except IndexError:
                return taken

    def join(self, timeout: float | None) -> bool:
        t = self._thread
        if t is None or t is threading.current_thread():
            return True
        t.join(timeout)
        return not t.is_alive()

    # -- I/O-thread API -----------------------------------------------------------------
    def assert_io_thread(self) -> None:
        if _DEBUG:
            assert threading.current_thread() is self._thread, "not on the I/O thread"

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> Timer:
        return self.call_at(self.now + delay, fn, *args)

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> Timer:
        key = (when, next(self._seq))
        timer = Timer(self, key, fn, args)
        self._timers.add(key)
        self._timer_map[key] = timer
        if when < self._due:
            self._due = when
        return timer

    def read_buffer(self) -> memoryview:
        """The shared receive buffer (I/O thread only; valid until the caller returns)."""
        view = self._read_view
        if view is None:
            view = self._read_view = memoryview(bytearray(READ_BUFFER_SIZE))
        return view

    def mark_dirty(self, conn: Flushable) -> None:
        """Ask for ``conn.flush()`` at the end of this turn (once, however often asked)."""
        self._dirty[conn] = None

    def stop(self) -> None:
        self._stopping = True

    def abandon_after_fork(self, owner: Any) -> None:
        """In a forked child: close our copies of every file descriptor, touch no
        protocol state (the parent still uses those connections), run nothing."""
        self._stopping = True
        self._asleep = False  # nobody is in select(): no caller may write a wake-up
        self._commands.clear()
        for fileobj in self.selector.fileobjs():
            try:
                fileobj.close()
            except (OSError, AttributeError):
                pass
        try:
            self._close_resources()
        except OSError:
            pass

    # -- the loop -----------------------------------------------------------------------
    def _on_wake(self, mask: int) -> None:
        # Drain first, then clear. Cleared first, a caller that had seen the loop asleep
        # could set _wake_pending and write its byte during the drain: the byte was
        # swallowed, the flag stayed set, and no caller ever woke the loop again (a
        # request posted to an idle client then waited for an unrelated timer, or
        # forever). This way a byte written after the drain stays in the socket: at
        # worst one spurious wake-up. One read: callers write once per sleep (the
        # _wake_pending flag), so a second read would only fail with EAGAIN, a syscall
        # and an exception per wake-up; anything left over wakes the loop once more.
        try:
            self._wake_read()
        except (BlockingIOError, InterruptedError):
            pass
        with self._wake_lock:
            self._wake_pending = False

    def _contain(self, fn: Callable[..., Any], exc: Exception) -> None:
        """A bug in a handler fails the requests of the object it belongs to (usually a
        connection) and the loop carries on; without such an owner the loop dies, which
        fails every waiter rather than leaving any to hang."""
        owner = getattr(fn, "__self__", None)
        fail = getattr(owner, "fail_internal", None)
        if fail is None:
            raise exc
        log.error("unexpected error in the I/O thread; failing %r", owner, exc_info=exc)
        fail(exc)

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._run_once()
        except BaseException as exc:  # the loop must never die silently
            self.died = exc
            # Stopping before on_death fails the waiters: a caller that queues after
            # on_death's last drain of the commands then sees it and fails its own.
            self._stopping = True
            log.critical("h2pool I/O thread crashed", exc_info=True)
            if self.on_death is not None:
                try:
                    self.on_death(exc)
                except BaseException:
                    log.exception("failing waiters after the I/O thread crashed")
        finally:
            self._stopping = True
            self._close_resources()

    def _close_resources(self) -> None:
        try:
            self.selector.close()
        finally:
            self._wake.close()

    def _run_once(self) -> None:
        commands = self._commands
        clock = self._clock
        timeout: float | None
        if self._dirty:
            timeout = 0.0
        else:
            self._asleep = True
            if commands:
                timeout = 0.0
            elif self._due != _NEVER:
                timeout = max(0.0, self._due - clock())
            else:
                timeout = None
        events = self._poll(timeout)
        self._asleep = False
        self.now = clock()
        for callback, mask in events:
            try:
                callback(mask)
            except Exception as exc:
                self._contain(callback, exc)
        # Drain everything queued, including commands queued by the commands themselves.
        popleft = commands.popleft
        while commands:
            fn, args = popleft()
            try:
                fn(*args)
            except Exception as exc:
                self._contain(fn, exc)
        if self._due <= self.now:
            self.now = clock()
            timers = self._timers
            while timers and timers[0][0] <= self.now:
                key = timers.pop(0)
                timer = self._timer_map.pop(key)
                cb = timer.callback
                timer.callback = None  # type: ignore[assignment]
                try:
                    cb(*timer.args)
                except Exception as exc:
                    self._contain(cb, exc)
            self._due = timers[0][0] if timers else _NEVER
        dirty = self._dirty
        while dirty:
            self._dirty = {}
            for conn in dirty:
                try:
                    conn.flush()
                except Exception as exc:
                    self._contain(conn.flush, exc)
            dirty = self._dirty
