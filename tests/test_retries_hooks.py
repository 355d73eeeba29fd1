"""Client(retries=Retries(...)), event hooks, Response.elapsed/request/iter_text/iter_lines,
and the typed verb signatures; against hypercorn, whose ``/flaky`` counts the requests
it received, so every retry is checked on the server's side."""

from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from servers.asgi import LINE_CHUNKS
from servers.util import free_port

import h2pool
from h2pool._response import split_lines
from h2pool._retry import retry_after

pytestmark = pytest.mark.timeout(60)

FAST = dict(backoff=0.0, max_backoff=1.0)


def flaky(hypercorn: Any, fail: int, status: int = 503, **extra: str) -> tuple[str, str]:
    key = uuid.uuid4().hex
    q = "&".join(f"{k}={v}" for k, v in extra.items())
    url = f"{hypercorn.https_url}/flaky?key={key}&fail={fail}&status={status}" + (
        f"&{q}" if q else ""
    )
    return url, f"{hypercorn.https_url}/count?key={key}"


def served(client: h2pool.Client, count_url: str) -> int:
    """Requests the server saw for the key (this request itself excluded)."""
    return int(client.get(count_url).text) - 1


# -- Retries ----------------------------------------------------------------------------------
def test_status_retry_until_success_counted_on_both_sides(make_client, hypercorn):
    client = make_client(retries=h2pool.Retries(attempts=3, statuses={503}, **FAST))
    url, count = flaky(hypercorn, fail=2)
    r = client.get(url)
    assert (r.status, r.text) == (200, "ok after 3\n")
    assert served(client, count) == 3
    assert client.stats()["policy_retries"] == 2


def test_when_attempts_run_out_the_last_response_is_returned(make_client, hypercorn):
    client = make_client(retries=h2pool.Retries(attempts=3, statuses={502, 503}, **FAST))
    url, count = flaky(hypercorn, fail=10, status=502)
    r = client.get(url)
    assert r.status == 502 and r.content == b"try again\n"
    assert served(client, count) == 3


def test_post_and_iterators_are_not_retried_on_status(make_client, hypercorn):
    client = make_client(retries=h2pool.Retries(attempts=4, statuses={503}, **FAST))
    url, count = flaky(hypercorn, fail=10)
    assert client.post(url, body=b"x").status == 503
    assert served(client, count) == 1
    url, count = flaky(hypercorn, fail=10)
    assert client.put(url, body=iter([b"a", b"b"])).status == 503
    assert served(client, count) == 1
    assert client.stats()["policy_retries"] == 0


def test_post_is_retried_when_the_policy_names_it(make_client, hypercorn, tmp_path):
    client = make_client(
        retries=h2pool.Retries(attempts=3, statuses={503}, methods={"POST"}, **FAST)
    )
    path = tmp_path / "body"
    path.write_bytes(b"file body")
    url, count = flaky(hypercorn, fail=2)
    with path.open("rb") as f:
        assert client.post(url, body=f).status == 200  # rewound for each attempt
    assert served(client, count) == 3
    url, count = flaky(hypercorn, fail=1)
    assert client.post(url, json={"a": 1}).status == 200
    assert served(client, count) == 2


def test_retry_after_is_honoured_and_a_long_one_is_not_waited_for(make_client, hypercorn):
    client = make_client(
        retries=h2pool.Retries(attempts=2, statuses={429}, backoff=5, max_backoff=5)
    )
    url, count = flaky(hypercorn, fail=1, status=429, retry_after="0")
    t0 = time.monotonic()
    assert client.get(url).status == 200  # Retry-After: 0 overrides the 5 s backoff
    assert time.monotonic() - t0 < 4
    assert served(client, count) == 2
    url, count = flaky(hypercorn, fail=1, status=429, retry_after="3600")
    t0 = time.monotonic()
    assert client.get(url).status == 429
    assert time.monotonic() - t0 < 4
    assert served(client, count) == 1


def test_a_retry_after_of_many_digits_is_too_long_to_wait_not_a_crash(make_client, hypercorn):
    client = make_client(retries=h2pool.Retries(attempts=2, statuses={429}, **FAST))
    url, count = flaky(hypercorn, fail=1, status=429, retry_after="9" * 5000)
    r = client.get(url)
    assert r.status == 429  # more than max_backoff: not retried, the response returned
    assert served(client, count) == 1


