"""The reader front door: a CT-RATE directory or a manifest becomes a sorted list of :class:`Case`.

``open_dataset`` accepts
- a CT-RATE dataset root (or a folder with a ``dataset/`` child holding one), v1 or v2 ``_fixed``;
  see :mod:`hsenet_search.data.ctrate`;
- a manifest CSV/Parquet file, or a folder holding ``manifest.csv``/``manifest.parquet``;
  see :mod:`hsenet_search.data.manifest`.

Volumes named in the CSVs but absent on disk are handled by ``missing``: ``"error"`` (default) raises
:class:`DatasetError`, ``"keep"`` returns their cases anyway (loading them then raises
:class:`VolumeError`, which an index builder records as a failure), ``"skip"`` drops them (a partial
download of CT-RATE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hsenet_search.errors import DatasetError

from .volume import Volume, check_affine, read_volume

SPLITS = ("train", "valid")
MISSING_POLICIES = ("error", "keep", "skip")
_CTRATE_NAME = re.compile(r"^((?:train|valid)_\d+_[A-Za-z0-9]+)_\d+$")
_EXTENSIONS = (".nii.gz", ".nii", ".npy")
# Relative difference above which CT-RATE metadata spacing replaces the NIfTI header's spacing.
SPACING_TOLERANCE = 0.01


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
    spacing: tuple[float, float, float] | None = (
        None  # CT-RATE metadata (XYSpacing, ZSpacing), file axis order
    )
    slice_features: Path | None = None  # precomputed (32, 768) BiomedCLIP slice features, when present

    @property
    def report(self) -> str:
        """Findings and impression joined by one space."""
        return f"{self.findings} {self.impression}".strip()


def volume_stem(volume_name: str) -> str:
    """The file name without its volume extension (``.nii.gz``, ``.nii``, ``.npy``)."""
    for ext in _EXTENSIONS:
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


def open_dataset(path: str | Path, split: str = "all", *, missing: str = "error") -> list[Case]:
    """The cases of a CT-RATE directory or a manifest, sorted by split then natural volume-name order."""
    from . import ctrate, manifest  # imported here: both modules build on Case defined above

    if split not in (*SPLITS, "all"):
        raise DatasetError(f"unknown split {split!r}; expected train, valid or all")
    if missing not in MISSING_POLICIES:
        raise DatasetError(
            f"unknown missing-volume policy {missing!r}; expected {', '.join(MISSING_POLICIES)}"
        )
    path = Path(path)
    wanted = SPLITS if split == "all" else (split,)
    if not path.exists():
        raise DatasetError("no such dataset directory or manifest", path)
    if path.is_file():
        cases = manifest.read_manifest(path, missing=missing)
    elif (root := ctrate.find_root(path)) is not None:
        cases = ctrate.read_ctrate(root, splits=wanted, missing=missing)
    elif (found := manifest.find_manifest(path)) is not None:
        cases = manifest.read_manifest(found, missing=missing)
    else:
        raise DatasetError("is neither a CT-RATE dataset (no radiology_text_reports/) nor a manifest", path)
    return sorted((c for c in cases if c.split in wanted), key=case_sort_key)


def case_sort_key(case: Case) -> tuple:
    """Split order, then natural order of the volume name (``train_2`` before ``train_10``)."""
    parts = re.split(r"(\d+)", case.volume_name)
    return (SPLITS.index(case.split), [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts])


def load_case_volume(case: Case) -> Volume:
    """Read a case's volume in HU: the case's rescale is applied and CT-RATE metadata spacing wins."""
    volume = check_affine(read_volume(case.path, rescale=case.rescale))
    if case.spacing is not None:
        header = volume.spacing
        if any(abs(h - m) > SPACING_TOLERANCE * m for h, m in zip(header, case.spacing, strict=True)):
            volume = volume.with_spacing(case.spacing)
    return volume
