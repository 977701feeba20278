"""The bench commands run on an index and write consistent JSON, Markdown and a plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hsenet_search.eval.bench import load_index_embeddings, retrieval_tables
from hsenet_search.eval.retrieval import recall_at_k

from .conftest import run_cli


def test_bench_retrieval_cli_writes_tables(index_dir, tmp_path):
    out = tmp_path / "ret"
    res = run_cli("bench", "retrieval", "--index", index_dir, "--ks", "1,5,10", "--bootstrap", "200", "--out", out)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "random baseline" in out.with_suffix(".md").read_text()
    assert result["unit"] == "scan" and result["split"] == "valid"
    n = result["n"]
    assert result["random"]["10"] == 100 * 10 / n
    for direction in ("text_to_volume", "volume_to_text"):
        for cell in result[direction]["recall"].values():
            assert cell["low"] <= cell["estimate"] <= cell["high"]
    # the JSON equals a direct computation on the index's stored embeddings
    ev = load_index_embeddings(index_dir).split("valid", "scan")
    direct = recall_at_k((ev.volumes @ ev.reports.T).T, [1, 5, 10])
    assert {int(k): v["estimate"] for k, v in result["text_to_volume"]["recall"].items()} == direct
    assert "clean" in result["volume_to_volume"] and "ctclip" in result["volume_to_volume"]
    assert result["hubness"]["bank_split"] == "train"
    assert result["machine"]["cpu"] and "load_average" in result["machine"] and result["versions"]["torch"]
    assert "bench retrieval" in result["command"]


def test_reconstruction_unit_counts_every_volume(index_dir):
    """Every volume is a query; a sibling reconstruction's identical report ties and counts as a miss."""
    from hsenet_search.index.store import read_embeddings, read_metadata

    meta = read_metadata(index_dir / "metadata.parquet")
    rows = meta[meta["report_id"] >= 0].sort_values("row_id")  # split "all": every volume of the index
    assert rows["scan_id"].nunique() < len(rows), "fixture: the index needs multi-reconstruction scans"
    volumes = read_embeddings(index_dir, "volumes").astype(np.float32)[rows["row_id"].to_numpy()]
    reports = read_embeddings(index_dir, "reports").astype(np.float32)[rows["report_id"].to_numpy()]
    scores = volumes @ reports.T
    n = len(rows)
    # independent ranks: 1 + every other candidate scoring at least the true match (ties count against)
    v2t = 1 + np.array([(np.delete(scores[i], i) >= scores[i, i]).sum() for i in range(n)])
    t2v = 1 + np.array([(np.delete(scores[:, i], i) >= scores[i, i]).sum() for i in range(n)])
    emb = load_index_embeddings(index_dir)
    result = retrieval_tables(emb.split("all", "reconstruction"), [1, 5], n_boot=50)
    assert result["n"] == n and result["unit"] == "reconstruction"
    for name, ranks in (("volume_to_text", v2t), ("text_to_volume", t2v)):
        for k in (1, 5):
            assert result[name]["recall"][str(k)]["estimate"] == pytest.approx(100 * np.mean(ranks <= k))
        assert result[name]["mrr"] == pytest.approx(np.mean(1 / ranks))
    scan_unit = emb.split("all", "scan")
    assert len(scan_unit.names) == rows["scan_id"].nunique()


