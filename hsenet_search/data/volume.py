"""The :class:`Volume` record (HU array + voxel -> world affine) and the checks every volume passes.

A :class:`Volume` holds Hounsfield units as float32 in the source's own voxel order together with the
4x4 voxel -> world affine in nibabel's RAS+ convention, so ``orientation`` and ``spacing`` come from
the affine. Nothing is resampled or reoriented here; preprocessing profiles do that explicitly.
NIfTI and DICOM arrays keep the memory layout of the file (Fortran order: axis 0 varies fastest), so
reading never pays for a transposing copy. The readers live in :mod:`hsenet_search.data.readers`.

Every volume a reader returns is checked where it enters (:func:`check_volume`): a 3D shape with no empty
axis, a finite non-degenerate affine, voxel sizes within :data:`SPACING_RANGE_MM`, finite HU after the
rescale, and a decoded size within the memory budget (:func:`memory_budget_bytes`). A constant volume is
accepted with a :class:`VolumeWarning`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from hsenet_search.errors import VolumeError

SPACING_RANGE_MM = (0.05, 50.0)
"""Accepted voxel size along each axis, in mm (clinical CT is about 0.2 to 10 mm)."""
MEMORY_BUDGET_ENV = "HSENET_MAX_VOLUME_MB"
DEFAULT_MEMORY_BUDGET_MB = 2048
"""Largest float32 volume (decoded or resampled) one read or preprocessing step may allocate, in MiB;
about four times a large chest CT (512 x 512 x 1000). Override with ``HSENET_MAX_VOLUME_MB``."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class VolumeWarning(UserWarning):
    """A volume is readable but suspicious (e.g. constant): indexed, with a warning naming the file."""


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
        volume = Volume(self.array, affine, self.source)
        check_affine(volume.affine, volume.source)
        return volume


@contextlib.contextmanager
def silenced(*loggers: logging.Logger) -> Iterator[None]:
    """Mute library warnings, numpy floating-point warnings and ``loggers`` while a file is decoded: a
    reader turns what they complain about into one :class:`VolumeError` (or accepts it) itself."""
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def memory_budget_bytes() -> int:
    """The memory budget for one volume in bytes: ``HSENET_MAX_VOLUME_MB`` MiB, default 2048."""
    raw = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    try:
        mib = float(raw) if raw else DEFAULT_MEMORY_BUDGET_MB
    except ValueError as exc:
        raise VolumeError(f"{MEMORY_BUDGET_ENV}={raw!r} is not a number of MiB") from exc
    if not mib > 0:
        raise VolumeError(f"{MEMORY_BUDGET_ENV}={raw!r} must be a positive number of MiB")
    return int(mib * 2**20)


def check_memory(shape: tuple[int, ...], what: str, path: str | Path | None) -> None:
    """Refuse, before allocating, a float32 array of ``shape`` larger than the memory budget."""
    budget = memory_budget_bytes()
    needed = 4 * int(np.prod([int(n) for n in shape], dtype=object))
    if needed > budget:
        raise VolumeError(
            f"{what} of shape {tuple(int(n) for n in shape)} needs {needed / 2**30:.1f} GiB, over the "
            f"{budget / 2**30:.1f} GiB volume budget (raise {MEMORY_BUDGET_ENV} to allow it)",
            path,
        )


def spatial_shape(shape: tuple[int, ...], path: str | Path) -> tuple[int, int, int]:
    """The 3D shape of an image; trailing length-1 axes (X, Y, Z, 1) are dropped; 2D, 4D, empty refused."""
    dims = [int(n) for n in shape]
    if any(n <= 0 for n in dims):
        raise VolumeError(f"has an empty axis (shape {tuple(shape)}); expected a 3D volume", path)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) > 3:
        raise VolumeError(f"is a {len(dims)}D image (shape {tuple(shape)}); expected one 3D volume", path)
    if len(dims) < 3 or min(dims) == 1:
        raise VolumeError(f"is a 2D image (shape {tuple(shape)}); expected a 3D volume", path)
    return dims[0], dims[1], dims[2]


def check_affine(affine: np.ndarray, path: str | Path) -> None:
    """A finite, non-degenerate voxel -> world affine with voxel sizes within :data:`SPACING_RANGE_MM`."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise VolumeError("has a non-finite (NaN or infinite) voxel-to-world affine", path)
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    low, high = SPACING_RANGE_MM
    for axis, size in enumerate(sizes):
        if not low <= size <= high:
            raise VolumeError(
                f"has voxel spacing {size:.6g} mm on axis {axis}, outside the accepted {low}-{high} mm", path
            )
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6 * float(np.prod(sizes)):
        raise VolumeError("has a degenerate voxel-to-world affine (axes are parallel)", path)


def check_voxel_type(dtype: np.dtype, path: str | Path) -> None:
    """Voxels must be plain integers or real floats (no complex, RGB, structured or boolean values)."""
    dtype = np.dtype(dtype)
    if dtype.fields is not None or dtype.kind not in "iuf":
        raise VolumeError(f"has voxel type {dtype} (expected integer or real float values)", path)


def rescale_is_finite(dtype: np.dtype, rescale: tuple[float, float] | None) -> bool:
    """Whether ``slope * v + intercept`` is finite in float32 for every value ``v`` of integer ``dtype``
    (decided from the dtype's range, without a pass over the data); False for float data."""
    slope, intercept = (1.0, 0.0) if rescale is None else (float(rescale[0]), float(rescale[1]))
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        return False
    info = np.iinfo(dtype)
    reach = abs(slope) * max(abs(int(info.min)), abs(int(info.max))) + abs(intercept)
    return bool(np.isfinite(reach) and reach < _FLOAT32_MAX)


def check_rescale(rescale: tuple[float, float] | None, path: str | Path, what: str = "rescale") -> None:
    """The slope and intercept must be finite numbers and the slope non-zero."""
    if rescale is None:
        return
    slope, intercept = rescale
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise VolumeError(
            f"has {what} slope {slope:g} / intercept {intercept:g}; expected finite numbers, slope non-zero",
            path,
        )


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
        raise VolumeError("volume is entirely NaN/non-finite (after the rescale)", path)
    raise VolumeError(f"volume holds {int(bad.sum())} NaN/non-finite voxels (after the rescale)", path)


def check_volume(volume: Volume) -> Volume:
    """The checks every read volume passes (see module docstring); warns about a constant volume."""
    spatial_shape(volume.array.shape, volume.source)
    check_affine(volume.affine, volume.source)
    array = volume.array
    sample = array[::7, ::7, ::7]  # a varied sample proves the volume is not constant without a full pass
    if sample.size and sample.min() == sample.max() and array.min() == array.max():
        warnings.warn(
            f"{volume.source}: volume is constant ({float(array.flat[0]):g} everywhere); its embedding "
            "carries no image content",
            VolumeWarning,
            stacklevel=3,
        )
    return volume
