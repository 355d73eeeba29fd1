"""The command line, run as a subprocess (``python -m h2pool``) against nginx and
scripted peers: bytes on stdout and in files, headers, redirects, uploads, exit codes,
and the demo."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TIMEOUT = 60


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}


def h2pool_cli(
    *args: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "h2pool", *args],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        env=_env(),
        check=False,
        cwd=cwd,
    )


def h2pool_popen(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "h2pool", *args], env=_env(), **kwargs)  # type: ignore[call-overload]


def test_get_prints_the_body(nginx, ca_path, content):
    p = h2pool_cli("--cacert", ca_path, nginx.https_url + "/13b")
    assert p.returncode == 0, p.stderr
    assert p.stdout == content.data["/13b"]


def test_output_file_and_decoded_gzip(nginx, ca_path, content, tmp_path):
    out = tmp_path / "out.bin"
    p = h2pool_cli("--cacert", ca_path, "-o", str(out), nginx.https_url + "/gzip/1m")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b""
    assert hashlib.sha256(out.read_bytes()).hexdigest() == content.sha256["/1m"]


def test_include_headers_and_verbose(nginx, ca_path):
    p = h2pool_cli(
        "-i", "-v", "--cacert", ca_path, nginx.https_url + "/13b", nginx.https_url + "/13b"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.count(b"HTTP/2 200 OK\n") == 2
    assert b"content-length: 13\n" in p.stdout
    assert p.stdout.count(b"Hello, world!") == 2
    assert b"2 transfer(s) over 1 connection(s)" in p.stderr


def test_method_headers_and_data(nginx, ca_path):
    p = h2pool_cli(
        "-i", "-X", "PUT", "-H", "X-Test: from-cli", "-d", "abc", "--cacert", ca_path,
        nginx.https_url + "/echo-headers",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert b"x-echo-method: PUT\n" in p.stdout
    assert b"x-echo-test: from-cli\n" in p.stdout


def test_data_binary_file_and_stdin(hashpeer, tmp_path):
    peer = hashpeer()
    blob = os.urandom(300_000)
    path = tmp_path / "upload.bin"
    path.write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest().encode()
    p = h2pool_cli("--h2c", "--data-binary", f"@{path}", peer.h2c_url + "/up")
    assert p.returncode == 0, p.stderr
    assert digest in p.stdout
    p = h2pool_cli("--h2c", "--data-binary", "@-", peer.h2c_url + "/up", stdin=blob)
    assert p.returncode == 0, p.stderr
    assert digest in p.stdout


def test_parallel_many_urls_one_client(nginx, ca_path):
    urls = [nginx.https_url + "/13b"] * 20
    p = h2pool_cli("-v", "--parallel", "10", "--cacert", ca_path, *urls)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"Hello, world!" * 20
    assert b"20 transfer(s)" in p.stderr


def test_h2c(nginx):
    p = h2pool_cli("--h2c", "-i", nginx.h2c_url + "/13b")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"HTTP/2 200 OK\n")


def test_redirects_with_location(nginx, ca_path):
    p = h2pool_cli("--cacert", ca_path, nginx.https_url + "/r/chain1")
    assert p.returncode == 0
    assert b"302" in p.stdout  # nginx's redirect page, not followed
    p = h2pool_cli("-L", "--cacert", ca_path, nginx.https_url + "/r/chain1")
    assert (p.returncode, p.stdout) == (0, b"Hello, world!")
    p = h2pool_cli("-L", "--max-redirs", "3", "--cacert", ca_path, nginx.https_url + "/r/loop")
    assert p.returncode == 47
    assert b"TooManyRedirects" in p.stderr


@pytest.mark.parametrize(
    "args,code",
    [
        (["--fail", "/404"], 22),
        (["/404"], 0),
        (["--bogus-option", "/13b"], 2),
        (["-H", "no-colon", "/13b"], 2),
        (["-d", "@/nonexistent/file", "/13b"], 2),
        (["-o", "/nonexistent/dir/out", "/13b"], 23),
    ],
)
def test_exit_codes(nginx, ca_path, args, code):
    *opts, path = args
    p = h2pool_cli("--cacert", ca_path, *opts, nginx.https_url + path)
    assert p.returncode == code, p.stderr


def test_exit_code_untrusted_certificate(nginx, untrusted_ca_path):
    p = h2pool_cli("--cacert", untrusted_ca_path, nginx.https_url + "/13b")
    assert p.returncode == 60  # curl's "peer certificate cannot be authenticated"
    assert b"TLSError" in p.stderr
    p = h2pool_cli("--insecure", nginx.https_url + "/13b")
    assert (p.returncode, p.stdout) == (0, b"Hello, world!")


def test_exit_code_connect_and_timeout(h2peer):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        p = h2pool_cli("--h2c", f"http://127.0.0.1:{port}/")
    assert p.returncode == 7
    peer = h2peer(routes={"/stall": "stall_headers"})
    p = h2pool_cli("--h2c", "--timeout", "0.5", peer.h2c_url + "/stall")
    assert p.returncode == 28
    assert b"ReadTimeout" in p.stderr


def test_console_script_is_declared():
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert 'h2pool = "h2pool.__main__:main"' in text


@pytest.mark.timeout(60)
def test_demo_runs_and_prints_a_summary():
    p = h2pool_cli("demo", "--duration", "2", "--threads", "8")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "summary:" in out
    assert " 0 errors" in out
    assert "req/s" in out


# -- Ctrl-C, stdout streaming, closed stdout ------------------------------------------


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    # The file is written by another process: nothing to wait on but its size.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else 0
        if size > 0:
            return size
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        time.sleep(0.01)
    raise AssertionError(f"{path} did not start growing")


def _assert_interrupted(proc: subprocess.Popen[bytes], sent: float) -> bytes:
    proc.wait(timeout=5)
    elapsed = time.monotonic() - sent
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert err.strip().count(b"\n") == 0, err  # one line
    assert elapsed < 3.0, f"took {elapsed:.2f} s to stop after SIGINT"
    return err


@pytest.mark.timeout(60)
def test_sigint_stops_a_download_to_a_file(nginx, ca_path, bigfiles, tmp_path):
    out = tmp_path / "big"
    with h2pool_popen("--cacert", ca_path, "-o", str(out), nginx.https_url + "/1g") as proc:
        _wait_for_file(out, proc)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        err = _assert_interrupted(proc, sent)
        assert err == b"h2pool: interrupted\n"
        size = out.stat().st_size
        assert 0 < size < bigfiles.size["/1g"]
        # No thread of the process is left writing: the size stays put.
        assert out.stat().st_size == size


@pytest.mark.timeout(60)
def test_sigint_stops_downloads_to_stdout(nginx, ca_path, bigfiles):
    with h2pool_popen("--cacert", ca_path, *[nginx.https_url + "/1g"] * 3) as proc:
        assert proc.stdout is not None
        assert len(proc.stdout.read(65536)) == 65536  # the body is flowing
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()  # EOF once the process has gone
        _assert_interrupted(proc, sent)
        assert 65536 + len(rest) < bigfiles.size["/1g"]


@pytest.mark.timeout(60)
def test_sigint_stops_the_demo():
    with h2pool_popen("demo", "--duration", "60", "--threads", "8") as proc:
        assert proc.stdout is not None
        proc.stdout.readline()  # the banner
        proc.stdout.readline()  # a first stats line: the workers are running
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.stdout.read()
        _assert_interrupted(proc, sent)


_PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=False, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.timeout(120)
def test_stdout_is_streamed_with_bounded_memory(nginx, ca_path, bigfiles):
    # The peak RSS of a 256 MiB body written to /dev/null, measured by a parent
    # whose only child is the CLI.
    cmd = [sys.executable, "-m", "h2pool", "--cacert", ca_path, nginx.https_url + "/256m"]
    p = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *cmd], capture_output=True, timeout=100, env=_env()
    )
    assert p.returncode == 0, p.stderr
    peak_mib = int(p.stdout) / 1024
    assert peak_mib < 100, f"peak RSS {peak_mib:.0f} MiB for a 256 MiB body"
    # And the bytes are right when they go through a pipe.
    with h2pool_popen("--cacert", ca_path, nginx.https_url + "/256m") as proc:
        assert proc.stdout is not None
        digest = hashlib.sha256()
        while chunk := proc.stdout.read(1 << 20):
            digest.update(chunk)
        assert proc.wait(timeout=60) == 0
        assert digest.hexdigest() == bigfiles.sha256["/256m"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("paths", [["/256m"], ["/1m", "/1m", "/1m", "/256m"]])
def test_closed_stdout_exits_23(nginx, ca_path, bigfiles, paths):
    with h2pool_popen("--cacert", ca_path, *[nginx.https_url + p for p in paths]) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert len(proc.stdout.read(100)) == 100  # like `| head -c 100`
        proc.stdout.close()
        assert proc.wait(timeout=10) == 23
        err = proc.stderr.read()
        assert b"Traceback" not in err and b"Exception ignored" not in err
        assert b"stdout" in err


@pytest.mark.timeout(60)
def test_stdout_closed_from_the_start_exits_23(nginx, ca_path):
    cmd = f'exec "{sys.executable}" -m h2pool --cacert "{ca_path}" {nginx.https_url}/13b >&-'
    p = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=TIMEOUT, env=_env())
    assert p.returncode == 23, p.stderr
    assert b"Traceback" not in p.stderr


# -- curl's exit codes ------------------------------------------------------------------


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connection refused


def _closes_during_handshake() -> int:
    """A port whose server reads the ClientHello and closes: an EOF in the handshake."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


