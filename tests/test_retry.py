"""The retry predicate (``h2pool._retry.RetryPolicy.judge``), fact by fact.

Behaviour tests elsewhere (test_goaway, test_faults, test_h1) show each fact arising
from a real or scripted server; this table pins the decision for every fact, method
and body kind, so a change to the rule shows up here as one failing row.
"""

from __future__ import annotations

import io

import pytest

from h2pool._config import Timeout
from h2pool._request import Request
from h2pool._retry import IDEMPOTENT, MAX_ATTEMPTS, MAX_BOUNCES, Fact, RetryPolicy, Verdict
from h2pool._stream import UploadPipe
from h2pool._urls import parse_url

PROCESSED_OR_UNKNOWN = [
    Fact.RESPONSE_BEGUN,
    Fact.LOST_AFTER_SEND,
    Fact.BROKEN,
    Fact.GOAWAY_ON_FIRST,
]
UNPROCESSED = [Fact.REFUSED, Fact.GOAWAY_ERROR, Fact.LOST_UNSENT]


def _req(method: str = "GET") -> Request:
    return Request(method, parse_url("https://example.test/x?token=1"), [], None, Timeout(), False)


@pytest.mark.parametrize("fact", PROCESSED_OR_UNKNOWN)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_never_retried_when_the_server_may_have_processed_it(fact: Fact, method: str) -> None:
    req = _req(method)
    assert RetryPolicy().judge(req, fact) is Verdict.FAIL
    assert (req.attempts, req.bounces) == (0, 0)


@pytest.mark.parametrize("fact", UNPROCESSED)
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
def test_unprocessed_requests_are_retried_whatever_the_method(fact: Fact, method: str) -> None:
    req = _req(method)
    assert RetryPolicy().judge(req, fact) is Verdict.RETRY
    assert req.attempts == 1


@pytest.mark.parametrize(
    "method", ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "POST", "PATCH"]
)
def test_keepalive_race_retries_idempotent_methods_only(method: str) -> None:
    expected = Verdict.RETRY if method in IDEMPOTENT else Verdict.FAIL
    assert RetryPolicy().judge(_req(method), Fact.KEEPALIVE_RACE) is expected


def test_attempts_run_out() -> None:
    policy, req = RetryPolicy(), _req()
    verdicts = [policy.judge(req, Fact.REFUSED) for _ in range(MAX_ATTEMPTS)]
    assert verdicts == [Verdict.RETRY] * (MAX_ATTEMPTS - 1) + [Verdict.FAIL]


def test_graceful_bounces_do_not_use_attempts_until_their_own_cap() -> None:
    policy, req = RetryPolicy(), _req("POST")
    for _ in range(MAX_BOUNCES):
        assert policy.judge(req, Fact.GOAWAY_GRACEFUL) is Verdict.BOUNCE
    assert req.attempts == 0
    # Past the bounce cap, bounces count as attempts.
    assert policy.judge(req, Fact.GOAWAY_GRACEFUL) is Verdict.RETRY
    assert req.attempts == 1


def test_a_streamed_body_partly_sent_cannot_be_replayed() -> None:
    req = _req("PUT")
    pipe = UploadPipe(1024, None)
    pipe.put(b"abc")
    pipe.take(2)
    req.upload = pipe
    assert RetryPolicy().judge(req, Fact.LOST_UNSENT) is Verdict.FAIL
    assert req.replayable is False


def test_a_seekable_file_partly_sent_can_be_replayed() -> None:
    req = _req("PUT")
    pipe = UploadPipe(1024, None)
    pipe.put(b"abc")
    pipe.take(2)
    req.upload = pipe
    req.upload_source = io.BytesIO(b"abc")
    req.upload_start = 0
    assert RetryPolicy().judge(req, Fact.REFUSED) is Verdict.RETRY


def test_backoff_grows_for_failed_attempts_only() -> None:
    policy, req = RetryPolicy(), _req()
    delays = []
    for _ in range(5):
        verdict = policy.judge(req, Fact.REFUSED)
        delays.append(policy.backoff(req, verdict))
    assert delays == [0.0, 0.025, 0.05, 0.1, 0.2]
    bounce = _req()
    assert policy.backoff(bounce, policy.judge(bounce, Fact.GOAWAY_GRACEFUL)) == 0.0
