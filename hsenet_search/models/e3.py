"""The 2E3 encoder (official ``ViT_stage2``, spec §2.2): 3D patch tokens gated by slice-guided sigmoid scores.

``x = patch_embedding(vol)``; ``h = slice_guided_attention(x, S)`` (single-head cross-attention of every 3D patch
to the 2D slice features ``S (B, D, C2d)``, residual on the projected query); ``score = sigmoid(patch_score_proj(h))``;
the soft-weighted tokens ``x * score`` then go through the CLS / blocks / norm of a plain ViT. No token is dropped.
"""

from __future__ import annotations

import torch
from torch import nn

from hsenet_search.errors import ModelError

from .attention import ResidualCrossAttention
from .configs import ModelConfig
from .vit3d import ViT3D


class E3ViT(ViT3D):
    """Adds ``patch_score_proj`` (Linear(width, 1)) and ``slice_guided_attention`` (Wk/Wv: C2d -> width)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.slice_dim = config.slice_dim
        self.patch_score_proj = nn.Linear(config.width, 1)
        self.patch_score_norm = nn.Sigmoid()
        self.slice_guided_attention = ResidualCrossAttention(config.width, config.slice_dim, config.e3_dropout)

    def patch_scores(self, tokens: torch.Tensor, slice_features: torch.Tensor) -> torch.Tensor:
        """Sigmoid gate in (0, 1) for every patch token: ``(B, N)``."""
        if (
            slice_features.ndim != 3
            or slice_features.shape[0] != tokens.shape[0]
            or slice_features.shape[-1] != self.slice_dim
        ):
            raise ModelError(
                f"slice features must have shape (B={tokens.shape[0]}, slices, {self.slice_dim}), "
                f"got {tuple(slice_features.shape)}"
            )
        guided = self.slice_guided_attention(tokens, slice_features.to(tokens.dtype))
        return self.patch_score_norm(self.patch_score_proj(guided)).squeeze(-1)

    def forward(self, x: torch.Tensor, slice_features: torch.Tensor | None = None) -> torch.Tensor:
        if slice_features is None:
            raise ModelError("the 2E3 encoder needs slice features (B, slices, C2d)")
        tokens = self.embed(x)
        return self.transform(tokens * self.patch_scores(tokens, slice_features).unsqueeze(-1))
