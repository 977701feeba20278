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
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Orientation, ResizeWithPadOrCrop, Transform

from hsenet_search.errors import HSENetError, ModelError, VolumeError

from .cache import PreprocessCache
from .cases import Case
from .dataset import load_case_volume
from .depth import DepthGeometry
from .readers import first_line, read_volume
from .resample import MinMaxForegroundResize, ResampleMinMaxForegroundResize, ResampleToSpacing
from .volume import Volume

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
        return torch.add(offset, img, alpha=scale).clamp_(self.b_min, self.b_max)  # two passes, one new tensor


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
        return self.apply(volume, device=device)[0]

    def apply(self, volume: Volume, *, device: str | torch.device | None = None) -> tuple[np.ndarray, DepthGeometry]:
        """The model tensor and the geometry linking it to the stored volume (see :mod:`.depth`)."""
        with torch.inference_mode():
            image = _as_metatensor(volume)
            try:
                out = self._transform(image.to(device) if device is not None else image)
            except Exception as exc:  # noqa: BLE001 - MONAI wraps a step's error; report its root cause
                raise _step_error(exc, volume.source) from exc
        tensor = out.as_tensor() if isinstance(out, MetaTensor) else out
        array = np.ascontiguousarray(tensor.cpu().numpy(), dtype=np.float32)
        if array.shape != (1, *self.output_shape):
            raise ModelError(
                f"profile {self.name!r} produced shape {array.shape}, "
                f"declared (1, {', '.join(map(str, self.output_shape))})",
                volume.source,
            )
        model_affine = out.affine.cpu().numpy() if isinstance(out, MetaTensor) else np.full((4, 4), np.nan)
        geometry = DepthGeometry.of(volume.affine, volume.array.shape, model_affine, self.output_shape)
        return array, geometry

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


def _step_error(exc: BaseException, source: str) -> HSENetError:
    """One readable error for a failed preprocessing step: the root cause under MONAI's "applying transform"
    wrappers, naming the volume."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, HSENetError):
        return type(root)(root.problem, root.path or source)
    if isinstance(root, MemoryError):
        return VolumeError("preprocessing ran out of memory", source)
    return VolumeError(f"preprocessing failed ({type(root).__name__}: {first_line(root)})", source)


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


def load_profile(path: str | Path) -> Profile:
    """The profile stored in a model directory's ``preprocessing.json``; any problem names that file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ModelError(f"cannot be read ({exc.strerror or exc})", path) from exc
    except ValueError as exc:
        raise ModelError(f"is not valid JSON ({exc})", path) from exc
    if not isinstance(data, dict):
        raise ModelError("is not a preprocessing profile (expected a JSON object)", path)
    try:
        return Profile.from_dict(data)
    except ModelError as exc:
        raise ModelError(exc.problem, path) from exc


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


def preprocess_case(case: Case, profile: str | dict | Profile, *, cache: PreprocessCache | None = None) -> np.ndarray:
    """Like :func:`preprocess_file` for a dataset case: its rescale and CT-RATE metadata spacing apply."""
    profile = get_profile(profile)

    def compute() -> np.ndarray:
        return profile(load_case_volume(case))

    if cache is None:
        return compute()
    return cache.get_or_compute(case.path, profile, compute, rescale=case.rescale, spacing=case.spacing)


def preprocess_case_geometry(
    case: Case, profile: str | dict | Profile, *, cache: PreprocessCache | None = None
) -> tuple[np.ndarray, DepthGeometry]:
    """Like :func:`preprocess_case`, with the :class:`DepthGeometry` of the result (cached beside it)."""
    profile = get_profile(profile)

    def compute() -> tuple[np.ndarray, dict]:
        array, geometry = profile.apply(load_case_volume(case))
        return array, geometry.to_json()

    if cache is None:
        array, geometry = compute()
    else:
        array, geometry = cache.get_or_compute_with_sidecar(
            case.path, profile, compute, "geometry", rescale=case.rescale, spacing=case.spacing
        )
    return array, DepthGeometry.from_json(geometry)
