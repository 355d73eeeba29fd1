"""The everyday request arguments against a real server: what hypercorn received, byte
for byte (``/echo`` describes it), for params=, json=, data=, files=, cookies=, auth=,
base_url=; and the argument errors raised in the caller's thread before anything is
queued."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import os
import threading
from typing import Any

import pytest
from servers.util import rss

import h2pool
from h2pool._content import multipart

pytestmark = pytest.mark.timeout(60)


def echo(r: h2pool.Response) -> dict[str, Any]:
    assert r.status == 200, r.content
    data: dict[str, Any] = r.json()
    return data


def header(seen: dict[str, Any], name: str) -> list[str]:
    return [v for n, v in seen["headers"] if n == name]


@pytest.fixture
def client(make_client: Any) -> h2pool.Client:
    c: h2pool.Client = make_client()
    return c


def untouched(client: h2pool.Client) -> bool:
    """Nothing was queued: the I/O thread was never started."""
    return client._runtime.loop is None


# -- params= --------------------------------------------------------------------------------
def test_params_are_appended_to_the_query_percent_encoded(client, hypercorn):
    seen = echo(
        client.get(
            hypercorn.https_url + "/echo?x=1#frag",
            params={"a": "b c&d", "n": [1, 2], "t": True, "f": 1.5, "skip": None, "é": "ü"},
        )
    )
    assert seen["query"] == "x=1&a=b+c%26d&n=1&n=2&t=true&f=1.5&%C3%A9=%C3%BC"
    seen = echo(client.get(hypercorn.https_url + "/echo", params=[("k", "1"), ("k", "2")]))
    assert seen["query"] == "k=1&k=2"


@pytest.mark.parametrize(
    "params", [{"a": object()}, {"a": {"nested": 1}}, "a=1", [("a",)], {1: "x"}]
)
def test_bad_params_raise_typeerror_before_anything_is_queued(make_client, params):
    client = make_client()
    with pytest.raises(TypeError):
        client.get("https://localhost:1/echo", params=params)
    assert untouched(client)


# -- json= / data= / body= -------------------------------------------------------------------
def test_json_body_and_content_type(client, hypercorn):
    value = {"a": 1, "ü": [True, None, 1.5], "s": "x\ny"}
    seen = echo(client.post(hypercorn.https_url + "/echo", json=value))
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    assert seen["body"].encode("latin-1") == expected
    assert header(seen, "content-type") == ["application/json"]
    assert header(seen, "content-length") == [str(len(expected))]
    seen = echo(
        client.put(
            hypercorn.https_url + "/echo",
            json=[1],
            headers={"Content-Type": "application/vnd.api+json"},
        )
    )
    assert header(seen, "content-type") == ["application/vnd.api+json"]
    assert seen["body"] == "[1]"


def test_a_clients_default_content_type_wins_over_json_and_data(make_client, hypercorn):
    """As requests' Session headers and httpx's client headers do; only multipart sets
    its own (its boundary is part of the body's framing)."""
    client = make_client(headers={"Content-Type": "application/vnd.api+json"})
    url = hypercorn.https_url + "/echo"
    for kwargs in ({"json": {"a": 1}}, {"data": {"a": "1"}}, {"body": b"{}"}):
        seen = echo(client.post(url, **kwargs))
        assert header(seen, "content-type") == ["application/vnd.api+json"], kwargs
    seen = echo(client.post(url, json=[1], headers={"content-type": "text/x-mine"}))
    assert header(seen, "content-type") == ["text/x-mine"]
    seen = echo(client.post(url, files={"f": b"abc"}))
    assert header(seen, "content-type")[0].startswith("multipart/form-data; boundary=")


@pytest.mark.parametrize("value", [{"a": object()}, {"a": float("nan")}, {1j: 2}])
def test_json_that_cannot_be_serialised_is_a_typeerror(make_client, value):
    client = make_client()
    with pytest.raises(TypeError, match="json="):
        client.post("https://localhost:1/", json=value)
    assert untouched(client)


def test_form_data_is_urlencoded(client, hypercorn):
    seen = echo(client.post(hypercorn.https_url + "/echo", data={"name": "a b", "tag": ["x", "y"]}))
    assert seen["body"] == "name=a+b&tag=x&tag=y"
    assert header(seen, "content-type") == ["application/x-www-form-urlencoded"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"body": {"a": 1, "bb": 2}}, "json="),
        ({"body": {"a", "b"}}, "json="),
        ({"body": b"x", "json": {}}, "only one"),
        ({"json": {}, "data": {"a": "1"}}, "only one"),
        ({"body": b"x", "files": {"f": b"1"}}, "only one"),
        ({"data": b"raw"}, "body="),
        ({"data": "a=1"}, "body="),
        ({"files": {"f": 12}}, "files="),
        ({"files": {"f": ("name", object())}}, "files="),
        ({"files": {"f": ("a", b"x", "text/plain", "extra")}}, "files="),
        ({"files": "f"}, "files="),
        ({"files": {"f": io.StringIO("text")}}, "binary"),
        ({"cookies": "a=1"}, "cookies="),
        ({"auth": ("only-user",)}, "auth="),
        ({"auth": 42}, "auth="),
    ],
)
def test_bad_or_conflicting_body_arguments_are_typeerrors_in_the_caller(make_client, kwargs, match):
    client = make_client()
    with pytest.raises(TypeError, match=match):
        client.post("https://localhost:1/", **kwargs)
    with pytest.raises(TypeError, match=match):
        client.submit("POST", "https://localhost:1/", **kwargs)
    assert untouched(client)


