"""Stored slice ↔ model depth bin: hand-made affines, and the real ``tiny`` profile vs a hand derivation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from hsenet_search.data.depth import DepthBins, DepthGeometry
from hsenet_search.data.preprocess import get_profile, preprocess_case_geometry
from hsenet_search.data.resolve import resolve_input
from hsenet_search.data.volume import Volume
from hsenet_search.models import create_model
from hsenet_search.models.configs import get_config


def test_bins_follow_hand_made_affines_with_a_flipped_stored_axis():
    # stored slice k lies at world z = 100 - 2k (third axis toward inferior); model voxel d at z = 4d + 2
    stored = [[-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -2, 100], [0, 0, 0, 1]]
    model = [[0, 0, -1, 0], [0, -1, 0, 0], [4, 0, 0, 2], [0, 0, 0, 1]]
    bins = DepthBins(DepthGeometry.of(stored, (10, 10, 50), model, (24, 8, 8)), patch_depth=4)
    assert bins.count == 6 and bins.bin_mm == pytest.approx(16.0)
    assert bins.geometry.slice_mm == pytest.approx(2.0)
    # d = (98 - 2k) / 4; bin = floor((d + 1/2) / 4)
    assert bins.model_depth(3) == pytest.approx(23.0)
    ks = (0, 1, 2, 3, 10, 41, 42, 43, 49)
    assert [bins.bin_of_slice(k) for k in ks] == [None, None, None, 5, 5, 1, 1, 0, 0]
    # the centre of bin 5 is d = 21.5, z = 88, k = 6, image 7
    assert bins.slice_of_bin(5) == pytest.approx(6.0)
    assert bins.image_number(5) == 7
    assert bins.image_number(0) == 47  # d = 1.5 -> z = 8 -> k = 46
    assert DepthGeometry.from_json(bins.geometry.to_json()) == bins.geometry


def _cylinder(shape=(40, 40, 64)) -> np.ndarray:
    x = np.linspace(-1, 1, shape[0])[:, None, None]
    y = np.linspace(-1, 1, shape[1])[None, :, None]
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to(x**2 + y**2 < 0.6, shape)] = 40.0
    hu[np.broadcast_to(x**2 + (y - 0.4) ** 2 < 0.02, shape)] = 700.0
    return hu


def test_tiny_profile_geometry_matches_a_hand_derivation():
    """64 slices of 5 mm: resampled to floor(64·5/3) = 106 slices of 3 mm (align_corners=False:
    k = (r + ½)·64/106 − ½), nothing to crop along z (every slice has body), resized to 32
    (r = (d + ½)·106/32 − ½); so k = 2d + ½, a model voxel is 10 mm and a 4-voxel bin 40 mm."""
    affine = np.diag([-3.0, -3.0, 5.0, 1.0])
    affine[:3, 3] = (10.0, -20.0, -300.0)
    array, geometry = get_profile("tiny").apply(Volume(_cylinder(), affine, "cylinder"))
    assert array.shape == (1, 32, 64, 64)
    bins = DepthBins(geometry, patch_depth=4)
    assert geometry.depth_mm == pytest.approx(10.0)
    assert bins.bin_mm == pytest.approx(40.0)
    for k in (0.5, 10.5, 33.0, 62.5):
        assert bins.model_depth(k) == pytest.approx((k - 0.5) / 2, abs=1e-6)
    # bin b holds stored slices 8b .. 8b + 7
    assert [bins.bin_of_slice(k) for k in range(64)] == [k // 8 for k in range(64)]
    for b in range(8):
        assert bins.slice_of_bin(b) == pytest.approx(8 * b + 3.5, abs=1e-6)
        assert bins.image_number(b) in (8 * b + 4, 8 * b + 5)


def test_geometry_is_cached_beside_the_tensor(tmp_path):
    from hsenet_search.data.cache import PreprocessCache

    path = tmp_path / "vol.nii.gz"
    affine = np.diag([-3.0, -3.0, 5.0, 1.0])
    nib.save(nib.Nifti1Image(_cylinder().astype(np.int16), affine), str(path))
    cache = PreprocessCache(tmp_path / "cache")
    case = resolve_input(path)
    first = preprocess_case_geometry(case, "tiny", cache=cache)
    assert list((tmp_path / "cache").rglob("*.geometry.json"))
    again = preprocess_case_geometry(case, "tiny", cache=cache)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    assert DepthBins(again[1], 4).bin_of_slice(63) == 7


def test_localisation_head_shapes_and_copy_init():
    model = create_model("tiny")
    assert not model.has_localisation_head
    with pytest.raises(Exception, match="no localisation head"):
        model.encode_depths(torch.zeros(1, 1, 32, 64, 64))
    model.add_localisation_head()
    stage = model.stages["stage1"]
    assert torch.equal(stage.loc_language_proj.weight, stage.mm_language_proj.weight)
    depths = model.encode_depths(torch.rand(2, 1, 32, 64, 64))
    assert depths.shape == (2, 8, 128) and model.depth_patch == 4
    assert torch.allclose(depths.norm(dim=-1), torch.ones(2, 8), atol=1e-5)
    assert model.encode_snippets(["a nodule", "effusion"]).shape == (2, 128)
    assert model.config.to_dict()["localisation"] is True
    trained = [id(p) for p in model.tower_parameters("stage1") + model.localisation_parameters()]
    assert len(trained) == len(set(trained))  # the head is trained once, by the localisation loss
    assert "localisation" not in get_config("tiny").to_dict()  # older configs keep their fingerprint


def test_head_survives_save_and_load(tmp_path):
    from hsenet_search.models import load_model

    model = create_model("tiny")
    model.add_localisation_head()
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.has_localisation_head and loaded.fingerprint == model.fingerprint
    x = torch.rand(1, 1, 32, 64, 64)
    torch.testing.assert_close(loaded.encode_depths(x), model.encode_depths(x))


def test_a_model_without_a_packer_gets_a_head_by_fine_tuning(tmp_path):
    """Imported official checkpoints have no Spatial Packer (packer_out_dim None): the fine-tune path adds
    one spanning each depth slab, and the snippet projection starts as a copy of the language projection."""
    from hsenet_search.models import load_model
    from hsenet_search.models.clip import HSENetCLIP

    model = HSENetCLIP(get_config("tiny").replace(packer_out_dim=None))
    assert all(stage.packer is None for stage in model.stages.values())
    model.add_localisation_head()
    assert model.config.packer_out_dim == model.config.projection_dim and model.config.packer_kernel == (1, 4, 4)
    assert model.encode_depths(torch.rand(1, 1, 32, 64, 64)).shape == (1, 8, 128)
    model.save_pretrained(tmp_path / "ft")
    assert load_model(tmp_path / "ft").has_localisation_head
