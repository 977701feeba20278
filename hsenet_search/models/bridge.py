"""BrgSA's Cross-Modal Knowledge Interaction (CMKI): a shared learnable knowledge bank.

Facts from ``shared/specs/radfinder-and-brgsa.md`` §2.2: one bank ``B`` (N × E, 2048 × 768 in BrgSA)
shared by both modalities, orthogonally initialised and trained; the read-out of an embedding ``e`` (the
projected global embedding, *not* normalised first) is ``softmax(e Bᵀ) B`` with no projections, no
temperature and no 1/√d. Training loss::

    L = [CE_i→t + CE_t→i](e_img, e_txt) + 0.5·[MSE(ê_img, e_img) + MSE(ê_txt, e_txt)]
        + [CE_i→t + CE_t→i](ê_img, ê_txt)

with InfoNCE on cosine × 10 (fixed) over in-batch negatives and MSE on raw embeddings without
stop-gradient. At inference the cross-modal score is ``½[cos(e_img, e_txt) + cos(ê_img, e_txt)]``: the
text does not pass through the bank. That score is the inner product of the unit text vector with
``bridged_volume(e_img) = ½[e_img/‖e_img‖ + ê_img/‖ê_img‖]``, so an inner-product index over bridged
volume vectors answers cross-modal queries with the bridged score exactly.

An index of a bridged model stores each volume as ``s = [p, r] / √2`` (twice the embedding width, unit
norm), where ``p`` is the plain unit volume embedding and ``r`` the unit bank read-out (for a fusion model
each is the usual ``[stage1, stage2] / √2``). Then one stored vector answers every direction exactly:

- text ``t`` → volumes: query ``[t, t] / √2``; ``⟨·, s⟩ = ½(t·p + t·r)``, the bridged score;
- volume → volumes: query ``[√2·p_q, 0]``; ``⟨·, s⟩ = p_q·p``, the plain cosine;
- volume → reports: query ``bridged_of_stored(s_q) = (p_q + r_q) / 2`` against unit report vectors;
- report → reports: plain cosine, unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BANK_SIZE = 2048
INFO_NCE_SCALE = 10.0
MSE_WEIGHT = 0.5


class KnowledgeBank(nn.Module):
    """The shared bank: ``forward(e) = softmax(e Bᵀ) B`` over its ``size`` entries."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size, dim))
        nn.init.orthogonal_(self.weight)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return torch.softmax(e @ self.weight.T, dim=-1) @ self.weight


def bridged_volume(e_img: torch.Tensor, bank: KnowledgeBank) -> torch.Tensor:
    """The vector whose inner product with a unit text vector is the BrgSA inference score."""
    return 0.5 * (F.normalize(e_img, dim=-1) + F.normalize(bank(e_img), dim=-1))


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: float = INFO_NCE_SCALE) -> torch.Tensor:
    """Symmetric in-batch InfoNCE on scaled cosines: CE(a→b) + CE(b→a) (summed, as BrgSA does)."""
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    target = torch.arange(len(a), device=a.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


@dataclass
class CMKILoss:
    """The three CMKI terms and their weighted total."""

    total: torch.Tensor
    original: torch.Tensor
    reconstruction: torch.Tensor
    bridged: torch.Tensor


def cmki_loss(
    e_img: torch.Tensor,
    e_txt: torch.Tensor,
    bank: KnowledgeBank,
    *,
    scale: float = INFO_NCE_SCALE,
    mse_weight: float = MSE_WEIGHT,
) -> CMKILoss:
    """BrgSA's CMKI objective on raw (unnormalised) projected embeddings of a batch of pairs."""
    r_img, r_txt = bank(e_img), bank(e_txt)
    original = info_nce(e_img, e_txt, scale)
    reconstruction = F.mse_loss(r_img, e_img) + F.mse_loss(r_txt, e_txt)
    bridged = info_nce(r_img, r_txt, scale)
    return CMKILoss(original + mse_weight * reconstruction + bridged, original, reconstruction, bridged)


# ---------------------------------------------------------------------- the stored (index) layout
def stored_volume(plain: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """``[p, r] / √2`` from the unit plain embedding and the unit bank read-out (both ``(B, E)``)."""
    return torch.cat([plain, recon], dim=-1) / math.sqrt(2.0)


def _halves(stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    stored = np.asarray(stored, dtype=np.float32)
    half = stored.shape[-1] // 2
    return stored[..., :half], stored[..., half:]


def plain_of_stored(stored: np.ndarray) -> np.ndarray:
    """The plain unit volume embeddings ``p`` of stored vectors."""
    return np.sqrt(np.float32(2.0)) * _halves(stored)[0]


def bridged_of_stored(stored: np.ndarray) -> np.ndarray:
    """``½(p + r)``: inner product with a unit text vector = the bridged score."""
    p, r = _halves(stored)
    return ((p + r) / np.sqrt(np.float32(2.0))).astype(np.float32)


def text_query_on_stored(text: np.ndarray) -> np.ndarray:
    """The query that scores unit text vectors against stored volumes with the bridged score."""
    text = np.asarray(text, dtype=np.float32)
    return (np.concatenate([text, text], axis=-1) / np.sqrt(np.float32(2.0))).astype(np.float32)


def volume_query_on_stored(stored: np.ndarray) -> np.ndarray:
    """The query that scores a stored volume against stored volumes with the plain cosine."""
    p = plain_of_stored(stored)
    return np.concatenate([np.sqrt(np.float32(2.0)) * p, np.zeros_like(p)], axis=-1).astype(np.float32)
