"""A FAISS index over L2-normalised float32 vectors with stable int64 ids (inner-product metric).

Decisions (see ``indexes/README.md``):

* Any FAISS factory string is accepted and built with ``METRIC_INNER_PRODUCT``. A factory whose index cannot
  take external ids (``Flat``, ``HNSW32``, ``SQ8``, ``...,RFlat``) is wrapped as ``IDMap2,<factory>``; IVF
  indexes store the ids themselves.
* Vectors are used as unit rows: unit rows as they are, rows within 1 % of unit norm renormalised silently
  (float16 rounding of the embedding shards), others renormalised with a warning; NaN/inf or zero rows
  are errors (:class:`~hsenet_search.errors.IndexFormatError` when adding, ``QueryError`` for queries).
* Trainable factories are trained on a sample of at most ``256 * K`` vectors (K = IVF lists, or the 2^nbits
  centroids of a PQ), and need at least ``39 * K`` of them (the k-means bounds of ``faiss/Clustering.h``).
  With fewer vectors the build raises :class:`IndexTrainingError` naming a factory that fits instead of
  silently changing the one asked for (:func:`suggest_factory` gives the autofaiss-style choice).
* Search defaults saved with the index: IVF ``nprobe = max(8, nlist / 64)``, HNSW ``efSearch = 64``,
  RFlat re-ranking ``k_factor = 8``; override per call with ``params``.
* ``allowed_ids`` filters inside FAISS with an ID selector in per-call ``SearchParameters`` (IVF: with the
  index's ``nprobe``; HNSW: with its ``efSearch``; Refine: in the base index's parameters).
* GPU: used iff ``gpu_count() > 0`` and the index type has a GPU implementation (Flat, IVFFlat, IVFSQ,
  IVFPQ, under IDMap/PreTransform wrappers). The CPU index is always kept: it is what is saved, what
  reconstructs, and what answers filtered searches and ``k > 2048`` (GPU selection limit), because GPU
  selector support differs across FAISS releases. No GPU call is made when ``gpu_count() == 0``.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import faiss
import numpy as np

from hsenet_search.atomic import atomic_path
from hsenet_search.errors import HSENetError, IndexFormatError, QueryError

GPU_MAX_K = 2048
MIN_POINTS_PER_CENTROID = 39
MAX_POINTS_PER_CENTROID = 256
NORM_TOLERANCE = 1e-2
UNIT_TOLERANCE = 1e-4  # squared norms this close to 1 are used as they are
_PAD_SCORE = -np.inf


class IndexTrainingError(HSENetError):
    """A trainable FAISS factory got too few vectors to train on."""


class GpuPlacementError(HSENetError):
    """A GPU index was asked for but no GPU is visible to FAISS, or the index type has no GPU version."""


def gpu_count() -> int:
    """Number of GPUs FAISS can use (0 on CPU-only builds and on GPU builds without a GPU)."""
    get = getattr(faiss, "get_num_gpus", None)
    if get is None:
        return 0
    try:
        return max(int(get()), 0)
    except RuntimeError:
        return 0


def suggest_factory(n: int) -> str:
    """An autofaiss-style factory for ``n`` vectors: exact below 100k, else ``IVF{~4 sqrt(n)},SQ8``."""
    if n < 100_000:
        return "IDMap2,Flat"
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    nlist = min(nlist, 2 ** int(math.log2(n // MIN_POINTS_PER_CENTROID)))
    return f"IVF{nlist},SQ8"


def as_unit_rows(
    x: np.ndarray, dim: int | None, what: str, error: type[HSENetError], *, exact: bool = False
) -> np.ndarray:
    """Validate a (n, dim) matrix and return it as unit-norm float32 rows (the input itself when it is).

    ``exact``: divide every row by its norm even when all are unit within :data:`UNIT_TOLERANCE`, so a row's
    result does not depend on the other rows passed with it (blocks of a streamed build)."""
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise error(f"{what} must be an array of real numbers ({e})") from e
    if x.ndim == 1 and what == "queries":
        x = x[None, :]
    if x.ndim != 2:
        raise error(f"{what} must be a 2-D array (n, dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise error(f"{what} have dimension {x.shape[1]}, the index has {dim}")
    squared = np.einsum("ij,ij->i", x, x)
    if len(squared):
        lo, hi = float(squared.min()), float(squared.max())  # NaN anywhere fails both tests below
        if not exact and 1 - UNIT_TOLERANCE <= lo and hi <= 1 + UNIT_TOLERANCE:
            return x  # already unit rows (e.g. straight from the encoder): no copy, no cost
        if 1 - 2 * NORM_TOLERANCE <= lo and hi <= 1 + 2 * NORM_TOLERANCE:
            return x / np.sqrt(squared)[:, None]  # float16 rounding and the like
    if not np.isfinite(squared).all():  # NaN/inf anywhere in a row makes its squared norm non-finite
        raise error(
            f"{what} contain NaN, inf or overflowing values (first in row "
            f"{int(np.flatnonzero(~np.isfinite(squared))[0])})"
        )
    if not squared.all():
        raise error(f"{what} contain an all-zero row (row {int(np.flatnonzero(squared == 0)[0])})")
    if len(squared):
        warnings.warn(f"{what} were not L2-normalised; normalising them", stacklevel=3)
    return x / np.sqrt(squared)[:, None]


def _as_ids(ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) != n:
        raise IndexFormatError(f"ids must be a 1-D array of {n} integers, got shape {ids.shape}")
    if len(ids) and not np.issubdtype(ids.dtype, np.integer):
        raise IndexFormatError(f"ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if len(ids) and ids.min() < 0:
        raise IndexFormatError("ids must be >= 0 (-1 marks an empty result slot)")
    if len(np.unique(ids)) != len(ids):
        raise IndexFormatError("ids must be unique")
    return ids


def _parse_params(params: str | dict | None) -> dict[str, float]:
    if params is None:
        return {}
    if isinstance(params, str):
        out = {}
        for item in filter(None, (p.strip() for p in params.split(","))):
            m = re.fullmatch(r"(\w+)\s*=\s*([0-9.eE+-]+)", item)
            if not m:
                raise QueryError(f"search parameter {item!r} is not of the form name=value")
            out[m.group(1)] = float(m.group(2))
        return out
    return {str(k): float(v) for k, v in params.items()}


def _unwrap(index: faiss.Index) -> faiss.Index:
    """The index below IDMap / PreTransform wrappers."""
    index = faiss.downcast_index(index)
    while isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
        index = faiss.downcast_index(index.index)
    return index


def _takes_ids(index: faiss.Index) -> bool:
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return True
    return isinstance(_unwrap(index), faiss.IndexIVF)


def training_bounds(index: faiss.Index) -> tuple[int, int]:
    """(minimum, maximum useful) number of training vectors for an untrained index."""
    centroids = []
    try:
        centroids.append(faiss.extract_index_ivf(index).nlist)
    except RuntimeError:
        pass
    inner = _unwrap(index)
    for obj in (inner, getattr(inner, "base_index", None)):
        pq = getattr(faiss.downcast_index(obj), "pq", None) if obj is not None else None
        if pq is not None:
            centroids.append(pq.ksub)
    top = faiss.downcast_index(index)
    if isinstance(top, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        top = faiss.downcast_index(top.index)
    if isinstance(top, faiss.IndexPreTransform):
        transforms = [faiss.downcast_VectorTransform(top.chain.at(i)) for i in range(top.chain.size())]
        if any(isinstance(vt, faiss.OPQMatrix) for vt in transforms):
            centroids.append(256)  # OPQ trains an 8-bit PQ
    k = max(centroids, default=0)
    if k == 0:  # scalar quantisers, PCA: any reasonable sample
        return 1, MAX_POINTS_PER_CENTROID * 256
    return MIN_POINTS_PER_CENTROID * k, MAX_POINTS_PER_CENTROID * k


def new_faiss_index(dim: int, factory: str) -> tuple[faiss.Index, str]:
    """An empty inner-product index of ``factory`` (wrapped as ``IDMap2,...`` when it takes no ids) and
    the factory string it was built from."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise IndexFormatError(f"invalid FAISS factory string {factory!r}: {_faiss_message(e)}") from e
    if not _takes_ids(index):
        factory = f"IDMap2,{factory}"
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    return index, factory