def test_a_dict_body_never_sends_its_keys(client, hypercorn):
    """Before, post(url, body={"a": 1, "bb": 2}) sent b"abb"."""
    with pytest.raises(TypeError):
        client.post(hypercorn.https_url + "/echo", body={"a": 1, "bb": 2})
    assert echo(client.post(hypercorn.https_url + "/echo", body=b"abb"))["body"] == "abb"


# -- files= ---------------------------------------------------------------------------------
def parse_multipart(seen: dict[str, Any], raw: bytes) -> list[Any]:
    ctype = header(seen, "content-type")[0]
    assert ctype.startswith("multipart/form-data; boundary=")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw
    )
    assert msg.is_multipart()
    return list(msg.iter_parts())


def test_multipart_fields_and_files_as_received(client, hypercorn, tmp_path):
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\r\n1,2\r\n")
    with path.open("rb") as f:
        seen = echo(
            client.post(
                hypercorn.https_url + "/echo",
                data={"title": "Q3 ü", "n": 3},
                files={
                    "upload": f,
                    "raw": b"\x00\x01\xff",
                    "named": ('x"y.png', b"PNG", "image/png"),
                    "nofile": (None, b"field value"),
                },
            )
        )
    raw = seen["body"].encode("latin-1")
    assert header(seen, "content-length") == [str(len(raw))]
    parts = parse_multipart(seen, raw)
    got = [
        (
            p.get_param("name", header="content-disposition"),
            p.get_filename(),
            p.get_content_type(),
            p.get_payload(decode=True),
        )
        for p in parts
    ]
    assert got == [
        ("title", None, "text/plain", "Q3 ü".encode()),
        ("n", None, "text/plain", b"3"),
        ("upload", "report.csv", "text/csv", b"a,b\r\n1,2\r\n"),
        ("raw", "raw", "application/octet-stream", b"\x00\x01\xff"),
        ("named", "x%22y.png", "image/png", b"PNG"),
        ("nofile", None, "application/octet-stream", b"field value"),
    ]


def test_multipart_from_a_large_file_hashes_as_built(client, hypercorn, tmp_path):
    path = tmp_path / "big.bin"
    block = os.urandom(1 << 16)
    path.write_bytes(block * 64)  # 4 MiB
    with path.open("rb") as f:
        r = client.post(hypercorn.https_url + "/echo", files={"f": f})
    seen = echo(r)
    boundary = header(seen, "content-type")[0].split("boundary=", 1)[1]
    expected = expected_single_file(boundary, "big.bin", path.read_bytes())
    assert seen["length"] == len(expected)
    assert seen["sha256"] == hashlib.sha256(expected).hexdigest()
    assert header(seen, "content-length") == [str(len(expected))]


