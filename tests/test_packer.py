"""Spatial Packer (spec §3.1) against a naive per-window implementation written from the spec."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hsenet_search.errors import ModelError
from hsenet_search.models.packer import SpatialPacker


def naive_packer(packer: SpatialPacker, tokens: torch.Tensor) -> torch.Tensor:
    """One window at a time: avg-pool centroid, attention to its members, residual + LayerNorm, MLP."""
    sd = {k: v.detach() for k, v in packer.state_dict().items()}
    b, _, c = tokens.shape
    (gd, gh, gw), (kd, kh, kw) = packer.grid, packer.kernel
    grid = tokens.reshape(b, gd, gh, gw, c)
    pooled = F.avg_pool3d(grid.permute(0, 4, 1, 2, 3), kernel_size=(kd, kh, kw))  # (B, C, nd, nh, nw)
    att = "resolution_attention."
    out = []
    for d in range(gd // kd):
        for h in range(gh // kh):
            for w in range(gw // kw):
                members = grid[:, d * kd : (d + 1) * kd, h * kh : (h + 1) * kh, w * kw : (w + 1) * kw].reshape(b, -1, c)
                centroid = pooled[:, :, d, h, w]  # (B, C)
                q = centroid @ sd[att + "Wq.weight"].T + sd[att + "Wq.bias"]
                k = members @ sd[att + "Wk.weight"].T + sd[att + "Wk.bias"]
                v = members @ sd[att + "Wv.weight"].T + sd[att + "Wv.bias"]
                weights = torch.softmax((k @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(c), dim=-1)  # (B, members)
                agg = (weights.unsqueeze(-1) * v).sum(dim=1)
                z = F.layer_norm(
                    q + agg @ sd[att + "output_linear.weight"].T + sd[att + "output_linear.bias"],
                    (c,),
                    sd[att + "norm.weight"],
                    sd[att + "norm.bias"],
                )
                hidden = F.gelu(z @ sd["proj_mpls.0.weight"].T + sd["proj_mpls.0.bias"])
                out.append(hidden @ sd["proj_mpls.2.weight"].T + sd["proj_mpls.2.bias"])
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("grid,kernel", [((8, 16, 16), (1, 4, 4)), ((2, 4, 8), (1, 4, 4)), ((4, 4, 4), (2, 2, 2))])
def test_packer_matches_naive_window_loop(grid, kernel):
    torch.manual_seed(0)
    packer = SpatialPacker(24, 40, grid, kernel).eval()
    tokens = torch.randn(2, math.prod(grid), 24)
    with torch.no_grad():
        got = packer(tokens)
        want = naive_packer(packer, tokens)
    n_windows = math.prod(g // k for g, k in zip(grid, kernel, strict=True))
    assert got.shape == (2, n_windows, 40) == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_official_shape_and_key_names():
    packer = SpatialPacker(16, 32, (8, 16, 16))
    assert packer.num_windows == 128
    assert set(packer.state_dict()) == {
        f"resolution_attention.{m}.{p}" for m in ("Wq", "Wk", "Wv", "output_linear", "norm") for p in ("weight", "bias")
    } | {f"proj_mpls.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    assert packer.eval()(torch.randn(1, 2048, 16)).shape == (1, 128, 32)


def test_window_order_is_row_major_over_pooled_grid():
    """Window j gathers exactly the tokens of the j-th (d, h, w) window in row-major order."""
    packer = SpatialPacker(1, 1, (2, 4, 4), (1, 2, 2))
    ids = torch.arange(32, dtype=torch.float32).reshape(1, 32, 1)
    members = packer.windows(ids)[0, :, :, 0]
    assert members.shape == (8, 4)
    assert members[0].tolist() == [0, 1, 4, 5]
    assert members[1].tolist() == [2, 3, 6, 7]
    assert members[2].tolist() == [8, 9, 12, 13]
    assert members[4].tolist() == [16, 17, 20, 21]


def test_dropout_only_in_training_and_bad_grids():
    torch.manual_seed(1)
    packer = SpatialPacker(16, 16, (2, 4, 4))
    tokens = torch.randn(2, 32, 16)
    packer.train()
    assert not torch.equal(packer(tokens), packer(tokens))
    packer.eval()
    assert torch.equal(packer(tokens), packer(tokens))
    with pytest.raises(ModelError, match="not divisible"):
        SpatialPacker(16, 16, (2, 6, 4))
    with pytest.raises(ModelError, match="expects 32 tokens"):
        packer(torch.randn(1, 31, 16))
