"""HSENetCLIP: configs, shapes, fusion, text tower, MONAI-equivalent ViT, slice towers, persistence, fingerprints."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from hsenet_search.errors import ModelError
from hsenet_search.models import (
    DEFAULT_MODEL_DIR,
    HSENetCLIP,
    ModelConfig,
    create_model,
    get_config,
    load_model,
)
from hsenet_search.models.text_tower import clean_report_text, minilm_dir

REPORTS = [
    "Bilateral pleural effusion (moderate). No 'focal' consolidation.",
    "Lungs are clear. Heart size is normal.",
    "A 6 mm nodule in the right upper lobe.",
]


@pytest.fixture(scope="module")
def model() -> HSENetCLIP:
    torch.manual_seed(0)
    return create_model("tiny").eval()


@pytest.fixture(scope="module")
def volumes() -> torch.Tensor:
    return torch.rand(2, 1, 32, 64, 64, generator=torch.Generator().manual_seed(1))


def test_named_configs():
    base, tiny = get_config("base"), get_config("tiny")
    assert (base.img_size, base.patch_size, base.width, base.layers, base.heads, base.mlp_dim) == (
        (32, 256, 256),
        (4, 16, 16),
        768,
        12,
        12,
        3072,
    )
    assert base.num_patches == 2048 and base.preprocessing == "hsenet"
    assert tiny.img_size == (32, 64, 64) and tiny.preprocessing == "tiny"
    for cfg in (base, tiny):
        assert cfg.towers == ("stage1", "stage2") and cfg.embedding == "fusion"
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ModelError, match="not divisible by patch_size"):
        tiny.replace(patch_size=(4, 12, 12))
    with pytest.raises(ModelError, match="unknown model config 'huge'"):
        get_config("huge")
    with pytest.raises(ModelError, match="unknown model config field 'depth'"):
        tiny.replace(depth=3)
    with pytest.raises(ModelError, match="needs the stage2 tower"):
        tiny.replace(towers=("stage1",))
    with pytest.raises(ModelError, match="profile 'tiny' produces \\(32, 64, 64\\), not the model's img_size"):
        create_model("tiny", img_size=(16, 64, 64))
    small = create_model("tiny", towers=("stage1",), embedding="stage1", packer_out_dim=None)
    assert small.towers == ("stage1",) and small.slice_tower is None and small.embedding_dim == 128


def test_shapes_and_norms(model, volumes):
    fused = model.encode_volume(volumes)
    assert fused.shape == (2, model.embedding_dim) == (2, 2 * model.config.projection_dim)
    for emb in ("stage1", "stage2"):
        v = model.encode_volume(volumes, embedding=emb)
        assert v.shape == (2, model.config.projection_dim)
        torch.testing.assert_close(v.norm(dim=-1), torch.ones(2))
    text = model.encode_text(REPORTS)
    assert text.shape == (3, model.embedding_dim)
    torch.testing.assert_close(fused.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    assert model.encode_text([]).shape == (0, model.embedding_dim)
    torch.testing.assert_close(model.encode_text(REPORTS, batch_size=2), text, atol=1e-5, rtol=0)  # padding differs


def test_fusion_inner_product_is_mean_of_tower_cosines(model, volumes):
    v1, v2 = (model.encode_volume(volumes, embedding=e) for e in ("stage1", "stage2"))
    t1, t2 = (model.encode_text(REPORTS, embedding=e) for e in ("stage1", "stage2"))
    fused = model.encode_volume(volumes) @ model.encode_text(REPORTS).T
    torch.testing.assert_close(fused, (v1 @ t1.T + v2 @ t2.T) / 2)
    assert not torch.allclose(v1 @ t1.T, v2 @ t2.T)


def test_text_tower_is_minilm_mean_pooling_with_official_cleaning(model):
    from transformers import AutoModel, AutoTokenizer

    directory = minilm_dir()
    ref_model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    cleaned = [t.replace('"', "").replace("'", "").replace("(", "").replace(")", "") for t in REPORTS]
    batch = tok(cleaned, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
        pooled = model.text_pooled(REPORTS, "stage1")
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
    assert clean_report_text('a "b" (c) d\'s') == "a b c ds"
    torch.testing.assert_close(
        model.text_features_from_pooled(pooled, "stage2"),
        model.encode_text(REPORTS, embedding="stage2"),
        atol=1e-6,
        rtol=0,
    )
    assert torch.equal(model.encode_text(['no "focal" (acute) disease']), model.encode_text(["no focal acute disease"]))
    long_text = " ".join(["nodule"] * 600)
    assert model.text_tower("stage1").tokenize([long_text])["input_ids"].shape[1] == 256


def test_token_access(model, volumes):
    n, width = model.config.num_patches, model.config.width
    with torch.no_grad():
        for tower in ("stage1", "stage2"):
            tokens = model.vision_tokens(volumes, tower)
            assert tokens.shape == (2, n + 1, width)
            assert torch.equal(model.patch_tokens(volumes, tower), tokens[:, 1:])
            cls = model.stages[tower].mm_vision_proj(tokens[:, 0])
            torch.testing.assert_close(model.vision_features(volumes, tower), F.normalize(cls, dim=-1))
            packed = model.packed_tokens(volumes, tower)
            kernel = math.prod(model.config.packer_kernel)
            assert packed.shape == (2, n // kernel, model.config.packer_out_dim)
        slices = model.slice_features(volumes)
        assert slices.shape == (2, 32, model.config.slice_dim)
        scores = model.patch_scores(volumes)
        assert scores.shape == (2, n) and bool(((scores > 0) & (scores < 1)).all())
        # precomputed slice features are used instead of the tower's
        other = model.encode_volume(volumes, slice_features=torch.zeros_like(slices), embedding="stage2")
        assert not torch.allclose(other, model.encode_volume(volumes, embedding="stage2"))


def test_vit_matches_monai_blocks(model, volumes):
    """Our ViT3D computes what MONAI's PatchEmbeddingBlock + TransformerBlocks (official blocks) compute."""
    from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock

    cfg = model.config
    encoder = model.stages["stage1"].vision_encoder
    sd = encoder.state_dict()
    embed = PatchEmbeddingBlock(
        1, cfg.img_size, cfg.patch_size, cfg.width, cfg.heads, proj_type="perceptron", pos_embed_type="learnable"
    ).eval()
    embed.load_state_dict(
        {k.removeprefix("patch_embedding."): v for k, v in sd.items() if k.startswith("patch_embedding.")}
    )
    blocks = []
    for i in range(cfg.layers):
        block = TransformerBlock(cfg.width, cfg.mlp_dim, cfg.heads, 0.0, qkv_bias=False).eval()
        missing, unexpected = block.load_state_dict(
            {k.removeprefix(f"blocks.{i}."): v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}, strict=False
        )
        assert missing == ["norm_cross_attn.weight", "norm_cross_attn.bias"] and unexpected == []
        blocks.append(block)
    with torch.no_grad():
        centred = (volumes - cfg.input_mean) / cfg.input_std  # what the 3D encoders see (tiny centres)
        x = torch.cat([sd["cls_token"].expand(2, -1, -1), embed(centred)], dim=1)
        for block in blocks:
            x = block(x)
        expected = F.layer_norm(x, (cfg.width,), sd["norm.weight"], sd["norm.bias"])
        got = model.vision_tokens(volumes, "stage1")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_eval_determinism_and_mode_restore(model, volumes):
    model.train()
    try:
        a = model.encode_volume(volumes)
        b = model.encode_volume(volumes)
        assert torch.equal(a, b) and model.training
        assert torch.equal(model.encode_text(REPORTS), model.encode_text(REPORTS))
        assert not model.text_tower("stage1").model.training  # a frozen trunk stays in eval mode
    finally:
        model.eval()


