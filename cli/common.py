"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON on stdout (machine-readable, no rich markup)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


class Target(str, Enum):
    """What a volume query searches (``hsenet_search.engine.TARGETS``)."""

    volumes = "volumes"
    reports = "reports"


class Unit(str, Enum):
    """Benchmark evaluation unit (``hsenet_search.eval.bench.UNITS``)."""

    scan = "scan"
    reconstruction = "reconstruction"


class Split(str, Enum):
    """Dataset split a benchmark evaluates (``hsenet_search.data.dataset.SPLITS`` plus ``all``)."""

    train = "train"
    valid = "valid"
    all = "all"


class Dedup(str, Enum):
    """RadFinder's retrieval dedup modes (``hsenet_search.eval.radfinder_protocol.DEDUP_MODES``)."""

    dup_all = "dup_all"
    first_all = "first_all"
    smallestdeduptext = "smallestdeduptext"


class ZeroShotPrompts(str, Enum):
    """Zero-shot prompt sets (``hsenet_search.eval.zeroshot.PROMPT_TEMPLATES``)."""

    pair = "pair"
    mean7 = "mean7"


class DraftMode(str, Enum):
    """Report drafting mode (``hsenet_search.generate.draft.MODES``)."""

    llm = "llm"
    grounded = "grounded"
    nearest = "nearest"
    vote = "vote"


class Composer(str, Enum):
    """Grounded composer of the grounded and llm modes (``hsenet_search.generate.compose.COMPOSERS``)."""

    anchored = "anchored"
    sections = "sections"


COMPOSER = typer.Option(
    Composer.anchored,
    "--composer",
    help="grounded/llm modes: anchored (the nearest report edited to the label vote) "
    "| sections (assembled by organ system).",
)


class Loss(str, Enum):
    """Contrastive training loss (``hsenet_search.train.losses``)."""

    clip = "clip"
    siglip = "siglip"


class PromptLoss(str, Enum):
    """Disease-prompt loss (``hsenet_search.train.trainer.PROMPT_LOSSES`` plus ``none``)."""

    none = "none"
    pair = "pair"
    radfinder = "radfinder"


class Augment(str, Enum):
    """Training augmentation (``hsenet_search.train.data.AUGMENTATIONS``)."""

    none = "none"
    intensity = "intensity"
    official = "official"


class ReportText(str, Enum):
    """The report text an index embeds (``hsenet_search.data.resolve.REPORT_TEXTS``)."""

    findings = "findings"
    impression = "impression"
    findings_impression = "findings+impression"


class Bridge(str, Enum):
    """Modality bridge trained with the model (``hsenet_search.train.trainer.BRIDGES``)."""

    none = "none"
    cmki = "cmki"


class TextSource(str, Enum):
    """Training text: reports, their summaries, or both (``hsenet_search.train.trainer.TEXT_SOURCES``)."""

    report = "report"
    summary = "summary"
    both = "both"


class TrainParts(str, Enum):
    """What a training run updates (``hsenet_search.train.trainer.TRAIN_PARTS``)."""

    all = "all"
    heads = "heads"


class TextTruncation(str, Enum):
    """How an over-long training report is cut (``hsenet_search.data.resolve``)."""

    head = "head"
    sentences = "sentences"


def parse_ks(text: str) -> list[int]:
    """``"1,5,10"`` → ``[1, 5, 10]``; anything else is a ``typer.BadParameter`` (exit 2, one line)."""
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated positive integers, got {text!r}", param_hint="--ks"
        ) from None
    if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
        raise typer.BadParameter(f"expected distinct positive integers, got {text!r}", param_hint="--ks")
    return ks
