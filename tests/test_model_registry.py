"""Named configs as packaged JSON files, the loader registry, and config bounds checked before allocation."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from hsenet_search.errors import ModelError
from hsenet_search.models import DEFAULT_MODEL_DIR, create_model, get_config, list_models, load_model
from hsenet_search.models.loaders import load_directory


def test_named_configs_are_packaged_json_files():
    assert list_models() == ["base", "tiny"]
    tiny, base = get_config("tiny"), get_config("base")
    assert (tiny.img_size, tiny.input_mean, base.width, base.preprocessing) == (
        (32, 64, 64),
        0.5,
        768,
        "hsenet",
    )
    model = create_model("tiny")
    assert model.config == tiny
    assert abs(model_params(model) - tiny.parameter_estimate()) / model_params(model) < 0.05
    with pytest.raises(ModelError, match="named configs: base, tiny"):
        get_config("huge")


def model_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("text_towers."))


def test_the_shipped_model_keeps_its_fingerprint():
    stored = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())["fingerprint"]
    assert load_model().fingerprint == stored
    assert load_model().describe()["text_protocol"] == "findings+impression"


def _copy_with_config(tmp_path, **changes):
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"] |= changes
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def test_huge_config_is_a_one_line_error_before_allocation(tmp_path):
    from hsenet_search.cli.model import app

    folder = _copy_with_config(tmp_path, width=16384, mlp_dim=65536, layers=200, heads=16)
    with pytest.raises(ModelError, match="memory budget") as info:
        load_model(folder)
    assert "\n" not in str(info.value)
    result = CliRunner().invoke(app, ["info", str(folder)])
    assert isinstance(result.exception, ModelError) and "exceed the memory budget" in str(result.exception)
    folder2 = _copy_with_config(tmp_path / "b", width=10**12)
    with pytest.raises(ModelError, match="width must be an integer between 1 and 16384"):
        load_model(folder2)
    folder3 = _copy_with_config(tmp_path / "c", layers="four")
    with pytest.raises(ModelError, match="layers must be an integer"):
        load_model(folder3)


def test_loader_registry_dispatches_on_model_type(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelError, match="unknown model_type 'llama'.*m3d_clip_stage2"):
        load_directory(folder)
    with pytest.raises(ModelError, match="official checkpoints only"):
        load_directory(DEFAULT_MODEL_DIR, biomedclip=tmp_path)
