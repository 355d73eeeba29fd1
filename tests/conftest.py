"""Shared fixtures: test PKI, content tree, real servers, the scripted peer, leak checks.

Session-scoped servers (nginx, nghttpd) start before any function-scoped
fixture, so the per-test leak check's baseline already includes them.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from servers.certs import PKI, make_pki
from servers.content import Content, make_content
from servers.h2peer import H2Peer, server_tls_context
from servers.hashpeer import HashPeer
from servers.nghttpd import NghttpdServer, start_nghttpd
from servers.nginx import NginxServer, start_nginx
from servers.rawpeer import RawPeer
from servers.sparse import SparseFiles

LEAK_GRACE = 2.0  # seconds the engine gets to join threads and close fds after a test


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--switch-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="sys.setswitchinterval() for the run: 1e-6 makes the GIL switch threads "
        "about every microsecond, so races that need an unlucky switch show up "
        "(stress/race_suite.py runs the suite repeatedly this way)",
    )


_saved_switch_interval: list[float] = []


def pytest_configure(config: pytest.Config) -> None:
    interval = config.getoption("--switch-interval")
    if interval is not None:
        _saved_switch_interval.append(sys.getswitchinterval())
        sys.setswitchinterval(interval)
    config.addinivalue_line(
        "markers", "no_leak_check: skip the autouse thread/fd leak check for this test"
    )
    config.addinivalue_line("markers", "slow: large transfers (100 MiB and more)")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _saved_switch_interval:
        sys.setswitchinterval(_saved_switch_interval.pop())


def pytest_report_header(config: pytest.Config) -> str:
    forced = " (forced by --switch-interval)" if _saved_switch_interval else ""
    return f"thread switch interval: {sys.getswitchinterval():g} s{forced}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Remember each phase's report so the leak check can stay quiet when the
    # test itself already failed (one failure, not two).
    report = yield
    setattr(item, f"_report_{report.when}", report)
    return report


# -- PKI and content ----------------------------------------------------------


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def ca(pki: PKI) -> trustme.CA:
    """The trustme CA that signed the servers' certificates."""
    return pki.ca


@pytest.fixture(scope="session")
def ca_path(pki: PKI) -> str:
    """Path of the trusted CA's PEM file, for ``Client(verify=ca_path)``."""
    return str(pki.ca_path)


@pytest.fixture(scope="session")
def untrusted_ca_path(pki: PKI) -> str:
    """A second CA that signed nothing our servers use."""
    return str(pki.untrusted_ca_path)


@pytest.fixture(scope="session")
def content(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Content]:
    """The docroot: ``/13b``, ``/1m``, ``/100m``, ``/index.html``, ``/data.json``.

    ``content.sha256[path]``, ``content.size[path]``, ``content.data[path]`` (small files).
    """
    root = tmp_path_factory.mktemp("www")
    yield make_content(root)
    shutil.rmtree(root, ignore_errors=True)  # 100 MiB: don't keep it in pytest's basetemp


@pytest.fixture(scope="session")
def bigfiles(content: Content) -> Iterator[SparseFiles]:
    """Generated sparse files in the docroot (served by nginx and nghttpd): ``/256m``, ``/1g``.

    ``bigfiles.sha256[path]``, ``bigfiles.size[path]``. Zeros with a marker every
    64 KiB, so a dropped, repeated or reordered frame changes the hash.
    """
    files = SparseFiles(content.root)
    files.add("256m", 256 << 20)
    files.add("1g", 1 << 30)
    yield files
    files.remove()


