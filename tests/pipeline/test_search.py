"""Every query kind, label filters inside FAISS, collapsing, JSON contract, refusal of a mismatched model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.labels import LABELS
from hsenet_search.engine import SearchEngine
from hsenet_search.errors import IndexMismatchError, QueryError, VolumeError
from hsenet_search.index.store import read_embeddings, read_metadata

from .conftest import run_cli


@pytest.fixture(scope="module")
def engine(index_dir):
    return SearchEngine.open(index_dir)


def _brute_force(index_dir, query, rows):
    emb = read_embeddings(index_dir, "volumes")[rows]
    return rows[np.argsort(-(emb @ query[0]), kind="stable")]


def test_text_search_matches_brute_force_and_collapses_scans(engine, index_dir):
    result = engine.search_text("Bilateral pleural effusion. Cardiomegaly.", k=5)
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert len({h.scan_id for h in result.hits}) == 5
    meta = read_metadata(index_dir / "metadata.parquet")
    order = _brute_force(
        index_dir, engine.encode_text("Bilateral pleural effusion. Cardiomegaly."), meta["row_id"].to_numpy()
    )
    assert result.hits[0].volume_name == meta.iloc[order[0]]["volume_name"]
    everything = engine.search_text("Bilateral pleural effusion. Cardiomegaly.", k=len(meta), collapse=False)
    assert len(everything.hits) == len(meta)
    # k = every scan: collapsed hits name each scan once (uncollapsed, sibling reconstructions would repeat)
    n_scans = meta["scan_id"].nunique()
    per_scan = engine.search_text("Bilateral pleural effusion. Cardiomegaly.", k=n_scans)
    assert len(per_scan.hits) == n_scans == len({h.scan_id for h in per_scan.hits})


def test_label_filter_is_applied_inside_faiss(engine, index_dir):
    """A rare label whose best case ranks far below k·max_recons unfiltered: a post-filter would miss it."""
    meta = read_metadata(index_dir / "metadata.parquet")
    all_rows = meta["row_id"].to_numpy()
    q = engine.encode_text("Nodular lesion in the right upper lobe.")
    unfiltered = _brute_force(index_dir, q, all_rows).tolist()
    k = 3
    fetched = k * engine._max_recons
    present = [name for name in LABELS if (meta[name] == 1).any()]

    def best_rank(name):
        rows = set(meta.loc[meta[name] == 1, "row_id"].tolist())
        return next(i for i, row in enumerate(unfiltered) if row in rows)

    label = max(present, key=best_rank)
    assert best_rank(label) >= 2 * fetched, "fixture: no label ranks far enough down to tell the filters apart"
    rows = meta.loc[meta[label] == 1, "row_id"].to_numpy()
    expected = _brute_force(index_dir, q, rows)
    result = engine.search_embedding(q, k=k, labels=[label], collapse=False)
    assert [h.row_id for h in result.hits] == expected[:k].tolist()
    assert all(label in h.labels for h in result.hits)
    collapsed = engine.search_embedding(q, k=1, labels=[label])
    assert [h.row_id for h in collapsed.hits] == expected[:1].tolist()


def test_volume_queries_return_cases_and_reports(engine, synth_data):
    case = open_dataset(synth_data, split="valid")[0]
    cases = engine.search_volume(case.path, k=3)
    assert cases.hits[0].scan_id == case.scan_id  # the scan itself is in the index
    reports = engine.search_volume(case.path, k=3, target="reports")
    assert len(reports.hits) == 3 and all(h.volumes for h in reports.hits)
    similar = engine.search_report(case.report, k=2)
    assert similar.hits[0].findings.strip() == case.findings.strip()


def test_query_errors(engine, tmp_path):
    with pytest.raises(QueryError):
        engine.search_text("   ")
    with pytest.raises(QueryError):
        engine.search_text("x" * 50000)
    with pytest.raises(QueryError):
        engine.search_text("effusion", k=0)
    with pytest.raises(QueryError):
        engine.search_text("effusion", k=10**6)
    with pytest.raises(QueryError):
        engine.search_text("effusion", labels=["Not a label"])
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(VolumeError):
        engine.search_volume(bad)
    with pytest.raises(QueryError):
        engine.search_embedding(np.ones((1, 7), dtype=np.float32))


def test_mismatched_model_is_refused(index_dir, other_model_dir):
    with pytest.raises(IndexMismatchError):
        SearchEngine.open(index_dir, model=str(other_model_dir))
    res = run_cli("search", "text", "effusion", "--index", index_dir, "--model", other_model_dir)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "fingerprint" in res.stderr and str(index_dir) in res.stderr


def test_cli_json_contract(index_dir, synth_data):
    res = run_cli("search", "text", "Emphysema in both upper lobes.", "--index", index_dir, "-k", "4", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["query"] == "Emphysema in both upper lobes."
    assert len(out["hits"]) == 4
    for key in ("rank", "score", "volume_name", "scan_id", "findings", "impression", "labels"):
        assert key in out["hits"][0]
    assert all(isinstance(h["labels"], list) for h in out["hits"])
    case = open_dataset(synth_data, split="train")[0]
    res = run_cli("search", "volume", case.path, "--index", index_dir, "--target", "reports", "-k", "2", "--json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["hits"]) == 2
    res = run_cli("search", "report", case.report, "--index", index_dir, "-k", "2")
    assert res.returncode == 0 and "reports for" in res.stdout
    res = run_cli("search", "text", "", "--index", index_dir)
    assert res.returncode == 2 and "empty" in res.stderr and "Traceback" not in res.stderr


def test_hubness_flag_applies_the_stored_querybank_normaliser(engine):
    from hsenet_search.index.hubness import rerank

    text = "Right lower lobe consolidation."
    corrected = engine.search_text(text, k=5, hubness=True)
    assert len(corrected.hits) == 5 and len({h.scan_id for h in corrected.hits}) == 5
    n = engine.volumes.ntotal
    raw_scores, raw_ids = engine.volumes.search(engine.encode_text(text), n)
    scores, ids = rerank(engine.hubness["text_to_volumes"], raw_scores, raw_ids, n)
    scans = list(dict.fromkeys(engine.metadata.iloc[ids[0]]["scan_id"]))
    assert [h.scan_id for h in corrected.hits] == scans[:5]
    assert [h.score for h in corrected.hits] == sorted((h.score for h in corrected.hits), reverse=True)
