"""The SOCKS5 messages (RFC 1928, username/password auth RFC 1929) as bytes, no I/O.

Pure functions that build the client's messages and check the proxy's answers; the
dialer (``_dial.py``) sends and reads them on the I/O thread. A check that fails raises
`SocksError` with the reason in words; the dialer turns it into ``ConnectError``
naming the proxy, so it never reaches the caller.
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "AUTH_NONE",
    "AUTH_USERPASS",
    "SocksError",
    "auth_request",
    "check_auth_reply",
    "check_connect_reply",
    "check_greeting_reply",
    "connect_reply_length",
    "connect_request",
    "greeting",
]

VERSION = 5
AUTH_NONE = 0x00
AUTH_USERPASS = 0x02  # RFC 1929
_NO_ACCEPTABLE = 0xFF
_CMD_CONNECT = 0x01
_ATYP_IPV4 = 0x01
_ATYP_DOMAIN = 0x03
_ATYP_IPV6 = 0x04

# RFC 1928 §6, REP field; X'09' to X'FF' are unassigned.
REPLY_NAMES = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}

_METHOD_NAMES = {AUTH_NONE: "no authentication", AUTH_USERPASS: "username/password"}


class SocksError(Exception):
    """The exchange cannot go on: the proxy refused, answered something that is not
    SOCKS5, or the origin cannot be named in a request. The message says which."""


def greeting(with_credentials: bool) -> bytes:
    """The method-selection message: no authentication, and username/password when the
    proxy URL carries credentials (the proxy picks one, RFC 1928 §3)."""
    methods = [AUTH_NONE, AUTH_USERPASS] if with_credentials else [AUTH_NONE]
    return bytes([VERSION, len(methods), *methods])


def check_greeting_reply(reply: bytes, with_credentials: bool) -> int:
    """The method the proxy chose (2 bytes: VER, METHOD), checked against those offered."""
    if reply[0] != VERSION:
        raise SocksError(f"answered the greeting with {reply!r}, which is not SOCKS5")
    method = reply[1]
    if method == _NO_ACCEPTABLE:
        if not with_credentials:
            raise SocksError("requires authentication (give user:password in the proxy URL)")
        raise SocksError(
            "accepts none of the offered authentication methods"
            " (no authentication, username/password)"
        )
    if method == AUTH_NONE or (method == AUTH_USERPASS and with_credentials):
        return method
    name = _METHOD_NAMES.get(method, f"0x{method:02x}")
    raise SocksError(f"chose authentication method {name}, which was not offered")


def auth_request(user: str, password: str) -> bytes:
    """RFC 1929 §2: VER 1, ULEN, UNAME, PLEN, PASSWD (lengths checked by ProxyConfig)."""
    uname = user.encode("utf-8")
    passwd = password.encode("utf-8")
    return bytes([1, len(uname)]) + uname + bytes([len(passwd)]) + passwd


def check_auth_reply(reply: bytes) -> None:
    """RFC 1929 §2: VER, STATUS; 0 is success. Some servers answer VER 5, not 1."""
    if reply[0] not in (1, VERSION):
        raise SocksError(f"answered the authentication with {reply!r}, which is not SOCKS5")
    if reply[1] != 0:
        raise SocksError(f"rejected the credentials from the proxy URL (status {reply[1]})")


def connect_request(host: str, port: int) -> bytes:
    """CONNECT to ``host`` (an IP literal is sent as an address, ATYP 1 or 4; anything
    else as a name for the proxy to resolve, ATYP 3) and ``port``."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        ip = None
    if ip is not None:
        atyp = _ATYP_IPV4 if ip.version == 4 else _ATYP_IPV6
        addr = bytes([atyp]) + ip.packed
    else:
        try:
            name = host.encode("idna") if not host.isascii() else host.encode("ascii")
        except UnicodeError:
            raise SocksError(f"cannot ask for {host!r}: not a valid host name") from None
        if not 0 < len(name) <= 255:
            raise SocksError(f"cannot ask for {host!r}: a SOCKS5 host name is 1-255 bytes")
        addr = bytes([_ATYP_DOMAIN, len(name)]) + name
    return bytes([VERSION, _CMD_CONNECT, 0]) + addr + port.to_bytes(2, "big")


def connect_reply_length(head: bytes) -> int:
    """How many bytes the CONNECT reply has, given its first ``len(head)`` bytes.

    VER REP RSV ATYP BND.ADDR BND.PORT, where BND.ADDR's length depends on ATYP. Returns
    ``len(head)`` once enough is known to judge the reply: a refusal or a reply that is
    not SOCKS5 is judged on what has arrived, without waiting for the rest (reading
    stops exactly at the reply's end: later bytes belong to the tunnel).
    """
    if len(head) < 2:
        return 2
    if head[0] != VERSION or head[1] != 0:
        return len(head)
    if len(head) < 5:
        return 5
    atyp = head[3]
    if atyp == _ATYP_IPV4:
        return 4 + 4 + 2
    if atyp == _ATYP_IPV6:
        return 4 + 16 + 2
    if atyp == _ATYP_DOMAIN:
        return 4 + 1 + head[4] + 2
    return len(head)  # unknown ATYP: judged (and refused) by check_connect_reply


def check_connect_reply(reply: bytes, dest: str) -> None:
    """Raise unless ``reply`` is a complete, successful CONNECT reply (REP 0)."""
    if reply[0] != VERSION:
        raise SocksError(f"answered CONNECT {dest} with {reply[:16]!r}, which is not SOCKS5")
    rep = reply[1]
    if rep != 0:
        name = REPLY_NAMES.get(rep, "unassigned reply code")
        raise SocksError(f"refused CONNECT {dest}: {name} (reply {rep})")
    if reply[3] not in (_ATYP_IPV4, _ATYP_IPV6, _ATYP_DOMAIN):
        raise SocksError(
            f"answered CONNECT {dest} with unknown address type {reply[3]} (not SOCKS5)"
        )
