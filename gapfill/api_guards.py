"""What a request must pass before any handler reads it: a size limit and, on a server that
listens beyond this machine, a token.

Both are ASGI middleware so that they answer before a byte of the body is read: a 50 MiB
upload from a client without the token is refused at once, not parsed first.

The token: `gapfill serve` binds 127.0.0.1 unless told otherwise and then needs none. Bound
to any other address, it requires `Authorization: Bearer $GAPFILL_API_TOKEN` on every request
that changes the server's state (every POST, and `GET evaluate-quality`, which writes new
fills and runs for minutes); reading the status, gaps, models and fills stays open. Without
the variable, `serve` refuses to start. A server started by `uvicorn --factory
gapfill.api:app_factory` cannot know its address: it requires the token whenever the
variable is set.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

TOKEN_ENV = "GAPFILL_API_TOKEN"
MIN_TOKEN_CHARS = 16  # a guessable token is no protection on an open port
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and 'localhost'.
    Any other name counts as reachable from outside (the safe answer for a name that
    resolves differently tomorrow)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[] ")).is_loopback
    except ValueError:
        return False


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The token in $GAPFILL_API_TOKEN, or None when unset or empty; `ValueError` when too short."""
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{TOKEN_ENV} is {len(token)} characters; use at least {MIN_TOKEN_CHARS}, e.g. "
                         "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return token or None


def serving_token(host: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The token a server bound to `host` must require: None on loopback, else the one in
    $GAPFILL_API_TOKEN; `ValueError`, saying what to set, when that is missing."""
    if is_loopback(host):
        return None
    token = token_from_env(environ)
    if token is None:
        raise ValueError(
            f"--host {host} is reachable from other machines, so every request that changes the server "
            f"needs a token: set {TOKEN_ENV} to a secret of at least {MIN_TOKEN_CHARS} characters (e.g. "
            f"`export {TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')`) and send "
            "it as 'Authorization: Bearer <token>'; or serve on 127.0.0.1"
        )
    return token


class BearerToken:
    """401, as JSON, for a state-changing request without `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, token: str, protected_reads: frozenset[str] = frozenset()) -> None:
        self.app, self.protected_reads = app, protected_reads
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (scope["method"] not in SAFE_METHODS
                                        or scope["path"].rstrip("/") in self.protected_reads):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):  # constant time: no guessing by timing
                problem = "a wrong token" if given else "no token"
                response = JSONResponse(
                    {"detail": f"this request changes the server and came with {problem}: send "
                               f"'Authorization: Bearer <token>' with the token in the server's {TOKEN_ENV}"},
                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class ContentLengthLimit:
    """413, as JSON, for a body whose declared length is over the route's limit, before any of
    it is read. (FastAPI's `max_body_size` also counts undeclared, chunked bodies, but answers a
    declared one in plain text.)"""

    def __init__(self, app: Any, limits: dict[str, int], default: int) -> None:
        self.app, self.limits, self.default = app, limits, default

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            limit = self.limits.get(scope["path"].rstrip("/"), self.default)
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > limit:
                response = JSONResponse({"detail": f"the request body is over the limit of {limit} bytes"}, 413)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)