@pytest.mark.timeout(60)
def test_curl_exit_codes(nginx, ca_path, tmp_path, h2peer):
    cases: list[tuple[list[str], int]] = [
        (["http://no-such-host.invalid/"], 6),
        ([f"http://127.0.0.1:{_refused_port()}/"], 7),
        (["--cacert", ca_path, f"https://localhost:{nginx.h2c_port}/13b"], 35),
        ([f"https://localhost:{_closes_during_handshake()}/"], 35),  # curl's too
        (["http://exa mple.com/"], 3),
        (["http://[::1/"], 3),
        (["--cacert", "/nonexistent/ca.pem", nginx.https_url + "/13b"], 77),
        (["--h2c", "-m", "0.5", h2peer(routes={"/stall": "stall"}).h2c_url + "/stall"], 28),
        (["--h2c", "--timeout", "0.5", h2peer(routes={"/b": "stall_body"}).h2c_url + "/b"], 28),
    ]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases.append((["--cacert", str(garbage), nginx.https_url + "/13b"], 77))
    for args, code in cases:
        p = h2pool_cli(*args)
        assert p.returncode == code, (args, p.stderr)
        assert b"Traceback" not in p.stderr


def test_fail_suppresses_the_error_body(nginx, ca_path):
    p = h2pool_cli("--cacert", ca_path, "-f", nginx.https_url + "/404")
    assert (p.returncode, p.stdout) == (22, b"")
    assert b"404" in p.stderr
    p = h2pool_cli("--cacert", ca_path, "-f", "-s", nginx.https_url + "/404")
    assert (p.returncode, p.stdout, p.stderr) == (22, b"", b"")
    p = h2pool_cli("--cacert", ca_path, "-sS", "-f", nginx.https_url + "/404")
    assert p.returncode == 22 and b"404" in p.stderr
    p = h2pool_cli("--cacert", ca_path, nginx.https_url + "/404")
    assert p.returncode == 0 and b"404" in p.stdout


