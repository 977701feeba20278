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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hsenet_search.atomic import write_npy, write_parquet, write_text
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


def write_embeddings(
    directory: str | Path, kind: str, vectors: np.ndarray, *, rows_per_shard: int = SHARD_ROWS, first_shard: int = 0
) -> list[Path]:
    """Write ``vectors`` as float16 shards ``embeddings/<kind>_00000.npy``, ... (file order == row order).

    ``first_shard`` > 0 appends shards after existing ones (``index add``); 0 replaces all shards of ``kind``.
    """
    check_kind(kind)
    x = as_float16(vectors, f"{kind} embeddings")
    out = Path(directory) / "embeddings"
    out.mkdir(parents=True, exist_ok=True)
    if first_shard == 0:
        for old in out.glob(f"{kind}_*.npy"):
            old.unlink()
    paths = []
    for i, start in enumerate(range(0, max(len(x), 1), rows_per_shard), start=first_shard):
        p = out / f"{kind}_{i:05d}.npy"
        write_npy(p, x[start : start + rows_per_shard])
        paths.append(p)
    return paths


def load_shards(paths: Sequence[Path], what: str) -> np.ndarray:
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
        out[start : start + len(a)] = a
        start += len(a)
    return out


def read_embeddings(directory: str | Path, kind: str) -> np.ndarray:
    """All ``embeddings/<kind>_*.npy`` shards of an index directory, concatenated as float32 (N, D)."""
    check_kind(kind)
    paths = sorted((Path(directory) / "embeddings").glob(f"{kind}_*.npy"))
    if not paths:
        raise IndexFormatError(f"no embeddings/{kind}_*.npy shards", directory)
    return load_shards(paths, kind)


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