def expected_single_file(boundary: str, filename: str, data: bytes) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def test_a_decompressing_file_is_sized_by_what_it_reads_not_by_its_fd(client, hypercorn, tmp_path):
    """bz2/gzip file objects answer fileno() with the compressed file's descriptor (and
    GzipFile.mode is an int)."""
    import bz2
    import gzip

    payload = os.urandom(1000) * 100
    for opener in (bz2.open, gzip.open):
        path = tmp_path / "data.z"
        with opener(path, "wb") as w:
            w.write(payload)
        with opener(path, "rb") as f:
            seen = echo(client.post(hypercorn.https_url + "/echo", files={"f": ("d.bin", f)}))
        boundary = header(seen, "content-type")[0].split("boundary=", 1)[1]
        expected = expected_single_file(boundary, "d.bin", payload)
        assert seen["length"] == len(expected), opener
        assert seen["sha256"] == hashlib.sha256(expected).hexdigest()
        assert header(seen, "content-length") in ([], [str(len(expected))])
        with opener(path, "rb") as f:
            seen = echo(client.put(hypercorn.https_url + "/echo", body=f))
        assert seen["length"] == len(payload), opener
        assert seen["sha256"] == hashlib.sha256(payload).hexdigest()


def test_multipart_from_a_pipe_has_no_length_and_arrives_whole(client, hypercorn):
    rfd, wfd = os.pipe()
    payload = os.urandom(300_000)

    def write() -> None:
        with os.fdopen(wfd, "wb") as w:
            w.write(payload)

    t = threading.Thread(target=write)
    t.start()
    with os.fdopen(rfd, "rb") as pipe:
        seen = echo(client.post(hypercorn.https_url + "/echo", files={"f": ("p.bin", pipe)}))
    t.join()
    assert header(seen, "content-length") == []
    boundary = header(seen, "content-type")[0].split("boundary=", 1)[1]
    expected = expected_single_file(boundary, "p.bin", payload)
    assert (seen["length"], seen["sha256"]) == (len(expected), hashlib.sha256(expected).hexdigest())


