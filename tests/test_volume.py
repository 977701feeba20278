"""NIfTI and .npy reading: geometry, HU, rescale, and every bad-input case as a typed one-line error."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import LPS_AFFINE, chest_hu

from hsenet_search.data.readers import read_volume
from hsenet_search.data.volume import Volume
from hsenet_search.errors import HSENetError, VolumeError


def test_real_nifti_geometry_and_hu(real_ct_nifti: Path) -> None:
    volume = read_volume(real_ct_nifti)
    assert volume.array.shape == (122, 101, 112)
    assert volume.array.dtype == np.float32
    assert volume.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert volume.orientation == "RAS"
    assert volume.source == str(real_ct_nifti)
    p1, p99 = np.percentile(volume.array, [1, 99])
    assert -1100 < p1 < -900  # air
    assert 0 < p99 < 1500  # soft tissue / bone
    assert volume.array.max() < 4000


def test_nifti_header_scaling_and_rescale_override(tmp_path: Path) -> None:
    raw = chest_hu().astype(np.int16)
    image = nib.Nifti1Image(raw, LPS_AFFINE)
    image.header.set_slope_inter(2.0, 5.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, str(path))

    header_scaled = read_volume(path)
    np.testing.assert_array_equal(header_scaled.array, raw.astype(np.float32) * 2 + 5)
    overridden = read_volume(path, rescale=(1.0, -1024.0))  # CT-RATE v1: ignore the header, use metadata
    np.testing.assert_array_equal(overridden.array, raw.astype(np.float32) - 1024)
    assert overridden.orientation == "LPS"
    assert overridden.spacing == pytest.approx((0.75, 0.75, 1.5))


def test_uncompressed_nifti_and_trailing_singleton_axis(tmp_path: Path) -> None:
    raw = chest_hu()
    path = tmp_path / "plain.nii"
    nib.save(nib.Nifti1Image(raw[..., None], LPS_AFFINE), str(path))  # (X, Y, Z, 1)
    volume = read_volume(path)
    assert volume.array.shape == raw.shape
    np.testing.assert_array_equal(volume.array, raw)


def test_npy_arrays_and_sidecar_affine(tmp_path: Path) -> None:
    array = np.random.default_rng(1).random((4, 6, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", array)
    np.save(tmp_path / "b.npy", array[None])
    a, b = read_volume(tmp_path / "a.npy"), read_volume(tmp_path / "b.npy")
    np.testing.assert_array_equal(a.array, array)
    np.testing.assert_array_equal(b.array, array)
    assert a.spacing == (1.0, 1.0, 1.0) and a.orientation == "RAS"

    (tmp_path / "a.json").write_text(json.dumps({"affine": LPS_AFFINE.tolist()}))
    with_sidecar = read_volume(tmp_path / "a.npy")
    assert with_sidecar.orientation == "LPS"
    assert with_sidecar.spacing == pytest.approx((0.75, 0.75, 1.5))


def test_volume_properties_follow_the_affine() -> None:
    affine = np.array([[0, 0, -2.0, 10], [0.5, 0, 0, 0], [0, -0.7, 0, 0], [0, 0, 0, 1]])
    volume = Volume(np.zeros((2, 3, 4), np.float32), affine, "x")
    assert volume.spacing == pytest.approx((0.5, 0.7, 2.0))
    assert volume.orientation == "AIL"
    resized = volume.with_spacing((1.0, 1.0, 1.0))
    assert resized.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert resized.orientation == "AIL"


def _write(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def _truncated(tmp_path: Path) -> Path:
    path = _write(tmp_path / "truncated.nii.gz", chest_hu((64, 64, 32)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_plain(tmp_path: Path) -> Path:
    path = _write(tmp_path / "truncated.nii", chest_hu())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])
    return path


def _text_as_nifti(tmp_path: Path) -> Path:
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is not an image\n")
    return path


def _gzipped_text(tmp_path: Path) -> Path:
    path = tmp_path / "notes2.nii.gz"
    path.write_bytes(gzip.compress(b"just some text, not a NIfTI header" * 20))
    return path


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.txt"
    path.write_text("hello")
    return path


def _image_2d(tmp_path: Path) -> Path:
    return _write(tmp_path / "slice.nii.gz", np.zeros((16, 16), np.int16))


def _image_flat(tmp_path: Path) -> Path:
    return _write(tmp_path / "flat.nii.gz", np.zeros((16, 16, 1), np.int16))


def _image_4d(tmp_path: Path) -> Path:
    return _write(tmp_path / "series.nii.gz", np.zeros((8, 8, 8, 3), np.int16))


def _all_nan(tmp_path: Path) -> Path:
    return _write(tmp_path / "nan.nii.gz", np.full((8, 8, 8), np.nan, np.float32))


def _some_nan(tmp_path: Path) -> Path:
    array = np.zeros((8, 8, 8), np.float32)
    array[1, 2, 3] = np.nan
    return _write(tmp_path / "somenan.nii.gz", array)


def _npy_2d(tmp_path: Path) -> Path:
    np.save(tmp_path / "plane.npy", np.zeros((8, 8), np.float32))
    return tmp_path / "plane.npy"


def _npy_5d(tmp_path: Path) -> Path:
    np.save(tmp_path / "batch.npy", np.zeros((2, 1, 4, 4, 4), np.float32))
    return tmp_path / "batch.npy"


def _npy_garbage(tmp_path: Path) -> Path:
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    return tmp_path / "garbage.npy"


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "absent.nii.gz"


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_truncated, "truncated"),
        (_truncated_plain, "cannot be read"),
        (_text_as_nifti, "not a NIfTI image"),
        (_gzipped_text, "not a NIfTI image"),
        (_text_file, "unsupported file type"),
        (_image_2d, "2D image"),
        (_image_flat, "2D image"),
        (_image_4d, "4D image"),
        (_all_nan, "entirely NaN"),
        (_some_nan, "1 NaN"),
        (_npy_2d, "expected (D, H, W)"),
        (_npy_5d, "expected (D, H, W)"),
        (_npy_garbage, "not a readable .npy"),
        (_missing, "no such file"),
    ],
)
def test_bad_volumes_raise_one_line_volume_errors(tmp_path: Path, make, problem: str) -> None:
    path = make(tmp_path)
    with pytest.raises(VolumeError) as info:
        read_volume(path)
    message = str(info.value)
    assert isinstance(info.value, HSENetError)
    assert message.startswith(str(path))
    assert problem in message
    assert "\n" not in message
