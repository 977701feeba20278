"""Import of the released HSENet checkpoints (HSENet_CLIP = ``m3d_clip_stage1``, HSENet-2E3-CLIP =
``m3d_clip_stage2``), spec §1.6, §2.6 and §7.

The vision config comes from the official ``config.json`` field names (``img_size``, ``patch_size``,
``hidden_size``, ``mlp_dim``, ``num_layers``, ``num_heads``, ``in_channels``, ``pos_embed``; absent fields take the
official defaults). The BERT text config is inferred from the state-dict shapes (layers, width, intermediate
size, vocabulary, max positions, token types; heads = width / 64) unless ``text_config`` overrides it. Weights:
``model.safetensors`` (or its sharded index), else ``pytorch_model.bin`` / ``model_params.bin`` / another
``.bin``, read with ``weights_only=True``. Tokenizer: the directory's BERT files (``vocab.txt``, lower-casing).

Loading is strict: every tensor the model needs must be present with its shape, and every checkpoint tensor
must be used, except these documented ones: ``*language_encoder.pooler.*`` (BERT's pooler, present but unused by
the official model), ``*.embeddings.position_ids`` (a buffer older transformers saved) and ``visual_encoder_2D.*``
(a frozen copy of the public BiomedCLIP trunk, only present when trained with ``use_2D_Encoder``; pass the
BiomedCLIP checkpoint with ``biomedclip`` to get a slice tower).

Mapping: a stage-1 checkpoint gives the ``stage1`` tower; in a stage-2 checkpoint ``stage1_pretrained_CLIP.*``
gives the ``stage1`` tower (with its own BERT) and the unprefixed ``vision_encoder.*`` (2E3), ``language_encoder.*``
and ``mm_*`` keys the ``stage2`` tower. Both logit scales keep the official raw-multiplier semantics.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import torch

from hsenet_search.errors import ModelError

from .clip import OFFICIAL_MODEL_TYPES, HSENetCLIP
from .configs import ModelConfig
from .io import check_tensors, read_meta, read_weights
from .slice_tower import load_biomedclip_trunk
from .text_tower import TextTower, load_tokenizer

IGNORED_KEYS = (
    re.compile(r"(^|\.)language_encoder\.pooler\."),
    re.compile(r"(^|\.)embeddings\.position_ids$"),
    re.compile(r"^visual_encoder_2D\."),
)
OFFICIAL_DEFAULTS = {
    "img_size": (32, 256, 256),
    "patch_size": (4, 16, 16),
    "hidden_size": 768,
    "mlp_dim": 3072,
    "num_layers": 12,
    "num_heads": 12,
    "in_channels": 1,
    "pos_embed": "perceptron",
    "dropout_rate": 0.0,
    "spatial_dims": 3,
}
STAGE1_PREFIX = "stage1_pretrained_CLIP."
WEIGHT_FILES = ("pytorch_model.bin", "model_params.bin")


def read_official_weights(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint tensors of an official directory (safetensors preferred)."""
    if (path / "model.safetensors").exists():
        return read_weights(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as exc:
            raise ModelError(f"malformed safetensors index ({exc})", index) from exc
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_weights(path / shard))
        return state
    candidates = [path / n for n in WEIGHT_FILES if (path / n).exists()]
    candidates += sorted(p for p in path.glob("*.bin") if p.name != "training_args.bin" and p not in candidates)
    if not candidates:
        raise ModelError("no weights: expected model.safetensors or a .bin state dict", path)
    return read_weights(candidates[0])