def test_bench_zeroshot_cli(index_dir, model_dir, tmp_path):
    """Per-label AUCs equal sklearn's on P(present) = sigmoid(s * (cos(v, "X is present.") - cos(v, "X is not
    present."))), computed here from the stored valid-split vectors (one reconstruction per scan)."""
    from sklearn.metrics import roc_auc_score

    from hsenet_search.data.labels import LABELS
    from hsenet_search.index.store import read_embeddings, read_metadata
    from hsenet_search.models import load_model

    out = tmp_path / "zs"
    res = run_cli("bench", "zeroshot", "--index", index_dir, "--out", out)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["separate_split"]["threshold_source"] != result["same_split"]["threshold_source"]
    meta = read_metadata(index_dir / "metadata.parquet")
    valid = meta[meta["split"] == "valid"]
    first = [min(names) for _, names in valid.groupby("scan_id")["volume_name"]]
    rows = valid[valid["volume_name"].isin(first)].sort_values("row_id")
    v = read_embeddings(index_dir, "volumes").astype(np.float64)[rows["row_id"].to_numpy()]
    model = load_model(model_dir).eval()
    with torch.no_grad():
        pos = model.encode_text([f"{name} is present." for name in LABELS]).double().numpy()
        neg = model.encode_text([f"{name} is not present." for name in LABELS]).double().numpy()
    p = 1.0 / (1.0 + np.exp(-result["logit_scale"] * (v @ pos.T - v @ neg.T)))
    assert result["n"] == len(rows)
    defined = []
    for j, name in enumerate(LABELS):
        y = rows[name].to_numpy()
        got = result["same_split"]["per_label"][name]
        assert got["n_pos"] == int(y.sum()) and got["n"] == len(y)
        if 0 < y.sum() < len(y):
            defined.append(roc_auc_score(y, p[:, j]))
            assert got["auc"] == pytest.approx(defined[-1], abs=1e-9), name
    assert defined and result["same_split"]["macro"]["auc"] == pytest.approx(np.mean(defined), abs=1e-9)


MEAN7 = (  # the seven template pairs, written out from the README, not read from the code
    ("{X} is present.", "{X} is not present."),
    ("There is {x}.", "There is no {x}."),
    ("The scan shows {x}.", "The scan shows no {x}."),
    ("{X} is seen.", "No {x} is seen."),
    ("Findings consistent with {x}.", "No findings of {x}."),
    ("There is evidence of {x}.", "There is no evidence of {x}."),
    ("The chest CT demonstrates {x}.", "The chest CT demonstrates no {x}."),
)


def test_bench_zeroshot_mean7_cli(index_dir, model_dir, tmp_path):
    """``--prompts mean7``: per-label AUCs equal sklearn's on the cosine difference of the volume to the
    normalised mean of the 7 normalised positive and the 7 negative prompt embeddings."""
    from sklearn.metrics import roc_auc_score

    from hsenet_search.data.labels import LABELS
    from hsenet_search.models import load_model

    out = tmp_path / "zs7"
    res = run_cli("bench", "zeroshot", "--index", index_dir, "--prompts", "mean7", "--out", out)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["prompts"] == "mean7" and "7 prompt pairs" in out.with_suffix(".md").read_text()
    ev = load_index_embeddings(index_dir).split("valid", "scan")
    model = load_model(model_dir).eval()

    def ensemble(side: int) -> np.ndarray:
        texts = [pair[side].format(X=name, x=name.lower()) for name in LABELS for pair in MEAN7]
        with torch.no_grad():
            e = model.encode_text(texts).double().numpy()
        e = (e / np.linalg.norm(e, axis=1, keepdims=True)).reshape(len(LABELS), 7, -1).mean(axis=1)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    margin = ev.volumes.astype(np.float64) @ (ensemble(0) - ensemble(1)).T
    checked = 0
    for j, name in enumerate(LABELS):
        y = ev.labels[:, j]
        if 0 < y.sum() < len(y):
            auc = result["same_split"]["per_label"][name]["auc"]
            assert auc == pytest.approx(roc_auc_score(y, margin[:, j]), abs=1e-9), name
            checked += 1
    assert checked >= 5
    bad = run_cli("bench", "zeroshot", "--index", index_dir, "--prompts", "mean9")
    assert bad.returncode == 2 and "--prompts" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_generation_retrieval_modes(index_dir, synth_data, model_dir, tmp_path):
    out = tmp_path / "gen"
    res = run_cli(
        "bench",
        "generation",
        "--index",
        index_dir,
        "--data",
        synth_data,
        "--mode",
        "nearest",
        "--mode",
        "vote",
        "--out",
        out,
    )
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.with_suffix(".json").read_text())
    modes = {run["mode"]: run for run in payload["runs"]}
    assert set(modes) == {"nearest", "vote"}
    for run in modes.values():
        assert 0.0 <= run["text"]["bleu_4"] <= run["text"]["bleu_1"] <= 1.0
    # nearest mode, recomputed: each valid scan's draft is the report of its nearest *other* scan (numpy
    # top-1 over the stored vectors, own scan and identical report left out), scored against its own report
    from hsenet_search.data.dataset import open_dataset
    from hsenet_search.embedding import embed_input
    from hsenet_search.eval.text_metrics import generation_scores
    from hsenet_search.index.store import read_embeddings, read_metadata
    from hsenet_search.models import load_model

    meta = read_metadata(index_dir / "metadata.parquet")
    vectors = read_embeddings(index_dir, "volumes").astype(np.float32)
    report = {r.scan_id: f"{r.findings} {r.impression}".strip() for r in meta.itertuples()}
    drafted = {r.scan_id: f"{r.findings.strip()} {r.impression.strip()}".strip() for r in meta.itertuples()}
    model = load_model(model_dir).eval()
    firsts = {}
    for case in open_dataset(synth_data, split="valid"):
        firsts.setdefault(case.scan_id, case)
    refs, hyps = [], []
    for case in firsts.values():
        order = np.argsort(-(vectors @ embed_input(model, case.path)[0]), kind="stable")
        scans = dict.fromkeys(meta["scan_id"].to_numpy()[order])
        nearest = next(s for s in scans if s != case.scan_id and report[s] != case.report.strip())
        refs.append(case.report)
        hyps.append(drafted[nearest])
    assert modes["nearest"]["n"] == modes["vote"]["n"] == len(firsts)
    assert modes["nearest"]["text"] == pytest.approx(generation_scores(refs, hyps), abs=1e-9)


