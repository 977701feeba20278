"""Clinical-efficacy metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from hsenet_search.data.labels import LABELS
from hsenet_search.eval.clinical import clinical_efficacy, clinical_efficacy_from_text

REF = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
PRED = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]])
NAMES = ["A", "B", "C"]


def test_hand_example():
    # A: TP 2 (rows 0, 3), FN 1 (row 1), FP 0 -> P 1, R 2/3, F1 4/5
    # B: TP 1, FP 0, FN 0 -> 1, 1, 1
    # C: TP 0, FP 1 (row 1), FN 1 (row 0) -> 0, 0, 0
    result = clinical_efficacy(REF, PRED, labels=NAMES)
    assert result["per_label"]["A"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3, "predicted": 2}
    )
    assert result["per_label"]["C"]["f1"] == 0.0
    assert result["macro"] == pytest.approx({"precision": 2 / 3, "recall": 5 / 9, "f1": 0.6})
    # micro: TP 3, FP 1, FN 2 -> P 3/4, R 3/5, F1 2/3
    assert result["micro"] == pytest.approx({"precision": 0.75, "recall": 0.6, "f1": 2 / 3})


def test_matches_sklearn_with_zero_division_zero():
    rng = np.random.default_rng(0)
    ref = (rng.random((40, 18)) < 0.2).astype(int)
    pred = (rng.random((40, 18)) < 0.2).astype(int)
    ref[:, 5] = 0  # a label absent from the references
    pred[:, 7] = 0  # a label never predicted
    result = clinical_efficacy(ref, pred)
    assert list(result["per_label"]) == list(LABELS)
    for average in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(ref, pred, average=average, zero_division=0)
        assert result[average] == pytest.approx({"precision": p, "recall": r, "f1": f})
    assert result["per_label"][LABELS[5]]["recall"] == 0.0 and result["per_label"][LABELS[5]]["support"] == 0
    assert result["per_label"][LABELS[7]]["precision"] == 0.0


def test_rejects_mismatched_or_non_binary_input():
    with pytest.raises(ValueError):
        clinical_efficacy(REF, PRED[:, :2], labels=NAMES)
    with pytest.raises(ValueError):
        clinical_efficacy(REF, PRED * 2, labels=NAMES)


def test_from_text_labels_both_sides_with_the_labeler():
    refs = [
        "Bilateral pleural effusion is present. Cardiomegaly.",
        "No pleural effusion. Heart size is normal.",
        "Emphysema is seen in both lungs.",
    ]
    hyps = [
        "Pleural effusion on both sides. Heart size is normal.",
        "No pleural effusion. Heart size is normal.",
        "Emphysema in both lungs.",
    ]
    result = clinical_efficacy_from_text(refs, hyps)
    effusion = result["per_label"]["Pleural effusion"]
    assert (effusion["support"], effusion["predicted"], effusion["f1"]) == (1, 1, 1.0)
    cardiomegaly = result["per_label"]["Cardiomegaly"]
    assert (cardiomegaly["support"], cardiomegaly["predicted"], cardiomegaly["recall"]) == (1, 0, 0.0)
    assert result["micro"]["precision"] == pytest.approx(1.0)
    assert result["micro"]["recall"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        clinical_efficacy_from_text(refs, hyps[:2])