# -- real servers -------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, content: Content
) -> Iterator[NginxServer]:
    """nginx on 127.0.0.1, one listener per URL attribute.

    ``.https_url``, ``.h2c_url``, ``.http1_tls_url``, ``.goaway100_url``, ``.mcs4_url``,
    ``.low16_url``.
    """
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed")
    server = start_nginx(tmp_path_factory.mktemp("nginx"), content.root, pki.server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nghttpd(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, content: Content
) -> Iterator[NghttpdServer]:
    """nghttpd serving the docroot: ``.https_url``, ``.h2c_url``."""
    if shutil.which("nghttpd") is None:
        pytest.skip("nghttpd is not installed")
    server = start_nghttpd(tmp_path_factory.mktemp("nghttpd"), content.root, pki.server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hypercorn(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Any]:
    """hypercorn over TLS serving ``servers.asgi.app`` (trailers only when asked)."""
    pytest.importorskip("hypercorn")
    from servers.asgi import start_hypercorn

    server = start_hypercorn(tmp_path_factory.mktemp("hypercorn"), pki.server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nghttpd_echo(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, content: Content
) -> Iterator[NghttpdServer]:
    """nghttpd with ``--echo-upload``: a POST/PUT body comes back as the response body."""
    if shutil.which("nghttpd") is None:
        pytest.skip("nghttpd is not installed")
    server = start_nghttpd(
        tmp_path_factory.mktemp("nghttpd-echo"), content.root, pki.server, ("--echo-upload",)
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nghttpd_trailer(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, content: Content
) -> Iterator[NghttpdServer]:
    """nghttpd adding the trailer ``x-checksum: abc`` to every response with a body."""
    if shutil.which("nghttpd") is None:
        pytest.skip("nghttpd is not installed")
    server = start_nghttpd(
        tmp_path_factory.mktemp("nghttpd-trailer"),
        content.root,
        pki.server,
        ("--trailer=x-checksum: abc",),
    )
    yield server
    server.stop()


# -- the scripted peer --------------------------------------------------------


@pytest.fixture
def h2peer(pki: PKI) -> Iterator[Callable[..., H2Peer]]:
    """Factory for started :class:`H2Peer` instances, all stopped at teardown.

    ``h2peer(routes={"/stall": "stall_headers"}, tls=True, settings={...}, mode=...)``;
    ``tls=True`` serves TLS (ALPN h2) with a certificate from the test CA.
    """
    peers: list[H2Peer] = []

    def make(*args: Any, tls: bool | Any = None, **kwargs: Any) -> H2Peer:
        context = server_tls_context(pki.ca) if tls is True else (tls or None)
        peer = H2Peer(*args, tls=context, **kwargs).start()
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.stop()


@pytest.fixture
def hashpeer(pki: PKI) -> Iterator[Callable[..., HashPeer]]:
    """Like ``h2peer``, for a :class:`HashPeer`: request bodies are hashed, not kept.

    ``hashpeer(routes=..., early_routes={path: handler}, tls=True)``; unrouted paths
    answer with JSON ``{"sha256", "length", "content_length"}`` of what was received.
    """
    peers: list[HashPeer] = []

    def make(*args: Any, tls: bool | Any = None, **kwargs: Any) -> HashPeer:
        context = server_tls_context(pki.ca) if tls is True else (tls or None)
        peer = HashPeer(*args, tls=context, **kwargs).start()
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.stop()


# -- clients ------------------------------------------------------------------

_PROXY_VARS = (
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite talks to servers on loopback only: a proxy configured on the machine
    running it must not change what the tests see (test_proxy.py sets its own)."""
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_client(ca_path: str) -> Iterator[Callable[..., Any]]:
    """Factory for ``h2pool.Client`` trusting the test CA; every client is closed at teardown."""
    import h2pool

    clients: list[Any] = []

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("verify", ca_path)
        client = h2pool.Client(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# -- leak check ---------------------------------------------------------------


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, threads and open fds must return to their baseline.

    Opt out with ``@pytest.mark.no_leak_check``.
    """
    if request.node.get_closest_marker("no_leak_check") or not Path("/proc/self/fd").exists():
        yield
        return
    threads_before = set(threading.enumerate())
    fds_before = fd_count()
    yield
    call = getattr(request.node, "_report_call", None)
    if call is None or not call.passed:
        # A failed (or xfailed) test reports its own failure; collect what it
        # left behind now, silently, so its unclosed sockets don't surface as
        # a ResourceWarning in whichever later test next runs the collector.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        return
    deadline = time.monotonic() + LEAK_GRACE
    extra = [t for t in threading.enumerate() if t not in threads_before]
    for t in extra:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    leaked = [t.name for t in extra if t.is_alive()]
    gc.collect()  # drop sockets held only by reference cycles (tracebacks in the test)
    fds = fd_count()
    while fds > fds_before and time.monotonic() < deadline:
        # No event tells us when another thread has closed a descriptor, so
        # poll briefly within the grace period.
        time.sleep(0.01)
        fds = fd_count()
    assert not leaked, f"threads still alive after the test: {leaked}"
    assert fds <= fds_before, f"fd leak: {fds_before} open before the test, {fds} after"


@pytest.fixture
def rawpeer() -> Iterator[Callable[..., RawPeer]]:
    """Factory for scripted raw-frame peers (tests/servers/rawpeer.py), stopped at teardown."""
    peers: list[RawPeer] = []

    def make(script: Any = None, **kwargs: Any) -> RawPeer:
        peer = RawPeer(script, **kwargs).start()
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.stop()
