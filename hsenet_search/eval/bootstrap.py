"""Percentile bootstrap confidence intervals over queries (items), the gallery kept whole.

Resampling is over queries with replacement; the candidate pool is never resampled, so R@k of a resample
is the mean of the fixed per-query hit indicators over the drawn queries. Intervals are the
``alpha/2`` and ``1 - alpha/2`` percentiles of the resampled statistic (linear interpolation, NaN
resamples ignored); the estimate is the statistic on all items.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hsenet_search.eval.retrieval import check_ks, label_jaccard_per_query, ranks_of_true_match

_BOOT_BLOCK = 256


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate with its percentile-bootstrap interval ``[low, high]``."""

    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def _check_args(n_items: int, n_boot: int, alpha: float) -> None:
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _interval(estimate: float, samples: np.ndarray, alpha: float) -> BootstrapCI:
    if np.isnan(samples).all():
        return BootstrapCI(float(estimate), float("nan"), float("nan"))
    low, high = np.nanpercentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return BootstrapCI(float(estimate), float(low), float(high))


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray], float | Mapping[Hashable, float]],
    n_items: int,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapCI | dict[Hashable, BootstrapCI]:
    """Bootstrap any statistic of ``n_items`` items.

    ``metric_fn(indices)`` computes the statistic on the items ``indices`` (an int array, repeats
    allowed) and returns a float or a dict of floats; the result is one :class:`BootstrapCI` or a dict of
    them with the same keys. Deterministic for a given ``seed``.
    """
    _check_args(n_items, n_boot, alpha)
    point = metric_fn(np.arange(n_items))
    rng = np.random.default_rng(seed)
    draws = [metric_fn(rng.integers(0, n_items, size=n_items)) for _ in range(n_boot)]
    if isinstance(point, Mapping):
        return {key: _interval(value, np.array([float(d[key]) for d in draws]), alpha) for key, value in point.items()}
    return _interval(float(point), np.array(draws, dtype=np.float64), alpha)


def bootstrap_mean_ci(
    per_item: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> list[BootstrapCI]:
    """Vectorised bootstrap of column means of ``per_item`` (n_items,) or (n_items, m); one CI per column.

    Each resample is a multinomial count vector over the items (the same distribution as drawing n
    indices with replacement), so 1000 resamples of a few thousand queries take milliseconds.
    """
    values = np.asarray(per_item, dtype=np.float64)
    values = values[:, None] if values.ndim == 1 else values
    if values.ndim != 2:
        raise ValueError(f"per_item must be 1-D or 2-D, got shape {values.shape}")
    n_items = values.shape[0]
    _check_args(n_items, n_boot, alpha)
    rng = np.random.default_rng(seed)
    uniform = np.full(n_items, 1.0 / n_items)
    means = np.empty((n_boot, values.shape[1]))
    for start in range(0, n_boot, _BOOT_BLOCK):
        size = min(_BOOT_BLOCK, n_boot - start)
        counts = rng.multinomial(n_items, uniform, size=size)
        means[start : start + size] = counts @ values / n_items
    estimate = values.mean(axis=0)
    return [_interval(estimate[c], means[:, c], alpha) for c in range(values.shape[1])]


def recall_at_k_ci(
    scores: np.ndarray, ks: Sequence[int], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[int, BootstrapCI]:
    """R@k in percent with query-bootstrap intervals (ties count against the query)."""
    ks = check_ks(ks)
    ranks = ranks_of_true_match(scores)
    hits = 100.0 * (ranks[:, None] <= np.array(ks)[None, :])
    return dict(zip(ks, bootstrap_mean_ci(hits, n_boot, seed, alpha), strict=True))


def label_jaccard_ci(
    scores: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int],
    protocol: str = "clean",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[int, BootstrapCI]:
    """Label-Jaccard@k in percent (see ``retrieval.label_jaccard_at_k``) with query-bootstrap intervals."""
    ks = check_ks(ks)
    per_query = 100.0 * label_jaccard_per_query(scores, labels, ks, protocol)
    return dict(zip(ks, bootstrap_mean_ci(per_query, n_boot, seed, alpha), strict=True))
