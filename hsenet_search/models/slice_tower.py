"""The 2D slice tower of the 2E3 encoder: per-slice features ``(B, 32, C2d)``.

Two open_clip image towers:

* ``slice_source="tower"`` (our models): a small ``open_clip.transformer.VisionTransformer`` built from the config
  (no download), trained jointly with the 2E3 tower on the D axial *planes of the 3D model input* (resized to
  its image size, repeated to 3 channels: the official online alternative in vit.py);
* ``slice_source="biomedclip"`` (the official 2D encoder): ``model.visual.trunk`` of a local open_clip checkpoint
  directory (``open_clip_config.json`` + weights), a timm ViT whose output is the final-norm CLS; frozen. It
  never sees the 3D planes: it encodes the JPEG slices of the official 2D chain
  (:mod:`hsenet_search.data.slices`), preprocessed by :func:`biomedclip_transform`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hsenet_search.errors import ModelError

from .configs import CLIP_MEAN, CLIP_STD, ModelConfig
from .io import check_tensors, read_weights

BIOMEDCLIP_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


def build_offline_trunk(config: ModelConfig) -> nn.Module:
    """A small open_clip ViT whose pooled, projected output has ``config.slice_dim`` features."""
    from open_clip.transformer import VisionTransformer

    part = config.slice
    return VisionTransformer(
        image_size=part.image_size,
        patch_size=part.patch_size,
        width=part.width,
        layers=part.layers,
        heads=part.heads,
        mlp_ratio=4.0,
        output_dim=part.dim,
    )


def build_timm_trunk(vision_cfg: dict[str, Any]) -> nn.Module:
    """The ``trunk`` of open_clip's ``TimmModel`` for an open_clip vision config (random weights, no download)."""
    from open_clip.timm_model import TimmModel

    visual = TimmModel(
        vision_cfg["timm_model_name"],
        embed_dim=int(vision_cfg["embed_dim"]),
        image_size=vision_cfg.get("image_size", 224),
        pool=vision_cfg.get("timm_pool", "avg"),
        proj=vision_cfg.get("timm_proj", "linear"),
        proj_bias=bool(vision_cfg.get("timm_proj_bias", False)),
        pretrained=False,
    )
    return visual.trunk


def load_biomedclip_trunk(path: str | Path) -> tuple[nn.Module, dict[str, Any], tuple, tuple]:
    """Read a local open_clip BiomedCLIP checkpoint: (frozen trunk, vision cfg, mean, std). Never downloads.

    ``path`` is the directory holding ``open_clip_config.json`` and the weights, or the weights file itself with
    the config beside it.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    cfg_path = folder / "open_clip_config.json"
    if not cfg_path.exists():
        raise ModelError("no open_clip_config.json: not an open_clip (BiomedCLIP) checkpoint directory", folder)
    try:
        cfg = json.loads(cfg_path.read_text())
        model_cfg = cfg["model_cfg"]
        vision = dict(model_cfg["vision_cfg"])
        vision["embed_dim"] = model_cfg["embed_dim"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"malformed open_clip config ({exc})", cfg_path) from exc
    if not vision.get("timm_model_name"):
        raise ModelError("the vision tower is not a timm trunk (no timm_model_name)", cfg_path)
    if path.is_dir():
        found = [folder / n for n in BIOMEDCLIP_WEIGHT_NAMES if (folder / n).exists()]
        if not found:
            raise ModelError(f"no weights file ({', '.join(BIOMEDCLIP_WEIGHT_NAMES)})", folder)
        path = found[0]
    state = read_weights(path)
    trunk_state = {k.removeprefix("visual.trunk."): v for k, v in state.items() if k.startswith("visual.trunk.")}
    if not trunk_state:
        raise ModelError("no visual.trunk.* weights in the checkpoint", path)
    trunk = build_timm_trunk(vision)
    check_tensors(trunk.state_dict(), trunk_state, path, name=lambda k: "visual.trunk." + k)
    trunk.load_state_dict(trunk_state)
    pre = cfg.get("preprocess_cfg", {})
    mean, std = tuple(pre.get("mean", CLIP_MEAN)), tuple(pre.get("std", CLIP_STD))
    return trunk, vision, mean, std


def biomedclip_transform(image_size: int, mean: tuple, std: tuple):
    """BiomedCLIP's own eval preprocess (open_clip ``image_transform``): PIL RGB image -> ``(3, S, S)``."""
    from open_clip.transform import image_transform

    return image_transform(int(image_size), is_train=False, mean=tuple(mean), std=tuple(std))


class SliceTower(nn.Module):
    """Slice features: ``forward`` on a ``(B, C, D, H, W)`` volume's planes (our tower), ``encode_images`` on
    preprocessed slice images (BiomedCLIP). Key prefix ``trunk.``."""

    def __init__(self, trunk: nn.Module, image_size: int, out_dim: int, frozen: bool = False):
        super().__init__()
        self.trunk = trunk
        self.image_size = int(image_size)
        self.out_dim = int(out_dim)
        self.frozen = frozen
        if frozen:
            self.trunk.requires_grad_(False)

    @classmethod
    def from_config(cls, config: ModelConfig, trunk: nn.Module | None = None) -> SliceTower:
        """Build the tower ``config.slice_source`` describes (``trunk`` reuses already loaded BiomedCLIP weights)."""
        part = config.slice
        if part.source == "tower":
            return cls(trunk or build_offline_trunk(config), part.image_size, part.dim)
        vision = dict(part.vision_cfg or {})
        return cls(trunk or build_timm_trunk(vision), biomedclip_image_size(vision), part.dim, frozen=True)

    def train(self, mode: bool = True) -> SliceTower:
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    def planes(self, x: torch.Tensor) -> torch.Tensor:
        """The axial planes of the 3D input as trunk input: ``(B * D, 3, S, S)``."""
        b, c, d, h, w = x.shape
        planes = x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w).mean(dim=1, keepdim=True)
        if (h, w) != (self.image_size, self.image_size):
            planes = F.interpolate(
                planes, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return planes.expand(-1, 3, -1, -1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` preprocessed images -> ``(N, C2d)`` trunk features."""
        param = next(self.trunk.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            feats = self.trunk(images.to(device=param.device, dtype=param.dtype))
        if feats.ndim != 2 or feats.shape[-1] != self.out_dim:
            raise ModelError(f"the slice trunk returned shape {tuple(feats.shape)}, expected (N, {self.out_dim})")
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ModelError(f"the slice tower expects a (B, C, D, H, W) volume, got shape {tuple(x.shape)}")
        b, d = x.shape[0], x.shape[2]
        return self.encode_images(self.planes(x)).reshape(b, d, self.out_dim)


def biomedclip_image_size(vision_cfg: dict[str, Any]) -> int:
    """The square input size of a BiomedCLIP vision config."""
    size = vision_cfg.get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)
