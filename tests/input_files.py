"""Writers of deliberately broken input files for the input-validation and fuzzing tests.

NIfTI files are written byte by byte from an edited nibabel header, so a test can set any header field
(zero or NaN spacing, empty dims, huge scl_slope) that nibabel's own writer would refuse or repair.
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

VOXELS = (np.arange(24 * 20 * 12).reshape(24, 20, 12) % 100).astype(np.int16)


def write_nifti(
    path: Path,
    edit: Callable[[nib.Nifti1Header], None] | None = None,
    array: np.ndarray = VOXELS,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    tail: bytes = b"",
) -> Path:
    """A NIfTI-1 file (gzipped when the name ends in .gz) of ``array``; ``edit`` changes the raw header."""
    header = nib.Nifti1Image(array, np.diag([*spacing, 1.0])).header.copy()
    header.set_data_offset(352)
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    if edit is not None:
        edit(header)
    blob = header.binaryblock + b"\0" * 4 + np.asfortranarray(array).tobytes(order="F") + tail
    path.write_bytes(gzip.compress(blob, compresslevel=1) if path.name.endswith(".gz") else blob)
    return path


def set_field(name: str, value: float, index: int | None = None) -> Callable[[nib.Nifti1Header], None]:
    """A header edit setting ``header[name]`` (or one element of it) to ``value``, unchecked."""

    def edit(header: nib.Nifti1Header) -> None:
        field = np.array(header[name])
        if index is None:
            field = np.array(value, dtype=field.dtype)
        else:
            field[index] = value
        header[name] = field

    return edit


def write_dicom_series(folder: Path, n: int = 4, rows: int = 8, cols: int = 10) -> list[Path]:
    """``n`` small axial CT slices of one series (int16, slope 1, intercept -1024), one file each."""
    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series, study
        ds.Modality = "CT"
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.8, 0.8]
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        pixels = (np.arange(rows * cols, dtype=np.int16).reshape(rows, cols) * 7 + 100 * k).astype(np.int16)
        ds.PixelData = pixels.tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def edit_dicom(path: Path, **tags: object) -> None:
    """Set (value) or delete (None) tags of one DICOM file in place, without value validation."""
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():  # pydicom warns about the invalid values these tests write on purpose
        warnings.simplefilter("ignore")
        _set_tags(ds, tags)
    with pydicom.config.disable_value_validation():
        ds.save_as(path)


def _set_tags(ds: pydicom.Dataset, tags: dict[str, object]) -> None:
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        elif keyword == "PixelData":
            ds.add_new(0x7FE00010, "OW", value)
        else:
            setattr(ds, keyword, value)
