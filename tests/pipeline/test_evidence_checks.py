"""Behaviours checked against an independent computation: the report text an index embeds, hubness
without banks, label filters from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hsenet_search.engine import SearchEngine
from hsenet_search.errors import QueryError
from hsenet_search.index.store import read_embeddings, read_metadata

from .conftest import run_cli


@pytest.fixture(scope="module")
def engine(index_dir):
    return SearchEngine.open(index_dir)


def test_index_embeds_findings_then_impression(engine, index_dir):
    """The stored report vector is the text tower on "findings impression" (CT-RATE report text)."""
    meta = read_metadata(index_dir / "metadata.parquet")
    row = meta[(meta["findings"].str.len() > 0) & (meta["impression"].str.len() > 0)].iloc[0]
    stored = read_embeddings(index_dir, "reports").astype(np.float32)[int(row["report_id"])]
    expected = engine.encode_text(f"{row['findings']} {row['impression']}")[0]
    np.testing.assert_allclose(stored, expected, atol=2e-3)
    assert not np.allclose(stored, engine.encode_text(row["findings"])[0], atol=2e-3)


def test_hubness_without_banks_is_a_query_error(index_dir):
    engine = SearchEngine.open(index_dir)
    engine.hubness.clear()  # an index built without querybanks
    with pytest.raises(QueryError, match="no hubness bank"):
        engine.search_text("Pleural effusion.", k=2, hubness=True)
    assert len(engine.search_text("Pleural effusion.", k=2).hits) == 2


def test_label_filter_from_the_cli(index_dir):
    meta = read_metadata(index_dir / "metadata.parquet")
    label = "Lung nodule" if (meta["Lung nodule"] == 1).any() else "Pleural effusion"
    res = run_cli(
        "search", "text", "Nodule in the right upper lobe.", "--index", index_dir, "-k", "3", "--label", label, "--json"
    )
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)["hits"]
    allowed = set(meta.loc[meta[label] == 1, "scan_id"])
    assert hits and all(h["scan_id"] in allowed and label in h["labels"] for h in hits)
    bad = run_cli("search", "text", "Nodule.", "--index", index_dir, "--label", "Nodules")
    assert bad.returncode == 2 and "unknown label 'Nodules'" in bad.stderr and "Traceback" not in bad.stderr


def test_index_refuses_other_preprocessing_and_other_width(tmp_path, index_dir, model_dir):
    """Same weights, edited preprocessing.json: refused by its hash; an index of another width: refused."""
    import shutil

    from hsenet_search.data.preprocess import Profile
    from hsenet_search.errors import IndexMismatchError
    from hsenet_search.models import load_model

    edited = tmp_path / "model"
    shutil.copytree(model_dir, edited)
    pre = json.loads((edited / "preprocessing.json").read_text())
    window = next(step for step in pre["steps"] if step["op"] == "window")
    window["a_max"] = window["a_max"] + 200.0
    pre.pop("hash", None)  # a consistent, different profile (its stored hash matches its steps)
    (edited / "preprocessing.json").write_text(json.dumps(Profile.from_dict(pre).to_dict()))
    model = load_model(edited)
    assert model.fingerprint == load_model(model_dir).fingerprint  # the weights alone do not tell them apart
    with pytest.raises(IndexMismatchError, match="preprocessing"):
        SearchEngine.open(index_dir, model=model)
    res = run_cli("search", "text", "Effusion.", "--index", index_dir, "--model", edited)
    assert res.returncode == 2 and "preprocessing" in res.stderr and "Traceback" not in res.stderr

    wider = tmp_path / "index"
    shutil.copytree(index_dir, wider)
    manifest = json.loads((wider / "manifest.json").read_text())
    manifest["dims"]["volumes"] += 1
    (wider / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="embedding size"):
        SearchEngine.open(wider, model=load_model(model_dir))
