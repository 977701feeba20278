"""Two-stage HSENet training: stage 1 (global contrastive), stage 2 (2E3 + semantic consistency).

Resumable (``training/stage{N}/checkpoint.pt`` inside the output model directory, loaded with
``weights_only=True``), seeded, with periodic validation R@k on the valid split, CUDA/bf16 when
present and multi-process data parallelism under ``torchrun`` (gathered features for the
contrastive loss, gradients averaged by all-reduce).

``bridge="cmki"`` trains BrgSA's knowledge bank (:mod:`hsenet_search.models.bridge`) with its CMKI objective
in place of the contrastive loss (in-batch negatives of each process, as BrgSA's single-GPU recipe);
``text_source`` trains on report summaries instead of, or alongside, the reports (at most five summary
sentences drawn per step, as BrgSA does); ``train_parts="heads"`` trains only the projections, logit scale and
bank of the tower (e.g. on top of an imported official model).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from hsenet_search.atomic import atomic_path, write_json
from hsenet_search.data.cache import PreprocessCache
from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.labels import LABELS
from hsenet_search.data.resolve import case_text, check_report_text, truncate_sentences
from hsenet_search.data.snippets import kept, mine_snippets
from hsenet_search.data.summarise import draw_summary
from hsenet_search.devices import resolve_device
from hsenet_search.embedding import Prepared, embed_cases, slice_features_of, slice_recipe
from hsenet_search.errors import DatasetError, HSENetError, ModelError
from hsenet_search.eval.retrieval import recall_at_k
from hsenet_search.models.bridge import BANK_SIZE, cmki_loss
from hsenet_search.models.clip import LOCALISATION_TOWER

from .data import AUGMENTATIONS, EpochOrder, ScanDataset, batches_per_epoch, collate_scans, group_scans
from .losses import (
    consistency_weight,
    contrastive_loss,
    disease_prompt_loss,
    disease_prompts,
    relation_loss,
)
from .radfinder import (
    LOCALISATION_SIGMA_BINS,
    SIGLIP_BIAS_INIT,
    init_siglip_scale,
    localisation_loss,
    pos_weights,
    prompt_loss,
    prompt_variants,
)

TOWER = {1: "stage1", 2: "stage2"}
BRIDGES = ("none", "cmki")
TEXT_SOURCES = ("report", "summary", "both")
TRAIN_PARTS = ("all", "heads")
PROMPT_LOSSES = ("pair", "radfinder")
_FROZEN_TEXT_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}  # pooled outputs of the packaged frozen MiniLM


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in ``training/config.json``)."""

    data: str
    out: str
    stage: int = 1
    config: str = "tiny"  # named model config for a fresh stage-1 model
    init: str | None = None  # model dir to start from (stage 2: the stage-1 model; default: ``out``)
    loss: str = "clip"  # clip | siglip
    siglip_bias_init: float = SIGLIP_BIAS_INIT  # RadFinder's −10 (tuned for batches of thousands)
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_ratio: float = 0.03
    seed: int = 0
    workers: int = 2
    augment: str = "intensity"  # none | intensity | official
    text_field: str | None = None  # findings | impression | findings+impression (None: the model's own)
    text_truncation: str = "head"  # head (tokenizer truncation) | sentences (official random-sentence draw)
    prompt_loss_weight: float = 0.0  # disease-prompt loss from the 18 labels (0 = off)
    prompt_loss: str = "pair"  # pair (one prompt pair per label) | radfinder (3+3 prompts, pos_weight)
    loc_loss_weight: float = 0.0  # localisation loss on snippets mined from the training reports (0 = off)
    # Gaussian width of the depth target in bins: RadFinder's 2 bins are 24 mm at its 12 mm bins; the tiny
    # model's bins are ~40 mm (8 per scan), where 0.6 bins keeps RadFinder's 24 mm.
    loc_sigma_bins: float = LOCALISATION_SIGMA_BINS
    consistency_decay_steps: int = 5000
    keep_stage2: bool = False  # stage 2: keep the model's 2E3 weights (fine-tuning) instead of copying stage 1
    eval_every: int = 0  # steps; 0 = once per epoch
    save_every: int = 50
    ks: tuple[int, ...] = (1, 5, 10)
    device: str = "auto"
    cache_dir: str | None = None
    bridge: str | None = None  # none | cmki (None: cmki when the model has a knowledge bank, else none)
    bank_size: int = BANK_SIZE  # entries of a new knowledge bank (BrgSA: 2048)
    text_source: str = "report"  # report | summary | both (a fair draw between the two per pair and step)
    summaries: str | None = None  # Parquet from ``data summarise`` (default: the rule-based summariser, now)
    train_parts: str = "all"  # all | heads (projections, logit scale and bank only)


