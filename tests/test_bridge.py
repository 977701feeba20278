"""CMKI knowledge bank: read-out, loss and the bridged score against hand computations (numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsenet_search.models.bridge import KnowledgeBank, bridged_volume, cmki_loss


def _np_softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _np_unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_ce(logits):
    """Mean cross-entropy of each row against its diagonal entry."""
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(np.diag(logp))


def _bank(weight):
    bank = KnowledgeBank(*weight.shape).double()
    with torch.no_grad():
        bank.weight.copy_(torch.as_tensor(weight))
    return bank


def test_orthogonal_init():
    bank = KnowledgeBank(64, 16)
    w = bank.weight.detach().numpy()
    np.testing.assert_allclose(w.T @ w, np.eye(16), atol=1e-5)  # more entries than dims: orthonormal columns


def test_read_out_is_a_softmax_over_the_bank():
    w = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    e = np.array([[0.5, -1.0], [3.0, 0.2]])
    expected = _np_softmax(e @ w.T) @ w
    got = _bank(w)(torch.as_tensor(e)).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_loss_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    w, img, txt = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    r_img, r_txt = _np_softmax(img @ w.T) @ w, _np_softmax(txt @ w.T) @ w

    def sym(a, b):
        logits = 10.0 * _np_unit(a) @ _np_unit(b).T
        return _np_ce(logits) + _np_ce(logits.T)

    mse = np.mean((r_img - img) ** 2) + np.mean((r_txt - txt) ** 2)
    expected = sym(img, txt) + 0.5 * mse + sym(r_img, r_txt)
    loss = cmki_loss(torch.as_tensor(img), torch.as_tensor(txt), _bank(w))
    assert float(loss.total.detach()) == pytest.approx(expected, abs=1e-10)
    assert float(loss.reconstruction.detach()) == pytest.approx(mse, abs=1e-12)
    assert float(loss.original.detach()) == pytest.approx(sym(img, txt), abs=1e-10)


def test_loss_trains_the_bank_and_both_inputs():
    bank = KnowledgeBank(8, 4)  # float32 end to end
    img = torch.randn(6, 4, requires_grad=True)
    txt = torch.randn(6, 4, requires_grad=True)
    cmki_loss(img, txt, bank).total.backward()
    for grad in (bank.weight.grad, img.grad, txt.grad):
        assert grad is not None and float(grad.abs().sum()) > 0


def test_bridged_vector_gives_the_brgsa_inference_score():
    rng = np.random.default_rng(1)
    w, img, txt = rng.standard_normal((7, 5)), rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
    r_img = _np_softmax(img @ w.T) @ w
    t = _np_unit(txt)
    expected = 0.5 * (_np_unit(img) @ t.T + _np_unit(r_img) @ t.T)  # ½[cos(e_img, t) + cos(ê_img, t)]
    got = bridged_volume(torch.as_tensor(img), _bank(w)).numpy(force=True) @ t.T
    np.testing.assert_allclose(got, expected, atol=1e-12)
