"""The case record and the naming helpers that join volume files, CSV rows and scans.

A :class:`Case` is one volume with its report and labels. CT-RATE names a volume
``<split>_<patient>_<scan>_<reconstruction>`` (v2 files add ``_fixed``); :func:`volume_key` is the name
without extension and ``_fixed`` (what joins files and CSV rows); :func:`scan_id_of` drops the reconstruction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .report_text import join_report

SPLITS = ("train", "valid")
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".npy")
_CTRATE_NAME = re.compile(r"^((?:train|valid)_\d+_[A-Za-z0-9]+)_\d+$")


@dataclass(frozen=True)
class Case:
    """One volume with its report and labels; reconstructions of one scan share ``scan_id``."""

    volume_name: str
    scan_id: str
    split: str
    path: Path
    findings: str
    impression: str
    labels: tuple[int, ...] | None
    rescale: tuple[float, float] | None
    spacing: tuple[float, float, float] | None = None  # CT-RATE metadata (XYSpacing, ZSpacing), file axis order
    slice_features: Path | None = None  # precomputed (32, 768) BiomedCLIP slice features, when present

    @property
    def report(self) -> str:
        """Findings and impression joined by one space."""
        return join_report(self.findings, self.impression)


def volume_stem(volume_name: str) -> str:
    """The file name without its volume extension (``.nii.gz``, ``.nii``, ``.npy``)."""
    for ext in VOLUME_EXTENSIONS:
        if volume_name.lower().endswith(ext):
            return volume_name[: -len(ext)]
    return volume_name


def volume_key(volume_name: str) -> str:
    """A CT-RATE name without extension and v2 ``_fixed`` suffix: the key that joins files and CSV rows."""
    stem = volume_stem(Path(volume_name).name)
    return stem[: -len("_fixed")] if stem.endswith("_fixed") else stem


def scan_id_of(volume_name: str) -> str:
    """``valid_53_a_1.nii.gz`` -> ``valid_53_a`` (also for ``_fixed`` names); other names -> their stem."""
    key = volume_key(volume_name)
    match = _CTRATE_NAME.match(key)
    return match.group(1) if match else key


def case_sort_key(case: Case) -> tuple:
    """Split order, then natural order of the volume name (``train_2`` before ``train_10``)."""
    parts = re.split(r"(\d+)", case.volume_name)
    return (SPLITS.index(case.split), [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts])
