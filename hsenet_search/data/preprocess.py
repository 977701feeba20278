"""Preprocessing profiles: named MONAI transform chains that turn a :class:`Volume` into a model tensor.

Orientation (every built-in profile; recorded in its JSON as ``"orientation": "LPS"`` and ``"layout"``):
the model tensor is ``(1, D, H, W)`` float32 with D along z toward Superior, H along x toward the
patient's Left and W along y toward Posterior. That is CT-RATE's native voxel order (nibabel axis codes
"LPS": axis 0 -> Left, axis 1 -> Posterior, axis 2 -> Superior, which the official models were trained
on; CT-CLIP issue #41 calls the tensors "SLP+") transposed (X, Y, Z) -> (Z, X, Y), exactly the layout
of the official HSENet ``*_3D_features.npy`` files and of CT-CLIP's input. A RAS volume (such as the
example CT in ``shared/data/real-ct``) is therefore flipped on x and y.

How the chain gets there without copying a large volume more than needed:
1. the volume becomes a MetaTensor carrying its RAS+ affine, viewed in memory order (a NIfTI array,
   stored axis-0-fastest, is seen as (K, J, I) with the affine's columns permuted to match: same voxels);
2. MONAI ``Orientation("SPL")`` brings it to LPS with the axes reversed, (z, y, x): a no-op on the
   memory of an LPS file (CT-RATE), a flip of x and y for a RAS one;
3. window, resampling, cropping and resizing run in that (z, y, x) order (spacings and sizes in the
   JSON steps are written in that order);
4. MONAI ``Orientation("SLP")`` swaps the last two axes of the small result, giving (z, x, y).

Resampling follows the official code: the new size of each axis is ``floor(n * spacing / target)`` and
the volume is resized trilinearly (``align_corners=False``) with MONAI ``Resize``. The HU window is
applied before resampling.

Profiles:
- ``hsenet`` (HSENet): window [-1000, 200] HU, spacing x=y=0.75, z=1.5 mm, per-volume min-max to [0, 1],
  foreground crop (voxels > 0, margin 0), trilinear resize to (D, H, W) = (32, 256, 256).
- ``ctclip`` (CT-CLIP): clip [-1000, 1000] HU and divide by 1000, spacing x=y=0.75, z=1.5 mm, centre
  crop/pad to (X, Y, Z) = (480, 480, 240) padding with -1; output (1, 240, 480, 480).
- ``tiny``: the ``hsenet`` chain at x=y=1.5, z=3.0 mm, resized to (32, 64, 64), for CPU-trained models.

A profile's ``hash`` is the first 16 hex characters of the SHA-256 of its canonical JSON (sorted keys,
no whitespace) without ``name`` and ``description``: two profiles with the same chain share a hash.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import Compose, Orientation, Resize, ResizeWithPadOrCrop, SpatialCrop, Transform

from hsenet_search.errors import ModelError

from .cache import PreprocessCache
from .dataset import Case, load_case_volume
from .volume import Volume, read_volume

FORMAT_VERSION = 1
LAYOUT = "(C, D, H, W) = (1, z toward S, x toward L, y toward P): LPS voxel order transposed (X,Y,Z)->(Z,X,Y)"
BUILTIN_PROFILES = ("hsenet", "ctclip", "tiny")
_UNHASHED = ("name", "description", "hash")
_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel's convention: the second letter is "+"


class Window(Transform):
    """Map [a_min, a_max] linearly onto [b_min, b_max] and clip: MONAI ``ScaleIntensityRange(clip=True)``."""

    def __init__(self, a_min: float, a_max: float, b_min: float, b_max: float):
        if a_max <= a_min:
            raise ValueError("window needs a_max > a_min")
        self.a_min, self.a_max, self.b_min, self.b_max = a_min, a_max, b_min, b_max

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        scale = (self.b_max - self.b_min) / (self.a_max - self.a_min)
        offset = torch.tensor(self.b_min - self.a_min * scale, dtype=img.dtype, device=img.device)
        return torch.add(offset, img, alpha=scale).clamp_(
            self.b_min, self.b_max
        )  # two passes, one new tensor


class ResampleToSpacing(Transform):
    """Trilinear resize to a target spacing, sizes ``floor(n * spacing / target)`` (the official rule)."""

    def __init__(self, pixdim: tuple[float, float, float], mode: str = "trilinear"):
        self.pixdim = tuple(float(p) for p in pixdim)
        self.mode = mode

    def __call__(self, img: MetaTensor) -> MetaTensor:
        size = spacing_sizes(img.shape[1:], img.affine, self.pixdim)
        if list(img.shape[1:]) == size:
            return img
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
        for axis in sorted(
            range(3), key=lambda a: self.spatial_size[a] / shape[a]
        ):  # biggest reduction first
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
        corners = np.array(
            [[i, j, k] for i in (0, sizes[0] - 1) for j in (0, sizes[1] - 1) for k in (0, sizes[2] - 1)]
        )
        return bool(
            (_sample(src, weights, corners) == 0).any() or (self._probe(src, 0.0, weights) == 0).any()
        )

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
        weights = torch.nn.functional.interpolate(eye, size=m, mode="linear", align_corners=False)[
            :, 0, :
        ].T.numpy()
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
    weight = (
        tap_weights[0][:, :, None, None] * tap_weights[1][:, None, :, None] * tap_weights[2][:, None, None, :]
    )
    values = src.reshape(-1)[torch.from_numpy(flat.reshape(-1)).to(src.device)].double().cpu().numpy()
    return (values.reshape(len(points), 8) * weight.reshape(len(points), 8)).sum(1)


def _foreground_box(
    src: torch.Tensor, weights: list[np.ndarray], slice_max: torch.Tensor
) -> list[tuple[int, int]]:
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
                    kept = kept.index_select(
                        other, torch.from_numpy(np.flatnonzero(used[other])).to(src.device)
                    )
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


def _step_transform(step: dict[str, Any]) -> Callable:
    """The MONAI transform for one JSON step."""
    op, args = step["op"], {k: v for k, v in step.items() if k != "op"}
    builders: dict[str, Callable[..., Callable]] = {
        "orientation": lambda axcodes: Orientation(axcodes=axcodes, labels=_AXIS_LABELS),
        "window": Window,
        "resample_to_spacing": lambda pixdim, mode="trilinear": ResampleToSpacing(tuple(pixdim), mode),
        "minmax_foreground_resize": lambda spatial_size, mode="trilinear": MinMaxForegroundResize(
            tuple(spatial_size), mode
        ),
        "resample_minmax_foreground_resize": lambda pixdim, spatial_size: ResampleMinMaxForegroundResize(
            tuple(pixdim), tuple(spatial_size)
        ),
        "center_crop_or_pad": lambda spatial_size, value: ResizeWithPadOrCrop(
            tuple(spatial_size), mode="constant", value=value
        ),
    }
    if op not in builders:
        raise ModelError(f"unknown preprocessing step {op!r}; known: {', '.join(builders)}")
    try:
        return builders[op](**args)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"preprocessing step {op!r} has bad arguments {sorted(args)} ({exc})") from exc


class Profile:
    """A named MONAI preprocessing chain with a stable hash; stored as a model's ``preprocessing.json``."""

    def __init__(
        self,
        name: str,
        steps: list[dict[str, Any]],
        output_shape: tuple[int, int, int],
        description: str = "",
        orientation: str = "LPS",
    ):
        self.name = name
        self.description = description
        self.orientation = orientation
        self.steps = copy.deepcopy(list(steps))
        self._output_shape = tuple(int(v) for v in output_shape)
        if len(self._output_shape) != 3:
            raise ModelError(f"preprocessing output_shape must be (D, H, W), got {list(output_shape)}")
        self._transform = Compose([_step_transform(s) for s in self.steps])
        hashed = {k: v for k, v in self._config().items() if k not in _UNHASHED}
        self.hash = hashlib.sha256(_canonical(hashed).encode()).hexdigest()[:16]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(D, H, W) of the tensor this profile produces (without the channel axis)."""
        return self._output_shape

    def __call__(self, volume: Volume, *, device: str | torch.device | None = None) -> np.ndarray:
        """The model tensor of ``volume``: float32 ``(1, D, H, W)``; ``device`` runs the chain there."""
        with torch.inference_mode():
            image = _as_metatensor(volume)
            out = self._transform(image.to(device) if device is not None else image)
        tensor = out.as_tensor() if isinstance(out, MetaTensor) else out
        array = np.ascontiguousarray(tensor.cpu().numpy(), dtype=np.float32)
        if array.shape != (1, *self.output_shape):
            raise ModelError(
                f"profile {self.name!r} produced shape {array.shape}, "
                f"declared (1, {', '.join(map(str, self.output_shape))})",
                volume.source,
            )
        return array

    def _config(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "orientation": self.orientation,
            "layout": LAYOUT,
            "output_shape": list(self.output_shape),
            "steps": copy.deepcopy(self.steps),
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready config, including its ``hash``."""
        return {**self._config(), "hash": self.hash}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        """Rebuild a profile from :meth:`to_dict` output; a stored ``hash`` must match the chain."""
        if d.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ModelError(f"preprocessing format_version {d['format_version']} is not {FORMAT_VERSION}")
        try:
            profile = cls(
                d["name"],
                d["steps"],
                tuple(d["output_shape"]),
                d.get("description", ""),
                d.get("orientation", "LPS"),
            )
        except (KeyError, TypeError) as exc:
            raise ModelError(f"preprocessing config is malformed (missing or bad {exc})") from exc
        if "hash" in d and d["hash"] != profile.hash:
            raise ModelError(f"preprocessing hash {d['hash']} does not match its steps ({profile.hash})")
        return profile

    def save(self, path: str | Path) -> Path:
        """Write the profile as JSON (a model directory's ``preprocessing.json``)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def __repr__(self) -> str:
        return f"Profile(name={self.name!r}, hash={self.hash!r}, output_shape={self.output_shape})"


def _as_metatensor(volume: Volume) -> MetaTensor:
    """A ``(1, ...)`` MetaTensor sharing the volume's memory, axes in memory order (see module docstring)."""
    array = np.asarray(volume.array, dtype=np.float32)
    affine = np.array(volume.affine, dtype=np.float64)
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        array, affine = array.T, affine[:, [2, 1, 0, 3]]
    if not (array.flags.c_contiguous and array.flags.writeable):
        array = np.array(array, order="C", copy=True)
    return MetaTensor(torch.from_numpy(array)[None], affine=torch.from_numpy(affine))


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _minmax_profile(
    name: str, description: str, spacing_xyz: tuple[float, float, float], size_dhw: tuple[int, int, int]
) -> Profile:
    """The HSENet chain: window [-1000, 200], resample, min-max + foreground crop + resize."""
    x, y, z = spacing_xyz
    d, h, w = size_dhw
    return Profile(
        name,
        [
            {"op": "orientation", "axcodes": "SPL"},
            {"op": "window", "a_min": -1000.0, "a_max": 200.0, "b_min": 0.0, "b_max": 1.0},
            {"op": "resample_minmax_foreground_resize", "pixdim": [z, y, x], "spatial_size": [d, w, h]},
            {"op": "orientation", "axcodes": "SLP"},
        ],
        size_dhw,
        description,
    )