# -- request bodies ---------------------------------------------------------------------


def _echo(h2peer, *args: str, stdin: bytes | None = None):  # type: ignore[no-untyped-def]
    peer = h2peer(routes={"/echo": "echo"})
    p = h2pool_cli("--h2c", *args, peer.h2c_url + "/echo", stdin=stdin)
    assert p.returncode == 0, p.stderr
    (req,) = peer.wait_requests(1)
    assert p.stdout == bytes(req.body)
    return req


def test_data_is_a_form_joined_with_ampersands(h2peer, tmp_path):
    path = tmp_path / "d.txt"
    path.write_bytes(b"x=1\r\ny=2\n")
    req = _echo(h2peer, "-d", "a=1", "-d", "b=2", "-d", f"@{path}")
    assert req.method == "POST"
    assert req.header("content-type") == "application/x-www-form-urlencoded"
    assert bytes(req.body) == b"a=1&b=2&x=1y=2"  # -d @FILE drops CR and LF, as curl


def test_data_binary_keeps_every_byte(h2peer, tmp_path):
    path = tmp_path / "d.bin"
    path.write_bytes(b"x=1\r\ny=2\n")
    req = _echo(h2peer, "--data-binary", f"@{path}", "-H", "Content-Type: text/plain")
    assert bytes(req.body) == b"x=1\r\ny=2\n"
    assert req.header("content-type") == "text/plain"
    req = _echo(h2peer, "--data-binary", "@-", "-X", "PUT", stdin=b"\n\x00raw\n")
    assert (req.method, bytes(req.body)) == ("PUT", b"\n\x00raw\n")


