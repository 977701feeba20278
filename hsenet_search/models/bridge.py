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
"""

from __future__ import annotations

from dataclasses import dataclass

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
