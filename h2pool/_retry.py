"""The one place that decides whether a request is sent again.

Two layers, each with one predicate. `RetryPolicy` (I/O thread) re-sends what
the server provably did not process, always and for any method. `Retries`
(caller's thread, ``Client(retries=...)``) is the user's policy: status codes such as
503, and connection failures, with backoff and ``Retry-After``.

Connections never decide. When a request cannot complete on its connection they
report what they know about it as a `Fact` (refused, above GOAWAY's last
stream id, never written, lost after sending, response begun, ...) and hand it to the
pool, which asks `RetryPolicy.judge`. Like Go's ``canRetryError`` and urllib3's
``Retry``, one predicate sees every case, so the rule "nothing is sent twice unless
provably unprocessed" is written once. Runs on the I/O thread (the pool owns the
policy and its counters).
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._errors import ConnectError, ConnectionLost, H2PoolError, TLSError

if TYPE_CHECKING:
    from ._request import Request
    from ._response import Response

__all__ = [
    "IDEMPOTENT",
    "MAX_ATTEMPTS",
    "MAX_BOUNCES",
    "Fact",
    "Retries",
    "RetryPolicy",
    "Verdict",
]

MAX_ATTEMPTS = 6  # Go's roundTripViaPool: a few retries of unprocessed requests
MAX_BOUNCES = 32  # graceful-GOAWAY bounces, counted apart from failed attempts
# RFC 9110 §9.2.2: a request with an idempotent method may be retried automatically
# when the connection fails before any response byte (the keep-alive race).
IDEMPOTENT = frozenset(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"])


class Fact(enum.Enum):
    """What a connection knows about a request it could not complete."""

    #: RST_STREAM(REFUSED_STREAM) before any response: RFC 9113 §8.7 guarantees the
    #: request was not processed.
    REFUSED = "refused by the server"
    #: REFUSED_STREAM for a stream opened while the connection had more streams open
    #: than the limit it knows now (before the server's SETTINGS arrived, or before a
    #: lowered MAX_CONCURRENT_STREAMS): the client's own overshoot, not the server
    #: failing, so it does not count as a failed attempt.
    REFUSED_BEYOND_LIMIT = "refused, opened beyond the server's stream limit"
    #: Above the last stream id of a NO_ERROR GOAWAY (RFC 9113 §6.8: not processed). A
    #: server rotating connections (nginx's ``keepalive_requests``) does this routinely.
    GOAWAY_GRACEFUL = "above the last stream id of a graceful GOAWAY"
    #: Above the last stream id of an error GOAWAY, on a connection that had served
    #: responses: not processed, and the server is restarting or shedding load.
    GOAWAY_ERROR = "above the last stream id of an error GOAWAY"
    #: An error GOAWAY on a connection that never completed a response: the server
    #: refuses this client; trying again would loop (Go ec05fdcd).
    GOAWAY_ON_FIRST = "error GOAWAY before any response on the connection"
    #: The connection was lost (EOF, reset, health check) before any byte of the
    #: request reached the kernel.
    LOST_UNSENT = "connection lost before the request was written"
    #: The connection was lost after the request may have reached the server, before
    #: any byte of its response.
    LOST_AFTER_SEND = "connection lost after the request may have been sent"
    #: A reused HTTP/1.1 connection closed before any response byte: the server most
    #: likely closed it as idle while we sent (RFC 9112 §9.3.1's keep-alive race).
    KEEPALIVE_RACE = "reused HTTP/1.1 connection closed before any response byte"
    #: The connection ended by a protocol error, a bug in our handling or our own close.
    BROKEN = "connection ended by an error or closed"
    #: Response headers (or any response byte) arrived: the server processed it.
    RESPONSE_BEGUN = "its response had begun"


class Verdict(enum.Enum):
    RETRY = "retry, counting a failed attempt"
    BOUNCE = "retry without counting an attempt"
    FAIL = "fail with the cause the connection gave"


# Unprocessed through no fault of the server: retried without using an attempt.
_BOUNCES = frozenset([Fact.GOAWAY_GRACEFUL, Fact.REFUSED_BEYOND_LIMIT])
# Facts after which the request may have been processed.
_NEVER = frozenset([Fact.RESPONSE_BEGUN, Fact.LOST_AFTER_SEND, Fact.BROKEN, Fact.GOAWAY_ON_FIRST])


class RetryPolicy:
    """Judges and counts retries of one pool's requests (I/O thread only)."""

    def __init__(self, max_attempts: int = MAX_ATTEMPTS, max_bounces: int = MAX_BOUNCES) -> None:
        self.max_attempts = max_attempts
        self.max_bounces = max_bounces
        self.retries = 0  # requests sent again, bounces included (``stats()["retries"]``)

    def judge(self, req: Request, fact: Fact) -> Verdict:
        """Decide, and record the attempt on ``req``.

        A request is sent again only if the server provably did not process it
        (refused, above a GOAWAY's last stream id, never written) or, for the
        keep-alive race only, if its method is idempotent; and only if its body can be
        sent again (bytes, or a seekable file) and it has attempts left. Bounces (a
        graceful GOAWAY, a refusal of our own overshoot) do not count as failed
        attempts: under many threads one request can be bounced several times in a row
        through no fault of the server; they have a larger cap of their own.
        """
        if fact in _NEVER:
            return Verdict.FAIL
        if fact is Fact.KEEPALIVE_RACE and req.method not in IDEMPOTENT:
            return Verdict.FAIL
        if fact in _BOUNCES and req.bounces < self.max_bounces:
            req.bounces += 1
            verdict = Verdict.BOUNCE
        else:
            req.attempts += 1
            verdict = Verdict.RETRY
        upload = req.upload
        if upload is not None and (upload.taken or upload.aborted) and req.upload_start is None:
            req.replayable = False  # part of a streamed body is gone, or its producer stopped
        if not req.replayable or req.attempts >= self.max_attempts:
            return Verdict.FAIL
        return verdict

    @staticmethod
    def backoff(req: Request, verdict: Verdict) -> float:
        """Seconds to wait before sending again: repeated failed attempts back off a
        little (25, 50, 100, 200 ms) so a struggling server is not hammered; the pool
        timeout still bounds the whole wait. Bounces go again at once."""
        if verdict is Verdict.RETRY and req.attempts >= 2:
            return 0.0125 * float(2 ** (req.attempts - 1))
        return 0.0