def _is_gpu_convertible(index: faiss.Index) -> bool:
    leaf = _unwrap(index)
    return isinstance(leaf, (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexIVFScalarQuantizer, faiss.IndexIVFPQ))


class _Params:
    """Builds per-call SearchParameters mirroring the index structure; keeps the SWIG objects alive."""

    def __init__(self, overrides: dict[str, float]):
        self.overrides = dict(overrides)
        self.used: set[str] = set()
        self.keep: list = []

    def _take(self, name: str, default):
        if name in self.overrides:
            self.used.add(name)
            return type(default)(self.overrides[name])
        return default

    def build(self, index: faiss.Index, sel) -> faiss.SearchParameters | None:
        index = faiss.downcast_index(index)
        if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            # selectors below an IDMap see internal ids; IDMap leaves an IDSelectorTranslated alone
            if sel is not None:
                sel = faiss.IDSelectorTranslated(index.id_map, sel)
                self.keep.append(sel)
            return self.build(index.index, sel)
        if isinstance(index, faiss.IndexPreTransform):  # passes non-PreTransform params through
            return self.build(index.index, sel)
        if isinstance(index, faiss.IndexRefine):
            base = self.build(index.base_index, sel)
            p = faiss.IndexRefineSearchParameters(k_factor=self._take("k_factor", float(index.k_factor)))
            p.base_index_params = base
        elif isinstance(index, faiss.IndexIVF):
            p = faiss.SearchParametersIVF(
                nprobe=self._take("nprobe", int(index.nprobe)), max_codes=self._take("max_codes", int(index.max_codes))
            )
        elif isinstance(index, faiss.IndexHNSW):
            p = faiss.SearchParametersHNSW(efSearch=self._take("efSearch", int(index.hnsw.efSearch)))
        elif sel is None:
            return None
        else:
            p = faiss.SearchParameters()
        if sel is not None and not isinstance(index, faiss.IndexRefine):
            p.sel = sel
        self.keep.append(p)
        return p

    def check_all_used(self, index_name: str) -> None:
        unused = sorted(set(self.overrides) - self.used)
        if unused:
            raise QueryError(
                f"search parameter(s) {', '.join(unused)} do not apply to a {index_name} index "
                "(known: nprobe, max_codes for IVF; efSearch for HNSW; k_factor for RFlat)"
            )


