"""Voxel grids in body coordinates and the soft-edged primitives the phantom is drawn with.

Body coordinates are millimetres with x towards the patient's left, y towards posterior and z towards
superior (the LPS directions, which are also the voxel axes of the written volumes); the origin is the
body centre at the height of the right hemidiaphragm dome. Every shape is defined in millimetres, so the
same phantom renders at any voxel size; edges are anti-aliased over one voxel (partial-volume effect).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Point = tuple[float, float, float]


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid: ``shape`` voxels of ``spacing`` mm, voxel (0, 0, 0) at ``origin``."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates as broadcastable float32 arrays shaped (nx,1,1), (1,ny,1), (1,1,nz)."""
        nx, ny, nz = self.shape
        x = (self.origin[0] + self.spacing[0] * np.arange(nx)).astype(np.float32).reshape(nx, 1, 1)
        y = (self.origin[1] + self.spacing[1] * np.arange(ny)).astype(np.float32).reshape(1, ny, 1)
        z = (self.origin[2] + self.spacing[2] * np.arange(nz)).astype(np.float32).reshape(1, 1, nz)
        return x, y, z

    def slab(self, k0: int, k1: int) -> Grid:
        """The sub-grid of axial slices ``k0 .. k1 - 1``."""
        origin = (self.origin[0], self.origin[1], self.origin[2] + k0 * self.spacing[2])
        return Grid((self.shape[0], self.shape[1], k1 - k0), self.spacing, origin)

    def z_of(self, k: int) -> float:
        """Height (mm) of the centre of axial slice ``k``."""
        return self.origin[2] + k * self.spacing[2]

    def index_of(self, point: Point) -> tuple[int, int, int]:
        """Nearest voxel index of a point (may lie outside the grid)."""
        return tuple(int(round((p - o) / s)) for p, o, s in zip(point, self.origin, self.spacing))  # type: ignore[return-value]

    def window(self, lo: Point, hi: Point) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in the box ``lo .. hi``; None when it misses the grid."""
        out = []
        for a, b, o, s, n in zip(lo, hi, self.origin, self.spacing, self.shape):
            i0 = max(0, int(np.ceil((a - o) / s)))
            i1 = min(n, int(np.floor((b - o) / s)) + 1)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)  # type: ignore[return-value]

    def sub(self, win: tuple[slice, slice, slice]) -> Grid:
        """The grid of the voxels in an index window."""
        lo = tuple(o + s * w.start for o, s, w in zip(self.origin, self.spacing, win))
        shape = tuple(w.stop - w.start for w in win)
        return Grid(shape, self.spacing, lo)  # type: ignore[arg-type]

    def sub_axes(self, win: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates of the voxels in an index window (broadcastable, like :meth:`axes`)."""
        return self.sub(win).axes()


def soft(signed_inside: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume occupancy from a signed distance (positive inside) with an edge ``width`` mm wide."""
    return np.clip(signed_inside / width + 0.5, 0.0, 1.0)


def blend(hu: np.ndarray, occ: np.ndarray, value: float | np.ndarray) -> None:
    """Mix ``value`` into ``hu`` in place with weights ``occ`` (same shape or broadcastable)."""
    hu += occ * (value - hu)


def segment_occupancy(
    grid: Grid, p0: Point, p1: Point, r0: float, r1: float
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Soft occupancy of a tapered tube from ``p0`` (radius ``r0``) to ``p1`` (radius ``r1``)."""
    pad = max(r0, r1) + grid.spacing[0]
    lo = tuple(min(a, b) - pad for a, b in zip(p0, p1))
    hi = tuple(max(a, b) + pad for a, b in zip(p0, p1))
    win = grid.window(lo, hi)  # type: ignore[arg-type]
    if win is None:
        return None
    x, y, z = grid.sub_axes(win)
    d = np.subtract(p1, p0, dtype=np.float32)
    length2 = float(d @ d) or 1e-6
    px, py, pz = x - p0[0], y - p0[1], z - p0[2]
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / length2, 0.0, 1.0)
    dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
    radius = r0 + t * (r1 - r0)
    return win, soft(radius - dist, grid.spacing[0])


def ellipsoid_occupancy(
    grid: Grid, centre: Point, radii: Point
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Soft occupancy of an axis-aligned ellipsoid."""
    pad = grid.spacing[0]
    win = grid.window(
        tuple(c - r - pad for c, r in zip(centre, radii)),  # type: ignore[arg-type]
        tuple(c + r + pad for c, r in zip(centre, radii)),  # type: ignore[arg-type]
    )
    if win is None:
        return None
    x, y, z = grid.sub_axes(win)
    rho = np.sqrt(((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
                  + ((z - centre[2]) / radii[2]) ** 2)
    return win, soft((1.0 - rho) * min(radii), grid.spacing[0])


def paint(hu: np.ndarray, shape: tuple[tuple[slice, slice, slice], np.ndarray] | None, value: float,
          where: np.ndarray | None = None) -> None:
    """Blend a windowed occupancy into ``hu``; ``where`` (full-grid bool) restricts the painted voxels."""
    if shape is None:
        return
    win, occ = shape
    if where is not None:
        occ = occ * where[win]
    blend(hu[win], occ, value)


@dataclass(frozen=True)
class SmoothField:
    """A smooth Gaussian random field fixed in body coordinates (unit variance, correlation ~``scale`` mm).

    Random values on a lattice every ``scale / 2`` mm are interpolated with separable Gaussian weights,
    so the field is the same whatever grid (or slab of a grid) it is evaluated on.
    """

    lo: Point
    step: float
    values: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, lo: Point, hi: Point, scale: float) -> SmoothField:
        step = scale / 2.0
        counts = [int(np.ceil((b - a) / step)) + 3 for a, b in zip(lo, hi)]
        start = tuple(a - step for a in lo)
        return cls(start, step, rng.standard_normal(counts).astype(np.float32))  # type: ignore[arg-type]

    def _weights(self, coords: np.ndarray, axis: int) -> np.ndarray:
        knots = self.lo[axis] + self.step * np.arange(self.values.shape[axis], dtype=np.float32)
        w = np.exp(-0.5 * ((coords.reshape(-1, 1) - knots.reshape(1, -1)) / self.step) ** 2)
        # Normalise to unit variance for a unit-variance lattice.
        return (w / np.sqrt((w**2).sum(axis=1, keepdims=True) + 1e-12)).astype(np.float32)

    def on(self, grid: Grid) -> np.ndarray:
        """Evaluate on every voxel centre of ``grid`` (float32, shape ``grid.shape``)."""
        x, y, z = grid.axes()
        wx, wy, wz = self._weights(x, 0), self._weights(y, 1), self._weights(z, 2)
        f = np.tensordot(wz, self.values, axes=([1], [2]))  # (nz, Lx, Ly)
        f = np.tensordot(wx, f, axes=([1], [1]))  # (nx, nz, Ly)
        f = np.tensordot(f, wy, axes=([2], [1]))  # (nx, nz, ny)
        return np.ascontiguousarray(f.transpose(0, 2, 1))
