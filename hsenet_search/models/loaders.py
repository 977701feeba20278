"""The loader registry: a model directory's ``config.json`` ``model_type`` picks how it is read.

* ``hsenet_search_clip``: our format (``HSENetCLIP.from_pretrained``);
* ``m3d_clip_stage1`` / ``m3d_clip_stage2``: official HSENet CLIP checkpoints (``official.load_official``;
  options ``text_model``, ``text_config``, ``biomedclip``, ``embedding``).

A new format registers a function ``(path, **options) -> HSENetCLIP`` with :func:`register_format`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hsenet_search.errors import ModelError

from .clip import HSENetCLIP
from .io import MODEL_TYPE, read_meta

Loader = Callable[..., HSENetCLIP]
_LOADERS: dict[str, Loader] = {}


def register_format(model_type: str, loader: Loader) -> None:
    """Read directories whose ``config.json`` says ``model_type`` with ``loader``."""
    _LOADERS[model_type] = loader


def model_type_of(path: Path) -> str:
    """The ``model_type`` of a model directory's ``config.json`` (one-line error when unreadable)."""
    return str(read_meta(path).get("model_type"))


def load_directory(path: str | Path, **options: Any) -> HSENetCLIP:
    """Load a model directory in whichever registered format it is (eval mode)."""
    path = Path(path)
    model_type = model_type_of(path)
    if model_type not in _LOADERS:
        raise ModelError(
            f"unknown model_type {model_type!r} in config.json (known: {', '.join(sorted(_LOADERS))})", path
        )
    loader = _LOADERS[model_type]
    if options and model_type == MODEL_TYPE:
        raise ModelError(f"options {sorted(options)} apply to official checkpoints only", path)
    return loader(path, **options)


def _official(path: Path, **options: Any) -> HSENetCLIP:
    from .official import load_official

    return load_official(path, **options)


register_format(MODEL_TYPE, HSENetCLIP.from_pretrained)
for _official_type in ("m3d_clip_stage1", "m3d_clip_stage2"):
    register_format(_official_type, _official)
