"""Text queries load only the model's text side: same vectors and hits, without the vision/preprocessing stack."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hsenet_search.engine import SearchEngine
from hsenet_search.errors import IndexMismatchError, QueryError

from .live import REPO

HEAVY = ("monai", "open_clip", "nibabel", "pydicom", "sklearn", "matplotlib", "llama_cpp")


def test_text_only_engine_equals_the_full_engine(service_index, loaded):
    full = loaded["small"].engine
    text = SearchEngine.open(service_index, parts="text")
    assert text.model.fingerprint == full.model.fingerprint
    for query in ("Right pleural effusion.", "Cardiomegaly with pericardial effusion. No nodule."):
        assert np.abs(text.encode_text(query) - full.encode_text(query)).max() < 1e-6
        assert [h.scan_id for h in text.search_text(query, 5).hits] == [
            h.scan_id for h in full.search_text(query, 5).hits
        ]
    assert (
        text.search_report("No pleural effusion.", 3).to_json()
        == full.search_report("No pleural effusion.", 3).to_json()
    )
    with pytest.raises(QueryError, match="text queries only"):
        text.encode_volume(full.metadata["path"].iloc[0])
    with pytest.raises(QueryError, match="parts"):
        SearchEngine.open(service_index, parts="vision")


def test_text_only_load_refuses_another_or_edited_model(service_index, tmp_path):
    import shutil

    from hsenet_search.errors import ModelError
    from hsenet_search.models import DEFAULT_MODEL_DIR, create_model
    from hsenet_search.models.text_only import TextEncoder

    other = tmp_path / "other"
    create_model("tiny").save_pretrained(other)
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        SearchEngine.open(service_index, model=str(other), parts="text")
    edited = tmp_path / "edited"
    shutil.copytree(DEFAULT_MODEL_DIR, edited)
    meta = json.loads((edited / "config.json").read_text())
    meta["fingerprint"] = "0" * 32
    (edited / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="fingerprint"):
        TextEncoder.from_pretrained(edited)


def test_cli_text_query_skips_the_vision_and_preprocessing_stack(service_index):
    code = (
        "import sys, json\n"
        "from hsenet_search.cli.main import app\n"
        f"try:\n    app(['search', 'text', 'Cardiomegaly.', '--index', {str(service_index)!r}, '-k', '2', '--json',"
        " '--no-where'])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == []
    assert len(json.loads("\n".join(lines[:-1]))["hits"]) == 2


def test_cli_text_query_places_the_query_in_each_hit_with_the_shipped_head(service_index):
    """The shipped model has a localisation head: without --no-where every hit says where the text is."""
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "hsenet_search.cli.main",
            "search",
            "text",
            "Cardiomegaly.",
            "--index",
            str(service_index),
            "-k",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)["hits"]
    assert len(hits) == 2
    for hit in hits:
        assert set(hit["where"]) == {"image_number", "z_mm"}
        assert hit["where"]["image_number"] >= 1 and hit["where"]["z_mm"] >= 0
