"""Modality-gap figures against direct computations on constructed embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from hsenet_search.errors import DatasetError
from hsenet_search.eval.gap import gap_markdown, modality_gap, plot_gap


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clusters(n=200, d=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    a, b = np.zeros(d), np.zeros(d)
    a[0], b[1] = 1.0, 1.0
    v = _unit(a + spread * rng.standard_normal((n, d)))
    t = _unit(b + spread * rng.standard_normal((n, d)))
    return v, t


def test_separate_clusters_have_a_wide_gap_and_a_perfect_probe():
    v, t = _clusters()
    r = modality_gap(v, t)
    assert r.n == 200
    assert r.centroid_distance == pytest.approx(np.linalg.norm(v.mean(0) - t.mean(0)), abs=1e-9)
    assert r.centroid_distance > 1.3  # the centres sit near e1 and e2: distance close to sqrt(2)
    assert r.probe_accuracy == 1.0


def test_identical_modalities_have_no_gap_and_a_chance_probe():
    v, _ = _clusters()
    r = modality_gap(v, v.copy())
    assert r.centroid_distance == pytest.approx(0.0, abs=1e-12)
    assert r.true_pair_cosine == pytest.approx(1.0)
    assert 0.3 <= r.probe_accuracy <= 0.7  # the same points under both labels cannot be told apart


def test_pair_cosines_equal_the_full_similarity_matrix():
    rng = np.random.default_rng(3)
    v, t = _unit(rng.standard_normal((57, 9))), _unit(rng.standard_normal((57, 9)))
    sim = v @ t.T
    off = sim[~np.eye(57, dtype=bool)]
    r = modality_gap(v * 3.0, t)  # not unit on input: normalised inside
    assert r.true_pair_cosine == pytest.approx(np.diag(sim).mean(), abs=1e-12)
    assert r.random_pair_cosine == pytest.approx(off.mean(), abs=1e-12)


@pytest.mark.parametrize("bad", ["shape", "nan", "zero", "few"])
def test_bad_embeddings_are_refused(bad):
    v, t = _clusters(n=20)
    if bad == "shape":
        t = t[:10]
    elif bad == "nan":
        v[3, 2] = np.nan
    elif bad == "zero":
        t[0] = 0.0
    else:
        v, t = v[:5], t[:5]
    with pytest.raises(DatasetError):
        modality_gap(v, t)


def test_markdown_and_plot(tmp_path):
    v, t = _clusters()
    md = gap_markdown({"demo": modality_gap(v, t)})
    assert "| demo | 200 |" in md
    png = plot_gap(v, t, tmp_path / "gap.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
