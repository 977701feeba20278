"""Index builds: files and invariants, resume after a kill, failures, add, atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from hsenet_search.data.dataset import open_dataset
from hsenet_search.errors import IndexFormatError
from hsenet_search.index.builder import BuildConfig, add_to_index, build_index
from hsenet_search.index.faiss_backend import VectorIndex
from hsenet_search.index.store import open_index_dir, read_embeddings, read_metadata

from .conftest import REPO, run_cli


def test_index_directory_contents_and_invariants(index_dir, synth_data):
    manifest = open_index_dir(index_dir)
    for name in ("manifest.json", "volumes.faiss", "reports.faiss", "metadata.parquet", "failures.parquet"):
        assert (index_dir / name).is_file(), name
    cases = open_dataset(synth_data)
    meta = read_metadata(index_dir / "metadata.parquet")
    assert manifest.counts["volumes"] == len(cases) == len(meta)
    assert manifest.counts["scans"] == len({c.scan_id for c in cases})
    assert manifest.counts["failures"] == 0
    # row id == FAISS id; float16 shards reproduce the stored vectors
    assert meta["row_id"].tolist() == list(range(len(meta)))
    emb = read_embeddings(index_dir, "volumes")
    assert emb.shape == (len(meta), manifest.dims["volumes"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=2e-3)
    index = VectorIndex.load(index_dir / "volumes.faiss")
    scores, ids = index.search(emb[:3], 1)
    assert ids[:, 0].tolist() == [0, 1, 2]
    # identical report texts are embedded once: reconstructions of a scan share one report id
    per_scan = meta.groupby("scan_id")["report_id"].nunique()
    assert (per_scan == 1).all()
    assert manifest.counts["reports"] == meta["report_id"].nunique()
    assert meta["scan_id"].nunique() < len(meta), "the fixture should contain multi-reconstruction scans"


def test_half_written_index_is_refused(tmp_path, index_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(index_dir, broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(IndexFormatError):
        open_index_dir(broken)
    res = run_cli("index", "info", broken)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert str(broken) in res.stderr and "manifest.json" in res.stderr


def _corrupt(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a truncated .gz


def test_unreadable_volume_is_recorded_and_build_carries_on(tmp_path, dataset_copy, model_dir):
    cases = open_dataset(dataset_copy)
    victim = cases[2]
    _corrupt(victim.path)
    out = tmp_path / "idx"
    summary = build_index(
        BuildConfig(data=str(dataset_copy), out=str(out), model=str(model_dir), workers=1), progress=False
    )
    assert summary.failures == 1 and summary.volumes == len(cases) - 1
    failures = pd.read_parquet(out / "failures.parquet")
    assert failures["volume_name"].tolist() == [victim.volume_name]
    assert victim.path.name in failures["error"].iloc[0]
    assert victim.volume_name not in set(read_metadata(out / "metadata.parquet")["volume_name"])


def test_killed_build_resumes_where_it_stopped(tmp_path, synth_data, model_dir):
    out = tmp_path / "idx"
    partial = tmp_path / "idx.partial"
    cmd = [
        sys.executable,
        "-m",
        "hsenet_search.cli.main",
        "index",
        "build",
        str(synth_data),
        "--out",
        str(out),
        "--model",
        str(model_dir),
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--shard-size",
        "4",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list(partial.glob("volumes_shards/shard_*.parquet"))) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards_before = len(list(partial.glob("volumes_shards/shard_*.parquet")))
    assert shards_before >= 2 and not (out / "manifest.json").exists()
    res = run_cli(
        "index",
        "build",
        synth_data,
        "--out",
        out,
        "--model",
        model_dir,
        "--resume",
        "--workers",
        "0",
        "--shard-size",
        "4",
    )
    assert res.returncode == 0, res.stderr
    assert "resumed after" in res.stdout
    fresh = tmp_path / "fresh"
    build_index(BuildConfig(data=str(synth_data), out=str(fresh), model=str(model_dir), workers=0), progress=False)
    a, b = read_metadata(out / "metadata.parquet"), read_metadata(fresh / "metadata.parquet")
    assert sorted(a["volume_name"]) == sorted(b["volume_name"])
    ea = dict(zip(a["volume_name"], read_embeddings(out, "volumes")))
    eb = dict(zip(b["volume_name"], read_embeddings(fresh, "volumes")))
    for name in ea:
        np.testing.assert_allclose(ea[name], eb[name], atol=2e-3)
    assert not partial.exists()


def test_index_add_appends_new_cases(tmp_path, synth_data, model_dir):
    out = tmp_path / "idx"
    build_index(
        BuildConfig(data=str(synth_data), out=str(out), model=str(model_dir), split="train", workers=0), progress=False
    )
    n_train = open_index_dir(out).counts["volumes"]
    summary = add_to_index(out, str(synth_data), split="valid", workers=0, progress=False)
    manifest = open_index_dir(out)
    n_valid = len(open_dataset(synth_data, split="valid"))
    assert manifest.counts["volumes"] == n_train + n_valid == summary.volumes
    meta = read_metadata(out / "metadata.parquet")
    assert set(meta["split"]) == {"train", "valid"}
    assert meta["row_id"].tolist() == list(range(len(meta)))
    assert VectorIndex.load(out / "volumes.faiss").ntotal == len(meta)
    assert manifest.source["added"][0]["split"] == "valid"


def test_index_info_cli(index_dir):
    res = run_cli("index", "info", index_dir, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["factory"] == "IDMap2,Flat" and info["metric"] == "inner_product"
    assert info["counts"]["volumes"] > 0 and info["format_version"] >= 1
