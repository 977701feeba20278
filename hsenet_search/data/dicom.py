"""DICOM series folders -> :class:`~hsenet_search.data.volume.Volume`.

One folder holds one series (files directly inside it; non-DICOM files are ignored). Slices are
ordered by ImagePositionPatient projected on the slice normal (row x column direction cosines), the
slice spacing is the median distance between those projected positions (SliceThickness is ignored),
and each slice's RescaleSlope/RescaleIntercept turns stored values into HU.

Voxel order: axis 0 follows the image rows (DICOM +x direction cosine), axis 1 the columns, axis 2 the
slice normal; for ordinary axial CT (ImageOrientationPatient 1,0,0,0,1,0) that is "LPS", CT-RATE's order.
The affine is built in DICOM's LPS world and converted to nibabel's RAS+ world.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from hsenet_search.errors import VolumeError

from .volume import Volume, check_finite, check_memory, check_rescale, rescale_is_finite, silenced

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_dicom_series(folder: str | Path, *, rescale: tuple[float, float] | None = None) -> Volume:
    """Read the single DICOM series in ``folder``; ``rescale`` overrides every slice's slope/intercept."""
    folder = Path(folder)
    try:
        with silenced(logging.getLogger("pydicom")):  # pydicom warns and logs about invalid tag values
            return _read_series(folder, rescale)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, OverflowError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VolumeError(f"has malformed DICOM tags ({message})", folder) from exc


def _read_series(folder: Path, rescale: tuple[float, float] | None) -> Volume:
    slices = _read_slices(folder)
    _check_one_series(slices, folder)
    row_dir, col_dir, normal = _directions(slices, folder)

    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in slices])
    order = np.argsort(positions @ normal, kind="stable")
    slices = [slices[i] for i in order]
    positions = positions[order]
    slice_spacing = _slice_spacing(positions @ normal, folder)

    first = slices[0][1]
    try:
        row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    except (AttributeError, TypeError, ValueError) as exc:
        raise VolumeError("DICOM slices have no valid PixelSpacing", slices[0][0]) from exc
    rows, cols = int(first.Rows), int(first.Columns)
    check_memory((cols, rows, len(slices)), "DICOM series", folder)

    finite = True
    array = np.empty((cols, rows, len(slices)), dtype=np.float32, order="F")  # each slice one contiguous block
    for k, (path, ds) in enumerate(slices):
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise VolumeError(f"slice is {ds.Rows}x{ds.Columns}, the series is {rows}x{cols}", path)
        pixels = _pixels(path, ds)
        slope, intercept = rescale if rescale is not None else _slice_rescale(ds, path)
        finite = finite and rescale_is_finite(pixels.dtype, (slope, intercept))
        plane = array[:, :, k]
        plane[...] = pixels.T
        if slope != 1.0:  # an overflow to inf is caught by check_finite below
            plane *= np.float32(slope)
        if intercept != 0.0:
            plane += np.float32(intercept)

    if not finite:
        check_finite(array, folder)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * col_spacing
    affine_lps[:3, 1] = col_dir * row_spacing
    affine_lps[:3, 2] = normal * slice_spacing
    affine_lps[:3, 3] = positions[0]
    return Volume(array, LPS_TO_RAS @ affine_lps, str(folder))


def _read_slices(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    """Every DICOM image slice directly inside ``folder`` (other files are skipped)."""
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise VolumeError(f"cannot be listed ({exc.strerror or exc})", folder) from exc
    slices = []
    for path in files:
        if not os.access(path, os.R_OK):
            raise VolumeError("cannot be read (permission denied)", path)
        try:
            ds = pydicom.dcmread(path)
        except PermissionError as exc:
            raise VolumeError("cannot be read (permission denied)", path) from exc
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError):
            continue
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            if "PixelData" not in ds:
                raise VolumeError("DICOM image slice has no pixel data (incomplete series?)", path)
            slices.append((path, ds))
    if not slices:
        raise VolumeError(
            "holds no DICOM image slices (not a DICOM series folder, CT-RATE dataset or manifest folder)",
            folder,
        )
    frames = int(slices[0][1].get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise VolumeError(f"multi-frame DICOM ({frames} frames) is not supported; export single slices", slices[0][0])
    if len(slices) == 1:
        raise VolumeError("holds a single 2D DICOM slice, not a 3D series", folder)
    return slices


def _check_one_series(slices: list[tuple[Path, pydicom.Dataset]], folder: Path) -> None:
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in slices})
    if len(series) > 1:
        raise VolumeError(
            f"mixes {len(series)} DICOM series (SeriesInstanceUID {', '.join(series[:3])}"
            f"{', ...' if len(series) > 3 else ''}); put each series in its own folder",
            folder,
        )


def _directions(slices: list[tuple[Path, pydicom.Dataset]], folder: Path) -> tuple[np.ndarray, ...]:
    iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in slices])
    if iops.shape[1] != 6 or np.abs(iops - iops[0]).max() > 1e-4:
        raise VolumeError("slices have different ImageOrientationPatient (not one stack)", folder)
    row_dir, col_dir = iops[0, :3], iops[0, 3:]
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 1e-6:
        raise VolumeError("ImageOrientationPatient row and column directions are parallel", folder)
    return row_dir, col_dir, normal / np.linalg.norm(normal)


def _slice_spacing(along_normal: np.ndarray, folder: Path) -> float:
    gaps = np.diff(along_normal)
    spacing = float(np.median(gaps))
    if gaps.min() < 1e-3:
        raise VolumeError("two slices share one ImagePositionPatient (duplicate slices?)", folder)
    if np.abs(gaps - spacing).max() > 0.1 * spacing + 0.01:
        raise VolumeError(f"irregular slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm; missing slices?)", folder)
    return spacing


def _slice_rescale(ds: pydicom.Dataset, path: Path) -> tuple[float, float]:
    """The slice's (RescaleSlope, RescaleIntercept), default (1, 0); finite, with a non-zero slope."""
    try:
        slope, intercept = ds.get("RescaleSlope", 1.0), ds.get("RescaleIntercept", 0.0)
        rescale = (
            float(slope if slope not in (None, "") else 1.0),
            float(intercept if intercept not in (None, "") else 0.0),
        )
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"has an unreadable RescaleSlope/RescaleIntercept ({exc})", path) from exc
    check_rescale(rescale, path, "RescaleSlope/RescaleIntercept")
    return rescale


def _pixels(path: Path, ds: pydicom.Dataset) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing codecs and corrupt pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VolumeError(f"pixel data cannot be decoded (transfer syntax {syntax}: {message})", path) from exc
    if pixels.ndim != 2:
        raise VolumeError(f"pixel data has shape {pixels.shape}; expected one 2D slice", path)
    return pixels
