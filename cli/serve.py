"""``hsenet-search serve``: the search service and web viewer on uvicorn."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console


def serve(
    index: list[Path] = typer.Option(..., "--index", help="Index directory (repeatable)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address; a non-loopback one requires a token."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    token: str | None = typer.Option(None, "--token", help="Bearer token clients must send (or $HSENET_TOKEN)."),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth", help="Allow a non-loopback host without a token (not recommended)."
    ),
    max_upload_mb: int = typer.Option(2048, "--max-upload-mb", min=1, help="Largest upload accepted."),
    workers: int = typer.Option(2, "--workers", min=1, help="CPU-bound jobs running at once."),
    queue: int = typer.Option(8, "--queue", min=0, help="Jobs waiting for a worker before answering 503."),
    timeout: float = typer.Option(120.0, "--timeout", min=1.0, help="Seconds one job may take."),
    cors: list[str] = typer.Option([], "--cors-origin", help="Allow this browser origin (CORS off by default)."),
    llm: str = typer.Option("default", "--llm", help="LLM for POST /generate in llm mode."),
) -> None:
    """Serve search, case viewing and drafting over HTTP (OpenAPI at /docs, web viewer at /)."""
    import uvicorn

    from hsenet_search.service import ServiceConfig, create_app
    from hsenet_search.service.security import resolve_token
    from hsenet_search.service.state import ServiceState

    config = ServiceConfig(
        indexes=[str(p) for p in index],
        host=host,
        port=port,
        token=token,
        insecure_no_auth=insecure_no_auth,
        max_upload_bytes=max_upload_mb << 20,
        workers=workers,
        queue=queue,
        job_timeout_s=timeout,
        cors_origins=list(cors),
        llm=llm,
    )
    required = resolve_token(token, host, insecure_no_auth)
    with console.status("loading indexes"):
        state = ServiceState.load(config)
    app = create_app(config, state, token=required)
    names = ", ".join(f"{name} ({loaded.engine.volumes.ntotal} volumes)" for name, loaded in state.indexes.items())
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"serving {names} on http://{shown}:{port}/  (API docs /docs; "
        f"{'bearer token required' if required else 'no token'})"
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=5,
        limit_concurrency=workers + queue + 64,
        timeout_graceful_shutdown=5,
    )