def test_json(h2peer):
    req = _echo(h2peer, "--json", '{"a": 1}')
    assert json.loads(bytes(req.body)) == {"a": 1}
    assert req.header("content-type") == "application/json"
    assert req.header("accept") == "application/json"


def test_form_multipart(h2peer, tmp_path):
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    req = _echo(h2peer, "-F", "name=value", "-F", f"upload=@{path};type=text/csv")
    ctype = req.header("content-type") or ""
    assert ctype.startswith("multipart/form-data; boundary=")
    body = bytes(req.body)
    assert b'name="name"\r\n\r\nvalue\r\n' in body
    assert b'name="upload"; filename="report.csv"\r\n' in body
    assert b"content-type: text/csv\r\n\r\na,b\n1,2\n\r\n" in body.lower()
    p = h2pool_cli("--h2c", "-F", "f=@/nonexistent/file", "http://127.0.0.1:1/")
    assert p.returncode == 26


# -- everyday options -------------------------------------------------------------------


def test_head_user_agent_basic_auth(nginx, ca_path):
    url = nginx.https_url + "/echo-headers"
    p = h2pool_cli("--cacert", ca_path, "-I", "-A", "cli-test/1", "-u", "al:pw", url)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"HTTP/2 200 OK\n")
    assert p.stdout.endswith(b"\n\n")  # headers only, no body
    assert b"x-echo-method: HEAD\n" in p.stdout
    assert b"x-echo-ua: cli-test/1\n" in p.stdout
    assert b"x-echo-authorization: Basic YWw6cHc=\n" in p.stdout


def test_write_out(nginx, ca_path):
    fmt = "%{http_code} %{http_version} %{size_download} %{time_total}\\n"
    p = h2pool_cli("--cacert", ca_path, "-w", fmt, nginx.https_url + "/13b")
    assert p.returncode == 0, p.stderr
    body, line = p.stdout[:13], p.stdout[13:].decode()
    assert body == b"Hello, world!"
    code, version, size, total = line.rstrip("\n").split(" ")
    assert (code, version, size) == ("200", "2", "13")
    assert 0 < float(total) < TIMEOUT
    p = h2pool_cli("--cacert", ca_path, "--http1.1", "-o", "/dev/null", "-w",
                   "%{http_version}", nginx.https_url + "/13b")  # fmt: skip
    assert (p.returncode, p.stdout) == (0, b"1.1")


def test_outputs_pair_with_urls(nginx, ca_path, content, tmp_path):
    p = h2pool_cli(
        "--cacert", ca_path, "-o", "a", "-O", "-o", "-",
        nginx.https_url + "/13b", nginx.https_url + "/1m", nginx.https_url + "/13b",
        nginx.https_url + "/13b", cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "a").read_bytes() == b"Hello, world!"
    assert hashlib.sha256((tmp_path / "1m").read_bytes()).hexdigest() == content.sha256["/1m"]
    assert p.stdout == b"Hello, world!" * 2  # "-o -" and the URL with no -o
    p = h2pool_cli("--cacert", ca_path, "-O", nginx.https_url + "/", cwd=tmp_path)
    assert p.returncode == 23