def infer_bert_config(state: dict[str, torch.Tensor], prefix: str, path: Path) -> dict[str, Any]:
    """A BertConfig dict read off the state-dict shapes of the BERT under ``prefix``."""

    def tensor(key: str) -> torch.Tensor:
        if prefix + key not in state:
            raise ModelError(f"missing key {prefix + key!r}", path)
        return state[prefix + key]

    vocab, width = tensor("embeddings.word_embeddings.weight").shape
    layers = 0
    while f"{prefix}encoder.layer.{layers}.attention.self.query.weight" in state:
        layers += 1
    if layers == 0:
        raise ModelError(f"missing key {prefix + 'encoder.layer.0.attention.self.query.weight'!r}", path)
    if width % 64:
        raise ModelError(f"cannot infer BERT heads from width {width} (not a multiple of 64); pass a text config", path)
    return {
        "model_type": "bert",
        "vocab_size": int(vocab),
        "hidden_size": int(width),
        "num_hidden_layers": layers,
        "num_attention_heads": int(width) // 64,
        "intermediate_size": int(tensor("encoder.layer.0.intermediate.dense.weight").shape[0]),
        "max_position_embeddings": int(tensor("embeddings.position_embeddings.weight").shape[0]),
        "type_vocab_size": int(tensor("embeddings.token_type_embeddings.weight").shape[0]),
    }


def has_tokenizer(path: Path) -> bool:
    """True when ``path`` holds BERT tokenizer files (``vocab.txt`` or a ``tokenizer.json``)."""
    return (path / "vocab.txt").exists() or (path / "tokenizer.json").exists()


def _official_tokenizer(path: Path):
    """The BERT tokenizer in ``path``: ``AutoTokenizer`` when it has a tokenizer config, else ``vocab.txt``."""
    tok_cfg = path / "tokenizer_config.json"
    if tok_cfg.exists():
        try:
            has_class = bool(json.loads(tok_cfg.read_text()).get("tokenizer_class"))
        except ValueError as exc:
            raise ModelError(f"malformed tokenizer_config.json ({exc})", tok_cfg) from exc
        if has_class:
            return load_tokenizer(path)
    if not (path / "vocab.txt").exists():
        raise ModelError(
            "no BERT tokenizer files (vocab.txt); give the bert-base-uncased folder as the text model", path
        )
    from transformers import BertTokenizer

    return BertTokenizer(vocab_file=str(path / "vocab.txt"), do_lower_case=True)


def _tuple3(value: Any, field: str, path: Path) -> tuple[int, int, int]:
    values = [value] * 3 if isinstance(value, int) else list(value)
    if len(values) != 3:
        raise ModelError(f"official config field {field!r} must have 3 entries, got {value!r}", path)
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _shape(state: dict[str, torch.Tensor], key: str, path: Path) -> tuple[int, ...]:
    if key not in state:
        raise ModelError(f"missing key {key!r}", path)
    return tuple(state[key].shape)


def official_config(
    path: Path,
    model_type: str,
    raw: dict[str, Any],
    state: dict[str, torch.Tensor],
    text_configs: dict[str, dict[str, Any]],
    embedding: str | None,
    slice_info: dict[str, Any] | None,
) -> ModelConfig:
    """Our :class:`ModelConfig` for an official checkpoint."""
    cfg = {k: raw[k] if raw.get(k) is not None else v for k, v in OFFICIAL_DEFAULTS.items()}
    if str(cfg["pos_embed"]) != "perceptron":
        raise ModelError(f"unsupported official pos_embed {cfg['pos_embed']!r} (only 'perceptron')", path)
    if int(cfg["spatial_dims"]) != 3:
        raise ModelError(f"unsupported official spatial_dims {cfg['spatial_dims']!r} (only 3)", path)
    stage2 = model_type == "m3d_clip_stage2"
    towers = ("stage1", "stage2") if stage2 else ("stage1",)
    s1 = STAGE1_PREFIX if stage2 else ""
    projection = _shape(state, s1 + "mm_vision_proj.weight", path)[0]
    if stage2 and _shape(state, "mm_vision_proj.weight", path)[0] != projection:
        raise ModelError("the two towers' projections differ in size; unsupported", path)
    slice_dim = _shape(state, "vision_encoder.slice_guided_attention.Wk.weight", path)[1] if stage2 else 768
    fields: dict[str, Any] = dict(
        name=f"official-{'stage2' if stage2 else 'stage1'}",
        img_size=_tuple3(cfg["img_size"], "img_size", path),
        patch_size=_tuple3(cfg["patch_size"], "patch_size", path),
        in_channels=int(cfg["in_channels"]),
        width=int(cfg["hidden_size"]),
        layers=int(cfg["num_layers"]),
        heads=int(cfg["num_heads"]),
        mlp_dim=int(cfg["mlp_dim"]),
        dropout=float(cfg["dropout_rate"]),
        projection_dim=int(projection),
        towers=towers,
        embedding=embedding or ("stage2" if stage2 else "stage1"),
        logit_scale_mode="raw",
        slice_source="none",
        slice_dim=int(slice_dim),
        packer_out_dim=None,
        text_source="config",
        text_configs=text_configs,
        text_pooling="cls",
        text_max_length=512,
        shared_text_trunk=not stage2,
        freeze_text_trunk=False,
        preprocessing="hsenet",
        source=f"official:{model_type}",
    )
    if slice_info is not None:
        if slice_info["dim"] != slice_dim:
            raise ModelError(
                f"the BiomedCLIP trunk gives {slice_info['dim']}-d features but the 2E3 encoder expects {slice_dim}-d",
                path,
            )
        fields.update(
            slice_source="biomedclip",
            slice_vision_cfg=slice_info["vision_cfg"],
            slice_mean=tuple(slice_info["mean"]),
            slice_std=tuple(slice_info["std"]),
        )
    try:
        return ModelConfig(**fields).validate()
    except (TypeError, ValueError) as exc:
        raise ModelError(f"official config is inconsistent ({exc})", path) from exc


