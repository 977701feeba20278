"""The localisation benchmark: predicted vs cited depth bins of report snippets on held-out scans.

Every scan of the split (its first reconstruction by name) contributes every kept snippet its report
cites (:mod:`hsenet_search.data.snippets`; RadFinder keeps one per scan, we keep all and say so). The
cited slice maps to a depth bin of the preprocessed tensor (:mod:`hsenet_search.data.depth`); snippets
whose slice falls outside the tensor are counted and left out. The model predicts the argmax bin of
``cos(snippet, depth)``; the error is ``|predicted − cited| × bin_mm`` of that scan (RadFinder's
protocol, §1.4), summarised by :mod:`hsenet_search.eval.localisation` beside the uniform-random and
middle-bin baselines, overall and per label (labels of the snippet's sentence, by the report labeler).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hsenet_search.data.cache import PreprocessCache
from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.depth import DepthBins
from hsenet_search.data.labels import LABELS, label_report
from hsenet_search.data.snippets import kept, mine_snippets
from hsenet_search.errors import DatasetError, HSENetError

from .localisation import baseline_predictions, localisation_errors, summarise_errors


def _first_per_scan(cases):
    seen: dict[str, object] = {}
    for case in sorted(cases, key=lambda c: c.volume_name):
        seen.setdefault(case.scan_id, case)
    return list(seen.values())


def localisation_benchmark(
    model,
    data: str | Path,
    *,
    split: str = "valid",
    cache: PreprocessCache | None = None,
    progress: bool = True,
) -> dict:
    """MAE (95 % bootstrap CI), median, exact and ≤ 12/24 mm shares of ``model`` and the baselines."""
    from rich.progress import track

    from hsenet_search.data.preprocess import preprocess_case_geometry

    model.require_localisation_head()
    cases = _first_per_scan(open_dataset(data, split=split, missing="skip"))
    predicted, cited, bin_mm, bins_per_scan, labels, failures = [], [], [], [], [], []
    outside = scans = 0
    for case in track(cases, description="locating snippets", disable=not progress):
        snippets = [s for s in kept(mine_snippets(case.report)) if s.text.strip()]
        if not snippets:
            continue
        try:
            x, geometry = preprocess_case_geometry(case, model.profile, cache=cache)
        except HSENetError as exc:
            failures.append({"volume_name": case.volume_name, "error": str(exc)})
            continue
        bins = DepthBins(geometry, model.depth_patch)
        targets = [bins.bin_of_slice(s.slice_index) for s in snippets]
        outside += sum(t is None for t in targets)
        snippets = [s for s, t in zip(snippets, targets, strict=True) if t is not None]
        if not snippets:
            continue
        scans += 1
        depths = model.encode_depths(torch.from_numpy(x)[None])[0].float().cpu()
        scores = model.encode_snippets([s.text for s in snippets]).float().cpu() @ depths.T
        predicted += scores.argmax(1).tolist()
        cited += [t for t in targets if t is not None]
        bin_mm += [bins.bin_mm] * len(snippets)
        bins_per_scan += [bins.count] * len(snippets)
        labels += [[name for name, v in label_report(s.sentence).items() if v] for s in snippets]
    if not predicted:
        raise DatasetError(f"no scan of split {split!r} has a report citing an image inside its volume", data)
    predicted, cited, bin_mm = np.array(predicted), np.array(cited), np.array(bin_mm)
    valid = np.arange(max(bins_per_scan))[None, :] < np.array(bins_per_scan)[:, None]
    rows = {"model": predicted, **baseline_predictions(valid)}
    errors = {name: localisation_errors(pred, cited, 1.0) * bin_mm for name, pred in rows.items()}
    overall = {name: summarise_errors(err, bin_mm).to_json() for name, err in errors.items()}
    per_label = {}
    for name in LABELS:
        mask = np.array([name in row for row in labels])
        if mask.sum() >= 5:
            per_label[name] = {row: summarise_errors(err[mask], bin_mm[mask]).to_json() for row, err in errors.items()}
    middle = overall["middle_bin"]["mae_mm"]
    return {
        "split": split,
        "scans": scans,
        "snippets": int(len(predicted)),
        "outside_volume": outside,
        "bin_mm": {
            "median": float(np.median(bin_mm)),
            "min": float(bin_mm.min()),
            "max": float(bin_mm.max()),
        },
        "bins_per_scan": int(max(bins_per_scan)),
        "overall": overall,
        "mae_ratio_to_middle_bin": overall["model"]["mae_mm"] / middle if middle > 0 else None,
        "per_label": per_label,
        "failures": failures,
        "model": {"name": model.config.name, "fingerprint": model.fingerprint},
    }


def localisation_markdown(result: dict) -> str:
    """The overall and per-label tables."""

    def cells(r: dict) -> str:
        return (
            f"{r['mae_mm']:.1f} [{r['mae_low']:.1f}, {r['mae_high']:.1f}] | {r['median_mm']:.1f} | "
            f"{100 * r['exact']:.1f} | {100 * r['within_12mm']:.1f} | {100 * r['within_24mm']:.1f}"
        )

    head = "| predictor | MAE mm [95 % CI] | median mm | exact bin % | ≤12 mm % | ≤24 mm % |\n" + "|---" * 6
    head += "|"
    lines = [
        f"Localisation on split {result['split']}: {result['snippets']} snippets of {result['scans']} scans "
        f"(bins of {result['bin_mm']['median']:.1f} mm median, {result['bins_per_scan']} per scan; "
        f"{result['outside_volume']} cited slices outside the tensor left out).",
        "",
        head,
    ]
    lines += [f"| {name} | {cells(r)} |" for name, r in result["overall"].items()]
    ratio = result["mae_ratio_to_middle_bin"]
    if ratio is not None:
        lines += ["", f"Model MAE / middle-bin MAE = {ratio:.2f}."]
    if result["per_label"]:
        lines += [
            "",
            "| label | n | model MAE mm | middle-bin MAE mm | random-bin MAE mm |",
            "|---|---|---|---|---|",
        ]
        for name, rows in result["per_label"].items():
            lines.append(
                f"| {name} | {rows['model']['n']} | {rows['model']['mae_mm']:.1f} | "
                f"{rows['middle_bin']['mae_mm']:.1f} | {rows['random_bin']['mae_mm']:.1f} |"
            )
    return "\n".join(lines) + "\n"
