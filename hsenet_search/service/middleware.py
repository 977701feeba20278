"""The outer ASGI layer: body size and silence limits, per-endpoint metrics, and a last-resort catch so that
no request ever gets a 500 (an unexpected error is logged with its traceback and answered 503)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from starlette.exceptions import HTTPException

from .metrics import Metrics

log = logging.getLogger("hsenet_search.service")


class BodyError(HTTPException):
    """A request body over its limit (413) or too slow to arrive (408)."""


def json_error(status: int, detail: str, kind: str, headers: dict[str, str] | None = None):
    body = json.dumps({"detail": " ".join(detail.split()), "type": kind}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class Guard:
    """Pure ASGI middleware around the whole app."""

    def __init__(self, app, *, metrics: Metrics, upload_limit: int, json_limit: int, body_timeout_s: float):
        self.app = app
        self.metrics = metrics
        self.upload_limit = upload_limit
        self.json_limit = json_limit
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        limit = self.upload_limit if multipart else self.json_limit
        status = {"code": 0}

        async def send_tracked(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        async def reply(code: int, detail: str, kind: str, extra: dict[str, str] | None = None):
            for message in json_error(code, detail, kind, extra):
                await send_tracked(message)

        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = -1
        if declared < 0:
            await reply(400, "malformed Content-Length header", "BodyError")
        elif declared > limit:
            await reply(413, f"request body of {declared} bytes is over the limit of {limit} bytes", "BodyError")
        else:
            try:
                await self.app(scope, self._limited(receive, limit), send_tracked)
            except Exception as exc:  # noqa: BLE001 - the last resort: log it, never answer 500
                if status["code"]:
                    log.exception("error after the response started: %s %s", scope["method"], scope["path"])
                else:
                    ref = uuid.uuid4().hex[:8]
                    log.exception("unexpected error %s on %s %s", ref, scope["method"], scope["path"])
                    await reply(
                        503,
                        f"the server could not complete this request ({type(exc).__name__}; "
                        f"logged as {ref}); retry later",
                        "ServiceError",
                        {"Retry-After": "5"},
                    )
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or ("static" if status["code"] < 400 else "unmatched")
        self.metrics.observe(endpoint, scope["method"], status["code"] or 503, time.perf_counter() - start)

    def _limited(self, receive, limit: int):
        received = 0
        done = False

        async def limited_receive():
            nonlocal received, done
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError as exc:
                raise BodyError(408, f"no request body data for {self.body_timeout_s:g} s") from exc
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyError(413, f"request body is over the limit of {limit} bytes")
                done = not message.get("more_body", False)
            return message

        return limited_receive
