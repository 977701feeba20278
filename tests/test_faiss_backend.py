"""VectorIndex: exact and ANN search against numpy, ID-selector filters, persistence, GPU guards."""

from __future__ import annotations

import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest

from hsenet_search.errors import IndexFormatError, QueryError
from hsenet_search.index import faiss_backend
from hsenet_search.index.faiss_backend import (
    GpuPlacementError,
    IndexTrainingError,
    VectorIndex,
    gpu_count,
    suggest_factory,
)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def random_set():
    rng = np.random.default_rng(0)
    x = unit(rng.standard_normal((2000, 24)))
    ids = rng.choice(10**9, size=len(x), replace=False).astype(np.int64)  # sparse, unordered ids
    q = unit(rng.standard_normal((30, 24)))
    return x, ids, q


@pytest.fixture(scope="module")
def clustered_set():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((50, 32))
    x = unit(centres[rng.integers(0, 50, 5000)] + 0.35 * rng.standard_normal((5000, 32)))
    q = unit(centres[rng.integers(0, 50, 100)] + 0.35 * rng.standard_normal((100, 32)))
    return x, np.arange(len(x), dtype=np.int64) * 2 + 1, q


def numpy_topk(x, ids, q, k, allowed=None):
    s = q @ x.T
    if allowed is not None:
        s[:, ~np.isin(ids, allowed)] = -np.inf
    order = np.argsort(-s, axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), ids[order]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


def test_exact_flat_matches_numpy(random_set):
    x, ids, q = random_set
    index = VectorIndex.build(x, ids)
    assert (index.factory, index.dim, index.ntotal, index.on_gpu) == ("IDMap2,Flat", 24, 2000, False)
    scores, found = index.search(q, 10)
    want_s, want_i = numpy_topk(x, ids, q, 10)
    assert found.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(found, want_i)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)


def test_ids_are_stable_across_adds_and_one_dim_queries(random_set):
    x, ids, q = random_set
    index = VectorIndex.build(x[:1000], ids[:1000])
    index.add(x[1000:], ids[1000:])
    _, found = index.search(q, 5)
    np.testing.assert_array_equal(found, numpy_topk(x, ids, q, 5)[1])
    _, self_hit = index.search(x[1234], 1)  # a 1-D query is one query
    assert self_hit.tolist() == [[ids[1234]]]
    with pytest.raises(IndexFormatError, match="already in the index"):
        index.add(x[:1], ids[5:6])


def test_allowed_ids_filter_runs_inside_faiss(random_set):
    x, ids, q = random_set
    index = VectorIndex.build(x, ids)
    # the allowed vectors are the ones least similar to the query: a post-filtered top-k would be empty
    far = np.argsort(q[0] @ x.T)[:40]
    scores, found = index.search(q[:1], 10, allowed_ids=ids[far])
    assert set(found[0]) <= set(ids[far]) and (found >= 0).all()
    np.testing.assert_array_equal(found, numpy_topk(x, ids, q[:1], 10, allowed=ids[far])[1])
    # sparse id set (batch selector) and dense id set (bitmap selector) both give the restricted top-k
    dense = VectorIndex.build(x, np.arange(len(x)))
    cases = ((index, ids, ids[::7]), (dense, np.arange(len(x)), np.arange(0, 2000, 3)))
    for index_, id_space, allowed in cases:
        _, found = index_.search(q, 8, allowed_ids=allowed)
        np.testing.assert_array_equal(found, numpy_topk(x, id_space, q, 8, allowed=allowed)[1])


def test_k_larger_than_candidates_is_padded(random_set):
    x, ids, q = random_set
    index = VectorIndex.build(x[:5], ids[:5])
    scores, found = index.search(q[:2], 8)
    assert found.shape == (2, 8) and (found[:, :5] >= 0).all() and (found[:, 5:] == -1).all()
    assert np.isneginf(scores[:, 5:]).all() and np.isfinite(scores[:, :5]).all()
    scores, found = index.search(q[:2], 4, allowed_ids=ids[[1, 3]])
    assert sorted(found[0, :2]) == sorted(ids[[1, 3]]) and (found[:, 2:] == -1).all()
    _, none = index.search(q[:2], 3, allowed_ids=np.array([], dtype=np.int64))
    assert (none == -1).all()


