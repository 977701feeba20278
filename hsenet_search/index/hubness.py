"""Query-time hubness correction: querybank normalisation (QB-Norm) with the (dynamic) inverted softmax.

Cross-modal embedding spaces have *hubs*: gallery items that are the nearest neighbour of many
queries. Bogolin et al., "Cross Modal Retrieval with Querybank Normalisation" (CVPR 2022), rescore a
query q against gallery item j with the inverted softmax over a bank B of reference queries::

    IS(q, j) = exp(beta * s(q, j)) / sum_{b in B} exp(beta * s(b, j))

computed here in log space, ``beta * s(q, j) - log_norm[j]``, so a hub (high similarity to the whole
bank, hence a large ``log_norm``) is pushed down. The *dynamic* inverted softmax (DIS, the paper's
default) first collects the activation set A = gallery items that are the top-1 of at least one bank
query; a query is renormalised only when its own raw top-1 item is in A, otherwise its raw scores are
kept (this is how the authors' reference code applies it: to whole query rows, k = 1). Within one query
all candidates are scored on the same scale, so the ranking is consistent; the returned scores are
log-IS values for renormalised queries and raw cosines for the others.

The engine retrieves ``k * factor`` raw candidates from FAISS and calls :func:`rerank`; gallery item j
is the row with FAISS id j (the index directory contract: row id == FAISS id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import track

from hsenet_search.atomic import atomic_open
from hsenet_search.errors import IndexFormatError, QueryError

from . import store
from .faiss_backend import as_unit_rows
from .store import EmbeddingShards, as_shards

METHODS = ("is", "dis")


@dataclass
class HubnessNormalizer:
    """Per-gallery-item bank statistics: ``log_norm[j] = log sum_b exp(beta * s(b, j))`` and the DIS mask."""

    beta: float
    method: str
    log_norm: np.ndarray
    activated: np.ndarray

    def __post_init__(self) -> None:
        self.log_norm = np.asarray(self.log_norm, dtype=np.float32)
        self.activated = np.asarray(self.activated, dtype=bool)
        if self.method not in METHODS:
            raise QueryError(f"hubness method must be one of {METHODS}, got {self.method!r}")
        if not (np.isfinite(self.beta) and self.beta > 0):
            raise QueryError(f"hubness beta must be a positive number, got {self.beta!r}")
        if self.log_norm.ndim != 1 or self.activated.shape != self.log_norm.shape:
            raise QueryError("hubness log_norm and activated must be 1-D arrays of the gallery size")

    @property
    def size(self) -> int:
        return len(self.log_norm)

    def save(self, path: str | Path) -> None:
        with atomic_open(path, "wb") as f:
            np.savez(
                f,
                beta=np.float64(self.beta),
                method=np.array(self.method),
                log_norm=self.log_norm,
                activated=self.activated,
            )

    @classmethod
    def load(cls, path: str | Path) -> HubnessNormalizer:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(float(z["beta"]), str(z["method"]), z["log_norm"], z["activated"])
        except (OSError, ValueError, KeyError, QueryError) as e:
            raise IndexFormatError(f"not a valid hubness normaliser file ({e})", path) from e


def gallery_normalizer(
    bank_queries: np.ndarray,
    gallery: np.ndarray | EmbeddingShards,
    beta: float = 20.0,
    *,
    method: str = "dis",
    batch: int = 4096,
    progress: bool = False,
) -> HubnessNormalizer:
    """Precompute the QB-Norm statistics of ``gallery`` (N, D) over ``bank_queries`` (M, D).

    Works in (batch x batch) similarity blocks, and reads ``gallery`` (an array or embedding shards on disk)
    ``batch`` rows at a time, so memory stays at the bank plus ``batch**2`` floats whatever N.
    """
    if method not in METHODS:
        raise QueryError(f"hubness method must be one of {METHODS}, got {method!r}")
    if not (np.isfinite(beta) and beta > 0):
        raise QueryError(f"hubness beta must be a positive number, got {beta!r}")
    source = (
        gallery
        if isinstance(gallery, EmbeddingShards)
        else as_shards(as_unit_rows(gallery, None, "gallery vectors", QueryError), "gallery vectors")
    )
    bank = as_unit_rows(bank_queries, source.dim or None, "bank queries", QueryError, exact=True)
    if len(bank) == 0 or len(source) == 0:
        raise QueryError("hubness normalisation needs a non-empty bank and gallery")
    log_norm = np.empty(len(source), dtype=np.float64)
    best = np.full(len(bank), -np.inf, dtype=np.float32)
    best_item = np.zeros(len(bank), dtype=np.int64)
    rows = min(batch, store.CHUNK_ROWS)
    total = -(-len(source) // rows)
    for g0, block in track(source.chunks(rows), "hubness statistics", total, disable=not progress):
        block = as_unit_rows(block, bank.shape[1], "gallery vectors", QueryError, exact=True)
        lse = np.full(len(block), -np.inf)
        for b0 in range(0, len(bank), batch):
            s = bank[b0 : b0 + batch] @ block.T  # (bank rows, gallery items)
            top = s.argmax(axis=1)
            top_val = s[np.arange(len(s)), top]
            better = top_val > best[b0 : b0 + batch]
            best[b0 : b0 + batch][better] = top_val[better]
            best_item[b0 : b0 + batch][better] = g0 + top[better]
            z = beta * s
            peak = z.max(axis=0)
            lse = np.logaddexp(lse, peak + np.log(np.exp(z - peak).sum(axis=0, dtype=np.float64)))
        log_norm[g0 : g0 + len(block)] = lse
    activated = np.zeros(len(source), dtype=bool)
    if method == "dis":
        activated[best_item] = True
    else:
        activated[:] = True
    return HubnessNormalizer(float(beta), method, log_norm.astype(np.float32), activated)


def rerank(normalizer: HubnessNormalizer, scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rescore FAISS candidates (Q, K) with the normaliser and keep the top ``k`` (padded with -1 / -inf)."""
    scores = np.asarray(scores, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    if scores.ndim != 2 or scores.shape != ids.shape:
        raise QueryError(f"scores {scores.shape} and ids {ids.shape} must be matching (Q, K) arrays")
    if k < 1:
        raise QueryError(f"k must be positive, got {k}")
    valid = ids >= 0
    if (ids >= normalizer.size).any():
        raise QueryError(
            f"candidate id {int(ids.max())} is outside the hubness normaliser's gallery "
            f"({normalizer.size} items); rebuild the index's hubness files"
        )
    safe = np.where(valid, ids, 0)
    normed = normalizer.beta * scores - normalizer.log_norm[safe]
    raw = np.where(valid, scores, -np.inf)
    if normalizer.method == "dis" and ids.shape[1] > 0:
        top1 = safe[np.arange(len(ids)), raw.argmax(axis=1)]
        rows = valid.any(axis=1) & normalizer.activated[top1]
    else:
        rows = np.ones(len(ids), dtype=bool)
    new = np.where(valid, np.where(rows[:, None], normed, scores), -np.inf).astype(np.float32)
    order = np.argsort(-new, axis=1, kind="stable")[:, :k]
    out_s = np.full((len(ids), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(ids), k), -1, dtype=np.int64)
    width = order.shape[1]
    out_s[:, :width] = np.take_along_axis(new, order, axis=1)
    out_i[:, :width] = np.where(np.isfinite(out_s[:, :width]), np.take_along_axis(ids, order, axis=1), -1)
    return out_s, out_i
