"""Test PKI made with trustme: a trusted CA, an untrusted one, and leaf certs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class CertPair:
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class PKI:
    ca: trustme.CA  # the CA that clients are told to trust
    ca_path: Path  # its certificate, PEM
    server: CertPair  # leaf for localhost and 127.0.0.1, signed by ``ca``
    other_host: CertPair  # leaf for other.test only, signed by ``ca``
    untrusted_ca: trustme.CA  # a CA nobody trusts
    untrusted_ca_path: Path
    untrusted_server: CertPair  # leaf for localhost and 127.0.0.1, signed by ``untrusted_ca``


def _write_leaf(leaf: trustme.LeafCert, directory: Path, name: str) -> CertPair:
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    leaf.private_key_pem.write_to_path(str(key_path))
    # Leaf first, then the intermediates: what nginx and nghttpd expect.
    with cert_path.open("wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    return CertPair(cert_path, key_path)


def make_pki(directory: Path) -> PKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    untrusted = trustme.CA()
    untrusted_ca_path = directory / "untrusted-ca.pem"
    untrusted.cert_pem.write_to_path(str(untrusted_ca_path))
    return PKI(
        ca=ca,
        ca_path=ca_path,
        server=_write_leaf(ca.issue_cert("localhost", "127.0.0.1"), directory, "server"),
        other_host=_write_leaf(ca.issue_cert("other.test"), directory, "other"),
        untrusted_ca=untrusted,
        untrusted_ca_path=untrusted_ca_path,
        untrusted_server=_write_leaf(
            untrusted.issue_cert("localhost", "127.0.0.1"), directory, "untrusted"
        ),
    )
