"""Preprocessing profiles (shape, range, orientation, equality with the official pipeline, hash) and cache."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import LPS_AFFINE, REPO_ROOT, chest_hu

from hsenet_search.data import preprocess
from hsenet_search.data.cache import PreprocessCache, default_cache_root
from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.preprocess import Profile, get_profile, preprocess_case, preprocess_file
from hsenet_search.data.readers import read_volume
from hsenet_search.data.volume import Volume
from hsenet_search.errors import ModelError


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_preprocess", REPO_ROOT / "benchmarks" / "bench_preprocess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real_volume(real_ct_nifti: Path) -> Volume:
    return read_volume(real_ct_nifti)


@pytest.mark.parametrize(
    ("name", "shape", "low"),
    [
        ("tiny", (1, 32, 64, 64), 0.0),
        ("hsenet", (1, 32, 256, 256), 0.0),
        ("ctclip", (1, 240, 480, 480), -1.0),
    ],
)
def test_profiles_on_real_ct(real_volume: Volume, name: str, shape: tuple, low: float) -> None:
    profile = get_profile(name)
    out = profile(real_volume)
    assert out.shape == shape == (1, *profile.output_shape)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert out.min() == pytest.approx(low, abs=1e-6) and out.max() == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite(out).all()
    assert 0.05 < (out > low + 0.05).mean() < 0.95  # anatomy, not a blank or saturated tensor


def test_ctclip_pads_with_minus_one_and_divides_by_1000(real_volume: Volume) -> None:
    out = get_profile("ctclip")(real_volume)[0]
    # The 3 mm example covers 366 x 303 x 336 mm; at 0.75 x 0.75 x 1.5 mm that is (z, x, y) = (224, 488, 404):
    # z is padded (240), x cropped (480), y padded (480) with -1 (air) on both sides.
    assert (out[:8] == -1).all() and (out[-8:] == -1).all()
    assert (out[:, :, :38] == -1).all() and (out[:, :, -38:] == -1).all()
    assert np.isclose(out, 0.04, atol=0.02).mean() > 0.01  # soft tissue ~40 HU -> 0.04


def test_hsenet_profile_equals_the_official_pipeline(real_ct_nifti: Path, tmp_path: Path) -> None:
    bench = _load_benchmark()
    small = tmp_path / "small.nii.gz"  # v1-style raw + intercept, LPS, CT-RATE-like spacing
    nib.save(
        nib.Nifti1Image(
            (chest_hu((48, 40, 20)).astype(np.int32) + 1024).astype(np.int16),
            LPS_AFFINE * [[1.4], [1.4], [2.0], [1]],
        ),
        str(small),
    )
    for path, rescale in ((real_ct_nifti, None), (small, (1.0, -1024.0))):
        ours = preprocess_file(path, "hsenet", rescale=rescale)
        reference = bench.reference_hsenet(path, rescale, "cpu")
        assert reference.shape == ours.shape
        assert np.abs(ours - reference).max() < 1e-5


def _marker_volume() -> tuple[np.ndarray, np.ndarray]:
    """Air around soft tissue, a bright block at the patient's left-posterior-superior corner (RAS order)."""
    hu = np.full((40, 40, 40), -1000.0, np.float32)
    hu[2:38, 2:38, 2:38] = 40.0
    hu[3:10, 3:10, 30:37] = 700.0  # RAS voxel order: low i = Left, low j = Posterior, high k = Superior
    return hu, np.eye(4)


def test_orientation_is_lps_then_z_x_y() -> None:
    hu, ras = _marker_volume()
    profile = get_profile("tiny")
    from_ras = profile(Volume(hu, ras, "ras"))
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_affine[:3, 3] = [39, 39, 0]
    from_lps = profile(Volume(np.ascontiguousarray(hu[::-1, ::-1, :]), lps_affine, "lps"))
    np.testing.assert_allclose(from_ras, from_lps, atol=1e-6)  # same anatomy, same tensor

    bright = np.argwhere(from_ras[0] > 0.9)  # (D, H, W) = (toward S, toward L, toward P)
    assert bright.size
    d, h, w = from_ras.shape[1:]
    assert (bright[:, 0] > d / 2).all() and (bright[:, 1] > h / 2).all() and (bright[:, 2] > w / 2).all()


def test_fortran_and_c_ordered_arrays_give_the_same_tensor(real_volume: Volume) -> None:
    c_order = Volume(np.ascontiguousarray(real_volume.array), real_volume.affine, "c")
    assert real_volume.array.flags.f_contiguous
    np.testing.assert_array_equal(get_profile("tiny")(c_order), get_profile("tiny")(real_volume))


def test_constant_volume_gives_zeros() -> None:
    out = get_profile("tiny")(Volume(np.full((20, 20, 10), -1000.0, np.float32), LPS_AFFINE, "air"))
    assert out.shape == (1, 32, 64, 64) and not out.any()


