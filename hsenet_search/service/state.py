"""What the app holds: the loaded indexes, the worker pool, the slice caches and the metrics.

Case files are found only through an index's metadata (``scan_id`` → recorded volume paths): a request names
a scan id, never a path.
"""

from __future__ import annotations

import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hsenet_search.data.labels import LABELS
from hsenet_search.errors import QueryError

from .config import ServiceConfig
from .metrics import Metrics
from .pool import BoundedPool
from .render import LRU, DisplayVolume, axial_display_index, display_volume, render_png
from .uploads import UploadLimits, remove_folder, unpack_upload

SCAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class NotFound(QueryError):
    """A scan id, volume name or index name that the loaded indexes do not hold (answered 404)."""


def check_id(value: str, what: str) -> str:
    """A scan id / volume name / index name must be a plain token (no slashes, no dot-dot, no spaces)."""
    if not isinstance(value, str) or not SCAN_ID.match(value) or ".." in value:
        raise QueryError(f"{what} {value[:80]!r} is not a valid identifier")
    return value


@dataclass
class LoadedIndex:
    """One served index: its engine and the scan id → metadata rows map."""

    name: str
    engine: object
    rows_by_scan: dict[str, np.ndarray] = field(default_factory=dict)
    encode_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, name: str, index_dir: str | Path, device: str = "auto") -> LoadedIndex:
        from hsenet_search.engine import SearchEngine

        engine = SearchEngine.open(index_dir, device=device)
        rows = engine.metadata.groupby("scan_id").indices
        return cls(name, engine, {str(k): np.asarray(v) for k, v in rows.items()})

    def rows(self, scan_id: str) -> np.ndarray:
        check_id(scan_id, "scan id")
        if scan_id not in self.rows_by_scan:
            raise NotFound(f"scan {scan_id!r} is not in index {self.name!r}")
        return self.rows_by_scan[scan_id]

    def volume_row(self, scan_id: str, volume: str | None) -> int:
        """The metadata row of ``volume`` (a volume name of the scan; default its first)."""
        rows = self.rows(scan_id)
        if volume is None:
            return int(rows[0])
        check_id(volume, "volume name")
        names = self.engine.metadata["volume_name"].to_numpy()
        for row in rows:
            if names[row] == volume:
                return int(row)
        raise NotFound(f"scan {scan_id!r} has no volume {volume!r}")

    def case(self, scan_id: str) -> dict:
        meta = self.engine.metadata
        rows = self.rows(scan_id)
        first = meta.iloc[int(rows[0])]
        return {
            "index": self.name,
            "scan_id": scan_id,
            "split": str(first["split"]),
            "findings": str(first["findings"]),
            "impression": str(first["impression"]),
            "labels": [name for name in LABELS if int(first[name]) == 1],
            "volumes": [str(meta.iloc[int(r)]["volume_name"]) for r in rows],
        }

    def stored_vector(self, scan_id: str) -> np.ndarray:
        """The indexed embedding of the scan's first volume (no re-encoding)."""
        return self.engine.volumes.reconstruct(int(self.rows(scan_id)[0])).reshape(1, -1)

    def path_of(self, row: int) -> str:
        return str(self.engine.metadata["path"].iat[row])


