"""Localisation metrics in millimetres, RadFinder's protocol (spec §1.4): MAE with a bootstrap CI and baselines.

Per snippet the prediction is the argmax depth bin over the scan's valid bins; the error is
``|predicted − cited| × bin_mm``. Reported: MAE (95 % percentile bootstrap CI over snippets, 10,000
resamples, seed 42), median, exact-bin share, share within 12 mm and 24 mm. Baselines as in RadFinder's
code: a uniformly random valid bin (seed 42) and the middle valid bin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from hsenet_search.errors import DatasetError

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 42


@dataclass(frozen=True)
class LocalisationResult:
    """Error figures of one predictor over N snippets."""

    n: int
    mae_mm: float
    mae_low: float
    mae_high: float
    median_mm: float
    exact: float
    within_12mm: float
    within_24mm: float

    def to_json(self) -> dict:
        return asdict(self)


def localisation_errors(predicted: np.ndarray, cited: np.ndarray, bin_mm: float) -> np.ndarray:
    """Absolute errors in mm."""
    return np.abs(np.asarray(predicted) - np.asarray(cited)).astype(np.float64) * bin_mm


def summarise_errors(
    errors: np.ndarray, bin_mm: float, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> LocalisationResult:
    """MAE with its bootstrap CI, median, exact, ≤ 12 mm and ≤ 24 mm shares."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.size == 0:
        raise DatasetError("no localisable snippets to evaluate")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # chunks keep memory flat for large N
        stop = min(start + 1000, resamples)
        picks = rng.integers(0, errors.size, (stop - start, errors.size))
        means[start:stop] = errors[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return LocalisationResult(
        int(errors.size),
        float(errors.mean()),
        float(low),
        float(high),
        float(np.median(errors)),
        float(np.mean(errors < bin_mm / 2)),
        float(np.mean(errors <= 12.0)),
        float(np.mean(errors <= 24.0)),
    )


def baseline_predictions(valid: np.ndarray, seed: int = BOOTSTRAP_SEED) -> dict[str, np.ndarray]:
    """RadFinder's baselines per snippet: a uniformly random valid bin and the middle valid bin."""
    valid = np.asarray(valid, dtype=bool)
    rng = np.random.default_rng(seed)
    random_bins, middle_bins = [], []
    for row in valid:
        bins = np.flatnonzero(row)
        random_bins.append(int(rng.choice(bins)))
        middle_bins.append(int(bins[len(bins) // 2]))
    return {"random_bin": np.array(random_bins), "middle_bin": np.array(middle_bins)}
