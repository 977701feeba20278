"""One road from an input to an embedding: queries take the index build's road, the official 2E3 tower gets
BiomedCLIP features of the official 2D slices (checked against a plain-torch reference of the whole official
inference path), the 2E3 gates reported are the ones applied, and orientation is verified, not assumed."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import nibabel as nib
import numpy as np
import pytest
import test_official_import as official_ckpt
import torch
from conftest import LPS_AFFINE, chest_hu
from PIL import Image
from test_official_slices import reference_slices

from hsenet_search.data.readers import read_volume
from hsenet_search.data.resolve import report_text, resolve_input, truncate_sentences
from hsenet_search.embedding import embed_cases, embed_input
from hsenet_search.errors import ModelError, VolumeError
from hsenet_search.models import load_model
from hsenet_search.models.official import load_official

TRUNK_SIZE, TRUNK_DIM = 160, 64  # timm's small "test_vit": 160 px input, 64-d CLS
MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)


# ------------------------------------------------------------------------------ query road == index road
def test_ctrate_query_finds_itself_whatever_its_header_says(tmp_path, make_ctrate):
    from hsenet_search.engine import SearchEngine
    from hsenet_search.index.builder import BuildConfig, build_index

    # metadata spacing double the header's: only the metadata road reproduces the index's vectors
    root = make_ctrate(tmp_path / "ds", metadata_spacing=(1.5, 3.0))
    build_index(BuildConfig(data=str(root), out=str(tmp_path / "index"), workers=0, batch_size=4), progress=False)
    engine = SearchEngine.open(tmp_path / "index")
    assert engine.manifest.report_text == "findings+impression"
    for row in engine.metadata.itertuples():
        result = engine.search_volume(row.path, k=1, collapse=False)
        assert result.hits[0].volume_name == row.volume_name
        assert result.hits[0].score >= 0.9999
        header_road = dataclasses.replace(resolve_input(row.path), spacing=None)
        vec = embed_input(engine.model, header_road)[0]
        query = engine.encode_volume(row.path)[0]
        assert float(vec @ query) < 0.9999  # the header's spacing really gives another vector
    # the report text is the model's protocol unless the build overrides it; the manifest records it
    import pandas as pd

    build_index(BuildConfig(data=str(root), out=str(tmp_path / "f"), workers=0, report_text="findings"), progress=False)
    engine = SearchEngine.open(tmp_path / "f")
    assert engine.manifest.report_text == "findings"
    texts = pd.read_parquet(tmp_path / "f" / "reports.parquet")["text"].tolist()
    assert texts and all(t.startswith("Findings of") and "Impression" not in t for t in texts)


def test_report_text_protocols_and_official_truncation():
    assert report_text("Lungs clear.", "Normal.", "findings") == "Lungs clear."
    assert report_text("", "Normal.", "findings") == "Normal."
    assert report_text("Lungs clear.", "Normal.", "impression") == "Normal."
    assert report_text("Lungs clear.", "Normal.", "findings+impression") == "Lungs clear. Normal."
    import random

    text = "First. Second one. Third one here. Fourth."

    def words(t: str) -> int:
        return len(t.split())

    short = truncate_sentences(text, words, 5, random.Random(0))
    assert short.startswith("First.") and words(short) <= 5 and short != text
    assert truncate_sentences(text, words, 50, random.Random(0)) == text


# ------------------------------------------------------------------------------ official 2E3 end to end
def _biomedclip_folder(folder):
    """A BiomedCLIP-format open_clip folder (timm ViT trunk, linear head), random weights."""
    from open_clip.timm_model import TimmModel

    torch.manual_seed(11)
    visual = TimmModel("test_vit", embed_dim=24, image_size=TRUNK_SIZE, pool="", proj="linear")
    folder.mkdir()
    torch.save(
        {"visual." + k: v for k, v in visual.state_dict().items()} | {"logit_scale": torch.tensor(4.6)},
        folder / "open_clip_pytorch_model.bin",
    )
    (folder / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": {
                    "embed_dim": 24,
                    "vision_cfg": {
                        "timm_model_name": "test_vit",
                        "timm_model_pretrained": False,
                        "timm_pool": "",
                        "timm_proj": "linear",
                        "image_size": TRUNK_SIZE,
                    },
                },
                "preprocess_cfg": {"mean": list(MEAN), "std": list(STD)},
            }
        )
    )
    return visual.trunk.eval()


def _reference_preprocess(img: Image.Image) -> torch.Tensor:
    """BiomedCLIP's eval preprocess written out: shorter side to S (bicubic), centre crop S, /255,
    normalise."""
    w, h = img.size
    if w <= h:
        size = (TRUNK_SIZE, int(TRUNK_SIZE * h / w))
    else:
        size = (int(TRUNK_SIZE * w / h), TRUNK_SIZE)
    img = img.resize(size, Image.BICUBIC)
    left, top = int(round((size[0] - TRUNK_SIZE) / 2.0)), int(round((size[1] - TRUNK_SIZE) / 2.0))
    img = img.crop((left, top, left + TRUNK_SIZE, top + TRUNK_SIZE))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


@pytest.fixture
def official_2e3(tmp_path, monkeypatch):
    monkeypatch.setattr(official_ckpt, "SLICE_DIM", TRUNK_DIM)
    ckpt = official_ckpt.write_official(tmp_path / "HSENet-2E3-CLIP", "m3d_clip_stage2")
    trunk = _biomedclip_folder(tmp_path / "biomedclip")
    return ckpt, tmp_path / "biomedclip", trunk


def test_official_2e3_embedding_of_a_raw_nifti_matches_the_reference(official_2e3, tmp_path, cli_main):
    ckpt, biomedclip, trunk = official_2e3
    hu = chest_hu((60, 50, 44), seed=2)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(hu, LPS_AFFINE), str(path))
    model = load_official(ckpt, biomedclip=biomedclip)
    assert model.slice_input == "biomedclip" and model.text_protocol == "findings"
    ours = torch.from_numpy(embed_input(model, path))

    # reference: official 2D slices -> JPEG q95 -> RGB -> BiomedCLIP preprocess -> trunk CLS -> 2E3 ->
    # projection
    images = []
    for ref in reference_slices(hu.astype(np.float64), 1.0, 0.0, 0.75, 1.5):
        buffer = io.BytesIO()
        ref.save(buffer, format="JPEG", quality=95)
        images.append(_reference_preprocess(Image.open(buffer).convert("RGB")))
    with torch.no_grad():
        slice_feats = trunk(torch.stack(images))
    assert slice_feats.shape == (32, TRUNK_DIM)
    volume = torch.from_numpy(model.profile(read_volume(path)))[None]  # 3D preprocessing: see test_preprocess.py
    state = official_ckpt._raw_state(ckpt)
    expected = official_ckpt.reference_vision(state, "", volume, slice_feats[None])
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)

    # precomputed features beside the volume are used as they are (the official inference input)
    result = cli_main("data", "slice-features", path, "--biomedclip", biomedclip)
    assert result.code == 0, result.err
    saved = np.load(tmp_path / "scan_biomedclip_features.npy")
    np.testing.assert_allclose(saved, slice_feats.numpy(), atol=1e-4)
    no_trunk = load_official(ckpt)
    assert no_trunk.slice_input == "features"
    torch.testing.assert_close(torch.from_numpy(embed_input(no_trunk, path)), expected, atol=1e-4, rtol=0)


def test_2e3_model_without_trunk_or_features_is_a_one_line_error(official_2e3, tmp_path):
    ckpt, _, _ = official_2e3
    path = tmp_path / "loose.nii.gz"
    nib.save(nib.Nifti1Image(chest_hu(), LPS_AFFINE), str(path))
    model = load_official(ckpt)
    with pytest.raises(ModelError, match="no BiomedCLIP trunk.*biomedclip_features.npy") as info:
        embed_input(model, path)
    assert "\n" not in str(info.value)
    batches = list(embed_cases(model, [path], workers=0))  # a batch job records it and carries on
    assert batches[0].indices == [] and "BiomedCLIP" in batches[0].failures[0][1]


def test_import_official_names_missing_options(official_2e3, tmp_path, cli_main):
    """Through ``main()``: a missing option is one line naming it, exit 2."""
    ckpt, biomedclip, _ = official_2e3
    bare = tmp_path / "bare"
    bare.mkdir()
    for item in ckpt.iterdir():
        if item.name in ("config.json", "model.safetensors"):
            (bare / item.name).write_bytes(item.read_bytes())
    bert = tmp_path / "bert-base-uncased"  # a separate BERT folder: tokenizer files and its config
    bert.mkdir()
    (bert / "vocab.txt").write_bytes((ckpt / "vocab.txt").read_bytes())
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_act": "gelu"}))
    cli_main("model", "import-official", bare, "--out", tmp_path / "a").one_line_error("--text-model")
    nowhere = ("--out", tmp_path / "b", "--text-model", bert, "--biomedclip", tmp_path / "nowhere")
    cli_main("model", "import-official", bare, *nowhere).one_line_error("--biomedclip")
    options = ("--text-model", bert, "--biomedclip", biomedclip, "--json")
    result = cli_main("model", "import-official", bare, "--out", tmp_path / "c", *options)
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["slice_input"] == "biomedclip" and summary["text_protocol"] == "findings"
    info = json.loads(cli_main("model", "info", tmp_path / "c", "--json").out)
    assert info["slice_input"] == "biomedclip" and info["text_protocol"] == "findings"
    assert info["slice_chain"]["jpeg_quality"] == 95


# ------------------------------------------------------------------------------ 2E3 gates
def test_patch_scores_are_the_gates_the_forward_applies():
    model = load_model()
    x = torch.rand(2, 1, *model.config.img_size, generator=torch.Generator().manual_seed(1))
    encoder = model.stages["stage2"].vision_encoder
    captured = {}
    handle = encoder.patch_score_norm.register_forward_hook(lambda m, i, o: captured.setdefault("gates", o))
    with torch.no_grad():
        model.vision_features(x, "stage2")
        reported = model.patch_scores(x)
    handle.remove()
    applied = captured["gates"].squeeze(-1)
    assert model.config.input_mean != 0.0  # the default model centres its input: the bug this guards against
    torch.testing.assert_close(reported, applied, atol=0, rtol=0)


# ------------------------------------------------------------------------------ orientation
def _reoriented(src, dst, flips: tuple[int, ...]):
    """The same scan with the voxel order reversed along ``flips`` (affine adjusted: same world geometry)."""
    image = nib.load(str(src))
    data = np.asanyarray(image.dataobj)
    affine = image.affine.copy()
    for axis in flips:
        affine[:, 3] = affine[:, 3] + affine[:, axis] * (data.shape[axis] - 1)
        affine[:, axis] = -affine[:, axis]
        data = np.flip(data, axis)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(dst))
    return dst


def test_embedding_is_unchanged_by_the_voxel_order(tmp_path, official_2e3):
    from hsenet_search.data.inspect import inspect_path

    lps = tmp_path / "lps.nii.gz"
    nib.save(nib.Nifti1Image(chest_hu((40, 36, 40), seed=4), LPS_AFFINE), str(lps))
    copies = {
        "LPS": lps,
        "RAS": _reoriented(lps, tmp_path / "ras.nii.gz", (0, 1)),
        "LAS": _reoriented(lps, tmp_path / "las.nii.gz", (1,)),
        "LPI": _reoriented(lps, tmp_path / "lpi.nii.gz", (2,)),
    }
    for code, path in copies.items():
        assert inspect_path(path)["orientation"] == code
    ckpt, biomedclip, _ = official_2e3
    for model in (load_model(), load_official(ckpt, biomedclip=biomedclip)):
        base = embed_input(model, lps)
        for code, path in copies.items():
            np.testing.assert_allclose(embed_input(model, path), base, atol=1e-5, err_msg=code)
    degenerate = tmp_path / "flat.nii.gz"
    affine = np.diag([0.75, 0.75, 1.5, 1.0])
    affine[:, 2] = affine[:, 0]  # z axis parallel to x: singular
    nib.save(nib.Nifti1Image(chest_hu((40, 36, 40)), affine), str(degenerate))
    with pytest.raises(VolumeError):
        embed_input(load_official(ckpt, biomedclip=biomedclip), degenerate)
    assert math.isfinite(float(base[0, 0]))
