"""The official HSENet 2D slice pipeline (specs §4.2) against an independent reference written from the
spec with numpy and PIL only (no project code), on the real CT and on a synthetic CT-RATE v1 volume."""

from __future__ import annotations

import io
import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.readers import read_volume
from hsenet_search.data.resolve import resolve_input
from hsenet_search.data.slices import OFFICIAL_CHAIN, jpeg_bytes, official_slices
from hsenet_search.data.volume import Volume
from hsenet_search.errors import VolumeError


# ------------------------------------------------------------------------------ the reference (spec §4.2)
def _torch_linspace_float32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace`` in float32 as its CPU kernel computes it (first half from start, second from
    end)."""
    step = np.float32((np.float32(end) - np.float32(start)) / np.float32(steps - 1))
    out = np.empty(steps, dtype=np.float32)
    half = steps // 2
    for i in range(steps):
        out[i] = (
            np.float32(start) + step * np.float32(i) if i < half else np.float32(end) - step * np.float32(steps - i - 1)
        )
    return out


def _linear_axis(v: np.ndarray, axis: int, size: int) -> np.ndarray:
    """1D linear resize along ``axis`` with PyTorch's ``align_corners=False`` source coordinates."""
    n = v.shape[axis]
    scale = n / size
    src = np.maximum((np.arange(size) + 0.5) * scale - 0.5, 0.0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w1 = src - i0
    w0 = 1.0 - w1
    shape = [1] * v.ndim
    shape[axis] = size
    return np.take(v, i0, axis=axis) * w0.reshape(shape) + np.take(v, i1, axis=axis) * w1.reshape(shape)


def numpy_trilinear(v: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Separable linear resizes, last axis first (the order in which PyTorch's trilinear kernel sums)."""
    for axis in (2, 1, 0):
        v = _linear_axis(v, axis, sizes[axis])
    return v


def torch_trilinear(v: np.ndarray, sizes: list[int]) -> np.ndarray:
    """The op the official script calls: ``F.interpolate(trilinear, align_corners=False)`` in float64."""
    import torch
    import torch.nn.functional as F

    out = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(v))[None, None],
        size=tuple(sizes),
        mode="trilinear",
        align_corners=False,
    )
    return out[0, 0].numpy()


def reference_slices(
    stored_xyz: np.ndarray, slope: float, intercept: float, xy: float, z: float, resize=torch_trilinear
) -> list:
    """CT-RATE_nii_to_2D_slices.py from the spec: the 32 rotated uint8 PIL images before JPEG."""
    v = stored_xyz.astype(np.float64) * slope + intercept
    if v.shape[2] < v.shape[0]:
        v = v.transpose(2, 0, 1)
    v = np.clip(v, -1000, 1000) / 1000
    sizes = [int(n * c / t) for n, c, t in zip(v.shape, (z, xy, xy), (1.5, 0.75, 0.75), strict=True)]
    v = resize(v, sizes)
    if v.shape[0] >= 32:
        v = v[_torch_linspace_float32(0, v.shape[0] - 1, 32).astype(np.int64)]
    else:
        v = resize(v, [32, *v.shape[1:]])
    images = []
    for s in v:
        lo, hi = s.min(), s.max()
        u8 = ((s - lo) / (hi - lo) * 255).astype(np.uint8) if hi > lo else np.zeros(s.shape, np.uint8)
        images.append(Image.fromarray(u8).rotate(-90, expand=True))
    return images


def _assert_pixel_equal(project: np.ndarray, reference: list, *, flips: float = 0.0) -> None:
    """Equal uint8 pixels; ``flips``: the fraction of pixels allowed one level off (numpy resize: float64 sums
    done without the fused multiply-adds PyTorch's kernel may use land on the other side of a truncation)."""
    assert project.shape[0] == len(reference) == 32
    for i, (plane, ref) in enumerate(zip(project, reference, strict=True)):
        ours = np.asarray(Image.fromarray(plane).rotate(-90, expand=True))
        expected = np.asarray(ref)
        assert ours.shape == expected.shape, f"slice {i}"
        diff = ours.astype(int) - expected.astype(int)
        assert np.abs(diff).max(initial=0) <= 1 and np.count_nonzero(diff) <= flips * diff.size, (
            f"slice {i}: {np.count_nonzero(diff)} pixels differ"
        )


# ------------------------------------------------------------------------------ inputs
def _lps_copy(src, dst):
    """The real CT (RAS) rewritten in CT-RATE's LPS voxel order: x and y reversed, same world geometry."""
    image = nib.load(str(src))
    data = np.asanyarray(image.dataobj)
    affine = image.affine.copy()
    for axis in (0, 1):
        affine[:, 3] = affine[:, 3] + affine[:, axis] * (data.shape[axis] - 1)
        affine[:, axis] = -affine[:, axis]
    flipped = np.ascontiguousarray(data[::-1, ::-1, :])
    nib.save(nib.Nifti1Image(flipped, affine), str(dst))
    return dst, flipped, image


def test_real_ct_slices_match_the_reference(real_ct_nifti, tmp_path):
    path, stored, original = _lps_copy(real_ct_nifti, tmp_path / "lps.nii.gz")
    assert "".join(nib.aff2axcodes(nib.load(str(path)).affine)) == "LPS"
    volume = read_volume(path)
    sx, sy, sz = volume.spacing
    raw = original.dataobj
    slope = float(raw.slope) if np.isfinite(raw.slope) else 1.0
    inter = float(raw.inter) if np.isfinite(raw.inter) else 0.0
    planes = official_slices(volume)
    _assert_pixel_equal(planes, reference_slices(np.asarray(stored, dtype=np.float64), slope, inter, sx, sz))
    _assert_pixel_equal(
        planes,
        reference_slices(np.asarray(stored, dtype=np.float64), slope, inter, sx, sz, resize=numpy_trilinear),
        flips=1e-4,
    )
    # the original RAS file gives the same slices: the chain brings every volume to CT-RATE's LPS order
    np.testing.assert_array_equal(official_slices(read_volume(real_ct_nifti)), official_slices(volume))


def _tall_volume(seed: int = 3) -> np.ndarray:
    """Stored int16 values of a CT-like volume (HU + 1024) tall enough to keep more than 32 slices."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.linspace(-1, 1, 40), np.linspace(-1, 1, 36), np.linspace(-1, 1, 30), indexing="ij")
    hu = np.where(x**2 / 0.8 + y**2 / 0.6 < 1, 40.0, -1000.0)
    hu = np.where(((np.abs(x) - 0.35) / 0.25) ** 2 + (y / 0.4) ** 2 < 1 + 0.3 * z, -850.0, hu)
    hu += rng.normal(0, 30, hu.shape)
    return (hu + 1024).round().astype(np.int16)


def _ctrate_v1(root, stored, header_zooms, meta_xy, meta_z):
    from hsenet_search.data import ctrate

    name = "valid_7_a_1.nii.gz"
    path = root / "valid" / ctrate.volume_relpath(name)
    path.parent.mkdir(parents=True)
    nib.save(
        nib.Nifti1Image(stored, np.diag([-header_zooms[0], -header_zooms[1], header_zooms[2], 1.0])),
        str(path),
    )
    ctrate.write_reports_csv(
        ctrate.reports_csv(root, "valid"),
        [{"VolumeName": name, "Findings_EN": "Lungs clear.", "Impressions_EN": "Normal."}],
    )
    ctrate.write_metadata_csv(
        ctrate.metadata_csv(root, "valid"),
        [
            {
                "VolumeName": name,
                "RescaleSlope": 1,
                "RescaleIntercept": -1024,
                "XYSpacing": f"[{meta_xy}, {meta_xy}]",
                "ZSpacing": meta_z,
            }
        ],
    )
    return path


def test_synthetic_ctrate_slices_use_metadata_rescale_and_spacing(tmp_path):
    stored = _tall_volume()
    path = _ctrate_v1(tmp_path / "ds", stored, (2.0, 2.0, 5.0), 0.9, 2.0)  # header and metadata disagree
    case = resolve_input(path)
    assert case.rescale == (1.0, -1024.0) and case.spacing == (0.9, 0.9, 2.0)
    reference = reference_slices(stored, 1.0, -1024.0, 0.9, 2.0)
    from hsenet_search.data.dataset import load_case_volume

    planes = official_slices(load_case_volume(case), case.spacing)
    _assert_pixel_equal(planes, reference)
    _assert_pixel_equal(planes, reference_slices(stored, 1.0, -1024.0, 0.9, 2.0, resize=numpy_trilinear), flips=1e-4)
    assert np.asarray(reference[0]).shape == (int(36 * 0.9 / 0.75), int(40 * 0.9 / 0.75))
    # fewer than 32 resampled slices: the depth is interpolated to 32
    short = _ctrate_v1(tmp_path / "short", stored[:, :, :10], (2.0, 2.0, 2.0), 0.9, 2.0)
    case = resolve_input(short)
    _assert_pixel_equal(
        official_slices(load_case_volume(case), case.spacing),
        reference_slices(stored[:, :, :10], 1.0, -1024.0, 0.9, 2.0),
    )


def test_slices_cli_writes_the_official_jpegs(tmp_path):
    from hsenet_search.cli.data import app

    stored = _tall_volume(5)
    path = _ctrate_v1(tmp_path / "ds", stored, (0.9, 0.9, 2.0), 0.9, 2.0)
    runner = CliRunner()
    out = tmp_path / "slices"
    result = runner.invoke(app, ["slices", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"slice_{i:03d}.jpg" for i in range(32)]
    for i, ref in enumerate(reference_slices(stored, 1.0, -1024.0, 0.9, 2.0)):
        buffer = io.BytesIO()
        ref.save(buffer, format="JPEG", quality=95)  # the official script's save call
        data = (out / names[i]).read_bytes()
        assert data == buffer.getvalue(), names[i]
    # an existing non-empty --out is refused in one line; a whole dataset gets one folder per volume
    result = runner.invoke(app, ["slices", str(path), "--out", str(out)])
    assert result.exit_code != 0 and "pass --overwrite" in str(result.exception)
    result = runner.invoke(app, ["slices", str(tmp_path / "ds"), "--out", str(tmp_path / "all")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "all" / "valid_7_a_1").iterdir()) == names
    assert len(open_dataset(tmp_path / "ds")) == 1


def test_chain_is_hashed_and_degenerate_affines_are_refused():
    info = OFFICIAL_CHAIN.to_dict()
    assert info["hash"] == OFFICIAL_CHAIN.hash and len(info["hash"]) == 16
    assert json.loads(json.dumps(info))["jpeg_quality"] == 95
    volume = Volume(np.zeros((40, 40, 40), np.float32), np.diag([0.75, 0.75, 0.0, 1.0]), "flat.nii.gz")
    with pytest.raises(VolumeError, match="voxel spacing 0 mm on axis 2"):
        official_slices(volume)
    constant = Volume(np.full((40, 40, 40), -1000.0, np.float32), np.diag([-0.75, -0.75, 1.5, 1.0]), "air")
    assert not official_slices(constant).any()  # a constant slice is all zeros
    assert Image.open(io.BytesIO(jpeg_bytes(np.zeros((4, 6), np.uint8)))).size == (4, 6)  # rotated -90
