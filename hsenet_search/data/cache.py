"""On-disk cache of preprocessed tensors, so re-indexing never decodes a file twice.

Entries are keyed by (SHA-256 of the file's bytes — of every file for a DICOM folder —, the profile
hash, the rescale and spacing override) and stored as ``<root>/<profile hash>/<key[:2]>/<key>.npy``.
Writes go to a temporary file in the same folder and are renamed into place, so readers never see a
half-written entry. The root defaults to ``$HSENET_CACHE`` or ``~/.cache/hsenet-search/preprocessed``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsenet_search.atomic import write_npy
from hsenet_search.errors import VolumeError

if TYPE_CHECKING:
    from .preprocess import Profile

_CHUNK = 1 << 20


def default_cache_root() -> Path:
    """``$HSENET_CACHE`` if set, else ``~/.cache/hsenet-search/preprocessed``."""
    env = os.environ.get("HSENET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hsenet-search" / "preprocessed"


def content_hash(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes, or of a folder's files (names and bytes, sorted by name)."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        if path.is_dir():
            for item in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
                digest.update(item.name.encode() + b"\0")
                _update(digest, item)
        else:
            _update(digest, path)
    except OSError as exc:
        raise VolumeError(f"cannot be read ({exc.strerror or exc})", path) from exc
    return digest.hexdigest()


def _update(digest: Any, file: Path) -> None:
    with open(file, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


class PreprocessCache:
    """Preprocessed tensors on disk, keyed by file content, profile hash and intensity/geometry overrides."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self._hashes: dict[tuple[str, int, int], str] = {}

    def _content_hash(self, path: Path) -> str:
        """Content hash, remembered for this cache object while the file's size and mtime are unchanged."""
        stat = path.stat()
        memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if memo not in self._hashes:
            self._hashes[memo] = content_hash(path)
        return self._hashes[memo]

    def entry_path(
        self,
        path: str | Path,
        profile: Profile,
        rescale: tuple[float, float] | None = None,
        spacing: tuple[float, float, float] | None = None,
    ) -> Path:
        """Where the tensor of ``path`` under ``profile`` (with these overrides) is stored."""
        path = Path(path)
        if not path.exists():
            raise VolumeError("no such file or folder", path)
        extras = repr((_floats(rescale), _floats(spacing)))
        key = hashlib.sha256(f"{self._content_hash(path)}|{profile.hash}|{extras}".encode()).hexdigest()[:32]
        return self.root / profile.hash / key[:2] / f"{key}.npy"

    def get_or_compute(
        self,
        path: str | Path,
        profile: Profile,
        compute: Callable[[], np.ndarray],
        rescale: tuple[float, float] | None = None,
        spacing: tuple[float, float, float] | None = None,
    ) -> np.ndarray:
        """The cached tensor if present (and readable), else ``compute()`` stored atomically and returned."""
        entry = self.entry_path(path, profile, rescale, spacing)
        if entry.is_file():
            try:
                return np.load(entry, allow_pickle=False)
            except (OSError, ValueError, EOFError):
                entry.unlink(missing_ok=True)  # unreadable entry (e.g. disk error): recompute it
        array = np.ascontiguousarray(compute(), dtype=np.float32)
        write_npy(entry, array, durable=False)  # a lost entry is only recomputed
        return array


def _floats(values: tuple[float, ...] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(round(float(v), 9) for v in values)
