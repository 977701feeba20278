"""Index assembly streams the embeddings: shard by shard, the same index as in memory, bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import faiss
import numpy as np
import pytest

from hsenet_search.data.labels import LABELS
from hsenet_search.errors import IndexFormatError
from hsenet_search.index import assembly, store
from hsenet_search.index.assembly import extend_faiss, hubness_banks
from hsenet_search.index.faiss_backend import VectorIndex
from hsenet_search.index.hubness import gallery_normalizer
from hsenet_search.index.shards import ShardWriter
from hsenet_search.index.store import EmbeddingShards, open_embeddings, write_embeddings


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def row(i: int, reports: int) -> dict:
    return {
        "volume_name": f"v{i}",
        "scan_id": f"s{i // 2}",
        "split": "train",
        "path": f"/data/v{i}.nii.gz",
        "findings": f"finding number {i % reports}",
        "impression": "",
        **{name: 0 for name in LABELS},
    }


def write_shards(work: Path, x: np.ndarray, shard_size: int, reports: int = 100) -> EmbeddingShards:
    """The build's float16 shards of ``x`` (as ``index build`` writes them), opened for reading."""
    with ShardWriter(work, "volumes", shard_size=shard_size) as writer:
        for s in range(0, len(x), shard_size):
            block = range(s, min(s + shard_size, len(x)))
            writer.append([f"v{i}" for i in block], x[s : s + len(block)], [row(i, reports) for i in block])
    return ShardWriter.read(work, "volumes")[1]


def test_embedding_shards_read_blocks_across_files(tmp_path, monkeypatch):
    x = clustered(1000, 8)
    shards = write_shards(tmp_path / "work", x, 300)  # shards of 300, 300, 300, 100 rows
    assert (len(shards), shards.dim, len(shards.parts)) == (1000, 8, 4)
    blocks = list(shards.chunks(128))
    assert max(len(b) for _, b in blocks) == 128 and [s for s, _ in blocks][:4] == [0, 128, 256, 300]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), x.astype(np.float32))
    pick = np.random.default_rng(1).permutation(1000)[:77]
    np.testing.assert_array_equal(shards.take(pick), x[pick].astype(np.float32))
    np.testing.assert_array_equal(shards.tail(450).to_array(), x[450:].astype(np.float32))
    np.testing.assert_array_equal((shards + shards).tail(900).to_array()[:150], x[np.r_[900:1000, 0:50]])
    # the streamed writer (blocks smaller than a shard) writes the bytes np.save wrote before
    monkeypatch.setattr(store, "CHUNK_ROWS", 100)
    paths = write_embeddings(tmp_path / "idx", "volumes", shards, rows_per_shard=256)
    assert [p.name for p in paths] == [f"volumes_{i:05d}.npy" for i in range(4)]
    for i, p in enumerate(paths):
        np.save(tmp_path / "ref.npy", x[256 * i : 256 * (i + 1)])
        assert p.read_bytes() == (tmp_path / "ref.npy").read_bytes()
    write_embeddings(tmp_path / "idx", "volumes", shards.tail(990))  # a shorter rewrite drops old shards
    assert len(open_embeddings(tmp_path / "idx", "volumes").parts) == 1
    broken = tmp_path / "work" / "volumes_shards" / "shard_000001.npy"
    broken.write_bytes(broken.read_bytes()[:-10])
    with pytest.raises(IndexFormatError, match="shorter than its header") as e:
        ShardWriter.read(tmp_path / "work", "volumes")
    assert "shard_000001.npy" in str(e.value)