def _selector(allowed: np.ndarray):
    """A bitmap selector for dense non-negative id sets, a hashed batch selector otherwise."""
    top = int(allowed.max()) + 1
    if top <= 64 * len(allowed):
        bits = np.zeros(top, dtype=bool)
        bits[allowed] = True
        packed = np.packbits(bits, bitorder="little")
        return faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed)), packed
    return faiss.IDSelectorBatch(allowed), allowed


class VectorIndex:
    """A FAISS index over L2-normalised float32 vectors with stable int64 ids, inner-product metric."""

    def __init__(
        self,
        index: faiss.Index,
        factory: str,
        *,
        use_gpu: bool | None = None,
        read_only: bool = False,
        path: str | Path | None = None,
    ):
        self.index = index  # the CPU index: saved, reconstructed from, used for filtered searches
        self.factory = factory
        self.read_only = read_only
        self.path = str(path) if path is not None else None
        self._gpu_index = None
        self._gpu_resources = None
        self._place(use_gpu)

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: np.ndarray,
        factory: str = "IDMap2,Flat",
        *,
        train_vectors: np.ndarray | None = None,
        seed: int = 0,
        use_gpu: bool | None = None,
    ) -> VectorIndex:
        """Train (when needed) and fill an index of ``factory`` with ``vectors`` under ``ids``."""
        x = as_unit_rows(vectors, None, "vectors", IndexFormatError)
        dim = x.shape[1]
        index, factory = new_faiss_index(dim, factory)
        if not index.is_trained:
            sample = (
                x if train_vectors is None else as_unit_rows(train_vectors, dim, "training vectors", IndexFormatError)
            )
            _train(index, sample, factory, seed)
        _set_search_defaults(index)
        vi = cls(index, factory, use_gpu=False)
        vi.add(x, ids)
        vi._place(use_gpu)
        return vi

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False, use_gpu: bool | None = None) -> VectorIndex:
        """Read an index file; ``mmap=True`` maps its codes read-only (for serving) instead of reading
        them: IVF inverted lists as on-disk lists, Flat/HNSW codes as a mapped buffer."""
        path = Path(path)
        if not path.is_file():
            raise IndexFormatError("FAISS index file not found", path)
        flags = (_mmap_flag(path) | faiss.IO_FLAG_READ_ONLY) if mmap else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as e:
            raise IndexFormatError(f"not a readable FAISS index ({_faiss_message(e)})", path) from e
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexFormatError("FAISS index does not use the inner-product metric", path)
        if not _takes_ids(index):
            raise IndexFormatError("FAISS index has no external ids (expected an IDMap or IVF index)", path)
        return cls(index, _describe(index), use_gpu=use_gpu, read_only=mmap, path=path)

    def save(self, path: str | Path) -> None:
        """Write the (CPU) index atomically: a temporary file beside ``path``, then ``os.replace``."""
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))

    # ----------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def on_gpu(self) -> bool:
        return self._gpu_index is not None

    @property
    def faiss_index(self) -> faiss.Index:
        """The FAISS object unfiltered searches run on (the GPU copy when there is one)."""
        return self._gpu_index if self._gpu_index is not None else self.index

    def __repr__(self) -> str:
        where = "gpu" if self.on_gpu else "cpu"
        return f"VectorIndex({self.factory!r}, dim={self.dim}, ntotal={self.ntotal}, {where})"

    # ----------------------------------------------------------------- GPU placement
    def _place(self, use_gpu: bool | None) -> None:
        """Copy the index to GPU 0 when asked (True) or when possible (None); drop the copy for False."""
        self._gpu_index = self._gpu_resources = None
        if use_gpu is False:
            return
        n = gpu_count()
        convertible = _is_gpu_convertible(self.index)
        if use_gpu and n == 0:
            raise GpuPlacementError("use_gpu=True but FAISS sees no GPU (faiss.get_num_gpus() == 0)", self.path)
        if use_gpu and not convertible:
            raise GpuPlacementError(
                f"index type {type(_unwrap(self.index)).__name__} ({self.factory}) has no FAISS GPU "
                "implementation; use Flat, IVF*,Flat, IVF*,SQ* or IVF*,PQ*",
                self.path,
            )
        if n == 0 or not convertible:
            return
        try:
            res = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(res, 0, self.index)
            self._gpu_resources = res
        except (RuntimeError, AttributeError) as e:  # AttributeError: a faiss-cpu build has no GPU symbols
            if use_gpu:
                raise GpuPlacementError(f"could not copy the index to the GPU: {_faiss_message(e)}", self.path) from e
            warnings.warn(f"FAISS GPU copy failed, searching on the CPU: {_faiss_message(e)}", stacklevel=3)

    # ----------------------------------------------------------------- mutation
    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add unit-normalised ``vectors`` under the unique int64 ``ids`` (not already in the index)."""
        if self.read_only:
            raise IndexFormatError(
                "index is memory-mapped read-only; load it with mmap=False to add vectors", self.path
            )
        x = as_unit_rows(vectors, self.dim, "vectors", IndexFormatError)
        ids = _as_ids(ids, len(x))
        if len(x) == 0:
            return
        existing = self._id_map()
        if existing is not None and np.isin(ids, existing).any():
            dup = int(ids[np.isin(ids, existing)][0])
            raise IndexFormatError(f"id {dup} is already in the index")
        self.index.add_with_ids(x, ids)
        if self._gpu_index is not None:
            self._gpu_index.add_with_ids(x, ids)

    def _id_map(self) -> np.ndarray | None:
        top = faiss.downcast_index(self.index)
        if isinstance(top, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            return faiss.vector_to_array(top.id_map)
        return None

    # ----------------------------------------------------------------- queries
    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None, params: str | dict | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores (Q,k) float32, ids (Q,k) int64); empty slots have id -1 and score -inf.

        ``allowed_ids`` restricts the search inside FAISS (ID selector), ``params`` sets ``nprobe``,
        ``max_codes``, ``efSearch`` or ``k_factor`` for this call (``"nprobe=32"`` or ``{"nprobe": 32}``).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise QueryError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        q = as_unit_rows(queries, self.dim, "queries", QueryError)
        limit = self.ntotal
        sel = keep = None  # keep: the selector's id buffer, alive until the search returns
        if allowed_ids is not None:
            allowed = np.unique(np.asarray(allowed_ids, dtype=np.int64))
            allowed = allowed[allowed >= 0]
            limit = min(limit, len(allowed))
            if limit > 0:
                sel, keep = _selector(allowed)
        kk = min(k, limit)
        if kk == 0 or len(q) == 0:
            return (np.full((len(q), k), _PAD_SCORE, dtype=np.float32), np.full((len(q), k), -1, dtype=np.int64))
        p = None
        overrides = _parse_params(params)
        if overrides or sel is not None:  # otherwise FAISS uses the index's own defaults: no per-call cost
            builder = _Params(overrides)
            p = builder.build(self.index, sel)
            builder.check_all_used(self.factory)
        on_gpu = (
            self._gpu_index is not None and sel is None and kk <= GPU_MAX_K and overrides.get("nprobe", 0) <= GPU_MAX_K
        )
        scores, ids = (self._gpu_index if on_gpu else self.index).search(q, kk, params=p)
        scores[ids < 0] = _PAD_SCORE
        if kk < k:
            scores = np.pad(scores, ((0, 0), (0, k - kk)), constant_values=_PAD_SCORE)
            ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
        return scores, ids

    def reconstruct(self, id: int) -> np.ndarray:
        """The stored (possibly quantised) vector of ``id``."""
        try:
            return self.index.reconstruct(int(id))
        except RuntimeError as first:
            try:
                ivf = faiss.extract_index_ivf(self.index)
            except RuntimeError:
                ivf = None
            if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
                ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
                return self.reconstruct(id)
            msg = _faiss_message(first)
            if "not implemented" in msg:
                raise QueryError(
                    f"a {self.factory} index cannot reconstruct vectors; read the embedding shards instead"
                ) from first
            raise QueryError(f"id {int(id)} is not in the index") from first


def _mmap_flag(path: Path) -> int:
    """``IO_FLAG_MMAP`` (on-disk inverted lists) for IVF files, ``IO_FLAG_MMAP_IFC`` for the others.

    The two flags cannot be combined, so the file's first fourcc decides: ``Iw..`` is an IVF index,
    ``IxPT`` a pre-transform (OPQ, PCA) that wraps one in the factories this project builds."""
    with open(path, "rb") as f:
        head = f.read(4)
    return faiss.IO_FLAG_MMAP if head[:2] == b"Iw" or head == b"IxPT" else faiss.IO_FLAG_MMAP_IFC


def _train(index: faiss.Index, sample: np.ndarray, factory: str, seed: int) -> None:
    lo, hi = training_bounds(index)
    if len(sample) < lo:
        raise IndexTrainingError(
            f"factory {factory!r} needs at least {lo} training vectors, got {len(sample)}; "
            f"use a smaller one such as {suggest_factory(len(sample))!r}"
        )
    if len(sample) > hi:
        pick = np.random.default_rng(seed).choice(len(sample), size=hi, replace=False)
        sample = sample[np.sort(pick)]
    ivf = None
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        pass
    if ivf is not None:
        ivf.cp.seed = seed
        ivf = faiss.downcast_index(ivf)
        if isinstance(ivf, faiss.IndexIVFPQ):  # polysemous codes serve Hamming-filtered search, unused here,
            ivf.do_polysemous_training = False  # and their training takes minutes
    index.train(sample)


def _set_search_defaults(index: faiss.Index) -> None:
    """Saved search defaults: IVF ``nprobe = max(8, nlist/64)``, HNSW ``efSearch = 64``, RFlat
    ``k_factor = 8``."""
    leaf = _unwrap(index)
    try:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(ivf.nlist, max(8, ivf.nlist // 64))
    except RuntimeError:
        pass
    if isinstance(leaf, faiss.IndexHNSW):
        leaf.hnsw.efSearch = max(leaf.hnsw.efSearch, 64)
    if isinstance(leaf, faiss.IndexRefine):
        leaf.k_factor = max(leaf.k_factor, 8.0)


def _describe(index: faiss.Index) -> str:
    from faiss.contrib.factory_tools import reverse_index_factory

    try:
        return reverse_index_factory(index)
    except (NotImplementedError, RuntimeError, AttributeError):
        return type(faiss.downcast_index(index)).__name__


def _faiss_message(e: Exception) -> str:
    """The useful last part of a FAISS C++ exception message, on one line."""
    text = " ".join(str(e).split())
    for marker in ("Error: ", "failed: "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    return text
