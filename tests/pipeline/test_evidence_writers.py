"""Index writers with another model or unreadable volumes: ``--resume`` and ``index add`` refuse another
model in one line and leave what exists untouched; a volume that cannot be read during a resume or an add
lands in ``failures.parquet`` while the rest completes and nothing already written is lost."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hsenet_search.data.dataset import open_dataset
from hsenet_search.errors import HSENetError, IndexMismatchError
from hsenet_search.index.builder import BuildConfig, add_to_index, build_index
from hsenet_search.index.store import open_index_dir, read_embeddings, read_metadata
from hsenet_search.models import load_model

SMALL = {"batch_size": 2, "shard_size": 2, "workers": 0}


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def vectors_by_name(index: Path) -> dict[str, np.ndarray]:
    meta = read_metadata(index / "metadata.parquet")
    return dict(zip(meta["volume_name"], read_embeddings(index, "volumes"), strict=True))


def corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a truncated .gz


def assert_vectors_of(index: Path, reference: Path) -> None:
    """Every vector of ``index`` equals the same volume's vector in ``reference`` (a clean full build)."""
    expected = vectors_by_name(reference)
    for name, vector in vectors_by_name(index).items():
        np.testing.assert_allclose(vector, expected[name], atol=2e-3, err_msg=name)


def test_resume_refuses_another_model_and_records_failures_of_both_parts(
    tmp_path, monkeypatch, cli_main, dataset_copy, index_dir, model_dir, other_model_dir
):
    from hsenet_search.index import shards as shard_module

    cases = open_dataset(dataset_copy)
    early, late = cases[1], cases[-1]
    corrupt(early.path)  # fails before the interruption: its failure must survive the resume
    out = tmp_path / "idx"
    partial = tmp_path / "idx.partial"
    real = shard_module.write_parquet
    written = [0]

    def filling(path, table, **kw):
        if written[0] >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written[0] += 1
        return real(path, table, **kw)

    monkeypatch.setattr(shard_module, "write_parquet", filling)
    with pytest.raises(HSENetError, match="No space left on device"):
        build_index(BuildConfig(data=str(dataset_copy), out=str(out), model=str(model_dir), **SMALL))
    monkeypatch.setattr(shard_module, "write_parquet", real)
    assert not out.exists() and early.volume_name in (partial / "failures.jsonl").read_text()
    corrupt(late.path)  # fails after the interruption, during the resume
    before = snapshot(partial)

    args = ("index", "build", dataset_copy, "--out", out, "--resume", "--batch-size", "2", "--shard-size=2")
    refused = cli_main(*args, "--workers", "0", "--model", other_model_dir)
    refused.one_line_error("cannot resume", "model", str(partial))
    assert snapshot(partial) == before and not out.exists()

    model = load_model(model_dir)
    encoded = [0]
    encode_volume = model.encode_volume

    def counting(x, **kw):
        encoded[0] += len(x)
        return encode_volume(x, **kw)

    monkeypatch.setattr(model, "encode_volume", counting)
    summary = build_index(
        BuildConfig(data=str(dataset_copy), out=str(out), model=str(model_dir), resume=True, **SMALL),
        model=model,
        progress=False,
    )
    assert summary.resumed_from == 7 and encoded[0] == len(cases) - 7 - 1  # 6 stored + 1 failed; late fails
    failures = pd.read_parquet(out / "failures.parquet")
    assert sorted(failures["volume_name"]) == sorted([early.volume_name, late.volume_name])
    assert all(Path(p).name in e for p, e in zip(failures["path"], failures["error"], strict=True))
    names = set(read_metadata(out / "metadata.parquet")["volume_name"])
    assert names == {c.volume_name for c in cases} - {early.volume_name, late.volume_name}
    assert_vectors_of(out, index_dir)
    assert open_index_dir(out, verify="full").counts["failures"] == 2 and not partial.exists()


