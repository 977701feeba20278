"""Per-query search parameters through the engine and the CLI; ``--factory auto`` in a real build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from hsenet_search.errors import QueryError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
QUERY = "Right pleural effusion with adjacent atelectasis."


@pytest.fixture(scope="module")
def hnsw_index(tmp_path_factory) -> Path:
    from hsenet_search.data.synth import generate_dataset
    from hsenet_search.index.builder import BuildConfig, build_index

    root = tmp_path_factory.mktemp("params")
    generate_dataset(root / "data", 10, seed=4, size="tiny")
    build_index(
        BuildConfig(data=str(root / "data"), out=str(root / "index"), factory="HNSW8", workers=0), progress=False
    )
    return root / "index"


def test_engine_passes_per_query_parameters(hnsw_index):
    from hsenet_search.engine import SearchEngine

    engine = SearchEngine.open(hnsw_index)
    hnsw = faiss.downcast_index(faiss.downcast_index(engine.volumes.index).index)
    assert isinstance(hnsw, faiss.IndexHNSW) and hnsw.hnsw.efSearch >= 16  # tuned default, saved with the index
    default = engine.search_text(QUERY, 5)
    wide = engine.search_text(QUERY, 5, params={"efSearch": 256})
    assert [h.scan_id for h in wide.hits] == [h.scan_id for h in default.hits]  # tiny index: both exact
    with pytest.raises(QueryError, match="nprobe"):
        engine.search_text(QUERY, 5, params={"nprobe": 4})
    assert len(engine.search_report(QUERY, 3, params="efSearch=64").hits) == 3


def test_cli_search_options(hnsw_index):
    cmd = [
        sys.executable,
        "-m",
        "hsenet_search.cli.main",
        "search",
        "text",
        QUERY,
        "--index",
        str(hnsw_index),
        "-k",
        "3",
        "--json",
    ]
    ok = subprocess.run([*cmd, "--ef-search", "128"], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*cmd, "--nprobe", "8"], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "nprobe" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_factory_auto_in_a_build(tmp_path, hnsw_index):
    from hsenet_search.index.builder import BuildConfig, build_index
    from hsenet_search.index.faiss_backend import VectorIndex
    from hsenet_search.index.store import read_embeddings

    data = hnsw_index.parent / "data"
    summary = build_index(
        BuildConfig(data=str(data), out=str(tmp_path / "auto"), factory="auto", workers=0), progress=False
    )
    assert summary.factory == "IDMap2,Flat"  # a few vectors: exact search
    index = VectorIndex.load(tmp_path / "auto" / "volumes.faiss")
    emb = read_embeddings(tmp_path / "auto", "volumes")
    scores, ids = index.search(emb, 1)
    # exact search: each volume's best match is itself or an identical twin (reconstructions of one scan)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3)
    assert (ids[:, 0] >= 0).all()