def official_preprocessing(img_size: tuple[int, int, int]) -> dict[str, Any]:
    """The ``hsenet`` profile (spec §4.1); for another ``img_size`` its resize step is set to that size."""
    from hsenet_search.data.preprocess import get_profile

    base = get_profile("hsenet").to_dict()
    out = [int(v) for v in base["output_shape"]]
    d, h, w = (int(v) for v in img_size)
    if out == [d, h, w]:
        return base
    steps = copy.deepcopy(base["steps"])
    orders = {(0, 1, 2): [d, h, w], (1, 2, 0): [h, w, d]}  # spatial_size as (D, H, W) or as (H, W, D)
    resized = 0
    for step in steps:
        size = step.get("spatial_size")
        for order, new in orders.items():
            if isinstance(size, list) and size == [out[i] for i in order]:
                step["spatial_size"] = new
                resized += 1
                break
    if resized != 1:
        raise ModelError(f"cannot adapt the hsenet preprocessing profile to img_size {tuple(img_size)}")
    adapted = {k: v for k, v in base.items() if k != "hash"}
    adapted |= {"name": f"hsenet-{d}x{h}x{w}", "steps": steps, "output_shape": [d, h, w]}
    return get_profile(adapted).to_dict()


def key_map(config: ModelConfig, model_type: str) -> dict[str, str]:
    """Our prefix -> official prefix, per tower (longest prefixes are matched first)."""
    stage2 = model_type == "m3d_clip_stage2"
    mapping: dict[str, str] = {}
    for tower in config.towers:
        src = STAGE1_PREFIX if (stage2 and tower == "stage1") else ""
        for name in ("vision_encoder.", "mm_vision_proj.", "mm_language_proj.", "logit_scale"):
            mapping[f"stages.{tower}.{name}"] = src + name
        mapping[f"text_towers.{config.text_trunk_key(tower)}.model."] = src + "language_encoder."
    return mapping


def _translate(key: str, pairs: list[tuple[str, str]]) -> str | None:
    for src, dst in sorted(pairs, key=lambda kv: -len(kv[0])):
        if key == src or (src.endswith(".") and key.startswith(src)):
            return dst + key[len(src) :]
    return None


def to_official_key(key: str, mapping: dict[str, str]) -> str | None:
    """Our state-dict key -> the official checkpoint's key."""
    return _translate(key, list(mapping.items()))


def from_official_key(key: str, mapping: dict[str, str]) -> str | None:
    """An official checkpoint key -> ours (None when it belongs to no tower we build)."""
    return _translate(key, [(theirs, ours) for ours, theirs in mapping.items()])


