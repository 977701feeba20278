"""Zero-shot multi-abnormality classification metrics, CT-CLIP protocol.

Per abnormality the model scores the prompt pair ``("{label} is present.", "{label} is not present.")``
(or, with ``mean7``, the averaged embeddings of 7 such pairs) and P(present) is the softmax over the pair.
Per label: AUROC, and at a ROC-corner threshold the support-weighted F1 (sklearn ``average="weighted"``,
over both classes, as CT-CLIP reports it; not the positive-class F1), accuracy and positive-class
precision. The published code chooses the thresholds on the very predictions it scores;
:func:`zero_shot_metrics` does that only when no calibration split is given and labels the result
accordingly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, f1_score, precision_score, roc_auc_score

from hsenet_search.data.labels import LABELS

SEPARATE_SPLIT = "separate split"
SAME_SPLIT = "same split (published protocol)"
THRESHOLD_GRID = np.linspace(0.0, 1.0, 100)


# (positive, negative) templates: ``{X}`` the label as written, ``{x}`` lower-cased. ``pair`` is CT-CLIP's
# (HEAD / v2) pair; ``mean7`` is a RadFinder-style ensemble of 7 pairs (its own 7 are not public: ours).
PROMPT_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "pair": (("{X} is present.", "{X} is not present."),),
    "mean7": (
        ("{X} is present.", "{X} is not present."),
        ("There is {x}.", "There is no {x}."),
        ("The scan shows {x}.", "The scan shows no {x}."),
        ("{X} is seen.", "No {x} is seen."),
        ("Findings consistent with {x}.", "No findings of {x}."),
        ("There is evidence of {x}.", "There is no evidence of {x}."),
        ("The chest CT demonstrates {x}.", "The chest CT demonstrates no {x}."),
    ),
}


def prompt_pair(label: str) -> tuple[str, str]:
    """CT-CLIP's (HEAD / v2) prompt pair for one abnormality."""
    return prompt_pairs(label, "pair")[0]


def prompt_pairs(label: str, prompts: str = "pair") -> list[tuple[str, str]]:
    """The (positive, negative) prompts of one abnormality under one set of :data:`PROMPT_TEMPLATES`."""
    if prompts not in PROMPT_TEMPLATES:
        raise ValueError(f"unknown prompt set {prompts!r}; expected one of {', '.join(PROMPT_TEMPLATES)}")
    fill = {"X": label, "x": label.lower()}
    return [(pos.format(**fill), neg.format(**fill)) for pos, neg in PROMPT_TEMPLATES[prompts]]


def ensemble_prompt_embeddings(
    encode: Callable[[list[str]], np.ndarray], labels: Sequence[str], prompts: str = "pair"
) -> tuple[np.ndarray, np.ndarray]:
    """``(pos, neg)`` (L, E): per label the unit embeddings of its templates averaged and re-normalised
    (RadFinder's ``mean7``; a single pair is its own embedding). ``encode`` maps texts to unit (n, E) rows."""
    out = []
    for side in (0, 1):
        rows = [[pair[side] for pair in prompt_pairs(label, prompts)] for label in labels]
        flat = np.asarray(encode([t for row in rows for t in row]), dtype=np.float64)
        flat = flat / np.linalg.norm(flat, axis=-1, keepdims=True)
        mean = flat.reshape(len(labels), len(rows[0]), -1).mean(axis=1)
        out.append(mean / np.linalg.norm(mean, axis=-1, keepdims=True))
    return out[0], out[1]


def presence_probability(pos_scores: np.ndarray, neg_scores: np.ndarray, logit_scale: float) -> np.ndarray:
    """P(present) = softmax([s*pos, s*neg])[0] = sigmoid(s * (pos - neg)).

    ``pos_scores``/``neg_scores`` are cosine similarities of the volume with the two prompts, and
    ``logit_scale`` is the multiplier ``s = exp(T)`` (e.g. 100), not the log-parameter ``T``.
    """
    if not logit_scale > 0:
        raise ValueError(f"logit_scale must be the positive multiplier exp(T), got {logit_scale}")
    diff = logit_scale * (np.asarray(pos_scores, dtype=np.float64) - np.asarray(neg_scores, dtype=np.float64))
    return np.exp(-np.logaddexp(0.0, -diff))


