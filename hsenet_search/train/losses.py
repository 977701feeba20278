"""Training losses: global contrastive (open_clip), stage-2 semantic consistency, disease prompts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss
from torch import nn

from hsenet_search.data.labels import LABELS


def contrastive_loss(kind: str, rank: int = 0, world_size: int = 1) -> nn.Module:
    """open_clip ``ClipLoss`` (symmetric InfoNCE over the gathered global batch) or ``SigLipLoss``."""
    if kind == "clip":
        return ClipLoss(local_loss=False, gather_with_grad=world_size > 1, rank=rank, world_size=world_size)
    if kind == "siglip":
        return SigLipLoss(rank=rank, world_size=world_size)
    raise ValueError(f"unknown loss {kind!r} (expected clip or siglip)")


def consistency_weight(step: int, decay_steps: int, initial: float = 0.1) -> float:
    """HSENet §2.3 schedule: ``initial * (1 - step / decay_steps)`` while ``step < decay_steps``, then 0."""
    if decay_steps <= 0 or step >= decay_steps:
        return 0.0
    return initial * (1.0 - step / decay_steps)


def relation_loss(
    img_s1: torch.Tensor, txt_s1: torch.Tensor, img_s2: torch.Tensor, txt_s2: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Semantic-consistency loss: MSE between the frozen stage-1 and the stage-2 N×N logit matrices.

    Both matrices use the stage-2 model's own logit scale, as the official code does.
    """
    with torch.no_grad():
        logits_s1 = scale.detach() * img_s1 @ txt_s1.T
    logits_s2 = scale * img_s2 @ txt_s2.T
    return 0.5 * (F.mse_loss(logits_s2, logits_s1) + F.mse_loss(logits_s2.T, logits_s1.T))


def disease_prompts(labels: tuple[str, ...] = LABELS) -> tuple[list[str], list[str]]:
    """RadFinder / CT-CLIP prompt pairs: ``"X is present."`` and ``"X is not present."``."""
    return [f"{name} is present." for name in labels], [f"{name} is not present." for name in labels]


def disease_prompt_loss(
    img: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """BCE on P(present) = softmax over the prompt pair, for every (volume, label) with a known label.

    ``img`` (B, E), ``pos``/``neg`` (L, E) prompt embeddings, ``targets`` (B, L) in {0, 1}, or -1 for unknown.
    """
    margin = scale * (img @ pos.T - img @ neg.T)  # log-odds of "present" under the pair softmax
    known = targets >= 0
    if not known.any():
        return img.sum() * 0.0
    return F.binary_cross_entropy_with_logits(margin[known], targets[known].float())
