"""Configuration value types: :class:`Timeout` and :class:`Limits`.

Frozen dataclasses, safe to share between threads.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "Timeout"]


def _check_timeout(name: str, value: float | None) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"Timeout.{name} must be a positive number or None, got {value!r}")


@dataclass(frozen=True)
class Timeout:
    """Per-phase timeouts in seconds; ``None`` disables one.

    ``connect`` covers DNS, TCP and the TLS handshake; ``read`` is the longest gap
    between bytes of one response (it resets that stream only); ``write`` the longest
    the request body may make no progress; ``pool`` the longest a request may wait
    for a stream slot.

    >>> Timeout(5.0)
    Timeout(connect=5.0, read=5.0, write=5.0, pool=5.0)
    """

    connect: float | None = 10.0
    read: float | None = 30.0
    write: float | None = 30.0
    pool: float | None = 30.0

    def __init__(
        self,
        default: float | None = ...,  # type: ignore[assignment]
        *,
        connect: float | None = ...,  # type: ignore[assignment]
        read: float | None = ...,  # type: ignore[assignment]
        write: float | None = ...,  # type: ignore[assignment]
        pool: float | None = ...,  # type: ignore[assignment]
    ) -> None:
        base: dict[str, float | None]
        if default is ...:  # type: ignore[comparison-overlap]
            base = {"connect": 10.0, "read": 30.0, "write": 30.0, "pool": 30.0}
        else:
            base = dict.fromkeys(("connect", "read", "write", "pool"), default)
        for name, value in (("connect", connect), ("read", read), ("write", write), ("pool", pool)):
            if value is not ...:  # type: ignore[comparison-overlap]
                base[name] = value
        for name, value in base.items():
            _check_timeout(name, value)
            object.__setattr__(self, name, None if value is None else float(value))

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """Accept a :class:`Timeout`, a number (all phases) or ``None`` (no timeouts)."""
        if isinstance(value, Timeout):
            return value
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return cls(value)
        raise TypeError(f"timeout must be a Timeout, a number or None, not {type(value).__name__}")


@dataclass(frozen=True)
class Limits:
    """Pool and flow-control limits.

    ``max_streams_per_connection`` caps concurrent streams below the server's
    MAX_CONCURRENT_STREAMS (``None``: the server decides). ``stream_window`` is the
    per-stream receive window, which is also the most a slow reader of a streamed
    response can have buffered; ``connection_window`` is shared by all streams of a
    connection and is large so that several fast downloads do not throttle each other.

    ``strict_max_streams`` never opens another connection because the existing ones are
    saturated: requests queue instead. ``ping_interval``: when a connection with open
    streams has received nothing for this long, a PING checks that it is alive; no ACK
    within ``ping_timeout`` closes it (its requests fail with ``ConnectionLost``, or are
    retried if never sent). ``None`` disables the health check. ``max_header_list_size``
    is advertised to servers and enforced on 1xx, final and trailer headers.
    """

    max_connections_per_origin: int = 8
    max_streams_per_connection: int | None = None
    keepalive_expiry: float | None = 60.0
    stream_window: int = 2 * 1024 * 1024
    connection_window: int = 32 * 1024 * 1024
    max_header_list_size: int = 64 * 1024
    strict_max_streams: bool = False
    ping_interval: float | None = 15.0
    ping_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_connections_per_origin < 1:
            raise ValueError("max_connections_per_origin must be >= 1")
        if self.max_streams_per_connection is not None and self.max_streams_per_connection < 1:
            raise ValueError("max_streams_per_connection must be >= 1 or None")
        if not 65535 <= self.stream_window <= 2**31 - 1:
            raise ValueError("stream_window must be in [65535, 2**31-1]")
        if not 65535 <= self.connection_window <= 2**31 - 1:
            raise ValueError("connection_window must be in [65535, 2**31-1]")
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise ValueError("ping_interval must be positive or None")
        if self.ping_timeout <= 0:
            raise ValueError("ping_timeout must be positive")
        if self.keepalive_expiry is not None and self.keepalive_expiry <= 0:
            raise ValueError("keepalive_expiry must be positive or None")
