"""The one place that decides whether a request that did not complete is sent again.

Connections never decide. When a request cannot complete on its connection they
report what they know about it as a :class:`Fact` (refused, above GOAWAY's last
stream id, never written, lost after sending, response begun, ...) and hand it to the
pool, which asks :meth:`RetryPolicy.judge`. Like Go's ``canRetryError`` and urllib3's
``Retry``, one predicate sees every case, so the rule "nothing is sent twice unless
provably unprocessed" is written once. Runs on the I/O thread (the pool owns the
policy and its counters).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._request import Request

__all__ = ["IDEMPOTENT", "MAX_ATTEMPTS", "MAX_BOUNCES", "Fact", "RetryPolicy", "Verdict"]

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
