"""Plain manifests for non-CT-RATE data: one CSV or Parquet row per volume.

Columns:
- ``volume_path`` (required): a NIfTI file, DICOM series folder or ``.npy`` array, absolute or relative
  to the manifest's folder. Volumes are already in HU (no rescale is applied).
- ``findings``, ``impression`` (required; empty cells are allowed).
- ``scan_id`` (optional): groups several volumes of one scan; default the volume's file stem.
  Volume file names must be unique within a manifest (``a/scan.nii.gz`` and ``b/scan.nii.gz`` are refused):
  the file name is the volume's name in an index and its default scan id, so two such files would merge.
- ``split`` (optional): ``train`` or ``valid`` (``validation`` is accepted); an absent column or an empty
  cell means ``train``, so a manifest without splits is one training/indexing set.
- label columns (optional): all 18 named exactly as :data:`~hsenet_search.data.labels.LABELS`, 0/1; a row
  whose label cells are all empty has unknown labels. Other columns are ignored.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hsenet_search.errors import DatasetError

from .cases import Case, volume_stem
from .labels import LABELS, parse_label

MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")
REQUIRED_COLUMNS = ("volume_path", "findings", "impression")
DEFAULT_SPLIT = "train"
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "": DEFAULT_SPLIT}


def find_manifest(folder: Path) -> Path | None:
    """``manifest.csv`` or ``manifest.parquet`` inside ``folder``, if there is one."""
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def read_manifest(path: str | Path, *, missing: str = "error") -> list[Case]:
    """The cases of a manifest CSV/Parquet (``missing`` as in :func:`.dataset.open_dataset`)."""
    path = Path(path)
    frame = _read_table(path)
    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            raise DatasetError(f"has no column {column!r} (a manifest needs {', '.join(REQUIRED_COLUMNS)})", path)
    label_columns = [c for c in LABELS if c in frame.columns]
    if label_columns and len(label_columns) != len(LABELS):
        absent = next(c for c in LABELS if c not in frame.columns)
        raise DatasetError(f"has {len(label_columns)} of the 18 label columns; {absent!r} is missing", path)

    cases: list[Case] = []
    seen: set[Path] = set()
    names: dict[str, str] = {}  # volume file name -> the row that has it
    for number, row in enumerate(frame.to_dict("records"), start=2):  # row 1 is the header
        where = f"row {number}"
        raw_path = row["volume_path"]
        if not raw_path:
            raise DatasetError(f"{where} has an empty volume_path", path)
        volume = Path(raw_path).expanduser()
        volume = volume if volume.is_absolute() else path.parent / volume
        if volume in seen:
            raise DatasetError(f"{where} repeats volume_path {raw_path}", path)
        if volume.name in names:
            raise DatasetError(
                f"{where}: volume file name {volume.name} is also used on {names[volume.name]}; volume names "
                "must be unique in a manifest (rename one of the files)",
                path,
            )
        seen.add(volume)
        names[volume.name] = where
        if not volume.exists():
            if missing == "error":
                raise DatasetError(f"{where}: volume_path {raw_path} does not exist", path)
            if missing == "skip":
                continue
        split = _SPLIT_ALIASES.get(row.get("split", "").lower())
        if split is None:
            raise DatasetError(f"{where} has split {row['split']!r}; expected train or valid", path)
        cases.append(
            Case(
                volume_name=volume.name,
                scan_id=row.get("scan_id") or volume_stem(volume.name),
                split=split,
                path=volume,
                findings=" ".join(row["findings"].split()),
                impression=" ".join(row["impression"].split()),
                labels=_labels(row, where, path) if label_columns else None,
                rescale=None,
            )
        )
    return cases


def _read_table(path: Path) -> pd.DataFrame:
    """The manifest as a frame of stripped strings (missing cells become "")."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise DatasetError("is not a manifest (expected a .csv or .parquet file)", path)
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types for malformed files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"is not a readable {suffix[1:]} manifest ({message})", path) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.astype(object).where(frame.notna(), "")
    return frame.map(lambda v: str(v).strip())


def _labels(row: dict[str, str], where: str, path: Path) -> tuple[int, ...] | None:
    cells = [row[c] for c in LABELS]
    if all(c == "" for c in cells):
        return None
    values = []
    for label, cell in zip(LABELS, cells, strict=True):
        value = parse_label(cell)
        if value is None:
            raise DatasetError(f"{where} has {label}={cell!r}; labels must be 0 or 1", path)
        values.append(value)
    return tuple(values)
