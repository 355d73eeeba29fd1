"""Credentials added to an outgoing request: ``auth=`` on a request or on the Client.

Runs in the caller's thread, before anything is queued. ``Authorization`` is sent
never-indexed (RFC 7541 §7.1.3) like every credential header, and dropped when a
redirect leaves the origin (see `h2pool._redirects`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from ._outgoing import Request

__all__ = ["Auth", "AuthTypes", "BasicAuth", "BearerAuth", "resolve_auth"]


class Auth:
    """Base class of request authenticators: `apply` edits the outgoing request.

    Subclass it (or pass any callable taking the `h2pool.Request`) to add a
    signature, a token from a cache, and so on. It runs in the thread that makes the
    request, once per request, before the request hooks.
    """

    def apply(self, request: Request) -> None:
        raise NotImplementedError


class BasicAuth(Auth):
    """``Authorization: Basic`` (RFC 7617), user and password encoded as UTF-8."""

    __slots__ = ("_value",)

    def __init__(self, username: str | bytes, password: str | bytes) -> None:
        user = username.encode("utf-8") if isinstance(username, str) else username
        pw = password.encode("utf-8") if isinstance(password, str) else password
        if not isinstance(user, bytes) or not isinstance(pw, bytes):
            raise TypeError("auth=(username, password) takes str or bytes")
        if b":" in user:
            raise ValueError("a Basic auth user name cannot contain ':' (RFC 7617 §2)")
        self._value = "Basic " + base64.b64encode(user + b":" + pw).decode("ascii")

    def apply(self, request: Request) -> None:
        request.headers["authorization"] = self._value

    @property
    def header(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<BasicAuth ***>"


class BearerAuth(Auth):
    """``Authorization: Bearer <token>`` (RFC 6750)."""

    __slots__ = ("_value",)

    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or not token:
            raise TypeError("BearerAuth needs a non-empty str token")
        self._value = "Bearer " + token

    def apply(self, request: Request) -> None:
        request.headers["authorization"] = self._value

    @property
    def header(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<BearerAuth ***>"


class _FunctionAuth(Auth):
    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[Request], object]) -> None:
        self._fn = fn

    def apply(self, request: Request) -> None:
        self._fn(request)


AuthTypes = Union[tuple[Union[str, bytes], Union[str, bytes]], Auth, Callable[["Request"], object]]


def resolve_auth(auth: AuthTypes | None) -> Auth | None:
    """The `Auth` for an ``auth=`` argument; raises ``TypeError`` for others."""
    if auth is None or isinstance(auth, Auth):
        return auth
    if isinstance(auth, tuple):
        if len(auth) != 2:
            raise TypeError("auth= tuple must be (username, password)")
        return BasicAuth(auth[0], auth[1])
    if callable(auth):
        return _FunctionAuth(auth)
    raise TypeError(
        "auth= must be (username, password), an h2pool.Auth, or a callable taking the "
        f"request, not {type(auth).__name__}"
    )
