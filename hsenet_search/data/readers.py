"""Volume readers behind one registry: a path in, a checked :class:`~.volume.Volume` of float32 HU out.

In the spirit of MONAI's ``ImageReader``/``LoadImage``: each reader declares which paths it handles
(:meth:`VolumeReader.handles`) and reads them (:meth:`VolumeReader.read`); :func:`read_volume` asks the
registered readers in order and checks what the chosen one returns (:func:`~.volume.check_volume`).
Adding a format is writing one :class:`VolumeReader` subclass and decorating it with :func:`register_reader`.

Built in: NIfTI (``.nii``, ``.nii.gz``), DICOM series folders (see :mod:`.dicom`) and ``.npy`` arrays of
already-preprocessed values, shaped ``(D, H, W)`` or ``(1, D, H, W)``, whose affine is the identity
(1 mm voxels, "RAS") unless a JSON sidecar ``<file stem>.json`` holds ``{"affine": 4x4}``.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np

try:  # ISA-L's inflate is about twice as fast as zlib's; optional
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - depends on the environment
    _inflate = zlib

from hsenet_search.errors import HSENetError, VolumeError

from .dicom import read_dicom_series
from .volume import (
    Volume,
    apply_rescale,
    check_finite,
    check_memory,
    check_rescale,
    check_volume,
    check_voxel_type,
    rescale_is_finite,
    silenced,
    spatial_shape,
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class VolumeReader(ABC):
    """One volume format: which paths it handles and how to read one."""

    name: ClassVar[str] = ""

    @abstractmethod
    def handles(self, path: Path) -> bool:
        """Whether this reader reads ``path`` (an existing file or folder)."""

    @abstractmethod
    def read(self, path: Path, rescale: tuple[float, float] | None) -> Volume:
        """The volume at ``path``; ``rescale=(slope, intercept)`` replaces the file's own scaling."""


_READERS: list[VolumeReader] = []


def register_reader(cls: type[VolumeReader]) -> type[VolumeReader]:
    """Class decorator: add a reader to the registry (asked after the ones registered before it)."""
    _READERS.append(cls())
    return cls


def readers() -> list[VolumeReader]:
    """The registered readers, in the order :func:`read_volume` asks them."""
    return list(_READERS)


