"""The CT-RATE layout: reader (directory -> cases) and the CSV writers that produce it.

Layout (under the root, or under ``<root>/dataset``)::

    train/ valid/                v1 volumes: stored values are raw; HU = RescaleSlope * v + RescaleIntercept
    train_fixed/ valid_fixed/    v2 volumes (``*_fixed.nii.gz`` or plain names): already HU, never rescaled
        <split>_<pid>/<split>_<pid>_<scan>/<split>_<pid>_<scan>_<recon>.nii.gz
    radiology_text_reports/{train,validation}_reports.csv
    multi_abnormality_labels/{train,valid}_predicted_labels.csv
    metadata/{train,validation}_metadata.csv

When both ``valid`` and ``valid_fixed`` exist, the v2 folder is used. A split whose volume folder is
absent is not part of the dataset. CSV rows are joined to files by name with the ``_fixed`` suffix
ignored; ``Case.volume_name`` is the reports CSV's ``VolumeName``. The labels CSV is optional (labels
are then ``None``); the metadata CSV is required for v1 volumes (their rescale) and supplies the
spacing (``XYSpacing``, ``ZSpacing``) of every volume it lists.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from hsenet_search.atomic import atomic_open
from hsenet_search.errors import DatasetError

from .cases import Case, scan_id_of, volume_key, volume_stem
from .labels import LABELS, parse_label
from .report_text import NOT_GIVEN, clean_section

REPORT_COLUMNS = ("VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")
LABEL_COLUMNS = ("VolumeName", *LABELS)
METADATA_COLUMNS = (
    "VolumeName",
    "Manufacturer",
    "SeriesDescription",
    "ManufacturerModelName",
    "PatientSex",
    "PatientAge",
    "ReconstructionDiameter",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
    "GantryDetectorTilt",
    "TableHeight",
    "RotationDirection",
    "ExposureTime",
    "XRayTubeCurrent",
    "Exposure",
    "FilterType",
    "GeneratorPower",
    "FocalSpots",
    "ConvolutionKernel",
    "PatientPosition",
    "RevolutionTime",
    "SingleCollimationWidth",
    "TotalCollimationWidth",
    "TableSpeed",
    "TableFeedPerRotation",
    "SpiralPitchFactor",
    "DataCollectionCenterPatient",
    "ReconstructionTargetCenterPatient",
    "ExposureModulationType",
    "CTDIvol",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceLocation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "XYSpacing",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "NumberofSlices",
    "ZSpacing",
    "StudyDate",
)
_CSV_STEM = {"train": "train", "valid": "validation"}  # reports and metadata CSVs say "validation"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


# ----------------------------------------------------------------------------------------------- paths
def reports_csv(root: Path, split: str) -> Path:
    return root / "radiology_text_reports" / f"{_CSV_STEM[split]}_reports.csv"


def labels_csv(root: Path, split: str) -> Path:
    return root / "multi_abnormality_labels" / f"{split}_predicted_labels.csv"


def metadata_csv(root: Path, split: str) -> Path:
    """``metadata/<split>_metadata.csv``, or the older bare ``<split>_metadata.csv`` at the root."""
    path = root / "metadata" / f"{_CSV_STEM[split]}_metadata.csv"
    legacy = root / f"{_CSV_STEM[split]}_metadata.csv"
    return legacy if not path.exists() and legacy.exists() else path


def volume_relpath(volume_name: str) -> Path:
    """``valid_53_a_1.nii.gz`` -> ``valid_53/valid_53_a/valid_53_a_1.nii.gz`` (inside the split folder)."""
    scan = scan_id_of(volume_name)
    patient = scan.rsplit("_", 1)[0]
    if scan == volume_key(volume_name) or not patient:
        raise ValueError(f"{volume_name!r} is not a CT-RATE volume name (<split>_<pid>_<scan>_<recon>)")
    return Path(patient) / scan / volume_name


def find_root(path: Path) -> Path | None:
    """The CT-RATE root at ``path`` or ``path/dataset``: the folder that has ``radiology_text_reports/``."""
    for candidate in (path, path / "dataset"):
        if (candidate / "radiology_text_reports").is_dir():
            return candidate
    return None


def split_folder(root: Path, split: str) -> Path | None:
    """The volume folder of a split: ``<split>_fixed`` (v2) when present, else ``<split>`` (v1), else None."""
    for name in (f"{split}_fixed", split):
        if (root / name).is_dir():
            return root / name
    return None


def dataset_format(root: Path) -> str:
    """``"ct-rate v2"`` when any split uses a ``_fixed`` folder, else ``"ct-rate v1"``."""
    fixed = any((f := split_folder(root, s)) is not None and f.name.endswith("_fixed") for s in ("train", "valid"))
    return "ct-rate v2" if fixed else "ct-rate v1"


# ---------------------------------------------------------------------------------------------- reader
def read_ctrate(
    root: str | Path, *, splits: tuple[str, ...] = ("train", "valid"), missing: str = "error"
) -> list[Case]:
    """The cases of ``splits`` of the CT-RATE dataset at ``root`` (see module docstring)."""
    root = Path(root)
    cases: list[Case] = []
    for split in splits:
        folder = split_folder(root, split)
        if folder is not None:
            cases.extend(_read_split(root, split, folder, missing))
    return cases


def _read_split(root: Path, split: str, folder: Path, missing: str) -> list[Case]:
    on_disk = {volume_key(p.name): p for p in _volume_files(folder)}
    v2_folder = folder.name.endswith("_fixed")
    fixed_names = any(p.name.endswith("_fixed.nii.gz") for p in on_disk.values())

    reports_path = reports_csv(root, split)
    reports = _read_csv(reports_path, REPORT_COLUMNS[:1] + REPORT_COLUMNS[3:])
    for key, path in on_disk.items():
        if key not in reports:
            raise DatasetError(f"has no row for VolumeName {path.name}", reports_path)

    absent = [row["VolumeName"] for key, row in reports.items() if key not in on_disk]
    if absent and missing == "error":
        raise DatasetError(
            f"{len(absent)} volume(s) listed in {reports_path.name} are missing under {folder} "
            f"(first: {absent[0]}); pass missing='skip' or 'keep' to read the rest",
            reports_path,
        )

    labels_path, meta_path = labels_csv(root, split), metadata_csv(root, split)
    labels = _read_labels(labels_path) if labels_path.exists() else None
    metadata = _read_csv(meta_path, ("VolumeName",)) if meta_path.exists() else None

    cases = []
    for key, row in reports.items():
        name = row["VolumeName"]
        path = on_disk.get(key)
        if path is None:
            if missing == "skip":
                continue
            path = _expected_path(folder, f"{volume_key(name)}{'_fixed' if fixed_names else ''}.nii.gz")
        fixed = v2_folder or volume_stem(path.name).endswith("_fixed")
        if labels is not None and key not in labels:
            raise DatasetError(f"has no row for VolumeName {name}", labels_path)
        meta_row = metadata.get(key) if metadata is not None else None
        if not fixed and meta_row is None:
            problem = f"has no row for VolumeName {name}" if metadata is not None else "is missing"
            raise DatasetError(f"{problem} (v1 volumes need RescaleSlope/RescaleIntercept)", meta_path)
        cases.append(
            Case(
                volume_name=name,
                scan_id=scan_id_of(name),
                split=split,
                path=path,
                findings=_section(row["Findings_EN"]),
                impression=_section(row["Impressions_EN"]),
                labels=labels[key] if labels is not None else None,
                rescale=None if fixed else _rescale(meta_row, meta_path),
                spacing=_spacing(meta_row, meta_path) if meta_row is not None else None,
            )
        )
    return cases


def _expected_path(folder: Path, file_name: str) -> Path:
    """Where a volume missing on disk would be (its name may not follow the CT-RATE pattern)."""
    try:
        return folder / volume_relpath(file_name)
    except ValueError:
        return folder / file_name


def _volume_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*/*/*.nii*") if p.name.endswith((".nii", ".nii.gz")))


def _read_csv(path: Path, required: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Rows keyed by :func:`volume_key` of ``VolumeName``, all values as stripped strings, plus ``_row`` (the
    1-based file line); an empty or repeated ``VolumeName`` is an error naming the row."""
    if not path.is_file():
        raise DatasetError("is missing", path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"is not a readable CSV ({str(exc).strip().splitlines()[0]})", path) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in required:
        if column not in frame.columns:
            raise DatasetError(f"has no column {column!r}", path)
    rows: dict[str, dict[str, str]] = {}
    first_row: dict[str, int] = {}
    for number, record in enumerate(frame.to_dict("records"), start=2):  # row 1 is the header
        name = str(record["VolumeName"]).strip()
        if not name:
            raise DatasetError(f"row {number} has an empty VolumeName", path)
        key = volume_key(name)
        if key in first_row:
            raise DatasetError(f"row {number} repeats VolumeName {name} (first on row {first_row[key]})", path)
        first_row[key] = number
        rows[key] = {k: str(v).strip() for k, v in record.items()} | {"_row": str(number)}
    return rows