def test_backoff_is_exponential_jittered_and_capped():
    r = h2pool.Retries(attempts=10, backoff=0.1, max_backoff=0.5)
    for attempt, top in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        waits = [r.delay("GET", attempt, True, None, h2pool.ConnectError("x")) for _ in range(50)]
        assert all(w is not None and top / 2 <= w <= top for w in waits), (attempt, waits)
        assert len(set(waits)) > 1  # jittered
    assert r.delay("GET", 10, True, None, h2pool.ConnectError("x")) is None


def test_retry_after_parsing():
    assert retry_after("120") == 120.0
    assert retry_after(" 0 ") == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 30) == 30.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 + 30) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None and retry_after("-1") is None
    # Latin-1 superscripts are str.isdigit() but not int(); only ASCII digits are seconds.
    assert retry_after("\xb2") is None and retry_after("1\xb9") is None
    assert retry_after("1" * 5000) == float("inf")


def test_connect_errors_are_retried_tls_errors_are_not(make_client, hypercorn, untrusted_ca_path):
    port = free_port()  # nothing listens
    client = make_client(retries=h2pool.Retries(attempts=3, **FAST))
    with pytest.raises(h2pool.ConnectError):
        client.post(f"https://127.0.0.1:{port}/", body=b"x")
    assert client.stats()["policy_retries"] == 2
    bad = make_client(verify=untrusted_ca_path, retries=h2pool.Retries(attempts=3, **FAST))
    with pytest.raises(h2pool.TLSError):
        bad.get(hypercorn.https_url + "/")
    assert bad.stats()["policy_retries"] == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": 1.5},
        {"backoff": -1},
        {"max_backoff": float("inf")},
        {"statuses": [700]},
        {"statuses": ["503"]},
    ],
)
def test_retries_with_bad_values(kwargs):
    with pytest.raises(ValueError):
        h2pool.Retries(**kwargs)
    with pytest.raises(TypeError):
        h2pool.Retries(methods="GET")
    with pytest.raises(TypeError):
        h2pool.Client(retries=3)  # type: ignore[arg-type]


def test_retries_are_logged_at_debug_without_query_or_credentials(make_client, hypercorn, caplog):
    client = make_client(retries=h2pool.Retries(attempts=2, statuses={503}, **FAST))
    url, _ = flaky(hypercorn, fail=1)
    with caplog.at_level(logging.DEBUG, logger="h2pool"):
        assert client.get(url, auth=("user", "s3cret")).status == 200
    lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"retrying GET {hypercorn.https_url}/flaky (status 503; attempt 2 of 2)"
    )
    text = caplog.text
    assert "key=" not in text and "s3cret" not in text


# -- event hooks ------------------------------------------------------------------------------
def test_hooks_run_in_the_calling_thread_and_see_what_is_sent(make_client, hypercorn):
    calls: list[tuple[str, int, Any]] = []

    def on_request(request: h2pool.Request) -> None:
        calls.append(("request", threading.get_ident(), request.method))
        request.headers["x-request-id"] = "rid-1"

    def on_response(response: h2pool.Response) -> None:
        calls.append(("response", threading.get_ident(), response.status))

    client = make_client(event_hooks={"request": [on_request], "response": [on_response]})
    seen = client.get(hypercorn.https_url + "/echo").json()
    assert ["x-request-id", "rid-1"] in seen["headers"]
    me = threading.get_ident()
    assert calls == [("request", me, "GET"), ("response", me, 200)]

    other: list[Any] = []
    t = threading.Thread(target=lambda: other.append(client.get(hypercorn.https_url + "/echo")))
    t.start()
    t.join(30)
    assert [c[1] for c in calls[2:]] == [t.ident, t.ident]


def test_response_hooks_see_only_the_response_that_is_returned(make_client, hypercorn):
    statuses: list[int] = []
    client = make_client(
        retries=h2pool.Retries(attempts=3, statuses={503}, **FAST),
        event_hooks={"response": [lambda r: statuses.append(r.status)]},
    )
    url, _ = flaky(hypercorn, fail=2)
    assert client.get(url).status == 200
    assert statuses == [200]


