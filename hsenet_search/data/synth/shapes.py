"""Voxel grids in body coordinates and the soft-edged primitives the phantom is drawn with.

Body coordinates are millimetres with x towards the patient's left, y towards posterior and z towards
superior (the LPS directions, which are also the voxel axes of the written volumes); the origin is the
body centre at the height of the right hemidiaphragm dome. Every shape is defined in millimetres, so the
same phantom renders at any voxel size; edges are anti-aliased over one voxel (partial-volume effect).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

Point = tuple[float, float, float]


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid: ``shape`` voxels of ``spacing`` mm, voxel (0, 0, 0) at ``origin``."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @cached_property
    def coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along each axis (float32, 1D)."""
        return tuple(  # type: ignore[return-value]
            (o + s * np.arange(n)).astype(np.float32) for o, s, n in zip(self.origin, self.spacing, self.shape)
        )

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates as broadcastable float32 arrays shaped (nx,1,1), (1,ny,1), (1,1,nz)."""
        x, y, z = self.coords
        return x.reshape(-1, 1, 1), y.reshape(1, -1, 1), z.reshape(1, 1, -1)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "coords"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

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
        x, y, z = self.coords
        return x[win[0]].reshape(-1, 1, 1), y[win[1]].reshape(1, -1, 1), z[win[2]].reshape(1, 1, -1)


def soft(signed_inside: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume occupancy from a signed distance (positive inside) with an edge ``width`` mm wide."""
    occ = signed_inside * np.float32(1.0 / width)
    occ += np.float32(0.5)
    np.minimum(occ, 1.0, out=occ)
    np.maximum(occ, 0.0, out=occ)
    return occ


def blend(hu: np.ndarray, occ: np.ndarray, value: float | np.ndarray) -> None:
    """Mix ``value`` into ``hu`` in place with weights ``occ`` (same shape or broadcastable)."""
    hu += occ * (value - hu)


def segment_occupancy(
    grid: Grid, p0: Point, p1: Point, r0: float, r1: float
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Soft occupancy of a tapered tube from ``p0`` (radius ``r0``) to ``p1`` (radius ``r1``)."""
    p0 = (float(p0[0]), float(p0[1]), float(p0[2]))
    p1 = (float(p1[0]), float(p1[1]), float(p1[2]))
    r0, r1 = float(r0), float(r1)
    pad = max(r0, r1) + grid.spacing[0]
    lo = tuple(min(a, b) - pad for a, b in zip(p0, p1))
    hi = tuple(max(a, b) + pad for a, b in zip(p0, p1))
    win = grid.window(lo, hi)  # type: ignore[arg-type]
    if win is None:
        return None
    x, y, z = grid.sub_axes(win)
    dx, dy, dz = p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]
    length2 = dx * dx + dy * dy + dz * dz or 1e-6
    px, py, pz = x - p0[0], y - p0[1], z - p0[2]
    t = px * (dx / length2) + py * (dy / length2) + pz * (dz / length2)
    np.clip(t, 0.0, 1.0, out=t)
    dist = np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2 + (pz - t * dz) ** 2)
    return win, soft(r0 + t * (r1 - r0) - dist, grid.spacing[0])


def tubes_occupancy(grid: Grid, p0, p1, r0, r1, batch: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Soft occupancy of many tapered tubes at once (the maximum over tubes), vectorised over all of them.

    Returns flat (C-order) voxel indices and their occupancies; only voxels with occupancy > 0."""
    p0 = np.asarray(p0, dtype=np.float64).reshape(-1, 3)
    p1 = np.asarray(p1, dtype=np.float64).reshape(-1, 3)
    r0 = np.asarray(r0, dtype=np.float64).ravel()
    r1 = np.asarray(r1, dtype=np.float64).ravel()
    org, sp, shp = np.asarray(grid.origin), np.asarray(grid.spacing), np.asarray(grid.shape)
    pad = (np.maximum(r0, r1) + sp[0])[:, None]
    i0 = np.clip(np.ceil((np.minimum(p0, p1) - pad - org) / sp), 0, shp).astype(np.int64)
    i1 = np.clip(np.floor((np.maximum(p0, p1) + pad - org) / sp) + 1, 0, shp).astype(np.int64)
    dims = np.maximum(i1 - i0, 0)
    sizes = dims.prod(axis=1)
    d = p1 - p0
    inv_len2 = 1.0 / np.maximum((d**2).sum(axis=1), 1e-6)
    idx_parts, occ_parts = [], []
    segs_all = np.nonzero(sizes)[0]
    start = 0
    while start < len(segs_all):
        cum = np.cumsum(sizes[segs_all[start:]])
        stop = start + max(1, int(np.searchsorted(cum, batch, side="right")))
        segs = segs_all[start:stop]
        start = stop
        n = sizes[segs]
        seg = np.repeat(segs, n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        c = local % dims[seg, 2]
        rest = local // dims[seg, 2]
        i = i0[seg, 0] + rest // dims[seg, 1]
        j = i0[seg, 1] + rest % dims[seg, 1]
        k = i0[seg, 2] + c
        px = (org[0] + sp[0] * i - p0[seg, 0]).astype(np.float32)
        py = (org[1] + sp[1] * j - p0[seg, 1]).astype(np.float32)
        pz = (org[2] + sp[2] * k - p0[seg, 2]).astype(np.float32)
        dx, dy, dz = (d[seg, a].astype(np.float32) for a in range(3))
        t = (px * dx + py * dy + pz * dz) * inv_len2[seg].astype(np.float32)
        np.clip(t, 0.0, 1.0, out=t)
        dist = np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2 + (pz - t * dz) ** 2)
        radius = r0[seg].astype(np.float32) + t * (r1 - r0)[seg].astype(np.float32)
        occ = soft(radius - dist, grid.spacing[0])
        keep = occ > 0
        idx_parts.append(((i * shp[1] + j) * shp[2] + k)[keep])
        occ_parts.append(occ[keep])
    if not idx_parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    idx, occ = np.concatenate(idx_parts), np.concatenate(occ_parts)
    order = np.lexsort((occ, idx))
    idx, occ = idx[order], occ[order]
    last = np.ones(len(idx), dtype=bool)
    last[:-1] = idx[1:] != idx[:-1]
    return idx[last], occ[last]


def blend_flat(hu: np.ndarray, idx: np.ndarray, occ: np.ndarray, value: float) -> None:
    """:func:`blend` at flat voxel indices of a C-contiguous array."""
    flat = hu.reshape(-1)
    v = flat[idx]
    flat[idx] = v + occ * (value - v)


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
    centre = (float(centre[0]), float(centre[1]), float(centre[2]))
    radii = (float(radii[0]), float(radii[1]), float(radii[2]))
    x, y, z = grid.sub_axes(win)
    rho = np.sqrt(
        ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2
    )
    return win, soft((1.0 - rho) * min(radii), grid.spacing[0])


def paint(
    hu: np.ndarray,
    shape: tuple[tuple[slice, slice, slice], np.ndarray] | None,
    value: float,
    where: np.ndarray | None = None,
) -> None:
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
