"""FAISS presets, ``--factory auto``, shard-by-shard IVF builds, build-time nprobe/efSearch tuning, mmap."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from hsenet_search.errors import IndexFormatError
from hsenet_search.index.factories import (
    build_from_chunks,
    build_tuned,
    choose_factory,
    estimate_bytes,
    parse_budget,
    resolve_factory,
    training_sample,
    tune_search,
)
from hsenet_search.index.faiss_backend import VectorIndex
from hsenet_search.index.store import EmbeddingShards, open_embeddings, write_embeddings


def clustered(n: int, dim: int = 64, seed: int = 0, clusters: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.7 * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("n", "budget", "expected"),
    [
        (10_000, "4G", "IDMap2,Flat"),
        (150_000, "4G", "IDMap2,Flat"),
        (1_000_000, "4G", "IDMap2,HNSW32"),
        (1_000_000, "1G", "IVF16384,Flat"),
        (1_000_000, "512M", "IVF16384_HNSW32,PQ128"),
        (5_000_000, "8G", "IVF16384,Flat"),
        (100_000_000, "16G", "IVF262144_HNSW32,PQ128"),
        (100_000_000, "8G", "IVF262144_HNSW32,PQ64"),
        (100_000_000, "4G", "IVF262144_HNSW32,PQ16"),
    ],
)
def test_auto_picks_the_first_preset_that_fits(n, budget, expected):
    choice = choose_factory(n, 256, parse_budget(budget))
    assert choice.factory == expected
    assert choice.bytes <= parse_budget(budget)
    assert resolve_factory(f"auto:{budget}", n, 256) == expected


def test_estimates_grow_with_precision():
    n, d = 1_000_000, 256
    flat, hnsw = estimate_bytes("IDMap2,Flat", n, d), estimate_bytes("IDMap2,HNSW32", n, d)
    ivf, pq = estimate_bytes("IVF4096,Flat", n, d), estimate_bytes("IVF4096,PQ32", n, d)
    assert pq < ivf < hnsw and flat < hnsw
    assert pq < 50 * n  # 32-byte codes + 8-byte ids


def test_budget_and_explicit_factories():
    assert parse_budget("512M") == 512 << 20 and parse_budget("1.5G") == int(1.5 * (1 << 30))
    assert resolve_factory("IVF64,SQ8", 10, 64) == "IVF64,SQ8"
    with pytest.raises(IndexFormatError, match="memory budget"):
        parse_budget("lots")


def test_auto_factories_build_and_search_at_several_sizes():
    for n in (500, 3_000):
        x = clustered(n)
        index = build_tuned(x, "auto")
        assert index.ntotal == n
        assert (index.search(x[:5], 1)[1][:, 0] == np.arange(5)).all()


def _lists(index: VectorIndex) -> list[np.ndarray]:
    """The ids of every inverted list, in list order."""
    ivf = faiss.extract_index_ivf(index.index)
    return [faiss.rev_swig_ptr(ivf.invlists.get_ids(i), ivf.invlists.list_size(i)).copy() for i in range(ivf.nlist)]


@pytest.mark.parametrize("factory", ["IVF32,Flat", "IVF32,SQ8"])
def test_ivf_built_shard_by_shard_equals_ivf_built_at_once(factory, tmp_path):
    write_embeddings(tmp_path, "volumes", clustered(12_000), rows_per_shard=2_500)  # 5 float16 shards
    shards = open_embeddings(tmp_path, "volumes")
    x = shards.to_array()
    sample = training_sample(shards, 10_000, seed=3)
    assert sample.shape == (10_000, x.shape[1])
    at_once = VectorIndex.build(x, np.arange(len(x)), factory, train_vectors=sample)
    by_shard = build_from_chunks(shards, factory, sample=sample)
    for ids_a, ids_b in zip(_lists(at_once), _lists(by_shard), strict=True):  # same lists, same order
        np.testing.assert_array_equal(ids_a, ids_b)
    q = clustered(50, seed=9)
    np.testing.assert_array_equal(
        at_once.search(q, 10, params="nprobe=4")[1], by_shard.search(q, 10, params="nprobe=4")[1]
    )
    # no sample given: the streamed build draws the very rows FAISS subsamples from all vectors at once
    default_at_once = VectorIndex.build(x, np.arange(len(x)), factory)
    default_by_shard = build_from_chunks(shards, factory)
    for ids_a, ids_b in zip(_lists(default_at_once), _lists(default_by_shard), strict=True):
        np.testing.assert_array_equal(ids_a, ids_b)


def test_training_sample_draws_from_every_chunk():
    x = np.repeat(np.arange(10, dtype=np.float32)[:, None], 4, axis=1).repeat(100, axis=0)
    shards = EmbeddingShards([x[i : i + 100] for i in range(0, 1000, 100)])  # 10 parts
    sample = training_sample(shards, 500, seed=0)
    assert set(np.unique(sample[:, 0])) == set(range(10))
    np.testing.assert_array_equal(training_sample(shards, 5000), x)  # fewer rows than asked: all, in order


def test_tuning_reaches_the_target_recall_and_is_saved(tmp_path):
    x = clustered(20_000, seed=1, clusters=400)
    index = VectorIndex.build(x, np.arange(len(x)) + 7, "IVF128,Flat")
    tuned = tune_search(index, x, np.arange(len(x)) + 7, target=0.95)
    assert tuned.param == "nprobe" and tuned.recall_at_10 >= 0.95
    assert 1 <= tuned.value < 128  # clustered data: far fewer lists than all of them
    assert tune_search(index, x, np.arange(len(x)) + 7, target=0.5).value <= tuned.value
    index.save(tmp_path / "i.faiss")
    assert faiss.extract_index_ivf(VectorIndex.load(tmp_path / "i.faiss").index).nprobe == tuned.value


def test_tuning_hnsw_sets_ef_search():
    x = clustered(4_000, seed=2)
    index = VectorIndex.build(x, np.arange(len(x)), "HNSW16")
    tuned = tune_search(index, x)
    assert tuned.param == "efSearch" and tuned.recall_at_10 >= 0.95
    assert tune_search(VectorIndex.build(x, np.arange(len(x)), "IDMap2,Flat"), x).param is None


def test_ivf_files_are_served_with_on_disk_lists(tmp_path):
    x = clustered(6_000)
    index = VectorIndex.build(x, np.arange(len(x)), "IVF32,Flat")
    index.save(tmp_path / "ivf.faiss")
    mapped = VectorIndex.load(tmp_path / "ivf.faiss", mmap=True)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(mapped.index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists)
    np.testing.assert_array_equal(mapped.search(x[:20], 5)[1], index.search(x[:20], 5)[1])
    flat = VectorIndex.build(x, np.arange(len(x)), "IDMap2,Flat")
    flat.save(tmp_path / "flat.faiss")
    np.testing.assert_array_equal(
        VectorIndex.load(tmp_path / "flat.faiss", mmap=True).search(x[:3], 2)[1], flat.search(x[:3], 2)[1]
    )