def is_nifti(path: str | Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` file names."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_volume(path: str | Path, *, rescale: tuple[float, float] | None = None) -> Volume:
    """Read a NIfTI file, a DICOM series folder or an ``.npy`` array as a :class:`Volume` of float32 HU.

    ``rescale=(slope, intercept)`` is applied to the raw stored values instead of the file's own scaling
    (the NIfTI header's scl_slope/scl_inter or the DICOM RescaleSlope/RescaleIntercept), as CT-RATE v1
    volumes require. Raises :class:`VolumeError` naming the file for anything that is not a readable,
    finite, single 3D image within the memory budget.
    """
    path = Path(path)
    check_path(path)
    check_rescale(rescale, path)
    for reader in _READERS:
        if reader.handles(path):
            return check_volume(reader.read(path, rescale))
    if path.name.lower().endswith(".dcm"):
        raise VolumeError("is a single DICOM slice; pass the folder holding the whole series", path)
    raise VolumeError("unsupported file type (expected .nii, .nii.gz, .npy or a DICOM folder)", path)


def check_path(path: Path, error: type[HSENetError] = VolumeError) -> None:
    """An existing, readable file or folder; a symlink loop or a permission problem is one clear ``error``."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error("is a symbolic link loop", path) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise error("cannot be read (permission denied)", path) from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise error("no such file or folder", path) from exc
        raise error(f"cannot be read ({exc.strerror or exc})", path) from exc
    mode = os.R_OK | (os.X_OK if path.is_dir() else 0)
    if not os.access(path, mode):
        raise error("cannot be read (permission denied)", path)


@register_reader
class NiftiReader(VolumeReader):
    """NIfTI-1/2 files (``.nii``, ``.nii.gz``); a ``.nii.gz`` is inflated no further than its header says."""

    name = "nifti"

    def handles(self, path: Path) -> bool:
        return path.is_file() and is_nifti(path.name)

    def read(self, path: Path, rescale: tuple[float, float] | None) -> Volume:
        with silenced(nib.imageglobals.logger):  # its header checks log repairs ("setting 0 dims to 1")
            return self._read(path, rescale)

    def _read(self, path: Path, rescale: tuple[float, float] | None) -> Volume:
        try:
            image = nib.load(str(path))
            if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
                raise VolumeError(f"is not a NIfTI image ({type(image).__name__})", path)
            check_voxel_type(image.get_data_dtype(), path)
            shape = spatial_shape(image.shape, path)
            check_memory(shape, "volume", path)
            affine = image.affine.astype(np.float64)
            scaling = rescale if rescale is not None else _header_scaling(image)
            check_rescale(scaling, path, "scl_slope/scl_inter" if rescale is None else "rescale")
            raw = _raw_voxels(path, image)
            array = apply_rescale(raw, scaling).reshape(shape, order="F")
        except (
            nib.filebasedimages.ImageFileError,
            nib.spatialimages.HeaderDataError,
            gzip.BadGzipFile,
        ) as exc:
            raise VolumeError(f"is not a NIfTI image ({first_line(exc)})", path) from exc
        except (EOFError, zlib.error) as exc:
            raise VolumeError(f"is truncated or corrupt ({first_line(exc)})", path) from exc
        except (OSError, ValueError, MemoryError, TypeError, OverflowError) as exc:
            raise VolumeError(f"cannot be read ({first_line(exc)})", path) from exc
        if not rescale_is_finite(raw.dtype, scaling):  # integer voxels in range need no pass over the data
            check_finite(array, path)
        return Volume(array, affine, str(path))


def _raw_voxels(path: Path, image: nib.Nifti1Image) -> np.ndarray:
    """The stored voxel values (Fortran order, as on disk), unscaled.

    A ``.nii.gz`` is inflated in one call (ISA-L when the ``isal`` package is installed, else zlib) and
    viewed in place, which is much faster than nibabel's streamed reads of large CT volumes. Inflation
    stops at the size the header declares, so a file that inflates to far more (a gzip bomb) costs no
    more memory than the volume it claims to be.
    """
    if not str(path).lower().endswith(".gz"):
        return np.asanyarray(image.dataobj.get_unscaled())
    dtype = image.get_data_dtype()
    count = int(np.prod(image.shape))
    offset = int(image.dataobj.offset)
    expected = offset + count * dtype.itemsize
    buffer = _inflate.decompressobj(wbits=31).decompress(path.read_bytes(), expected)
    if len(buffer) < expected:
        raise VolumeError(f"is truncated: {len(buffer)} bytes of image data, {expected} expected", path)
    return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(image.shape, order="F")


def _header_scaling(image: nib.Nifti1Image) -> tuple[float, float] | None:
    """The header's scl_slope/scl_inter as nibabel interprets them (None when there is no scaling)."""
    slope, inter = image.dataobj.slope, image.dataobj.inter
    return None if (slope, inter) == (1.0, 0.0) else (float(slope), float(inter))


@register_reader
class DicomSeriesReader(VolumeReader):
    """A folder holding one DICOM series (see :mod:`hsenet_search.data.dicom`)."""

    name = "dicom"

    def handles(self, path: Path) -> bool:
        return path.is_dir()

    def read(self, path: Path, rescale: tuple[float, float] | None) -> Volume:
        return read_dicom_series(path, rescale=rescale)


@register_reader
class NpyReader(VolumeReader):
    """Preprocessed ``.npy`` arrays (values taken as they are; ``rescale`` still applies when given)."""

    name = "npy"

    def handles(self, path: Path) -> bool:
        return path.is_file() and path.name.lower().endswith(".npy")

    def read(self, path: Path, rescale: tuple[float, float] | None) -> Volume:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise VolumeError(f"is not a readable .npy array ({first_line(exc)})", path) from exc
        check_voxel_type(array.dtype, path)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 3:
            raise VolumeError(f"npy array has shape {array.shape}; expected (D, H, W) or (1, D, H, W)", path)
        spatial_shape(array.shape, path)
        check_memory(array.shape, "volume", path)
        finite = rescale_is_finite(array.dtype, rescale)  # integers in range: no pass over the data
        array = np.array(array)  # into memory, now that its size is known to fit
        with np.errstate(all="ignore"):  # overflows are caught just below
            array = apply_rescale(array, rescale) if rescale else array.astype(np.float32, copy=False)
        if not finite:
            check_finite(array, path)
        return Volume(array, _npy_sidecar_affine(path), str(path))


def _npy_sidecar_affine(path: Path) -> np.ndarray:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return np.eye(4)
    try:
        affine = np.asarray(json.loads(sidecar.read_text())["affine"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VolumeError(f"sidecar has no valid 'affine' ({first_line(exc)})", sidecar) from exc
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(f"sidecar 'affine' must be a finite invertible 4x4 matrix, got shape {affine.shape}", sidecar)
    return affine


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