def _read_labels(path: Path) -> dict[str, tuple[int, ...]]:
    """The 18 labels of each volume, in :data:`LABELS` order; the columns must be exactly those labels."""
    rows = _read_csv(path, ("VolumeName",))
    columns = [c for c in next(iter(rows.values())) if c != "_row"] if rows else _header(path)
    unknown = [c for c in columns if c not in LABEL_COLUMNS]
    if unknown:
        raise DatasetError(f"has column {unknown[0]!r}, which is not one of the 18 CT-RATE labels", path)
    absent = [c for c in LABELS if c not in columns]
    if absent:
        raise DatasetError(f"has no column {absent[0]!r} (label CSVs need all 18 CT-RATE labels)", path)
    labels = {}
    for key, row in rows.items():
        values = []
        for label in LABELS:
            value = parse_label(row[label])
            if value is None:
                kind = "label other than 0/1" if _NUMBER.fullmatch(row[label]) else "non-numeric label"
                raise DatasetError(
                    f"row {row['_row']} (VolumeName {row['VolumeName']}) has a {kind} ({label}={row[label]!r})",
                    path,
                )
            values.append(value)
        labels[key] = tuple(values)
    return labels


def _header(path: Path) -> list[str]:
    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"is not a readable CSV ({str(exc).strip().splitlines()[0]})", path) from exc


