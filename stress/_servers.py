"""A throw-away nginx (HTTP/2 over TLS) on loopback for ``stress/bench.py``.

Everything lives in one temporary directory (prefix, config, pid, logs, temp
paths, certificates, the 100 MiB file) which is removed on exit. nginx runs in
the foreground (``daemon off``) as our child process, so it dies with us even if
cleanup is skipped; ``Nginx.stop()`` is idempotent and also registered with
``atexit``.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SMALL_BODY = b"hello, world\n"  # 13 bytes, served as /13b
BIG_SIZE = 100 * 1024 * 1024  # /100m
MIB_SIZE = 1024 * 1024  # /1m
GIB_SIZE = 1024 * 1024 * 1024  # /1g: sparse (all zeros), costs no disk and no time to make
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;  # info: shows why nginx drops a client
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/t_body;
    proxy_temp_path {tmp}/t_proxy;
    fastcgi_temp_path {tmp}/t_fastcgi;
    uwsgi_temp_path {tmp}/t_uwsgi;
    scgi_temp_path {tmp}/t_scgi;
    default_type application/octet-stream;
    # 1e6 (the usual "infinite") is reached by h2load in ~5 s on ONE connection, after
    # which nginx sends GOAWAY and h2load -c 1 stops: so effectively unlimited here.
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 128;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name localhost;
        ssl_certificate {tmp}/server.pem;
        ssl_certificate_key {tmp}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;
        location = /13b {{
            default_type text/plain;
            return 200 "hello, world\\n";
        }}
        location = /100m {{
            root {tmp}/www;
        }}
        location = /1m {{
            root {tmp}/www;
        }}
        location = /1g {{
            root {tmp}/www;
        }}
        # Uploads: WebDAV PUT stores the whole body (temp file, then rename) before
        # answering 201/204, so the client's upload is timed to the last byte. A plain
        # `return 200` would answer at once and make nginx drop the body unread.
        location /upload/ {{
            root {tmp}/up;
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
            client_body_buffer_size 1m;
        }}
    }}
    server {{
        # plain-HTTP side door used only by the harness to read connection counters
        listen 127.0.0.1:{status_port};
        location = /status {{
            stub_status;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nginx did not listen on {port} within {timeout}s")


@dataclass
class Nginx:
    workers: str = "1"
    tmp: Path = field(init=False)
    port: int = field(init=False, default=0)
    status_port: int = field(init=False, default=0)
    ca_path: str = field(init=False, default="")
    proc: subprocess.Popen[bytes] | None = field(init=False, default=None)

    @property
    def base(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def upload_dir(self) -> Path:
        """Where ``PUT /upload/NAME`` stores NAME."""
        return self.tmp / "up" / "upload"

    @property
    def base_ip(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        import trustme

        self.tmp = Path(tempfile.mkdtemp(prefix="h2pool-bench-"))
        # nginx workers drop to an unprivileged user when we run as root: let them
        # traverse the (0700) temp dir and read www/ (ca/key files stay root-only).
        self.tmp.chmod(0o711)
        atexit.register(self.stop)
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        self.ca_path = str(self.tmp / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        cert.private_key_pem.write_to_path(str(self.tmp / "server.key"))
        (self.tmp / "server.key").chmod(0o600)  # read by the nginx master only
        cert.cert_chain_pems[0].write_to_path(str(self.tmp / "server.pem"))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(self.tmp / "server.pem"), append=True)
        www = self.tmp / "www"
        www.mkdir(mode=0o755)
        (www / "13b").write_bytes(SMALL_BODY)
        (www / "1m").write_bytes(os.urandom(MIB_SIZE))
        with open(www / "1g", "wb") as f:
            f.truncate(GIB_SIZE)
        up = self.tmp / "up"
        up.mkdir()
        up.chmod(0o777)  # nginx workers may run as an unprivileged user
        chunk = os.urandom(1024 * 1024)  # incompressible; the same MiB repeated
        with open(www / "100m", "wb") as f:
            for _ in range(BIG_SIZE // len(chunk)):
                f.write(chunk)
        self.port = free_port()
        self.status_port = free_port()
        conf = self.tmp / "nginx.conf"
        conf.write_text(
            CONF.format(
                tmp=self.tmp, port=self.port, status_port=self.status_port, workers=self.workers
            )
        )
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.tmp), "-c", str(conf), "-e", str(self.tmp / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "stderr.log", "wb"),  # noqa: SIM115 - child owns it
            start_new_session=True,  # Ctrl-C goes to us only; we stop nginx ourselves
        )
        try:
            wait_port(self.port, self.proc)
            wait_port(self.status_port, self.proc)
        except Exception:
            log = (self.tmp / "stderr.log").read_text(errors="replace")
            self.stop()
            raise RuntimeError(f"nginx failed to start:\n{log}") from None
        return self

    def accepts(self) -> int | None:
        """Total connections nginx has accepted so far (stub_status), or None."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.status_port, timeout=5)
            conn.request("GET", "/status")
            text = conn.getresponse().read().decode()
            conn.close()
            # "Active connections: 1 \nserver accepts handled requests\n 5 5 9 \n..."
            return int(text.splitlines()[2].split()[0])
        except Exception:
            return None

    _log_pos: int = field(init=False, default=0)

    def new_log_lines(self) -> list[str]:
        """error.log lines since the previous call, minus routine connection chatter."""
        try:
            with open(self.tmp / "error.log", "rb") as f:
                f.seek(self._log_pos)
                data = f.read()
                self._log_pos = f.tell()
        except OSError:
            return []
        boring = (
            "while SSL handshaking",
            "waiting for request",
            "[notice]",
            "keepalive connection",
            "client closed connection",
            "Connection reset by peer",
            "Broken pipe",
        )
        return [
            line
            for line in data.decode(errors="replace").splitlines()
            if line.strip() and not any(b in line for b in boring)
        ]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        tmp = getattr(self, "tmp", None)
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
