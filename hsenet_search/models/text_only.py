"""The text side of a saved model alone: its text trunks and language projections, without the vision towers,
the slice tower or the preprocessing chain (so a text query never imports MONAI or builds 3D ViTs).

The whole ``model.safetensors`` is still hashed, so :attr:`TextEncoder.fingerprint` is the full model's
fingerprint and an index refuses a text encoder of any other model exactly as it refuses the full model.
"""

from __future__ import annotations

import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hsenet_search.errors import ModelError

from .clip import HSENetCLIP, _combine
from .configs import ModelConfig
from .io import FORMAT_VERSION, MODEL_TYPE, fingerprint, read_meta, read_weights
from .text_tower import TextTower, saved_text_towers


class TextEncoder(nn.Module):
    """``encode_text`` of an :class:`HSENetCLIP` directory, loading only the tensors it needs."""

    def __init__(
        self,
        config: ModelConfig,
        text_towers: dict[str, TextTower],
        model_fingerprint: str,
        preprocessing: dict,
    ):
        super().__init__()
        self.config = config
        self.text_towers = nn.ModuleDict(text_towers)
        self.language_proj = nn.ModuleDict(
            {t: nn.Linear(text_towers[config.text_trunk_key(t)].width, config.projection_dim) for t in config.towers}
        )
        self.fingerprint = model_fingerprint
        self.preprocessing = preprocessing

    @property
    def embedding_dim(self) -> int:
        return len(self.config.embedding_towers()) * self.config.projection_dim

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TextEncoder:
        """A model directory, or ``"default"`` for the shipped default model."""
        from . import DEFAULT_MODEL_DIR

        path = DEFAULT_MODEL_DIR if str(path) == "default" else Path(path)
        meta = read_meta(path)
        if meta.get("model_type") != MODEL_TYPE or meta.get("format_version") != FORMAT_VERSION:
            raise ModelError("a text-only load needs one of our model directories (not an official checkpoint)", path)
        config = ModelConfig.from_dict(meta["config"])
        tensors = read_weights(path / "model.safetensors")
        text_towers = saved_text_towers(config, path)
        trunk_state = {f"text_towers.{k}": v for k, v in nn.ModuleDict(text_towers).state_dict().items()}
        # the fingerprint covers exactly the saved tensors (a frozen packaged trunk is not saved)
        config_json = HSENetCLIP._fingerprint_config(types.SimpleNamespace(config=config))
        if meta.get("fingerprint") != fingerprint(config_json, tensors):
            raise ModelError("the weights do not match the fingerprint in config.json (corrupted or edited)", path)
        model = cls(config, text_towers, meta["fingerprint"], _preprocessing(path))
        state = {}
        for key, value in {**trunk_state, **tensors}.items():
            if key.startswith("text_towers."):
                state[key] = value
            elif key.startswith("stages.") and ".mm_language_proj." in key:
                tower, rest = key[len("stages.") :].split(".mm_language_proj.")
                state[f"language_proj.{tower}.{rest}"] = value
        model.load_state_dict(state, strict=True)
        return model.eval()

    def encode_text(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """Report texts -> L2-normalised ``(B, E)``; equal to ``HSENetCLIP.encode_text`` of the same model."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        towers = self.config.embedding_towers()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                pooled = {key: self.text_towers[key](chunk) for key in {self.config.text_trunk_key(t) for t in towers}}
                out.append(
                    _combine(
                        [
                            F.normalize(self.language_proj[t](pooled[self.config.text_trunk_key(t)]), dim=-1)
                            for t in towers
                        ]
                    )
                )
        return torch.cat(out)


def _preprocessing(path: Path) -> dict:
    import json

    try:
        return json.loads((path / "preprocessing.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read preprocessing.json ({exc})", path) from exc
