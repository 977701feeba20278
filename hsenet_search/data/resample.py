"""Resampling maths of the preprocessing profiles: spacing-driven trilinear resizes (MONAI ``Resize``).

The new size of each axis is ``floor(n * spacing / target)`` (the official rule), resized trilinearly with
``align_corners=False``. :class:`ResampleMinMaxForegroundResize` computes HSENet's "resample, min-max,
foreground crop, resize" as a few small per-axis linear maps without building the resampled volume.
Every resampling step refuses, before allocating, a resampled grid over the volume memory budget
(:func:`~hsenet_search.data.volume.check_memory`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import Compose, Resize, SpatialCrop, Transform

from .volume import check_memory


class ResampleToSpacing(Transform):
    """Trilinear resize to a target spacing, sizes ``floor(n * spacing / target)`` (the official rule)."""

    def __init__(self, pixdim: tuple[float, float, float], mode: str = "trilinear"):
        self.pixdim = tuple(float(p) for p in pixdim)
        self.mode = mode

    def __call__(self, img: MetaTensor) -> MetaTensor:
        size = spacing_sizes(img.shape[1:], img.affine, self.pixdim)
        if list(img.shape[1:]) == size:
            return img
        check_memory(size, "resampled volume", None)
        return Resize(size, mode=self.mode, align_corners=False)(img)


def spacing_sizes(shape: tuple[int, ...], affine: Any, pixdim: tuple[float, ...]) -> list[int]:
    """``floor(n * spacing / target)`` per axis (rounded to 1e-6 first, so 299.9999999 counts as 300)."""
    current = affine_to_spacing(torch.as_tensor(affine, dtype=torch.float64).cpu(), r=len(pixdim)).tolist()
    return [max(1, math.floor(round(n * c / t, 6))) for n, c, t in zip(shape, current, pixdim, strict=True)]


class MinMaxForegroundResize(Transform):
    """The official ``ScaleIntensity(0, 1) -> CropForeground(v > 0, margin 0) -> Resize(size)``, cheaply.

    Min-max scaling is monotonic, so "v > 0 after scaling" is "v > the volume's minimum" before it, and
    a trilinear resize commutes with the linear min-max map. So: take the global min and max, crop the
    box of voxels above the min (a view, no copy), resize the crop, then scale the small result with the
    global min and max. Same values as the official order up to float rounding; a constant volume gives 0.
    """

    def __init__(self, spatial_size: tuple[int, int, int], mode: str = "trilinear"):
        self.resize = Resize(tuple(int(v) for v in spatial_size), mode=mode, align_corners=False)

    def __call__(self, img: MetaTensor) -> MetaTensor:
        data = img.as_tensor() if isinstance(img, MetaTensor) else img
        lo, hi = (float(v) for v in torch.aminmax(data))
        if hi <= lo:
            return self.resize(img).zero_()
        mask = data[0] > lo
        plane = mask.any(0)
        hits = (mask.flatten(1).any(1), plane.any(1), plane.any(0))
        start = [int(h.nonzero()[0]) for h in hits]
        end = [int(h.nonzero()[-1]) + 1 for h in hits]
        out = self.resize(SpatialCrop(roi_start=start, roi_end=end)(img))
        return out.sub_(lo).mul_(1.0 / (hi - lo))


class ResampleMinMaxForegroundResize(Transform):
    """``ResampleToSpacing -> MinMaxForegroundResize`` (the official spacing, min-max, foreground crop and
    resize) computed without building the full-resolution resampled volume.

    Each trilinear resize is a per-axis linear map, so "resample, crop, resize" is one small matrix per
    axis (``W_resize @ W_spacing[crop rows]``, with torch's own linear weights computed in float64 like
    the official float64 pipeline) applied axis by axis to the windowed source, shrinking it at once.
    The two data-dependent quantities are derived exactly:
    - the crop box: a resampled voxel is above the minimum 0 iff one of its positive-weight source
      neighbours is above 0, so the box follows from per-axis "max over the other axes > 0" profiles;
    - the min-max range: the minimum is 0 when the source minimum is 0 and some resampled voxel sees only
      zeros (probed next to zero source voxels: air); the maximum is the resampled value next to source
      voxels at the source maximum (bone clamped by the window), accepted within 1e-6 of that maximum.
    Any volume that does not meet these conditions takes the explicit path, so the result always equals
    the official order up to float rounding. Matrix bookkeeping is numpy; torch runs only the few passes
    over the volume (this keeps the step fast on shared, oversubscribed CPUs as well).
    """

    _TOLERANCE = 1e-6
    _MAX_PROBES = 4096

    def __init__(self, pixdim: tuple[float, float, float], spatial_size: tuple[int, int, int]):
        self.pixdim = tuple(float(p) for p in pixdim)
        self.spatial_size = tuple(int(v) for v in spatial_size)
        self.explicit = Compose([ResampleToSpacing(self.pixdim), MinMaxForegroundResize(self.spatial_size)])

    def __call__(self, img: MetaTensor) -> MetaTensor:
        src = (img.as_tensor() if isinstance(img, MetaTensor) else img)[0]
        affine = torch.as_tensor(img.affine, dtype=torch.float64).cpu().numpy()
        shape = tuple(src.shape)
        sizes = spacing_sizes(shape, affine, self.pixdim)
        check_memory(sizes, "resampled volume", None)
        weights = [linear_resize_weights(n, m) for n, m in zip(shape, sizes, strict=True)]
        slice_max = src.flatten(1).amax(1)  # the range's top and the crop profile along axis 0
        low, high = float(src.amin()), float(slice_max.max())
        if low != 0.0 or high <= 0.0 or not self._sees_only_zeros(src, weights, sizes):
            return self.explicit(img)
        peak = float(self._probe(src, high, weights).max())
        if not high - peak <= self._TOLERANCE * high:
            return self.explicit(img)
        box = _foreground_box(src, weights, slice_max)
        matrices = [
            _compose(linear_resize_weights(end - start, self.spatial_size[axis]), weights[axis][start:end])
            for axis, (start, end) in enumerate(box)
        ]
        out = src
        for axis in sorted(range(3), key=lambda a: self.spatial_size[a] / shape[a]):  # biggest reduction first
            out = _apply_along(out, matrices[axis], axis)
        out = out.contiguous().mul_(1.0 / peak)
        final = affine
        for axis, (start, end) in enumerate(box):
            final = _resize_affine(final, axis, shape[axis], sizes[axis])
            final = _crop_affine(final, axis, start)
            final = _resize_affine(final, axis, end - start, self.spatial_size[axis])
        return MetaTensor(out[None], affine=torch.from_numpy(final))

    def _sees_only_zeros(self, src: torch.Tensor, weights: list[np.ndarray], sizes: list[int]) -> bool:
        """Whether some resampled voxel is exactly 0: a grid corner (CT padding), else one next to zeros."""
        corners = np.array([[i, j, k] for i in (0, sizes[0] - 1) for j in (0, sizes[1] - 1) for k in (0, sizes[2] - 1)])
        return bool((_sample(src, weights, corners) == 0).any() or (self._probe(src, 0.0, weights) == 0).any())

    def _probe(self, src: torch.Tensor, value: float, weights: list[np.ndarray]) -> np.ndarray:
        """Resampled values at the grid points nearest to (a 3-strided sample of) source voxels == ``value``;
        ``value`` occurs in ``src`` (its minimum or maximum), so at least one probe is made."""
        probes = torch.nonzero(src[::3, ::3, ::3] == value).cpu().numpy() * 3
        if len(probes) > self._MAX_PROBES:
            probes = probes[np.linspace(0, len(probes) - 1, self._MAX_PROBES).astype(np.int64)]
        if not len(probes):
            probes = torch.nonzero(src == value)[:1].cpu().numpy()
        nearest = np.stack([w.argmax(0)[probes[:, a]] for a, w in enumerate(weights)], 1)
        return _sample(src, weights, nearest)


@functools.lru_cache(maxsize=64)
def linear_resize_weights(n: int, m: int) -> np.ndarray:
    """The (m, n) float64 matrix of torch's linear resize n -> m (align_corners=False), read off torch itself
    (its source positions use fused multiply-adds, so a re-derivation can differ in the last bit). Cached
    and read-only: a dataset's volumes mostly share their shapes."""
    if n == m:
        weights = np.eye(n)
    else:
        eye = torch.eye(n, dtype=torch.float64)[:, None, :]
        weights = torch.nn.functional.interpolate(eye, size=m, mode="linear", align_corners=False)[:, 0, :].T.numpy()
    weights.flags.writeable = False
    return weights


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer @ inner`` for a linear-resize ``outer`` (at most two non-zeros per row)."""
    rows, cols = np.nonzero(outer)
    out = np.zeros((outer.shape[0], inner.shape[1]))
    np.add.at(out, rows, outer[rows, cols][:, None] * inner[cols])
    return out


def _sample(src: torch.Tensor, weights: list[np.ndarray], points: np.ndarray) -> np.ndarray:
    """Trilinear values of the resampled grid at integer ``points`` (N, 3), from the source (one gather)."""
    taps, tap_weights = [], []
    for axis, w in enumerate(weights):
        rows = w[points[:, axis]]  # (N, n_axis)
        first = np.argmax(rows > 0, axis=1)
        second = np.minimum(first + 1, w.shape[1] - 1)
        w_second = np.where(second != first, rows[np.arange(len(rows)), second], 0.0)
        taps.append(np.stack([first, second], 1))
        tap_weights.append(np.stack([rows[np.arange(len(rows)), first], w_second], 1))
    n1, n2 = src.shape[1], src.shape[2]
    flat = (taps[0][:, :, None, None] * n1 + taps[1][:, None, :, None]) * n2 + taps[2][:, None, None, :]
    weight = tap_weights[0][:, :, None, None] * tap_weights[1][:, None, :, None] * tap_weights[2][:, None, None, :]
    values = src.reshape(-1)[torch.from_numpy(flat.reshape(-1)).to(src.device)].double().cpu().numpy()
    return (values.reshape(len(points), 8) * weight.reshape(len(points), 8)).sum(1)


def _foreground_box(src: torch.Tensor, weights: list[np.ndarray], slice_max: torch.Tensor) -> list[tuple[int, int]]:
    """Per axis, the [start, end) range of resampled indices with a positive-weight source neighbour > 0.

    ``src`` is >= 0, so "some voxel > 0" along an index is "the max over the other axes > 0" (``slice_max``
    is that for axis 0). Source indices that carry no weight on an axis (downsampling by more than 2x)
    are left out of the others.
    """
    positive = [w > 0 for w in weights]
    used = [p.any(0) for p in positive]
    if all(u.all() for u in used):
        plane = src.amax(0)
        profiles = [slice_max > 0, plane.amax(1) > 0, plane.amax(0) > 0]
    else:
        profiles = []
        for axis in range(3):
            kept = src
            for other in range(3):
                if other != axis and not used[other].all():
                    kept = kept.index_select(other, torch.from_numpy(np.flatnonzero(used[other])).to(src.device))
            profiles.append(kept.amax(dim=tuple(d for d in range(3) if d != axis)) > 0)
    box = []
    for axis in range(3):
        hits = np.flatnonzero(positive[axis] @ profiles[axis].cpu().numpy())
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return box


def _apply_along(x: torch.Tensor, matrix: np.ndarray, axis: int) -> torch.Tensor:
    """``matrix`` (o, n) applied along ``axis`` of ``x`` as one sparse x dense product (few taps a row)."""
    n, rest = matrix.shape[1], x.shape[:axis] + x.shape[axis + 1 :]
    rows, cols = np.nonzero(matrix)
    sparse = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, cols])),
        torch.from_numpy(matrix[rows, cols].astype(np.float32)),
        size=matrix.shape,
        device=x.device,
        check_invariants=False,
        is_coalesced=True,
    )  # np.nonzero: sorted, unique indices
    front = x.movedim(axis, 0).reshape(n, -1)
    out = torch.sparse.mm(sparse, front).reshape(matrix.shape[0], *rest)
    return out.movedim(0, axis)


def _resize_affine(affine: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """Affine after resizing ``axis`` from n to m voxels (align_corners=False: voxel centres rescaled)."""
    step = np.eye(4)
    step[axis, axis] = n / m
    step[axis, 3] = (n / m - 1) / 2
    return affine @ step


def _crop_affine(affine: np.ndarray, axis: int, start: int) -> np.ndarray:
    step = np.eye(4)
    step[axis, 3] = start
    return affine @ step
