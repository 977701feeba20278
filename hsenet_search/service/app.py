"""The app factory: routers, error handlers (every error a one-line JSON 4xx, or 503 when busy), middleware."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from hsenet_search.errors import (
    DatasetError,
    HSENetError,
    IndexFormatError,
    IndexMismatchError,
    ModelError,
    QueryError,
    VolumeError,
)

from .config import ServiceConfig
from .middleware import Guard
from .pool import Overloaded
from .routers import cases, generate, search, system, web
from .security import token_dependency
from .state import NotFound, ServiceState

log = logging.getLogger("hsenet_search.service")

STATUS: tuple[tuple[type[HSENetError], int], ...] = (
    (NotFound, 404),
    (VolumeError, 422),
    (DatasetError, 422),
    (QueryError, 400),
    (IndexMismatchError, 409),
    (IndexFormatError, 409),
    (ModelError, 409),
    (HSENetError, 400),
)


def _error(status: int, detail: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": " ".join(str(detail).split()), "type": kind}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid value')}"


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HSENetError)
    async def user_error(_request: Request, exc: HSENetError):
        status = next(code for cls, code in STATUS if isinstance(exc, cls))
        return _error(status, str(exc), type(exc).__name__)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        request.app.state.service.metrics.rejected.inc()
        return _error(503, str(exc), "Overloaded", {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        return _error(422, _validation_message(exc), "ValidationError")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException):
        status = exc.status_code if 400 <= exc.status_code < 500 else 503
        return _error(status, str(exc.detail), "HTTPError", getattr(exc, "headers", None))


def create_app(config: ServiceConfig, state: ServiceState | None = None, *, token: str | None = None) -> FastAPI:
    """The app over ``state`` (loaded from ``config.indexes`` when not given); ``token``: required bearer."""
    state = state if state is not None else ServiceState.load(config)
    app = FastAPI(
        title="hsenet-search",
        version="0.1.0",
        description="Cross-modal chest-CT ⇄ report search. Errors are JSON `{detail, type}`.",
    )
    app.state.service = state
    add_error_handlers(app)
    protected = [Depends(token_dependency(token))]
    app.include_router(system.public)
    app.include_router(web.make_router())
    for router in (system.router, search.router, cases.router, generate.router):
        app.include_router(router, dependencies=protected)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        Guard,
        metrics=state.metrics,
        upload_limit=config.max_upload_bytes,
        json_limit=config.max_json_bytes,
        body_timeout_s=config.body_timeout_s,
    )
    return app
