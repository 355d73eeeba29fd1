"""AsyncClient against real servers: the same arguments as Client, one pool shared with
threads and other event loops, streamed bodies that never block the loop, cancellation
that resets the stream, a loop closed with requests in flight."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import time
import uuid
from typing import Any

import pytest

import h2pool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def shared(make_client: Any) -> h2pool.Client:
    c: h2pool.Client = make_client()
    return c


def test_requests_with_everyday_arguments(ca_path, hypercorn, nginx):
    async def main() -> None:
        async with h2pool.AsyncClient(verify=ca_path) as ac:
            r = await ac.get(nginx.https_url + "/13b")
            assert (r.status, r.content, r.http_version) == (200, b"Hello, world!", "HTTP/2")
            seen = (
                await ac.post(
                    hypercorn.https_url + "/echo",
                    params={"a": "1"},
                    json={"k": [1]},
                    auth=("u", "p"),
                )
            ).json()
            assert seen["query"] == "a=1" and seen["body"] == '{"k":[1]}'
            assert ["authorization", "Basic dTpw"] in seen["headers"]
            with pytest.raises(h2pool.HTTPStatusError):
                (await ac.get(nginx.https_url + "/404")).raise_for_status()
            with pytest.raises(TypeError, match="json="):
                await ac.post(nginx.https_url + "/", body={"a": 1})
            client = ac.client
        assert client._runtime.closed  # its own Client is closed by the context manager

    asyncio.run(main())


def test_streamed_body_hashes_and_the_loop_keeps_ticking(ca_path, nginx, bigfiles):
    """256 MiB read with aiter_bytes while a 5 ms ticker runs on the same loop.

    A read that blocked the loop would stall it for most of the transfer; the bound is
    relative to the transfer's own duration so that a busy shared machine (a 180 ms
    scheduling hiccup has been seen) does not fail a loop that kept ticking."""

    async def main() -> tuple[str, float, int, float]:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async with h2pool.AsyncClient(verify=ca_path) as ac:
            tick = asyncio.create_task(ticker())
            digest = hashlib.sha256()
            started = time.monotonic()
            async with ac.stream("GET", nginx.https_url + "/256m") as r:
                async for chunk in r.aiter_bytes():
                    digest.update(chunk)
            elapsed = time.monotonic() - started
            stop.set()
            await tick
        return digest.hexdigest(), max(gaps), len(gaps), elapsed

    sha, worst, ticks, elapsed = asyncio.run(main())
    assert sha == bigfiles.sha256["/256m"]
    assert ticks > 20
    assert worst < max(0.15, elapsed / 4), (
        f"the event loop stalled {worst * 1000:.0f} ms of a {elapsed * 1000:.0f} ms read"
    )


def test_aread_aiter_text_and_lines(ca_path, hypercorn):
    async def main() -> None:
        async with h2pool.AsyncClient(verify=ca_path) as ac:
            async with ac.stream("GET", hypercorn.https_url + "/lines") as r:
                lines = [line async for line in r.aiter_lines()]
            assert lines == ["alpha", "beta", "gamma", "", "δelta", "last"]
            async with ac.stream("GET", hypercorn.https_url + "/lines") as r:
                text = "".join([t async for t in r.aiter_text()])
            assert text.splitlines() == lines
            async with ac.stream("GET", hypercorn.https_url + "/lines") as r:
                assert (await r.aread()).decode().splitlines() == lines
                assert r.content == await r.aread()

    asyncio.run(main())


def test_cancelling_the_task_resets_the_stream(shared, hypercorn):
    async def main() -> None:
        ac = h2pool.AsyncClient(client=shared)
        task = asyncio.create_task(ac.get(hypercorn.https_url + "/sleep"))
        while shared.stats()["open_streams"] == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ac.aclose()

    before = shared.stats()["resets_sent"] if shared._runtime.loop else 0
    asyncio.run(main())
    deadline = time.monotonic() + 10
    while shared.stats()["open_streams"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = shared.stats()
    assert stats["open_streams"] == 0
    assert stats["resets_sent"] == before + 1
    assert not shared._runtime.closed  # aclose() of a wrapper leaves the shared client open
    assert shared.get(hypercorn.https_url + "/").status == 200


def test_a_read_timeout_while_streaming(make_client, hypercorn):
    client = make_client(timeout=h2pool.Timeout(connect=5, read=0.5, write=5, pool=5))

    async def main() -> None:
        ac = h2pool.AsyncClient(client=client)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        tick = asyncio.create_task(ticker())
        async with ac.stream("GET", hypercorn.https_url + "/stall") as r:
            got = []
            with pytest.raises(h2pool.ReadTimeout):
                async for chunk in r.aiter_bytes():
                    got.append(chunk)
            assert got == [b"first"]
        tick.cancel()
        # The loop kept running through the 0.5 s stall (about 100 ticks; a read that
        # blocked the loop would allow none).
        assert ticks >= 20

    asyncio.run(main())
    assert client.stats()["resets_sent"] >= 1


def test_a_loop_closed_with_requests_in_flight_leaks_nothing(shared, hypercorn):
    loop = asyncio.new_event_loop()
    ac = h2pool.AsyncClient(client=shared)
    started = threading.Event()

    async def fire() -> None:
        started.set()
        await ac.get(hypercorn.https_url + "/sleep")

    tasks = [loop.create_task(fire()) for _ in range(3)]
    loop.run_until_complete(asyncio.sleep(0.2))
    assert started.is_set() and shared.stats()["open_streams"] == 3
    for t in tasks:
        t.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()
    deadline = time.monotonic() + 10
    while shared.stats()["open_streams"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert shared.stats()["open_streams"] == 0
    assert shared.get(hypercorn.https_url + "/").status == 200


def test_a_loop_closed_under_a_streamed_read(shared, nginx):
    """The pipe's waker posts to a loop that is gone: the I/O thread carries on."""
    loop = asyncio.new_event_loop()
    ac = h2pool.AsyncClient(client=shared)

    async def start() -> Any:
        r = await ac.request("GET", nginx.https_url + "/1g", stream=True)
        agen = r.aiter_bytes()
        await agen.__anext__()
        return r, agen

    r, agen = loop.run_until_complete(start())
    task = loop.create_task(agen.__anext__())
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()  # abandoned mid-body
    r.close()
    del task, agen
    assert shared.get(nginx.https_url + "/13b").content == b"Hello, world!"