def test_streamed_steps_equal_the_in_memory_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "CHUNK_ROWS", 700)  # several blocks per pass
    shards = write_shards(tmp_path / "work", clustered(3000, 32), 1000)
    x = shards.to_array()
    reports = clustered(400, 32, seed=5).astype(np.float32)
    ids = np.arange(len(x))
    # exact index: same vectors, same search results
    q = clustered(40, 32, seed=9).astype(np.float32)
    flat = extend_faiss(shards, "IDMap2,Flat", None, 0, "volume").index
    ref = VectorIndex.build(x, ids, "IDMap2,Flat")
    for a, b in zip(flat.search(q, 10), ref.search(q, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    # IVF: same training rows, same lists, same tuned nprobe as building and tuning with all rows in memory
    from hsenet_search.index.factories import tune_search

    ivf = extend_faiss(shards, "IVF16,Flat", None, 0, "volume").index
    ref = VectorIndex.build(x, ids, "IVF16,Flat")
    tuned = tune_search(ref, x)
    assert faiss.extract_index_ivf(ivf.index).nprobe == tuned.value
    for lst in range(16):
        a, b = faiss.extract_index_ivf(ivf.index).invlists, faiss.extract_index_ivf(ref.index).invlists
        np.testing.assert_array_equal(
            faiss.rev_swig_ptr(a.get_ids(lst), a.list_size(lst)), faiss.rev_swig_ptr(b.get_ids(lst), b.list_size(lst))
        )
    # hubness statistics over the streamed gallery equal those over the whole matrices
    banks = hubness_banks(shards, EmbeddingShards([reports]))
    for name, bank, gallery in (("text_to_volumes", reports, x), ("volumes_to_reports", x, reports)):
        want = gallery_normalizer(bank, gallery, assembly.HUBNESS_BETA)
        np.testing.assert_allclose(banks[name].log_norm, want.log_norm, rtol=1e-5)
        np.testing.assert_array_equal(banks[name].activated, want.activated)
    # above HUBNESS_BANK rows the bank is a uniform sample of that many rows, its sums scaled by rows / sample
    monkeypatch.setattr(assembly, "HUBNESS_BANK", 500)
    sampled = hubness_banks(shards, EmbeddingShards([reports]))["volumes_to_reports"]
    pick = np.sort(np.random.default_rng(0).choice(len(x), 500, replace=False))
    want = gallery_normalizer(x[pick], reports, assembly.HUBNESS_BETA)
    np.testing.assert_allclose(sampled.log_norm, want.log_norm + np.log(len(x) / 500), rtol=1e-5)
    full = banks["volumes_to_reports"].log_norm
    assert np.abs(sampled.log_norm - full).mean() < 0.25 * np.abs(want.log_norm - full).mean()  # an estimate


def test_assembly_never_holds_all_rows(tmp_path, monkeypatch):
    """The whole assembly step (index build's) on shards of 12 000 x 1024 rows, blocks of 250 rows: the
    numpy memory it allocates (tracemalloc) stays under half of the float32 matrix it used to hold."""
    import torch

    from hsenet_search.embedding import index_form, volume_dim
    from hsenet_search.index.builder import BuildConfig, _assemble
    from hsenet_search.index.store import open_index_dir, read_metadata
    from hsenet_search.models import create_model

    torch.manual_seed(0)
    model = create_model("tiny", projection_dim=512).eval()
    n, dim = 12_000, volume_dim(model, form=index_form(model))
    work, out = tmp_path / "index.partial", tmp_path / "index"
    x = clustered(n, dim)
    shards = write_shards(work, x, 3000)
    full = n * dim * 4  # the float32 matrix the in-memory assembly held (plus copies of it)
    monkeypatch.setattr(store, "CHUNK_ROWS", 250)
    monkeypatch.setattr(assembly, "HUBNESS_BANK", 256)

    tracemalloc.start()
    try:
        shards.to_array()  # the instrument sees a materialised matrix
        whole = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        cfg = BuildConfig(data=str(tmp_path), out=str(out), factory="IVF2,Flat")
        summary = _assemble(model, "tiny", work, out, cfg=cfg, source={"dataset": "synthetic"}, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert whole >= full
    assert peak < full / 2, f"assembly peak {peak / 2**20:.1f} MiB, all rows are {full / 2**20:.1f} MiB"
    # and it published the index of those shards
    manifest = open_index_dir(out)
    assert summary.volumes == manifest.counts["volumes"] == n and manifest.counts["reports"] == 100
    assert read_metadata(out / "metadata.parquet")["volume_name"].tolist() == [f"v{i}" for i in range(n)]
    np.testing.assert_array_equal(open_embeddings(out, "volumes").to_array(), x.astype(np.float32))
    index = VectorIndex.load(out / "volumes.faiss")
    assert index.ntotal == n and (index.search(x[:20].astype(np.float32), 1)[1][:, 0] == np.arange(20)).all()
