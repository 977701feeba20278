"""Zero-shot classification metrics (CT-CLIP protocol) against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from hsenet_search.data.labels import LABELS
from hsenet_search.eval.zeroshot import (
    SAME_SPLIT,
    SEPARATE_SPLIT,
    ensemble_prompt_embeddings,
    presence_probability,
    prompt_pair,
    prompt_pairs,
    roc_corner_threshold,
    zero_shot_metrics,
)

Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8])


def test_prompt_pair():
    assert prompt_pair("Pleural effusion") == (
        "Pleural effusion is present.",
        "Pleural effusion is not present.",
    )


def test_mean7_is_seven_distinct_pairs_of_the_label():
    pairs = prompt_pairs("Pleural effusion", "mean7")
    assert len(pairs) == 7 and len(set(pairs)) == 7 and pairs[0] == prompt_pair("Pleural effusion")
    for pos, neg in pairs:
        assert pos != neg and "pleural effusion" in pos.lower() and "pleural effusion" in neg.lower()
    assert ("There is pleural effusion.", "There is no pleural effusion.") in pairs
    with pytest.raises(ValueError, match="mean9"):
        prompt_pairs("Pleural effusion", "mean9")


def test_prompt_ensemble_matches_a_hand_computation():
    """Each template's embedding normalised, the 7 averaged, the mean normalised again (RadFinder's mean7)."""
    rng = np.random.default_rng(0)
    table: dict[str, np.ndarray] = {}

    def encode(texts):  # a fixed random (not unit-length) vector per text
        return np.stack([table.setdefault(t, rng.standard_normal(5) * 3.0) for t in texts])

    labels = ("Cardiomegaly", "Lung nodule")
    pos, neg = ensemble_prompt_embeddings(encode, labels, "mean7")
    assert pos.shape == neg.shape == (2, 5)
    for i, label in enumerate(labels):
        for side, got in ((0, pos), (1, neg)):
            total = np.zeros(5)
            for pair in prompt_pairs(label, "mean7"):
                vec = table[pair[side]]
                total += vec / np.sqrt((vec**2).sum())
            mean = total / 7
            np.testing.assert_allclose(got[i], mean / np.sqrt((mean**2).sum()), rtol=1e-12)
    single, _ = ensemble_prompt_embeddings(encode, labels, "pair")  # one pair: its own unit embedding
    vec = table["Cardiomegaly is present."]
    np.testing.assert_allclose(single[0], vec / np.linalg.norm(vec), rtol=1e-12)


def test_presence_probability_is_the_softmax_over_the_pair():
    pos, neg, scale = np.array([0.30, 0.10, -0.2]), np.array([0.25, 0.12, 0.5]), 100.0
    logits = np.stack([scale * pos, scale * neg], axis=1)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert presence_probability(pos, neg, scale) == pytest.approx(softmax[:, 0])
    # 1 / (1 + e^-5) for a cosine gap of 0.05 at scale 100
    assert presence_probability(0.30, 0.25, 100.0) == pytest.approx(1 / (1 + np.exp(-5.0)))
    # large gaps saturate without overflow
    assert presence_probability(np.array([1.0, -1.0]), np.array([-1.0, 1.0]), 1000.0) == pytest.approx([1.0, 0.0])
    with pytest.raises(ValueError):
        presence_probability(pos, neg, 0.0)


def test_roc_corner_threshold_hand_example():
    # pred = p > t on t = i/99:  t < 0.1: TPR 1, FPR 1 (d=1);  0.1 <= t < 0.35: TPR 1, FPR .5 (d=.5);
    # 0.35 <= t < 0.4: TPR .5, FPR .5 (d=.707);  0.4 <= t < 0.8: TPR .5, FPR 0 (d=.5);  t >= 0.8: d=1.
    # d=.5 ties are resolved to the largest such t (the published "<="): i=79.
    assert roc_corner_threshold(Y, P) == pytest.approx(79 / 99)


def test_roc_corner_threshold_single_class_optimises_the_defined_rate():
    # no positives: only FPR counts, it is 0 for every t >= 0.8 -> the largest grid point
    assert roc_corner_threshold(np.zeros(3), np.array([0.2, 0.5, 0.8])) == pytest.approx(1.0)
    # no negatives: only TPR counts, it is 1 for t < 0.2 -> the largest such grid point, 19/99
    assert roc_corner_threshold(np.ones(3), np.array([0.2, 0.5, 0.8])) == pytest.approx(19 / 99)


def test_zero_shot_metrics_same_split_hand_example():
    result = zero_shot_metrics(Y[:, None], P[:, None], labels=["A"])
    metrics = result.per_label["A"]
    assert result.threshold_source == SAME_SPLIT
    # AUC: of the 4 (pos, neg) pairs only (0.35, 0.4) is misordered -> 3/4
    assert metrics["auc"] == pytest.approx(0.75)
    # threshold 79/99 -> pred [0, 0, 0, 1]; class 1: P=1, R=1/2, F1=2/3; class 0: P=2/3, R=1, F1=4/5;
    # support-weighted F1 = (2/3 + 4/5) / 2 (the positive-class F1 would be 2/3)
    assert metrics["f1_weighted"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["precision"] == pytest.approx(1.0)
    assert (metrics["n_pos"], metrics["n"]) == (2, 4)
    assert result.macro["auc"] == pytest.approx(0.75)


def test_separate_split_thresholds():
    # calibration: TPR 1 and FPR 0 for 0.2 <= t < 0.3, the largest grid point there is 29/99
    y_cal, p_cal = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.7])
    result = zero_shot_metrics(Y[:, None], P[:, None], thresholds_from=(y_cal[:, None], p_cal[:, None]), labels=["A"])
    metrics = result.per_label["A"]
    assert result.threshold_source == SEPARATE_SPLIT
    assert metrics["threshold"] == pytest.approx(29 / 99)
    # pred [0, 1, 1, 1]: accuracy 3/4, precision 2/3; class 1 F1 = 4/5, class 0 F1 = 2/3
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["f1_weighted"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert metrics["auc"] == pytest.approx(0.75)  # AUC does not depend on the threshold


def test_single_class_label_has_undefined_auc_and_is_left_out_of_the_macro():
    y = np.stack([Y, np.zeros(4, dtype=int)], axis=1)
    p = np.stack([P, np.array([0.1, 0.2, 0.3, 0.9])], axis=1)
    result = zero_shot_metrics(y, p, labels=["A", "B"])
    assert np.isnan(result.per_label["B"]["auc"])
    assert result.auc_undefined == ["B"]
    assert result.macro["auc"] == pytest.approx(0.75)
    # B: threshold 1.0 -> nothing predicted -> accuracy 1; macro accuracy averages all labels
    assert result.per_label["B"]["accuracy"] == pytest.approx(1.0)
    assert result.macro["accuracy"] == pytest.approx((0.75 + 1.0) / 2)


def test_default_labels_and_shape_checks():
    rng = np.random.default_rng(0)
    y = (rng.random((30, 18)) < 0.4).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random((30, 18)), 0, 1)
    result = zero_shot_metrics(y, p)
    assert list(result.per_label) == list(LABELS)
    from sklearn.metrics import roc_auc_score

    expected = [roc_auc_score(y[:, j], p[:, j]) for j in range(18)]
    assert [result.per_label[name]["auc"] for name in LABELS] == pytest.approx(expected)
    assert result.macro["auc"] == pytest.approx(np.mean(expected))
    with pytest.raises(ValueError):
        zero_shot_metrics(y[:, :17], p[:, :17])
    with pytest.raises(ValueError):
        zero_shot_metrics(y, p, thresholds_from=(y[:, :3], p[:, :3]))
