"""CLI commands checked against values computed independently of the command: ``embed text`` against the
report vector the index stored, ``index info`` against the dataset files and the model, ``generate``'s
citations against a numpy top-k, ``generate --mode llm`` / ``--llm PATH`` against the library draft,
``bench --data --model`` against the bench of an index built with that model, ``train --keep-stage2``
against the weights it starts from. Everything runs through the installed entry point ``main()``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.labels import LABELS
from hsenet_search.embedding import embed_input
from hsenet_search.index.faiss_backend import VectorIndex
from hsenet_search.index.store import read_embeddings, read_metadata
from hsenet_search.models import load_model


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir).eval()


def _nearest_scans(index_dir: Path, query: np.ndarray, k: int) -> list[str]:
    """Brute-force inner product over the stored vectors, one hit per scan (its best reconstruction)."""
    meta = read_metadata(index_dir / "metadata.parquet")
    order = np.argsort(-(read_embeddings(index_dir, "volumes").astype(np.float32) @ query[0]), kind="stable")
    return list(dict.fromkeys(meta["scan_id"].to_numpy()[order]))[:k]


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def test_embed_text_equals_the_stored_report_vector(cli_main, index_dir, model_dir, other_model_dir):
    meta = read_metadata(index_dir / "metadata.parquet")
    row = meta[(meta["findings"].str.len() > 0) & (meta["impression"].str.len() > 0)].iloc[0]
    text = f"{row['findings']} {row['impression']}"
    stored = read_embeddings(index_dir, "reports").astype(np.float32)[int(row["report_id"])]
    res = cli_main("embed", "text", text, "--model", model_dir, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert out["model"] == manifest["model_fingerprint"] and out["embedding"] == manifest["embedding"]
    assert out["dim"] == len(out["vector"]) == manifest["dims"]["reports"]
    np.testing.assert_allclose(out["vector"], stored, atol=2e-3)
    plain = " ".join(cli_main("embed", "text", text, "--model", model_dir).out.split())
    assert f"[{out['vector'][0]:+.4f}, {out['vector'][1]:+.4f}," in plain and f"{out['dim']}-d" in plain
    other = json.loads(cli_main("embed", "text", text, "--model", other_model_dir, "--json").out)
    assert not np.allclose(other["vector"], stored, atol=2e-3)  # --model is honoured
    cli_main("embed", "text", "   ", "--model", model_dir).one_line_error("empty")


def test_index_info_matches_the_dataset_files_and_the_model(cli_main, index_dir, synth_data, model):
    volumes = sorted(synth_data.rglob("*.nii.gz"))
    scans = {re.fullmatch(r"(.+)_\d+\.nii\.gz", p.name).group(1) for p in volumes}
    csvs = sorted((synth_data / "radiology_text_reports").glob("*.csv"))
    reports = pd.concat([pd.read_csv(p, keep_default_na=False) for p in csvs])
    pairs = zip(reports["Findings_EN"], reports["Impressions_EN"], strict=True)
    texts = {f"{f.strip()} {i.strip()}".strip() for f, i in pairs}
    res = cli_main("index", "info", index_dir, "--json")
    assert res.code == 0, res.err
    info = json.loads(res.out)
    counts = {"volumes": len(volumes), "scans": len(scans), "reports": len(texts), "failures": 0}
    assert info["counts"] == counts
    assert info["model_fingerprint"] == model.fingerprint and info["preprocessing_hash"] == model.profile.hash
    assert info["dims"] == {"volumes": model.embedding_dim, "reports": model.embedding_dim}
    assert info["embedding"] == model.config.embedding
    assert info["source"]["dataset"] == str(synth_data.resolve())
    assert VectorIndex.load(index_dir / "volumes.faiss").ntotal == len(volumes)
    plain = " ".join(cli_main("index", "info", index_dir).out.split())
    assert f"volumes {len(volumes)} scans {len(scans)} reports {len(texts)} failures 0" in plain
    assert f"({model.fingerprint[:12]})" in plain and model.profile.hash in plain


@pytest.mark.parametrize("mode", ["nearest", "vote", "grounded"])
def test_generate_cites_the_nearest_scans(cli_main, index_dir, synth_data, model, mode):
    case = open_dataset(synth_data, split="valid")[1]
    res = cli_main("generate", case.path, "--index", index_dir, "-k", "3", "--mode", mode, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    expected = _nearest_scans(index_dir, embed_input(model, case.path), 3)
    assert out["retrieved"] == expected and out["mode"] == mode
    assert out["sentences"] and all(set(s["sources"]) <= set(expected) for s in out["sentences"])
    assert all(s["sources"] for s in out["sentences"] if s["origin"] == "retrieved")
    meta = read_metadata(index_dir / "metadata.parquet")
    reports = {r.scan_id: _words(f"{r.findings} {r.impression}") for r in meta.itertuples()}
    for s in out["sentences"]:
        if s["origin"] == "retrieved":  # a retrieved sentence is in the report of every scan it cites
            assert all(_words(s["text"]) in reports[scan] for scan in s["sources"]), s
    if mode == "nearest":
        assert out["findings"] == meta.loc[meta["scan_id"] == expected[0], "findings"].iloc[0].strip()


def test_generate_llm_mode_and_llm_path_from_the_cli(cli_main, index_dir, synth_data, model):
    from hsenet_search.engine import SearchEngine
    from hsenet_search.generate.draft import draft
    from hsenet_search.generate.grounding import ground
    from hsenet_search.generate.llm import DEFAULT_NAME, _resolve, load_llm

    meta = read_metadata(index_dir / "metadata.parquet")
    case = next(c for c in open_dataset(synth_data, split="valid") if c.labels and any(c.labels))
    own = [name for name in LABELS if (meta.loc[meta["scan_id"] == case.scan_id, name] == 1).any()]
    args = ("generate", case.path, "--index", index_dir, "-k", "1", "--mode", "llm", "--max-new-tokens", "32")
    anchored = json.loads(cli_main(*args, "--json").out)  # one neighbour: its report, its own impression
    assert anchored["composer"] == "anchored" and "not called" in anchored["llm"]
    args = (*args, "--composer", "sections")  # the sections composer leaves the whole impression to the LLM
    res = cli_main(*args, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["mode"] == "llm" and out["retrieved"] == [case.scan_id] and out["labels"] == own
    assert out["llm"].startswith(DEFAULT_NAME) and "not called" not in out["llm"]  # the LLM was asked
    assert out["composer"] == "sections"

    source, gguf_file, _ = _resolve("default")
    gguf = Path(source) / gguf_file
    res = cli_main(*args, "--llm", gguf, "--json")
    assert res.code == 0, res.err
    by_path = json.loads(res.out)
    assert by_path["llm"].startswith(f"{gguf.stem} (GGUF, {gguf})") and "not called" not in by_path["llm"]
    cases = ground(SearchEngine.open(index_dir, model=model), case.path, 1)
    expected = draft(cases, mode="llm", llm=load_llm(str(gguf), max_new_tokens=32), composer="sections")
    assert (by_path["findings"], by_path["impression"]) == (expected.findings, expected.impression)
    assert (out["findings"], out["impression"]) == (expected.findings, expected.impression)
    cli_main(*args, "--llm", gguf.with_name("missing.gguf")).one_line_error("missing.gguf")


def test_bench_data_model_equals_the_bench_of_its_index(tmp_path, cli_main, make_ctrate, other_model_dir):
    from hsenet_search.index.builder import BuildConfig, build_index

    data = make_ctrate(tmp_path / "ct")
    index = tmp_path / "idx"
    cfg = BuildConfig(data=str(data), out=str(index), model=str(other_model_dir), workers=0)
    build_index(cfg, progress=False)
    common = ("--split", "all", "--ks", "1,2", "--bootstrap", "20")
    a_out = tmp_path / "a"
    res = cli_main("bench", "retrieval", "--data", data, "--model", other_model_dir, *common, "--out", a_out)
    assert res.code == 0, res.err
    res = cli_main("bench", "retrieval", "--index", index, *common, "--out", tmp_path / "b")
    assert res.code == 0, res.err
    a, b = (json.loads((tmp_path / f"{name}.json").read_text()) for name in "ab")
    fingerprint = load_model(other_model_dir).fingerprint
    assert a["source"]["model_fingerprint"] == b["source"]["model_fingerprint"] == fingerprint
    assert a["n"] == b["n"] == 4  # make_ctrate: four scans
    for direction in ("text_to_volume", "volume_to_text"):
        assert a[direction] == b[direction]
    cli_main("bench", "retrieval", "--data", data, "--index", index).one_line_error("exactly one of")


def test_keep_stage2_starts_from_the_2e3_tower_not_stage1(tmp_path, cli_main, synth_data, model_dir):
    shipped = load_model(model_dir)
    stage1 = shipped.stages["stage1"].vision_encoder.state_dict()
    stage2 = shipped.stages["stage2"].vision_encoder.state_dict()
    assert any(not torch.equal(v, stage2[k]) for k, v in stage1.items()), "fixture: the towers must differ"
    copied = {**stage2, **stage1}  # the stage-1 ViT weights copied into the 2E3 encoder (its extras kept)
    for keep, start in ((True, stage2), (False, copied)):
        out = tmp_path / f"keep-{keep}"
        res = cli_main(
            "train",
            *("--data", synth_data, "--out", out, "--stage", "2", "--init", model_dir, "--steps", "1"),
            *("--batch-size", "2", "--workers", "0", "--lr", "0", "--augment", "none"),
            *(["--keep-stage2"] if keep else []),
        )
        assert res.code == 0, res.err
        trained = load_model(out).stages["stage2"].vision_encoder.state_dict()  # lr 0: the starting weights
        assert set(trained) == set(start) and all(torch.equal(v, start[k]) for k, v in trained.items()), keep
