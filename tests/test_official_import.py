"""Official HSENet CLIP checkpoints (spec §1.6, §2.6, §7) built here at reduced sizes with the official field and
key names and random weights, loaded strictly and checked against an independent plain-torch reference forward."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel, BertTokenizer
from typer.testing import CliRunner

from hsenet_search.errors import ModelError
from hsenet_search.models import load_model
from hsenet_search.models.official import import_official

IMG, PATCH, WIDTH, MLP, LAYERS, HEADS, PROJ, SLICE_DIM = (8, 32, 32), (4, 16, 16), 64, 128, 2, 4, 48, 40
WORDS = [
    "no",
    "nodule",
    "nodules",
    "is",
    "seen",
    "lung",
    "lungs",
    "clear",
    "effusion",
    "pleural",
    "mild",
    "emphysema",
    "the",
    "heart",
    "normal",
    "size",
    "there",
    "a",
    "small",
    "right",
    "left",
    "lobe",
    ".",
]
TEXTS = [
    'No pleural effusion. The "heart" is normal (size).',
    "Mild emphysema in the right lobe",
    "a small nodule is seen in the left lung",
]


def _vit_shapes(width=WIDTH) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official ViT_stage1 (MONAI 1.3 names), written from the spec tables."""
    n = math.prod(i // p for i, p in zip(IMG, PATCH, strict=True))
    shapes = {
        "cls_token": (1, 1, width),
        "patch_embedding.position_embeddings": (1, n, width),
        "patch_embedding.patch_embeddings.1.weight": (width, math.prod(PATCH)),
        "patch_embedding.patch_embeddings.1.bias": (width,),
        "norm.weight": (width,),
        "norm.bias": (width,),
    }
    for i in range(LAYERS):
        b = f"blocks.{i}."
        shapes |= {
            b + "mlp.linear1.weight": (MLP, width),
            b + "mlp.linear1.bias": (MLP,),
            b + "mlp.linear2.weight": (width, MLP),
            b + "mlp.linear2.bias": (width,),
            b + "norm1.weight": (width,),
            b + "norm1.bias": (width,),
            b + "norm2.weight": (width,),
            b + "norm2.bias": (width,),
            b + "attn.out_proj.weight": (width, width),
            b + "attn.out_proj.bias": (width,),
            b + "attn.qkv.weight": (3 * width, width),
        }
    return shapes


def _e3_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {
        "patch_score_proj.weight": (1, WIDTH),
        "patch_score_proj.bias": (1,),
        "slice_guided_attention.norm.weight": (WIDTH,),
        "slice_guided_attention.norm.bias": (WIDTH,),
    }
    for name, fan_in in (("Wq", WIDTH), ("Wk", SLICE_DIM), ("Wv", SLICE_DIM), ("output_linear", WIDTH)):
        shapes[f"slice_guided_attention.{name}.weight"] = (WIDTH, fan_in)
        shapes[f"slice_guided_attention.{name}.bias"] = (WIDTH,)
    return shapes


def _clip_state(gen: torch.Generator, e3: bool, text_seed: int) -> dict[str, torch.Tensor]:
    state = {"logit_scale": torch.tensor(math.log(1 / 0.07))}
    shapes = _vit_shapes() | (_e3_shapes() if e3 else {})
    for key, shape in shapes.items():
        scale = 1.0 if key.endswith(("norm.weight", "norm1.weight", "norm2.weight")) else 0.05
        base = 1.0 if key.endswith(("norm.weight", "norm1.weight", "norm2.weight")) else 0.0
        state["vision_encoder." + key] = base + scale * torch.randn(shape, generator=gen)
    torch.manual_seed(text_seed)
    bert = BertModel(
        BertConfig(
            vocab_size=len(WORDS) + 5,
            hidden_size=WIDTH,
            num_hidden_layers=2,
            num_attention_heads=1,
            intermediate_size=96,
            max_position_embeddings=40,
        )
    )
    for key, value in bert.state_dict().items():
        state["language_encoder." + key] = value.clone()
    for name, fan_in in (("mm_vision_proj", WIDTH), ("mm_language_proj", WIDTH)):
        state[name + ".weight"] = 0.1 * torch.randn(PROJ, fan_in, generator=gen)
        state[name + ".bias"] = 0.1 * torch.randn(PROJ, generator=gen)
    return state


def _official_config(model_type: str) -> dict:
    return {
        "model_type": model_type,
        "architectures": ["M3DCLIP"],
        "in_channels": 1,
        "img_size": list(IMG),
        "patch_size": list(PATCH),
        "hidden_size": WIDTH,
        "mlp_dim": MLP,
        "num_layers": LAYERS,
        "num_heads": HEADS,
        "pos_embed": "perceptron",
        "dropout_rate": 0.0,
        "spatial_dims": 3,
        "max_text_len": 128,
        "vocab_size": 30522,
        "local_loss": False,
        "gather_loss": True,
        "language_model_name_or_path": "/authors/bert-base-uncased",
        "use_mask": False,
        "use_2D_Encoder": False,
        "mask_rate": 0.08,
        "transformers_version": "4.49.0",
    }


def write_official(folder: Path, model_type: str, fmt: str = "safetensors", tokenizer_config: bool = True) -> Path:
    gen = torch.Generator().manual_seed(7)
    state = _clip_state(gen, e3=model_type == "m3d_clip_stage2", text_seed=1)
    if model_type == "m3d_clip_stage2":
        state |= {"stage1_pretrained_CLIP." + k: v for k, v in _clip_state(gen, e3=False, text_seed=2).items()}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(_official_config(model_type)))
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "model_params.bin")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    if tokenizer_config:
        BertTokenizer(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    return folder


# ---------------------------------------------------------------------------------------- reference forward
def _linear(x, sd, name):
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def _ln(x, sd, name):
    return F.layer_norm(x, (x.shape[-1],), sd[name + ".weight"], sd[name + ".bias"], eps=1e-5)


def reference_vision(sd: dict, prefix: str, x: torch.Tensor, slices: torch.Tensor | None = None) -> torch.Tensor:
    """Official ViT_stage1 / ViT_stage2 in plain torch ops; returns normalize(mm_vision_proj(CLS))."""
    p = prefix + "vision_encoder."
    b = x.shape[0]
    (d, h, w), (p1, p2, p3) = IMG, PATCH
    patches = x.reshape(b, 1, d // p1, p1, h // p2, p2, w // p3, p3).permute(0, 2, 4, 6, 3, 5, 7, 1)
    tokens = _linear(patches.reshape(b, -1, p1 * p2 * p3), sd, p + "patch_embedding.patch_embeddings.1")
    tokens = tokens + sd[p + "patch_embedding.position_embeddings"]
    if slices is not None:
        a = p + "slice_guided_attention."
        q, k, v = _linear(tokens, sd, a + "Wq"), _linear(slices, sd, a + "Wk"), _linear(slices, sd, a + "Wv")
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(WIDTH), dim=-1)
        guided = _ln(q + _linear(att @ v, sd, a + "output_linear"), sd, a + "norm")
        tokens = tokens * torch.sigmoid(_linear(guided, sd, p + "patch_score_proj"))
    hidden = torch.cat([sd[p + "cls_token"].expand(b, -1, -1), tokens], dim=1)
    n, hd = hidden.shape[1], WIDTH // HEADS
    for i in range(LAYERS):
        blk = f"{p}blocks.{i}."
        qkv = _ln(hidden, sd, blk + "norm1") @ sd[blk + "attn.qkv.weight"].T
        q, k, v = qkv.reshape(b, n, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        hidden = hidden + _linear((att @ v).transpose(1, 2).reshape(b, n, WIDTH), sd, blk + "attn.out_proj")
        mlp = F.gelu(_linear(_ln(hidden, sd, blk + "norm2"), sd, blk + "mlp.linear1"))
        hidden = hidden + _linear(mlp, sd, blk + "mlp.linear2")
    cls = _ln(hidden, sd, p + "norm")[:, 0]
    return F.normalize(_linear(cls, sd, prefix + "mm_vision_proj"), dim=-1)


def reference_text(sd: dict, prefix: str, folder: Path, texts: list[str]) -> torch.Tensor:
    """transformers BERT with the raw weights, [CLS] -> mm_language_proj -> L2 normalise (official cleaning)."""
    p = prefix + "language_encoder."
    bert_sd = {k[len(p) :]: v for k, v in sd.items() if k.startswith(p)}
    bert = BertModel(
        BertConfig(
            vocab_size=bert_sd["embeddings.word_embeddings.weight"].shape[0],
            hidden_size=WIDTH,
            num_hidden_layers=2,
            num_attention_heads=1,
            intermediate_size=96,
            max_position_embeddings=40,
        )
    ).eval()
    bert.load_state_dict(bert_sd)
    tok = BertTokenizer(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    cleaned = [t.replace('"', "").replace("'", "").replace("(", "").replace(")", "") for t in texts]
    batch = tok(cleaned, padding="max_length", truncation=True, max_length=40, return_tensors="pt")
    with torch.no_grad():
        cls = bert(**batch).last_hidden_state[:, 0]
    return F.normalize(_linear(cls, sd, prefix + "mm_language_proj"), dim=-1)


def _raw_state(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").exists():
        return load_file(str(folder / "model.safetensors"))
    return torch.load(folder / "model_params.bin", weights_only=True)


# ---------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def stage1_dir(tmp_path_factory) -> Path:
    return write_official(tmp_path_factory.mktemp("s1") / "HSENet_CLIP", "m3d_clip_stage1")


@pytest.fixture(scope="module")
def stage2_dir(tmp_path_factory) -> Path:
    return write_official(tmp_path_factory.mktemp("s2") / "HSENet-2E3-CLIP", "m3d_clip_stage2")


@pytest.fixture(scope="module")
def volume() -> torch.Tensor:
    return torch.rand(2, 1, *IMG, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def slices() -> torch.Tensor:
    return torch.randn(2, IMG[0], SLICE_DIM, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_stage1_matches_reference(tmp_path, fmt, volume):
    folder = write_official(tmp_path / "ckpt", "m3d_clip_stage1", fmt=fmt, tokenizer_config=fmt == "bin")
    sd = _raw_state(folder)
    model = load_model(folder)
    assert model.towers == ("stage1",) and model.config.embedding == "stage1"
    assert model.config.logit_scale_mode == "raw"
    assert float(model.logit_scale("stage1").detach()) == pytest.approx(math.log(1 / 0.07))
    torch.testing.assert_close(model.encode_volume(volume), reference_vision(sd, "", volume), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.encode_text(TEXTS), reference_text(sd, "", folder, TEXTS), atol=1e-5, rtol=0)


def test_stage2_both_towers_match_reference(stage2_dir, volume, slices):
    sd = _raw_state(stage2_dir)
    model = load_model(stage2_dir)
    assert model.towers == ("stage1", "stage2") and model.config.embedding == "stage2"
    assert model.config.text_trunk_keys == ("stage1", "stage2")
    s1 = "stage1_pretrained_CLIP."
    ref_v1, ref_v2 = reference_vision(sd, s1, volume), reference_vision(sd, "", volume, slices)
    ref_t1, ref_t2 = reference_text(sd, s1, stage2_dir, TEXTS), reference_text(sd, "", stage2_dir, TEXTS)
    torch.testing.assert_close(model.encode_volume(volume, embedding="stage1"), ref_v1, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.encode_volume(volume, slice_features=slices), ref_v2, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.encode_text(TEXTS, embedding="stage1"), ref_t1, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.encode_text(TEXTS), ref_t2, atol=1e-5, rtol=0)
    fused_v = model.encode_volume(volume, slice_features=slices, embedding="fusion")
    fused_t = model.encode_text(TEXTS, embedding="fusion")
    torch.testing.assert_close(fused_v @ fused_t.T, (ref_v1 @ ref_t1.T + ref_v2 @ ref_t2.T) / 2, atol=1e-5, rtol=0)
    # the two towers really are different weights
    assert (ref_v1 - ref_v2).abs().max() > 1e-3 and (ref_t1 - ref_t2).abs().max() > 1e-3


def test_stage2_without_slice_features_or_tower_is_an_error(stage2_dir, volume):
    model = load_model(stage2_dir)
    with pytest.raises(ModelError, match="BiomedCLIP features of the official 2D slices"):
        model.encode_volume(volume)
    with pytest.raises(ModelError, match="slice features must have shape"):
        model.encode_volume(volume, slice_features=torch.zeros(2, IMG[0], SLICE_DIM + 1))


def _mutated_copy(src: Path, dst: Path, change) -> Path:
    dst.mkdir()
    for item in src.iterdir():
        (dst / item.name).write_bytes(item.read_bytes())
    state = dict(load_file(str(src / "model.safetensors")))
    change(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "model.safetensors"))
    return dst


def test_strict_loading_names_the_key(stage2_dir, tmp_path):
    key = "vision_encoder.blocks.1.attn.qkv.weight"
    folder = _mutated_copy(stage2_dir, tmp_path / "missing", lambda s: s.pop(key))
    with pytest.raises(ModelError, match=f"missing key '{key}'"):
        load_model(folder)
    key2 = "stage1_pretrained_CLIP.mm_language_proj.weight"
    folder = _mutated_copy(stage2_dir, tmp_path / "shape", lambda s: s.__setitem__(key2, torch.zeros(PROJ, 3)))
    with pytest.raises(ModelError, match=f"key '{key2}' has shape \\(48, 3\\)"):
        load_model(folder)
    folder = _mutated_copy(
        stage2_dir, tmp_path / "extra", lambda s: s.__setitem__("vision_encoder.extra_gate.weight", torch.zeros(2))
    )
    with pytest.raises(ModelError, match="unexpected key 'vision_encoder.extra_gate.weight'"):
        load_model(folder)
    folder = _mutated_copy(stage2_dir, tmp_path / "e3", lambda s: s.pop("vision_encoder.patch_score_proj.bias"))
    with pytest.raises(ModelError, match="missing key 'vision_encoder.patch_score_proj.bias'"):
        load_model(folder)


def test_pooler_and_position_ids_are_ignored(stage1_dir, tmp_path, volume):
    sd = _raw_state(stage1_dir)
    assert any(k.startswith("language_encoder.pooler.") for k in sd)  # present in the checkpoint, unused
    folder = _mutated_copy(
        stage1_dir,
        tmp_path / "posids",
        lambda s: s.__setitem__("language_encoder.embeddings.position_ids", torch.arange(40)[None]),
    )
    a, b = load_model(stage1_dir), load_model(folder)
    assert a.fingerprint == b.fingerprint
    assert not any("pooler" in k for k in a.state_dict())


def test_mismatched_config_is_named(stage1_dir, tmp_path):
    folder = _mutated_copy(stage1_dir, tmp_path / "cfg", lambda s: None)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["img_size"] = [8, 48, 48]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="patch_embedding.position_embeddings' has shape"):
        load_model(folder)


def test_text_config_override_and_inference(stage1_dir):
    model = load_model(stage1_dir)
    bert_cfg = model.text_towers["shared"].model.config
    assert (
        bert_cfg.hidden_size,
        bert_cfg.num_hidden_layers,
        bert_cfg.intermediate_size,
        bert_cfg.max_position_embeddings,
        bert_cfg.vocab_size,
        bert_cfg.num_attention_heads,
    ) == (WIDTH, 2, 96, 40, len(WORDS) + 5, 1)
    assert model.text_towers["shared"].max_length == 40
    overridden = load_model(stage1_dir, text_config={"num_attention_heads": 2})
    assert overridden.text_towers["shared"].model.config.num_attention_heads == 2
    assert (overridden.encode_text(TEXTS) - model.encode_text(TEXTS)).abs().max() > 1e-6


def test_import_official_round_trip(stage2_dir, tmp_path, volume, slices):
    original = load_model(stage2_dir)
    out = tmp_path / "converted"
    imported = import_official(stage2_dir, out, embedding="fusion")
    assert {"config.json", "model.safetensors", "preprocessing.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    loaded = load_model(out)
    assert loaded.fingerprint == imported.fingerprint
    assert loaded.config.embedding == "fusion" and loaded.config.source == "official:m3d_clip_stage2"
    assert loaded.preprocessing == original.preprocessing
    for emb in ("stage1", "stage2", "fusion"):
        torch.testing.assert_close(
            loaded.encode_volume(volume, slice_features=slices, embedding=emb),
            original.encode_volume(volume, slice_features=slices, embedding=emb),
            atol=0,
            rtol=0,
        )
        torch.testing.assert_close(
            loaded.encode_text(TEXTS, embedding=emb), original.encode_text(TEXTS, embedding=emb), atol=0, rtol=0
        )
    same_config = import_official(stage2_dir, tmp_path / "again")
    assert load_model(tmp_path / "again").fingerprint == same_config.fingerprint == original.fingerprint


def test_cli_import_official_and_info(stage1_dir, tmp_path):
    from hsenet_search.cli.model import app

    runner = CliRunner()
    out = tmp_path / "cli-out"
    result = runner.invoke(app, ["import-official", str(stage1_dir), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["towers"] == ["stage1"] and summary["embedding_dim"] == PROJ
    assert summary["fingerprint"] == load_model(out).fingerprint
    result = runner.invoke(app, ["info", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["source"] == "official:m3d_clip_stage1" and info["grid"] == [2, 2, 2]
    assert info["text"]["pooling"] == "cls" and info["packer"] is None
    result = runner.invoke(app, ["import-official", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert isinstance(result.exception, ModelError)


def test_official_preprocessing_follows_img_size(stage1_dir):
    """The hsenet chain (spec §4.1) with its resize adapted to the checkpoint's img_size produces that shape."""
    import numpy as np

    from hsenet_search.data.volume import Volume

    model = load_model(stage1_dir)
    assert model.preprocessing["name"] == "hsenet-8x32x32"
    hu = np.random.default_rng(0).uniform(-1000, 400, size=(24, 20, 10)).astype(np.float32)
    out = model.profile(Volume(hu, np.diag([3.0, 3.0, 3.0, 1.0]), "synthetic"))
    assert out.shape == (1, *IMG) and 0.0 <= out.min() and out.max() <= 1.0
