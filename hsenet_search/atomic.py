"""Atomic writes: a file or a directory appears whole under its final name, or not at all.

Every writer in the package goes through this module. A file is written to a temporary name in the
same directory, flushed and ``fsync``-ed, then renamed onto its final name with ``os.replace`` (atomic
on POSIX); with ``durable=True`` (the default) the parent directory is fsynced too, so the rename
survives a power cut. A directory is filled under a temporary name beside its final one and renamed
into place only when the caller's block succeeds (and an optional ``check`` passes).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from hsenet_search.errors import HSENetError


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is renamed onto ``path``.

    Use it for writers that take a file name (``faiss.write_index``, ``pq.write_table``, ``torch.save``).
    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, durable: bool = True, **kwargs: Any) -> Iterator[IO]:
    """``open()`` a temporary file beside ``path`` (mode "w" or "wb"); renamed onto ``path`` on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path, durable=durable) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_text(path: str | Path, text: str, *, durable: bool = True) -> Path:
    with atomic_open(path, "w", durable=durable) as f:
        f.write(text)
    return Path(path)


def _json_value(value: Any) -> Any:
    """numpy scalars and arrays as JSON numbers and lists; anything else through ``str``."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2, durable: bool = True) -> Path:
    """``obj`` as JSON (numpy values as numbers, other non-JSON values through ``str``), written atomically."""
    return write_text(path, json.dumps(obj, indent=indent, default=_json_value) + "\n", durable=durable)


def write_npy(path: str | Path, array: np.ndarray, *, durable: bool = True) -> Path:
    with atomic_open(path, "wb", durable=durable) as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    return Path(path)


def write_parquet(path: str | Path, table, *, durable: bool = True) -> Path:
    """A pyarrow Table or pandas DataFrame as Parquet, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path, durable=durable) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_csv(path: str | Path, frame, *, durable: bool = True) -> Path:
    """A pandas DataFrame as CSV (no index column), written atomically."""
    with atomic_open(path, "w", durable=durable, newline="") as f:
        frame.to_csv(f, index=False)
    return Path(path)


@contextmanager
def atomic_directory(final: str | Path, *, check: Callable[[Path], object] | None = None) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; publish it as ``final`` when the block succeeds.

    ``check(tmp)`` runs before publishing (it raises to refuse). An existing ``final`` is renamed aside
    only then, the new directory renamed into place, and the old one deleted; the caller decides
    beforehand whether ``final`` may be replaced (:mod:`hsenet_search.outputs`). On any error the
    temporary directory is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not final.is_dir():
        raise HSENetError("exists and is not a directory", final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if check is not None:
            check(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists() and _exchange(tmp, final):  # one atomic step: no moment without ``final``
        fsync_dir(final.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}") if final.exists() else None
    if old is not None:
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
