"""Access rules: bearer token (constant-time compare) and which bind addresses need one."""

from __future__ import annotations

import hmac
import ipaddress
import os

from fastapi import Request
from starlette.exceptions import HTTPException

from hsenet_search.errors import HSENetError

TOKEN_ENV = "HSENET_TOKEN"


class BindError(HSENetError):
    """A bind address / token combination that would expose the service without authentication."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(token: str | None, host: str, insecure_no_auth: bool) -> str | None:
    """The token the server will require (``--token`` or ``$HSENET_TOKEN``); refuses an open non-local bind."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 16:
        raise BindError("the token must be at least 16 characters")
    if token is None and not is_loopback(host) and not insecure_no_auth:
        raise BindError(
            f"--host {host} is reachable from other machines: give --token (or ${TOKEN_ENV}), "
            "or pass --insecure-no-auth explicitly"
        )
    return token


def token_dependency(token: str | None):
    """A FastAPI dependency: 401 unless the ``Authorization: Bearer`` header carries ``token``."""
    expected = token.encode() if token else None

    async def require_token(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(
                401,
                "missing bearer token (Authorization: Bearer TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return require_token
