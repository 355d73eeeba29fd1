"""Client(transport=MockTransport/WSGITransport): the same request building, hooks,
retries, redirects and errors as on the network, with no socket and no I/O thread."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

import h2pool

pytestmark = pytest.mark.timeout(30)


def recorder() -> tuple[list[h2pool.Request], h2pool.MockTransport]:
    seen: list[h2pool.Request] = []

    def handler(request: h2pool.Request) -> h2pool.Response:
        seen.append(request)
        return h2pool.Response(200, json={"url": request.url, "body": request.content.decode()})

    return seen, h2pool.MockTransport(handler)


def test_the_handler_sees_the_request_as_it_would_be_sent():
    seen, transport = recorder()
    with h2pool.Client(transport=transport, headers={"x-app": "1"}) as client:
        r = client.post(
            "https://api.example/items",
            params={"q": "a b"},
            json={"k": [1, 2]},
            cookies={"s": "1"},
            auth=("u", "p"),
        )
        assert r.json() == {"url": "https://api.example/items?q=a+b", "body": '{"k":[1,2]}'}
        assert client._runtime.loop is None  # no I/O thread was started
    req = seen[0]
    assert req.method == "POST"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["content-length"] == "11"
    assert req.headers["cookie"] == "s=1"
    assert req.headers["authorization"] == "Basic dTpw"
    assert req.headers["x-app"] == "1"
    assert req.headers["host"] == "api.example"
    assert req.headers["user-agent"].startswith("h2pool/")
    assert r.request is req and r.url == "https://api.example/items?q=a+b"
    assert r.elapsed.total_seconds() >= 0


def test_validation_errors_are_the_same_as_on_the_network():
    seen, transport = recorder()
    with h2pool.Client(transport=transport) as client:
        with pytest.raises(h2pool.InvalidURL):
            client.get("ftp://x.example/")
        with pytest.raises(h2pool.InvalidHeader):
            client.get("https://x.example/", headers={"x": "a\nb"})
        with pytest.raises(TypeError):
            client.post("https://x.example/", body={"a": 1})
    assert seen == []


def test_streamed_bodies_reach_the_handler_whole(tmp_path):
    seen, transport = recorder()
    path = tmp_path / "f.txt"
    path.write_bytes(b"from a file")
    with h2pool.Client(transport=transport) as client:
        assert client.put("https://x.example/", body=iter([b"it", b"er"])).json()["body"] == "iter"
        with path.open("rb") as f:
            r = client.post("https://x.example/", files={"f": f})
    assert b"from a file" in seen[-1].content
    assert seen[-1].headers["content-type"].startswith("multipart/form-data; boundary=")
    assert r.status == 200


def test_retries_redirects_and_hooks_run_as_on_the_network():
    hits: list[str] = []

    def handler(request: h2pool.Request) -> h2pool.Response:
        hits.append(request.url)
        if request.url.endswith("/old"):
            return h2pool.Response(301, {"location": "/new"})
        if len(hits) < 4:
            return h2pool.Response(503, {"retry-after": "0"})
        return h2pool.Response(200, text="fine")

    events: list[str] = []
    with h2pool.Client(
        transport=h2pool.MockTransport(handler),
        follow_redirects=True,
        retries=h2pool.Retries(attempts=5, statuses={503}, backoff=0),
        event_hooks={
            "request": [lambda r: events.append("request " + r.url)],
            "response": [lambda r: events.append(f"response {r.status}")],
        },
    ) as client:
        r = client.get("https://x.example/old")
        assert client.stats()["policy_retries"] == 2
    assert (r.status, r.text, [h.status for h in r.history]) == (200, "fine", [301])
    assert hits == ["https://x.example/old"] + ["https://x.example/new"] * 3
    assert events == [
        "request https://x.example/old",
        "response 301",
        "request https://x.example/new",
        "response 200",
    ]


def test_a_handler_can_simulate_network_failures():
    calls = 0

    def handler(request: h2pool.Request) -> h2pool.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise h2pool.ConnectError("simulated: connection refused")
        raise h2pool.ReadTimeout("simulated: no response")

    with (
        h2pool.Client(
            transport=h2pool.MockTransport(handler), retries=h2pool.Retries(backoff=0)
        ) as client,
        pytest.raises(h2pool.ReadTimeout),
    ):
        client.get("https://x.example/")
    assert calls == 2  # the ConnectError was retried, the ReadTimeout raised


def test_submit_with_a_transport_returns_a_done_future():
    _, transport = recorder()
    with h2pool.Client(transport=transport) as client:
        fut = client.submit("GET", "https://x.example/a")
        assert fut.done() and fut.result().status == 200
        bad = h2pool.Client(transport=h2pool.MockTransport(lambda r: "nope"))  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match=r"h2pool\.Response"):
            bad.submit("GET", "https://x.example/").result()
        bad.close()


def test_a_closed_client_refuses_as_on_the_network():
    _, transport = recorder()
    client = h2pool.Client(transport=transport)
    client.close()
    with pytest.raises(h2pool.ClientClosed):
        client.get("https://x.example/")


def test_response_constructor_for_handlers():
    r = h2pool.Response(201, [("X-A", "1")], json={"a": "ü"})
    assert (r.status, r.reason, r.headers["content-type"], r.json()) == (
        201,
        "Created",
        "application/json",
        {"a": "ü"},
    )
    assert h2pool.Response(200, text="é").content == "é".encode()
    assert h2pool.Response(204).content == b""
    assert list(h2pool.Response(200, content=b"a\nb").iter_lines()) == ["a", "b"]
    with pytest.raises(TypeError):
        h2pool.Response(200, content=b"x", text="y")
    with pytest.raises(TypeError):
        h2pool.Response("200")  # type: ignore[arg-type]


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    answer = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "type": environ.get("CONTENT_TYPE"),
        "host": environ["HTTP_HOST"],
        "scheme": environ["wsgi.url_scheme"],
        "body": body.decode(),
        "thread": threading.get_ident(),
    }
    start_response("418 I'm a teapot", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]


def test_wsgi_app_in_process():
    with h2pool.Client(transport=h2pool.WSGITransport(wsgi_app), base_url="https://app.test") as c:
        r = c.post("/a%20b", params={"x": "1"}, data={"f": "v"})
    assert r.status == 418 and r.http_version == "HTTP/1.1"
    assert r.json() == {
        "method": "POST",
        "path": "/a b",
        "query": "x=1",
        "type": "application/x-www-form-urlencoded",
        "host": "app.test",
        "scheme": "https",
        "body": "f=v",
        "thread": threading.get_ident(),
    }


def test_wsgi_app_exceptions_reach_the_caller():
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise ZeroDivisionError("in the app")

    with (
        h2pool.Client(transport=h2pool.WSGITransport(broken)) as c,
        pytest.raises(ZeroDivisionError),
    ):
        c.get("https://app.test/")