@dataclass
class TrainResult:
    """What a run did: steps, losses and validation recalls over time."""

    out: str
    stage: int
    steps: int
    epochs: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    final_validation: dict | None = None

    def describe(self) -> str:
        val = self.final_validation or {}
        recalls = ", ".join(f"{k} {v:.1f}" for k, v in val.items() if k.startswith(("t2v", "v2t")))
        return (
            f"stage {self.stage}: {self.steps} steps ({self.epochs:.1f} epochs) in {self.seconds:.0f}s"
            f" -> {self.out}" + (f"\nvalidation R@k: {recalls}" if recalls else "")
        )


def state_dir(out: str | Path, stage: int) -> Path:
    """Where a stage's resumable state lives: ``OUT/training/stage{N}/`` (checkpoint, history, config)."""
    return Path(out) / "training" / f"stage{stage}"


def _text_of(protocol: str):
    check_report_text(protocol)
    return lambda case: case_text(case, protocol)


def _truncated(texts: list[str], tower, budget: int, seed: int) -> list[str]:
    """The official ``truncate_text`` applied once per text (a fixed draw per run: pooled texts are cached)."""
    rng = random.Random(seed)
    tokenizer = tower.tokenizer

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    return [truncate_sentences(t, count, budget, rng) for t in texts]


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


