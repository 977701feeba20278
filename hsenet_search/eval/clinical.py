"""Clinical efficacy: positive-class precision/recall/F1 of labels of generated vs reference reports.

Zero division follows sklearn's ``zero_division=0`` (the R2Gen/CT2Rep convention): precision is 0 for a
label never predicted, recall is 0 for a label absent from the references, F1 is 0 when P + R = 0.
Macro averages every label equally, those without reference positives included (their ``support`` is
reported so they can be spotted); macro F1 is the mean of per-label F1. Micro pools TP/FP/FN over all
labels and samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hsenet_search.data.labels import LABELS


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return precision, recall, f1


def clinical_efficacy(
    ref_labels: np.ndarray, pred_labels: np.ndarray, labels: Sequence[str] = LABELS
) -> dict[str, dict]:
    """``{"micro": {precision, recall, f1}, "macro": {...}, "per_label": {label: {precision, recall, f1,
    support, predicted}}}`` for 0/1 matrices (N, L); ``support``/``predicted`` count positives."""
    labels = list(labels)
    ref, pred = np.asarray(ref_labels), np.asarray(pred_labels)
    if ref.ndim != 2 or ref.shape != pred.shape or ref.shape[1] != len(labels):
        raise ValueError(f"label matrices must both be (N, {len(labels)}), got {ref.shape} and {pred.shape}")
    if not (np.isin(ref, (0, 1)).all() and np.isin(pred, (0, 1)).all()):
        raise ValueError("label matrices must be 0/1")
    ref, pred = ref.astype(bool), pred.astype(bool)
    tp = (ref & pred).sum(axis=0)
    fp = (~ref & pred).sum(axis=0)
    fn = (ref & ~pred).sum(axis=0)

    precision, recall, f1 = _prf(tp, fp, fn)
    micro = [float(v[()]) for v in _prf(tp.sum(), fp.sum(), fn.sum())]
    return {
        "micro": dict(zip(("precision", "recall", "f1"), micro, strict=True)),
        "macro": {
            "precision": float(precision.mean()),
            "recall": float(recall.mean()),
            "f1": float(f1.mean()),
        },
        "per_label": {
            label: {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(ref[:, c].sum()),
                "predicted": int(pred[:, c].sum()),
            }
            for c, label in enumerate(labels)
        },
    }


def clinical_efficacy_from_text(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, dict]:
    """Clinical efficacy of generated reports; both sides are labelled by ``data.labels.extract_labels``."""
    from hsenet_search.data.labels import extract_labels

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    return clinical_efficacy(extract_labels(list(references)), extract_labels(list(hypotheses)))
