"""The official HSENet 2D slice chain (CT-RATE_nii_to_2D_slices.py, then CT-RATE_2D_to_npy_file.py).

Steps of :class:`SliceChain` (specs §4.2), in float64 as the official script computes them:

1. the volume is brought to CT-RATE's LPS voxel order (MONAI ``Orientation``; a no-op on CT-RATE files, which
   are LPS, so the raw voxel order the official script uses is kept), then seen as (X, Y, Z);
2. z first: transposed (2, 0, 1) when ``shape[2] < shape[0]`` (the official quirk: a scan with more
   slices than rows is left as it is);
3. HU clamped to [-1000, 1000], divided by 1000;
4. resampled trilinearly (``F.interpolate``, ``align_corners=False``, float64) to (z, x, y) =
   (1.5, 0.75, 0.75) mm, sizes ``int(n * spacing / target)``; spacing is the case's (CT-RATE metadata
   when known, else the header's);
5. 32 slices: ``torch.linspace(0, D - 1, 32).long()`` when D >= 32, else a trilinear resize of the
   depth to 32;
6. each slice min-max scaled to [0, 255] and truncated to uint8 (a constant slice is all zeros);
7. PIL: rotated -90 degrees (``expand=True``) and JPEG-encoded at quality 95 (``slice_000.jpg`` ...).

BiomedCLIP features (§4.3): each JPEG decoded as RGB, BiomedCLIP's own preprocess (open_clip
``image_transform``), the 32 slices batched through ``model.visual.trunk``: its final-norm CLS, ``(32, 768)``.
Here the JPEGs are encoded and decoded in memory (same bytes as the files, no disk round trip).
The chain has a hash like the 3D preprocessing profiles: the first 16 hex of the SHA-256 of its canonical
JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hsenet_search.errors import VolumeError

from .volume import Volume, check_affine

FEATURES_SUFFIX = "_biomedclip_features.npy"
_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel's convention: the second letter is "+"


@dataclass(frozen=True)
class SliceChain:
    """The official 2D slice chain's constants (see the module docstring)."""

    name: str = "hsenet-2d"
    slices: int = 32
    hu_min: float = -1000.0
    hu_max: float = 1000.0
    hu_divisor: float = 1000.0
    spacing_zxy: tuple[float, float, float] = (1.5, 0.75, 0.75)
    rotate_degrees: int = -90
    jpeg_quality: int = 95
    orientation: str = "LPS"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["spacing_zxy"] = list(self.spacing_zxy)
        return {**data, "hash": self.hash}

    @property
    def hash(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "name"}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


OFFICIAL_CHAIN = SliceChain()


def _lps_xyz(volume: Volume, chain: SliceChain) -> torch.Tensor:
    """The volume's voxels as float64 (X, Y, Z) in ``chain.orientation`` order; a degenerate affine is an
    error."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    check_affine(volume.affine, volume.source)
    affine = np.asarray(volume.affine, dtype=np.float64)
    image = MetaTensor(torch.from_numpy(np.asarray(volume.array))[None], affine=torch.from_numpy(affine))
    oriented = Orientation(axcodes=chain.orientation, labels=_AXIS_LABELS)(image)
    return oriented.as_tensor()[0].to(torch.float64)


def official_slices(
    volume: Volume, spacing: tuple[float, float, float] | None = None, chain: SliceChain = OFFICIAL_CHAIN
) -> np.ndarray:
    """Steps 1-6: the ``(slices, H, W)`` uint8 images before rotation and JPEG.

    ``volume`` holds HU; ``spacing`` (x, y, z) mm replaces the header's (CT-RATE metadata).
    """
    x = _lps_xyz(volume, chain)
    sx, sy, sz = spacing if spacing is not None else volume.spacing
    if x.shape[2] < x.shape[0]:
        x = x.permute(2, 0, 1)
    x = x.contiguous().clamp(chain.hu_min, chain.hu_max) / chain.hu_divisor
    current = (sz, sx, sy)
    size = [int(n * c / t) for n, c, t in zip(x.shape, current, chain.spacing_zxy, strict=True)]
    if min(size) < 1:
        raise VolumeError(f"resampling to {chain.spacing_zxy} mm leaves no voxels (shape {size})", volume.source)
    x = _trilinear(x, size)
    depth = x.shape[0]
    if depth >= chain.slices:
        x = x[torch.linspace(0, depth - 1, chain.slices).long()]
    else:
        x = _trilinear(x, [chain.slices, *x.shape[1:]])
    flat = x.reshape(chain.slices, -1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    span = hi - lo
    scaled = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0) * 255, torch.zeros_like(x))
    return scaled.to(torch.uint8).numpy()


def _trilinear(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """``F.interpolate(trilinear, align_corners=False)`` in float64, the op the official script calls (MONAI's
    ``Resize`` would return float32, which moves rare pixels across a uint8 truncation)."""
    return F.interpolate(x[None, None], size=tuple(size), mode="trilinear", align_corners=False)[0, 0]


def slice_image(plane: np.ndarray, chain: SliceChain = OFFICIAL_CHAIN) -> Image.Image:
    """Step 7 before JPEG: one uint8 slice as a PIL image (mode L), rotated as the official script does."""
    return Image.fromarray(plane).rotate(chain.rotate_degrees, expand=True)


def jpeg_bytes(plane: np.ndarray, chain: SliceChain = OFFICIAL_CHAIN) -> bytes:
    """One slice encoded exactly as the official ``slice_{i:03d}.jpg`` file."""
    buffer = io.BytesIO()
    slice_image(plane, chain).save(buffer, format="JPEG", quality=chain.jpeg_quality)
    return buffer.getvalue()


def decoded_jpegs(planes: np.ndarray, chain: SliceChain = OFFICIAL_CHAIN) -> list[Image.Image]:
    """The slices as the official feature script sees them: JPEG-encoded, decoded, converted to RGB."""
    return [Image.open(io.BytesIO(jpeg_bytes(p, chain))).convert("RGB") for p in planes]


def write_slices(planes: np.ndarray, out: str | Path, chain: SliceChain = OFFICIAL_CHAIN) -> list[Path]:
    """Write ``slice_000.jpg ...`` into ``out`` (created); each file is written whole, then renamed in."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, plane in enumerate(planes):
        target = out / f"slice_{i:03d}.jpg"
        tmp = out / f".{target.name}.tmp"
        tmp.write_bytes(jpeg_bytes(plane, chain))
        tmp.replace(target)
        paths.append(target)
    return paths


def features_path_for(volume_path: str | Path, folder: str | Path | None = None) -> Path:
    """``<volume stem>_biomedclip_features.npy`` beside the volume, or in ``folder``."""
    from .cases import volume_stem

    volume_path = Path(volume_path)
    name = volume_stem(volume_path.name) + FEATURES_SUFFIX
    return (Path(folder) if folder is not None else volume_path.parent) / name


def read_features(path: str | Path, slices: int, dim: int) -> np.ndarray:
    """A precomputed ``(slices, dim)`` float32 feature file; anything else is a one-line error."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise VolumeError(f"is not a readable .npy feature file ({exc})", path) from exc
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.shape != (slices, dim) or not np.issubdtype(array.dtype, np.floating):
        raise VolumeError(
            f"slice features have shape {array.shape} {array.dtype}; expected ({slices}, {dim}) floats", path
        )
    if not np.isfinite(array).all():
        raise VolumeError("slice features hold NaN or infinite values", path)
    return np.ascontiguousarray(array, dtype=np.float32)