def test_save_load_round_trip_and_fingerprint(model, volumes, tmp_path):
    out = tmp_path / "m"
    model.save_pretrained(out)
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "preprocessing.json"}
    stored = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("text_towers.") for k in stored)  # the packaged MiniLM is referenced, not copied
    meta = json.loads((out / "config.json").read_text())
    assert meta["fingerprint"] == model.fingerprint and len(model.fingerprint) >= 16
    loaded = load_model(out)
    assert loaded.fingerprint == model.fingerprint and loaded.config == model.config
    assert loaded.preprocessing == model.preprocessing and loaded.profile.output_shape == (32, 64, 64)
    assert torch.equal(loaded.encode_volume(volumes), model.encode_volume(volumes))
    assert torch.equal(loaded.encode_text(REPORTS), model.encode_text(REPORTS))
    # saving again into a folder with other content (a training run) keeps that content
    (out / "training").mkdir()
    (out / "training" / "history.json").write_text("[]")
    loaded.save_pretrained(out)
    assert (out / "training" / "history.json").exists() and load_model(out).fingerprint == model.fingerprint
    # an edited weight no longer matches the recorded fingerprint
    stored["stages.stage1.mm_vision_proj.bias"] = stored["stages.stage1.mm_vision_proj.bias"] + 1.0
    save_file(stored, str(out / "model.safetensors"))
    with pytest.raises(ModelError, match="do not match the fingerprint"):
        load_model(out)
    stored.pop("stages.stage2.vision_encoder.patch_score_proj.weight")
    save_file(stored, str(out / "model.safetensors"))
    with pytest.raises(ModelError, match="missing key 'stages.stage2.vision_encoder.patch_score_proj.weight'"):
        load_model(out)