def _builtin(name: str) -> Profile:
    if name == "hsenet":
        return _minmax_profile(
            "hsenet",
            "HSENet: [-1000,200] HU, 0.75x0.75x1.5 mm, min-max, foreground crop, 32x256x256",
            (0.75, 0.75, 1.5),
            (32, 256, 256),
        )
    if name == "tiny":
        return _minmax_profile(
            "tiny",
            "hsenet chain at 1.5x1.5x3 mm, 32x64x64 (CPU-sized default model)",
            (1.5, 1.5, 3.0),
            (32, 64, 64),
        )
    if name == "ctclip":
        return Profile(
            "ctclip",
            [
                {"op": "orientation", "axcodes": "SPL"},
                {"op": "window", "a_min": -1000.0, "a_max": 1000.0, "b_min": -1.0, "b_max": 1.0},
                {"op": "resample_to_spacing", "pixdim": [1.5, 0.75, 0.75], "mode": "trilinear"},
                {"op": "center_crop_or_pad", "spatial_size": [240, 480, 480], "value": -1.0},
                {"op": "orientation", "axcodes": "SLP"},
            ],
            (240, 480, 480),
            "CT-CLIP: [-1000,1000] HU / 1000, 0.75x0.75x1.5 mm, centre crop/pad 480x480x240 with -1",
        )
    raise ModelError(f"unknown preprocessing profile {name!r}; built in: {', '.join(BUILTIN_PROFILES)}")