class ServiceState:
    """Engines loaded once, plus everything shared by the request handlers."""

    def __init__(self, config: ServiceConfig, indexes: dict[str, LoadedIndex]):
        self.config = config
        self.indexes = indexes
        self.metrics = Metrics()
        self.pool = BoundedPool(config.workers, config.queue, config.job_timeout_s)
        self.volumes: LRU[tuple[str, int], DisplayVolume] = LRU(config.volume_cache)
        self.pngs: LRU[tuple, bytes] = LRU(config.slice_cache)
        self.limits = UploadLimits(config.max_upload_bytes, config.max_unpacked_bytes, config.max_zip_members)
        self._llm = None
        self._llm_lock = threading.Lock()

    @classmethod
    def load(cls, config: ServiceConfig) -> ServiceState:
        indexes: dict[str, LoadedIndex] = {}
        for path in config.indexes:
            base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(path).resolve().name) or "index"
            name, n = base, 2
            while name in indexes:
                name, n = f"{base}-{n}", n + 1
            indexes[name] = LoadedIndex.open(name, path, config.device)
        return cls(config, indexes)

    @property
    def ready(self) -> bool:
        return bool(self.indexes)

    def index(self, name: str | None) -> LoadedIndex:
        if name is None or name == "":
            if not self.indexes:
                raise NotFound("no index is loaded")
            return next(iter(self.indexes.values()))
        check_id(name, "index name")
        if name not in self.indexes:
            raise NotFound(f"no index named {name!r}; loaded: {', '.join(self.indexes)}")
        return self.indexes[name]

    # ---------------------------------------------------------------- worker-side jobs (blocking)
    @staticmethod
    def _check_hubness(index: LoadedIndex, hubness: bool, target: str) -> None:
        name = "text_to_volumes" if target == "volumes" else "volumes_to_reports"
        if hubness and name not in index.engine.hubness:
            raise QueryError(f"index {index.name!r} has no {name} querybank, so hubness is unavailable")

    def search_text(self, index: LoadedIndex, text: str, k: int, labels, hubness: bool, target: str):
        self._check_hubness(index, hubness, target)
        with self.metrics.timed("encode_text"), index.encode_lock:
            vector = index.engine.encode_text(text)
        with self.metrics.timed("faiss"):
            result = index.engine.search_embedding(vector, k, target=target, labels=labels, hubness=hubness)
        result.query = text
        return result

    def search_case(self, index: LoadedIndex, scan_id: str, k: int, labels, hubness: bool, target: str):
        """ "More like this": neighbours of an indexed scan's stored embedding, the scan itself left out."""
        self._check_hubness(index, hubness, target)
        vector = index.stored_vector(scan_id)
        total = index.engine.volumes.ntotal if target == "volumes" else index.engine.reports.ntotal
        with self.metrics.timed("faiss"):
            result = index.engine.search_embedding(
                vector,
                min(k + len(index.rows(scan_id)), total),
                target=target,
                labels=labels,
                hubness=hubness,
            )
        hits = [h for h in result.hits if target != "volumes" or h.scan_id != scan_id][:k]
        for rank, hit in enumerate(hits, 1):
            hit.rank = rank
        result.hits, result.query = hits, {"case": scan_id}
        return result

    def with_upload(self, stream, filename: str | None, work):
        """Unpack an upload into a private temp folder, run ``work(path)``, then remove the folder."""
        folder = Path(tempfile.mkdtemp(prefix="hsenet-upload-"))
        try:
            with self.metrics.timed("upload"):
                path = unpack_upload(stream, filename, folder, self.limits)
            return work(path)
        finally:
            remove_folder(folder)

    def search_upload(self, index: LoadedIndex, path: Path, filename: str, k: int, labels, hubness: bool, target: str):
        self._check_hubness(index, hubness, target)
        with self.metrics.timed("encode_volume"), index.encode_lock:
            vector = index.engine.encode_volume(path)
        with self.metrics.timed("faiss"):
            result = index.engine.search_embedding(vector, k, target=target, labels=labels, hubness=hubness)
        result.query = {"upload": filename}
        return result

    def slice_png(
        self,
        index: LoadedIndex,
        scan_id: str,
        volume: str | None,
        axis: str,
        i: int | None,
        window: str,
        size: int | None,
    ) -> bytes:
        row = index.volume_row(scan_id, volume)

        def make() -> bytes:
            with self.metrics.timed("render"):
                return render_png(self.display(index, row), axis, i, window, size)

        return self.pngs.get_or_make((index.name, row, axis, i, window, size), make)

    def locate(self, index: LoadedIndex, scan_id: str, text: str) -> dict:
        """Where ``text`` is in the scan, with the viewer's axial index of the predicted image."""
        with self.metrics.timed("locate"), index.encode_lock:
            result = index.engine.locate(scan_id, [text])
        location = result.results[0].to_json()
        geometry = result.geometry
        location["axial_index"] = axial_display_index(
            geometry.stored_affine, geometry.stored_shape[2], location["image_number"] - 1
        )
        return {"scan": result.scan, "index": index.name, "volume_name": result.volume_name, **location}

    def display(self, index: LoadedIndex, row: int) -> DisplayVolume:
        return self.volumes.get_or_make((index.name, row), lambda: display_volume(index.path_of(row)))

    def case(self, index: LoadedIndex, scan_id: str) -> dict:
        info = index.case(scan_id)
        views = []
        for name in info["volumes"]:
            shown = self.display(index, index.volume_row(scan_id, name))
            views.append({"volume_name": name, "slices": shown.slices, "spacing": list(shown.spacing)})
        info["volumes"] = views
        return info

    def draft(
        self,
        index: LoadedIndex,
        path: str | Path,
        k: int,
        mode: str,
        exclude_scan: str | None = None,
        exclude_text: str | None = None,
    ) -> dict:
        """The public drafting entry the CLI ``generate`` uses: ground, then draft."""
        from hsenet_search.generate.draft import draft
        from hsenet_search.generate.grounding import ground

        with self.metrics.timed("encode_volume"), index.encode_lock:
            cases = ground(index.engine, path, k, exclude_scan=exclude_scan, exclude_text=exclude_text)
        with self.metrics.timed("draft"), self._llm_lock:
            return draft(cases, mode=mode, llm=self._load_llm() if mode == "llm" else None).to_json()

    def _load_llm(self):
        from hsenet_search.generate.llm import load_llm

        if self._llm is None:
            self._llm = load_llm(self.config.llm)
        return self._llm
