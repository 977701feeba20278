"""Build side: resumable float16 embedding shards written while a build or an ``add`` encodes volumes."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from hsenet_search.atomic import write_npy, write_parquet
from hsenet_search.errors import IndexFormatError

from .store import EmbeddingShards, as_float16, check_kind


class ShardWriter:
    """Writes float16 embedding shards and their rows into a work directory, so a killed build resumes.

    ``append`` buffers rows and writes a shard every ``shard_size`` rows: first ``shard_NNNNNN.npy``
    (float16), then ``shard_NNNNNN.parquet`` (the rows plus their ``_key``), each through a temporary
    file and ``os.replace``. The parquet file marks the shard complete; a shard without it is discarded
    when the writer is reopened with ``resume=True``. ``completed_keys()`` lists the keys on disk.
    """

    KEY = "_key"

    def __init__(self, directory: str | Path, kind: str = "volumes", *, shard_size: int = 256, resume: bool = False):
        check_kind(kind)
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        self.dir = self.shard_dir(directory, kind)
        self.shard_size = shard_size
        if self.dir.exists() and not resume:
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stray in self.dir.glob(".*"):  # temporary files of an interrupted write
            stray.unlink()
        for npy in self.dir.glob("shard_*.npy"):
            if not npy.with_suffix(".parquet").exists():
                npy.unlink()
        done = self._complete_shards(self.dir)
        self._next = int(done[-1].stem.split("_")[1]) + 1 if done else 0
        self._dim: int | None = None
        self._keys: list[str] = []
        self._emb: list[np.ndarray] = []
        self._rows: list[dict] = []

    @staticmethod
    def shard_dir(directory: str | Path, kind: str) -> Path:
        return Path(directory) / f"{kind}_shards"

    @staticmethod
    def _complete_shards(shard_dir: Path) -> list[Path]:
        return sorted(shard_dir.glob("shard_*.parquet"))

    def completed_keys(self) -> set[str]:
        """Keys of the rows already written to complete shards."""
        keys: set[str] = set()
        for p in self._complete_shards(self.dir):
            keys.update(pq.read_table(p, columns=[self.KEY]).column(self.KEY).to_pylist())
        return keys

    def append(self, keys: Sequence[str], embeddings: np.ndarray, rows: Sequence[dict] | None = None) -> None:
        """Buffer ``embeddings`` (n, D) with their ``keys`` and metadata ``rows``; writes full shards."""
        emb = as_float16(embeddings, "embeddings")
        rows = list(rows) if rows is not None else [{} for _ in keys]
        if not (len(keys) == len(emb) == len(rows)):
            raise IndexFormatError(f"append got {len(keys)} keys, {len(emb)} embeddings and {len(rows)} rows")
        if self._dim is None:
            self._dim = emb.shape[1]
        elif emb.shape[1] != self._dim:
            raise IndexFormatError(f"embedding dimension {emb.shape[1]} differs from the earlier {self._dim}")
        self._keys.extend(str(k) for k in keys)
        self._emb.extend(emb)
        self._rows.extend(rows)
        while len(self._keys) >= self.shard_size:
            self._write(self.shard_size)

    def flush(self) -> None:
        """Write the buffered rows as a (short) shard."""
        if self._keys:
            self._write(len(self._keys))

    close = flush

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.flush()

    def _write(self, n: int) -> None:
        stem = self.dir / f"shard_{self._next:06d}"
        write_npy(stem.with_suffix(".npy"), np.stack(self._emb[:n]))
        df = pd.DataFrame(self._rows[:n], index=range(n))
        df[self.KEY] = self._keys[:n]
        write_parquet(stem.with_suffix(".parquet"), df)
        del self._keys[:n], self._emb[:n], self._rows[:n]
        self._next += 1

    @classmethod
    def read(cls, directory: str | Path, kind: str = "volumes") -> tuple[pd.DataFrame, EmbeddingShards]:
        """(rows as given to ``append``, their embeddings) of all complete shards in write order; the
        embeddings stay on disk (:class:`~.store.EmbeddingShards`, read block by block)."""
        shard_dir = cls.shard_dir(directory, kind)
        parts = cls._complete_shards(shard_dir) if shard_dir.is_dir() else []
        if not parts:
            return pd.DataFrame(), EmbeddingShards([], kind)
        tables = [pq.read_table(p) for p in parts]
        emb = EmbeddingShards([p.with_suffix(".npy") for p in parts], kind)
        if sum(t.num_rows for t in tables) != len(emb):
            raise IndexFormatError("shard rows and embeddings disagree in length", shard_dir)
        rows = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        return rows.drop(columns=[cls.KEY]), emb
