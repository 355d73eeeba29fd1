"""Non-blocking socket writes shared by the HTTP/2 and HTTP/1.1 connections. I/O thread.

TLS goes out one record (16 KiB) per ``send()``. CPython's ``SSL_write`` is not in
partial-write mode: a large ``send()`` that raises ``SSLWantWriteError`` may already have
put whole records in the kernel while reporting nothing. Sending a record at a time
bounds that uncertainty to the slice that raised, which callers count as *possibly*
sent, so a request the server may have seen is never retried as "unsent" (a fault-proxy
test reproduced a resent PUT before this).
"""

from __future__ import annotations

import socket
import ssl

__all__ = ["TLS_SLICE", "send_some"]

TLS_SLICE = 16 * 1024  # one TLS record


def send_some(
    sock: socket.socket, out: bytearray, pos: int, tls: bool
) -> tuple[int, int, OSError | None]:
    """Send ``out[pos:]`` as far as the socket takes it.

    Returns (new position, highest position that may have reached the kernel, error).
    """
    step = TLS_SLICE if tls else len(out)
    try:
        while pos < len(out):
            with memoryview(out) as view:
                n = sock.send(view[pos : pos + step])
            pos += n
    except (BlockingIOError, InterruptedError):
        pass
    except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
        return pos, min(pos + step, len(out)), None
    except OSError as exc:
        return pos, pos, exc
    return pos, pos, None
