"""SearchEngine: the query side of an index directory.

``SearchEngine.open(index_dir)`` loads the FAISS indexes (memory-mapped, read-only, on GPU when
one is present), the Parquet metadata and the model that built the index (refusing any other
model). Text → volume, volume → volume, volume → report and report → report queries return
typed hits. Label filters are FAISS ID selectors; reconstructions of one scan are collapsed.

An index built with a bridged (CMKI) model scores text → volume and volume → report with BrgSA's bridged
score and volume → volume, report → report with the plain cosine (:mod:`hsenet_search.models.bridge`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hsenet_search.data.labels import LABELS
from hsenet_search.devices import resolve_device
from hsenet_search.errors import QueryError

from .index.compat import check_model_matches
from .index.faiss_backend import VectorIndex
from .index.hubness import HubnessNormalizer, rerank
from .index.store import IndexManifest, open_index_dir, read_metadata

TARGETS = ("volumes", "reports")
MAX_K = 1000
MAX_QUERY_CHARS = 20000
HUBNESS_CANDIDATES = 10
HIT_COLUMNS = ("volume_name", "scan_id", "findings", "impression", "split", "path", "report_id")


@dataclass
class Hit:
    """One search result: a volume (scan) or a report, with its case metadata."""

    rank: int
    score: float
    volume_name: str
    scan_id: str
    findings: str
    impression: str
    labels: list[str]
    split: str = ""
    path: str = ""
    row_id: int = -1
    report_id: int = -1
    volumes: list[str] = field(default_factory=list)  # for report hits: the volumes carrying this report
    where: dict | None = None  # text queries with a localisation head: {image_number, z_mm} of the query

    def to_json(self) -> dict:
        data = asdict(self)
        if self.where is None:
            del data["where"]
        return data


@dataclass
class SearchResult:
    """Hits sorted by score (best first) for one query."""

    query: str | dict
    target: str
    hits: list[Hit]

    def to_json(self) -> dict:
        return {"query": self.query, "target": self.target, "hits": [h.to_json() for h in self.hits]}


SearchParams = str | dict[str, float] | None
"""Per-query FAISS search parameters (see :meth:`VectorIndex.search`)."""


class SearchEngine:
    """Queries one index directory with the model that built it."""

    def __init__(
        self,
        index_dir: Path,
        manifest: IndexManifest,
        model,
        volumes: VectorIndex,
        reports: VectorIndex,
        metadata: pd.DataFrame,
        hubness: dict[str, HubnessNormalizer],
    ):
        self.index_dir = index_dir
        self.manifest = manifest
        self.model = model
        self.volumes = volumes
        self.reports = reports
        self.metadata = metadata
        self.hubness = hubness
        self._by_report = metadata.groupby("report_id").indices
        self._max_recons = int(metadata.groupby("scan_id").size().max()) if len(metadata) else 1
        # plain column arrays: building k hits must cost microseconds, not pandas row look-ups
        self._col = {c: metadata[c].to_numpy() for c in HIT_COLUMNS}
        self._label_matrix = metadata[list(LABELS)].to_numpy(dtype=np.int8) if len(metadata) else np.zeros((0, 18))

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        model=None,
        *,
        mmap: bool = True,
        use_gpu: bool | None = None,
        device: str = "auto",
        verify: str = "fast",
        parts: str = "all",
    ) -> SearchEngine:
        """Open ``index_dir``; ``model`` (object or path) defaults to the model recorded in the manifest.

        Every file is checked against the manifest first (``verify``: ``"fast"`` sizes and sample digests,
        ``"full"`` sha256 of every byte; see :func:`~hsenet_search.index.store.open_index_dir`).

        ``parts="text"`` loads only the model's text side (:class:`~hsenet_search.models.text_only.TextEncoder`):
        text and report queries work, volume queries do not, and a cold text query skips the vision towers and
        the preprocessing stack.
        """
        index_dir = Path(index_dir)
        manifest = open_index_dir(index_dir, verify=verify)
        if parts not in ("all", "text"):
            raise QueryError(f"parts must be 'all' or 'text', got {parts!r}")
        if model is None or isinstance(model, (str, Path)):
            path = model if model is not None else manifest.model_path()
            if parts == "text":
                from hsenet_search.models.text_only import TextEncoder

                model = TextEncoder.from_pretrained(path)
            else:
                from hsenet_search.models import load_model

                model = load_model(path)
        check_model_matches(manifest, model, index_dir)
        model = model.to(resolve_device(device)).eval()
        volumes = VectorIndex.load(index_dir / "volumes.faiss", mmap=mmap, use_gpu=use_gpu)
        reports = VectorIndex.load(index_dir / "reports.faiss", mmap=mmap, use_gpu=use_gpu)
        metadata = read_metadata(index_dir / "metadata.parquet")
        hub_dir = index_dir / "hubness"
        hubness = {
            name: HubnessNormalizer.load(hub_dir / f"{name}.npz")
            for name in ("text_to_volumes", "volumes_to_reports")
            if (hub_dir / f"{name}.npz").exists()
        }
        return cls(index_dir, manifest, model, volumes, reports, metadata, hubness)

    # ------------------------------------------------------------------ encoding
    def encode_text(self, text: str) -> np.ndarray:
        """One query text -> (1, E) float32, after validation."""
        if not isinstance(text, str) or not text.strip():
            raise QueryError("the query text is empty")
        if len(text) > MAX_QUERY_CHARS:
            raise QueryError(f"the query text has {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
        with torch.no_grad():
            return self.model.encode_text([text]).float().cpu().numpy()

    def encode_volume(self, path: str | Path, *, rescale: tuple[float, float] | None = None) -> np.ndarray:
        """A NIfTI file, DICOM folder or npy -> (1, E) float32, by the same road as the index build
        (:func:`hsenet_search.embedding.embed_input`): a CT-RATE file inside its dataset layout gets its metadata
        rescale and spacing; ``rescale`` overrides the rescale."""
        from hsenet_search.embedding import embed_input, index_form

        if not hasattr(self.model, "encode_volume"):
            raise QueryError("this engine was opened for text queries only (parts='text')")
        return embed_input(self.model, path, rescale=rescale, form=index_form(self.model))

    # ------------------------------------------------------------------ queries
    def search_text(
        self,
        text: str,
        k: int = 10,
        *,
        labels: Sequence[str] = (),
        collapse: bool = True,
        hubness: bool = False,
        params: SearchParams = None,
    ) -> SearchResult:
        """Text → volumes (findings-style query text; optional label filter)."""
        result = self.search_embedding(
            self.encode_text(text),
            k,
            target="volumes",
            labels=labels,
            collapse=collapse,
            hubness=hubness,
            params=params,
        )
        result.query = text
        return result

    def search_volume(
        self,
        path: str | Path,
        k: int = 10,
        *,
        target: str = "volumes",
        labels: Sequence[str] = (),
        collapse: bool = True,
        hubness: bool = False,
        rescale: tuple[float, float] | None = None,
        params: SearchParams = None,
    ) -> SearchResult:
        """Volume → similar volumes (cases) or → closest reports."""
        result = self.search_embedding(
            self.encode_volume(path, rescale=rescale),
            k,
            target=target,
            labels=labels,
            collapse=collapse,
            hubness=hubness,
            params=params,
        )
        result.query = str(path)
        return result

    def search_report(self, text: str, k: int = 10, *, params: SearchParams = None) -> SearchResult:
        """Report text → similar reports."""
        result = self.search_embedding(self.encode_text(text), k, target="reports", params=params)
        result.query = text
        return result

    def search_embedding(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        target: str = "volumes",
        labels: Sequence[str] = (),
        collapse: bool = True,
        hubness: bool = False,
        params: SearchParams = None,
    ) -> SearchResult:
        """Nearest volumes or reports to an embedding: a text embedding or a volume vector as
        :meth:`encode_volume` returns it (for a bridged index the two differ in width and each is turned into
        the query of its direction, see :mod:`hsenet_search.models.bridge`).

        ``params`` overrides the index's saved search defaults for this query only: ``{"nprobe": 64}``
        (IVF), ``{"efSearch": 128}`` (HNSW) or ``"nprobe=64"``; a parameter the index lacks is a QueryError.
        """
        if target not in TARGETS:
            raise QueryError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
        index = self.volumes if target == "volumes" else self.reports
        if not 1 <= k <= min(MAX_K, index.ntotal):
            raise QueryError(f"k must be between 1 and {min(MAX_K, index.ntotal)} for this index, got {k}")
        q = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        scale = 1.0  # a bridged query's norm: FAISS searches its direction, the scores are scaled back
        if self.manifest.bridge is not None:
            q = self._bridged_query(q, target)
            scale = float(np.linalg.norm(q))
            q = q / max(scale, 1e-12)
        if q.shape[1] != index.dim:
            raise QueryError(f"query embedding has {q.shape[1]} dimensions; the index has {index.dim}")
        if not np.isfinite(q).all():
            raise QueryError("query embedding contains NaN or infinite values")
        allowed = self._allowed(labels, target)
        if allowed is not None and len(allowed) == 0:
            return SearchResult({"embedding_dim": q.shape[1]}, target, [])
        fetch = k * (self._max_recons if (collapse and target == "volumes") else 1)
        name = "text_to_volumes" if target == "volumes" else "volumes_to_reports"
        if hubness and name not in self.hubness:
            raise QueryError(f"this index has no hubness bank {name!r}; search without hubness correction")
        if hubness:
            fetch *= HUBNESS_CANDIDATES
        fetch = min(fetch, index.ntotal)
        scores, ids = index.search(q, fetch, allowed_ids=allowed, params=params)
        if hubness:  # the querybank statistics are of unit queries
            scores, ids = rerank(self.hubness[name], scores, ids, fetch)
        elif scale != 1.0:
            scores = scores * np.float32(scale)
        hits = (
            self._volume_hits(scores[0], ids[0], k, collapse)
            if target == "volumes"
            else self._report_hits(scores[0], ids[0], k)
        )
        return SearchResult({"embedding_dim": q.shape[1]}, target, hits)

    def locate(self, scan_or_scan_id: str | Path, texts: Sequence[str]):
        """Where each text is in a scan: an indexed scan id or volume name, or a volume file / DICOM folder.
        Returns a :class:`~hsenet_search.locate.LocateResult`; needs a model with a localisation head."""
        from .locate import locate

        source, scan = self._scan_source(scan_or_scan_id)
        return locate(self.model, source, texts, scan=scan)

    def add_where(self, result: SearchResult) -> SearchResult:
        """Give each volume hit of a text query the query's position in that scan (``where``)."""
        from .locate import locate

        for hit in result.hits:
            hit.where = locate(self.model, hit.path, [str(result.query)], scan=hit.scan_id).results[0].where
        return result

    def _scan_source(self, key: str | Path) -> tuple[str | Path, str | None]:
        """The volume behind an indexed scan id / volume name (first reconstruction), else a file path."""
        name = str(key)
        rows = np.flatnonzero((self._col["scan_id"] == name) | (self._col["volume_name"] == name))
        if len(rows):
            row = min(rows, key=lambda r: self._col["volume_name"][r])
            return self._col["path"][row], str(self._col["scan_id"][row])
        if not Path(name).exists():
            raise QueryError(f"{name!r} is neither a scan id or volume name of this index nor a volume file")
        return Path(name), None

    # ------------------------------------------------------------------ helpers
    def _bridged_query(self, q: np.ndarray, target: str) -> np.ndarray:
        """A bridged index's query: text (report width) or stored volume (twice that) → its direction."""
        from hsenet_search.models import bridge

        width = self.manifest.dims["reports"]
        if q.shape[1] == width:
            return bridge.text_query_on_stored(q) if target == "volumes" else q
        if q.shape[1] == 2 * width:
            return bridge.volume_query_on_stored(q) if target == "volumes" else bridge.bridged_of_stored(q)
        raise QueryError(f"query embedding has {q.shape[1]} dimensions; it takes {width} or {2 * width}")

    def _allowed(self, labels: Sequence[str], target: str) -> np.ndarray | None:
        if not labels:
            return None
        unknown = [name for name in labels if name not in LABELS]
        if unknown:
            raise QueryError(f"unknown label {unknown[0]!r}; labels are: {', '.join(LABELS)}")
        mask = np.ones(len(self.metadata), dtype=bool)
        for name in labels:
            mask &= self.metadata[name].to_numpy() == 1
        rows = self.metadata.loc[mask]
        ids = rows["row_id"] if target == "volumes" else rows["report_id"].drop_duplicates()
        return ids.to_numpy(dtype=np.int64)

    def _hit(self, rank: int, score: float, row: int, **extra) -> Hit:
        col = self._col
        labels = [LABELS[j] for j in np.flatnonzero(self._label_matrix[row] == 1)]
        return Hit(
            rank,
            score,
            col["volume_name"][row],
            col["scan_id"][row],
            col["findings"][row],
            col["impression"][row],
            labels,
            col["split"][row],
            col["path"][row],
            row,
            int(col["report_id"][row]),
            **extra,
        )

    def _volume_hits(self, scores: np.ndarray, ids: np.ndarray, k: int, collapse: bool) -> list[Hit]:
        hits: list[Hit] = []
        seen: set[str] = set()
        scan_ids = self._col["scan_id"]
        for score, rid in zip(scores.tolist(), ids.tolist()):
            if rid < 0 or (collapse and scan_ids[rid] in seen):
                continue
            seen.add(scan_ids[rid])
            hits.append(self._hit(len(hits) + 1, score, rid))
            if len(hits) == k:
                break
        return hits

    def _report_hits(self, scores: np.ndarray, ids: np.ndarray, k: int) -> list[Hit]:
        hits = []
        names = self._col["volume_name"]
        for score, rid in zip(scores[:k].tolist(), ids[:k].tolist()):
            if rid < 0:
                continue
            rows = self._by_report[rid]
            hits.append(self._hit(len(hits) + 1, score, int(rows[0]), volumes=names[rows].tolist()))
        return hits

    def info(self) -> dict:
        """The manifest plus serving details."""
        info = self.manifest.to_dict()
        info["serving"] = {
            "volumes_on_gpu": self.volumes.on_gpu,
            "reports_on_gpu": self.reports.on_gpu,
            "device": str(next(self.model.parameters()).device),
        }
        return info