def get_profile(name_or_dict: str | dict | Profile) -> Profile:
    """A built-in profile by name, or one rebuilt from a ``preprocessing.json`` dict."""
    if isinstance(name_or_dict, Profile):
        return name_or_dict
    if isinstance(name_or_dict, dict):
        return Profile.from_dict(name_or_dict)
    return _builtin(name_or_dict)


def preprocess_file(
    path: str | Path,
    profile: str | dict | Profile,
    *,
    rescale: tuple[float, float] | None = None,
    cache: PreprocessCache | None = None,
) -> np.ndarray:
    """Read ``path`` and apply ``profile``; with a cache, a file already done is never decoded again."""
    profile = get_profile(profile)

    def compute() -> np.ndarray:
        return profile(read_volume(path, rescale=rescale))

    return cache.get_or_compute(path, profile, compute, rescale=rescale) if cache is not None else compute()


def preprocess_case(
    case: Case, profile: str | dict | Profile, *, cache: PreprocessCache | None = None
) -> np.ndarray:
    """Like :func:`preprocess_file` for a dataset case: its rescale and CT-RATE metadata spacing apply."""
    profile = get_profile(profile)

    def compute() -> np.ndarray:
        return profile(load_case_volume(case))

    if cache is None:
        return compute()
    return cache.get_or_compute(case.path, profile, compute, rescale=case.rescale, spacing=case.spacing)
