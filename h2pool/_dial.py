"""Opening a connection: DNS, TCP connect, TLS handshake and ALPN, without blocking the loop.

``getaddrinfo`` blocks, so it runs on a short-lived resolver thread (skipped for IP
literals) that posts its answer back to the loop. The TCP connect and the TLS handshake
are non-blocking and driven by the I/O thread's selector, so a slow or silent server
costs a timer, not a thread, and ``Timeout.connect`` covers all three steps.
"""

from __future__ import annotations

import contextlib
import ipaddress
import selectors
import socket
import ssl
import threading
from collections.abc import Callable

from ._errors import ConnectError, ConnectTimeout, H2PoolError, TLSError
from ._loop import IOLoop, Timer

__all__ = ["DialResult", "Dialer"]

# (socket, negotiated ALPN protocol or None) on success
DialResult = tuple[socket.socket, "str | None"]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class Dialer:
    """One connection attempt to one origin. Runs on the I/O thread (except the resolver).

    Exactly one of the two outcomes reaches ``on_done``: ``(result, None)`` or
    ``(None, error)``; the error is always an :class:`H2PoolError`.
    """

    def __init__(
        self,
        loop: IOLoop,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float | None,
        on_done: Callable[[Dialer, DialResult | None, H2PoolError | None], None],
    ) -> None:
        self._loop = loop
        self.host = host
        self.port = port
        self._ctx = ssl_context
        self._on_done = on_done
        self._addrs: list[tuple[int, tuple[object, ...]]] = []
        self._sock: socket.socket | None = None
        self._registered = False
        self._done = False
        self._last_error: BaseException | None = None
        self._timer: Timer | None = None
        if connect_timeout is not None:
            self._timer = loop.call_later(connect_timeout, self._on_timeout, connect_timeout)

    def start(self) -> None:
        if _is_ip(self.host):
            fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._addrs = [(fam, (self.host, self.port))]
            self._try_next()
            return
        threading.Thread(target=self._resolve, name="h2pool-resolve", daemon=True).start()

    def _resolve(self) -> None:  # resolver thread
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            addrs = [(fam, addr) for fam, _, _, _, addr in infos]
            self._loop.call_soon_threadsafe(self._on_resolved, addrs, None)
        except OSError as exc:
            self._loop.call_soon_threadsafe(self._on_resolved, [], exc)

    # -- I/O thread from here -------------------------------------------------------------
    def _on_resolved(
        self, addrs: list[tuple[int, tuple[object, ...]]], exc: OSError | None
    ) -> None:
        if self._done:
            return
        if exc is not None or not addrs:
            err = ConnectError(f"cannot resolve {self.host!r}: {exc}")
            self._finish(None, err, exc)
            return
        self._addrs = addrs
        self._try_next()

    def _try_next(self) -> None:
        self._drop_socket()
        while self._addrs:
            fam, addr = self._addrs.pop(0)
            try:
                sock = socket.socket(fam, socket.SOCK_STREAM)
            except OSError as exc:
                self._last_error = exc
                continue
            sock.setblocking(False)
            self._sock = sock
            err = sock.connect_ex(addr)
            if err in (0, 115, 36, 10035):  # 0, EINPROGRESS (Linux 115, BSD 36), WSAEWOULDBLOCK
                self._watch(selectors.EVENT_WRITE, self._on_connected)
                return
            self._last_error = OSError(err, f"connect to {addr!r} failed: {_strerror(err)}")
            self._drop_socket()
        last = self._last_error
        self._finish(None, ConnectError(f"cannot connect to {self.host}:{self.port}: {last}"), last)

    def _watch(self, events: int, cb: Callable[[int], None]) -> None:
        assert self._sock is not None
        if self._registered:
            self._loop.selector.modify(self._sock, events, cb)
        else:
            self._loop.selector.register(self._sock, events, cb)
            self._registered = True

    def _on_connected(self, mask: int) -> None:
        sock = self._sock
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._last_error = OSError(err, _strerror(err))
            self._try_next()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ctx is None:
            self._finish((sock, None), None, None)
            return
        server_hostname = None if _is_ip(self.host) and not self._ctx.check_hostname else self.host
        # wrap_socket detaches the plain socket object (same fd): unregister it first.
        self._unwatch()
        try:
            tls = self._ctx.wrap_socket(
                sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._finish(None, TLSError(f"TLS setup for {self.host} failed: {exc}"), exc)
            return
        self._sock = tls
        self._handshake(0)

    def _handshake(self, mask: int) -> None:
        sock = self._sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(selectors.EVENT_READ, self._handshake)
            return
        except ssl.SSLWantWriteError:
            self._watch(selectors.EVENT_WRITE, self._handshake)
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            msg = f"{self.host} closed the connection during the TLS handshake"
            self._finish(None, ConnectError(msg), exc)
            return
        except ssl.SSLCertVerificationError as exc:
            self._finish(
                None,
                TLSError(f"certificate verification failed for {self.host}: {exc.verify_message}"),
                exc,
            )
            return
        except ssl.SSLError as exc:
            self._finish(None, TLSError(f"TLS handshake with {self.host} failed: {exc}"), exc)
            return
        except OSError as exc:
            self._finish(
                None, ConnectError(f"connection to {self.host} lost during TLS: {exc}"), exc
            )
            return
        self._finish((sock, sock.selected_alpn_protocol()), None, None)

    def _on_timeout(self, seconds: float) -> None:
        self._timer = None
        if not self._done:
            self._finish(
                None,
                ConnectTimeout(f"connecting to {self.host}:{self.port} took over {seconds} s"),
                None,
            )

    def cancel(self, exc: H2PoolError) -> None:
        """Abandon the attempt (client closing); reports ``exc`` unless already done."""
        if not self._done:
            self._finish(None, exc, None)

    def _unwatch(self) -> None:
        if self._registered and self._sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._loop.selector.unregister(self._sock)
        self._registered = False

    def _drop_socket(self) -> None:
        self._unwatch()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _finish(
        self, result: DialResult | None, error: H2PoolError | None, cause: BaseException | None
    ) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if result is None:
            self._drop_socket()
            if error is not None and cause is not None and error.__cause__ is None:
                error.__cause__ = cause
        else:
            self._unwatch()
            self._sock = None
        self._on_done(self, result, error)


def _strerror(err: int) -> str:
    import os

    try:
        return os.strerror(err)
    except ValueError:
        return f"error {err}"


def make_ssl_context(
    verify: bool | str | ssl.SSLContext,
    cert: str | tuple[str, str] | None,
    alpn: list[str],
) -> ssl.SSLContext:
    """The client's TLS context: certifi's roots, hostname checks, TLS >= 1.2, ALPN.

    Built in the caller's thread when the Client is created, so a bad CA path or
    certificate is an error there rather than on the first request.
    """
    if isinstance(verify, ssl.SSLContext):
        ctx = verify
        # A caller's context may be shared by several clients: give it one ALPN list
        # whatever their ``http1`` settings; the pool refuses http/1.1 when disabled.
        alpn = ["h2", "http/1.1"]
    else:
        import certifi

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # RFC 9113 §9.2: no TLS compression, no renegotiation.
        ctx.options |= ssl.OP_NO_COMPRESSION
        ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
        if verify is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif verify is True:
            # Like httpx and OpenSSL's own tools: SSL_CERT_FILE / SSL_CERT_DIR, when set,
            # replace the bundled roots (corporate CAs, test CAs); certifi otherwise.
            import os

            cafile = os.environ.get("SSL_CERT_FILE") or None
            capath = os.environ.get("SSL_CERT_DIR") or None
            if cafile or capath:
                ctx.load_verify_locations(cafile=cafile, capath=capath)
            else:
                ctx.load_verify_locations(cafile=certifi.where())
        elif isinstance(verify, str):
            import os

            if os.path.isdir(verify):
                ctx.load_verify_locations(capath=verify)
            elif os.path.isfile(verify):
                ctx.load_verify_locations(cafile=verify)
            else:
                raise ValueError(f"verify={verify!r}: no such CA file or directory")
        else:
            raise TypeError("verify must be True, False, a CA path or an ssl.SSLContext")
    if cert is not None:
        if isinstance(cert, str):
            ctx.load_cert_chain(cert)
        else:
            ctx.load_cert_chain(cert[0], cert[1])
    ctx.set_alpn_protocols(alpn)
    return ctx
