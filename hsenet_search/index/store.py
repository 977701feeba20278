"""The index directory format: manifest, metadata tables, float16 embedding shards, atomic writes.

Layout (documented for users in ``indexes/README.md``)::

    manifest.json        written last; lists every other file with its size and sha256
    volumes.faiss        FAISS index of volume embeddings, id == metadata.parquet row_id
    reports.faiss        FAISS index of unique report texts, id == reports.parquet report_id
    metadata.parquet     one row per volume (row_id, names, split, path, report, report_id, 18 labels, ...)
    reports.parquet      one row per unique report text (report_id, text, ...)
    failures.parquet     volumes that could not be read (volume_name, path, error)
    embeddings/volumes_00000.npy ...   float16 shards, row-aligned with metadata.parquet
    embeddings/reports_00000.npy ...   float16 shards, row-aligned with reports.parquet

A directory is an index only when ``manifest.json`` parses and every file it lists is present with its
recorded size (:func:`is_complete_index`); directories are published with :func:`atomic_directory`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hsenet_search.data.labels import LABELS
from hsenet_search.errors import IndexFormatError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FILES = ("volumes.faiss", "reports.faiss", "metadata.parquet", "reports.parquet", "failures.parquet")
EMBEDDING_STAGES = ("stage1", "stage2", "fusion")
COUNT_KEYS = ("volumes", "scans", "reports", "failures")
SHARD_ROWS = 1 << 20

METADATA_COLUMNS: dict[str, pa.DataType] = {
    "row_id": pa.int64(), "volume_name": pa.string(), "scan_id": pa.string(), "split": pa.string(),
    "path": pa.string(), "findings": pa.string(), "impression": pa.string(), "report_id": pa.int64(),
    **{name: pa.int8() for name in LABELS},
}
"""Required columns of metadata.parquet. Labels: 0/1, -1 when unknown; report_id: -1 without a report."""
METADATA_OPTIONAL_COLUMNS: dict[str, pa.DataType] = {
    "spacing": pa.list_(pa.float64(), 3), "shape": pa.list_(pa.int64(), 3),
}
REPORT_COLUMNS: dict[str, pa.DataType] = {"report_id": pa.int64(), "text": pa.string()}
FAILURE_COLUMNS: dict[str, pa.DataType] = {
    "volume_name": pa.string(), "path": pa.string(), "error": pa.string(),
}


# ----------------------------------------------------------------------------- atomic files and directories
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_directory(final: str | Path, *, require_complete: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; publish it as ``final`` when the block succeeds.

    An existing ``final`` is renamed aside only once the new directory is complete (with
    ``require_complete``: a valid manifest listing present files), then deleted. On any error the
    temporary directory is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not final.is_dir():
        raise IndexFormatError("exists and is not a directory", final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if require_complete:
            open_index_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- manifest
@dataclass
class IndexManifest:
    """Contents of ``manifest.json``: what built the index, how, from what, and which files it holds."""

    format_version: int
    model_fingerprint: str
    model_name: str
    preprocessing_hash: str
    preprocessing: dict
    embedding: str
    dims: dict
    metric: str
    factory: str
    counts: dict
    source: dict
    created: str
    hubness: dict | None = None
    files: dict = field(default_factory=dict)
    report_text: str = "findings+impression"  # the report text embedded (older indexes: findings+impression)

    def model_path(self) -> str:
        """The model name or directory the index was built with (what ``load_model`` takes)."""
        return self.model_name

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: str | Path | None = None) -> IndexManifest:
        """Parse and validate; raises :class:`IndexFormatError` naming ``path`` on any problem."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise IndexFormatError(f"manifest is not valid JSON ({e.msg} at line {e.lineno})", path) from e
        if not isinstance(data, dict):
            raise IndexFormatError("manifest is not a JSON object", path)
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise IndexFormatError(f"manifest has no valid format_version ({version!r})", path)
        if version > FORMAT_VERSION:
            raise IndexFormatError(f"index format {version} is newer than this hsenet-search supports "
                                   f"({FORMAT_VERSION}); upgrade hsenet-search", path)
        known = {f.name: f for f in fields(cls)}
        missing = [name for name, f in known.items() if name not in data and name not in ("hubness", "files", "report_text")]
        if missing:
            raise IndexFormatError(f"manifest lacks {', '.join(missing)}", path)
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        manifest.validate(path)
        return manifest

    def validate(self, path: str | Path | None = None) -> None:
        def need(cond: bool, problem: str) -> None:
            if not cond:
                raise IndexFormatError(f"manifest: {problem}", path)

        for name in ("model_fingerprint", "model_name", "preprocessing_hash", "factory", "created"):
            need(isinstance(getattr(self, name), str), f"{name} must be a string")
        for name in ("preprocessing", "dims", "counts", "source", "files"):
            need(isinstance(getattr(self, name), dict), f"{name} must be an object")
        need(self.hubness is None or isinstance(self.hubness, dict), "hubness must be an object or null")
        need(self.embedding in EMBEDDING_STAGES,
             f"embedding must be one of {EMBEDDING_STAGES}, got {self.embedding!r}")
        need(self.report_text in ("findings", "impression", "findings+impression"),
             f"report_text must be findings, impression or findings+impression, got {self.report_text!r}")
        need(self.metric == "inner_product", f"metric must be 'inner_product', got {self.metric!r}")
        for kind in ("volumes", "reports"):
            d = self.dims.get(kind)
            need(isinstance(d, int) and not isinstance(d, bool) and d > 0,
                 f"dims.{kind} must be a positive integer")
        for key in COUNT_KEYS:
            c = self.counts.get(key)
            need(isinstance(c, int) and not isinstance(c, bool) and c >= 0,
                 f"counts.{key} must be a non-negative integer")
        for name, info in self.files.items():
            need(isinstance(info, dict) and isinstance(info.get("size"), int)
                 and isinstance(info.get("sha256", ""), str), f"files entry {name!r} needs size and sha256")
            need(not Path(name).is_absolute() and ".." not in Path(name).parts,
                 f"file {name!r} is outside the index")

    def write(self, directory: str | Path, *, checksums: bool = True) -> Path:
        """List every file under ``directory`` (size, sha256), then write ``manifest.json`` atomically."""
        directory = Path(directory)
        missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
        if missing:
            raise IndexFormatError(f"cannot write the manifest: {', '.join(missing)} missing", directory)
        listed = {}
        for p in sorted(directory.rglob("*")):
            rel = p.relative_to(directory).as_posix()
            if p.is_file() and rel != MANIFEST and not p.name.startswith("."):
                listed[rel] = {"size": p.stat().st_size, "sha256": _sha256(p) if checksums else ""}
        self.files = listed
        self.validate(directory)
        with atomic_file(directory / MANIFEST) as tmp:
            tmp.write_text(self.to_json() + "\n")
        return directory / MANIFEST


