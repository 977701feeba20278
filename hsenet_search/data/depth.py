"""Where a stored slice lands in a model tensor: the one mapping between cited image numbers and depth bins.

A report cites "image I": the 1-based slice ``k = I − 1`` along the stored file's third voxel axis. The
preprocessing profile resamples, crops and resizes that volume into the model tensor ``(D, H, W)``; it
records the tensor's own voxel → world affine (:meth:`~hsenet_search.data.preprocess.Profile.apply`). So
a slice maps to the model by world coordinates: the centre of the stored plane ``k`` (voxel
``((n0 − 1)/2, (n1 − 1)/2, k)``) goes to world mm through the stored affine and back to a continuous model
voxel through the inverse model affine; its first coordinate is the model depth ``d``. Model voxel ``d``
covers ``[d − ½, d + ½)``, and depth bin ``b`` (one patch slab of ``patch_depth`` voxels: one per-depth
embedding) covers ``[b·p − ½, (b + 1)·p − ½)``. The way back takes the centre of bin ``b``
(``d = b·p + (p − 1)/2``, in-plane centre of the tensor) to world and then to the stored slice index.
For an oblique plane the centre stands for the whole plane (RadFinder takes the most-hit bin instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DepthGeometry:
    """Stored-volume and model-tensor grids of one preprocessed volume (affines: voxel → world mm)."""

    stored_affine: tuple[tuple[float, ...], ...]
    stored_shape: tuple[int, int, int]
    model_affine: tuple[tuple[float, ...], ...]
    model_shape: tuple[int, int, int]

    @classmethod
    def of(cls, stored_affine, stored_shape, model_affine, model_shape) -> DepthGeometry:
        def rows(a) -> tuple[tuple[float, ...], ...]:
            return tuple(tuple(float(v) for v in row) for row in np.asarray(a, dtype=np.float64).reshape(4, 4))

        shapes = tuple(map(int, stored_shape)), tuple(map(int, model_shape))
        return cls(rows(stored_affine), shapes[0], rows(model_affine), shapes[1])

    def to_json(self) -> dict:
        return {
            "stored_affine": [list(r) for r in self.stored_affine],
            "stored_shape": list(self.stored_shape),
            "model_affine": [list(r) for r in self.model_affine],
            "model_shape": list(self.model_shape),
        }

    @classmethod
    def from_json(cls, data: dict) -> DepthGeometry:
        return cls.of(data["stored_affine"], data["stored_shape"], data["model_affine"], data["model_shape"])

    @property
    def slice_mm(self) -> float:
        """Distance between stored slices (length of the third column of the stored affine)."""
        return float(np.linalg.norm(np.asarray(self.stored_affine)[:3, 2]))

    @property
    def depth_mm(self) -> float:
        """Distance between model depth voxels (length of the first column of the model affine)."""
        return float(np.linalg.norm(np.asarray(self.model_affine)[:3, 0]))


@dataclass(frozen=True)
class DepthBins:
    """The depth bins of one volume for a model whose per-depth embeddings span ``patch_depth`` voxels."""

    geometry: DepthGeometry
    patch_depth: int

    @property
    def count(self) -> int:
        return self.geometry.model_shape[0] // self.patch_depth

    @property
    def bin_mm(self) -> float:
        return self.patch_depth * self.geometry.depth_mm

    def model_depth(self, slice_index: float) -> float:
        """Continuous model depth voxel of the centre of stored slice ``slice_index`` (0-based)."""
        g = self.geometry
        point = np.array([(g.stored_shape[0] - 1) / 2, (g.stored_shape[1] - 1) / 2, float(slice_index), 1.0])
        world = np.asarray(g.stored_affine) @ point
        return float((np.linalg.inv(np.asarray(g.model_affine)) @ world)[0])

    def bin_of_slice(self, slice_index: float) -> int | None:
        """The depth bin holding stored slice ``slice_index``, or None when it lies outside the tensor."""
        b = math.floor((self.model_depth(slice_index) + 0.5) / self.patch_depth)
        return b if 0 <= b < self.count else None

    def slice_of_bin(self, b: int) -> float:
        """Continuous stored slice index (0-based) of the centre of depth bin ``b``."""
        g = self.geometry
        depth = b * self.patch_depth + (self.patch_depth - 1) / 2
        centre = np.array([depth, (g.model_shape[1] - 1) / 2, (g.model_shape[2] - 1) / 2, 1.0])
        world = np.asarray(g.model_affine) @ centre
        return float((np.linalg.inv(np.asarray(g.stored_affine)) @ world)[2])

    def image_number(self, b: int) -> int:
        """The 1-based image number (stored slice) at the centre of bin ``b``, within the stored volume."""
        return int(min(max(round(self.slice_of_bin(b)), 0), self.geometry.stored_shape[2] - 1)) + 1