def test_a_hook_exception_reaches_the_caller_and_a_request_hook_stops_the_send(
    make_client, hypercorn
):
    class Stop(Exception):
        pass

    def refuse(request: h2pool.Request) -> None:
        raise Stop(request.url)

    url, count = flaky(hypercorn, fail=0)
    client = make_client(event_hooks={"request": [refuse]})
    with pytest.raises(Stop):
        client.get(url)
    with pytest.raises(Stop):
        client.submit("GET", url)
    assert served(make_client(), count) == 0

    def boom(response: h2pool.Response) -> None:
        response.raise_for_status()

    client = make_client(event_hooks={"response": [boom]})
    with pytest.raises(h2pool.HTTPStatusError) as info:
        client.get(hypercorn.https_url + "/flaky?key=x&fail=9&status=500")
    assert info.value.response.status == 500


def test_a_header_a_hook_adds_is_validated(make_client):
    def bad(request: h2pool.Request) -> None:
        request.headers["x-evil"] = "a\r\nb: c"

    client = make_client(event_hooks={"request": [bad]})
    with pytest.raises(h2pool.InvalidHeader):
        client.get("https://localhost:1/")
    assert client._runtime.loop is None


def test_submit_runs_request_hooks_but_not_response_hooks(make_client, hypercorn):
    calls: list[str] = []
    client = make_client(
        event_hooks={
            "request": [lambda r: calls.append("req")],
            "response": [lambda r: calls.append("resp")],
        }
    )
    assert client.submit("GET", hypercorn.https_url + "/").result(30).status == 200
    assert calls == ["req"]


@pytest.mark.parametrize(
    "hooks", [{"request": print}, {"respons": []}, {"request": [1]}, ["request"]]
)
def test_bad_event_hooks(hooks):
    with pytest.raises((TypeError, ValueError)):
        h2pool.Client(event_hooks=hooks)


# -- Response additions -------------------------------------------------------------------------
def test_elapsed_and_request(make_client, hypercorn):
    client = make_client()
    t0 = time.monotonic()
    r = client.get(hypercorn.https_url + "/echo?a=1", headers={"x-test": "1"})
    total = time.monotonic() - t0
    assert 0 < r.elapsed.total_seconds() <= total
    assert (r.request.method, r.request.url) == ("GET", hypercorn.https_url + "/echo?a=1")
    assert r.request.headers["x-test"] == "1"
    assert r.request.headers["user-agent"].startswith("h2pool/")
    with client.stream("GET", hypercorn.https_url + "/") as s:
        assert s.elapsed.total_seconds() > 0


def test_iter_lines_and_iter_text_on_a_streamed_body(make_client, hypercorn):
    client = make_client()
    full = b"".join(LINE_CHUNKS).decode()
    with client.stream("GET", hypercorn.https_url + "/lines") as r:
        assert list(r.iter_lines()) == full.splitlines()
    with client.stream("GET", hypercorn.https_url + "/lines") as r:
        assert "".join(r.iter_text()) == full
    r = client.get(hypercorn.https_url + "/lines")
    assert list(r.iter_lines()) == ["alpha", "beta", "gamma", "", "δelta", "last"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab\r\n\x0b\u2028é", max_size=40), st.lists(st.integers(0, 40), max_size=8))
def test_split_lines_matches_splitlines_wherever_the_chunks_are_cut(text, cuts):
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert list(split_lines(iter(chunks), 1000)) == text.splitlines()


def test_iter_lines_bounds_a_line_that_never_ends():
    with pytest.raises(h2pool.DecodingError):
        list(split_lines(iter(["x" * 600] * 3), 1000))


# -- typed signatures -------------------------------------------------------------------------
EVERYDAY = ["params", "headers", "cookies", "auth", "body", "json", "data", "files", "timeout"]


@pytest.mark.parametrize(
    "fn",
    [
        h2pool.Client.request,
        h2pool.Client.submit,
        h2pool.Client.stream,
        *(
            getattr(h2pool.Client, v)
            for v in ("get", "head", "options", "delete", "post", "put", "patch")
        ),
        h2pool.request,
        h2pool.submit,
        *(getattr(h2pool, v) for v in ("get", "head", "options", "delete", "post", "put", "patch")),
    ],
    ids=lambda f: f.__qualname__,
)
def test_every_verb_has_a_real_signature(fn):
    sig = inspect.signature(fn)
    kinds = {p.kind for p in sig.parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds
    assert all(name in sig.parameters for name in EVERYDAY), list(sig.parameters)
    assert "Any" not in str(sig)
