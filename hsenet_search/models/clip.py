"""``HSENetCLIP``: the stage-1 3D ViT and the 2E3 tower, each with its projections, plus text and slice towers.

State-dict layout (our model directories): ``stages.{stage1,stage2}.{vision_encoder, mm_vision_proj,
mm_language_proj, logit_scale, packer}.*`` (the inner names are the official ones), ``text_towers.{shared |
stage1 | stage2}.model.*`` (transformers trunk) and ``slice_tower.trunk.*`` (open_clip image tower).

Embeddings: a tower's vector is ``normalize(mm_*_proj(CLS))`` (volume: the ViT's CLS token after the final norm;
text: the pooled trunk output). The ``fusion`` embedding is ``[z_stage1, z_stage2] / sqrt(2)`` for volumes and
texts alike, so its inner product is the mean of the two towers' cosine similarities.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hsenet_search.errors import ModelError

from .bridge import KnowledgeBank, bridged_volume, stored_volume
from .configs import ModelConfig
from .e3 import E3ViT
from .io import FORMAT_VERSION, MODEL_TYPE, check_tensors, fingerprint, read_meta, read_weights, write_dir_atomic
from .packer import SpatialPacker
from .slice_tower import SliceTower
from .text_tower import TextTower, minilm_version, saved_text_towers
from .vit3d import ViT3D

OFFICIAL_MODEL_TYPES = ("m3d_clip_stage1", "m3d_clip_stage2")  # read by official.load_official
VOLUME_FORMS = ("plain", "bridged", "stored")
LOCALISATION_TOWER = "stage1"  # the tower whose patch tokens give the per-depth embeddings


class ContrastiveTower(nn.Module):
    """One tower: 3D encoder, vision and text projections, logit scale, optional Spatial Packer, optional
    CMKI knowledge bank (``config.bank_size``)."""

    def __init__(self, config: ModelConfig, tower: str, text_width: int):
        super().__init__()
        self.vision_encoder = E3ViT(config) if tower == "stage2" else ViT3D(config)
        self.mm_vision_proj = nn.Linear(config.width, config.projection_dim)
        self.mm_language_proj = nn.Linear(text_width, config.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        self.packer = None
        packer = config.packer
        if packer.out_dim:
            self.packer = SpatialPacker(config.width, packer.out_dim, config.grid, packer.kernel, packer.dropout)
        self.bank = KnowledgeBank(config.bank_size, config.projection_dim) if config.bank_size else None
        self.loc_language_proj = None
        if config.localisation and tower == LOCALISATION_TOWER:
            self.add_snippet_projection(text_width, packer.out_dim)

    def add_snippet_projection(self, text_width: int, out_dim: int) -> None:
        """The snippet head: a copy of the language projection (RadFinder's "copy" head) when sizes match."""
        self.loc_language_proj = nn.Linear(text_width, out_dim)
        if out_dim == self.mm_language_proj.out_features:
            self.loc_language_proj.load_state_dict(self.mm_language_proj.state_dict())


class HSENetCLIP(nn.Module):
    """The HSENet dual-tower CLIP model. See the module docstring for the key layout and the fusion rule."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        text_towers: dict[str, TextTower] | None = None,
        slice_trunk: nn.Module | None = None,
    ):
        super().__init__()
        self.config = config.validate()
        if text_towers is None:
            if config.text_source != "minilm":
                raise ModelError("a text_source 'config' model needs its text towers (load it from its directory)")
            text_towers = {
                k: TextTower.minilm(config.text_pooling, config.text_max_length, config.freeze_text_trunk)
                for k in config.text_trunk_keys
            }
        if sorted(text_towers) != sorted(config.text_trunk_keys):
            raise ModelError(
                f"text towers {sorted(text_towers)} do not match the config's {list(config.text_trunk_keys)}"
            )
        self.text_towers = nn.ModuleDict(text_towers)
        self.stages = nn.ModuleDict(
            {t: ContrastiveTower(config, t, self.text_towers[config.text_trunk_key(t)].width) for t in config.towers}
        )
        self.slice_tower = None
        if "stage2" in config.towers and config.slice_source != "none":
            self.slice_tower = SliceTower.from_config(config, slice_trunk)
        self._profile = None
        self._fingerprint: tuple[tuple, str] | None = None

    # ------------------------------------------------------------------ descriptive properties
    @property
    def towers(self) -> tuple[str, ...]:
        return tuple(self.config.towers)

    @property
    def embedding_dim(self) -> int:
        """Size of the default embedding (``projection_dim``, doubled for ``fusion``)."""
        return len(self.config.embedding_towers()) * self.config.projection_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing profile dict (``preprocessing.json``) of the tensors this model expects."""
        return self.profile.to_dict()

    @preprocessing.setter
    def preprocessing(self, value: dict[str, Any]) -> None:
        from hsenet_search.data.preprocess import get_profile

        self._profile = get_profile(dict(value))

    @property
    def profile(self):
        """The :class:`hsenet_search.data.preprocess.Profile` of the model (built once, then kept)."""
        if self._profile is None:
            from hsenet_search.data.preprocess import get_profile

            self._profile = get_profile(self.config.preprocessing)
        return self._profile

    @property
    def slice_input(self) -> str:
        """Where the 2E3 tower's slice features come from: ``planes`` (our jointly trained slice tower on the
        axial planes of the 3D input), ``biomedclip`` (the official 2D slice chain through the BiomedCLIP trunk,
        or precomputed features), ``features`` (precomputed features only) or ``none`` (no 2E3 tower)."""
        if "stage2" not in self.towers:
            return "none"
        return {"tower": "planes", "biomedclip": "biomedclip", "none": "features"}[self.config.slice_source]

    @property
    def text_protocol(self) -> str:
        """The report text the model embeds (``findings``, ``impression`` or ``findings+impression``)."""
        return self.config.text_protocol

    def saved_state(self) -> dict[str, torch.Tensor]:
        """The tensors a model directory stores: everything but a frozen packaged MiniLM trunk."""
        state = self.state_dict()
        if self.config.text_source == "minilm" and self.config.freeze_text_trunk:
            state = {k: v for k, v in state.items() if not k.startswith("text_towers.")}
        return state

    @property
    def fingerprint(self) -> str:
        """sha256 (32 hex) of the canonical config JSON and the saved tensors; stable across save/load."""
        config_json = self._fingerprint_config()
        key = (config_json, tuple((t.data_ptr(), t._version) for t in self.saved_state().values()))
        if self._fingerprint is None or self._fingerprint[0] != key:
            self._fingerprint = (key, fingerprint(config_json, self.saved_state()))
        return self._fingerprint[1]

    def _fingerprint_config(self) -> str:
        data = self.config.to_dict()
        if self.config.text_source == "minilm":
            data["text_package_version"] = minilm_version()
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary of the model: towers, sizes, parameters, slice source, text protocol."""
        model, cfg = self, self.config

        def count(module) -> int:
            return sum(p.numel() for p in module.parameters()) if module is not None else 0

        towers = {}
        for name in model.towers:
            stage = model.stages[name]
            text = model.text_tower(name)
            towers[name] = {
                "vision_params": count(stage.vision_encoder),
                "projection_params": count(stage.mm_vision_proj) + count(stage.mm_language_proj),
                "packer_params": count(stage.packer),
                "text_trunk": cfg.text_trunk_key(name),
                "text_width": text.width,
                "text_frozen": text.frozen,
                "logit_scale": round(float(model.logit_scale(name).detach()), 4),
            }
        return {
            "name": cfg.name,
            "source": cfg.source,
            "fingerprint": model.fingerprint,
            "embedding": cfg.embedding,
            "embedding_dim": model.embedding_dim,
            "towers": towers,
            "img_size": list(cfg.img_size),
            "patch_size": list(cfg.patch_size),
            "grid": list(cfg.grid),
            "width": cfg.width,
            "layers": cfg.layers,
            "heads": cfg.heads,
            "projection_dim": cfg.projection_dim,
            "text": {
                "source": cfg.text_source,
                "pooling": cfg.text_pooling,
                "max_length": cfg.text_max_length,
                "trunk_params": {k: count(t) for k, t in model.text_towers.items()},
            },
            "slice_tower": {
                "source": cfg.slice_source,
                "dim": cfg.slice_dim,
                "params": count(model.slice_tower),
                "frozen": bool(model.slice_tower is not None and model.slice_tower.frozen),
            },
            "packer": None
            if cfg.packer_out_dim is None
            else {
                "kernel": list(cfg.packer_kernel),
                "out_dim": cfg.packer_out_dim,
                "tokens": model.stages["stage1"].packer.num_windows,
            },
            "localisation": {
                "tower": LOCALISATION_TOWER,
                "bins": cfg.grid[0] // cfg.packer_kernel[0],
                "voxels_per_bin": model.depth_patch,
            }
            if cfg.localisation
            else None,
            "logit_scale_mode": cfg.logit_scale_mode,
            "preprocessing": {"name": model.preprocessing.get("name"), "hash": model.preprocessing.get("hash")},
            "slice_input": model.slice_input,
            "slice_chain": _official_chain() if model.slice_input == "biomedclip" else None,
            "text_protocol": model.text_protocol,
            "bank_size": cfg.bank_size,
            "total_params": count(model),
        }

    # ------------------------------------------------------------------ training helpers
    def text_tower(self, tower: str) -> TextTower:
        self._check_tower(tower)
        return self.text_towers[self.config.text_trunk_key(tower)]

    def text_trunk_frozen(self, tower: str) -> bool:
        return self.text_tower(tower).frozen

    def tower_parameters(self, tower: str) -> list[nn.Parameter]:
        """Parameters a contrastive stage trains: the tower (not its packer nor snippet projection: the
        localisation head, :meth:`localisation_parameters`), its text trunk unless frozen (a shared trunk
        trains only in stage 1, so stage 2 never moves the stage-1 text side) and, for stage 2, a trainable
        slice tower."""
        self._check_tower(tower)
        stage = self.stages[tower]
        head = [m for m in (stage.packer, stage.loc_language_proj) if m is not None]
        skip = {id(p) for m in head for p in m.parameters()}
        params = [p for p in stage.parameters() if id(p) not in skip]
        trunk = self.text_tower(tower)
        if not trunk.frozen and (tower == "stage1" or not self.config.shared_text_trunk):
            params += list(trunk.parameters())
        if tower == "stage2" and self.slice_tower is not None and not self.slice_tower.frozen:
            params += list(self.slice_tower.parameters())
        return params

    @torch.no_grad()
    def init_stage2_from_stage1(self) -> None:
        """Start the 2E3 tower from the trained stage-1 tower (the official code starts it from a pretrained
        CLIP): shared ViT weights, projections, logit scale and, with separate trunks, the text trunk."""
        if "stage2" not in self.towers:
            raise ModelError("the model has no stage-2 tower")
        s1, s2 = self.stages["stage1"], self.stages["stage2"]
        target = s2.vision_encoder.state_dict()
        for key, value in s1.vision_encoder.state_dict().items():
            target[key].copy_(value)
        for name in ("mm_vision_proj", "mm_language_proj"):
            getattr(s2, name).load_state_dict(getattr(s1, name).state_dict())
        s2.logit_scale.copy_(s1.logit_scale)
        if not self.config.shared_text_trunk:
            self.text_towers["stage2"].load_state_dict(self.text_towers["stage1"].state_dict())

    @property
    def bridged(self) -> bool:
        """True when the model has CMKI knowledge banks (cross-modal scores are bridged)."""
        return self.config.bank_size is not None

    def add_bank(self, size: int) -> None:
        """Give every tower a fresh (orthogonally initialised) CMKI knowledge bank of ``size`` entries, e.g.
        to fine-tune a bank and the projections on top of a trained or imported model."""
        if self.bridged:
            raise ModelError(f"the model already has a knowledge bank ({self.config.bank_size} entries)")
        self.config = self.config.replace(bank_size=size)
        param = self.stages["stage1"].mm_vision_proj.weight
        for stage in self.stages.values():
            stage.bank = KnowledgeBank(size, self.config.projection_dim).to(param.device, param.dtype)

    def bank(self, tower: str) -> KnowledgeBank:
        self._check_tower(tower)
        if self.stages[tower].bank is None:
            raise ModelError("this model has no CMKI knowledge bank (train with --bridge cmki)")
        return self.stages[tower].bank

    def logit_scale(self, tower: str) -> torch.Tensor:
        """The logit multiplier: ``exp(logit_scale)`` (``"exp"`` mode, unclamped) or the raw parameter
        (``"raw"``: the official quirk)."""
        self._check_tower(tower)
        raw = self.stages[tower].logit_scale
        return raw.exp() if self.config.logit_scale_mode == "exp" else raw

    # ------------------------------------------------------------------ vision side
    def slice_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, C2d)`` features of the D axial planes of ``x`` from our jointly trained slice tower.

        A BiomedCLIP-sourced 2E3 tower never sees the 3D planes: its features come from the official 2D slice
        chain (:mod:`hsenet_search.embedding` computes them) and must be passed in."""
        if self.slice_input != "planes":
            raise ModelError(
                f"this model's 2E3 tower takes BiomedCLIP features of the official 2D slices: pass slice_features "
                f"of shape (B, 32, {self.config.slice_dim}) (hsenet_search.embedding computes them from the volume "
                "file with a BiomedCLIP trunk, or reads <volume>_biomedclip_features.npy)"
            )
        return self.slice_tower(self._volume(x))

    def slice_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """BiomedCLIP trunk CLS features ``(N, C2d)`` of preprocessed slice images ``(N, 3, S, S)``."""
        if self.slice_input != "biomedclip" or self.slice_tower is None:
            raise ModelError(
                "this model has no BiomedCLIP trunk: pass precomputed slice features, or load the "
                "model with a BiomedCLIP checkpoint (biomedclip=DIR)"
            )
        return self.slice_tower.encode_images(images)

    def vision_tokens(self, x: torch.Tensor, tower: str, slice_features: torch.Tensor | None = None) -> torch.Tensor:
        """All tokens of ``tower``'s 3D encoder after its final norm: ``(B, 1 + N, width)``, CLS first."""
        self._check_tower(tower)
        x = self._volume(x)
        centred = self._centred(x)
        if tower == "stage2":
            if slice_features is None:
                slice_features = self.slice_features(x)
            return self.stages[tower].vision_encoder(centred, slice_features.to(x.device))
        return self.stages[tower].vision_encoder(centred)

    def vision_projected(self, x: torch.Tensor, tower: str, slice_features: torch.Tensor | None = None) -> torch.Tensor:
        """``mm_vision_proj(CLS)`` of ``tower``, not normalised (the CMKI bank reads it): ``(B, E)``."""
        return self.projected_from_tokens(self.vision_tokens(x, tower, slice_features), tower)

    def projected_from_tokens(self, tokens: torch.Tensor, tower: str) -> torch.Tensor:
        """``mm_vision_proj(CLS)`` from :meth:`vision_tokens` output (training reuses the tokens)."""
        return self.stages[tower].mm_vision_proj(tokens[:, 0])

    def vision_features(self, x: torch.Tensor, tower: str, slice_features: torch.Tensor | None = None) -> torch.Tensor:
        """``normalize(mm_vision_proj(CLS))`` of ``tower``: ``(B, projection_dim)``, L2-normalised."""
        return F.normalize(self.vision_projected(x, tower, slice_features), dim=-1)

    def patch_tokens(self, x: torch.Tensor, tower: str, slice_features: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens after the final norm, CLS dropped: ``(B, N, width)``, row-major over the patch grid."""
        return self.vision_tokens(x, tower, slice_features)[:, 1:]

    def packed_tokens(self, x: torch.Tensor, tower: str, slice_features: torch.Tensor | None = None) -> torch.Tensor:
        """Spatial Packer output for ``tower``: ``(B, N / prod(packer_kernel), packer_out_dim)``."""
        self._check_tower(tower)
        packer = self.stages[tower].packer
        if packer is None:
            raise ModelError("this model has no Spatial Packer (packer_out_dim is None)")
        return packer(self.patch_tokens(x, tower, slice_features))

    def patch_scores(self, x: torch.Tensor, slice_features: torch.Tensor | None = None) -> torch.Tensor:
        """The 2E3 sigmoid gate of every patch token: ``(B, N)`` in (0, 1)."""
        self._check_tower("stage2")
        x = self._volume(x)
        if slice_features is None:
            slice_features = self.slice_features(x)
        encoder = self.stages["stage2"].vision_encoder
        return encoder.patch_scores(encoder.embed(self._centred(x)), slice_features.to(x.device))

    # ------------------------------------------------------------------ localisation head (RadFinder §1.4)
    @property
    def has_localisation_head(self) -> bool:
        return bool(self.config.localisation)

    @property
    def depth_patch(self) -> int:
        """Model depth voxels behind one per-depth embedding (one depth bin)."""
        return self.config.patch_size[0] * self.config.packer_kernel[0]

    def add_localisation_head(self) -> None:
        """Give the stage-1 tower a localisation head (a packer spanning each depth slab and a snippet
        projection copied from the language projection); the head then needs training (``train
        --loc-loss-weight``)."""
        if self.has_localisation_head:
            return
        cfg = self.config
        grid = cfg.grid
        out_dim = cfg.packer_out_dim or cfg.projection_dim
        kernel = (1, grid[1], grid[2])
        self.config = cfg.replace(localisation=True, packer_out_dim=out_dim, packer_kernel=kernel)
        device = self.device
        for name, stage in self.stages.items():
            if stage.packer is None or tuple(stage.packer.kernel) != kernel or name == LOCALISATION_TOWER:
                packer = SpatialPacker(cfg.width, out_dim, grid, kernel, cfg.packer_dropout)
                stage.packer = packer.to(device)
        stage = self.stages[LOCALISATION_TOWER]
        stage.add_snippet_projection(self.text_tower(LOCALISATION_TOWER).width, out_dim)
        stage.loc_language_proj.to(device)

    def localisation_parameters(self) -> list[nn.Parameter]:
        """What the localisation loss trains besides the tower: the stage-1 packer and snippet projection."""
        self.require_localisation_head()
        stage = self.stages[LOCALISATION_TOWER]
        return [*stage.packer.parameters(), *stage.loc_language_proj.parameters()]

    def depth_features_from_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Stage-1 patch tokens ``(B, N, width)`` -> L2-normalised per-depth embeddings ``(B, bins, E)``."""
        self.require_localisation_head()
        return F.normalize(self.stages[LOCALISATION_TOWER].packer(patches), dim=-1)

    def snippet_features_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled snippet texts -> L2-normalised ``(S, E)`` through the snippet projection."""
        self.require_localisation_head()
        proj = self.stages[LOCALISATION_TOWER].loc_language_proj
        return F.normalize(proj(pooled.to(proj.weight.device)), dim=-1)

    def encode_depths(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed volumes ``(B, 1, D, H, W)`` -> per-depth embeddings ``(B, bins, E)`` (eval mode)."""
        self.require_localisation_head()
        with self._inference():
            return self.depth_features_from_patches(self.patch_tokens(self._volume(x), LOCALISATION_TOWER))

    def encode_snippets(self, texts: list[str]) -> torch.Tensor:
        """Snippet texts -> ``(S, E)`` L2-normalised (eval, no grad)."""
        self.require_localisation_head()
        with self._inference():
            return self.snippet_features_from_pooled(self.text_pooled(list(texts), LOCALISATION_TOWER))

    def require_localisation_head(self) -> None:
        """A ModelError (one line, with the fix) when the model has no localisation head."""
        if not self.has_localisation_head:
            raise ModelError(
                "this model has no localisation head; give it one by training with --loc-loss-weight "
                "(hsenet-search train --init MODEL --loc-loss-weight 1)"
            )

    # ------------------------------------------------------------------ text side
    def text_pooled(self, texts: list[str], tower: str) -> torch.Tensor:
        """Cleaned, truncated texts through ``tower``'s trunk, pooled: ``(B, text_width)`` (no projection, no
        normalisation; without gradients when the trunk is frozen)."""
        return self.text_tower(tower)(list(texts))

    def text_projected_from_pooled(self, pooled: torch.Tensor, tower: str) -> torch.Tensor:
        """``mm_language_proj(pooled)``, not normalised: ``(B, projection_dim)``."""
        self._check_tower(tower)
        proj = self.stages[tower].mm_language_proj
        return proj(pooled.to(proj.weight.device))

    def text_features_from_pooled(self, pooled: torch.Tensor, tower: str) -> torch.Tensor:
        """``normalize(mm_language_proj(pooled))``: ``(B, projection_dim)``, L2-normalised."""
        return F.normalize(self.text_projected_from_pooled(pooled, tower), dim=-1)

    # ------------------------------------------------------------------ embedding API
    def encode_volume(
        self,
        x: torch.Tensor,
        *,
        slice_features: torch.Tensor | None = None,
        embedding: str | None = None,
        form: str | None = None,
    ) -> torch.Tensor:
        """Preprocessed volumes ``(B, 1, D, H, W)`` -> ``(B, E)`` (eval mode, no gradients).

        ``slice_features (B, slices, C2d)`` replaces the slice tower for the 2E3 tower (required when the model has
        none). ``embedding`` is ``stage1``, ``stage2`` or ``fusion`` (default: ``config.embedding``).
        ``form``: ``plain`` (L2-normalised; the only form without a bank), ``bridged`` (the default with a
        bank: ``½(p + r)``, whose inner product with a text embedding is BrgSA's score) or ``stored``
        (``[p, r] / √2``, ``(B, 2E)``: what an index keeps, see :mod:`hsenet_search.models.bridge`).
        """
        form = form or ("bridged" if self.bridged else "plain")
        if form not in VOLUME_FORMS or (form != "plain" and not self.bridged):
            allowed = VOLUME_FORMS if self.bridged else ("plain",)
            raise ModelError(f"volume form {form!r} is not available; this model offers {', '.join(allowed)}")
        towers = self.config.embedding_towers(embedding)
        with self._inference():
            x = self._volume(x)
            if "stage2" in towers and slice_features is None:
                slice_features = self.slice_features(x)
            raw = [self.vision_projected(x, t, slice_features) for t in towers]
            plain = _combine([F.normalize(f, dim=-1) for f in raw])
            if form == "plain":
                return plain
            if form == "bridged":
                return _combine([bridged_volume(f, self.stages[t].bank) for t, f in zip(towers, raw)])
            recon = _combine([F.normalize(self.stages[t].bank(f), dim=-1) for t, f in zip(towers, raw)])
        return stored_volume(plain, recon)

    def encode_text(self, texts: list[str], *, embedding: str | None = None, batch_size: int = 32) -> torch.Tensor:
        """Report texts -> L2-normalised ``(B, E)`` (eval mode, no gradients), in batches of ``batch_size``."""
        if isinstance(texts, str):
            texts = [texts]
        towers = self.config.embedding_towers(embedding)
        out = []
        with self._inference():
            for start in range(0, len(texts), batch_size):
                chunk = list(texts[start : start + batch_size])
                pooled: dict[str, torch.Tensor] = {}
                feats = []
                for t in towers:
                    key = self.config.text_trunk_key(t)
                    if key not in pooled:
                        pooled[key] = self.text_pooled(chunk, t)
                    feats.append(self.text_features_from_pooled(pooled[key], t))
                out.append(_combine(feats))
        if not out:
            return torch.zeros(0, len(towers) * self.config.projection_dim, device=self.device)
        return torch.cat(out)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors``, ``preprocessing.json`` (+ tokenizer files for a
        ``text_source='config'`` trunk) through a temp directory."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.saved_state().items()}
        meta = {
            "model_type": MODEL_TYPE,
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "embedding_dim": self.embedding_dim,
            "config": self.config.to_dict(),
        }
        if self.config.text_source == "minilm":
            meta["text_package_version"] = minilm_version()
        preprocessing = self.preprocessing

        def write(tmp: Path) -> None:
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            (tmp / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")
            if self.config.text_source == "config":
                self.text_towers[self.config.text_trunk_keys[0]].tokenizer.save_pretrained(str(tmp))
            (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

        return write_dir_atomic(path, write)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> HSENetCLIP:
        """Load one of our model directories (other formats: :func:`hsenet_search.models.loaders.load_directory`).
        Returned in eval mode."""
        path = Path(path)
        meta = read_meta(path)
        if meta.get("model_type") != MODEL_TYPE:
            raise ModelError(f"model_type {meta.get('model_type')!r} is not {MODEL_TYPE!r}", path)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"model format_version {meta.get('format_version')} is not {FORMAT_VERSION}", path)
        if not isinstance(meta.get("config"), dict):
            raise ModelError("config.json has no 'config' object", path)
        config = ModelConfig.from_dict(meta["config"])
        text_towers = saved_text_towers(config, path) if config.text_source == "config" else None
        model = cls(config, text_towers=text_towers)
        tensors = read_weights(path / "model.safetensors")
        check_tensors(model.saved_state(), tensors, path / "model.safetensors")
        model.load_state_dict(tensors, strict=False)
        if meta.get("fingerprint") != model.fingerprint:
            raise ModelError("the weights do not match the fingerprint in config.json (corrupted or edited)", path)
        pre_path = path / "preprocessing.json"
        if not pre_path.exists():
            raise ModelError("no preprocessing.json in the model directory", path)
        from hsenet_search.data.preprocess import load_profile

        model.preprocessing = load_profile(pre_path).to_dict()
        model.check_profile(pre_path)
        return model.eval()

    def check_profile(self, source: str | Path | None = None) -> None:
        """The preprocessing profile must produce tensors of the model's ``img_size``."""
        shape = tuple(self.profile.output_shape)
        if shape != tuple(self.config.img_size):
            raise ModelError(
                f"preprocessing profile {self.preprocessing.get('name')!r} produces {shape}, not the "
                f"model's img_size {tuple(self.config.img_size)}; choose a matching profile",
                source,
            )

    # ------------------------------------------------------------------ internals
    def _check_tower(self, tower: str) -> None:
        if tower not in self.stages:
            raise ModelError(f"this model has no {tower!r} tower (towers: {', '.join(self.towers)})")

    def _volume(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.config.in_channels, *self.config.img_size)
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or tuple(x.shape[1:]) != expected:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ModelError(f"volume tensor has shape {shape}; the model expects (B, {', '.join(map(str, expected))})")
        param = self.stages["stage1"].mm_vision_proj.weight
        return x.to(device=param.device, dtype=param.dtype)

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        """What the 3D encoders see: ``(x - input_mean) / input_std``."""
        return (x - self.config.input_mean) / self.config.input_std

    @contextlib.contextmanager
    def _inference(self):
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)


def _combine(feats: list[torch.Tensor]) -> torch.Tensor:
    """One tower: its vector; two: ``[a, b] / sqrt(2)`` (unit norm, inner product = mean cosine)."""
    if len(feats) == 1:
        return feats[0]
    return torch.cat(feats, dim=-1) / math.sqrt(len(feats))


def _official_chain() -> dict:
    """The official 2D slice chain's description (imported here: text-only loads never read volumes)."""
    from hsenet_search.data.slices import OFFICIAL_CHAIN

    return OFFICIAL_CHAIN.to_dict()