def test_verbose_shows_the_exchange(nginx, ca_path):
    p = h2pool_cli("--cacert", ca_path, "-v", "-A", "ua/2", nginx.https_url + "/13b")
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode()
    assert "> GET /13b HTTP/2\n" in err
    assert "> user-agent: ua/2\n" in err
    assert "< HTTP/2 200 OK\n" in err
    assert "resolves to 127.0.0.1" in err
    # The peer address, the negotiated protocol and the TLS version, as curl -v shows.
    port = nginx.https_url.rsplit(":", 1)[1]
    want = f"* connection to https://localhost:{port} at 127.0.0.1:{port}: HTTP/2 over TLSv1."
    assert want in err


def test_url_without_scheme_and_accepted_options(nginx):
    port = nginx.h2c_port
    p = h2pool_cli("--h2c", "--compressed", "--http2", f"127.0.0.1:{port}/13b")
    assert (p.returncode, p.stdout) == (0, b"Hello, world!"), p.stderr
    p = h2pool_cli("--version")
    assert p.returncode == 0 and p.stdout.startswith(b"h2pool ")
    p = h2pool_cli()
    assert p.returncode == 2


@pytest.mark.timeout(60)
def test_proxy(nginx, ca_path, tmp_path_factory):
    from servers.tinyproxy import start_tinyproxy, tinyproxy_installed

    if not tinyproxy_installed():
        pytest.skip("tinyproxy is not installed")
    proxy = start_tinyproxy(tmp_path_factory.mktemp("tinyproxy"), [nginx.https_port])
    try:
        target = f"127.0.0.1:{proxy.port}"
        p = h2pool_cli("--cacert", ca_path, "-x", target, nginx.https_url + "/13b")
        assert (p.returncode, p.stdout) == (0, b"Hello, world!"), p.stderr
        assert f"CONNECT localhost:{nginx.https_port} " in proxy.wait_for_log("CONNECT")
    finally:
        proxy.stop()


# -- the demo ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--threads", "0"], ["--duration", "0"], ["--bogus"]])
def test_demo_usage_errors(args):
    p = h2pool_cli("demo", *args)
    assert p.returncode == 2
    assert b"Traceback" not in p.stderr


@pytest.mark.timeout(60)
def test_demo_compares_one_thread_with_many():
    p = h2pool_cli("demo", "--duration", "2", "--threads", "16")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "\r" not in out  # piped: plain lines
    assert "1 thread:" in out and "16 threads:" in out
    assert "x the rate of one thread" in out


def test_resolve_connects_to_the_given_address_and_keeps_the_name(nginx, ca_path):
    """``--resolve NAME:PORT:ADDR`` as in curl: a name that has no DNS entry reaches the
    server at ADDR, with TLS checked against NAME (here: not in the certificate, so
    refused unless the name is the certificate's)."""
    port = nginx.https_port
    url = f"https://localhost:{port}/13b"
    p = h2pool_cli("--cacert", ca_path, "--resolve", f"localhost:{port}:127.0.0.1", url)
    assert (p.returncode, p.stdout) == (0, b"Hello, world!"), p.stderr
    # A name that only --resolve knows: connects, then the certificate check refuses it.
    p = h2pool_cli(
        "--cacert",
        ca_path,
        "--resolve",
        f"no-such-host.invalid:{port}:127.0.0.1",
        f"https://no-such-host.invalid:{port}/13b",
    )
    assert p.returncode == 60, p.stderr  # certificate verification, not 6 (DNS)
    p = h2pool_cli("--resolve", "localhost:x:127.0.0.1", url)
    assert p.returncode == 2 and b"HOST:PORT:ADDRESS" in p.stderr
