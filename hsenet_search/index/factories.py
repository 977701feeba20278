"""FAISS factory presets for 10^4 to 10^8 vectors, ``--factory auto``, shard-by-shard IVF builds and
build-time tuning of ``nprobe`` / ``efSearch``.

Presets (inner product on unit rows; bytes per vector at d = 256 in brackets; see ``indexes/README.md``):

====================  ==========================================  =============================================
vectors               preset                                      notes
====================  ==========================================  =============================================
up to ~2*10^5         ``IDMap2,Flat`` (exact, 4d+16 = 1 040 B)    exact, ~1 ms/query on 2 cores at 2*10^5
10^5 to ~2*10^6       ``IDMap2,HNSW32`` (4d+~300 = ~1 330 B)      graph, no training, no removal; when it fits
10^5 to ~10^7         ``IVF{K},Flat`` (4d+8 = 1 032 B)             K = 4 sqrt(n) (power of two), lists mmap'able
10^6 to 10^8          ``IVF{K}_HNSW32,PQ{m}`` (m+8 B, m = d/8..d/2)  compressed codes, K = 2^14..2^18
====================  ==========================================  =============================================

``auto`` (or ``auto:8G``, default budget :data:`DEFAULT_BUDGET`) walks that table and takes the first preset
whose estimated memory fits the budget. Trainable indexes are trained on a sample of at most ``256 K`` vectors
(the rows FAISS would subsample from all of them) and filled block by block from embedding shards
(:func:`build_from_chunks`), so the embeddings never have to be in memory at once. :func:`tune_search` picks
the smallest ``nprobe`` / ``efSearch`` whose recall@10 against exact search (merged block by block) is at
least :data:`TARGET_RECALL` on held-out queries drawn from the index's own vectors, and saves it in the index.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

import faiss
import numpy as np

from hsenet_search.errors import IndexFormatError

from .faiss_backend import MIN_POINTS_PER_CENTROID, VectorIndex, as_unit_rows, new_faiss_index, training_bounds
from .store import EmbeddingShards, as_shards

DEFAULT_BUDGET = 4 << 30
TARGET_RECALL = 0.95
EXACT_LIMIT = 200_000
HNSW_LIMIT = 2_000_000
HNSW_M = 32
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_budget(text: str) -> int:
    """``"512M"``, ``"8G"``, ``"1.5T"`` or a byte count -> bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise IndexFormatError(f"memory budget {text!r} is not a size such as 512M or 8G")
    return int(float(m.group(1)) * _UNITS.get(m.group(2).upper(), 1))