def test_add_refuses_another_model_and_records_an_unreadable_volume(
    tmp_path, cli_main, dataset_copy, index_dir, model_dir, other_model_dir
):
    own_model = tmp_path / "model"  # the model directory the index records (swapped below)
    shutil.copytree(model_dir, own_model)
    train, valid = open_dataset(dataset_copy, split="train"), open_dataset(dataset_copy, split="valid")
    corrupt(train[0].path)
    out = tmp_path / "idx"
    build_index(
        BuildConfig(data=str(dataset_copy), out=str(out), model=str(own_model), split="train", workers=0),
        progress=False,
    )
    before = snapshot(out)
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        add_to_index(out, str(dataset_copy), model=load_model(other_model_dir), split="valid", progress=False)
    shutil.rmtree(own_model)
    shutil.copytree(other_model_dir, own_model)  # the recorded model now holds other weights
    add = ("index", "add", out, dataset_copy, "--split", "valid", "--workers", "0")
    cli_main(*add).one_line_error("fingerprint", str(out.resolve()))
    assert snapshot(out) == before and not (tmp_path / "idx.add.partial").exists()

    shutil.rmtree(own_model)
    shutil.copytree(model_dir, own_model)
    victim = valid[1]
    corrupt(victim.path)
    res = cli_main(*add)
    assert res.code == 0, res.err
    assert f"{len(valid) - 1} volumes added" in " ".join(res.out.split())
    assert victim.path.name in "".join(res.out.split())  # the summary names the failed file
    failures = pd.read_parquet(out / "failures.parquet")
    assert failures["volume_name"].tolist() == [train[0].volume_name, victim.volume_name]
    names = set(read_metadata(out / "metadata.parquet")["volume_name"])
    assert names == {c.volume_name for c in [*train, *valid]} - {train[0].volume_name, victim.volume_name}
    assert_vectors_of(out, index_dir)  # the stored train vectors are kept, the added ones are right
    assert open_index_dir(out, verify="full").counts["failures"] == 2


def test_ivf_factory_through_build_and_add_matches_brute_force(tmp_path, cli_main, make_ctrate, model_dir):
    """An IVF factory through the builder (trained on the volumes, nprobe saved) and through ``index add``
    (extended in place); every search returns the brute-force top-k scores. Too few vectors: one line."""
    from hsenet_search.engine import SearchEngine

    train = {f"train_{i}_a": 1 for i in range(80)}  # 80 scans: 80 volumes and 80 distinct reports >= 2 x 39
    valid = {f"valid_{i}_a": 1 for i in range(4)}
    data = make_ctrate(tmp_path / "ct", scans={"train": train, "valid": valid})
    out = tmp_path / "idx"
    build = ("index", "build", data, "--model", model_dir, "--workers", "0", "--factory", "IVF2,Flat")
    few = cli_main(*build, "--out", tmp_path / "few", "--split", "valid")  # 4 vectors for 2 lists
    few.one_line_error("at least 78 training vectors, got 4")
    assert not (tmp_path / "few" / "manifest.json").exists()
    res = cli_main(*build, "--out", out, "--split", "train")
    assert res.code == 0, res.err
    for n, added in ((80, False), (84, True)):
        if added:
            res = cli_main("index", "add", out, data, "--split", "valid", "--workers", "0")
            assert res.code == 0 and "4 volumes added" in " ".join(res.out.split()), res.err
        engine = SearchEngine.open(out, model=load_model(model_dir))
        manifest = engine.manifest
        assert "IVF2,Flat" in manifest.factory and manifest.counts["volumes"] == engine.volumes.ntotal == n
        assert manifest.trained_on["volumes"] == 80  # add extends the trained index, no retraining
        vectors = read_embeddings(out, "volumes").astype(np.float32)
        q = engine.encode_text("Findings of train_7_a. Impression train_7_a.")
        expected = np.sort(vectors @ q[0])[::-1][:5]
        hits = engine.search_embedding(q, k=5).hits
        np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)
        np.testing.assert_allclose([vectors[h.row_id] @ q[0] for h in hits], expected, atol=1e-5)
