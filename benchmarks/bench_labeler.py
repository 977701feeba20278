"""Benchmark the 18-label report labeller: 5-fold cross-validation on the 800 manually labelled CT-RATE reports.

Usage: ``python benchmarks/bench_labeler.py [--data ../shared/data/ct-rate-manual-labels/train.csv]``
Writes ``benchmarks/results/labeler_cv.json`` and ``benchmarks/results/labeler_cv.md``.

The labeller is rule-based and fits nothing, so every fold is a held-out fold; the folds measure how much the
scores vary across report subsets. Per-label precision / recall / F1 are pooled over the folds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from hsenet_search.data.labels import LABELS, cv_folds, extract_labels

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ct-rate-manual-labels" / "train.csv"
RESULTS = REPO / "benchmarks" / "results"
TARGET_MACRO_F1, TARGET_MIN_F1 = 0.90, 0.75

PROTOCOL = (
    "Rule-based labeller (clinical vocabulary per label, sentence/clause splitting, negation scope, uncertainty, "
    "organ/meaning vetoes); no parameters are fitted. Development: the rules were written while reading the error "
    "cases of folds 0-3 (640 reports, cv_folds seed 0); fold 4 (160 reports) was not read and was scored once "
    "after the rules were written, giving macro-F1 0.948 (micro 0.947); later edits (clinically general "
    "vocabulary, coordination in negation scope, phrasings of the synthetic report generator) were not informed by "
    "fold 4. Scores on folds 0-3 are optimistic "
    "because the vocabulary was tuned on them; fold 4 and the acceptance run on held-out reports are the "
    "honest estimates. Vocabulary favours clinically general terms; where the radiologist labels follow a "
    "convention (e.g. fibroatelectasis -> fibrotic sequela, not atelectasis; any reported lymph node -> "
    "lymphadenopathy; ground-glass nodule -> nodule, not opacity) the rules follow the labels."
)


def _scores(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return precision_recall_fscore_support(y, p, average=None, labels=range(len(LABELS)), zero_division=0)


def run(data: Path, k: int = 5, seed: int = 0) -> dict:
    """Score the labeller fold by fold on ``data`` (AccessionNo, report_text, 18 labels)."""
    frame = pd.read_csv(data)
    texts = frame["report_text"].fillna("").astype(str).tolist()
    truth = frame[list(LABELS)].to_numpy(dtype=np.int8)
    folds = cv_folds(len(frame), k=k, seed=seed)
    start = time.perf_counter()
    pred = np.zeros_like(truth)
    fold_macro = []
    for f in range(k):
        rows = folds == f
        pred[rows] = extract_labels([t for t, r in zip(texts, rows, strict=True) if r])
        fold_macro.append(float(_scores(truth[rows], pred[rows])[2].mean()))
    seconds = time.perf_counter() - start
    precision, recall, f1, support = _scores(truth, pred)
    micro = precision_recall_fscore_support(truth, pred, average="micro", zero_division=0)
    below = [label for label, v in zip(LABELS, f1, strict=True) if v < TARGET_MIN_F1]
    return {
        "benchmark": "labeler_cv",
        "data": {
            "file": data.name,
            "reports": len(frame),
            "source": "CT-CLIP text_classifier train.csv (CT-RATE manual labels, 800 reports)",
        },
        "protocol": {
            "folds": k,
            "seed": seed,
            "fold_assignment": "hsenet_search.data.labels.cv_folds",
            "pooling": "per-label P/R/F1 over the predictions of all folds",
            "notes": PROTOCOL,
        },
        "per_label": {
            label: {
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
                "f1": round(float(v), 4),
                "support": int(s),
            }
            for label, p, r, v, s in zip(LABELS, precision, recall, f1, support, strict=True)
        },
        "macro_f1": round(float(f1.mean()), 4),
        "micro_f1": round(float(micro[2]), 4),
        "micro_precision": round(float(micro[0]), 4),
        "micro_recall": round(float(micro[1]), 4),
        "per_fold_macro_f1": [round(v, 4) for v in fold_macro],
        "per_fold_macro_f1_mean": round(float(np.mean(fold_macro)), 4),
        "per_fold_macro_f1_sd": round(float(np.std(fold_macro, ddof=1)), 4),
        "target": {
            "macro_f1": TARGET_MACRO_F1,
            "min_label_f1": TARGET_MIN_F1,
            "met": bool(f1.mean() >= TARGET_MACRO_F1 and not below),
            "labels_below_min": below,
        },
        "runtime_s": round(seconds, 3),
        "ms_per_report": round(1000 * seconds / max(len(frame), 1), 3),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def to_markdown(result: dict) -> str:
    """A Markdown table of the per-label scores plus the summary lines."""
    lines = [
        f"# Report labeller: {result['protocol']['folds']}-fold CV on {result['data']['reports']} CT-RATE "
        "manually labelled reports",
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, s in result["per_label"].items():
        lines.append(f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |")
    folds = ", ".join(f"{v:.3f}" for v in result["per_fold_macro_f1"])
    lines += [
        f"| **macro** | | | **{result['macro_f1']:.3f}** | |",
        f"| micro | {result['micro_precision']:.3f} | {result['micro_recall']:.3f} | {result['micro_f1']:.3f} | |",
        "",
        f"Per-fold macro-F1: {folds} (mean {result['per_fold_macro_f1_mean']:.3f} ± "
        f"{result['per_fold_macro_f1_sd']:.3f} sd).",
        f"Target macro-F1 ≥ {result['target']['macro_f1']} with every label ≥ {result['target']['min_label_f1']}: "
        f"{'met' if result['target']['met'] else 'NOT met'}"
        + (
            f" (below: {', '.join(result['target']['labels_below_min'])})"
            if result["target"]["labels_below_min"]
            else ""
        )
        + ".",
        f"Runtime {result['runtime_s']:.2f} s ({result['ms_per_report']:.2f} ms/report) on "
        f"{result['machine']['processor']}, {result['machine']['cpus']} CPUs, Python {result['machine']['python']}.",
        "",
        f"Protocol: {result['protocol']['notes']}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV with report_text and the 18 labels")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"error: {args.data}: labelled reports CSV not found", file=sys.stderr)
        return 2
    result = run(args.data, k=args.folds, seed=args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "labeler_cv.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out_dir / "labeler_cv.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
