"""Non-blocking socket reads and writes shared by the HTTP/2 and HTTP/1.1 connections.
I/O thread.

TLS goes out one record (16 KiB) per ``send()``. CPython's ``SSL_write`` is not in
partial-write mode: a large ``send()`` that raises ``SSLWantWriteError`` may already have
put whole records in the kernel while reporting nothing. Sending a record at a time
bounds that uncertainty to the slice that raised, which callers count as *possibly*
sent, so a request the server may have seen is never retried as "unsent" (a fault-proxy
test reproduced a resent PUT before this).

Reads and writes on an ``ssl.SSLSocket`` go to its C-level TLS object, skipping the
Python frames of ``ssl.py`` (``direct_tls``); a TCP close without TLS close_notify is
then reported as an exception, which ``is_ragged_eof`` turns back into the EOF the
ordinary methods report.
"""

from __future__ import annotations

import functools
import select
import socket
import ssl
from collections.abc import Callable

__all__ = ["TLS_RECORD", "TLS_SLICE", "direct_tls", "is_ragged_eof", "read_probe", "send_some"]

TLS_RECORD = 16 * 1024  # the most plaintext one TLS record carries (RFC 8446 §5.1)
TLS_SLICE = TLS_RECORD  # what one TLS send() is given: a record


def direct_tls(sock: socket.socket) -> ssl.SSLSocket | None:
    """``sock`` when the hot paths may call its C-level TLS object themselves.

    ``ssl.SSLSocket.recv_into`` is three Python frames around ``_sslobj.read`` (itself,
    ``read`` and ``_checkClosed`` twice) and ``send`` two around ``_sslobj.write``.
    Through TLS every read returns at most one 16 KiB record, so a 100 MiB download is
    6,400 reads, and those frames were four in five of the I/O thread's Python calls
    per DATA frame (``sys.setprofile`` counts). The connections call
    ``sock._sslobj.read``/``write`` directly instead, reading ``_sslobj`` again on
    each turn: it is None once the socket is closed or unwrapped, and then they take
    the ordinary methods, which raise as they always did. Only an exact
    ``ssl.SSLSocket`` qualifies: a subclass (an ``SSLContext.sslsocket_class`` of the
    user's) keeps its own methods.
    """
    return sock if type(sock) is ssl.SSLSocket else None


def is_ragged_eof(sock: ssl.SSLSocket, exc: ssl.SSLError) -> bool:
    """Whether ``exc``, raised by ``_sslobj.read``, is an EOF that ``sock.recv`` would
    have reported as one (``suppress_ragged_eofs``, on by default): the peer closed the
    TCP connection without a TLS close_notify. What is cut short by it is decided
    above TLS (a body shorter than its Content-Length, a stream left open), exactly
    as for the ordinary methods."""
    return exc.args[0] == ssl.SSL_ERROR_EOF and bool(getattr(sock, "suppress_ragged_eofs", True))


def _always() -> object:
    return True


def read_probe(sock: socket.socket) -> Callable[[], object]:
    """A zero-timeout check that ``sock`` has bytes (or an EOF or error) waiting.

    A connection reads until the socket is empty. After a read that came back short
    (less than a full TLS record) the next one nearly always fails, and through TLS that
    failure is an ``SSL_read``, an OpenSSL error and a Python exception: 26,000
    instructions, 7.7% of a whole small GET (client and I/O thread, callgrind). One
    ``poll()`` of the descriptor answers the same question for a tenth of that, and
    when it says "nothing" the loop's next select() reports whatever arrives later.
    Where ``poll`` is missing, the answer is always "read again", as before. The
    answer is truthy when a read has something to take (the ready list of ``poll``).
    """
    if not hasattr(select, "poll"):
        return _always
    try:
        fd = sock.fileno()
    except (OSError, AttributeError):
        return _always
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return functools.partial(poller.poll, 0)  # no Python frame on the read path


def send_some(
    sock: socket.socket, out: bytearray | memoryview, pos: int, tls: bool
) -> tuple[int, int, OSError | None]:
    """Send ``out[pos:]`` as far as the socket takes it.

    Returns (new position, highest position that may have reached the kernel, error).
    """
    step = TLS_SLICE if tls else len(out)
    write = sock.send
    if tls and type(sock) is ssl.SSLSocket:  # see direct_tls
        obj = sock._sslobj  # type: ignore[attr-defined]
        if obj is not None:
            write = obj.write
    try:
        while pos < len(out):
            with memoryview(out) as view:
                n = write(view[pos : pos + step])
            pos += n
    except (BlockingIOError, InterruptedError):
        pass
    except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
        return pos, min(pos + step, len(out)), None
    except OSError as exc:
        # It outlives this call as the cause callers see (see _errors.detached): without
        # its traceback, which would keep this frame's views of request bodies alive.
        return pos, pos, exc.with_traceback(None)
    return pos, pos, None