class Trainer:
    """Runs one stage of training into a model directory."""

    def __init__(self, cfg: TrainConfig):
        if cfg.stage not in TOWER:
            raise HSENetError(f"--stage must be 1 or 2, got {cfg.stage}")
        if (cfg.epochs is None) == (cfg.steps is None):
            raise HSENetError("give exactly one of --epochs or --steps")
        if cfg.loss not in ("clip", "siglip"):
            raise HSENetError(f"unknown loss {cfg.loss!r}; expected clip or siglip")
        if cfg.text_truncation not in ("head", "sentences"):
            raise HSENetError(f"unknown text truncation {cfg.text_truncation!r}; expected head or sentences")
        if cfg.augment not in AUGMENTATIONS:
            raise HSENetError(f"unknown augmentation {cfg.augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
        for name, value, allowed in (
            ("bridge", cfg.bridge, (None, *BRIDGES)),
            ("text source", cfg.text_source, TEXT_SOURCES),
            ("train parts", cfg.train_parts, TRAIN_PARTS),
        ):
            if value not in allowed:
                choices = ", ".join(a for a in allowed if a)
                raise HSENetError(f"unknown {name} {value!r}; expected one of {choices}")
        if cfg.bridge == "cmki" and cfg.loss != "clip":
            raise HSENetError("--bridge cmki trains with its own InfoNCE terms; leave --loss at clip")
        if cfg.prompt_loss not in PROMPT_LOSSES:
            raise HSENetError(f"unknown prompt loss {cfg.prompt_loss!r}; expected {', '.join(PROMPT_LOSSES)}")
        if cfg.loc_loss_weight > 0 and cfg.stage != 1:
            raise HSENetError("the localisation head trains with stage 1 (--loc-loss-weight needs --stage 1)")
        if cfg.loc_loss_weight > 0 and cfg.augment == "official":
            raise HSENetError("--augment official flips the depth axis: no --loc-loss-weight with it")
        self.cfg = cfg
        self.tower = TOWER[cfg.stage]
        self.out = Path(cfg.out)
        self.state_dir = state_dir(self.out, cfg.stage)
        self.rank, self.world = _distributed()
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        _seed_everything(cfg.seed + self.rank)
        fresh = cfg.stage == 1 and not cfg.init and not (self.state_dir / "checkpoint.pt").exists()
        self.model = self._load_model().to(self.device)
        self.bridge = self._bridge()
        if cfg.loc_loss_weight > 0:
            self.model.add_localisation_head()
        if cfg.loss == "siglip" and fresh:
            init_siglip_scale(self.model, self.tower)
        self.profile = self.model.profile
        self.cache = PreprocessCache(Path(cfg.cache_dir) if cfg.cache_dir else None)
        self.recipe = slice_recipe(self.model, self.tower)
        text_of = _text_of(cfg.text_field or self.model.text_protocol)
        train_cases = open_dataset(cfg.data, split="train", missing="skip")
        valid_cases = open_dataset(cfg.data, split="valid", missing="skip")
        if len(train_cases) == 0:
            raise DatasetError("no training cases in the train split", cfg.data)
        self.train_scans, self.train_texts = group_scans(train_cases, text_of)
        self.valid_scans, self.valid_texts = group_scans(valid_cases, text_of)
        if cfg.text_truncation == "sentences":
            tower = self.model.text_tower(self.tower)
            self.train_texts = _truncated(self.train_texts, tower, tower.max_length, cfg.seed)
        self.train_summaries = []
        if cfg.text_source != "report":
            self.train_summaries = _summaries_of(self.train_scans, len(self.train_texts), cfg.summaries)
        if len(self.train_scans) < cfg.batch_size * self.world:
            raise DatasetError(
                f"{len(self.train_scans)} training scans are fewer than one global batch "
                f"({cfg.batch_size} x {self.world}); lower --batch-size",
                cfg.data,
            )
        self.per_epoch = batches_per_epoch(len(self.train_scans), cfg.batch_size, self.world)
        self.total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * self.per_epoch
        self.loss_fn = contrastive_loss(cfg.loss, self.rank, self.world)
        self.snippet_texts: list[str] = []
        self.train_snippets = None
        if cfg.loc_loss_weight > 0:
            self.snippet_texts, self.train_snippets = self._mine_snippets()
        self._pos_weight_cache: torch.Tensor | None = None
        self._patches: torch.Tensor | None = None  # the step's stage-1 patch tokens (localisation loss)
        self._setup_trainable()

    # ----------------------------------------------------------------- set-up
    def _mine_snippets(self) -> tuple[list[str], list[tuple[tuple[int, int], ...]]]:
        """Snippet texts (references removed) and, per training scan, its ``(text index, stored slice)``
        citations, mined from the scan's report by :mod:`hsenet_search.data.snippets`."""
        texts: dict[str, int] = {}
        per_scan = []
        for scan in self.train_scans:
            cited = []
            for snippet in kept(mine_snippets(scan.cases[0].report)):
                if snippet.text.strip():
                    cited.append((texts.setdefault(snippet.text, len(texts)), snippet.slice_index))
            per_scan.append(tuple(cited))
        if not texts:
            message = "--loc-loss-weight: no training report cites a slice (series S image I)"
            raise DatasetError(message, self.cfg.data)
        return list(texts), per_scan

    def _load_model(self):
        from hsenet_search.models import create_model, load_model

        cfg = self.cfg
        resume_from = self.out if (self.state_dir / "checkpoint.pt").exists() else None
        if cfg.stage == 1:
            if cfg.init:
                return load_model(cfg.init)
            if resume_from and (self.out / "config.json").exists():
                return load_model(self.out)
            return create_model(cfg.config)
        source = cfg.init or (str(self.out) if (self.out / "config.json").exists() else None)
        if source is None:
            raise ModelError("stage 2 needs a trained stage-1 model: pass --init DIR or train stage 1 into --out")
        model = load_model(source)
        if "stage2" not in model.towers:
            raise ModelError("the model has no 2E3 (stage-2) tower to train", source)
        if not (self.state_dir / "checkpoint.pt").exists() and not cfg.keep_stage2:
            model.init_stage2_from_stage1()
        return model

    def _bridge(self) -> str:
        """``cmki`` or ``none``; a model given a bank by ``--bridge cmki`` gets it here, before any checkpoint
        is loaded, so a resumed run finds the same parameters."""
        wanted = self.cfg.bridge or ("cmki" if self.model.bridged else "none")
        if wanted == "cmki" and not self.model.bridged:
            self.model.add_bank(self.cfg.bank_size)
        if wanted == "none" and self.model.bridged:
            raise ModelError("this model has a CMKI knowledge bank: train it with --bridge cmki")
        return wanted

    def _setup_trainable(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)
        params = self.model.tower_parameters(self.tower)
        if self.cfg.train_parts == "heads":
            stage = self.model.stages[self.tower]
            heads = [stage.mm_vision_proj, stage.mm_language_proj, stage.bank]
            heads = [m for m in heads if m is not None]
            keep = {id(p) for m in heads for p in m.parameters()} | {id(stage.logit_scale)}
            params = [p for p in params if id(p) in keep]
        if self.cfg.loc_loss_weight > 0:
            params += self.model.localisation_parameters()
        for p in params:
            p.requires_grad_(True)
        self.params = [p for p in params if p.requires_grad]
        self.logit_bias = None
        if self.cfg.loss == "siglip":
            bias = torch.tensor(float(self.cfg.siglip_bias_init), device=self.device)
            self.logit_bias = torch.nn.Parameter(bias)
            self.params.append(self.logit_bias)
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.cfg.lr,
        )
        warmup = int(round(self.cfg.warmup_ratio * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(self.total_steps, warmup))

    @torch.no_grad()
    def _pooled_texts(self, texts: list[str], tower: str) -> torch.Tensor | None:
        """Text-trunk outputs, computed once per process when the trunk is frozen; None when it trains."""
        if not self.model.text_trunk_frozen(tower):
            return None
        cfg = self.model.config
        key = (cfg.text_source, cfg.text_trunk_key(tower), cfg.text_pooling, cfg.text_max_length)
        store = _FROZEN_TEXT_CACHE.setdefault(key, {}) if cfg.text_source == "minilm" else {}
        missing = [t for t in dict.fromkeys(texts) if t not in store]
        for i in range(0, len(missing), 64):
            batch = missing[i : i + 64]
            store.update(zip(batch, self.model.text_pooled(batch, tower).cpu()))
        return torch.stack([store[t] for t in texts]).to(self.device) if texts else None

    def _text_features(
        self, text_idx: torch.Tensor, drawn: list[str] | None, cache: torch.Tensor | None, tower: str
    ) -> torch.Tensor:
        """Projected (not normalised) text features of a batch: the cached reports, or ``drawn`` texts."""
        if drawn is None and cache is not None:
            return self.model.text_projected_from_pooled(cache[text_idx], tower)
        texts = drawn if drawn is not None else [self.train_texts[i] for i in text_idx.tolist()]
        pooled = self._pooled_texts(texts, tower)
        if pooled is None:
            pooled = self.model.text_pooled(texts, tower)
        return self.model.text_projected_from_pooled(pooled, tower)

    def _drawn_texts(self, text_idx: torch.Tensor, step: int) -> list[str] | None:
        """This step's training texts under ``text_source`` (None: the reports, whose features are cached)."""
        if self.cfg.text_source == "report":
            return None
        rng = random.Random(f"{self.cfg.seed}:{self.rank}:{step}")
        out = []
        for i in text_idx.tolist():
            if self.cfg.text_source == "both" and rng.random() < 0.5:
                out.append(self.train_texts[i])
            else:
                out.append(draw_summary(self.train_summaries[i], rng))
        return out

    # ----------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, step: int, history: list[dict]) -> None:
        if self.rank != 0:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": step,
            "torch_rng": torch.get_rng_state(),
            "logit_bias": self.logit_bias.detach().cpu() if self.logit_bias is not None else None,
        }
        with atomic_path(self.state_dir / "checkpoint.pt") as tmp:
            torch.save(state, tmp)
        _write_json(self.state_dir / "history.json", history)
        _write_json(self.state_dir / "config.json", asdict(self.cfg))

    def _load_checkpoint(self) -> tuple[int, list[dict]]:
        path = self.state_dir / "checkpoint.pt"
        if not path.exists():
            return 0, []
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.logit_bias is not None and state.get("logit_bias") is not None:
            self.logit_bias.data.copy_(state["logit_bias"].to(self.device))
        history_path = self.state_dir / "history.json"
        history = json.loads(history_path.read_text()) if history_path.exists() else []
        return int(state["step"]), history

    # ----------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict:
        """Text→volume and volume→text R@k on the valid split (one reconstruction per scan)."""
        if len(self.valid_scans) < 2:
            return {}
        self.model.eval()
        dataset = ScanDataset(self.valid_scans, self.profile, self.cache, augment="none", seed=self.cfg.seed)
        cases = [dataset.case_of(i, 0) for i in range(len(dataset))]
        feats, kept = [], []
        for batch in embed_cases(
            self.model, cases, batch_size=self.cfg.batch_size, workers=0, cache=self.cache, embedding=self.tower
        ):
            feats.append(torch.from_numpy(batch.embeddings))
            kept += batch.indices
        vol = torch.cat(feats)
        texts = [self.valid_texts[self.valid_scans[i].text_index] for i in kept]
        pooled = self._pooled_texts(texts, self.tower)
        txt = (
            (
                self.model.text_features_from_pooled(pooled, self.tower)
                if pooled is not None
                else self.model.encode_text(texts, embedding=self.tower)
            )
            .float()
            .cpu()
        )
        scores = (vol @ txt.T).numpy()
        self.model.train()
        out = {f"t2v_R@{k}": v for k, v in recall_at_k(scores.T, self.cfg.ks).items()}
        out.update({f"v2t_R@{k}": v for k, v in recall_at_k(scores, self.cfg.ks).items()})
        out["n_valid"] = len(kept)
        return out

    # ----------------------------------------------------------------- loop
    def train(self, progress: bool = True, stop_after: int | None = None) -> TrainResult:
        """Train to ``total_steps`` (resuming from the checkpoint); ``stop_after`` ends this call early after
        that many steps, with the checkpoint saved, as a preempted job would."""
        cfg = self.cfg
        start = time.time()
        step, history = self._load_checkpoint() if (self.state_dir / "checkpoint.pt").exists() else (0, [])
        last = self.total_steps if stop_after is None else min(self.total_steps, step + stop_after)
        reports_only = cfg.text_source == "report"
        pooled = self._pooled_texts(self.train_texts, self.tower) if reports_only else None
        pooled_s1 = None
        if cfg.stage == 2 and reports_only:
            pooled_s1 = self._pooled_texts(self.train_texts, "stage1")
        prompts_pos, prompts_neg = self._prompt_texts()
        prompt_cache = (self._pooled_texts(prompts_pos, self.tower), self._pooled_texts(prompts_neg, self.tower))
        snippet_cache = None
        if self.snippet_texts:
            snippet_cache = self._pooled_texts(self.snippet_texts, LOCALISATION_TOWER)
        dataset = ScanDataset(
            self.train_scans,
            self.profile,
            self.cache,
            cfg.augment,
            cfg.seed,
            self.recipe,
            snippets=self.train_snippets,
            patch_depth=self.model.depth_patch,
        )
        eval_every = cfg.eval_every or self.per_epoch
        self.model.train()
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()
        )
        columns = [
            TextColumn(f"stage {cfg.stage}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.3f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, disable=not progress or self.rank != 0) as bar:
            task = bar.add_task("train", total=self.total_steps, completed=step, loss=float("nan"))
            while step < last:
                epoch, offset = divmod(step, self.per_epoch)
                order = EpochOrder(
                    len(self.train_scans),
                    seed=cfg.seed,
                    epoch=epoch,
                    batch_size=cfg.batch_size,
                    start_batch=offset,
                    rank=self.rank,
                    world_size=self.world,
                )
                loader = DataLoader(
                    dataset,
                    batch_size=cfg.batch_size,
                    sampler=order,
                    drop_last=True,
                    num_workers=cfg.workers,
                    persistent_workers=False,
                    collate_fn=collate_scans,
                )
                for x, text_idx, labels, slices, targets in loader:
                    with autocast:
                        loss, parts = self._step_loss(
                            x.to(self.device),
                            text_idx,
                            labels.to(self.device),
                            pooled,
                            pooled_s1,
                            prompt_cache,
                            step,
                            self._slice_features(slices),
                        )
                        if cfg.loc_loss_weight > 0:
                            loc = self._localisation_loss(targets, snippet_cache)
                            loss = loss + cfg.loc_loss_weight * loc
                            parts["localisation"] = float(loc.detach())
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self._average_gradients()
                    torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                    self.optimizer.step()
                    self.scheduler.step()
                    step += 1
                    record = {"step": step, "loss": float(loss.detach()), **parts}
                    bar.update(task, completed=step, loss=record["loss"])
                    if step % eval_every == 0 or step == self.total_steps:
                        record.update(self.validate())
                        if self.rank == 0 and progress:
                            bar.console.print(_describe_record(record))
                    history.append(record)
                    if step % cfg.save_every == 0 or step == last:
                        self._save_checkpoint(step, history)
                    if step >= last:
                        break
        if self.rank == 0:
            self._save_checkpoint(step, history)
            self.model.save_pretrained(self.out)
        final = next((h for h in reversed(history) if "n_valid" in h), None)
        return TrainResult(str(self.out), cfg.stage, step, step / self.per_epoch, time.time() - start, history, final)

    def _slice_features(self, slices: list) -> torch.Tensor | None:
        """The batch's slice features for the 2E3 tower (None: the model reads its planes itself)."""
        if self.recipe.mode == "none":
            return None
        with torch.no_grad():
            return slice_features_of(self.model, [Prepared(None, item) for item in slices]).to(self.device)

    def _step_loss(self, x, text_idx, labels, pooled, pooled_s1, prompt_cache, step, slice_features=None):
        tower, model = self.tower, self.model
        tokens = model.vision_tokens(x, tower, slice_features)
        self._patches = tokens[:, 1:] if self.cfg.loc_loss_weight > 0 else None
        drawn = self._drawn_texts(text_idx, step)
        img_raw = model.projected_from_tokens(tokens, tower)
        txt_raw = self._text_features(text_idx, drawn, pooled, tower)
        img, txt = F.normalize(img_raw, dim=-1), F.normalize(txt_raw, dim=-1)
        scale = model.logit_scale(tower)
        if self.bridge == "cmki":
            terms = cmki_loss(img_raw, txt_raw, model.bank(tower))
            loss = terms.total
            parts = {
                "contrastive": float(terms.original.detach()),
                "reconstruction": float(terms.reconstruction.detach()),
                "bridged": float(terms.bridged.detach()),
            }
        elif self.cfg.loss == "siglip":
            loss = self.loss_fn(img, txt, scale, self.logit_bias)
            parts = {"contrastive": float(loss.detach())}
        else:
            loss = self.loss_fn(img, txt, scale)
            parts = {"contrastive": float(loss.detach())}
        if self.cfg.stage == 2:
            weight = consistency_weight(step, self.cfg.consistency_decay_steps)
            if weight > 0:
                with torch.no_grad():
                    img1 = model.vision_features(x, "stage1")
                    txt1 = F.normalize(self._text_features(text_idx, drawn, pooled_s1, "stage1"), dim=-1)
                rel = relation_loss(img1, txt1, img, txt, scale)
                loss = loss + weight * rel
                parts["consistency"] = float(rel.detach())
        if self.cfg.prompt_loss_weight > 0:
            pos_texts, neg_texts = self._prompt_texts()
            pos = self._prompt_features(prompt_cache[0], pos_texts)
            neg = self._prompt_features(prompt_cache[1], neg_texts)
            if self.cfg.prompt_loss == "radfinder":
                variants = len(pos) // len(LABELS)
                pos, neg = pos.reshape(len(LABELS), variants, -1), neg.reshape(len(LABELS), variants, -1)
                variant = torch.randint(0, variants, labels.shape, device=labels.device)
                dp = prompt_loss(img, pos, neg, variant, labels, torch.log(scale), self._pos_weight())
            else:
                dp = disease_prompt_loss(img, pos, neg, labels, scale)
            loss = loss + self.cfg.prompt_loss_weight * dp
            parts["prompt"] = float(dp.detach())
        return loss, parts

    def _prompt_texts(self) -> tuple[list[str], list[str]]:
        """The prompts: one pair per label, or RadFinder's 3 + 3 per label (flattened label-major)."""
        if self.cfg.prompt_loss != "radfinder":
            return disease_prompts()
        pos, neg = prompt_variants()
        return [t for row in pos for t in row], [t for row in neg for t in row]

    def _pos_weight(self) -> torch.Tensor:
        """RadFinder's per-label ``min(#neg / #pos, 20)`` over the training scans (computed once)."""
        if self._pos_weight_cache is None:
            rows = [s.labels if s.labels is not None else [-1] * len(LABELS) for s in self.train_scans]
            self._pos_weight_cache = pos_weights(torch.tensor(rows)).to(self.device)
        return self._pos_weight_cache

    def _localisation_loss(self, targets: list, snippet_cache: torch.Tensor | None) -> torch.Tensor:
        """RadFinder's soft cross-entropy over depth bins for the batch's drawn snippets (0 when none)."""
        rows = [i for i, t in enumerate(targets) if t is not None]
        if not rows:
            return self._patches.sum() * 0.0
        text_idx = torch.tensor([targets[i][0] for i in rows])
        bins = torch.tensor([targets[i][1] for i in rows], device=self.device)
        if snippet_cache is not None:
            pooled = snippet_cache[text_idx.to(snippet_cache.device)]
        else:
            texts = [self.snippet_texts[i] for i in text_idx.tolist()]
            pooled = self.model.text_pooled(texts, LOCALISATION_TOWER)
        snippets = self.model.snippet_features_from_pooled(pooled)
        depths = self.model.depth_features_from_patches(self._patches[rows])
        valid = torch.ones(depths.shape[:2], dtype=torch.bool, device=self.device)
        return localisation_loss(snippets.float(), depths.float(), bins, valid, sigma=self.cfg.loc_sigma_bins)

    def _prompt_features(self, cache, texts):
        if cache is not None:
            return self.model.text_features_from_pooled(cache, self.tower)
        return self.model.text_features_from_pooled(self.model.text_pooled(texts, self.tower), self.tower)

    def _average_gradients(self) -> None:
        if self.world <= 1:
            return
        for p in self.params:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world


def _summaries_of(scans, n_texts: int, path: str | None) -> list[list[str]]:
    """The summary sentences of each de-duplicated training text (from its scan's full report): read from a
    ``data summarise`` Parquet file, or made by the rule-based summariser when none is given."""
    from hsenet_search.data.summarise import RULES, report_hash

    table: dict[str, list[str]] | None = None
    if path is not None:
        import pandas as pd

        try:
            frame = pd.read_parquet(path, columns=["report_hash", "summary"])
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one user error
            raise DatasetError(
                f"cannot read summaries ({type(exc).__name__}); write them with data summarise", path
            ) from exc
        table = {h: [str(x) for x in s] for h, s in zip(frame["report_hash"], frame["summary"])}
    out: list[list[str] | None] = [None] * n_texts
    for scan in scans:
        if out[scan.text_index] is not None:
            continue
        report = scan.cases[0].report
        if table is None:
            out[scan.text_index] = RULES.summarise(report)
        elif report_hash(report) in table and table[report_hash(report)]:
            out[scan.text_index] = table[report_hash(report)]
        else:
            raise DatasetError(f"no summary of scan {scan.scan_id}'s report; re-run data summarise", path)
    return out


def _describe_record(record: dict) -> str:
    recalls = "  ".join(f"{k} {v:.1f}" for k, v in record.items() if k.startswith(("t2v", "v2t")))
    return f"step {record['step']}: loss {record['loss']:.3f}  {recalls}"


def _write_json(path: Path, obj) -> None:
    write_json(path, obj, indent=1)


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Run one training stage described by ``cfg``."""
    return Trainer(cfg).train(progress=progress)
