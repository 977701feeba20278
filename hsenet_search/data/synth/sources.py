"""Where a synthetic scan's labels and report come from: CT-RATE-like priors, or rows of a real labels /
reports CSV (columns ``AccessionNo, report_text, <18 labels>``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import DatasetError
from ..labels import LABELS

# Approximate CT-RATE training prevalence (specs §1.4), in LABELS order.
PREVALENCE: dict[str, float] = dict(
    zip(
        LABELS,
        (
            0.098,
            0.296,
            0.108,
            0.030,
            0.250,
            0.142,
            0.239,
            0.193,
            0.249,
            0.451,
            0.373,
            0.241,
            0.123,
            0.052,
            0.067,
            0.136,
            0.085,
            0.069,
        ),
    )
)
NORMAL_FRACTION = 0.12
# How strongly each label rises with age (logit per standard deviation of age).
_AGE_SLOPE = {
    "Arterial wall calcification": 1.0,
    "Coronary artery wall calcification": 1.0,
    "Emphysema": 0.5,
    "Cardiomegaly": 0.5,
    "Hiatal hernia": 0.4,
    "Lung nodule": 0.3,
    "Pulmonary fibrotic sequela": 0.3,
    "Medical material": 0.3,
}
# (if this label, then that label with this probability): mild clinical correlations.
_LINKS = (
    ("Cardiomegaly", "Pericardial effusion", 0.12),
    ("Emphysema", "Lung nodule", 0.25),
    ("Coronary artery wall calcification", "Arterial wall calcification", 0.5),
    ("Pleural effusion", "Atelectasis", 0.4),
    ("Consolidation", "Lung opacity", 0.5),
    ("Bronchiectasis", "Peribronchial thickening", 0.3),
)


def sample_labels(rng: np.random.Generator, age: int) -> tuple[int, ...]:
    """CT-RATE-like labels: about 12 % normal scans, age-related calcification and emphysema, mild links."""
    if rng.random() < NORMAL_FRACTION:
        return (0,) * len(LABELS)
    g = (age - 58) / 14
    out = {}
    for label in LABELS:
        p = min(PREVALENCE[label] / (1 - NORMAL_FRACTION), 0.95)
        logit = np.log(p / (1 - p)) + _AGE_SLOPE.get(label, 0.0) * g
        out[label] = int(rng.random() < 1 / (1 + np.exp(-logit)))
    for a, b, prob in _LINKS:
        if out[a] and rng.random() < prob:
            out[b] = 1
    return tuple(out[label] for label in LABELS)


@dataclass(frozen=True)
class SourceRow:
    """One real report row that conditions one synthetic scan."""

    accession: str
    labels: tuple[int, ...]
    report_text: str | None


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={"AccessionNo": str}, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DatasetError(f"cannot read CSV ({exc.__class__.__name__}: {exc})", path) from None
    for col in columns:
        if col not in df.columns:
            raise DatasetError(f"missing column {col!r}", path)
    if df["AccessionNo"].isna().any():
        raise DatasetError("empty AccessionNo value", path)
    dup = df["AccessionNo"][df["AccessionNo"].duplicated()]
    if len(dup):
        raise DatasetError(f"duplicate AccessionNo {dup.iloc[0]!r}", path)
    return df


def _labels_of(df: pd.DataFrame, path: Path) -> list[tuple[int, ...]]:
    block = df[list(LABELS)]
    for col in LABELS:
        values = pd.to_numeric(block[col], errors="coerce")
        bad = ~values.isin([0, 1])
        if bad.any():
            row = df["AccessionNo"][bad].iloc[0]
            raise DatasetError(f"column {col!r} must be 0 or 1 (row {row!r} has {block[col][bad].iloc[0]!r})", path)
    return [tuple(int(v) for v in row) for row in block.to_numpy()]


def load_sources(labels_from: Path | None, reports_from: Path | None) -> list[SourceRow] | None:
    """Rows that condition the scans, in the labels CSV's order; None when neither CSV is given."""
    if labels_from is None and reports_from is None:
        return None
    label_path = labels_from if labels_from is not None else reports_from
    assert label_path is not None
    label_df = _read(label_path, ["AccessionNo", *LABELS])
    labels = dict(zip(label_df["AccessionNo"], _labels_of(label_df, label_path)))
    texts: dict[str, str] = {}
    if reports_from is not None:
        same = Path(reports_from).resolve() == Path(label_path).resolve()
        report_df = _read(reports_from, ["AccessionNo", "report_text"]) if not same else label_df
        if "report_text" not in report_df.columns:
            raise DatasetError("missing column 'report_text'", reports_from)
        if set(report_df["AccessionNo"]) != set(labels):
            raise DatasetError(f"AccessionNo values differ from those of --labels-from {labels_from}", reports_from)
        texts = {a: ("" if pd.isna(t) else str(t)) for a, t in zip(report_df["AccessionNo"], report_df["report_text"])}
    return [
        SourceRow(a, labels[a], texts.get(a) if reports_from is not None else None) for a in label_df["AccessionNo"]
    ]


def split_report(text: str) -> tuple[str, str | None]:
    """Findings and impression of a real report: CT-RATE report text separates them with a ``"``.

    Returns the impression as None when the text has no separator."""
    if '"' not in text:
        return text.strip(), None
    findings, impression = text.split('"', 1)
    return findings.strip(), impression.strip()
