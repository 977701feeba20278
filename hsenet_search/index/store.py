"""The index directory format: manifest, metadata tables, float16 embedding shards, atomic writes.

Layout (documented for users in ``indexes/README.md``)::

    manifest.json        written last; lists every other file with its size, sample digest and sha256
    volumes.faiss        FAISS index of volume embeddings, id == metadata.parquet row_id
    reports.faiss        FAISS index of unique report texts, id == reports.parquet report_id
    metadata.parquet     one row per volume (row_id, names, split, path, report, report_id, 18 labels, ...)
    reports.parquet      one row per unique report text (report_id, text, ...)
    failures.parquet     volumes that could not be read (volume_name, path, error)
    embeddings/volumes_00000.npy ...   float16 shards, row-aligned with metadata.parquet
    embeddings/reports_00000.npy ...   float16 shards, row-aligned with reports.parquet

A directory is an index only when ``manifest.json`` parses and every file it lists is present with its
recorded size and sample digest (:func:`open_index_dir`, :mod:`.integrity`); index directories are
published whole with :func:`hsenet_search.atomic.atomic_directory`. Embedding shards written during a
build (``ShardWriter``) belong to the build side: :mod:`.shards`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hsenet_search.atomic import atomic_open, write_parquet, write_text
from hsenet_search.data.labels import LABELS
from hsenet_search.errors import IndexFormatError

from .integrity import VERIFY_MODES, check_file, file_record

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FILES = ("volumes.faiss", "reports.faiss", "metadata.parquet", "reports.parquet", "failures.parquet")
EMBEDDING_STAGES = ("stage1", "stage2", "fusion")
COUNT_KEYS = ("volumes", "scans", "reports", "failures")
SHARD_ROWS = 1 << 20

METADATA_COLUMNS: dict[str, pa.DataType] = {
    "row_id": pa.int64(),
    "volume_name": pa.string(),
    "scan_id": pa.string(),
    "split": pa.string(),
    "path": pa.string(),
    "findings": pa.string(),
    "impression": pa.string(),
    "report_id": pa.int64(),
    **{name: pa.int8() for name in LABELS},
}
"""Required columns of metadata.parquet. Labels: 0/1, -1 when unknown; report_id: -1 without a report."""
METADATA_OPTIONAL_COLUMNS: dict[str, pa.DataType] = {
    "spacing": pa.list_(pa.float64(), 3),
    "shape": pa.list_(pa.int64(), 3),
}
REPORT_COLUMNS: dict[str, pa.DataType] = {"report_id": pa.int64(), "text": pa.string()}
FAILURE_COLUMNS: dict[str, pa.DataType] = {
    "volume_name": pa.string(),
    "path": pa.string(),
    "error": pa.string(),
}


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
    trained_on: dict | None = None
    """Vectors each FAISS index was trained on (``index add`` retrains past a growth limit)."""
    report_text: str = "findings+impression"  # the report text embedded (older indexes: findings+impression)
    bridge: dict | None = None
    """A bridged (CMKI) model's index: ``{"method": "cmki", "bank_size": N, "volume_layout": ...}``; volume
    vectors are stored as ``[plain, bank] / sqrt 2`` (see :mod:`hsenet_search.models.bridge`), so text →
    volume and volume → report use BrgSA's bridged score, volume → volume the plain cosine. Absent: plain
    cosine everywhere."""

    def model_path(self) -> str:
        """The model name or directory the index was built with (what ``load_model`` takes)."""
        return self.model_name

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["bridge"] is None:
            del data["bridge"]
        return data

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
            raise IndexFormatError(
                f"index format {version} is newer than this hsenet-search supports "
                f"({FORMAT_VERSION}); upgrade hsenet-search",
                path,
            )
        known = {f.name: f for f in fields(cls)}
        optional = ("hubness", "files", "trained_on", "report_text", "bridge")
        missing = [name for name in known if name not in data and name not in optional]
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
        need(self.trained_on is None or isinstance(self.trained_on, dict), "trained_on must be an object or null")
        need(self.embedding in EMBEDDING_STAGES, f"embedding must be one of {EMBEDDING_STAGES}, got {self.embedding!r}")
        need(
            self.report_text in ("findings", "impression", "findings+impression"),
            f"report_text must be findings, impression or findings+impression, got {self.report_text!r}",
        )
        need(self.metric == "inner_product", f"metric must be 'inner_product', got {self.metric!r}")
        for kind in ("volumes", "reports"):
            d = self.dims.get(kind)
            need(isinstance(d, int) and not isinstance(d, bool) and d > 0, f"dims.{kind} must be a positive integer")
        need(self.bridge is None or isinstance(self.bridge, dict), "bridge must be an object or null")
        if self.bridge is not None:
            method = self.bridge.get("method")
            need(method == "cmki", f"bridge.method must be 'cmki', got {method!r}")
            need(
                self.dims["volumes"] == 2 * self.dims["reports"],
                "a bridged index stores volumes at twice the report width ([plain, bank] / sqrt 2)",
            )
        for key in COUNT_KEYS:
            c = self.counts.get(key)
            need(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0,
                f"counts.{key} must be a non-negative integer",
            )
        for name, info in self.files.items():
            need(
                isinstance(info, dict)
                and isinstance(info.get("size"), int)
                and isinstance(info.get("sha256", ""), str)
                and isinstance(info.get("sample", ""), str),
                f"files entry {name!r} needs size and sha256",
            )
            need(not Path(name).is_absolute() and ".." not in Path(name).parts, f"file {name!r} is outside the index")

    def write(self, directory: str | Path, *, checksums: bool = True, known: dict | None = None) -> Path:
        """List every file under ``directory`` (size, sample digest, sha256), then write ``manifest.json``.

        ``known``: records of files carried over unchanged (hard links of a previous index's shards), reused
        instead of re-hashing when the size matches.
        """
        directory = Path(directory)
        missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
        if missing:
            raise IndexFormatError(f"cannot write the manifest: {', '.join(missing)} missing", directory)
        listed = {}
        for p in sorted(directory.rglob("*")):
            rel = p.relative_to(directory).as_posix()
            if p.is_file() and rel != MANIFEST and not p.name.startswith("."):
                old = (known or {}).get(rel)
                same = old is not None and old.get("size") == p.stat().st_size and old.get("sample")
                listed[rel] = dict(old) if same else file_record(p, full=checksums)
        self.files = listed
        self.validate(directory)
        return write_text(directory / MANIFEST, self.to_json() + "\n")


def open_index_dir(path: str | Path, *, verify: str | bool = "fast") -> IndexManifest:
    """The manifest of a complete, unmodified index directory; :class:`IndexFormatError` (one line) otherwise.

    ``verify``: ``"size"`` checks that every listed file exists with its recorded size; ``"fast"`` (the
    default, a few milliseconds whatever the index size) also compares each file's sample digest;
    ``"full"`` (or True) also re-hashes every byte with sha256 (what ``index verify`` runs).
    """
    mode = {True: "full", False: "size"}.get(verify, verify) if isinstance(verify, bool) else verify
    if mode not in VERIFY_MODES:
        raise IndexFormatError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
    path = Path(path)
    if not path.exists():
        raise IndexFormatError("index directory not found", path)
    if not path.is_dir():
        raise IndexFormatError("not a directory", path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise IndexFormatError("no manifest.json: not an index, or its build did not finish", path)
    try:
        text = mpath.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"unreadable manifest ({e.__class__.__name__})", mpath) from e
    manifest = IndexManifest.from_json(text, mpath)
    absent = [name for name in REQUIRED_FILES if name not in manifest.files]
    if absent:
        raise IndexFormatError(f"manifest does not list {', '.join(absent)}", mpath)
    for name, info in manifest.files.items():  # all presence and sizes first: the cheap, common failures
        problem = check_file(path / name, info, "size")
        if problem is not None:
            raise IndexFormatError(f"incomplete or modified index: {name} {problem}", path)
    for name, info in manifest.files.items() if mode != "size" else ():
        problem = check_file(path / name, info, mode)
        if problem is not None:
            raise IndexFormatError(
                f"corrupt or modified index: {name} {problem}; rebuild the index or restore it from a backup", path
            )
    return manifest


def is_complete_index(path: str | Path) -> bool:
    """True when ``path`` holds a manifest whose listed files are all present with their sizes."""
    try:
        open_index_dir(path)
    except IndexFormatError:
        return False
    return True


# ----------------------------------------------------------------------------- embedding shards
def check_kind(kind: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
        raise IndexFormatError(f"embedding kind {kind!r} must be a lower-case identifier")


def as_float16(vectors: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise IndexFormatError(f"{what} must be a 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise IndexFormatError(f"{what} contain NaN or inf")
    return np.ascontiguousarray(x, dtype=np.float16)


CHUNK_ROWS = 1 << 16
"""Rows per block when the build streams embeddings (64 K rows: 64 MB of float32 at d = 256)."""


@dataclass(frozen=True)
class _Part:
    """Rows ``lo:hi`` of one ``.npy`` file (read with plain file reads at an offset) or of an array."""

    source: Path | np.ndarray
    lo: int
    hi: int
    offset: int = 0  # byte offset of row 0 in the file
    dtype: np.dtype | None = None
    dim: int = 0

    def read(self, a: int, b: int) -> np.ndarray:
        """Rows ``lo + a : lo + b`` as a new float32 array."""
        if isinstance(self.source, np.ndarray):
            return np.array(self.source[self.lo + a : self.lo + b], dtype=np.float32)
        row = self.dim * self.dtype.itemsize
        try:
            x = np.fromfile(self.source, self.dtype, (b - a) * self.dim, offset=self.offset + (self.lo + a) * row)
        except (OSError, ValueError) as e:
            raise IndexFormatError(f"unreadable embedding shard ({e})", self.source) from e
        if x.size != (b - a) * self.dim:
            raise IndexFormatError("embedding shard is shorter than its header says", self.source)
        return x.reshape(b - a, self.dim).astype(np.float32)


def _npy_part(path: Path) -> _Part:
    """The header of a 2-D float ``.npy`` file: its rows, width, dtype and data offset (no data read)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (OSError, ValueError) as e:
        raise IndexFormatError(f"unreadable embedding shard ({e})", path) from e
    if len(shape) != 2 or fortran or dtype.kind != "f":
        raise IndexFormatError(f"embedding shard is not a 2-D float array (shape {shape}, {dtype})", path)
    if path.stat().st_size < offset + shape[0] * shape[1] * dtype.itemsize:
        raise IndexFormatError("embedding shard is shorter than its header says", path)
    return _Part(path, 0, shape[0], offset, dtype, shape[1])


class EmbeddingShards:
    """Row-ordered embeddings spread over ``.npy`` shards (or arrays), read a block at a time as float32.

    Nothing is loaded or mapped whole: :meth:`chunks` reads :data:`CHUNK_ROWS` rows at a time with plain
    file reads at their offset, so one pass over any number of rows holds one block. ``a + b`` chains two
    sources (``index add``: the previous index's shards, then the new ones) without copying.
    """

    def __init__(self, parts: Sequence[Path | np.ndarray | _Part], what: str = "embeddings"):
        self.what = what
        self.parts: list[_Part] = []
        for p in parts:
            if isinstance(p, np.ndarray):
                if p.ndim != 2:
                    raise IndexFormatError(f"{what} must be a 2-D array, got shape {p.shape}")
                p = _Part(p, 0, len(p), dim=p.shape[1])
            part = p if isinstance(p, _Part) else _npy_part(Path(p))
            if self.parts and part.dim != self.parts[0].dim:
                where = part.source if isinstance(part.source, Path) else None
                raise IndexFormatError(
                    f"{what} have width {part.dim}, unlike the {self.parts[0].dim} before them", where
                )
            self.parts.append(part)

    def __len__(self) -> int:
        return sum(p.hi - p.lo for p in self.parts)

    @property
    def dim(self) -> int:
        return self.parts[0].dim if self.parts else 0

    def __add__(self, other: EmbeddingShards) -> EmbeddingShards:
        return EmbeddingShards([*self.parts, *other.parts], self.what)

    def tail(self, start: int) -> EmbeddingShards:
        """The rows from ``start`` on (a view: nothing is read)."""
        parts, skip = [], start
        for p in self.parts:
            n = p.hi - p.lo
            if skip < n:
                parts.append(_Part(p.source, p.lo + skip, p.hi, p.offset, p.dtype, p.dim))
            skip = max(0, skip - n)
        if not parts and self.parts:  # nothing left: an empty part keeps the width
            last = self.parts[-1]
            parts.append(_Part(last.source, last.hi, last.hi, last.offset, last.dtype, last.dim))
        return EmbeddingShards(parts, self.what)

    def _blocks(self, rows: int | None) -> Iterator[tuple[int, _Part, int, int]]:
        """``(first row, part, a, b)`` of each block, nothing read yet."""
        rows = rows or CHUNK_ROWS
        start = 0
        for p in self.parts:
            for a in range(0, p.hi - p.lo, rows):
                yield start + a, p, a, min(a + rows, p.hi - p.lo)
            start += p.hi - p.lo

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, float32 block)`` of at most ``rows`` (default :data:`CHUNK_ROWS`) rows, in order."""
        for start, part, a, b in self._blocks(rows):
            yield start, part.read(a, b)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The float32 rows at the positions ``rows`` (any order), gathered in one pass over the blocks."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexFormatError(f"row {int(rows.max())} is outside the {len(self)} {self.what}")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        for start, part, a, b in self._blocks(None):
            lo, hi = np.searchsorted(wanted, [start, start + b - a])
            if hi > lo:  # blocks holding none of the rows are not read
                out[order[lo:hi]] = part.read(a, b)[wanted[lo:hi] - start]
        return out

    def sample(self, size: int, seed: int = 0) -> np.ndarray:
        """All rows in order when there are at most ``size``, else ``size`` rows drawn uniformly (sorted)."""
        n = len(self)
        pick = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
        return self.take(pick)

    def to_array(self) -> np.ndarray:
        """All rows as one float32 (N, D) array (for callers that need them in memory)."""
        out = np.empty((len(self), self.dim), dtype=np.float32)
        for start, block in self.chunks():
            out[start : start + len(block)] = block
        return out


def as_shards(vectors: np.ndarray | EmbeddingShards, what: str = "embeddings") -> EmbeddingShards:
    return vectors if isinstance(vectors, EmbeddingShards) else EmbeddingShards([np.asarray(vectors)], what)


@contextmanager
def npy_writer(path: str | Path, rows: int, dim: int, dtype: str = "<f2") -> Iterator[Callable[[np.ndarray], None]]:
    """Write a ``(rows, dim)`` ``.npy`` file block by block (atomically, same bytes as ``np.save``); the
    yielded function appends a block; the file is refused unless exactly ``rows`` rows were appended."""
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (rows, dim)}
    written = 0
    with atomic_open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)

        def append(block: np.ndarray) -> None:
            nonlocal written
            block = np.ascontiguousarray(block, dtype=dtype)
            if block.ndim != 2 or block.shape[1] != dim or written + len(block) > rows:
                raise IndexFormatError(f"block of shape {block.shape} does not fit a ({rows}, {dim}) file", path)
            f.write(block.tobytes())
            written += len(block)

        yield append
        if written != rows:
            raise IndexFormatError(f"{written} rows written of the {rows} announced", path)


def write_embeddings(
    directory: str | Path,
    kind: str,
    vectors: np.ndarray | EmbeddingShards,
    *,
    rows_per_shard: int = SHARD_ROWS,
    first_shard: int = 0,
) -> list[Path]:
    """Write ``vectors`` as float16 shards ``embeddings/<kind>_00000.npy``, ... (file order == row order),
    streaming them a block at a time from ``vectors`` (an array or :class:`EmbeddingShards`).

    ``first_shard`` > 0 appends shards after existing ones (``index add``); 0 replaces all shards of ``kind``.
    """
    check_kind(kind)
    source = as_shards(vectors, f"{kind} embeddings")
    out = Path(directory) / "embeddings"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    n = len(source)
    for i, start in enumerate(range(0, max(n, 1), rows_per_shard), start=first_shard):
        p = out / f"{kind}_{i:05d}.npy"
        piece = source.tail(start)
        rows = min(rows_per_shard, n - start)
        with npy_writer(p, rows, source.dim) as append:
            for first, block in piece.chunks(min(rows_per_shard, CHUNK_ROWS)):
                if first >= rows:
                    break
                append(as_float16(block[: rows - first], f"{kind} embeddings"))
        paths.append(p)
    if first_shard == 0:  # shards of an earlier, longer write
        for old in set(out.glob(f"{kind}_*.npy")) - set(paths):
            old.unlink()
    return paths


def open_embeddings(directory: str | Path, kind: str) -> EmbeddingShards:
    """The ``embeddings/<kind>_*.npy`` shards of an index directory, to be read block by block."""
    check_kind(kind)
    paths = sorted((Path(directory) / "embeddings").glob(f"{kind}_*.npy"))
    if not paths:
        raise IndexFormatError(f"no embeddings/{kind}_*.npy shards", directory)
    return EmbeddingShards(paths, kind)


def read_embeddings(directory: str | Path, kind: str) -> np.ndarray:
    """All ``embeddings/<kind>_*.npy`` shards of an index directory, concatenated as float32 (N, D)."""
    return open_embeddings(directory, kind).to_array()


# ----------------------------------------------------------------------------- parquet tables
def _write_table(
    path: str | Path,
    data: pd.DataFrame | pa.Table,
    required: dict[str, pa.DataType],
    optional: dict[str, pa.DataType],
    id_column: str | None,
) -> None:
    path = Path(path)
    df = data.to_pandas() if isinstance(data, pa.Table) else pd.DataFrame(data)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise IndexFormatError(f"cannot write {path.name}: missing column(s) {', '.join(missing)}", path)
    if id_column is not None and not np.array_equal(df[id_column].to_numpy(), np.arange(len(df))):
        raise IndexFormatError(f"cannot write {path.name}: {id_column} must be 0..{len(df) - 1} in order", path)
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
    write_parquet(path, pa.Table.from_arrays(arrays, names=names))


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