def test_fingerprint_tracks_weights_and_config():
    torch.manual_seed(2)
    m = create_model("tiny")
    before = m.fingerprint
    with torch.no_grad():
        m.stages["stage2"].logit_scale.add_(0.5)
    changed = m.fingerprint
    assert changed != before
    with torch.no_grad():
        m.stages["stage2"].logit_scale.sub_(0.5)
    assert m.fingerprint == before
    m.config.embedding = "stage1"
    assert m.fingerprint != before


def test_training_helpers():
    torch.manual_seed(3)
    m = create_model("tiny")
    assert m.text_trunk_frozen("stage1") and m.text_trunk_frozen("stage2")
    s1 = {id(p) for p in m.tower_parameters("stage1")}
    assert s1 == {id(p) for n, p in m.stages["stage1"].named_parameters() if not n.startswith("packer.")}
    s2 = {id(p) for p in m.tower_parameters("stage2")}
    assert {id(p) for p in m.slice_tower.parameters()} <= s2 and not s1 & s2
    torch.testing.assert_close(m.logit_scale("stage1"), m.stages["stage1"].logit_scale.exp())
    assert float(m.logit_scale("stage1").detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    m.train()
    x = torch.rand(2, 1, 32, 64, 64)
    loss = (m.vision_features(x, "stage2") * m.text_features_from_pooled(torch.randn(2, 384), "stage2")).sum()
    loss.backward()
    assert m.stages["stage2"].vision_encoder.slice_guided_attention.Wk.weight.grad is not None
    assert m.slice_tower.trunk.conv1.weight.grad is not None
    assert m.stages["stage1"].vision_encoder.cls_token.grad is None
    m.init_stage2_from_stage1()
    e1, e2 = m.stages["stage1"].vision_encoder.state_dict(), m.stages["stage2"].vision_encoder.state_dict()
    assert all(torch.equal(v, e2[k]) for k, v in e1.items())
    assert torch.equal(m.stages["stage1"].mm_language_proj.weight, m.stages["stage2"].mm_language_proj.weight)


def test_user_errors(model, tmp_path):
    with pytest.raises(ModelError, match="expects \\(B, 1, 32, 64, 64\\)"):
        model.encode_volume(torch.rand(1, 1, 32, 32, 32))
    with pytest.raises(ModelError, match="unknown embedding 'both'"):
        model.encode_text(["x"], embedding="both")
    with pytest.raises(ModelError, match="no 'stage3' tower"):
        model.vision_features(torch.rand(1, 1, 32, 64, 64), "stage3")
    with pytest.raises(ModelError, match="not a model directory, 'default' or a named config"):
        load_model(str(tmp_path / "missing-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="unknown model_type 'bert'"):
        load_model(tmp_path / "other")


SHIPPED_WEIGHTS_SHA256 = "9a26ad6a9d674d1f48b9c541821e4a27166deee9e3174e814dc8e3b6910f246e"


def test_load_model_named_and_default():
    """The shipped model must exist, be the pinned weights file, and load exactly those weights."""
    import hashlib

    from safetensors.torch import load_file

    assert isinstance(load_model("tiny"), HSENetCLIP)
    weights = DEFAULT_MODEL_DIR / "model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == SHIPPED_WEIGHTS_SHA256
    shipped = load_model()
    assert shipped.config.name == "tiny"
    state = shipped.state_dict()
    stored = load_file(str(weights))
    assert stored and all(torch.equal(state[name], tensor) for name, tensor in stored.items())


def test_text_model_directory_round_trip(tmp_path, volumes):
    """A user-supplied transformers text trunk (here a small BERT) is saved with its tokenizer and weights."""
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["lung", "lungs", "clear", "nodule", "effusion", "heart", "normal", "size", "is", "are", "."]
    bert_dir = tmp_path / "bert"
    bert_dir.mkdir()
    (bert_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    torch.manual_seed(4)
    BertModel(
        BertConfig(
            vocab_size=16,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(str(bert_dir))
    BertTokenizer(vocab_file=str(bert_dir / "vocab.txt")).save_pretrained(str(bert_dir))
    m = create_model("tiny", text_model=bert_dir, text_pooling="cls", freeze_text_trunk=False).eval()
    assert m.config.text_source == "config" and m.text_tower("stage1").width == 32
    assert m.text_tower("stage1").max_length == 64
    assert any(p is next(m.text_towers["shared"].parameters()) for p in m.tower_parameters("stage1"))
    m.save_pretrained(tmp_path / "saved")
    stored = load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert any(k.startswith("text_towers.shared.model.") for k in stored)
    loaded = load_model(tmp_path / "saved")
    assert loaded.fingerprint == m.fingerprint
    assert torch.equal(loaded.encode_text(REPORTS), m.encode_text(REPORTS))


def _write_open_clip_timm(folder, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)):
    """A BiomedCLIP-structured open_clip checkpoint (timm ViT trunk, linear head) with timm's small test_vit."""
    from open_clip.timm_model import TimmModel

    torch.manual_seed(5)
    visual = TimmModel("test_vit", embed_dim=24, image_size=160, pool="", proj="linear")
    state = {"visual." + k: v for k, v in visual.state_dict().items()}
    state["text.transformer.embeddings.word_embeddings.weight"] = torch.zeros(4, 8)
    state["logit_scale"] = torch.tensor(4.6)
    folder.mkdir()
    torch.save(state, folder / "open_clip_pytorch_model.bin")
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
                        "image_size": 160,
                    },
                    "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"},
                },
                "preprocess_cfg": {"mean": list(mean), "std": list(std)},
            }
        )
    )
    return visual.trunk.eval()


