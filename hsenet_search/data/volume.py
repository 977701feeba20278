"""CT volumes: one reader for NIfTI files, DICOM series folders and preprocessed ``.npy`` arrays.

A :class:`Volume` holds Hounsfield units as float32 in the source's own voxel order together with the
4x4 voxel -> world affine in nibabel's RAS+ convention, so ``orientation`` and ``spacing`` come from
the affine. Nothing is resampled or reoriented here; preprocessing profiles do that explicitly.
NIfTI and DICOM arrays keep the memory layout of the file (Fortran order: axis 0 varies fastest), so
reading never pays for a transposing copy.

``.npy`` files hold already-preprocessed arrays, shaped ``(D, H, W)`` or ``(1, D, H, W)``. Their values
are taken as they are (``rescale`` still applies when given). The affine is the identity (1 mm voxels,
axis codes "RAS") unless a JSON sidecar ``<file stem>.json`` next to the file holds ``{"affine": 4x4}``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

try:  # ISA-L's gzip is about twice as fast as zlib's; optional
    from isal.igzip import decompress as _gunzip
except ImportError:  # pragma: no cover - depends on the environment
    from gzip import decompress as _gunzip

from hsenet_search.errors import VolumeError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Volume:
    """A 3D CT volume: HU values, the voxel -> RAS+ world affine (mm) and where it came from."""

    array: np.ndarray
    affine: np.ndarray
    source: str

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (same order as ``array.shape``)."""
        sizes = np.sqrt((np.asarray(self.affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
        return (float(sizes[0]), float(sizes[1]), float(sizes[2]))

    @property
    def orientation(self) -> str:
        """nibabel axis codes joined, e.g. "LPS": the world direction each array axis increases toward."""
        return "".join(nib.aff2axcodes(self.affine))

    def with_spacing(self, spacing: tuple[float, float, float]) -> Volume:
        """The same voxels with the affine's axis lengths replaced by ``spacing`` (directions kept)."""
        affine = np.array(self.affine, dtype=np.float64)
        current = np.asarray(self.spacing)
        affine[:3, :3] = affine[:3, :3] / np.where(current > 0, current, 1.0) * np.asarray(spacing)
        return Volume(self.array, affine, self.source)


def check_affine(volume: Volume) -> Volume:
    """Raise :class:`VolumeError` when the voxel-to-world affine is singular or not finite (no orientation)."""
    affine = np.asarray(volume.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise VolumeError("the voxel-to-world affine is degenerate (singular or not finite)", volume.source)
    return volume


def is_nifti(path: str | Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` file names."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_volume(path: str | Path, *, rescale: tuple[float, float] | None = None) -> Volume:
    """Read a NIfTI file, a DICOM series folder or an ``.npy`` array as a :class:`Volume` of float32 HU.

    ``rescale=(slope, intercept)`` is applied to the raw stored values instead of the file's own scaling
    (the NIfTI header's scl_slope/scl_inter or the DICOM RescaleSlope/RescaleIntercept), as CT-RATE v1
    volumes require. Raises :class:`VolumeError` naming the file for anything that is not a readable,
    finite, single 3D image.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError("no such file or folder", path)
    if path.is_dir():
        from .dicom import read_dicom_series

        return read_dicom_series(path, rescale=rescale)
    name = path.name.lower()
    if is_nifti(name):
        volume = _read_nifti(path, rescale)
    elif name.endswith(".npy"):
        volume = _read_npy(path, rescale)
    elif name.endswith(".dcm"):
        raise VolumeError("is a single DICOM slice; pass the folder holding the whole series", path)
    else:
        raise VolumeError("unsupported file type (expected .nii, .nii.gz, .npy or a DICOM folder)", path)
    return volume


def _read_nifti(path: Path, rescale: tuple[float, float] | None) -> Volume:
    try:
        image = nib.load(str(path))
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise VolumeError(f"is not a NIfTI image ({type(image).__name__})", path)
        shape = _spatial_shape(image.shape, path)
        raw = _raw_voxels(path, image)
        scaling = rescale if rescale is not None else _header_scaling(image)
        array = apply_rescale(raw, scaling).reshape(shape, order="F")
        check_finite(raw, path)  # integer voxels are always finite: no pass over them
    except (nib.filebasedimages.ImageFileError, gzip.BadGzipFile) as exc:
        raise VolumeError(f"is not a NIfTI image ({_first_line(exc)})", path) from exc
    except (EOFError, zlib.error) as exc:
        raise VolumeError(f"is truncated or corrupt ({_first_line(exc)})", path) from exc
    except (OSError, ValueError, MemoryError) as exc:
        raise VolumeError(f"cannot be read ({_first_line(exc)})", path) from exc
    return Volume(array, image.affine.astype(np.float64), str(path))


def _raw_voxels(path: Path, image: nib.Nifti1Image) -> np.ndarray:
    """The stored voxel values (Fortran order, as on disk), unscaled.

    A ``.nii.gz`` is decompressed in one call (ISA-L when the ``isal`` package is installed, else zlib)
    and viewed in place, which is much faster than nibabel's streamed reads of large CT volumes.
    """
    if not str(path).lower().endswith(".gz"):
        return np.asanyarray(image.dataobj.get_unscaled())
    dtype = image.get_data_dtype()
    count = int(np.prod(image.shape))
    offset = int(image.dataobj.offset)
    buffer = _gunzip(path.read_bytes())
    if len(buffer) < offset + count * dtype.itemsize:
        raise VolumeError(
            f"is truncated: {len(buffer)} bytes of image data, {offset + count * dtype.itemsize} expected",
            path,
        )
    return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(image.shape, order="F")


def _header_scaling(image: nib.Nifti1Image) -> tuple[float, float] | None:
    """The header's scl_slope/scl_inter as nibabel interprets them (None when there is no scaling)."""
    slope, inter = image.dataobj.slope, image.dataobj.inter
    return None if (slope, inter) == (1.0, 0.0) else (float(slope), float(inter))


def _read_npy(path: Path, rescale: tuple[float, float] | None) -> Volume:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise VolumeError(f"is not a readable .npy array ({_first_line(exc)})", path) from exc
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise VolumeError(f"npy array has shape {array.shape}; expected (D, H, W) or (1, D, H, W)", path)
    if not (np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)):
        raise VolumeError(f"npy array has non-numeric dtype {array.dtype}", path)
    _spatial_shape(array.shape, path)
    check_finite(array, path)
    array = apply_rescale(array, rescale) if rescale else array.astype(np.float32, copy=False)
    return Volume(array, _npy_sidecar_affine(path), str(path))


def _npy_sidecar_affine(path: Path) -> np.ndarray:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return np.eye(4)
    try:
        affine = np.asarray(json.loads(sidecar.read_text())["affine"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VolumeError(f"sidecar has no valid 'affine' ({_first_line(exc)})", sidecar) from exc
    if affine.shape != (4, 4) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(
            f"sidecar 'affine' must be an invertible 4x4 matrix, got shape {affine.shape}", sidecar
        )
    return affine


def _spatial_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """The 3D shape of an image; trailing length-1 axes (X, Y, Z, 1) are dropped, 2D and 4D rejected."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) > 3:
        raise VolumeError(f"is a {len(dims)}D image (shape {tuple(shape)}); expected one 3D volume", path)
    if len(dims) < 3 or min(dims) == 1:
        raise VolumeError(f"is a 2D image (shape {tuple(shape)}); expected a 3D volume", path)
    return dims[0], dims[1], dims[2]


def apply_rescale(raw: np.ndarray, rescale: tuple[float, float] | None) -> np.ndarray:
    """``slope * raw + intercept`` as a new float32 array in the same memory order (no float64 step)."""
    slope, intercept = (1.0, 0.0) if rescale is None else (float(rescale[0]), float(rescale[1]))
    if slope == 1.0:
        return np.add(raw, np.float32(intercept), dtype=np.float32)  # one pass for the usual CT case
    out = np.multiply(raw, np.float32(slope), dtype=np.float32)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def check_finite(array: np.ndarray, path: str | Path) -> None:
    """Raise :class:`VolumeError` when ``array`` holds NaN or infinite values."""
    if np.issubdtype(array.dtype, np.integer) or np.isfinite(array.sum(dtype=np.float64)):
        return
    bad = ~np.isfinite(array)
    if bad.all():
        raise VolumeError("volume is entirely NaN/non-finite", path)
    raise VolumeError(f"volume holds {int(bad.sum())} NaN/non-finite voxels", path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
