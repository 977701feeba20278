"""RadFinder's objectives (spec ``radfinder-and-brgsa.md`` §1.2–1.4), written from the spec.

- SigLIP: logit scale ``exp(t)`` with ``t`` initialised to ln 10 and bias ``b`` initialised to −10, both
  learnable (:data:`SIGLIP_LOGIT_SCALE_INIT`, :data:`SIGLIP_BIAS_INIT`; the loss itself is open_clip's
  ``SigLipLoss``).
- Disease prompts: 3 positive and 3 negative sentences per label; for each (volume, label) one variant index is
  drawn and picks both prompts; score = ``exp(t)·(cos_pos − cos_neg)`` (the bias cancels); BCE with logits over
  known labels, averaged over them, ``pos_weight = min(#neg / #pos, 20)`` per label; loss weight 0.5.
- Localisation: ``logit_d = cos(snippet, depth_d) / τ`` with τ = 0.1 fixed, invalid depths −∞; the target is a
  one-hot at the cited depth bin convolved with a Gaussian (σ = 2 bins, radius 6 bins), renormalised, then
  zeroed outside the valid depths and *not* renormalised again; loss = soft cross-entropy averaged over
  snippets; RadFinder weights it 0.004.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hsenet_search.data.labels import LABELS
from hsenet_search.models.localisation import LOCALISATION_TAU

SIGLIP_LOGIT_SCALE_INIT = math.log(10.0)
SIGLIP_BIAS_INIT = -10.0
PROMPT_LOSS_WEIGHT = 0.5
POS_WEIGHT_CAP = 20.0
LOCALISATION_SIGMA_BINS = 2.0
LOCALISATION_RADIUS_BINS = 6
LOCALISATION_LOSS_WEIGHT = 0.004

# Three positive and three negative phrasings per label, short to descriptive (variant i pairs with variant i).
_POSITIVE = ("{X} is present.", "There is {x}.", "The scan shows {x}.")
_NEGATIVE = ("{X} is not present.", "There is no {x}.", "The scan shows no {x}.")


@torch.no_grad()
def init_siglip_scale(model, tower: str) -> None:
    """RadFinder's SigLIP start (§1.2) for ``tower``'s logit scale: multiplier 10 (``t = ln 10`` in exp mode).
    The bias lives with the trainer (:data:`SIGLIP_BIAS_INIT`)."""
    raw = model.stages[tower].logit_scale
    exp_mode = model.config.logit_scale_mode == "exp"
    raw.fill_(SIGLIP_LOGIT_SCALE_INIT if exp_mode else math.exp(SIGLIP_LOGIT_SCALE_INIT))


def _fill(template: str, label: str) -> str:
    return template.format(X=label, x=label.lower())


def prompt_variants(labels: tuple[str, ...] = LABELS) -> tuple[list[list[str]], list[list[str]]]:
    """``(positive, negative)``: for each label, its three positive and three negative prompts."""
    return ([[_fill(t, lb) for t in _POSITIVE] for lb in labels], [[_fill(t, lb) for t in _NEGATIVE] for lb in labels])


def pos_weights(targets: torch.Tensor, cap: float = POS_WEIGHT_CAP) -> torch.Tensor:
    """Per label ``min(#negative / #positive, cap)`` over the known entries of ``targets`` (N, L) in {1, 0, −1}."""
    pos = (targets == 1).sum(0).float()
    neg = (targets == 0).sum(0).float()
    ratio = torch.where(pos > 0, neg / pos.clamp(min=1), torch.full_like(pos, cap))
    return ratio.clamp(max=cap)


def prompt_loss(
    img: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    variant: torch.Tensor,
    targets: torch.Tensor,
    logit_scale: torch.Tensor,
    pos_weight: torch.Tensor,
) -> torch.Tensor:
    """RadFinder's prompt loss.

    ``img`` (B, E) unit image embeddings; ``pos``/``neg`` (L, V, E) unit prompt embeddings (V variants);
    ``variant`` (B, L) the drawn variant index; ``targets`` (B, L) in {1, 0, −1}; ``logit_scale`` the
    *log* scale ``t``; ``pos_weight`` (L,).
    """
    labels = torch.arange(pos.shape[0], device=img.device)[None, :].expand_as(variant)
    cos_pos = torch.einsum("be,ble->bl", img, pos[labels, variant])
    cos_neg = torch.einsum("be,ble->bl", img, neg[labels, variant])
    score = logit_scale.exp() * (cos_pos - cos_neg)
    known = targets >= 0
    if not known.any():
        return img.sum() * 0.0
    weight = pos_weight[None, :].expand_as(score)[known].to(score.dtype)
    return F.binary_cross_entropy_with_logits(score[known], targets[known].to(score.dtype), pos_weight=weight)


def depth_targets(
    target_bin: torch.Tensor,
    valid: torch.Tensor,
    sigma: float = LOCALISATION_SIGMA_BINS,
    radius: int = LOCALISATION_RADIUS_BINS,
) -> torch.Tensor:
    """Soft targets (S, D): Gaussian-smoothed one-hot at ``target_bin``, renormalised, zeroed where invalid."""
    depth = valid.shape[-1]
    bins = torch.arange(depth, device=valid.device)[None, :]
    offset = (bins - target_bin[:, None]).double()
    soft = torch.exp(-0.5 * (offset / sigma) ** 2) * (offset.abs() <= radius)
    soft = soft / soft.sum(-1, keepdim=True)
    return soft * valid


def localisation_loss(
    snippets: torch.Tensor,
    depths: torch.Tensor,
    target_bin: torch.Tensor,
    valid: torch.Tensor,
    tau: float = LOCALISATION_TAU,
    sigma: float = LOCALISATION_SIGMA_BINS,
) -> torch.Tensor:
    """Soft cross-entropy over depth bins.

    ``snippets`` (S, E) unit snippet embeddings; ``depths`` (S, D, E) unit per-depth embeddings of each
    snippet's scan; ``target_bin`` (S,) cited bin; ``valid`` (S, D) bool mask of the scan's depths;
    ``sigma`` the target's Gaussian width in bins (RadFinder: 2 bins of 12 mm).
    """
    logits = torch.einsum("se,sde->sd", snippets, depths) / tau
    logp = torch.log_softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)
    target = depth_targets(target_bin, valid, sigma=sigma).to(logits.dtype)
    return -(target * logp.masked_fill(~valid, 0.0)).sum(-1).mean()