@pytest.mark.parametrize("factory", ["IVF32,Flat", "IVF32,SQ8", "HNSW16", "SQ8"])
def test_ann_factories_train_and_recall(clustered_set, factory):
    x, ids, q = clustered_set
    exact = numpy_topk(x, ids, q, 10)[1]
    index = VectorIndex.build(x, ids, factory)
    assert index.ntotal == len(x)
    assert recall(index.search(q, 10)[1], exact) >= 0.9
    allowed = ids[::3]
    found = index.search(q, 10, allowed_ids=allowed)[1]
    assert np.isin(found[found >= 0], allowed).all()
    assert recall(found, numpy_topk(x, ids, q, 10, allowed=allowed)[1]) >= 0.85


def test_search_params_per_call(clustered_set):
    x, ids, q = clustered_set
    index = VectorIndex.build(x, ids, "IVF64,Flat")
    exact = numpy_topk(x, ids, q, 10)[1]
    one = recall(index.search(q, 10, params="nprobe=1")[1], exact)
    full = recall(index.search(q, 10, params={"nprobe": 64})[1], exact)
    assert full == 1.0 and one < full
    with pytest.raises(QueryError, match="efSearch"):
        index.search(q, 10, params="efSearch=32")
    with pytest.raises(QueryError, match="name=value"):
        index.search(q, 10, params="nprobe")


def test_refine_factory_filters_in_its_base_index(clustered_set):
    x, ids, q = clustered_set
    x, ids = x[:2500], ids[:2500]
    index = VectorIndex.build(x, ids, "IVF32,PQ8x4fs,RFlat")
    assert index.factory == "IDMap2,IVF32,PQ8x4fs,RFlat"
    allowed = ids[1::4]
    found = index.search(q, 10, allowed_ids=allowed)[1]
    assert np.isin(found[found >= 0], allowed).all()
    assert recall(found, numpy_topk(x, ids, q, 10, allowed=allowed)[1]) >= 0.8


def test_training_needs_enough_vectors(clustered_set):
    x, ids, _ = clustered_set
    with pytest.raises(IndexTrainingError, match=r"at least 9984 training vectors, got 5000"):
        VectorIndex.build(x, ids, "IVF256,Flat")
    # a separate training sample is accepted
    index = VectorIndex.build(x[:100], ids[:100], "IVF16,Flat", train_vectors=x)
    assert index.ntotal == 100
    assert suggest_factory(5000) == "IDMap2,Flat" and suggest_factory(1_000_000) == "IVF4096,SQ8"


def test_input_validation(random_set):
    x, ids, q = random_set
    bad = x[:10].copy()
    bad[3, 2] = np.nan
    with pytest.raises(IndexFormatError, match="NaN"):
        VectorIndex.build(bad, ids[:10])
    with pytest.raises(IndexFormatError, match="unique"):
        VectorIndex.build(x[:3], np.array([1, 1, 2]))
    with pytest.raises(IndexFormatError, match="factory"):
        VectorIndex.build(x[:10], ids[:10], "NoSuchIndex42")
    index = VectorIndex.build(x[:100], ids[:100])
    with pytest.raises(QueryError, match="dimension 7"):
        index.search(np.ones((1, 7)), 3)
    with pytest.raises(QueryError, match="k must be"):
        index.search(q, 0)
    with pytest.raises(QueryError, match="all-zero"):
        index.search(np.zeros((1, 24)), 3)
    with pytest.warns(UserWarning, match="not L2-normalised"):
        scaled = index.search(q * 5, 3)
    np.testing.assert_array_equal(scaled[1], index.search(q, 3)[1])


def test_reconstruct(clustered_set):
    x, ids, _ = clustered_set
    flat = VectorIndex.build(x[:200], ids[:200])
    np.testing.assert_allclose(flat.reconstruct(ids[17]), x[17], atol=1e-6)
    ivf = VectorIndex.build(x, ids, "IVF16,Flat")
    np.testing.assert_allclose(ivf.reconstruct(ids[4000]), x[4000], atol=1e-6)
    with pytest.raises(QueryError, match="not in the index"):
        flat.reconstruct(424242)


