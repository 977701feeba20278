"""DICOM series folders: slice order by position, spacing from positions, rescale, series checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from hsenet_search.data.readers import read_volume
from hsenet_search.data.volume import Volume
from hsenet_search.errors import VolumeError


@pytest.fixture(scope="module")
def real_series(real_ct_dicom: Path) -> Volume:
    return read_volume(real_ct_dicom)


def _slices(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def test_real_series_geometry_and_hu(real_series: Volume) -> None:
    volume = real_series
    assert volume.array.shape == (512, 512, 20)
    assert volume.array.dtype == np.float32
    # 3 mm thick slices 2 mm apart: the spacing comes from the positions, not SliceThickness.
    assert volume.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert volume.orientation == "LPS"
    assert volume.array.min() == -1024.0  # RescaleIntercept -1024 applied to stored 0 (outside the FOV)
    p1, p99 = np.percentile(volume.array, [1, 99])
    assert p1 < -900 and 0 < p99 < 1500


def test_slices_sorted_by_position_along_the_normal(real_ct_dicom: Path, real_series: Volume) -> None:
    volume = real_series
    slices = sorted(_slices(real_ct_dicom), key=lambda ds: float(ds.ImagePositionPatient[2]))
    for k in (0, 7, 19):  # ascending z: axis 2 runs inferior -> superior
        ds = slices[k]
        expected = ds.pixel_array.T.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(volume.array[:, :, k], expected)
    lowest = [float(v) for v in slices[0].ImagePositionPatient]
    # Affine origin is the first (lowest) slice's position, converted from DICOM LPS to RAS.
    assert volume.affine[:3, 3] == pytest.approx([-lowest[0], -lowest[1], lowest[2]])


def test_order_ignores_file_names_and_other_files(real_ct_dicom: Path, real_series: Volume, tmp_path: Path) -> None:
    files = sorted(real_ct_dicom.glob("*.dcm"))
    for i, path in enumerate(files):  # reversed names: name order is now opposite to position order
        shutil.copy(path, tmp_path / f"{len(files) - i:03d}.dcm")
    (tmp_path / "README.txt").write_text("export notes")
    np.testing.assert_array_equal(read_volume(tmp_path).array, real_series.array)


def test_rescale_argument_overrides_slice_tags(real_ct_dicom: Path, tmp_path: Path) -> None:
    for path in sorted(real_ct_dicom.glob("*.dcm"))[:3]:
        shutil.copy(path, tmp_path / path.name)
    tagged = read_volume(tmp_path)
    raw = read_volume(tmp_path, rescale=(1.0, 0.0))
    np.testing.assert_array_equal(tagged.array, raw.array - 1024.0)


def _copy_some(src: Path, dst: Path, n: int) -> list[Path]:
    out = []
    for path in sorted(src.glob("*.dcm"))[:n]:
        out.append(Path(shutil.copy(path, dst / path.name)))
    return out


def test_mixed_series_is_rejected(real_ct_dicom: Path, tmp_path: Path) -> None:
    copied = _copy_some(real_ct_dicom, tmp_path, 4)
    ds = pydicom.dcmread(copied[-1])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(copied[-1])
    with pytest.raises(VolumeError, match="mixes 2 DICOM series") as info:
        read_volume(tmp_path)
    assert str(info.value).startswith(str(tmp_path))


def test_single_slice_and_duplicates_are_rejected(real_ct_dicom: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    (one,) = _copy_some(real_ct_dicom, single, 1)
    with pytest.raises(VolumeError, match="single 2D DICOM slice"):
        read_volume(single)
    with pytest.raises(VolumeError, match="single DICOM slice"):
        read_volume(one)

    dup = tmp_path / "dup"
    dup.mkdir()
    first = _copy_some(real_ct_dicom, dup, 2)[0]
    shutil.copy(first, dup / "copy_of_first.dcm")
    with pytest.raises(VolumeError, match="share one ImagePositionPatient"):
        read_volume(dup)


def test_missing_slices_and_empty_folder_are_rejected(real_ct_dicom: Path, tmp_path: Path) -> None:
    gappy = tmp_path / "gappy"
    gappy.mkdir()
    files = sorted(real_ct_dicom.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for path in files[:3] + files[8:10]:  # a 5-slice hole in the middle
        shutil.copy(path, gappy / path.name)
    with pytest.raises(VolumeError, match="irregular slice spacing"):
        read_volume(gappy)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(VolumeError, match="no DICOM image slices"):
        read_volume(empty)