@pytest.mark.slow
def test_bench_generation_llm_rows_on_fewer_scans(index_dir, synth_data, tmp_path):
    """One retrieval per scan for every mode; the LLM mode on the first --llm-limit scans, and every mode
    also scored on those scans alone; the merge outcome of every LLM draft is counted."""
    out = tmp_path / "gen-llm"
    args = ["--mode", "vote", "--mode", "llm", "--limit", "2", "--llm-limit", "1"]
    res = run_cli("bench", "generation", "--index", index_dir, "--data", synth_data, *args, "--out", out)
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.with_suffix(".json").read_text())
    assert {run["mode"]: run["n"] for run in payload["runs"]} == {"vote": 2, "llm": 1}
    assert {run["mode"]: run["n"] for run in payload["runs_on_llm_scans"]} == {"vote": 1, "llm": 1}
    llm = next(run for run in payload["runs"] if run["mode"] == "llm")
    assert sum(llm["merge"]["outcomes"].values()) == 1 and llm["all_checks_passed"] == 1.0
    assert llm["seconds_per_draft"]["n"] == 1 and llm["seconds_per_draft"]["min"] <= llm["seconds_per_draft"]["max"]
    assert "load_average" in payload["machine"]
    markdown = out.with_suffix(".md").read_text()
    assert "Every mode on the 1 scans the LLM mode drafted" in markdown and "LLM merge" in markdown


def test_bench_gap_cli_matches_the_index_embeddings(index_dir, tmp_path):
    from hsenet_search.eval.gap import modality_gap

    out = tmp_path / "gap"
    result = run_cli("bench", "gap", "--index", index_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    payload = json.loads(out.with_suffix(".json").read_text())
    emb = load_index_embeddings(index_dir).split("all", "scan")
    expected = modality_gap(emb.volumes, emb.reports)
    assert payload["n"] == expected.n == len(set(emb.names))
    assert np.isclose(payload["centroid_distance"], expected.centroid_distance)
    assert np.isclose(payload["random_pair_cosine"], expected.random_pair_cosine)
    assert out.with_suffix(".png").stat().st_size > 0
