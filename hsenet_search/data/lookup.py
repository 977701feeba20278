"""Find the CT-RATE metadata rescale of a single volume file given only its path.

A query volume handed to ``search volume`` or ``generate`` may be a CT-RATE v1 file inside its
dataset layout (``<root>/<split>/<pid>/<scan>/<name>.nii.gz``); its stored values are not HU until
the metadata RescaleSlope/RescaleIntercept are applied. v2 ``_fixed`` files and anything outside a
CT-RATE layout are already HU (``None``).
"""

from __future__ import annotations

import csv
from pathlib import Path

from .cases import volume_key
from .ctrate import find_root, metadata_csv


def rescale_for_path(path: str | Path) -> tuple[float, float] | None:
    """(slope, intercept) from the CT-RATE metadata CSV for a v1 volume inside its dataset, else None."""
    path = Path(path)
    if not path.is_file():  # also a symlink loop, which resolve() would raise on
        return None
    path = path.resolve()
    split = path.name.split("_")[0]
    if split not in ("train", "valid") or "_fixed" in path.name or len(path.parents) < 4:
        return None
    root = find_root(path.parents[3])
    meta = metadata_csv(root, split) if root is not None else None
    if meta is None or not meta.is_file():
        return None
    key = volume_key(path.name)
    with meta.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if volume_key(row.get("VolumeName", "").strip()) == key:
                return float(row["RescaleSlope"]), float(row["RescaleIntercept"])
    return None
