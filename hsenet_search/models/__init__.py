"""HSENet models: the stage-1 3D ViT and 2E3 towers, Spatial Packer, slice and text towers, the CLIP model,
named configs (``tiny``, ``base``) and official-checkpoint import.

``create_model(name)`` builds a fresh model; ``load_model(path_or_name)`` loads the shipped default, one of our
model directories, an official HSENet checkpoint directory, or (by name) a fresh named config.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from hsenet_search.errors import ModelError

from .clip import HSENetCLIP
from .configs import ModelConfig, get_config, list_models
from .loaders import load_directory

DEFAULT_MODEL_DIR = Path(str(files("hsenet_search.models").joinpath("default")))

__all__ = ["DEFAULT_MODEL_DIR", "HSENetCLIP", "ModelConfig", "create_model", "get_config", "list_models", "load_model"]


def create_model(
    name: str = "tiny", *, text_model: str | Path | None = None, biomedclip: str | Path | None = None, **overrides: Any
) -> HSENetCLIP:
    """A fresh model from a named config (random vision weights; text trunk = the packaged MiniLM).

    ``overrides`` replace :class:`ModelConfig` fields. ``text_model``: a local transformers model directory
    (e.g. bert-base-uncased) used as the text trunk instead of MiniLM (its weights and tokenizer are then saved
    with the model). ``biomedclip``: a local open_clip BiomedCLIP checkpoint whose frozen trunk becomes the 2D
    slice tower. The config's ``preprocessing`` profile must produce tensors of its ``img_size``.
    """
    from .slice_tower import load_biomedclip_trunk
    from .text_tower import TextTower

    config = get_config(name).replace(**overrides)
    slice_trunk = None
    if biomedclip is not None:
        slice_trunk, vision_cfg, mean, std = load_biomedclip_trunk(biomedclip)
        config = config.replace(
            slice_source="biomedclip",
            slice_vision_cfg=vision_cfg,
            slice_dim=int(slice_trunk.num_features),
            slice_mean=tuple(mean),
            slice_std=tuple(std),
        )
    text_towers = None
    if text_model is not None:
        text_towers = {
            k: TextTower.from_pretrained_dir(
                text_model, config.text_pooling, config.text_max_length, config.freeze_text_trunk
            )
            for k in config.text_trunk_keys
        }
        first = next(iter(text_towers.values()))
        config = config.replace(
            text_source="config",
            text_configs={k: t.hf_config_dict() for k, t in text_towers.items()},
            text_max_length=first.max_length,
        )
    model = HSENetCLIP(config, text_towers=text_towers, slice_trunk=slice_trunk)
    model.check_profile()
    return model


def load_model(path_or_name: str | Path | None = None, **official_options: Any) -> HSENetCLIP:
    """The shipped default (None or ``"default"``), a model directory (ours or an official HSENet CLIP
    checkpoint), or a fresh named config (``tiny`` / ``base``), in eval mode."""
    if path_or_name is None or str(path_or_name) == "default":
        if not (DEFAULT_MODEL_DIR / "config.json").exists():
            raise ModelError(
                "no default model is shipped yet (hsenet_search/models/default/ is empty); "
                "train one with `hsenet-search train` or pass --model DIR",
                DEFAULT_MODEL_DIR,
            )
        return HSENetCLIP.from_pretrained(DEFAULT_MODEL_DIR)
    path = Path(path_or_name)
    if path.exists():
        return load_directory(path, **official_options)
    if str(path_or_name) in list_models():
        return create_model(str(path_or_name)).eval()
    raise ModelError(f"not a model directory, 'default' or a named config ({', '.join(list_models())})", path_or_name)