class Retries:
    """``Client(retries=Retries(...))``: the user's retry policy, applied in the thread
    that made the request (``request()`` and the verbs; not ``submit()``).

    * A response whose status is in ``statuses``, for a method in ``methods``, is
      retried, up to ``attempts`` requests in all; when attempts run out the last
      response is returned, not raised.
    * A connection that could not be made (`ConnectError` or
      `ConnectTimeout`, not a `TLSError`: a certificate does not fix
      itself) is retried for any method: nothing was sent. A connection lost during
      the exchange (`ConnectionLost`) is retried for ``methods`` only.
    * Only requests whose body can be sent again: none, bytes, ``json=``/``data=``,
      a seekable file, ``files=`` of seekable files. Iterators are never retried.
    * Waits ``backoff * 2**(n-1)`` seconds before the n-th retry, jittered to 50-100 %
      of that and capped at ``max_backoff``. With ``respect_retry_after`` a
      ``Retry-After`` header (seconds or an HTTP date) sets the wait instead; one
      asking for longer than ``max_backoff`` is honoured by not retrying at all.

    Requests the server provably did not process (REFUSED_STREAM, above a GOAWAY's last
    stream id, never written) are retried by the connection pool whether or not a
    policy is given; they do not use these attempts.
    """

    __slots__ = ("attempts", "backoff", "max_backoff", "methods", "respect_retry_after", "statuses")

    def __init__(
        self,
        attempts: int = 3,
        statuses: Iterable[int] = (),
        methods: Iterable[str] = IDEMPOTENT,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        respect_retry_after: bool = True,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"Retries(attempts=) must be an int >= 1, not {attempts!r}")
        codes = frozenset(statuses)
        for code in codes:
            if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                raise ValueError(f"Retries(statuses=) must hold HTTP status codes, not {code!r}")
        if isinstance(methods, str):
            raise TypeError("Retries(methods=) takes a collection of method names, not a str")
        names = frozenset(m.upper() for m in methods)
        for what, value in (("backoff", backoff), ("max_backoff", max_backoff)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"Retries({what}=) must be a number >= 0, not {value!r}")
        self.attempts = attempts
        self.statuses: frozenset[int] = codes
        self.methods: frozenset[str] = names
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.respect_retry_after = bool(respect_retry_after)

    def __repr__(self) -> str:
        return (
            f"Retries(attempts={self.attempts}, statuses={sorted(self.statuses)}, "
            f"methods={sorted(self.methods)}, backoff={self.backoff}, "
            f"max_backoff={self.max_backoff}, respect_retry_after={self.respect_retry_after})"
        )

    def delay(
        self,
        method: str,
        attempt: int,
        replayable: bool,
        response: Response | None = None,
        error: BaseException | None = None,
    ) -> float | None:
        """The one predicate: seconds to wait before sending attempt ``attempt + 1``, or
        None to stop (return ``response`` / raise ``error``)."""
        if attempt >= self.attempts or not replayable:
            return None
        if response is not None:
            if response.status not in self.statuses or method not in self.methods:
                return None
            if self.respect_retry_after:
                after = retry_after(response.headers.get("retry-after"))
                if after is not None:
                    return after if after <= self.max_backoff else None
        elif not _retryable_error(error, method in self.methods):
            return None
        wait = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return wait * random.uniform(0.5, 1.0)


def _retryable_error(error: BaseException | None, idempotent: bool) -> bool:
    if not isinstance(error, H2PoolError) or isinstance(error, TLSError):
        return False
    if isinstance(error, ConnectError):
        return True  # ConnectTimeout is one: no byte of the request was sent
    return idempotent and isinstance(error, ConnectionLost)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks for (RFC 9110 §10.2.3), None if absent or
    unreadable; a date in the past means 0."""
    if not value:
        return None
    value = value.strip()
    # ASCII digits only: str.isdigit() also accepts superscripts ("\xb2" in a Latin-1
    # header), which int() refuses. float(), not int(): an absurdly long number is
    # infinity (too long to wait), not a ValueError past int()'s digit limit.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
