"""The command line, run as a subprocess (``python -m h2pool``) against nginx and
scripted peers: bytes on stdout and in files, headers, redirects, uploads, exit codes,
and the demo."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 60


def h2pool_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "h2pool", *args],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )


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
    p = h2pool_cli("--h2c", "-d", "@-", peer.h2c_url + "/up", stdin=blob)
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
    assert p.returncode == 35
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
