"""Slice PNGs of indexed volumes: one plane, one window, at the true physical aspect ratio.

Volumes are reoriented to LPS voxel order and shown in radiological convention (patient's right on the
image's left; anterior up on axial, superior up on coronal and sagittal).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from hsenet_search.errors import QueryError

AXES = ("axial", "coronal", "sagittal")
WINDOWS: dict[str, tuple[float, float]] = {  # name -> (level, width) in HU
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}
MAX_SIDE = 1024

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A small thread-safe least-recently-used cache."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


@dataclass(frozen=True)
class DisplayVolume:
    """HU voxels in LPS order and their spacing (mm) along x, y, z."""

    array: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def slices(self) -> dict[str, int]:
        nx, ny, nz = self.array.shape
        return {"axial": nz, "coronal": ny, "sagittal": nx}


def display_volume(path: str) -> DisplayVolume:
    """Read a volume file by the one road (CT-RATE metadata rescale and spacing where they apply) and
    reorient it to LPS."""
    import nibabel as nib

    from hsenet_search.data.dataset import load_case_volume
    from hsenet_search.data.resolve import resolve_input

    volume = load_case_volume(resolve_input(path))
    current = nib.orientations.io_orientation(volume.affine)
    target = nib.orientations.axcodes2ornt(("L", "P", "S"))
    transform = nib.orientations.ornt_transform(current, target)
    array = nib.orientations.apply_orientation(volume.array, transform)
    spacing = np.asarray(volume.spacing)[transform[:, 0].astype(int).argsort()]
    return DisplayVolume(np.ascontiguousarray(array, dtype=np.float32), tuple(float(s) for s in spacing))


def axial_display_index(stored_affine, depth: int, slice_index: int) -> int | None:
    """The viewer's axial index (LPS display order) of stored slice ``slice_index`` along the file's third
    axis, or None when that axis is not the head-foot axis."""
    import nibabel as nib

    axis, direction = nib.orientations.io_orientation(np.asarray(stored_affine))[2]
    if int(axis) != 2:
        return None
    return int(slice_index) if direction > 0 else depth - 1 - int(slice_index)


def plane(volume: DisplayVolume, axis: str, index: int | None) -> tuple[np.ndarray, float, float]:
    """The 2D image (rows top→bottom) of one slice and its pixel height and width in mm."""
    if axis not in AXES:
        raise QueryError(f"axis must be one of {', '.join(AXES)}, got {axis!r}")
    count = volume.slices[axis]
    i = count // 2 if index is None else index
    if not 0 <= i < count:
        raise QueryError(f"index {i} is outside the {count} {axis} slices (0..{count - 1})")
    a, (sx, sy, sz) = volume.array, volume.spacing
    if axis == "axial":
        return a[:, :, i].T, sy, sx
    if axis == "coronal":
        return a[:, i, :].T[::-1], sz, sx
    return a[i, :, :].T[::-1], sz, sy


def render_png(volume: DisplayVolume, axis: str, index: int | None, window: str, max_side: int | None) -> bytes:
    """One windowed slice as an 8-bit grey PNG resampled to square pixels (longest side ≤ ``max_side``)."""
    from PIL import Image

    if window not in WINDOWS:
        raise QueryError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
    image, dy, dx = plane(volume, axis, index)
    level, width = WINDOWS[window]
    grey = np.clip((image - (level - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
    pixel = min(dy, dx)
    height, wide = image.shape[0] * dy / pixel, image.shape[1] * dx / pixel
    scale = min(1.0, min(MAX_SIDE, max_side or MAX_SIDE) / max(height, wide))
    size = (max(1, round(wide * scale)), max(1, round(height * scale)))
    out = Image.fromarray(np.ascontiguousarray(grey), mode="L")
    if size != (grey.shape[1], grey.shape[0]):
        out = out.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()
