"""On-disk cache of preprocessed tensors, so re-indexing never decodes a file twice.

Entries are keyed by (SHA-256 of the file's bytes — of every file for a DICOM folder —, the profile
hash, the rescale and spacing override) and stored as ``<root>/<profile hash>/<key[:2]>/<key>.npy``.
The content hash is computed once per file version and stored in a sidecar under ``<root>/content/``,
named by the file's identity on disk (path, device, inode, size, mtime and ctime in ns): a warm lookup
costs a ``stat`` and a small read, never a pass over the file; any change to the file changes its
identity, so the hash is recomputed. Writes go to a temporary file in the same folder and are renamed
into place, so readers never see a half-written entry; an unreadable or wrong-shape entry is a cache
miss (warned, recomputed). The root defaults to ``$HSENET_CACHE`` or ``~/.cache/hsenet-search/preprocessed``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsenet_search.atomic import write_npy, write_text
from hsenet_search.errors import VolumeError

if TYPE_CHECKING:
    from .preprocess import Profile

_CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


class CacheWarning(UserWarning):
    """A cache entry could not be used and was recomputed."""


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
            for item in _folder_files(path):
                digest.update(item.name.encode() + b"\0")
                _update(digest, item)
        else:
            _update(digest, path)
    except OSError as exc:
        raise VolumeError(f"cannot be read ({exc.strerror or exc})", path) from exc
    return digest.hexdigest()


def file_identity(path: str | Path) -> str:
    """A digest of where and which version a file (or a folder's files) is: path, device, inode, size,
    mtime and ctime in ns. Rewriting, replacing or touching a file changes it."""
    path = Path(path).resolve()
    try:
        files = _folder_files(path) if path.is_dir() else [path]
        stats = [(f.name, *_stat_fields(f.stat())) for f in files]
    except OSError as exc:
        raise VolumeError(f"cannot be read ({exc.strerror or exc})", path) from exc
    return hashlib.sha256(repr((str(path), stats)).encode()).hexdigest()


def _stat_fields(stat: os.stat_result) -> tuple[int, ...]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _update(digest: Any, file: Path) -> None:
    with open(file, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


class PreprocessCache:
    """Preprocessed tensors on disk, keyed by file content, profile hash and intensity/geometry overrides."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()

    def _sidecar(self, path: str | Path) -> Path:
        identity = file_identity(path)
        return self.root / "content" / identity[:2] / f"{identity}.sha256"

    def _stored_hash(self, sidecar: Path) -> str | None:
        try:
            stored = sidecar.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return stored if len(stored) == 64 and set(stored) <= _HEX else None

    def content_hash(self, path: str | Path) -> str:
        """The file's SHA-256, read from the sidecar for this file version or computed once and stored."""
        sidecar = self._sidecar(path)
        stored = self._stored_hash(sidecar)
        if stored is not None:
            return stored
        digest = content_hash(path)
        write_text(sidecar, digest, durable=False)
        return digest

    def _entry(self, digest: str, profile: Profile, rescale, spacing) -> Path:
        extras = repr((_floats(rescale), _floats(spacing)))
        key = hashlib.sha256(f"{digest}|{profile.hash}|{extras}".encode()).hexdigest()[:32]
        return self.root / profile.hash / key[:2] / f"{key}.npy"

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
        return self._entry(self.content_hash(path), profile, rescale, spacing)

    def holds(
        self,
        path: str | Path,
        profile: Profile,
        rescale: tuple[float, float] | None = None,
        spacing: tuple[float, float, float] | None = None,
    ) -> bool:
        """Whether this version of ``path`` has an entry; never reads the file itself (a ``stat`` and a
        small read), so asking about a file never seen costs nothing."""
        try:
            digest = self._stored_hash(self._sidecar(path))
        except VolumeError:
            return False
        return digest is not None and self._entry(digest, profile, rescale, spacing).is_file()

    def get_or_compute(
        self,
        path: str | Path,
        profile: Profile,
        compute: Callable[[], np.ndarray],
        rescale: tuple[float, float] | None = None,
        spacing: tuple[float, float, float] | None = None,
    ) -> np.ndarray:
        """The cached tensor if present and valid, else ``compute()`` stored atomically and returned."""
        entry = self.entry_path(path, profile, rescale, spacing)
        if entry.is_file():
            cached = _load_entry(entry, (1, *profile.output_shape))
            if cached is not None:
                return cached
        array = np.ascontiguousarray(compute(), dtype=np.float32)
        write_npy(entry, array, durable=False)  # a lost entry is only recomputed
        return array

    def get_or_compute_with_sidecar(
        self,
        path: str | Path,
        profile: Profile,
        compute: Callable[[], tuple[np.ndarray, dict]],
        name: str,
        rescale: tuple[float, float] | None = None,
        spacing: tuple[float, float, float] | None = None,
    ) -> tuple[np.ndarray, dict]:
        """Like :meth:`get_or_compute` for ``compute() -> (tensor, JSON dict)``; the dict is stored beside the
        tensor as ``<key>.<name>.json`` (either file missing or unreadable: both are recomputed)."""
        entry = self.entry_path(path, profile, rescale, spacing)
        sidecar = entry.with_name(f"{entry.stem}.{name}.json")
        if entry.is_file() and sidecar.is_file():
            try:
                extra = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                extra = None
            cached = _load_entry(entry, (1, *profile.output_shape)) if isinstance(extra, dict) else None
            if cached is not None:
                return cached, extra
        array, extra = compute()
        array = np.ascontiguousarray(array, dtype=np.float32)
        write_npy(entry, array, durable=False)
        write_text(sidecar, json.dumps(extra), durable=False)
        return array, extra


def _load_entry(entry: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The entry's array, or None (warned, entry removed) when it is unreadable or not float32 ``shape``."""
    try:
        array = np.load(entry, allow_pickle=False)
        problem = (
            None
            if array.shape == shape and array.dtype == np.float32
            else f"holds {array.dtype} {list(array.shape)}, expected float32 {list(shape)}"
        )
    except (OSError, ValueError, EOFError) as exc:
        array, problem = None, f"unreadable ({exc})"
    if problem is None:
        return array
    warnings.warn(f"{entry}: cache entry {problem}; recomputing it", CacheWarning, stacklevel=3)
    entry.unlink(missing_ok=True)
    return None


def _floats(values: tuple[float, ...] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(round(float(v), 9) for v in values)