def load_official(
    path: str | Path,
    *,
    text_config: dict[str, Any] | str | Path | None = None,
    text_model: str | Path | None = None,
    biomedclip: str | Path | None = None,
    embedding: str | None = None,
) -> HSENetCLIP:
    """Load an official HSENet CLIP checkpoint directory strictly into an :class:`HSENetCLIP` (eval mode).

    ``text_model``: a local BERT folder (bert-base-uncased) holding the tokenizer files and, optionally, its
    ``config.json``, for checkpoints saved without them; the checkpoint's own files are used otherwise.
    ``text_config``: a dict or JSON file of BERT config fields overriding the inferred ones (both trunks).
    ``biomedclip``: a local open_clip BiomedCLIP checkpoint for the 2E3 slice tower (frozen); without it a
    stage-2 model needs precomputed slice features. ``embedding``: default ``stage1`` for a stage-1 checkpoint
    and ``stage2`` (the official retrieval protocol) for a stage-2 one; ``fusion`` is available too.
    """
    path = Path(path)
    raw = read_meta(path)
    model_type = raw.get("model_type")
    if model_type not in OFFICIAL_MODEL_TYPES:
        raise ModelError(f"not an official HSENet CLIP checkpoint (model_type {model_type!r})", path)
    state = read_official_weights(path)
    text_dir = Path(text_model) if text_model is not None else path
    if text_model is not None and not text_dir.is_dir():
        raise ModelError("the text model is not a folder", text_dir)
    override = {}
    if text_model is not None and (text_dir / "config.json").exists():
        override = _text_override(text_dir / "config.json")
    override |= _text_override(text_config)
    stage2 = model_type == "m3d_clip_stage2"
    trunk_prefixes = (
        {"stage1": STAGE1_PREFIX + "language_encoder.", "stage2": "language_encoder."}
        if stage2
        else {"shared": "language_encoder."}
    )
    text_configs = {k: infer_bert_config(state, p, path) | override for k, p in trunk_prefixes.items()}
    slice_trunk, slice_info = None, None
    if biomedclip is not None and stage2:
        slice_trunk, vision_cfg, mean, std = load_biomedclip_trunk(biomedclip)
        slice_info = {"vision_cfg": vision_cfg, "mean": mean, "std": std, "dim": int(slice_trunk.num_features)}
    config = official_config(path, model_type, raw, state, text_configs, embedding, slice_info)
    tokenizer = _official_tokenizer(text_dir)
    text_towers = {
        k: TextTower.from_hf_config(text_configs[k], tokenizer, "cls", config.text_max_length, False)
        for k in text_configs
    }
    model = HSENetCLIP(config, text_towers=text_towers, slice_trunk=slice_trunk)
    mapping = key_map(config, model_type)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("slice_tower.")}
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        ours = from_official_key(key, mapping)
        if ours is None:
            if not any(p.search(key) for p in IGNORED_KEYS):
                raise ModelError(f"unexpected key {key!r}", path)
        elif not (ours.startswith("text_towers.") and any(p.search(key) for p in IGNORED_KEYS)):
            mapped[ours] = value
    check_tensors(expected, mapped, path, name=lambda k: to_official_key(k, mapping) or k)
    model.preprocessing = official_preprocessing(config.img_size)
    model.load_state_dict(mapped, strict=False)
    return model.eval()


def _text_override(text_config: dict[str, Any] | str | Path | None) -> dict[str, Any]:
    if text_config is None:
        return {}
    if isinstance(text_config, dict):
        return dict(text_config)
    cfg_path = Path(text_config)
    try:
        data = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the text config ({exc})", cfg_path) from exc
    if not isinstance(data, dict):
        raise ModelError("the text config is not a JSON object", cfg_path)
    return {
        k: v for k, v in data.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")
    }


def import_official(
    src: str | Path,
    out: str | Path,
    *,
    text_config=None,
    text_model=None,
    biomedclip=None,
    embedding: str | None = None,
) -> HSENetCLIP:
    """Convert an official checkpoint directory to our model directory format at ``out``."""
    model = load_official(
        src, text_config=text_config, text_model=text_model, biomedclip=biomedclip, embedding=embedding
    )
    model.save_pretrained(out)
    return model
