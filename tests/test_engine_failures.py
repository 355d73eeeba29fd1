"""The engine's own failures: a bug in a handler, a dying I/O thread, fork.

Faults are injected by replacing one engine function (never a socket): the point is
that an unexpected exception on the I/O thread fails only what it must and that no
caller is ever left waiting.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future

import h2.events
import pytest

import h2pool
from h2pool import _loop
from h2pool._http2 import connection as _h2conn


@pytest.mark.timeout(30)
def test_handler_bug_fails_its_connection_and_loop_carries_on(h2peer, make_client, monkeypatch):
    peer = h2peer()
    client = make_client(http2_prior_knowledge=True)
    url = peer.h2c_url + "/fast"
    assert client.get(url).content == b"Hello, world!"

    original = _h2conn._HANDLERS[h2.events.ResponseReceived]
    calls = []

    def broken(conn, event):
        calls.append(event.stream_id)
        if len(calls) == 1:
            raise RuntimeError("injected bug")
        return original(conn, event)

    monkeypatch.setitem(_h2conn._HANDLERS, h2.events.ResponseReceived, broken)
    with pytest.raises(h2pool.ProtocolError) as info:
        client.get(url)
    assert isinstance(info.value.__cause__, RuntimeError)
    # The loop survived; the broken connection was dropped and a new one serves us.
    r = client.get(url)
    assert r.content == b"Hello, world!"
    assert client.stats()["connections_opened"] == 2
    assert len(peer.connections) == 2


@pytest.mark.timeout(30)
def test_dead_io_thread_wakes_waiters_and_refuses_new_requests(h2peer, make_client, monkeypatch):
    peer = h2peer(routes={"/stall": "stall_headers"})
    client = make_client(http2_prior_knowledge=True)
    stalled = client.submit("GET", peer.h2c_url + "/stall")
    peer.wait_requests(1)

    def explode(self):
        raise SystemError("injected loop crash")

    monkeypatch.setattr(_loop.IOLoop, "_run_once", explode)
    # Wake the loop so that its next turn runs the patched method.
    client._runtime.loop.call_soon_threadsafe(lambda: None)
    with pytest.raises(h2pool.ClientClosed) as info:
        stalled.result(timeout=10)
    assert isinstance(info.value.__cause__, SystemError)
    client._runtime.loop.join(5)
    assert not client._runtime.loop.thread.is_alive()
    with pytest.raises(h2pool.ClientClosed):
        client.get(peer.h2c_url + "/fast")


@pytest.mark.timeout(30)
def test_request_queued_while_the_io_thread_dies_is_failed(make_client, monkeypatch):
    """A caller that passed the "I/O thread broken?" check before the thread died and
    queues its request after the dying thread drained the queue must still get an
    answer. Its own "stopping?" check is all that is left to see the request, so the
    loop must read as stopping before the dying thread's last drain; here the caller is
    held between the two checks until that drain has run."""
    client = make_client(http2_prior_knowledge=True)
    runtime = client._runtime
    loop, _ = runtime.ensure()
    checked = threading.Event()
    drained = threading.Event()
    submitted = threading.Event()
    ensure, fail_leftovers = runtime.ensure, runtime.fail_leftovers

    def late_ensure():
        checked.set()  # past the `broken` check, which found the thread alive
        assert drained.wait(10), "the I/O thread did not die"
        return ensure()

    def dying_drain():
        fail_leftovers()
        if threading.current_thread() is loop.thread:
            drained.set()
            submitted.wait(10)  # the caller queues now, before the loop finishes dying

    monkeypatch.setattr(runtime, "ensure", late_ensure)
    monkeypatch.setattr(runtime, "fail_leftovers", dying_drain)
    futures = []

    def caller():
        try:
            futures.append(client.submit("GET", "http://127.0.0.1:9/"))
        except BaseException as exc:  # reported by the assertion below
            futures.append(exc)
        finally:
            submitted.set()

    thread = threading.Thread(target=caller)
    thread.start()
    assert checked.wait(10)

    def explode():
        raise SystemError("injected loop crash")

    loop.call_soon_threadsafe(explode)  # a command with no owner: the loop dies
    thread.join(10)
    assert loop.join(10)
    (future,) = futures
    assert isinstance(future, Future), f"submit() raised {future!r}"
    with pytest.raises(h2pool.ClientClosed) as info:
        future.result(timeout=5)
    assert isinstance(info.value.__cause__, SystemError)


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_opens_its_own_connection(h2peer, make_client):
    peer = h2peer()
    client = make_client(http2_prior_knowledge=True)
    url = peer.h2c_url + "/fast"
    assert client.get(url).status == 200
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report "status connections_opened" and exit without cleanup
        code = 1
        try:
            resp = client.get(url, timeout=10)
            s = client.stats()
            os.write(w, f"{resp.status} {s['connections_opened']}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert report == "200 1"  # the child dialled its own connection
    assert len(peer.connections) == 2
    assert client.get(url).status == 200  # the parent still uses its first connection
    assert client.stats()["connections_opened"] == 1
    assert threading.current_thread() is threading.main_thread()


@pytest.mark.timeout(30)
def test_client_dropped_without_close_stops_its_thread(h2peer):
    """A Client nobody closes must not leak its I/O thread and sockets once it is
    garbage collected (the I/O thread holds it only weakly)."""
    import gc

    peer = h2peer()
    client = h2pool.Client(http2_prior_knowledge=True)
    assert client.get(peer.h2c_url + "/fast").content == b"Hello, world!"
    thread = client._runtime.loop.thread
    assert thread.is_alive()
    del client
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()
    # The server sees the connection go away (GOAWAY, then EOF).
    assert peer.wait_for(lambda p: all(c.closed for c in p.connections), 10)
