"""Checksums of index files: a fast sampled digest checked on every open, full sha256 on demand.

The manifest records for every file its ``size``, its ``sha256`` and a ``sample`` digest: xxh3-128
over the whole file when it is at most :data:`SAMPLE_BUDGET` bytes, otherwise over the first and last
:data:`SAMPLE_BLOCK` bytes and evenly spaced blocks in between (:data:`SAMPLE_BUDGET` bytes read in
all, whatever the file size). Every open checks sizes and sample digests (``verify="fast"``): a file
truncated, replaced by another index's file or rewritten is refused, while a flipped byte between two
sampled blocks of a large file is only found by the full check (``verify="full"``, ``index verify``),
which re-hashes every byte with sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import xxhash

SAMPLE_BUDGET = 8 << 20
SAMPLE_BLOCK = 64 << 10
VERIFY_MODES = ("size", "fast", "full")


def sha256_file(path: Path) -> str:
    """sha256 of every byte of ``path`` (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _sample_offsets(size: int) -> list[int]:
    if size <= SAMPLE_BUDGET:
        return list(range(0, size, 1 << 22))
    n = SAMPLE_BUDGET // SAMPLE_BLOCK
    last = size - SAMPLE_BLOCK
    return [round(i * last / (n - 1)) for i in range(n)]


def sample_digest(path: Path) -> str:
    """xxh3-128 of the whole file (small files) or of evenly spaced blocks covering both ends (hex)."""
    h = xxhash.xxh3_128()
    size = path.stat().st_size
    h.update(size.to_bytes(8, "little"))
    step = (1 << 22) if size <= SAMPLE_BUDGET else SAMPLE_BLOCK
    with open(path, "rb") as f:
        for offset in _sample_offsets(size):
            f.seek(offset)
            h.update(f.read(step))
    return h.hexdigest()


def file_record(path: Path, *, full: bool = True) -> dict:
    """The manifest entry of one file: size, sample digest and (``full``) sha256."""
    return {
        "size": path.stat().st_size,
        "sample": sample_digest(path),
        "sha256": sha256_file(path) if full else "",
    }


def check_file(path: Path, record: dict, mode: str) -> str | None:
    """The problem with ``path`` against its manifest ``record`` under ``mode``, or None when it matches."""
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size != record["size"]:
        return f"has {size} bytes, the manifest says {record['size']}"
    if mode in ("fast", "full") and record.get("sample") and sample_digest(path) != record["sample"]:
        return "does not match the checksum of the manifest (modified or replaced)"
    if mode == "full" and record.get("sha256") and sha256_file(path) != record["sha256"]:
        return "does not match the sha256 checksum of the manifest"
    return None