def test_save_load_and_mmap(tmp_path: Path, clustered_set):
    x, ids, q = clustered_set
    for factory in ("IDMap2,Flat", "IVF32,SQ8"):
        index = VectorIndex.build(x, ids, factory)
        path = tmp_path / f"{factory.replace(',', '_')}.faiss"
        index.save(path)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
        want = index.search(q, 10)
        for mmap in (False, True):
            loaded = VectorIndex.load(path, mmap=mmap)
            assert (loaded.factory, loaded.ntotal, loaded.read_only) == (index.factory, index.ntotal, mmap)
            got = loaded.search(q, 10)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_allclose(got[0], want[0], atol=1e-6)
        maps = Path("/proc/self/maps")
        if maps.exists():
            assert str(path) in maps.read_text()  # the codes really are memory-mapped
        with pytest.raises(IndexFormatError, match="read-only"):
            loaded.add(x[:1], np.array([10**9]))


def test_load_errors_name_the_file(tmp_path: Path, random_set):
    x, ids, _ = random_set
    with pytest.raises(IndexFormatError, match="not found") as e:
        VectorIndex.load(tmp_path / "missing.faiss")
    assert "missing.faiss" in str(e.value)
    garbage = tmp_path / "garbage.faiss"
    garbage.write_bytes(b"this is not a faiss index at all")
    good = tmp_path / "good.faiss"
    VectorIndex.build(x, ids).save(good)
    truncated = tmp_path / "truncated.faiss"
    truncated.write_bytes(good.read_bytes()[:5000])
    for path in (garbage, truncated):
        for mmap in (False, True):
            with pytest.raises(IndexFormatError, match="not a readable FAISS index") as e:
                VectorIndex.load(path, mmap=mmap)
            assert str(path) in str(e.value) and "\n" not in str(e.value)
    plain = tmp_path / "plain.faiss"
    faiss.write_index(faiss.IndexFlatIP(4), str(plain))
    with pytest.raises(IndexFormatError, match="no external ids"):
        VectorIndex.load(plain)


def test_gpu_guards_without_gpu(random_set, monkeypatch):
    x, ids, q = random_set
    monkeypatch.setattr(faiss_backend, "gpu_count", lambda: 0)  # the guards of a machine without a GPU

    def forbidden(*args, **kwargs):
        raise AssertionError("a GPU call was made although faiss sees no GPU")

    monkeypatch.setattr(faiss, "index_cpu_to_gpu", forbidden, raising=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", forbidden, raising=False)
    index = VectorIndex.build(x, ids)  # use_gpu=None: CPU here, without touching the GPU API
    assert not index.on_gpu and index.search(q, 3)[1].shape == (30, 3)
    with pytest.raises(GpuPlacementError, match="no GPU"):
        VectorIndex.build(x, ids, use_gpu=True)


def test_gpu_placement_errors_when_a_gpu_is_reported(random_set, monkeypatch):
    x, ids, q = random_set
    monkeypatch.setattr(faiss_backend, "gpu_count", lambda: 1)
    if gpu_count() > 0:  # a real GPU copies fine: make the copy fail as it does on a machine without one

        def failing_copy(*args, **kwargs):
            raise RuntimeError("cudaGetDeviceCount failed")

        monkeypatch.setattr(faiss, "index_cpu_to_gpu", failing_copy)
    with pytest.raises(GpuPlacementError, match="no FAISS GPU implementation"):
        VectorIndex.build(x, ids, "HNSW16", use_gpu=True)
    # the real copy fails here (or a faiss-cpu build has no GPU API): explicit -> error, auto -> CPU
    with pytest.raises(GpuPlacementError, match="could not copy"):
        VectorIndex.build(x, ids, use_gpu=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = VectorIndex.build(x, ids)
    assert not index.on_gpu and any("GPU copy failed" in str(w.message) for w in caught)
    np.testing.assert_array_equal(index.search(q, 5)[1], numpy_topk(x, ids, q, 5)[1])
