"""Querybank normalisation: hub suppression, cross-modal R@1, exactness of the batched statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hsenet_search.errors import IndexFormatError, QueryError
from hsenet_search.index.faiss_backend import VectorIndex
from hsenet_search.index.hubness import HubnessNormalizer, gallery_normalizer, rerank


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def candidates(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return VectorIndex.build(gallery, np.arange(len(gallery))).search(queries, k)


@pytest.mark.parametrize("method", ["is", "dis"])
def test_artificial_hub_is_suppressed(method):
    """One gallery vector along the queries' shared direction is nearly everyone's top-1 until normalised."""
    rng = np.random.default_rng(0)
    d, n = 32, 200
    shared = unit(rng.standard_normal((1, d)))[0]
    gallery = unit(rng.standard_normal((n, d)))
    hub = n
    with_hub = np.vstack([gallery, shared[None]])
    queries = unit(gallery + 1.5 * shared + 0.3 * rng.standard_normal((n, d)))
    bank = unit(unit(rng.standard_normal((1000, d))) + 1.5 * shared + 0.3 * rng.standard_normal((1000, d)))
    scores, ids = candidates(with_hub, queries, 50)
    raw_hub_rate = np.mean(ids[:, 0] == hub)
    normalizer = gallery_normalizer(bank, with_hub, 20.0, method=method)
    assert normalizer.activated[hub]
    new_scores, new_ids = rerank(normalizer, scores, ids, 10)
    assert raw_hub_rate >= 0.7 and np.mean(new_ids[:, 0] == hub) <= 0.05
    assert np.mean(new_ids[:, 0] == np.arange(n)) >= np.mean(ids[:, 0] == np.arange(n)) + 0.4
    assert (np.diff(new_scores, axis=1) <= 0).all()


def test_cross_modal_recall_improves():
    """A modality gap: gallery items leaning towards the query cone by a random amount become hubs."""
    rng = np.random.default_rng(0)
    d, n = 32, 300
    gap = unit(rng.standard_normal((1, d)))[0]
    content = unit(rng.standard_normal((n, d)))
    volumes = unit(content + rng.uniform(0, 1, n)[:, None] * gap)
    texts = unit(content + 2 * gap + 0.1 * rng.standard_normal((n, d)))
    bank = unit(unit(rng.standard_normal((2000, d))) + 2 * gap + 0.1 * rng.standard_normal((2000, d)))
    scores, ids = candidates(volumes, texts, 50)
    raw_r1 = np.mean(ids[:, 0] == np.arange(n))
    raw_max_occurrence = np.bincount(ids[:, 0]).max()
    for method in ("is", "dis"):
        _, new_ids = rerank(gallery_normalizer(bank, volumes, 20.0, method=method), scores, ids, 10)
        assert np.mean(new_ids[:, 0] == np.arange(n)) >= raw_r1 + 0.2
        assert np.bincount(new_ids[:, 0]).max() <= raw_max_occurrence / 3


def test_uninformative_bank_keeps_the_ranking():
    """A bank orthogonal to the gallery gives every item the same normaliser: the ranking is unchanged."""
    rng = np.random.default_rng(1)
    gallery = unit(np.hstack([rng.standard_normal((80, 8)), np.zeros((80, 8))]))
    bank = unit(np.hstack([np.zeros((30, 8)), rng.standard_normal((30, 8))]))
    queries = unit(rng.standard_normal((20, 16)))
    normalizer = gallery_normalizer(bank, gallery, 10.0, method="is")
    np.testing.assert_allclose(normalizer.log_norm, np.log(30), rtol=1e-5)
    scores, ids = candidates(gallery, queries, 15)
    new_scores, new_ids = rerank(normalizer, scores, ids, 15)
    np.testing.assert_array_equal(new_ids, ids)
    np.testing.assert_allclose(new_scores, 10.0 * scores - np.log(30), rtol=1e-5, atol=1e-5)


def test_dis_renormalises_only_queries_whose_top1_is_activated():
    scores = np.array([[0.9, 0.8, 0.1], [0.7, 0.6, 0.5]], dtype=np.float32)
    ids = np.array([[0, 1, 2], [1, 0, -1]])
    normalizer = HubnessNormalizer(
        beta=10.0, method="dis", log_norm=np.array([5.0, 0.0, 0.0]), activated=np.array([True, False, False])
    )
    new_scores, new_ids = rerank(normalizer, scores, ids, 4)
    # query 0: top-1 (id 0) is activated -> 10*s - log_norm: id 1 (8.0) > id 0 (4.0) > id 2 (1.0)
    assert new_ids[0].tolist() == [1, 0, 2, -1]
    np.testing.assert_allclose(new_scores[0, :3], [8.0, 4.0, 1.0], rtol=1e-6)
    # query 1: top-1 (id 1) is not activated -> raw scores; the -1 slot stays empty
    assert new_ids[1].tolist() == [1, 0, -1, -1]
    np.testing.assert_allclose(new_scores[1, :2], [0.7, 0.6], rtol=1e-6)
    assert np.isneginf(new_scores[1, 2:]).all()
    with pytest.raises(QueryError, match="outside the hubness normaliser"):
        rerank(normalizer, scores, np.array([[0, 1, 7], [0, 1, 2]]), 2)


def test_batched_statistics_are_exact():
    rng = np.random.default_rng(2)
    gallery, bank = unit(rng.standard_normal((50, 12))), unit(rng.standard_normal((37, 12)))
    small = gallery_normalizer(bank, gallery, 15.0, method="dis", batch=7)
    big = gallery_normalizer(bank, gallery, 15.0, method="dis", batch=4096)
    z = 15.0 * (bank.astype(np.float64) @ gallery.T.astype(np.float64))
    want = z.max(axis=0) + np.log(np.exp(z - z.max(axis=0)).sum(axis=0))
    np.testing.assert_allclose(small.log_norm, want, rtol=1e-5)
    np.testing.assert_allclose(big.log_norm, want, rtol=1e-5)
    expected = np.zeros(50, dtype=bool)
    expected[np.argmax(bank @ gallery.T, axis=1)] = True
    np.testing.assert_array_equal(small.activated, expected)
    np.testing.assert_array_equal(big.activated, expected)
    assert gallery_normalizer(bank, gallery, 15.0, method="is").activated.all()


def test_save_load_and_errors(tmp_path: Path):
    rng = np.random.default_rng(3)
    bank, gallery = unit(rng.standard_normal((10, 6))), unit(rng.standard_normal((9, 6)))
    normalizer = gallery_normalizer(bank, gallery, 20.0)
    normalizer.save(tmp_path / "hub.npz")
    back = HubnessNormalizer.load(tmp_path / "hub.npz")
    assert (back.beta, back.method) == (20.0, "dis")
    np.testing.assert_array_equal(back.log_norm, normalizer.log_norm)
    np.testing.assert_array_equal(back.activated, normalizer.activated)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(IndexFormatError, match="not a valid hubness normaliser file") as e:
        HubnessNormalizer.load(tmp_path / "bad.npz")
    assert "bad.npz" in str(e.value)
    with pytest.raises(QueryError, match="method"):
        gallery_normalizer(np.eye(3), np.eye(3), 20.0, method="csls")
    with pytest.raises(QueryError, match="beta"):
        gallery_normalizer(np.eye(3), np.eye(3), 0.0)
    with pytest.raises(QueryError, match="dimension 4"):
        gallery_normalizer(np.ones((2, 4)), np.eye(3), 20.0)
