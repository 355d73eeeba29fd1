"""Opening a connection: DNS, TCP connect, TLS handshake and ALPN, without blocking the loop.

``getaddrinfo`` blocks, so it runs on a short-lived resolver thread (skipped for IP
literals) that posts its answer back to the loop. The TCP connect and the TLS handshake
are non-blocking and driven by the I/O thread's selector, so a slow or silent server
costs a timer, not a thread, and ``Timeout.connect`` covers all three steps.

Through a proxy, DNS and TCP go to the proxy instead, then an ``HTTP CONNECT`` exchange,
or a SOCKS5 one (RFC 1928/1929; messages in ``_socks.py``), non-blocking too and within
the same connect timeout, opens a tunnel to the origin, and TLS runs end to end through
it with the origin's name for SNI and verification. For ``socks5://`` the origin's name
is resolved here first, on the same kind of resolver thread, and its address is sent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import selectors
import socket
import ssl
import threading
from collections.abc import Callable

from . import _socks
from ._config import ProxyConfig
from ._errors import ConnectError, ConnectTimeout, H2PoolError, TLSError, detached
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
    ``(None, error)``; the error is always an `H2PoolError`.
    """

    def __init__(
        self,
        loop: IOLoop,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float | None,
        on_done: Callable[[Dialer, DialResult | None, H2PoolError | None], None],
        proxy: ProxyConfig | None = None,
        local_address: tuple[str, int] | None = None,
        address: str | None = None,
    ) -> None:
        self._loop = loop
        self._local = local_address
        self.host = host
        self.port = port
        self.proxy = proxy
        # Where the TCP connection goes: the origin, or the proxy that tunnels to it.
        # ``address``: the origin's address given in advance (no DNS; TLS still checks
        # ``host``).
        self._dial_host = proxy.host if proxy is not None else (address or host)
        self._dial_port = proxy.port if proxy is not None else port
        # Bytes of the proxy exchange (CONNECT or SOCKS5) still to send / read so far.
        self._connect_out = b""
        self._connect_in = b""
        self._interim = 0  # 1xx answers to CONNECT read so far
        # SOCKS5: the address sent for the origin, and the message being read: how long
        # it is given its first bytes (``_socks.connect_reply_length``), what handles it.
        self._socks_dest = host
        # socks5://: the origin's own resolution runs beside the proxy's dial and
        # handshake. _origin is False when there is none to do, None while it runs,
        # then True or the OSError it failed with; _connect_waiting says the handshake
        # is done and waits for it.
        self._origin: OSError | bool | None = False
        self._connect_waiting = False
        self._socks_need: Callable[[bytes], int] = len
        self._socks_then: Callable[[bytes], None] = self._on_socks_connect_reply
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

    @property
    def deadline(self) -> float | None:
        """When the connect timeout ends this attempt (loop time), if it has one."""
        return None if self._timer is None else self._timer.when

    @property
    def _target(self) -> str:
        """What the TCP connection goes to, for messages: the origin or the proxy."""
        if self.proxy is None:
            return f"{self.host}:{self.port}"
        if self.proxy.is_socks:
            return f"SOCKS5 proxy {self.proxy.label}"
        return f"proxy {self.proxy.label}"

    def start(self) -> None:
        if self.proxy is not None and self.proxy.kind == "socks5" and not _is_ip(self.host):
            # socks5:// (not socks5h://): the client resolves the origin, like curl, while
            # the proxy is dialled and greeted; a failure surfaces when the CONNECT would
            # go out (as with PySocks: the proxy has seen the greeting by then).
            self._origin = None
            self._spawn_resolver(self.host, self.port, self._on_origin_resolved)
        self._dial()

    def _dial(self) -> None:
        if _is_ip(self._dial_host):
            fam = socket.AF_INET6 if ":" in self._dial_host else socket.AF_INET
            self._addrs = [(fam, (self._dial_host, self._dial_port))]
            self._try_next()
            return
        self._spawn_resolver(self._dial_host, self._dial_port, self._on_resolved)

    def _spawn_resolver(self, host: str, port: int, then: _OnResolved) -> None:
        args = (host, port, then)
        threading.Thread(
            target=self._resolve, args=args, name="h2pool-resolve", daemon=True
        ).start()

    def _resolve(self, host: str, port: int, then: _OnResolved) -> None:  # resolver thread
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addrs = [(fam, addr) for fam, _, _, _, addr in infos]
            self._loop.call_soon_threadsafe(then, addrs, None)
        except OSError as exc:
            self._loop.call_soon_threadsafe(then, [], exc)

    # -- I/O thread from here -------------------------------------------------------------
    def _on_origin_resolved(
        self, addrs: list[tuple[int, tuple[object, ...]]], exc: OSError | None
    ) -> None:
        if self._done:
            return
        if exc is not None or not addrs:
            self._origin = exc if exc is not None else OSError("no address")
        else:
            # The first address, in getaddrinfo's (RFC 6724) order: one CONNECT, no
            # fallback.
            self._socks_dest = str(addrs[0][1][0])
            self._origin = True
        if self._connect_waiting:
            self._send_socks_connect()

    def _on_resolved(
        self, addrs: list[tuple[int, tuple[object, ...]]], exc: OSError | None
    ) -> None:
        if self._done:
            return
        if exc is not None or not addrs:
            what = f"proxy {self._dial_host!r}" if self.proxy is not None else repr(self.host)
            err = ConnectError(f"cannot resolve {what}: {exc}")
            self._finish(None, err, exc)
            return
        self._addrs = addrs
        self._try_next()

    def _try_next(self) -> None:
        self._drop_socket()
        local = self._local
        if local is not None:
            # A bound socket reaches only destinations of its own family.
            want = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
            kept = [(fam, addr) for fam, addr in self._addrs if fam == want]
            if not kept and self._addrs:
                self._last_error = OSError(
                    f"no address of {self._target} matches local_address {local[0]}"
                )
            self._addrs = kept
        while self._addrs:
            fam, addr = self._addrs.pop(0)
            try:
                sock = socket.socket(fam, socket.SOCK_STREAM)
            except OSError as exc:
                self._last_error = exc
                continue
            sock.setblocking(False)
            self._sock = sock
            if local is not None:
                try:
                    sock.bind(local)
                except OSError as exc:
                    self._last_error = OSError(exc.errno, f"cannot bind to {local!r}: {exc}")
                    self._drop_socket()
                    continue
            err = sock.connect_ex(addr)
            if err in (0, 115, 36, 10035):  # 0, EINPROGRESS (Linux 115, BSD 36), WSAEWOULDBLOCK
                self._watch(selectors.EVENT_WRITE, self._on_connected)
                return
            self._last_error = OSError(err, f"connect to {addr!r} failed: {_strerror(err)}")
            self._drop_socket()
        last = self._last_error
        self._finish(None, ConnectError(f"cannot connect to {self._target}: {last}"), last)

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
        if self.proxy is not None and self.proxy.is_socks:
            self._start_socks()
            return
        if self.proxy is not None:
            self._start_tunnel()
            return
        self._after_tunnel()

    # -- HTTP CONNECT through the proxy ------------------------------------------------------
    def _start_tunnel(self) -> None:
        assert self.proxy is not None
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = f"{host}:{self.port}".encode("ascii")
        lines = [b"CONNECT " + authority + b" HTTP/1.1", b"Host: " + authority]
        if self.proxy.auth is not None:
            lines.append(b"Proxy-Authorization: " + self.proxy.auth)
        self._connect_out = b"\r\n".join(lines) + b"\r\n\r\n"
        self._send_exchange(0)

    def _send_exchange(self, mask: int) -> None:
        """Send what is left of the proxy exchange's current message (CONNECT's head or a
        SOCKS5 message), then read the proxy's answer."""
        sock = self._sock
        assert sock is not None and self.proxy is not None
        socks = self.proxy.is_socks
        try:
            sent = sock.send(self._connect_out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            during = "SOCKS5" if socks else "CONNECT"
            self._finish(None, ConnectError(f"{self._target} failed during {during}: {exc}"), exc)
            return
        self._connect_out = self._connect_out[sent:]
        if self._connect_out:
            self._watch(selectors.EVENT_WRITE, self._send_exchange)
        else:
            self._watch(selectors.EVENT_READ, self._read_socks if socks else self._read_connect)

    def _read_connect(self, mask: int) -> None:
        """Read the proxy's answer up to the blank line, leaving anything after it (the
        tunnelled peer's first bytes) in the socket: peek, then consume only the head."""
        sock = self._sock
        assert sock is not None
        room = _MAX_CONNECT_RESPONSE - len(self._connect_in)
        try:
            peeked = sock.recv(room, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(None, ConnectError(f"{self._target} failed during CONNECT: {exc}"), exc)
            return
        if not peeked:
            msg = f"{self._target} closed the connection before answering CONNECT"
            self._finish(None, ConnectError(msg), None)
            return
        seen = len(self._connect_in)
        data = self._connect_in + peeked
        end = _head_end(data, max(0, seen - 3))
        take = len(peeked) if end < 0 else end - seen
        try:
            got = sock.recv(take)
        except OSError as exc:
            self._finish(None, ConnectError(f"{self._target} failed during CONNECT: {exc}"), exc)
            return
        self._connect_in += got
        if end < 0 or len(got) < take:
            if len(self._connect_in) >= _MAX_CONNECT_RESPONSE:
                limit = _MAX_CONNECT_RESPONSE
                msg = f"{self._target} sent a CONNECT response header over {limit} bytes"
                self._finish(None, ConnectError(msg), None)
            return
        self._on_connect_response(self._connect_in)

    def _on_connect_response(self, head: bytes) -> None:
        status_line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
        parts = status_line.split(" ", 2)
        code = parts[1] if len(parts) > 1 else ""
        # ASCII digits only: str.isdigit() also accepts '²' (a latin-1 byte 0xB2),
        # which int() refuses.
        if not parts[0].startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
            msg = f"{self._target} sent an invalid CONNECT response: {status_line[:80]!r}"
            self._finish(None, ConnectError(msg), None)
            return
        status = int(code)
        if 200 <= status < 300:
            self._connect_in = b""
            self._after_tunnel()
            return
        if 100 <= status < 200 and status != 101 and self._interim < _MAX_INTERIM:
            # An interim answer (RFC 9110 §15.2: a client parses any number before the
            # final one; a few are plenty): the final answer follows in the socket.
            self._interim += 1
            self._connect_in = b""
            return
        reason = "".join(ch for ch in (parts[2] if len(parts) > 2 else "") if ch.isprintable())
        dest = f"{self.host}:{self.port}"
        # 407 is the standard answer; some proxies (tinyproxy) answer bad credentials 401.
        if status in (401, 407):
            why = (
                "rejected the credentials from the proxy URL"
                if self.proxy is not None and self.proxy.auth is not None
                else "requires authentication (give user:password in the proxy URL)"
            )
            msg = f"{self._target} {why}: CONNECT {dest} answered {status} {reason[:80]}"
        else:
            msg = f"{self._target} refused CONNECT {dest}: {status} {reason[:80]}"
        self._finish(None, ConnectError(msg.rstrip()), None)

    # -- SOCKS5 through the proxy (RFC 1928, RFC 1929) ----------------------------------------
    # Each step sends one message and reads exactly the proxy's answer (recv never past
    # its end: what follows belongs to the tunnel), then hands it to the next step.
    def _start_socks(self) -> None:
        assert self.proxy is not None
        offer = self.proxy.credentials is not None
        self._socks_exchange(_socks.greeting(offer), lambda _: 2, self._on_socks_method)

    def _on_socks_method(self, reply: bytes) -> None:
        assert self.proxy is not None
        creds = self.proxy.credentials
        method = _socks.check_greeting_reply(reply, creds is not None)
        if method == _socks.AUTH_USERPASS and creds is not None:
            request = _socks.auth_request(*creds)
            self._socks_exchange(request, lambda _: 2, self._on_socks_auth)
            return
        self._send_socks_connect()

    def _on_socks_auth(self, reply: bytes) -> None:
        _socks.check_auth_reply(reply)
        self._send_socks_connect()

    def _send_socks_connect(self) -> None:
        origin = self._origin
        if origin is None:  # still resolving: _on_origin_resolved comes back here
            self._connect_waiting = True
            return
        if isinstance(origin, OSError):
            msg = (
                f"cannot resolve {self.host!r} (socks5:// proxies get an address resolved"
                f" here; socks5h:// lets the proxy resolve names): {origin}"
            )
            self._finish(None, ConnectError(msg), origin)
            return
        request = _socks.connect_request(self._socks_dest, self.port)
        self._socks_exchange(request, _socks.connect_reply_length, self._on_socks_connect_reply)

    def _on_socks_connect_reply(self, reply: bytes) -> None:
        dest = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self._socks_dest != self.host:
            dest += f" (resolved here to {self._socks_dest})"
        _socks.check_connect_reply(reply, dest)
        self._after_tunnel()

    def _socks_exchange(
        self, message: bytes, need: Callable[[bytes], int], then: Callable[[bytes], None]
    ) -> None:
        self._connect_out = message
        self._connect_in = b""
        self._socks_need = need
        self._socks_then = then
        self._send_exchange(0)

    def _read_socks(self, mask: int) -> None:
        sock = self._sock
        assert sock is not None
        # The CONNECT reply's length is known only from its first bytes: read up to what
        # is known so far, then again, until it is complete or the socket has no more.
        while (want := self._socks_need(self._connect_in) - len(self._connect_in)) > 0:
            try:
                got = sock.recv(want)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                msg = f"{self._target} failed during SOCKS5: {exc}"
                self._finish(None, ConnectError(msg), exc)
                return
            if not got:
                msg = f"{self._target} closed the connection during the SOCKS5 exchange"
                self._finish(None, ConnectError(msg), None)
                return
            self._connect_in += got
        reply, self._connect_in = self._connect_in, b""
        try:
            self._socks_then(reply)
        except _socks.SocksError as exc:
            self._finish(None, ConnectError(f"{self._target} {exc}"), None)

    def _after_tunnel(self) -> None:
        sock = self._sock
        assert sock is not None
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
            via = f" through {self._target}" if self.proxy is not None else ""
            self._finish(
                None,
                ConnectTimeout(f"connecting to {self.host}:{self.port}{via} took over {seconds} s"),
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

    def fail_internal(self, exc: BaseException) -> None:
        """A bug in our own handling of this attempt (``IOLoop._contain``): this dial
        fails, as a connection error for the requests waiting on it; the loop, and
        every other connection of the client, carry on."""
        if self._done:
            # The outcome was already handed on, so the bug is past this attempt (in
            # whoever took the outcome): nothing here can fail its waiters. The loop's
            # own rule applies then (it stops, failing every waiter, none left hanging).
            raise exc
        err = ConnectError(f"connecting to {self._target} failed: internal error {exc!r}")
        err.__cause__ = exc  # a bug: kept whole, with its traceback (logged by _contain)
        self._finish(None, err, None)

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
                error.__cause__ = detached(cause)  # see _errors.detached
        else:
            self._unwatch()
            self._sock = None
        self._on_done(self, result, error)


# A resolver thread's answer: addresses, or the error; posted to the I/O thread.
_OnResolved = Callable[[list[tuple[int, tuple[object, ...]]], "OSError | None"], None]

# Most a proxy's answer to CONNECT may take up to its blank line.
_MAX_CONNECT_RESPONSE = 64 * 1024
_MAX_INTERIM = 8  # 1xx answers to one CONNECT; more is a ConnectError


def _head_end(data: bytes, start: int) -> int:
    """Where a response head in ``data`` ends (just past its empty line), or -1 if it
    has not ended yet. Lines end in LF with or without a CR before it: RFC 9112 §2.2
    lets a recipient accept a bare LF, and proxies that write one exist. Searched from
    ``start``, which must not be inside a line ending already scanned."""
    i = data.find(b"\n", start)
    while i >= 0:
        nxt = data[i + 1 : i + 3]
        if nxt[:1] == b"\n":
            return i + 2
        if nxt == b"\r\n":
            return i + 3
        i = data.find(b"\n", i + 1)
    return -1


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