def test_biomedclip_style_slice_tower(tmp_path):
    """A BiomedCLIP trunk encodes official 2D slice images, never the planes of the 3D input."""
    trunk = _write_open_clip_timm(tmp_path / "biomedclip")
    x = torch.rand(1, 1, 32, 64, 64, generator=torch.Generator().manual_seed(6))
    images = torch.rand(32, 3, 160, 160, generator=torch.Generator().manual_seed(7))
    m = create_model("tiny", biomedclip=tmp_path / "biomedclip").eval()
    assert m.config.slice_source == "biomedclip" and m.config.slice_dim == 64 and m.slice_tower.frozen
    assert m.slice_input == "biomedclip"
    with torch.no_grad():
        feats = m.slice_image_features(images)
        expected = trunk(images)
    assert feats.shape == (32, 64)
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ModelError, match="BiomedCLIP features of the official 2D slices"):
        m.slice_features(x)
    assert not {id(p) for p in m.slice_tower.parameters()} & {id(p) for p in m.tower_parameters("stage2")}
    m.train()
    assert not m.slice_tower.trunk.training
    m.eval()
    m.save_pretrained(tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    with torch.no_grad():
        assert torch.equal(loaded.slice_image_features(images), feats) and loaded.fingerprint == m.fingerprint
    (tmp_path / "broken").mkdir()
    with pytest.raises(ModelError, match="no open_clip_config.json"):
        create_model("tiny", biomedclip=tmp_path / "broken")
