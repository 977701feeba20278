"""Single-head cross-attention with a residual on the projected query (the official ``regular_attention``).

Used by the 2E3 slice-guided attention (§2.2) and by the Spatial Packer's ``resolution_attention`` (§3.1):
``h = LayerNorm(Wq(q) + Dropout(output_linear(softmax(Wq(q) Wk(kv)^T / sqrt(d)) Wv(kv))))``, with dropout also on
the attention probabilities (training mode only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResidualCrossAttention(nn.Module):
    """Parameters ``Wq``, ``Wk``, ``Wv``, ``output_linear``, ``norm`` (official names); ``kv_dim`` may differ."""

    def __init__(self, dim: int, kv_dim: int | None = None, dropout: float = 0.1):
        super().__init__()
        kv_dim = kv_dim or dim
        self.Wq = nn.Linear(dim, dim)
        self.Wk = nn.Linear(kv_dim, dim)
        self.Wv = nn.Linear(kv_dim, dim)
        self.output_linear = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout_p = dropout
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``query (..., Lq, dim)`` attends to ``context (..., Lk, kv_dim)``; returns ``(..., Lq, dim)``."""
        q = self.Wq(query)
        k = self.Wk(context)
        v = self.Wv(context)
        attended = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout_p if self.training else 0.0, scale=self.scale
        )
        return self.norm(q + self.dropout(self.output_linear(attended)))