def test_profile_hash_is_stable_and_json_round_trips(tmp_path: Path) -> None:
    hsenet = get_profile("hsenet")
    # Pinned: changing a built-in chain changes this hash and so invalidates every cache entry and index.
    assert hsenet.hash == get_profile("hsenet").hash == "e9e478735fa50622"
    assert len({get_profile(n).hash for n in ("hsenet", "ctclip", "tiny")}) == 3
    stored = json.loads(hsenet.save(tmp_path / "preprocessing.json").read_text())
    assert stored["orientation"] == "LPS" and "z toward S" in stored["layout"]
    rebuilt = get_profile(stored)
    assert rebuilt.hash == hsenet.hash and rebuilt.to_dict() == hsenet.to_dict()

    renamed = Profile.from_dict({**stored, "name": "mine", "description": "x"})
    assert renamed.hash == hsenet.hash  # the name is not part of the chain
    changed = {**stored, "steps": [*stored["steps"][:-1], {"op": "orientation", "axcodes": "SPL"}]}
    changed.pop("hash")
    assert Profile.from_dict(changed).hash != hsenet.hash


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"hash": "0" * 16}, "does not match its steps"),
        ({"steps": [{"op": "sharpen"}]}, "unknown preprocessing step 'sharpen'"),
        ({"steps": [{"op": "window", "a_min": 1}]}, "bad arguments"),
        ({"format_version": 99}, "format_version 99"),
    ],
)
def test_bad_profile_configs(config: dict, problem: str) -> None:
    stored = {**get_profile("tiny").to_dict(), **config}
    if "steps" in config:
        stored.pop("hash")
    with pytest.raises(ModelError, match=problem):
        get_profile(stored)
    with pytest.raises(ModelError, match="unknown preprocessing profile"):
        get_profile("huge")


@pytest.fixture
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = preprocess.read_volume

    def counting(path, **kwargs):
        calls.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(preprocess, "read_volume", counting)
    return calls


def test_cache_never_decodes_a_file_twice(tmp_path: Path, counted_reads: list[str]) -> None:
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(chest_hu(), LPS_AFFINE), str(path))
    cache = PreprocessCache(tmp_path / "cache")
    first = preprocess_file(path, "tiny", cache=cache)
    second = preprocess_file(path, "tiny", cache=PreprocessCache(tmp_path / "cache"))  # a new process, same disk
    assert len(counted_reads) == 1
    np.testing.assert_array_equal(first, second)
    entries = list((tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 1 and entries[0].parts[-3] == get_profile("tiny").hash
    assert not list((tmp_path / "cache").rglob("*.tmp"))

    preprocess_file(path, "tiny", rescale=(1.0, -1024.0), cache=cache)  # another rescale is another entry
    preprocess_file(path, "hsenet", cache=cache)  # another profile too
    assert len(counted_reads) == 3
    nib.save(nib.Nifti1Image(chest_hu(seed=5), LPS_AFFINE), str(path))  # new content under the same name
    changed = preprocess_file(path, "tiny", cache=cache)
    assert len(counted_reads) == 4 and not np.array_equal(changed, first)


def test_cache_recomputes_an_unreadable_entry(tmp_path: Path, counted_reads: list[str]) -> None:
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(chest_hu(), LPS_AFFINE), str(path))
    cache = PreprocessCache(tmp_path / "cache")
    good = preprocess_file(path, "tiny", cache=cache)
    entry = cache.entry_path(path, get_profile("tiny"))
    entry.write_bytes(b"broken")
    np.testing.assert_array_equal(preprocess_file(path, "tiny", cache=cache), good)
    assert len(counted_reads) == 2


def test_cache_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HSENET_CACHE", str(tmp_path / "elsewhere"))
    assert PreprocessCache().root == tmp_path / "elsewhere"
    monkeypatch.delenv("HSENET_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "hsenet-search" / "preprocessed"


def test_preprocess_case_applies_rescale_and_metadata_spacing(tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "ds", metadata_spacing=(1.5, 3.0))
    case = open_dataset(root)[0]
    cache = PreprocessCache(tmp_path / "cache")
    out = preprocess_case(case, "tiny", cache=cache)
    hu = chest_hu(seed=0).astype(np.float32)
    expected = get_profile("tiny")(Volume(hu, np.diag([-1.5, -1.5, 3.0, 1.0]), "x"))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(preprocess_case(case, "tiny", cache=cache), out)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1


def _windowed(hu: np.ndarray, affine: np.ndarray):
    """The MetaTensor the fused resampling step receives inside the hsenet chain."""
    profile = get_profile("hsenet")
    head = preprocess.Compose(profile._transform.transforms[:2])  # orientation + window
    return head(preprocess._as_metatensor(Volume(hu.astype(np.float32), affine, "test")))


@pytest.mark.parametrize(
    ("case", "spacing", "fast"),
    [
        ("chest", (0.7, 0.7, 1.0), True),  # air corners and a bone plateau: computed separably
        ("chest", (0.3, 0.3, 0.5), True),  # downsampling > 2x: some source voxels carry no weight
        ("chest", (2.0, 2.0, 3.0), True),  # upsampling
        ("no_air", (0.7, 0.7, 1.0), False),  # minimum above the window floor: explicit path
        ("no_plateau", (0.7, 0.7, 1.0), False),  # single brightest voxel: explicit path
    ],
)
def test_separable_resampling_equals_the_explicit_chain(case: str, spacing: tuple, fast: bool) -> None:
    hu = chest_hu((40, 36, 24), seed=3).astype(np.float32)
    if case == "no_air":
        hu = np.maximum(hu, -900.0)
    if case == "no_plateau":
        hu = np.minimum(hu, 100.0)
        hu[20, 10, 12] = 150.0
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    step = preprocess.ResampleMinMaxForegroundResize((1.5, 0.75, 0.75), (32, 256, 256))
    calls = []
    explicit = step.explicit
    step.explicit = lambda img: calls.append(1) or explicit(img)
    image = _windowed(hu, affine)
    fused = step(image)
    reference = explicit(image)
    assert (not calls) == fast
    assert fused.shape == reference.shape == (1, 32, 256, 256)
    np.testing.assert_allclose(fused.as_tensor().numpy(), reference.as_tensor().numpy(), atol=1e-5)
    np.testing.assert_allclose(fused.affine.numpy(), reference.affine.numpy(), atol=1e-6)
