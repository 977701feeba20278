"""RadFinder's prompt and localisation losses against loop-by-loop hand computations (numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hsenet_search.train.radfinder import (
    SIGLIP_BIAS_INIT,
    SIGLIP_LOGIT_SCALE_INIT,
    depth_targets,
    localisation_loss,
    pos_weights,
    prompt_loss,
    prompt_variants,
)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_siglip_initialisation_constants():
    assert math.exp(SIGLIP_LOGIT_SCALE_INIT) == pytest.approx(10.0)
    assert SIGLIP_BIAS_INIT == -10.0


def test_three_paired_variants_per_label():
    pos, neg = prompt_variants(("Lung nodule", "Cardiomegaly"))
    assert [len(p) for p in pos] == [3, 3] and [len(n) for n in neg] == [3, 3]
    assert pos[0][0] == "Lung nodule is present." and neg[0][0] == "Lung nodule is not present."
    assert pos[1][1] == "There is cardiomegaly." and neg[1][1] == "There is no cardiomegaly."


def test_pos_weight_is_the_capped_negative_to_positive_ratio():
    targets = torch.tensor([[1, 0, -1], [0, 0, -1], [0, 0, 1], [0, 0, 0]] + [[0, 0, 0]] * 60)
    w = pos_weights(targets)
    assert w.tolist() == pytest.approx([20.0, 20.0, 20.0])  # 63:1 and 61:1 capped; no positive at all: the cap
    small = pos_weights(torch.tensor([[1], [1], [0], [0], [0], [-1]]))
    assert small.item() == pytest.approx(1.5)


def test_prompt_loss_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    b, n_labels, v, e = 4, 3, 3, 5
    img = _unit(rng.standard_normal((b, e)))
    pos, neg = _unit(rng.standard_normal((n_labels, v, e))), _unit(rng.standard_normal((n_labels, v, e)))
    variant = rng.integers(0, v, (b, n_labels))
    targets = np.array([[1, 0, -1], [0, -1, 1], [1, 1, 0], [-1, 0, 0]])
    t, pw = math.log(10.0), np.array([2.0, 0.5, 3.0])
    total, count = 0.0, 0
    for i in range(b):
        for j in range(n_labels):
            if targets[i, j] < 0:
                continue
            k = variant[i, j]
            s = math.exp(t) * (img[i] @ pos[j, k] - img[i] @ neg[j, k])
            y = targets[i, j]
            # BCE with logits and pos_weight: -(pw*y*log σ(s) + (1-y)*log(1-σ(s)))
            log_sig, log_one_minus = -math.log1p(math.exp(-s)), -math.log1p(math.exp(s))
            total += -(pw[j] * y * log_sig + (1 - y) * log_one_minus)
            count += 1
    got = prompt_loss(
        torch.as_tensor(img),
        torch.as_tensor(pos),
        torch.as_tensor(neg),
        torch.as_tensor(variant),
        torch.as_tensor(targets),
        torch.tensor(t, dtype=torch.float64),
        torch.as_tensor(pw),
    )
    assert float(got) == pytest.approx(total / count, rel=1e-10)


def test_depth_targets_follow_the_spec():
    valid = torch.tensor([[True] * 10 + [False] * 6])
    target = depth_targets(torch.tensor([8]), valid)[0].numpy()
    bins = np.arange(16)
    g = np.exp(-0.5 * ((bins - 8) / 2.0) ** 2) * (np.abs(bins - 8) <= 6)
    g = g / g.sum()  # renormalised over every bin
    g[10:] = 0.0  # then zeroed where invalid, not renormalised again
    np.testing.assert_allclose(target, g, atol=1e-7)
    assert target.sum() < 1.0


def test_localisation_loss_matches_a_hand_computation():
    rng = np.random.default_rng(1)
    s, d, e = 3, 12, 6
    snip = _unit(rng.standard_normal((s, e)))
    depths = _unit(rng.standard_normal((s, d, e)))
    valid = np.ones((s, d), dtype=bool)
    valid[1, 9:] = False
    valid[2, :2] = False
    target_bin = np.array([4, 7, 3])
    total = 0.0
    for i in range(s):
        logits = np.array([snip[i] @ depths[i, j] / 0.1 for j in range(d)])
        ok = valid[i]
        logz = np.log(np.exp(logits[ok]).sum())
        g = np.array(
            [
                math.exp(-0.5 * ((j - target_bin[i]) / 2.0) ** 2) if abs(j - target_bin[i]) <= 6 else 0.0
                for j in range(d)
            ]
        )
        g = g / g.sum()
        total += -sum(g[j] * (logits[j] - logz) for j in range(d) if ok[j])
    got = localisation_loss(
        torch.as_tensor(snip), torch.as_tensor(depths), torch.as_tensor(target_bin), torch.as_tensor(valid)
    )
    assert float(got) == pytest.approx(total / s, rel=1e-10)


def test_localisation_loss_is_lowest_when_the_cited_depth_matches():
    depths = torch.eye(8)[None].repeat(2, 1, 1)  # depth j embeds as e_j
    valid = torch.ones(2, 8, dtype=torch.bool)
    right = localisation_loss(torch.eye(8)[[3, 5]], depths, torch.tensor([3, 5]), valid)
    wrong = localisation_loss(torch.eye(8)[[0, 0]], depths, torch.tensor([3, 5]), valid)
    assert float(right) < float(wrong)


def test_siglip_loss_matches_the_spec_by_hand():
    """§1.2: (1/N) Σ_i Σ_j −log σ(z_ij · (exp(t)·cos(img_i, txt_j) + b)), z = +1 on the diagonal, −1 elsewhere."""
    from hsenet_search.train.losses import contrastive_loss

    rng = np.random.default_rng(2)
    n, e = 5, 4
    img, txt = _unit(rng.standard_normal((n, e))), _unit(rng.standard_normal((n, e)))
    scale, bias = math.exp(SIGLIP_LOGIT_SCALE_INIT), SIGLIP_BIAS_INIT
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = scale * float(img[i] @ txt[j]) + bias
            total += math.log1p(math.exp(-z * logit))  # −log σ(z·logit)
    got = contrastive_loss("siglip")(
        torch.as_tensor(img), torch.as_tensor(txt), torch.tensor(scale, dtype=torch.float64), torch.tensor(bias)
    )
    assert float(got) == pytest.approx(total / n, rel=1e-10)


@pytest.mark.parametrize("mode", ["exp", "raw"])
def test_siglip_scale_initialisation_in_both_scale_modes(mode):
    from hsenet_search.models import create_model
    from hsenet_search.train.radfinder import init_siglip_scale

    model = create_model("tiny", logit_scale_mode=mode)
    init_siglip_scale(model, "stage1")
    assert float(model.logit_scale("stage1").detach()) == pytest.approx(10.0)
    assert float(model.logit_scale("stage2").detach()) != pytest.approx(10.0)  # only the tower asked for
