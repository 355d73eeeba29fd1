"""nghttpd (nghttp2's reference server) on 127.0.0.1, TLS and cleartext h2c."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .certs import CertPair
from .util import free_port, stop_process, wait_for_port

NGHTTPD = shutil.which("nghttpd") or "/usr/bin/nghttpd"


@dataclass
class NghttpdServer:
    https_port: int
    h2c_port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.https_port

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def h2c_url(self) -> str:
        return f"http://127.0.0.1:{self.h2c_port}"

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def start_nghttpd(
    workdir: Path, docroot: Path, cert: CertPair, extra: tuple[str, ...] = ()
) -> NghttpdServer:
    """Start one TLS and one ``--no-tls`` nghttpd serving ``docroot``.

    ``extra`` is passed to both, e.g. ``("--echo-upload",)``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    server = NghttpdServer(https_port=free_port(), h2c_port=free_port())
    common = [NGHTTPD, "--address=127.0.0.1", f"--htdocs={docroot}", *extra]
    tls_log, h2c_log = workdir / "nghttpd-tls.log", workdir / "nghttpd-h2c.log"
    try:
        tls = _spawn(
            [*common, str(server.https_port), str(cert.key_path), str(cert.cert_path)], tls_log
        )
        server.procs.append(tls)
        h2c = _spawn([*common, "--no-tls", str(server.h2c_port)], h2c_log)
        server.procs.append(h2c)
        wait_for_port(server.https_port, tls, log=tls_log)
        wait_for_port(server.h2c_port, h2c, log=h2c_log)
    except BaseException:
        server.stop()
        raise
    return server