def _number(row: Mapping[str, str], column: str, path: Path) -> float:
    if column not in row:
        raise DatasetError(f"has no column {column!r}", path)
    try:
        return float(row[column])
    except ValueError as exc:
        raise DatasetError(
            f"row {row['_row']} (VolumeName {row['VolumeName']}): {column} {row[column]!r} is not a number",
            path,
        ) from exc


def _rescale(row: Mapping[str, str], path: Path) -> tuple[float, float]:
    return _number(row, "RescaleSlope", path), _number(row, "RescaleIntercept", path)


def _spacing(row: Mapping[str, str], path: Path) -> tuple[float, float, float] | None:
    """(x, y, z) mm from ``XYSpacing`` ("[row, col]", DICOM PixelSpacing) and ``ZSpacing``; None if absent."""
    if not row.get("XYSpacing") or not row.get("ZSpacing"):
        return None
    xy = [float(v) for v in _NUMBER.findall(row["XYSpacing"])]
    if len(xy) not in (1, 2) or not all(0 < v < math.inf for v in xy):
        raise DatasetError(
            f"row {row['_row']} (VolumeName {row['VolumeName']}): XYSpacing {row['XYSpacing']!r} is not "
            "[row, col] of positive numbers",
            path,
        )
    z = _number(row, "ZSpacing", path)
    if not 0 < z < math.inf:
        raise DatasetError(
            f"row {row['_row']} (VolumeName {row['VolumeName']}): ZSpacing {z} is not a positive number", path
        )
    return (xy[-1], xy[0], z)


def _section(text: str) -> str:
    return clean_section(" ".join(str(text).split()))


# ---------------------------------------------------------------------------------------------- writers
def write_reports_csv(path: str | Path, rows: Iterable[Mapping[str, object]]) -> Path:
    """Write a reports CSV; each row maps ``VolumeName`` (+ any report column, default "Not given.")."""
    return _write_csv(path, REPORT_COLUMNS, rows, default=NOT_GIVEN)


def write_labels_csv(path: str | Path, rows: Iterable[Mapping[str, object]]) -> Path:
    """Write a labels CSV; each row maps ``VolumeName`` and every one of the 18 label names to 0/1."""
    return _write_csv(path, LABEL_COLUMNS, rows, default=None)


def write_metadata_csv(path: str | Path, rows: Iterable[Mapping[str, object]]) -> Path:
    """Write a metadata CSV with CT-RATE's full header; rows map ``VolumeName`` + any columns (else "")."""
    return _write_csv(path, METADATA_COLUMNS, rows, default="")


def _write_csv(
    path: str | Path, columns: tuple[str, ...], rows: Iterable[Mapping[str, object]], default: str | None
) -> Path:
    """Write rows atomically (temp file + rename); unknown keys and, without a default, absent keys fail."""
    path = Path(path)
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            unknown = set(row) - set(columns)
            if unknown:
                raise ValueError(f"{path.name}: unknown column(s) {sorted(unknown)}")
            if "VolumeName" not in row or (default is None and any(c not in row for c in columns)):
                raise ValueError(f"{path.name}: row lacks {[c for c in columns if c not in row]}")
            writer.writerow([_cell(row.get(c, default)) for c in columns])
    return path


def _cell(value: object) -> object:
    return int(value) if isinstance(value, bool) else value
