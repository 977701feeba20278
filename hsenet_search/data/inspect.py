"""``hsenet-search data inspect``: describe a volume (geometry, HU) or a dataset (counts, labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table

from . import ctrate, manifest
from .cases import SPLITS
from .dataset import load_case_volume, open_dataset
from .labels import LABELS
from .readers import check_path
from .resolve import resolve_input


def inspect_path(path: str | Path) -> dict[str, Any]:
    """A JSON-ready description of a NIfTI/``.npy`` file, a DICOM folder, a CT-RATE dir or a manifest."""
    path = Path(path)
    check_path(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".parquet", ".pq"):
        return _inspect_dataset(path, "manifest")
    if path.is_dir():
        if (root := ctrate.find_root(path)) is not None:
            return _inspect_dataset(path, ctrate.dataset_format(root))
        if manifest.find_manifest(path) is not None:
            return _inspect_dataset(path, "manifest")
    return _inspect_volume(path)


def _inspect_volume(path: Path) -> dict[str, Any]:
    case = resolve_input(path)  # a CT-RATE file inside its dataset: metadata rescale and spacing
    rescale = case.rescale
    volume = load_case_volume(case)
    values = volume.array
    p1, p99 = np.percentile(values, [1, 99])
    return {
        "kind": "volume",
        "path": str(path),
        "shape": list(values.shape),
        "spacing_mm": [round(s, 4) for s in volume.spacing],
        "orientation": volume.orientation,
        "rescale": list(rescale) if rescale else None,
        "hu": {
            "min": float(values.min()),
            "max": float(values.max()),
            "mean": round(float(values.mean()), 2),
            "p1": float(p1),
            "p99": float(p99),
        },
    }


def _inspect_dataset(path: Path, kind: str) -> dict[str, Any]:
    cases = open_dataset(path, "all", missing="keep")
    splits = {}
    for split in SPLITS:
        in_split = [c for c in cases if c.split == split]
        splits[split] = {
            "volumes": len(in_split),
            "scans": len({c.scan_id for c in in_split}),
            "missing_files": sum(not c.path.exists() for c in in_split),
        }
    labelled = np.array([c.labels for c in cases if c.labels is not None], dtype=np.float64).reshape(-1, len(LABELS))
    prevalence = (
        {label: round(float(v), 4) for label, v in zip(LABELS, labelled.mean(axis=0), strict=True)}
        if len(labelled)
        else {}
    )
    return {
        "kind": "dataset",
        "path": str(path),
        "format": kind,
        "splits": splits,
        "labelled_volumes": int(len(labelled)),
        "label_prevalence": prevalence,
    }


def render_inspection(info: dict[str, Any]) -> Group | Table:
    """A rich table (or group of tables) for :func:`inspect_path` output."""
    if info["kind"] == "volume":
        table = Table(title=info["path"], show_header=False)
        table.add_row("shape", " x ".join(map(str, info["shape"])))
        table.add_row("spacing (mm)", " x ".join(f"{s:g}" for s in info["spacing_mm"]))
        table.add_row("orientation", info["orientation"])
        if info.get("rescale"):
            table.add_row("rescale (CT-RATE metadata)", "HU = {:g} * stored + {:g}".format(*info["rescale"]))
        hu = info["hu"]
        table.add_row("HU min / max", f"{hu['min']:g} / {hu['max']:g}")
        table.add_row("HU mean", f"{hu['mean']:g}")
        table.add_row("HU p1 / p99", f"{hu['p1']:g} / {hu['p99']:g}")
        return table
    counts = Table(title=f"{info['path']} ({info['format']})")
    for column in ("split", "volumes", "scans", "missing files"):
        counts.add_column(column, justify="left" if column == "split" else "right")
    for split, c in info["splits"].items():
        counts.add_row(split, str(c["volumes"]), str(c["scans"]), str(c["missing_files"]))
    if not info["label_prevalence"]:
        return counts
    labels = Table(title=f"label prevalence ({info['labelled_volumes']} labelled volumes)")
    labels.add_column("label")
    labels.add_column("fraction", justify="right")
    for label, fraction in info["label_prevalence"].items():
        labels.add_row(label, f"{fraction:.3f}")
    return Group(counts, labels)
