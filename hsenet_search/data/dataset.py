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

from pathlib import Path

from hsenet_search.errors import DatasetError

from . import ctrate, manifest
from .cases import SPLITS, Case, case_sort_key
from .readers import check_path, read_volume
from .volume import Volume

MISSING_POLICIES = ("error", "keep", "skip")
# Relative difference above which CT-RATE metadata spacing replaces the NIfTI header's spacing.
SPACING_TOLERANCE = 0.01


def open_dataset(path: str | Path, split: str = "all", *, missing: str = "error") -> list[Case]:
    """The cases of a CT-RATE directory or a manifest, sorted by split then natural volume-name order."""
    if split not in (*SPLITS, "all"):
        raise DatasetError(f"unknown split {split!r}; expected train, valid or all")
    if missing not in MISSING_POLICIES:
        raise DatasetError(f"unknown missing-volume policy {missing!r}; expected {', '.join(MISSING_POLICIES)}")
    path = Path(path)
    wanted = SPLITS if split == "all" else (split,)
    if not path.exists() and not path.is_symlink():
        raise DatasetError("no such dataset directory or manifest", path)
    check_path(path, DatasetError)
    if path.is_file():
        cases = manifest.read_manifest(path, missing=missing)
    elif (root := ctrate.find_root(path)) is not None:
        cases = ctrate.read_ctrate(root, splits=wanted, missing=missing)
    elif (found := manifest.find_manifest(path)) is not None:
        cases = manifest.read_manifest(found, missing=missing)
    else:
        raise DatasetError("is neither a CT-RATE dataset (no radiology_text_reports/) nor a manifest", path)
    return sorted((c for c in cases if c.split in wanted), key=case_sort_key)


def load_case_volume(case: Case) -> Volume:
    """Read a case's volume in HU: the case's rescale is applied and CT-RATE metadata spacing wins."""
    volume = read_volume(case.path, rescale=case.rescale)
    if case.spacing is not None:
        header = volume.spacing
        if any(abs(h - m) > SPACING_TOLERANCE * m for h, m in zip(header, case.spacing, strict=True)):
            volume = volume.with_spacing(case.spacing)
    return volume
