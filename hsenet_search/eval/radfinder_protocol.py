"""RadFinder's CT-RATE retrieval protocol (spec ``radfinder-and-brgsa.md`` §1.5), beside ours.

Which volumes enter the evaluation (``dedup``):

- ``dup_all``: every volume (all reconstructions);
- ``first_all``: the first volume (by name) of each report, i.e. of each scan;
- ``smallestdeduptext``: per scan the volume with the finest in-plane spacing (ties: first by name), then
  scans whose findings text repeats an earlier kept scan's are removed.

An optional exclusion list (RadFinder's ``no_chest_*.txt``: one scan id or volume name per line) drops
non-chest studies first. On CT-RATE's validation split ``smallestdeduptext`` with the non-chest list gives
the 1,493-pair set of RadFinder and COLIPRI.

Rank figures as RadFinder defines them from 0-based ranks ``r``: ``MedR = floor(median(r)) + 1`` and
``MeanR = mean(r) + 1``; R@k CIs from 10,000 bootstrap resamples of the queries (seed 42, gallery fixed).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hsenet_search.errors import DatasetError

DEDUP_MODES = ("dup_all", "first_all", "smallestdeduptext")
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 42


def read_exclusions(path: str | Path) -> set[str]:
    """Scan ids or volume names, one per line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the exclusion list ({exc})", path) from exc
    return {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}


def _excluded(rows: pd.DataFrame, exclude: set[str]) -> pd.Series:
    stems = rows["volume_name"].str.replace(r"\.(nii\.gz|nii|npy)$", "", regex=True)
    return rows["scan_id"].isin(exclude) | rows["volume_name"].isin(exclude) | stems.isin(exclude)


def select_rows(metadata: pd.DataFrame, dedup: str, exclude: set[str] | None = None) -> pd.DataFrame:
    """The metadata rows that one dedup mode evaluates, sorted by volume name."""
    if dedup not in DEDUP_MODES:
        raise DatasetError(f"unknown dedup mode {dedup!r}; expected one of {', '.join(DEDUP_MODES)}")
    rows = metadata.sort_values("volume_name", kind="stable")
    if exclude:
        rows = rows[~_excluded(rows, exclude)]
    if dedup == "dup_all":
        return rows
    if dedup == "first_all":
        return rows.drop_duplicates("scan_id", keep="first")
    if "spacing" not in rows.columns:
        raise DatasetError("smallestdeduptext needs the index's spacing column (rebuild the index)")
    in_plane = rows["spacing"].map(lambda s: float(s[0]) if s is not None and len(s) else math.inf)
    finest = rows.assign(_in_plane=in_plane).sort_values(["scan_id", "_in_plane", "volume_name"], kind="stable")
    finest = finest.drop_duplicates("scan_id", keep="first").sort_values("volume_name", kind="stable")
    text = finest["findings"].str.split().str.join(" ")
    return finest[~text.duplicated(keep="first")].drop(columns="_in_plane")


def radfinder_ranks(ranks: np.ndarray) -> dict[str, float]:
    """``MedR`` and ``MeanR`` from 1-based ranks, in RadFinder's definitions."""
    zero_based = np.asarray(ranks, dtype=np.float64) - 1.0
    return {"MedR": float(math.floor(np.median(zero_based)) + 1), "MeanR": float(zero_based.mean() + 1.0)}


def radfinder_retrieval(
    metadata: pd.DataFrame,
    volumes: np.ndarray,
    reports: np.ndarray,
    *,
    split: str,
    dedup: str,
    exclude: set[str] | None = None,
    ks: tuple[int, ...] = (1, 5, 10, 50, 100),
) -> dict:
    """Text→image R@k (10,000-resample CIs, seed 42), MedR and MeanR over the pairs ``dedup`` keeps.

    ``metadata`` is an index's table (``row_id`` → ``volumes``, ``report_id`` → ``reports``); each kept
    volume is one pair: its report queries all kept volumes, the paired volume is the true match.
    """
    from .bootstrap import recall_at_k_ci
    from .retrieval import ranks_of_true_match

    rows = metadata if split == "all" else metadata[metadata["split"] == split]
    rows = select_rows(rows[rows["report_id"] >= 0], dedup, exclude)
    if len(rows) == 0:
        raise DatasetError(f"no pairs left in split {split!r} after {dedup} and the exclusion list")
    scores = reports[rows["report_id"].to_numpy()] @ volumes[rows["row_id"].to_numpy()].T
    kept_ks = [k for k in ks if k <= len(rows)] or [len(rows)]
    recall = recall_at_k_ci(scores, kept_ks, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    return {
        "dedup": dedup,
        "excluded_ids": len(exclude or ()),
        "n": int(len(rows)),
        "direction": "text_to_image",
        "recall": {str(k): ci.as_dict() for k, ci in recall.items()},
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED},
        **radfinder_ranks(ranks_of_true_match(scores)),
    }


def radfinder_markdown(result: dict) -> str:
    """One table: R@k with CIs, MedR, MeanR."""
    ks = list(result["recall"])
    head = "| " + " | ".join(f"R@{k} [95 % CI]" for k in ks) + " | MedR | MeanR |"
    cells = " | ".join(f"{r['estimate']:.1f} [{r['low']:.1f}, {r['high']:.1f}]" for r in result["recall"].values())
    return (
        f"RadFinder protocol ({result['dedup']}, text→image, N = {result['n']}, "
        f"{result['bootstrap']['resamples']} bootstrap resamples):\n\n{head}\n|"
        + "---|" * (len(ks) + 2)
        + f"\n| {cells} | {result['MedR']:.0f} | {result['MeanR']:.1f} |\n"
    )