def open_index_dir(path: str | Path, *, verify: bool = False) -> IndexManifest:
    """The manifest of a complete index directory; :class:`IndexFormatError` (one line) otherwise.

    Checks that every file the manifest lists exists with its recorded size; ``verify`` also
    compares sha256 checksums (reads every byte).
    """
    path = Path(path)
    if not path.exists():
        raise IndexFormatError("index directory not found", path)
    if not path.is_dir():
        raise IndexFormatError("not a directory", path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise IndexFormatError("no manifest.json: not an index, or its build did not finish", path)
    manifest = IndexManifest.from_json(mpath.read_text(encoding="utf-8"), mpath)
    absent = [name for name in REQUIRED_FILES if name not in manifest.files]
    if absent:
        raise IndexFormatError(f"manifest does not list {', '.join(absent)}", mpath)
    for name, info in manifest.files.items():
        f = path / name
        if not f.is_file():
            raise IndexFormatError(f"incomplete index: {name} is missing", path)
        if f.stat().st_size != info["size"]:
            raise IndexFormatError(f"incomplete or modified index: {name} has {f.stat().st_size} bytes, "
                                   f"the manifest says {info['size']}", path)
        if verify and info.get("sha256") and _sha256(f) != info["sha256"]:
            raise IndexFormatError(f"corrupt index: checksum of {name} does not match the manifest", path)
    return manifest


def is_complete_index(path: str | Path) -> bool:
    """True when ``path`` holds a manifest whose listed files are all present with their sizes."""
    try:
        open_index_dir(path)
    except IndexFormatError:
        return False
    return True


# ----------------------------------------------------------------------------- embedding shards
def _check_kind(kind: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
        raise IndexFormatError(f"embedding kind {kind!r} must be a lower-case identifier")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def _as_float16(vectors: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise IndexFormatError(f"{what} must be a 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise IndexFormatError(f"{what} contain NaN or inf")
    return np.ascontiguousarray(x, dtype=np.float16)


def write_embeddings(directory: str | Path, kind: str, vectors: np.ndarray, *,
                     rows_per_shard: int = SHARD_ROWS) -> list[Path]:
    """Write ``vectors`` as float16 shards ``embeddings/<kind>_00000.npy``, ... (file order == row order)."""
    _check_kind(kind)
    x = _as_float16(vectors, f"{kind} embeddings")
    out = Path(directory) / "embeddings"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{kind}_*.npy"):
        old.unlink()
    paths = []
    for i, start in enumerate(range(0, max(len(x), 1), rows_per_shard)):
        p = out / f"{kind}_{i:05d}.npy"
        _save_npy(p, x[start:start + rows_per_shard])
        paths.append(p)
    return paths


def _load_shards(paths: Sequence[Path], what: str) -> np.ndarray:
    arrays = []
    for p in paths:
        try:
            a = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise IndexFormatError(f"unreadable embedding shard ({e})", p) from e
        if a.ndim != 2 or (arrays and a.shape[1] != arrays[0].shape[1]):
            raise IndexFormatError(f"embedding shard has shape {a.shape}, unlike the other shards", p)
        arrays.append(a)
    if not arrays:
        raise IndexFormatError(f"no {what} embedding shards")
    out = np.empty((sum(len(a) for a in arrays), arrays[0].shape[1]), dtype=np.float32)
    start = 0
    for a in arrays:
        out[start:start + len(a)] = a
        start += len(a)
    return out


def read_embeddings(directory: str | Path, kind: str) -> np.ndarray:
    """All ``embeddings/<kind>_*.npy`` shards of an index directory, concatenated as float32 (N, D)."""
    _check_kind(kind)
    paths = sorted((Path(directory) / "embeddings").glob(f"{kind}_*.npy"))
    if not paths:
        raise IndexFormatError(f"no embeddings/{kind}_*.npy shards", directory)
    return _load_shards(paths, kind)


class ShardWriter:
    """Writes float16 embedding shards and their rows into a work directory, so a killed build resumes.

    ``append`` buffers rows and writes a shard every ``shard_size`` rows: first ``shard_NNNNNN.npy``
    (float16), then ``shard_NNNNNN.parquet`` (the rows plus their ``_key``), each through a temporary
    file and ``os.replace``. The parquet file marks the shard complete; a shard without it is discarded
    when the writer is reopened with ``resume=True``. ``completed_keys()`` lists the keys on disk.
    """

    KEY = "_key"

    def __init__(self, directory: str | Path, kind: str = "volumes", *, shard_size: int = 256,
                 resume: bool = False):
        _check_kind(kind)
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
        emb = _as_float16(embeddings, "embeddings")
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
        _save_npy(stem.with_suffix(".npy"), np.stack(self._emb[:n]))
        df = pd.DataFrame(self._rows[:n], index=range(n))
        df[self.KEY] = self._keys[:n]
        table = pa.Table.from_pandas(df, preserve_index=False)
        with atomic_file(stem.with_suffix(".parquet")) as tmp:
            pq.write_table(table, tmp)
        del self._keys[:n], self._emb[:n], self._rows[:n]
        self._next += 1

    @classmethod
    def read_all(cls, directory: str | Path, kind: str = "volumes") -> tuple[pd.DataFrame, np.ndarray]:
        """(rows, float32 embeddings) of all complete shards in write order, rows as given to ``append``."""
        shard_dir = cls.shard_dir(directory, kind)
        parts = cls._complete_shards(shard_dir) if shard_dir.is_dir() else []
        if not parts:
            return pd.DataFrame(), np.zeros((0, 0), dtype=np.float32)
        tables = [pq.read_table(p) for p in parts]
        emb = _load_shards([p.with_suffix(".npy") for p in parts], kind)
        if sum(t.num_rows for t in tables) != len(emb):
            raise IndexFormatError("shard rows and embeddings disagree in length", shard_dir)
        rows = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        return rows.drop(columns=[cls.KEY]), emb


# ----------------------------------------------------------------------------- parquet tables
def _write_table(path: str | Path, data: pd.DataFrame | pa.Table, required: dict[str, pa.DataType],
                 optional: dict[str, pa.DataType], id_column: str | None) -> None:
    path = Path(path)
    df = data.to_pandas() if isinstance(data, pa.Table) else pd.DataFrame(data)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise IndexFormatError(f"cannot write {path.name}: missing column(s) {', '.join(missing)}", path)
    if id_column is not None and not np.array_equal(df[id_column].to_numpy(), np.arange(len(df))):
        raise IndexFormatError(f"cannot write {path.name}: {id_column} must be 0..{len(df) - 1} in order",
                               path)
    types = {**required, **optional}
    arrays, names = [], []
    for col in df.columns:
        series = df[col]
        try:
            if col in types and pa.types.is_fixed_size_list(types[col]):
                arr = pa.array([None if v is None else list(v) for v in series], type=types[col])
            else:
                arr = pa.Array.from_pandas(series, type=types.get(col))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
            raise IndexFormatError(f"cannot write {path.name}: column {col!r}: {e}", path) from e
        arrays.append(arr)
        names.append(str(col))
    with atomic_file(path) as tmp:
        pq.write_table(pa.Table.from_arrays(arrays, names=names), tmp)


def _read_table(path: str | Path, required: dict[str, pa.DataType], id_column: str | None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise IndexFormatError("file not found", path)
    try:
        df = pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as e:
        raise IndexFormatError(f"not a readable parquet file ({e})", path) from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise IndexFormatError(f"missing column(s) {', '.join(missing)}", path)
    if id_column is not None and not np.array_equal(df[id_column].to_numpy(), np.arange(len(df))):
        raise IndexFormatError(f"{id_column} is not 0..{len(df) - 1} in order", path)
    return df


def write_metadata(path: str | Path, rows: pd.DataFrame | pa.Table) -> None:
    """Write metadata.parquet (one row per volume, ``row_id`` == FAISS id; extra columns are kept)."""
    _write_table(path, rows, METADATA_COLUMNS, METADATA_OPTIONAL_COLUMNS, "row_id")


def read_metadata(path: str | Path) -> pd.DataFrame:
    return _read_table(path, METADATA_COLUMNS, "row_id")


def write_reports(path: str | Path, rows: pd.DataFrame | pa.Table) -> None:
    """Write reports.parquet (one row per unique embedded text, ``report_id`` == FAISS id)."""
    _write_table(path, rows, REPORT_COLUMNS, {}, "report_id")


def read_reports(path: str | Path) -> pd.DataFrame:
    return _read_table(path, REPORT_COLUMNS, "report_id")


def write_failures(path: str | Path, rows: pd.DataFrame | pa.Table | Sequence[dict]) -> None:
    """Write failures.parquet (volume_name, path, error); an empty table is valid."""
    if not isinstance(rows, (pd.DataFrame, pa.Table)):
        rows = pd.DataFrame(list(rows), columns=list(FAILURE_COLUMNS))
    _write_table(path, rows, FAILURE_COLUMNS, {}, None)


def read_failures(path: str | Path) -> pd.DataFrame:
    return _read_table(path, FAILURE_COLUMNS, None)


def deduplicate_reports(texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(report_id per row, unique texts in first-seen order); texts equal up to whitespace share an id.

    Empty texts get report_id -1 (no report to embed).
    """
    ids = np.full(len(texts), -1, dtype=np.int64)
    unique: dict[str, int] = {}
    for i, text in enumerate(texts):
        norm = " ".join(str(text).split()) if text is not None and text == text else ""
        if norm:
            ids[i] = unique.setdefault(norm, len(unique))
    return ids, list(unique)