@pytest.mark.timeout(120)
def test_large_multipart_upload_keeps_memory_flat(make_client, hypercorn, bigfiles, content):
    """256 MiB through hypercorn, which reads (and hashes) every byte before answering:
    the file is streamed, so the client's RSS grows by far less than the file."""
    client = make_client()
    echo(client.post(hypercorn.https_url + "/echo", body=b"warm up"))
    before = rss()
    with open(content.root / "256m", "rb") as f:
        r = client.post(hypercorn.https_url + "/echo", files={"f": f}, timeout=100)
    grew = rss() - before
    seen = echo(r)
    boundary = header(seen, "content-type")[0].split("boundary=", 1)[1]
    head, tail = expected_single_file(boundary, "256m", b"\0").split(b"\0")
    digest = hashlib.sha256(head)
    with open(content.root / "256m", "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    digest.update(tail)
    assert seen["length"] == len(head) + (256 << 20) + len(tail)
    assert seen["sha256"] == digest.hexdigest()
    assert grew < 48 << 20, f"RSS grew {grew >> 20} MiB for a 256 MiB multipart upload"


def test_multipart_body_rewinds_to_its_start_and_nowhere_else(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"file contents")
    with path.open("rb") as f:
        body = multipart({"k": "v"}, {"f": f})
        first = body.read()
        assert body.seekable() and body.tell() == len(first)
        body.seek(0)
        assert body.read(7) + body.read() == first
        with pytest.raises(io.UnsupportedOperation):
            body.seek(3)


# -- cookies= -------------------------------------------------------------------------------
def test_cookies_are_one_header_merged_with_the_callers(client, hypercorn):
    seen = echo(client.get(hypercorn.https_url + "/echo", cookies={"a": "1", "sess": "x y"}))
    assert header(seen, "cookie") == ["a=1; sess=x y"]
    seen = echo(
        client.get(hypercorn.https_url + "/echo", headers={"Cookie": "z=0"}, cookies={"a": "1"})
    )
    assert header(seen, "cookie") == ["z=0; a=1"]


@pytest.mark.parametrize(
    "cookies", [{"a": "1;b=2"}, {"a b": "1"}, {"a": "x\r\nX-Evil: 1"}, {"a": 1}]
)
def test_bad_cookies_are_refused_before_sending(make_client, cookies):
    client = make_client()
    with pytest.raises(h2pool.InvalidHeader):
        client.get("https://localhost:1/", cookies=cookies)
    assert untouched(client)


def test_no_cookie_jar_a_set_cookie_is_never_sent_back():
    sent: list[str | None] = []

    def handler(request: h2pool.Request) -> h2pool.Response:
        sent.append(request.headers.get("cookie"))
        return h2pool.Response(200, {"set-cookie": "session=user-a; Path=/"})

    with h2pool.Client(transport=h2pool.MockTransport(handler)) as client:
        client.get("https://app.example/login")
        client.get("https://app.example/other-user")
    assert sent == [None, None]


# -- auth= ----------------------------------------------------------------------------------
def basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def test_basic_auth_from_a_tuple_per_request_and_as_client_default(make_client, hypercorn):
    url = hypercorn.https_url + "/echo"
    client = make_client(auth=("default", "pw"))
    assert header(echo(client.get(url)), "authorization") == [basic("default", "pw")]
    seen = echo(client.get(url, auth=("jürgen", "p:ss")))
    assert header(seen, "authorization") == [basic("jürgen", "p:ss")]
    seen = echo(
        client.get(url, headers={"Authorization": "Token old"}, auth=h2pool.BearerAuth("t0k"))
    )
    assert header(seen, "authorization") == ["Bearer t0k"]


def test_callable_auth_runs_in_the_calling_thread(client, hypercorn):
    threads: list[int] = []

    def sign(request: h2pool.Request) -> None:
        threads.append(threading.get_ident())
        request.headers["x-signature"] = hashlib.sha256(request.url.encode()).hexdigest()[:16]

    url = hypercorn.https_url + "/echo?q=1"
    seen = echo(client.get(url, auth=sign))
    assert header(seen, "x-signature") == [hashlib.sha256(url.encode()).hexdigest()[:16]]
    assert threads == [threading.get_ident()]


def test_a_subclass_of_bearer_or_basic_auth_has_its_apply_run(client, hypercorn):
    class SignedBearer(h2pool.BearerAuth):
        def apply(self, request: h2pool.Request) -> None:
            super().apply(request)
            request.headers["x-signature"] = "signed"

    class RotatingBasic(h2pool.BasicAuth):
        def apply(self, request: h2pool.Request) -> None:
            request.headers["authorization"] = basic("rotated", "pw")

    url = hypercorn.https_url + "/echo"
    seen = echo(client.get(url, auth=SignedBearer("t0k")))
    assert header(seen, "authorization") == ["Bearer t0k"]
    assert header(seen, "x-signature") == ["signed"]
    seen = echo(client.get(url, auth=RotatingBasic("old", "pw")))
    assert header(seen, "authorization") == [basic("rotated", "pw")]


def test_basic_auth_user_with_a_colon_is_refused():
    with pytest.raises(ValueError, match="':'"):
        h2pool.BasicAuth("a:b", "c")


def test_auth_is_dropped_on_a_cross_origin_redirect():
    seen: list[tuple[str, str | None]] = []

    def handler(request: h2pool.Request) -> h2pool.Response:
        seen.append((request.url, request.headers.get("authorization")))
        if request.url.startswith("https://a.example"):
            return h2pool.Response(302, {"location": "https://b.example/next"})
        return h2pool.Response(200, text="done")

    with h2pool.Client(transport=h2pool.MockTransport(handler), follow_redirects=True) as c:
        r = c.get("https://a.example/start", auth=("u", "p"))
    assert r.text == "done"
    assert seen == [("https://a.example/start", basic("u", "p")), ("https://b.example/next", None)]


# -- base_url= ------------------------------------------------------------------------------
def test_base_url_joins_relative_urls(make_client, hypercorn):
    client = make_client(base_url=hypercorn.https_url)
    assert echo(client.get("/echo", params={"a": "1"}))["path"] == "/echo"
    assert echo(client.get("echo?b=2"))["query"] == "b=2"
    seen: list[str] = []

    def handler(request: h2pool.Request) -> h2pool.Response:
        seen.append(request.url)
        return h2pool.Response(204)

    with h2pool.Client(
        base_url="https://api.example/v1", transport=h2pool.MockTransport(handler)
    ) as c:
        c.get("/users")
        c.get("users/7")
        c.get("https://other.example/abs")
    assert seen == [
        "https://api.example/v1/users",
        "https://api.example/v1/users/7",
        "https://other.example/abs",
    ]


def test_relative_url_without_base_url_names_base_url(make_client):
    client = make_client()
    with pytest.raises(h2pool.InvalidURL, match="base_url"):
        client.get("/users")
    assert untouched(client)


@pytest.mark.parametrize("base", ["/relative", "https://x.example/?q=1", 42])
def test_bad_base_url(base):
    with pytest.raises((ValueError, TypeError)):
        h2pool.Client(base_url=base)
