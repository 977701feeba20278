"""Weights I/O for model directories: reading checkpoints, strict loading, fingerprints, atomic directory writes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from hsenet_search.errors import ModelError

MODEL_TYPE = "hsenet_search_clip"
FORMAT_VERSION = 1
FINGERPRINT_HEX = 32


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``.bin``/``.pt`` state dict (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError("weights file not found", path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"cannot read safetensors ({exc})", path) from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad or unsafe checkpoint
        raise ModelError(f"cannot read checkpoint with weights_only=True ({type(exc).__name__})", path) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError("checkpoint is not a state dict of tensors", path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_tensors(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], path, name: Callable[[str], str] = str
) -> None:
    """Strict-loading check: a missing, mis-shaped or unexpected key is a ModelError naming it as ``name(key)``
    (the checkpoint's own spelling)."""
    for key, value in expected.items():
        if key not in found:
            raise ModelError(f"missing key {name(key)!r}", path)
        if tuple(found[key].shape) != tuple(value.shape):
            raise ModelError(
                f"key {name(key)!r} has shape {tuple(found[key].shape)}, expected {tuple(value.shape)}", path
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ModelError(f"unexpected key {name(extra[0])!r}", path)


def fingerprint(config_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the canonical config JSON and every tensor (name, dtype, shape, bytes) in key order."""
    digest = hashlib.sha256(config_json.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        digest.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:FINGERPRINT_HEX]


def write_dir_atomic(dest: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a model directory through a temp directory: ``write(tmp)`` fills it, then it is renamed to ``dest``.

    When ``dest`` already exists (a previous save, or a training run's output folder) its other contents are
    kept: the old ``config.json`` is removed first, every new file is moved in with an atomic rename, and the new
    ``config.json`` comes last, so a directory with a ``config.json`` is always complete (its fingerprint is
    checked on load).
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ModelError("exists and is not a directory", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
        if not dest.exists():
            os.replace(tmp, dest)
            return dest
        (dest / "config.json").unlink(missing_ok=True)
        for item in sorted(tmp.iterdir(), key=lambda p: p.name == "config.json"):
            target = dest / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def read_meta(path: Path) -> dict[str, Any]:
    """A model directory's ``config.json`` as a dict (one-line :class:`ModelError` when missing or malformed)."""
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ModelError("no config.json: not a model directory", path)
    try:
        meta = json.loads(cfg.read_text())
    except ValueError as exc:
        raise ModelError(f"malformed config.json ({exc})", cfg) from exc
    if not isinstance(meta, dict):
        raise ModelError("config.json is not a JSON object", cfg)
    return meta
