"""Module-level ``h2pool.request/get/post/...``: the same calls on the process-wide
default client (`h2pool.default_client`), for scripts and the REPL.

Run in caller threads. A program with many threads, or one that configures TLS,
timeouts or retries, should create its own `h2pool.Client` and share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future

from ._auth import AuthTypes
from ._client import default_client
from ._config import Timeout
from ._content import DataTypes, FilesTypes, ParamTypes
from ._headers import HeaderTypes
from ._prepare import BodyTypes
from ._response import Response

__all__ = ["delete", "get", "head", "options", "patch", "post", "put", "request", "submit"]


def request(
    method: str,
    url: str,
    *,
    params: ParamTypes | None = None,
    headers: HeaderTypes | None = None,
    cookies: Mapping[str, str] | None = None,
    auth: AuthTypes | None = None,
    body: BodyTypes = None,
    json: object = None,
    data: DataTypes | None = None,
    files: FilesTypes | None = None,
    timeout: Timeout | float | None = None,
    stream: bool = False,
    follow_redirects: bool | None = None,
    max_redirects: int | None = None,
) -> Response:
    """``default_client().request(...)``: see `h2pool.Client.request`."""
    return default_client().request(
        method,
        url,
        params=params,
        headers=headers,
        cookies=cookies,
        auth=auth,
        body=body,
        json=json,
        data=data,
        files=files,
        timeout=timeout,
        stream=stream,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
    )


def submit(
    method: str,
    url: str,
    *,
    params: ParamTypes | None = None,
    headers: HeaderTypes | None = None,
    cookies: Mapping[str, str] | None = None,
    auth: AuthTypes | None = None,
    body: BodyTypes = None,
    json: object = None,
    data: DataTypes | None = None,
    files: FilesTypes | None = None,
    timeout: Timeout | float | None = None,
    stream: bool = False,
) -> Future[Response]:
    """``default_client().submit(...)``: see `h2pool.Client.submit`."""
    return default_client().submit(
        method,
        url,
        params=params,
        headers=headers,
        cookies=cookies,
        auth=auth,
        body=body,
        json=json,
        data=data,
        files=files,
        timeout=timeout,
        stream=stream,
    )


def get(
    url: str,
    *,
    params: ParamTypes | None = None,
    headers: HeaderTypes | None = None,
    cookies: Mapping[str, str] | None = None,
    auth: AuthTypes | None = None,
    body: BodyTypes = None,
    json: object = None,
    data: DataTypes | None = None,
    files: FilesTypes | None = None,
    timeout: Timeout | float | None = None,
    stream: bool = False,
    follow_redirects: bool | None = None,
    max_redirects: int | None = None,
) -> Response:
    """``default_client().get(...)``: see `h2pool.Client.request`."""
    return default_client().request(
        "GET",
        url,
        params=params,
        headers=headers,
        cookies=cookies,
        auth=auth,
        body=body,
        json=json,
        data=data,
        files=files,
        timeout=timeout,
        stream=stream,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
    )


def head(
    url: str,
    *,
    params: ParamTypes | None = None,
    headers: HeaderTypes | None = None,
    cookies: Mapping[str, str] | None = None,
    auth: AuthTypes | None = None,
    body: BodyTypes = None,
    json: object = None,
    data: DataTypes | None = None,
    files: FilesTypes | None = None,
    timeout: Timeout | float | None = None,
    stream: bool = False,
    follow_redirects: bool | None = None,
    max_redirects: int | None = None,
) -> Response:
    """``default_client().head(...)``: see `h2pool.Client.request`."""
    return default_client().request(
        "HEAD",
        url,
        params=params,
        headers=headers,
        cookies=cookies,
        auth=auth,
        body=body,
        json=json,
        data=data,
        files=files,
        timeout=timeout,
        stream=stream,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
    )


def options(
    url: str,
    *,
    params: ParamTypes | None = None,
    headers: HeaderTypes | None = None,
    cookies: Mapping[str, str] | None = None,
    auth: AuthTypes | None = None,
    body: BodyTypes = None,
    json: object = None,
    data: DataTypes | None = None,
    files: FilesTypes | None = None,
    timeout: Timeout | float | None = None,
    stream: bool = False,
    follow_redirects: bool | None = None,
    max_redirects: int | None = None,
) -> Response:
    """``default_client().options(...)``: see `h2pool.Client.request`."""
    return default_client().request(
        "OPTIONS",
        url,
        params=params,
        headers=headers,
        cookies=cookies,
        auth=auth,
        body=body,
        json=json,
        data=data,
        files=files,
        timeout=timeout,
        stream=stream,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
    )


def delete(
    url: str,
    *,
    params: ParamTypes | None = None,
    headers: HeaderTypes | None = None,
    cookies: Mapping[str, str] | None = None,
    auth: AuthTypes | None = None,
    body: BodyTypes = None,
    json: object = None,
    data: DataTypes | None = None,
    files: FilesTypes | None = None,
    timeout: Timeout | float | None = None,
    stream: bool = False,
    follow_redirects: bool | None = None,
    max_redirects: int | None = None,
) -> Response:
    """``default_client().delete(...)``: see `h2pool.Client.request`."""
    return default_client().request(
        "DELETE",
        url,
        params=params,
        headers=headers,
        cookies=cookies,
        auth=auth,
        body=body,
        json=json,
        data=data,
        files=files,
        timeout=timeout,
        stream=stream,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
    )


def post(
    url: str,
    body: BodyTypes = None,
    *,
    params: ParamTypes | None = None,
    headers: HeaderTypes | None = None,
    cookies: Mapping[str, str] | None = None,
    auth: AuthTypes | None = None,
    json: object = None,
    data: DataTypes | None = None,
    files: FilesTypes | None = None,
    timeout: Timeout | float | None = None,
    stream: bool = False,
    follow_redirects: bool | None = None,
    max_redirects: int | None = None,
) -> Response:
    """``default_client().post(...)``: see `h2pool.Client.request`."""
    return default_client().request(
        "POST",
        url,
        params=params,
        headers=headers,
        cookies=cookies,
        auth=auth,
        body=body,
        json=json,
        data=data,
        files=files,
        timeout=timeout,
        stream=stream,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
    )


def put(
    url: str,
    body: BodyTypes = None,
    *,
    params: ParamTypes | None = None,
    headers: HeaderTypes | None = None,
    cookies: Mapping[str, str] | None = None,
    auth: AuthTypes | None = None,
    json: object = None,
    data: DataTypes | None = None,
    files: FilesTypes | None = None,
    timeout: Timeout | float | None = None,
    stream: bool = False,
    follow_redirects: bool | None = None,
    max_redirects: int | None = None,
) -> Response:
    """``default_client().put(...)``: see `h2pool.Client.request`."""
    return default_client().request(
        "PUT",
        url,
        params=params,
        headers=headers,
        cookies=cookies,
        auth=auth,
        body=body,
        json=json,
        data=data,
        files=files,
        timeout=timeout,
        stream=stream,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
    )


def patch(
    url: str,
    body: BodyTypes = None,
    *,
    params: ParamTypes | None = None,
    headers: HeaderTypes | None = None,
    cookies: Mapping[str, str] | None = None,
    auth: AuthTypes | None = None,
    json: object = None,
    data: DataTypes | None = None,
    files: FilesTypes | None = None,
    timeout: Timeout | float | None = None,
    stream: bool = False,
    follow_redirects: bool | None = None,
    max_redirects: int | None = None,
) -> Response:
    """``default_client().patch(...)``: see `h2pool.Client.request`."""
    return default_client().request(
        "PATCH",
        url,
        params=params,
        headers=headers,
        cookies=cookies,
        auth=auth,
        body=body,
        json=json,
        data=data,
        files=files,
        timeout=timeout,
        stream=stream,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
    )