def test_threads_coroutines_and_other_loops_share_one_pool(shared, nginx):
    url = nginx.https_url + "/13b"
    shared.get(url)  # one connection; 8 threads + 3 loops x 24 stay under its 100 streams
    errors: list[BaseException] = []

    def thread_work() -> None:
        try:
            for _ in range(20):
                assert shared.get(url).content == b"Hello, world!"
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def loop_work() -> None:
        async def main() -> None:
            ac = h2pool.AsyncClient(client=shared)
            rs = await asyncio.gather(*(ac.get(url) for _ in range(24)))
            assert all(r.content == b"Hello, world!" for r in rs)

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread_work) for _ in range(8)]
    threads += [threading.Thread(target=loop_work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert errors == []
    stats = shared.stats()
    assert stats["connections_opened"] == 1 and stats["connections"] == 1


def test_retries_hooks_and_redirects(make_client, hypercorn, nginx):
    events: list[tuple[str, int]] = []
    client = make_client(
        retries=h2pool.Retries(attempts=3, statuses={503}, backoff=0),
        event_hooks={"response": [lambda r: events.append((r.url, threading.get_ident()))]},
    )
    key = uuid.uuid4().hex

    async def main() -> int:
        ac = h2pool.AsyncClient(client=client)
        r = await ac.get(f"{hypercorn.https_url}/flaky?key={key}&fail=2&status=503")
        assert r.status == 200
        r = await ac.get(nginx.https_url + "/r/chain3", follow_redirects=True)
        assert (r.status, len(r.history)) == (200, 3)
        return threading.get_ident()

    me = asyncio.run(main())
    assert client.stats()["policy_retries"] == 2
    assert {t for _, t in events} == {me}  # hooks ran in the loop's thread
    assert len(events) == 5  # the flaky 200, three redirects, the final answer


def test_mock_transport_through_asyncclient():
    def handler(request: h2pool.Request) -> h2pool.Response:
        return h2pool.Response(200, json={"url": request.url})

    async def main() -> None:
        async with h2pool.AsyncClient(
            transport=h2pool.MockTransport(handler), base_url="https://api.test"
        ) as ac:
            r = await ac.get("/x", params={"y": "1"})
            assert r.json() == {"url": "https://api.test/x?y=1"}

    asyncio.run(main())


def test_client_argument_excludes_configuration(shared):
    with pytest.raises(TypeError, match="Client"):
        h2pool.AsyncClient(client=shared, verify=False)
    with pytest.raises(TypeError):
        h2pool.AsyncClient(client=object())  # type: ignore[arg-type]


def test_an_async_iterable_body_is_a_clear_typeerror(shared):
    async def gen():  # type: ignore[no-untyped-def]
        yield b"x"

    async def main() -> None:
        ac = h2pool.AsyncClient(client=shared)
        with pytest.raises(TypeError, match="async iterable"):
            await ac.post("https://localhost:1/", body=gen())

    asyncio.run(main())
    assert shared._runtime.loop is None


def test_data_and_eof_arriving_as_the_reader_hands_back_credit_are_not_lost():
    """The I/O thread may feed the last chunk and END_STREAM in the moment between the
    async reader finding the pipe empty and it deciding what that means."""
    from h2pool._stream import BodyPipe

    class Owner:
        """Posting credit lets the I/O thread run: here it delivers the rest at once."""

        def __init__(self) -> None:
            self.pipe: BodyPipe | None = None
            self.consumed = 0

        def post_consumed(self, stream_id: int, nbytes: int) -> None:
            self.consumed += nbytes
            pipe, self.pipe = self.pipe, None
            if pipe is not None:
                pipe.feed(b"tail")
                pipe.feed_eof(None)

        def post_cancel(self, stream_id: int, unread: int) -> None:
            raise AssertionError("a complete body was reset")

    owner = Owner()
    pipe = BodyPipe(owner, 1, 1 << 20, 5.0)
    pipe.feed(b"head")
    owner.pipe = pipe
    r = h2pool.Response(200, pipe=pipe)
    assert asyncio.run(r.aread()) == b"headtail"
    assert owner.consumed == 8


def test_reading_again_after_a_read_timeout_raises_again(make_client, hypercorn):
    """As read() does: a body cut short by the timeout never reads as complete."""
    client = make_client(timeout=h2pool.Timeout(connect=5, read=0.5, write=5, pool=5))
    with client.stream("GET", hypercorn.https_url + "/stall") as r:
        assert r.read(5) == b"first"
        for _ in range(2):
            with pytest.raises(h2pool.ReadTimeout):
                r.read()

    async def main() -> None:
        ac = h2pool.AsyncClient(client=client)
        async with ac.stream("GET", hypercorn.https_url + "/stall") as r:
            agen = r.aiter_bytes()
            assert await agen.__anext__() == b"first"
            with pytest.raises(h2pool.ReadTimeout):
                await agen.__anext__()
            with pytest.raises(h2pool.ReadTimeout):
                await r.aread()

    asyncio.run(main())


class _SlowSecondRead(io.BytesIO):
    """A file body whose first reader (the first request's pump thread) is in the middle
    of its second read when the response arrives: that read waits for a rewind (up to
    0.5 s), and any other reader waits for that read to finish."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._first: threading.Thread | None = None
        self._reads = 0
        self.rewound = threading.Event()
        self.late_read_done = threading.Event()

    def read(self, size: int | None = -1) -> bytes:
        me = threading.current_thread()
        if self._first is None:
            self._first = me
        if me is self._first:
            self._reads += 1
            if self._reads == 2:
                self.rewound.wait(0.5)
                try:
                    return super().read(size)
                finally:
                    self.late_read_done.set()
        else:
            self.late_read_done.wait(5)
        return super().read(size)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if self._reads >= 2 and whence == io.SEEK_SET:
            self.rewound.set()
        return super().seek(pos, whence)


@pytest.mark.parametrize("stream", [False, True])
def test_a_307_rewinds_a_file_body_only_once_its_first_reader_let_go(
    shared, nginx, hypercorn, stream
):
    """nginx answers 307 without reading the body: the next hop must send the file from
    its start, not race the first request's pump thread for it."""
    data = bytes(range(256)) * 1024
    body = _SlowSecondRead(data)
    url = f"{nginx.https_url}/r/307-to?to={hypercorn.https_url}/echo"

    async def main() -> h2pool.Response:
        ac = h2pool.AsyncClient(client=shared)
        r = await ac.put(url, body=body, follow_redirects=True, stream=stream)
        await r.aread()
        return r

    r = asyncio.run(main())
    assert [h.status for h in r.history] == [307]
    seen = r.json()
    assert (seen["method"], seen["length"]) == ("PUT", len(data))
    assert seen["sha256"] == hashlib.sha256(data).hexdigest()
