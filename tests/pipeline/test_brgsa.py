"""BrgSA end to end: ``train --bridge cmki`` on the shipped model, summaries as training text, and an index
of a bridged model that searches with the bridged score (checked against an independent numpy computation)."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch

from hsenet_search.data.summarise import draw_summary
from hsenet_search.errors import DatasetError, HSENetError, ModelError
from hsenet_search.models import load_model
from hsenet_search.train.trainer import TrainConfig, Trainer

from .conftest import run_cli


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), batch_size=8, workers=0, augment="none", save_every=2, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def test_cmki_fine_tunes_bank_and_projections_on_the_shipped_model(tmp_path, synth_data, model_dir):
    out = tmp_path / "cmki"
    result = Trainer(
        _cfg(synth_data, out, init=str(model_dir), steps=2, bridge="cmki", bank_size=64, train_parts="heads")
    ).train(progress=False)
    trained, start = load_model(out), load_model(model_dir)
    assert trained.config.bank_size == 64 and trained.bridged
    assert json.loads((out / "config.json").read_text())["config"]["bank_size"] == 64
    first = result.history[0]
    terms = first["contrastive"] + 0.5 * first["reconstruction"] + first["bridged"]
    assert first["loss"] == pytest.approx(terms)
    before, after = start.state_dict(), trained.state_dict()
    changed = {k for k in after if k not in before or not torch.equal(before[k], after[k])}
    assert "stages.stage1.bank.weight" in changed and "stages.stage1.mm_vision_proj.weight" in changed
    trained_keys = changed - {"stages.stage2.bank.weight"}  # the other tower's bank is new, not trained
    assert all(k.startswith("stages.stage1.") and ("proj" in k or "bank" in k) for k in trained_keys), changed
    assert result.final_validation is not None and "t2v_R@5" in result.final_validation
    # a bridged model cannot be trained without its bank's loss
    with pytest.raises(ModelError, match="--bridge cmki"):
        Trainer(_cfg(synth_data, tmp_path / "n", init=str(out), steps=1, bridge="none"))
    with pytest.raises(HSENetError, match="leave --loss at clip"):
        Trainer(_cfg(synth_data, tmp_path / "s", steps=1, bridge="cmki", loss="siglip"))


def test_train_cli_bridge_options(tmp_path, synth_data, model_dir):
    out = tmp_path / "cli"
    args = ["train", "--data", synth_data, "--out", out, "--init", model_dir, "--steps", "1"]
    args += ["--batch-size", "8"]
    res = run_cli(
        *args,
        "--workers",
        "0",
        "--bridge",
        "cmki",
        "--bank-size",
        "32",
        "--train-parts",
        "heads",
        "--text-source",
        "both",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "config.json").read_text())["config"]["bank_size"] == 32
    saved = json.loads((out / "training" / "stage1" / "config.json").read_text())
    assert (saved["bridge"], saved["text_source"], saved["train_parts"]) == ("cmki", "both", "heads")
    bad = run_cli(*args[:4], tmp_path / "x", *args[5:], "--bridge", "cmki", "--loss", "siglip")
    assert bad.returncode == 2 and "--loss" in bad.stderr and "Traceback" not in bad.stderr


def test_summary_text_draws_at_most_five_sentences_in_order():
    sentences = [f"Finding {i}." for i in range(8)]
    rng = random.Random(0)
    seen = set()
    for _ in range(20):
        numbers = [int(tok.rstrip(".")) for tok in draw_summary(sentences, rng).split() if tok[0].isdigit()]
        assert len(numbers) == 5 and numbers == sorted(set(numbers))
        seen.add(tuple(numbers))
    assert len(seen) > 1  # a random draw, not always the same five
    assert draw_summary(sentences[:3], rng) == "Finding 0. Finding 1. Finding 2."


def test_training_on_summaries_and_both(tmp_path, synth_data):
    from hsenet_search.data.dataset import open_dataset
    from hsenet_search.data.summarise import rule_summary

    trainer = Trainer(_cfg(synth_data, tmp_path / "s", steps=1, text_source="summary"))
    drawn = trainer._drawn_texts(torch.arange(len(trainer.train_texts)), step=0)
    reports = {c.scan_id: c.report for c in open_dataset(synth_data, split="train")}
    for scan in trainer.train_scans:
        expected = rule_summary(reports[scan.scan_id])
        assert drawn[scan.text_index] == draw_summary(expected, random.Random(0)) or len(expected) > 5
        assert all(s in " ".join(expected) for s in drawn[scan.text_index].split(". ") if s)
    assert trainer.train(progress=False).steps == 1
    both = Trainer(_cfg(synth_data, tmp_path / "b", steps=1, text_source="both"))
    texts = both._drawn_texts(torch.arange(len(both.train_texts)), step=3)
    assert any(t in both.train_texts for t in texts) and any(t not in both.train_texts for t in texts)


def test_summaries_file_is_used_and_a_missing_summary_is_one_error(tmp_path, synth_data):
    table = tmp_path / "summaries.parquet"
    res = run_cli("data", "summarise", synth_data, "--out", table, "--cache-dir", tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    frame = pd.read_parquet(table)
    frame["summary"] = [["Marker sentence number one."]] * len(frame)
    frame.to_parquet(table)
    trainer = Trainer(_cfg(synth_data, tmp_path / "f", steps=1, text_source="summary", summaries=str(table)))
    assert set(trainer._drawn_texts(torch.arange(4), step=0)) == {"Marker sentence number one."}
    frame.iloc[:0].to_parquet(table)
    with pytest.raises(DatasetError, match="re-run data summarise"):
        Trainer(_cfg(synth_data, tmp_path / "g", steps=1, text_source="summary", summaries=str(table)))


@pytest.fixture(scope="module")
def bridged_index(tmp_path_factory, synth_data, model_dir):
    from hsenet_search.index.builder import BuildConfig, build_index

    torch.manual_seed(7)
    model = load_model(model_dir)
    model.add_bank(48)
    with torch.no_grad():
        for stage in model.stages.values():
            stage.bank.weight.mul_(3.0)  # sharper read-outs: the bridged and plain rankings differ
    root = tmp_path_factory.mktemp("bridged")
    model.save_pretrained(root / "model")
    out = root / "index"
    build_index(
        BuildConfig(data=str(synth_data), out=str(out), model=str(root / "model"), workers=0, batch_size=4),
        progress=False,
    )
    return out, root / "model"


def _numpy_reference(model_dir, index_dir):
    """Per indexed volume, the plain unit embedding p and the unit bank read-out r (numpy softmax read-out of
    the raw projected tower features), both fused as [stage1, stage2] / sqrt 2."""
    from hsenet_search.embedding import prepare_case, slice_recipe
    from hsenet_search.index.store import read_metadata

    model = load_model(model_dir)
    meta = read_metadata(index_dir / "metadata.parquet").sort_values("row_id")
    ps, rs = [], []
    for path in meta["path"]:
        from hsenet_search.data.resolve import resolve_input

        prepared = prepare_case(resolve_input(path), model.profile, slice_recipe(model))
        x = torch.from_numpy(prepared.volume[None])
        p_towers, r_towers = [], []
        for tower in ("stage1", "stage2"):
            with torch.no_grad():
                e = model.vision_projected(x, tower).double().numpy()[0]
            w = model.bank(tower).weight.detach().double().numpy()
            logits = w @ e
            a = np.exp(logits - logits.max())
            r = (a / a.sum()) @ w
            p_towers.append(e / np.linalg.norm(e))
            r_towers.append(r / np.linalg.norm(r))
        ps.append(np.concatenate(p_towers) / np.sqrt(2))
        rs.append(np.concatenate(r_towers) / np.sqrt(2))
    return meta, np.array(ps), np.array(rs), model


def test_bridged_index_searches_with_the_bridged_score(bridged_index):
    from hsenet_search.engine import SearchEngine

    index_dir, model_dir = bridged_index
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["bridge"]["method"] == "cmki" and manifest["bridge"]["bank_size"] == 48
    assert manifest["dims"] == {"volumes": 512, "reports": 256}  # fusion: 2 x 128; volumes stored [p, r]
    meta, p, r, model = _numpy_reference(model_dir, index_dir)
    engine = SearchEngine.open(index_dir)
    n = len(meta)
    query = "Bilateral pleural effusion and cardiomegaly."
    t = model.encode_text([query]).double().numpy()[0]
    bridged = 0.5 * (p @ t + r @ t)  # ½[cos(img, txt) + cos(bank(img), txt)] per tower, averaged
    plain = p @ t
    hits = engine.search_text(query, k=n, collapse=False).hits
    _assert_ranked_by(hits, [h.row_id for h in hits], bridged, n)
    assert list(np.argsort(-plain)) != list(np.argsort(-bridged))  # the bridged score is not the plain one

    # volume → volume: plain cosine; volume → report: bridged score against the report vectors
    q = 5
    vv = engine.search_volume(meta["path"].iloc[q], k=n, collapse=False).hits
    _assert_ranked_by(vv, [h.row_id for h in vv], p @ p[q], n)
    assert vv[0].row_id == q
    reports = engine.reports.ntotal
    vr = engine.search_volume(meta["path"].iloc[q], k=reports, target="reports").hits
    from hsenet_search.index.store import read_embeddings

    report_vectors = read_embeddings(index_dir, "reports").astype(np.float64)
    expected = 0.5 * (report_vectors @ p[q] + report_vectors @ r[q])
    _assert_ranked_by(vr, [h.report_id for h in vr], expected, reports)


def _assert_ranked_by(hits, ids, reference, n, tol=2e-3):
    """Every item came back once, each score is the reference score, and the order follows the reference."""
    assert sorted(ids) == list(range(n))
    ref = np.asarray(reference)[ids]
    np.testing.assert_allclose([h.score for h in hits], ref, atol=tol)
    assert (np.diff(ref) <= tol).all()  # non-increasing up to the float16 storage of the vectors


def test_bridged_index_benchmarks_and_gap(bridged_index, tmp_path):
    index_dir, _ = bridged_index
    res = run_cli("bench", "gap", "--index", index_dir, "--out", tmp_path / "gap.json")
    assert res.returncode == 0, res.stderr
    gap = json.loads((tmp_path / "gap.json").read_text())
    assert gap["volume_vector"] == "bridged" and 0 <= gap["plain"]["centroid_distance"] <= 2
    assert gap["plain"]["centroid_distance"] != pytest.approx(gap["centroid_distance"])
    res = run_cli("bench", "retrieval", "--index", index_dir, "--bootstrap", "20", "--out", tmp_path / "r")
    assert res.returncode == 0, res.stderr


def test_zeroshot_on_never_labelled_findings(tmp_path, model_dir):
    from sklearn.metrics import roc_auc_score

    from hsenet_search.data.synth import generate_dataset
    from hsenet_search.data.synth.extra import EXTRA_LABELS
    from hsenet_search.eval.zeroshot import prompt_pair
    from hsenet_search.index.builder import BuildConfig, build_index
    from hsenet_search.index.store import read_embeddings, read_metadata

    data, index = tmp_path / "data", tmp_path / "index"
    generate_dataset(data, 40, seed=31, valid_fraction=0.5, workers=2, extra_findings=True)
    build_index(BuildConfig(data=str(data), out=str(index), model=str(model_dir), workers=0), progress=False)
    truth = [data / "extra_findings" / f"{s}_extra_labels.csv" for s in ("valid", "train")]
    out = tmp_path / "zs"
    res = run_cli(
        "bench",
        "zeroshot",
        "--index",
        index,
        "--split",
        "valid",
        "--extra-labels",
        truth[0],
        "--extra-labels",
        truth[1],
        "--out",
        out,
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["labels"] == list(EXTRA_LABELS) and "separate_split" in result
    # independently: one reconstruction per valid scan, prompt-pair score difference, sklearn AUROC
    meta = read_metadata(index / "metadata.parquet")
    rows = meta[meta["split"] == "valid"].sort_values("volume_name").drop_duplicates("scan_id")
    rows = rows.sort_values("row_id")
    vol = read_embeddings(index, "volumes")[rows["row_id"].to_numpy()]
    model = load_model(model_dir)
    pos = model.encode_text([prompt_pair(x)[0] for x in EXTRA_LABELS]).numpy()
    neg = model.encode_text([prompt_pair(x)[1] for x in EXTRA_LABELS]).numpy()
    y = pd.read_csv(truth[0]).set_index("VolumeName").loc[rows["volume_name"], list(EXTRA_LABELS)].to_numpy()
    assert result["n"] == len(rows)
    defined = 0
    for c, label in enumerate(EXTRA_LABELS):
        got = result["same_split"]["per_label"][label]["auc"]
        if y[:, c].min() == y[:, c].max():
            assert got is None or np.isnan(got)
            continue
        defined += 1
        assert got == pytest.approx(roc_auc_score(y[:, c], vol @ pos[c] - vol @ neg[c]), abs=0.02)
    assert defined >= 2
    ci = result["macro_auc_ci"]
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    bad = run_cli("bench", "zeroshot", "--index", index, "--extra-labels", data / "nope.csv")
    assert bad.returncode == 2 and "nope.csv" in bad.stderr and "Traceback" not in bad.stderr
