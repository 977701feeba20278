"""``embed`` and ``generate`` from the CLI: JSON contracts, determinism, grounding, errors."""

from __future__ import annotations

import json

import numpy as np

from hsenet_search.data.dataset import open_dataset

from .conftest import run_cli


def test_embed_text_and_volume(synth_data, model_dir):
    a = run_cli("embed", "text", "Bilateral pleural effusion.", "--model", model_dir, "--json")
    b = run_cli("embed", "text", "Bilateral pleural effusion.", "--model", model_dir, "--json")
    assert a.returncode == 0, a.stderr
    va, vb = json.loads(a.stdout), json.loads(b.stdout)
    assert va["vector"] == vb["vector"] and va["dim"] == len(va["vector"])
    assert abs(np.linalg.norm(va["vector"]) - 1) < 1e-4
    case = open_dataset(synth_data, split="valid")[0]
    v = run_cli("embed", "volume", case.path, "--model", model_dir, "--json")
    assert v.returncode == 0, v.stderr
    vol = json.loads(v.stdout)
    assert vol["dim"] == va["dim"] and vol["model"] == va["model"]
    assert abs(np.linalg.norm(vol["vector"]) - 1) < 1e-4
    bad = run_cli("embed", "volume", synth_data / "radiology_text_reports" / "train_reports.csv", "--model", model_dir)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "train_reports.csv" in bad.stderr


def test_generate_retrieval_modes_cite_neighbours(index_dir, synth_data):
    case = open_dataset(synth_data, split="valid")[0]
    res = run_cli("generate", case.path, "--index", index_dir, "-k", "3", "--mode", "vote", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) >= {"findings", "impression", "retrieved", "labels", "llm"}
    assert len(out["retrieved"]) == 3 and out["findings"].strip()
    near = json.loads(
        run_cli("generate", case.path, "--index", index_dir, "-k", "3", "--mode", "nearest", "--json").stdout
    )
    assert near["retrieved"] == out["retrieved"]
    res = run_cli("generate", case.path, "--index", index_dir, "--mode", "poetry")
    assert res.returncode == 2 and "mode" in res.stderr
