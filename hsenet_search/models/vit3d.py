"""The stage-1 3D ViT (official ``ViT_stage1``, MONAI 1.3 blocks) with the official state-dict key names.

Written as small modules rather than MONAI blocks because MONAI >= 1.4 adds ``norm_cross_attn`` keys that the
official checkpoints lack; the computation is MONAI's: perceptron patch embedding
``b c (d p1) (h p2) (w p3) -> b (d h w) (p1 p2 p3 c)`` + Linear, learnable positions, zero CLS token prepended
after the positions, pre-norm blocks (``SABlock`` without qkv bias, GELU MLP), final LayerNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops.layers.torch import Rearrange
from torch import nn

from .configs import ModelConfig


class PatchEmbedding3D(nn.Module):
    """Keys ``patch_embeddings.1.{weight,bias}`` and ``position_embeddings`` (MONAI ``PatchEmbeddingBlock``)."""

    def __init__(self, in_channels: int, img_size, patch_size, width: int, dropout: float = 0.0):
        super().__init__()
        p1, p2, p3 = patch_size
        grid = [i // p for i, p in zip(img_size, patch_size, strict=True)]
        self.patch_embeddings = nn.Sequential(
            Rearrange("b c (d p1) (h p2) (w p3) -> b (d h w) (p1 p2 p3 c)", p1=p1, p2=p2, p3=p3),
            nn.Linear(in_channels * p1 * p2 * p3, width),
        )
        self.position_embeddings = nn.Parameter(torch.zeros(1, math.prod(grid), width))
        self.dropout = nn.Dropout(dropout)
        nn.init.trunc_normal_(self.position_embeddings, std=0.02, a=-2.0, b=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.patch_embeddings(x) + self.position_embeddings)


class SelfAttention(nn.Module):
    """Multi-head self-attention: ``qkv`` (no bias) laid out ``(qkv, head, dim)`` as MONAI's ``SABlock``."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.out_proj = nn.Linear(width, width)
        self.drop_output = nn.Dropout(dropout)
        self.dropout_p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        return self.drop_output(self.out_proj(out.transpose(1, 2).reshape(b, n, c)))


class MLP(nn.Module):
    """``linear1`` -> GELU -> dropout -> ``linear2`` -> dropout (MONAI ``MLPBlock``, vit dropout mode)."""

    def __init__(self, width: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(width, mlp_dim)
        self.linear2 = nn.Linear(mlp_dim, width)
        self.fn = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.linear2(self.drop1(self.fn(self.linear1(x)))))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, width: int, mlp_dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.mlp = MLP(width, mlp_dim, dropout)
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT3D(nn.Module):
    """Stage-1 3D ViT: ``(B, C, D, H, W)`` -> ``(B, 1 + N, width)`` (CLS first, after the final LayerNorm)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.grid = config.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.patch_embedding = PatchEmbedding3D(
            config.in_channels, config.img_size, config.patch_size, config.width, config.dropout
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(config.width, config.mlp_dim, config.heads, config.dropout) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.width)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.patch_embedding.patch_embeddings[1].weight, std=0.02, a=-2.0, b=2.0)
        nn.init.zeros_(self.patch_embedding.patch_embeddings[1].bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with positions, no CLS: ``(B, N, width)`` row-major over the (D, H, W) grid."""
        return self.patch_embedding(x)

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend the CLS token (no position), run the blocks and the final norm."""
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor, slice_features: torch.Tensor | None = None) -> torch.Tensor:
        """``slice_features`` is accepted and ignored, as in the official stage-1 ViT."""
        return self.transform(self.embed(x))