def nlist_for(n: int) -> int:
    """IVF list count: 4 sqrt(n) as a power of two below 10^6 vectors, 2^14..2^18 above (FAISS wiki,
    autofaiss), never more than ``n / 39`` (enough training points per centroid)."""
    if n < 1_000_000:
        k = 2 ** round(math.log2(4 * math.sqrt(n)))
    elif n < 10_000_000:
        k = 1 << 14
    elif n < 100_000_000:
        k = 1 << 16
    else:
        k = 1 << 18
    return max(1, min(k, 2 ** int(math.log2(max(n // MIN_POINTS_PER_CENTROID, 1)))))


@dataclass(frozen=True)
class FactoryChoice:
    """What ``auto`` picked and why."""

    factory: str
    bytes: int  # estimated memory of the index
    reason: str


def estimate_bytes(factory: str, n: int, dim: int) -> int:
    """Memory of a preset index (codes + ids + graph/centroids), from the FAISS layouts."""
    k = int(m.group(1)) if (m := re.search(r"IVF(\d+)", factory)) else 0
    centroids = 4 * dim * k + (k * (4 * HNSW_M * 2 + 8) if "_HNSW" in factory else 0)
    if (m := re.search(r"PQ(\d+)", factory)) is not None:
        return n * (int(m.group(1)) + 8) + centroids + 4 * dim * 256
    if "HNSW" in factory and k == 0:
        return int(n * (4 * dim + 1.1 * HNSW_M * 2 * 4 + 16))  # level 0 holds 2M links of 4 bytes
    if k:
        return n * (4 * dim + 8) + centroids
    return n * (4 * dim + 16)


def choose_factory(n: int, dim: int, budget: int = DEFAULT_BUDGET) -> FactoryChoice:
    """The first preset of the table above that fits ``budget`` bytes for ``n`` vectors of ``dim``."""
    if n < 1:
        raise IndexFormatError("cannot choose a factory for an empty index")
    k = nlist_for(n)
    candidates: list[tuple[str, str]] = []
    if n <= EXACT_LIMIT:
        candidates.append(("IDMap2,Flat", "exact search is fast at this size"))
    if n <= HNSW_LIMIT:
        candidates.append((f"IDMap2,HNSW{HNSW_M}", "graph index fits in memory"))
    candidates.append((f"IVF{k},Flat", "full vectors fit; inverted lists can be memory-mapped"))
    coarse = f"IVF{k}_HNSW32" if k >= 1 << 14 else f"IVF{k}"
    for m in (dim // 2, dim // 4, dim // 8, dim // 16):
        if m >= 4 and dim % m == 0:
            candidates.append((f"{coarse},PQ{m}", f"{m}-byte PQ codes"))
    for factory, reason in candidates:
        size = estimate_bytes(factory, n, dim)
        if size <= budget:
            return FactoryChoice(factory, size, reason)
    factory, reason = candidates[-1]
    return FactoryChoice(factory, estimate_bytes(factory, n, dim), "smallest preset (over the budget)")


def resolve_factory(spec: str, n: int, dim: int) -> str:
    """``auto`` / ``auto:BUDGET`` -> a preset for ``n`` x ``dim``; any other string is returned as is."""
    if spec == "auto" or spec.startswith("auto:"):
        budget = parse_budget(spec.split(":", 1)[1]) if ":" in spec else DEFAULT_BUDGET
        return choose_factory(n, dim, budget).factory
    return spec


def training_sample(vectors: np.ndarray | EmbeddingShards, size: int, seed: int = 0) -> np.ndarray:
    """``size`` rows drawn uniformly (in row order; all rows when there are fewer), one block in memory at a
    time: the rows :meth:`VectorIndex.build` would train on if it held all the vectors."""
    return as_shards(vectors).sample(size, seed)


def build_from_chunks(
    vectors: np.ndarray | EmbeddingShards, factory: str, *, sample: np.ndarray | None = None, seed: int = 0
) -> VectorIndex:
    """Train ``factory`` on ``sample`` (default: :func:`training_sample` of as many rows as FAISS uses,
    ``256`` per centroid), then add the blocks of ``vectors`` one by one under ids 0..N-1: peak memory is
    one block plus the sample plus the index, never all the embeddings."""
    source = as_shards(vectors)
    blocks = unit_blocks(source)
    start, first = next(blocks, (0, np.zeros((0, source.dim), dtype=np.float32)))
    if sample is None:
        probe, _ = new_faiss_index(source.dim, factory)
        if not probe.is_trained:
            sample = unit(training_sample(source, training_bounds(probe)[1], seed))
    index = VectorIndex.build(
        first, np.arange(start, start + len(first)), factory, train_vectors=sample, seed=seed, use_gpu=False
    )
    del first
    for start, block in blocks:
        index.add(block, np.arange(start, start + len(block)))
    return index


def unit(x: np.ndarray) -> np.ndarray:
    """Rows divided by their norms, each independently of the others (validated as index vectors)."""
    return as_unit_rows(x, None, "vectors", IndexFormatError, exact=True)


def unit_blocks(vectors: EmbeddingShards, rows: int | None = None):
    """The blocks of :meth:`EmbeddingShards.chunks` as exact unit rows: a streamed pass gives every row the
    value a pass over all rows at once gives it."""
    for start, block in vectors.chunks(rows):
        yield start, unit(block)


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


@dataclass(frozen=True)
class Tuning:
    """The search parameter chosen at build time and the recall it measured."""

    param: str | None  # "nprobe", "efSearch" or None for exact indexes
    value: int | None
    recall_at_10: float
    queries: int


def tune_search(
    index: VectorIndex,
    vectors: np.ndarray | EmbeddingShards,
    ids: np.ndarray | None = None,
    *,
    queries: int = 500,
    target: float = TARGET_RECALL,
    seed: int = 0,
) -> Tuning:
    """Smallest ``nprobe`` (IVF) or ``efSearch`` (HNSW) reaching recall@10 >= ``target`` against exact
    search, on ``queries`` held-out rows of ``vectors`` (the index's own embeddings under ``ids``, default
    0..n-1, lightly perturbed so a query is not trivially its own nearest neighbour); the value is saved
    as the index's default."""
    base = faiss.downcast_index(index.index)
    while isinstance(base, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
        base = faiss.downcast_index(base.index)
    if _is_ivf(index.index):
        name, values = "nprobe", [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
        limit = faiss.extract_index_ivf(index.index).nlist
    elif isinstance(base, faiss.IndexHNSW):
        name, values, limit = "efSearch", [16, 32, 64, 128, 256, 512, 1024], 1024
    else:
        return Tuning(None, None, 1.0, 0)  # exact search: nothing to tune
    source = as_shards(vectors)
    rng = np.random.default_rng(seed)
    q = unit(source.take(rng.choice(len(source), size=min(queries, len(source)), replace=False)))
    q = q + rng.normal(0, 0.01, q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    k = min(10, len(source))
    truth = exact_knn(q, source, k)
    if ids is not None:
        truth = np.asarray(ids, dtype=np.int64)[truth]
    recall = 0.0
    for value in [v for v in values if v < limit] + [limit]:
        recall = _recall(index, q, truth, k, {name: value})
        if recall >= target:
            break
    _set_default(index, name, value)
    return Tuning(name, value, recall, len(q))


def exact_knn(queries: np.ndarray, vectors: EmbeddingShards, k: int) -> np.ndarray:
    """Row numbers (Q, k) of the exact inner-product top ``k`` of unit ``queries`` over the unit rows of
    ``vectors``, merged block by block (one block in memory at a time)."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start, block in unit_blocks(vectors):
        s, i = faiss.knn(queries, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        best_s, best_i = np.hstack([best_s, s]), np.hstack([best_i, i + start])
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_i


def build_tuned(vectors: np.ndarray | EmbeddingShards, factory: str) -> VectorIndex:
    """The index of the build step over ``vectors`` (ids 0..N-1, streamed block by block from shards):
    ``factory`` resolved (``auto``), trained on a sample, filled, search defaults tuned."""
    source = as_shards(vectors, "vectors")
    index = build_from_chunks(source, resolve_factory(factory, len(source), source.dim))
    tuned = tune_search(index, source)
    if tuned.recall_at_10 < TARGET_RECALL:
        warnings.warn(
            f"{index.factory} reaches recall@10 {tuned.recall_at_10:.2f} < {TARGET_RECALL} even with "
            f"{tuned.param}={tuned.value} on its own vectors: its codes are too coarse; use more PQ "
            "bytes, add ',RFlat' re-ranking, or an IVF-Flat/HNSW preset",
            stacklevel=2,
        )
    return index


def _recall(index: VectorIndex, q: np.ndarray, truth: np.ndarray, k: int, params: dict | None) -> float:
    _, got = index.search(q, k, params=params)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), truth.tolist())]))


def _set_default(index: VectorIndex, name: str, value: int) -> None:
    if name == "nprobe":
        faiss.extract_index_ivf(index.index).nprobe = value
    else:
        base = faiss.downcast_index(index.index)
        while not isinstance(base, faiss.IndexHNSW):
            base = faiss.downcast_index(base.index)
        base.hnsw.efSearch = value
    if index.on_gpu:
        index._place(True)  # a GPU copy picks the new default up
