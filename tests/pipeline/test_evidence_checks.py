"""Behaviours checked against an independent computation: the report text an index embeds, hubness
without banks, label filters from the CLI and on volume queries of both targets, the generation leak guard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.labels import LABELS
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


def _ranked(vectors: np.ndarray, query: np.ndarray, ids: np.ndarray) -> list[int]:
    """``ids`` ordered by inner product with the query, best first (brute force)."""
    return ids[np.argsort(-(vectors[ids].astype(np.float32) @ query[0]), kind="stable")].tolist()


def test_volume_queries_and_their_label_filters_match_brute_force(cli_main, engine, index_dir, synth_data):
    """Volume → reports and volume → volumes, unfiltered and with a label filter, against numpy."""
    meta = read_metadata(index_dir / "metadata.parquet")
    case = open_dataset(synth_data, split="valid")[0]
    q = engine.encode_volume(case.path)
    reports, volumes = read_embeddings(index_dir, "reports"), read_embeddings(index_dir, "volumes")
    all_reports = _ranked(reports, q, np.arange(len(reports)))
    hits = engine.search_volume(case.path, k=3, target="reports").hits
    assert [h.report_id for h in hits] == all_reports[:3]
    for h in hits:  # a report hit names every volume that carries the report
        assert sorted(h.volumes) == sorted(meta.loc[meta["report_id"] == h.report_id, "volume_name"])

    def first_report_rank(name):
        ids = set(meta.loc[meta[name] == 1, "report_id"])
        return next(i for i, r in enumerate(all_reports) if r in ids)

    label = max((name for name in LABELS if (meta[name] == 1).any()), key=first_report_rank)
    assert first_report_rank(label) >= 2, "fixture: the filter must change the answer"
    allowed = meta.loc[meta[label] == 1]
    expected = _ranked(reports, q, allowed["report_id"].drop_duplicates().to_numpy())[:2]
    filtered = engine.search_volume(case.path, k=2, target="reports", labels=[label]).hits
    assert [h.report_id for h in filtered] == expected and all(label in h.labels for h in filtered)
    args = ("--index", index_dir, "-k", "2", "--target", "reports", "--label", label, "--json")
    res = cli_main("search", "volume", case.path, *args)
    assert res.code == 0, res.err
    assert [h["report_id"] for h in json.loads(res.out)["hits"]] == expected

    rows = _ranked(volumes, q, allowed["row_id"].to_numpy())
    scans = list(dict.fromkeys(meta["scan_id"].to_numpy()[rows]))
    similar = engine.search_volume(case.path, k=2, labels=[label]).hits
    assert [h.scan_id for h in similar] == scans[:2] and all(label in h.labels for h in similar)


def test_grounding_leaves_out_the_own_scan_and_identical_reports(engine, index_dir, synth_data):
    """The generation leak guard: the scan being drafted and any case with its exact report are excluded."""
    from hsenet_search.data.report_text import join_report
    from hsenet_search.generate.grounding import ground

    meta = read_metadata(index_dir / "metadata.parquet")
    case = open_dataset(synth_data, split="valid")[0]
    q = engine.encode_volume(case.path)
    order = _ranked(read_embeddings(index_dir, "volumes"), q, meta["row_id"].to_numpy())
    scans = list(dict.fromkeys(meta["scan_id"].to_numpy()[order]))
    report = {r.scan_id: join_report(r.findings, r.impression) for r in meta.itertuples()}
    assert scans[0] == case.scan_id  # unguarded, the scan finds itself first
    assert [c.case_id for c in ground(engine, case.path, 3)] == scans[:3]
    assert [c.case_id for c in ground(engine, case.path, 3, exclude_scan=case.scan_id)] == scans[1:4]
    twin = report[scans[2]]  # a neighbour whose report equals the query's own report text
    kept = [s for s in scans if s != case.scan_id and report[s] != twin]
    got = ground(engine, case.path, 3, exclude_scan=case.scan_id, exclude_text=twin)
    assert [c.case_id for c in got] == kept[:3] and scans[2] not in [c.case_id for c in got]
