"""Training augmentations checked against what they promise: intensity jitter is an affine map of the
voxel values within its bounds; the official set adds only rot90 / flips (a permutation of the voxels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsenet_search.train.data import augmentation


def _volume() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.random((1, 6, 8, 8)).astype(np.float32))


def _affine_fit(source: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``target ≈ a·source + b``: (a, b, max residual)."""
    a, b = np.polyfit(source.ravel(), target.ravel(), 1)
    return float(a), float(b), float(np.abs(a * source + b - target).max())


def _run(kind: str, seed: int, x: torch.Tensor) -> np.ndarray:
    out = augmentation(kind, seed)(x.clone())
    return np.asarray(out.as_tensor() if hasattr(out, "as_tensor") else out)


def test_none_is_no_augmentation() -> None:
    assert augmentation("none", 0) is None


def test_intensity_is_a_bounded_affine_map_in_place() -> None:
    x = _volume()
    changed = 0
    for seed in range(12):
        out = _run("intensity", seed, x)
        a, b, residual = _affine_fit(x.numpy(), out)
        assert residual < 1e-5 and 0.9 - 1e-6 <= a <= 1.1 + 1e-6 and abs(b) <= 0.1 + 1e-6
        changed += not np.allclose(out, x.numpy())
    assert changed >= 3  # each step fires with p = 0.5
    np.testing.assert_array_equal(_run("intensity", 5, x), _run("intensity", 5, x))  # seeded


FLIPS = [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]


def _flipped(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.flip(array, axes) if axes else array


def test_official_adds_only_rotations_and_flips() -> None:
    x = _volume()
    moved = 0
    for seed in range(16):
        out = _run("official", seed, x)
        a, b, residual = _affine_fit(np.sort(x.numpy(), axis=None), np.sort(out, axis=None))
        assert residual < 1e-5 and 0.9 - 1e-6 <= a <= 1.1 + 1e-6
        # undo the intensity map, then the result must be one of the rot90 / flip images of x
        geometric = (out - b) / a
        candidates = [_flipped(np.rot90(x.numpy(), r, axes=(2, 3)), axes) for r in range(4) for axes in FLIPS]
        assert any(np.allclose(geometric, c, atol=1e-4) for c in candidates), seed
        moved += not np.allclose(geometric, x.numpy(), atol=1e-4)
    assert moved >= 4


@pytest.mark.parametrize("kind", ["intensity", "official"])
def test_augmentations_keep_shape_and_dtype(kind: str) -> None:
    out = _run(kind, 3, _volume())
    assert out.shape == (1, 6, 8, 8) and out.dtype == np.float32
