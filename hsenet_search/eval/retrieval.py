"""Retrieval metrics over a score matrix: R@k, ranks, MRR and label-Jaccard volume->volume.

``scores[i, j]`` is the similarity of query ``i`` to candidate ``j``; higher is better. For cross-modal
retrieval candidate ``i`` is query ``i``'s only true match (``Q <= C``), as in the CT-CLIP and HSENet
evaluation scripts: other reconstructions of the same scan count as misses.

Ties count against the query: the true match ranks after every other candidate with an equal score,
``rank_i = 1 + #{j != i : scores[i, j] >= scores[i, i]}``. A constant score matrix therefore gets the
worst possible ranks, never a lucky R@1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PROTOCOLS = ("clean", "ctclip")
_ROW_BLOCK = 1024


def _check_scores(scores: np.ndarray, *, square: bool = False) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be a non-empty 2-D matrix, got shape {scores.shape}")
    if square and scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be square (query x gallery over the same items), got {scores.shape}")
    if scores.shape[0] > scores.shape[1]:
        raise ValueError(f"scores has more queries than candidates {scores.shape}; candidate i must match query i")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


def check_ks(ks: Sequence[int]) -> list[int]:
    """The ks as a list of distinct positive ints (ValueError otherwise)."""
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of positive integers, got {ks}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks must not repeat a value, got {ks}")
    return ks


def ranks_of_true_match(scores: np.ndarray) -> np.ndarray:
    """1-based rank of candidate ``i`` for each query ``i``; ties count against the query."""
    scores = _check_scores(scores)
    n_queries = scores.shape[0]
    ranks = np.empty(n_queries, dtype=np.int64)
    for start in range(0, n_queries, _ROW_BLOCK):
        block = scores[start : start + _ROW_BLOCK]
        rows = np.arange(block.shape[0])
        true_scores = block[rows, rows + start]
        # The true match itself satisfies ">=", so the count is already 1 + #others at or above it.
        ranks[start : start + block.shape[0]] = (block >= true_scores[:, None]).sum(axis=1)
    return ranks


def recall_from_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """``{k: percent of queries whose true match ranks <= k}``."""
    ranks = np.asarray(ranks)
    return {k: 100.0 * float(np.mean(ranks <= k)) for k in check_ks(ks)}


def recall_at_k(scores: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Recall@k in percent for each ``k`` (ties count against the query)."""
    return recall_from_ranks(ranks_of_true_match(scores), ks)


def mean_reciprocal_rank(scores: np.ndarray) -> float:
    """Mean of ``1 / rank`` of the true match over queries."""
    return float(np.mean(1.0 / ranks_of_true_match(scores)))


def rank_summary(scores: np.ndarray) -> dict[str, float]:
    """``{"mrr", "mean_rank", "median_rank"}`` of the true match (1-based ranks)."""
    ranks = ranks_of_true_match(scores)
    return {
        "mrr": float(np.mean(1.0 / ranks)),
        "mean_rank": float(np.mean(ranks)),
        "median_rank": float(np.median(ranks)),
    }


def random_baseline_recall(n_candidates: int, ks: Sequence[int]) -> dict[int, float]:
    """Expected R@k in percent of a uniformly random ranking of ``n_candidates``: ``100 * min(k, n) / n``."""
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be positive, got {n_candidates}")
    return {k: 100.0 * min(k, n_candidates) / n_candidates for k in check_ks(ks)}


def _check_labels(labels: np.ndarray, n_items: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != n_items:
        raise ValueError(f"labels must have shape ({n_items}, n_labels), got {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    return labels.astype(np.float64)


def _jaccard(query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """Jaccard of positive-label sets, queries x gallery; two empty sets give 1."""
    inter = query_labels @ gallery_labels.T
    union = query_labels.sum(1)[:, None] + gallery_labels.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.ones_like(inter), where=union > 0)


def _score_order(scores: np.ndarray) -> np.ndarray:
    """Column indices by descending score; equal scores keep index order (like Python's stable sort)."""
    return np.argsort(-scores, axis=1, kind="stable")


def label_jaccard_per_query(
    scores: np.ndarray, labels: np.ndarray, ks: Sequence[int], protocol: str = "clean"
) -> np.ndarray:
    """Per-query values (N, len(ks)) in [0, 1] whose column means are the reported label-Jaccard@k.

    For ``protocol="ctclip"`` each row is already the running mean over ``ks`` (in the order given), so
    that column means reproduce the published cumulative values; this makes query bootstrap exact.
    See :func:`label_jaccard_at_k` for the protocols.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    scores = _check_scores(scores, square=True)
    labels = _check_labels(labels, scores.shape[0])
    ks = check_ks(ks)
    n_items = scores.shape[0]

    if protocol == "ctclip":
        gallery = np.flatnonzero(labels.sum(1) > 0)
        if gallery.size == 0:
            raise ValueError("ctclip protocol needs at least one volume with a positive label")
        order = _score_order(scores[:, gallery])
        jaccard = _jaccard(labels, labels[gallery])
    else:
        if n_items < 2:
            raise ValueError("clean protocol needs at least two volumes (the query is excluded)")
        full_order = _score_order(scores)
        keep = full_order != np.arange(n_items)[:, None]
        order = full_order[keep].reshape(n_items, n_items - 1)
        jaccard = _jaccard(labels, labels)

    ranked = np.take_along_axis(jaccard, order, axis=1)
    cumulative = np.cumsum(ranked, axis=1)
    depth = np.array([min(k, ranked.shape[1]) for k in ks])
    per_k = cumulative[:, depth - 1] / depth
    if protocol == "ctclip":
        per_k = np.cumsum(per_k, axis=1) / np.arange(1, len(ks) + 1)
    return per_k


def label_jaccard_at_k(
    scores: np.ndarray, labels: np.ndarray, ks: Sequence[int], protocol: str = "clean"
) -> dict[int, float]:
    """Volume->volume label-Jaccard@k in percent (the papers' "MAP@k" / "Top-k accuracy").

    ``scores`` is (N, N) query x gallery over the same N volumes, ``labels`` (N, 18) 0/1. The retrieved
    items of a query are its top-k gallery items by descending score, equal scores in gallery index
    order (the published code's stable sort). Each item scores the Jaccard index of the two positive
    label sets; a query scores the mean over its top k (all of the gallery when k exceeds it).

    ``protocol="ctclip"`` reproduces CT-CLIP's ``volume_to_volume_new.py`` and HSENet's stage-1/2
    retrieval scripts exactly: all N volumes are queries, the gallery holds only volumes with at least
    one positive label, the query is *not* removed from it (an abnormal query finds itself), a normal
    query scores 0 (its label set is empty and no gallery item is), and the value reported for ``ks[j]``
    is the running mean of the per-query scores of ``ks[0..j]`` (the never-reset list of the published
    code), in the order ``ks`` is given.

    ``protocol="clean"``: the query is removed from its own gallery, the gallery is every other volume,
    two normal volumes are fully relevant to each other (Jaccard of two empty sets = 1) and each k is
    averaged on its own.
    """
    values = label_jaccard_per_query(scores, labels, ks, protocol).mean(axis=0)
    return {k: 100.0 * float(v) for k, v in zip(check_ks(ks), values, strict=True)}
