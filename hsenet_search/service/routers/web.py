"""The web viewer: static files read from the package once at start-up and served from memory."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.exceptions import HTTPException

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def load_static() -> dict[str, bytes]:
    folder = resources.files("hsenet_search.service") / "static"
    return {
        item.name: item.read_bytes()
        for item in folder.iterdir()
        if item.is_file() and any(item.name.endswith(s) for s in TYPES)
    }


def make_router() -> APIRouter:
    files = load_static()
    router = APIRouter(include_in_schema=False)

    def serve(name: str) -> Response:
        if name not in files:
            raise HTTPException(404, f"no static file {name[:80]!r}")
        suffix = name[name.rfind(".") :]
        return Response(files[name], media_type=TYPES[suffix], headers=SECURITY_HEADERS)

    @router.get("/")
    def page():
        return serve("index.html")

    @router.get("/static/{name}")
    def static(name: str):
        return serve(name)

    return router
