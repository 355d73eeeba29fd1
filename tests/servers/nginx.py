"""An unprivileged nginx 1.22 with several HTTP/2 listeners on 127.0.0.1.

Runs in the foreground (``daemon off``) with its own prefix, pid file, logs
and temp paths under a temporary directory, so it never touches /etc/nginx
and works as root or as a normal user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .certs import CertPair
from .util import free_port, stop_process, wait_for_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# Helper locations shared by every listener. Header echoes use ``always`` so
# they also appear on non-2xx answers.
_LOCATIONS = """
        location = /echo-headers {
            add_header X-Echo-UA $http_user_agent always;
            add_header X-Echo-Test $http_x_test always;
            add_header X-Echo-Host $host always;
            add_header X-Echo-Method $request_method always;
            add_header X-Echo-Accept $http_accept always;
            add_header X-Echo-Authorization $http_authorization always;
            add_header X-Echo-Cookie $http_cookie always;
            return 200 "echo\\n";
        }
        location = /204 { return 204; }
        location = /ka1 {
            keepalive_timeout 1s;
            return 200 "short keep-alive\\n";
        }
        location = /404 { return 404; }
        location = /500 { return 500; }
        location = /discard {
            client_max_body_size 0;
            add_header X-Echo-Method $request_method always;
            return 200 "discarded\\n";
        }
        location /gzip/ {
            gzip on;
            gzip_types *;
            gzip_min_length 0;
            rewrite ^/gzip/(.*)$ /$1 break;
        }
        location = /r/301 { return 301 /echo-headers; }
        location = /r/302 { return 302 /echo-headers; }
        location = /r/303 { return 303 /echo-headers; }
        location = /r/307 { return 307 /discard; }
        location = /r/308 { return 308 /discard; }
        location = /r/307-to { return 307 $arg_to; }
        location = /r/loop { return 302 /r/loop; }
        location = /r/chain3 { return 302 /r/chain2; }
        location = /r/chain2 { return 302 /r/chain1; }
        location = /r/chain1 { return 302 /13b; }
        location = /r/relative { return 302 "13b"; }
        location / { }
"""


@dataclass
class NginxServer:
    proc: subprocess.Popen[bytes]
    prefix: Path
    https_port: int  # TLS + h2 (ALPN h2, http/1.1)
    h2c_port: int  # cleartext h2 with prior knowledge only
    http1_tls_port: int  # TLS without http2: ALPN never picks h2
    goaway100_port: int  # TLS + h2, keepalive_requests 100: GOAWAY after 100 streams
    mcs4_port: int  # TLS + h2, http2_max_concurrent_streams 4
    # TLS + h2, http2_max_concurrent_streams 16 and keepalive_requests 100: a low stream
    # limit (common: 16-100) with connection rotation, where refusals pile up.
    low16_port: int

    @property
    def port(self) -> int:
        return self.https_port

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def h2c_url(self) -> str:
        return f"http://127.0.0.1:{self.h2c_port}"

    @property
    def http1_tls_url(self) -> str:
        return f"https://localhost:{self.http1_tls_port}"

    @property
    def goaway100_url(self) -> str:
        return f"https://localhost:{self.goaway100_port}"

    @property
    def mcs4_url(self) -> str:
        return f"https://localhost:{self.mcs4_port}"

    @property
    def low16_url(self) -> str:
        return f"https://localhost:{self.low16_port}"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def stop(self) -> None:
        stop_process(self.proc)


def _config(prefix: Path, docroot: Path, cert: CertPair, ports: dict[str, int]) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "\n".join(
        f"    {name}_temp_path {prefix / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )

    def server(listen: str, extra: str = "") -> str:
        return f"""
    server {{
        listen {listen};
        server_name localhost;
        root {docroot};
{extra}{_LOCATIONS}
        # WebDAV PUT stores request bodies under {prefix}/put/, served back by GET.
        location /put/ {{
            root {prefix};
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
            client_body_buffer_size 1m;
        }}
    }}"""

    servers = "".join(
        [
            server(f"127.0.0.1:{ports['https']} ssl http2"),
            server(f"127.0.0.1:{ports['h2c']} http2"),
            server(f"127.0.0.1:{ports['http1_tls']} ssl"),
            server(
                f"127.0.0.1:{ports['goaway100']} ssl http2", "        keepalive_requests 100;\n"
            ),
            server(
                f"127.0.0.1:{ports['mcs4']} ssl http2", "        http2_max_concurrent_streams 4;\n"
            ),
            server(
                f"127.0.0.1:{ports['low16']} ssl http2",
                "        http2_max_concurrent_streams 16;\n        keepalive_requests 100;\n",
            ),
        ]
    )
    return f"""{user}worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temps}
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 128;
    ssl_certificate {cert.cert_path};
    ssl_certificate_key {cert.key_path};
    ssl_protocols TLSv1.2 TLSv1.3;
{servers}
}}
"""


def start_nginx(prefix: Path, docroot: Path, cert: CertPair) -> NginxServer:
    prefix.mkdir(parents=True, exist_ok=True)
    names = ("https", "h2c", "http1_tls", "goaway100", "mcs4", "low16")
    ports = {name: free_port() for name in names}
    conf = prefix / "nginx.conf"
    conf.write_text(_config(prefix, docroot, cert, ports))
    log = prefix / "stderr.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = NginxServer(
        proc=proc,
        prefix=prefix,
        https_port=ports["https"],
        h2c_port=ports["h2c"],
        http1_tls_port=ports["http1_tls"],
        goaway100_port=ports["goaway100"],
        mcs4_port=ports["mcs4"],
        low16_port=ports["low16"],
    )
    try:
        for port in ports.values():
            wait_for_port(port, proc, log=log)
    except BaseException:
        server.stop()
        raise
    return server


def restart_nginx(server: NginxServer) -> NginxServer:
    """Start nginx again with ``server``'s configuration and ports (after it died)."""
    conf = server.prefix / "nginx.conf"
    log = server.prefix / "stderr.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [NGINX, "-p", str(server.prefix), "-c", str(conf), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ports = (
        server.https_port,
        server.h2c_port,
        server.http1_tls_port,
        server.goaway100_port,
        server.mcs4_port,
        server.low16_port,
    )
    restarted = NginxServer(proc, server.prefix, *ports)
    try:
        for port in ports:
            wait_for_port(port, proc, log=log)
    except BaseException:
        restarted.stop()
        raise
    return restarted
