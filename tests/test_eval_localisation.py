"""Localisation metrics against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from hsenet_search.errors import DatasetError
from hsenet_search.eval.localisation import baseline_predictions, localisation_errors, summarise_errors


def test_errors_and_summary():
    errors = localisation_errors(np.array([3, 5, 9, 2]), np.array([3, 4, 6, 2]), 12.0)
    assert errors.tolist() == [0.0, 12.0, 36.0, 0.0]
    r = summarise_errors(errors, 12.0, resamples=2000)
    assert r.n == 4 and r.mae_mm == pytest.approx(12.0) and r.median_mm == pytest.approx(6.0)
    assert r.exact == 0.5 and r.within_12mm == 0.75 and r.within_24mm == 0.75
    assert 0.0 <= r.mae_low <= r.mae_mm <= r.mae_high <= 36.0


def test_bootstrap_ci_matches_a_direct_resampling():
    rng = np.random.default_rng(5)
    errors = rng.integers(0, 8, 50) * 12.0
    r = summarise_errors(errors, 12.0, resamples=3000, seed=7)
    gen = np.random.default_rng(7)
    means = np.concatenate([errors[gen.integers(0, 50, (1000, 50))].mean(1) for _ in range(3)])
    assert (r.mae_low, r.mae_high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))


def test_baselines_use_only_valid_bins():
    valid = np.zeros((3, 10), dtype=bool)
    valid[0, :10] = True
    valid[1, 2:7] = True
    valid[2, 8] = True
    base = baseline_predictions(valid)
    assert base["middle_bin"].tolist() == [5, 4, 8]
    assert all(valid[i, b] for i, b in enumerate(base["random_bin"]))


def test_no_snippets_is_an_error():
    with pytest.raises(DatasetError):
        summarise_errors(np.array([]), 12.0)
