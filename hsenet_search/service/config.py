"""Service settings."""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1 << 30


@dataclass
class ServiceConfig:
    """How ``hsenet-search serve`` runs: indexes, bind address, auth, limits."""

    indexes: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # bearer token; required for a non-loopback host
    insecure_no_auth: bool = False  # explicit opt-out of the token rule
    max_upload_bytes: int = 2 * GIB  # multipart uploads (compressed size on the wire)
    max_json_bytes: int = 1 << 20  # JSON bodies
    max_unpacked_bytes: int = 4 * GIB  # decompressed .gz / zip content of one upload
    max_zip_members: int = 5000
    workers: int = 2  # CPU-bound jobs running at once
    queue: int = 8  # jobs waiting for a worker before the server answers 503
    job_timeout_s: float = 120.0  # a job running longer answers 503 (the worker finishes it)
    body_timeout_s: float = 30.0  # the longest silence while a request body is received
    slice_cache: int = 512  # rendered PNGs kept in memory
    volume_cache: int = 4  # decoded volumes kept in memory for slice rendering
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off
    llm: str = "default"
    device: str = "auto"
