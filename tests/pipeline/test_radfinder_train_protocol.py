"""RadFinder's recipe from the ``train`` CLI (``--loss siglip --prompt-loss radfinder``) and its retrieval
protocol from ``bench retrieval --dedup``."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from hsenet_search.eval.bench import load_index_embeddings
from hsenet_search.train.trainer import TrainConfig, Trainer

from .conftest import run_cli


def test_siglip_starts_as_radfinder_specifies(tmp_path, synth_data):
    cfg = TrainConfig(
        data=str(synth_data),
        out=str(tmp_path / "m"),
        steps=1,
        batch_size=8,
        workers=0,
        loss="siglip",
        prompt_loss="radfinder",
        prompt_loss_weight=0.5,
    )
    trainer = Trainer(cfg)
    assert float(trainer.model.logit_scale("stage1").detach()) == pytest.approx(10.0)
    assert float(trainer.logit_bias.detach()) == -10.0
    labels = np.array([s.labels for s in trainer.train_scans])
    pos, neg = (labels == 1).sum(0), (labels == 0).sum(0)
    expected = np.where(pos > 0, np.minimum(neg / np.maximum(pos, 1), 20.0), 20.0)
    np.testing.assert_allclose(trainer._pos_weight().cpu().numpy(), expected, rtol=1e-6)
    small_batch = Trainer(replace(cfg, out=str(tmp_path / "b"), siglip_bias_init=-math.log(7.0)))
    assert float(small_batch.logit_bias.detach()) == pytest.approx(-math.log(7.0))  # the named option


def test_train_cli_runs_the_radfinder_recipe(tmp_path, synth_data):
    out = tmp_path / "rf"
    res = run_cli(
        "train",
        "--data",
        synth_data,
        "--out",
        out,
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--loss",
        "siglip",
        "--prompt-loss",
        "radfinder",
    )
    assert res.returncode == 0, res.stderr
    history = json.loads((out / "training" / "stage1" / "history.json").read_text())
    assert all(math.isfinite(h["prompt"]) and h["prompt"] > 0 for h in history)
    bad = run_cli("train", "--data", synth_data, "--out", tmp_path / "x", "--steps", "1", "--prompt-loss", "mean7")
    assert bad.returncode == 2 and "--prompt-loss" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli(
        "train",
        "--data",
        synth_data,
        "--out",
        tmp_path / "y",
        "--stage",
        "2",
        "--init",
        out,
        "--steps",
        "1",
        "--loc-loss-weight",
        "1",
    )
    assert bad.returncode == 2 and "stage 1" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_retrieval_dedup_follows_radfinder(tmp_path, index_dir):
    out = tmp_path / "rf"
    exclude = tmp_path / "no_chest.txt"
    emb = load_index_embeddings(index_dir)
    rows = emb.metadata[emb.metadata["split"] == "valid"].sort_values("volume_name")
    first = rows.drop_duplicates("scan_id")
    exclude.write_text(f"# non-chest\n{first['scan_id'].iloc[0]}\n")
    res = run_cli(
        "bench",
        "retrieval",
        "--index",
        index_dir,
        "--dedup",
        "first_all",
        "--exclude",
        exclude,
        "--ks",
        "1,5",
        "--out",
        out,
    )
    assert res.returncode == 0, res.stderr
    rf = json.loads(out.with_suffix(".json").read_text())["radfinder"]
    kept = first.iloc[1:]
    assert rf["n"] == len(kept) and rf["bootstrap"] == {"resamples": 10000, "seed": 42}
    # independent ranks: each kept report against the kept volumes, ties against the query
    scores = emb.reports[kept["report_id"].to_numpy()] @ emb.volumes[kept["row_id"].to_numpy()].T
    ranks = (scores >= np.diag(scores)[:, None]).sum(1)
    assert rf["recall"]["1"]["estimate"] == pytest.approx(100 * np.mean(ranks <= 1))
    assert rf["MedR"] == math.floor(np.median(ranks - 1)) + 1 and rf["MeanR"] == pytest.approx(ranks.mean())
    assert "RadFinder protocol" in out.with_suffix(".md").read_text()
    res = run_cli("bench", "retrieval", "--index", index_dir, "--exclude", exclude)
    assert res.returncode == 2 and "--dedup" in res.stderr