def roc_corner_threshold(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """CT-CLIP's ``find_threshold``: over ``np.linspace(0, 1, 100)`` with ``pred = prob > t``, the ``t``
    minimising ``sqrt((1 - TPR)^2 + FPR^2)``; equal distances go to the larger threshold (its ``<=``).

    When ``y_true`` has a single class the undefined rate (TPR without positives, FPR without negatives)
    contributes 0, so only the defined one is optimised (the published code fails on such a label).
    """
    y_true = np.asarray(y_true).astype(bool)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    pred = y_prob[None, :] > THRESHOLD_GRID[:, None]
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    miss = 1.0 - (pred & y_true).sum(axis=1) / n_pos if n_pos else np.zeros(len(THRESHOLD_GRID))
    fpr = (pred & ~y_true).sum(axis=1) / n_neg if n_neg else np.zeros(len(THRESHOLD_GRID))
    distance = np.sqrt(miss**2 + fpr**2)
    last_best = len(distance) - 1 - int(np.argmin(distance[::-1]))
    return float(THRESHOLD_GRID[last_best])


@dataclass
class ZeroShotResult:
    """Per-label and macro zero-shot metrics.

    ``per_label[label]`` has ``auc, f1_weighted, accuracy, precision, threshold, n_pos, n``; ``auc`` is NaN
    for a label whose ``y_true`` has a single class (listed in ``auc_undefined``). ``macro`` averages AUC
    over the labels where it is defined and the other metrics over all labels.
    """

    per_label: dict[str, dict[str, float]]
    macro: dict[str, float]
    threshold_source: str
    auc_undefined: list[str] = field(default_factory=list)


def _check_matrices(y_true: np.ndarray, probs: np.ndarray, n_labels: int, name: str) -> tuple[np.ndarray, ...]:
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != probs.shape or y_true.shape[1] != n_labels:
        raise ValueError(f"{name}: y_true and probs must both be (N, {n_labels}), got {y_true.shape}, {probs.shape}")
    if y_true.shape[0] == 0:
        raise ValueError(f"{name}: no samples")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"{name}: y_true must be 0/1")
    if not np.isfinite(probs).all():
        raise ValueError(f"{name}: probs must be finite")
    return y_true.astype(np.int64), probs


def zero_shot_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    thresholds_from: tuple[np.ndarray, np.ndarray] | None = None,
    labels: Sequence[str] = LABELS,
) -> ZeroShotResult:
    """Zero-shot metrics of ``probs`` (N, L) against 0/1 ``y_true`` (N, L).

    Thresholds come from ``thresholds_from = (y_true_cal, probs_cal)`` (a separate calibration split)
    when given, else from the scored data itself (the published, optimistic choice).
    """
    labels = list(labels)
    y_true, probs = _check_matrices(y_true, probs, len(labels), "evaluation split")
    if thresholds_from is None:
        y_cal, p_cal, source = y_true, probs, SAME_SPLIT
    else:
        y_cal, p_cal = _check_matrices(*thresholds_from, len(labels), "calibration split")
        source = SEPARATE_SPLIT

    per_label: dict[str, dict[str, float]] = {}
    undefined: list[str] = []
    for c, label in enumerate(labels):
        truth, prob = y_true[:, c], probs[:, c]
        threshold = roc_corner_threshold(y_cal[:, c], p_cal[:, c])
        pred = (prob > threshold).astype(np.int64)
        if truth.min() == truth.max():
            auc = float("nan")
            undefined.append(label)
        else:
            auc = float(roc_auc_score(truth, prob))
        per_label[label] = {
            "auc": auc,
            "f1_weighted": float(f1_score(truth, pred, average="weighted", zero_division=0)),
            "accuracy": float(accuracy_score(truth, pred)),
            "precision": float(precision_score(truth, pred, zero_division=0)),
            "threshold": threshold,
            "n_pos": int(truth.sum()),
            "n": int(truth.size),
        }

    aucs = [m["auc"] for m in per_label.values() if not np.isnan(m["auc"])]
    macro = {"auc": float(np.mean(aucs)) if aucs else float("nan")}
    for key in ("f1_weighted", "accuracy", "precision"):
        macro[key] = float(np.mean([m[key] for m in per_label.values()]))
    return ZeroShotResult(per_label=per_label, macro=macro, threshold_source=source, auc_undefined=undefined)


def rank_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """AUROC as the Mann–Whitney statistic (ties count one half); NaN when ``y_true`` has one class."""
    y = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc_ci(y_true: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Macro AUROC (over labels where it is defined) with a 95 % percentile bootstrap over volumes."""
    from .bootstrap import bootstrap_ci

    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)

    def macro(rows: np.ndarray) -> float:
        aucs = [rank_auc(y_true[rows, c], probs[rows, c]) for c in range(y_true.shape[1])]
        return float(np.nanmean(aucs)) if not np.isnan(aucs).all() else float("nan")

    return bootstrap_ci(macro, len(y_true), n_boot, seed).as_dict()
