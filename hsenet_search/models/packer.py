"""The Spatial Packer (official ``VisualPacker_3d_phi_v3``, spec §3.1), generalised to any divisible grid.

Tokens ``(B, N, C)`` are viewed as the row-major patch grid ``(gd, gh, gw)``; fixed non-overlapping windows of
``kernel`` (default (1, 4, 4)) give one centroid each (their mean, i.e. ``avg_pool3d``); each centroid attends
only to its window's members (single head, residual on the projected query, LayerNorm); an MLP
``Linear-GELU-Linear`` (``proj_mpls.0`` / ``proj_mpls.2``) maps to ``out_dim``. Windows are ordered row-major
over the pooled grid, so the output is ``(B, N / prod(kernel), out_dim)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hsenet_search.errors import ModelError

from .attention import ResidualCrossAttention


class SpatialPacker(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, grid, kernel=(1, 4, 4), dropout: float = 0.1):
        super().__init__()
        self.grid = tuple(grid)
        self.kernel = tuple(kernel)
        if any(g % k for g, k in zip(self.grid, self.kernel, strict=True)):
            raise ModelError(f"Spatial Packer: grid {self.grid} is not divisible by kernel {self.kernel}")
        self.resolution_attention = ResidualCrossAttention(in_dim, in_dim, dropout)
        self.proj_mpls = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    @property
    def num_windows(self) -> int:
        return math.prod(g // k for g, k in zip(self.grid, self.kernel, strict=True))

    def windows(self, tokens: torch.Tensor) -> torch.Tensor:
        """Members of every window: ``(B, windows, prod(kernel), C)``, windows row-major over the pooled grid."""
        b, n, c = tokens.shape
        if n != math.prod(self.grid):
            raise ModelError(f"Spatial Packer expects {math.prod(self.grid)} tokens (grid {self.grid}), got {n}")
        (gd, gh, gw), (kd, kh, kw) = self.grid, self.kernel
        cells = tokens.reshape(b, gd // kd, kd, gh // kh, kh, gw // kw, kw, c)
        return cells.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, self.num_windows, kd * kh * kw, c)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        members = self.windows(tokens)
        centroids = members.mean(dim=2, keepdim=True)
        packed = self.resolution_attention(centroids, members).squeeze(2)
        return self.proj_mpls(packed)
