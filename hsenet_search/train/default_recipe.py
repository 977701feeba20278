"""The recipe of the shipped default model: ``python -m hsenet_search.train.default_recipe``.

Synthesises a CT-RATE-layout training set, trains the ``tiny`` config stage 1 (global contrastive +
disease prompts + the localisation head on the reports' cited images) then stage 2 (2E3 tower with
semantic consistency), and copies the model files into ``hsenet_search/models/default/``.
``make default-model`` runs it; on 2 CPU cores it takes tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .trainer import TrainConfig, train

SHIPPED_FILES = ("config.json", "model.safetensors", "preprocessing.json")


@dataclass
class Recipe:
    """The settings of the shipped model (kept here so the result is reproducible)."""

    scans: int = 3000
    valid_fraction: float = 0.1
    data_seed: int = 0
    stage1_epochs: int = 8
    stage2_epochs: int = 3
    batch_size: int = 32
    lr_stage1: float = 5e-4
    lr_stage2: float = 3e-4
    prompt_loss: float = 1.0
    loc_loss: float = 1.0  # stage 1: localisation loss on the reports' "series S image I" snippets
    loc_sigma_bins: float = 0.6  # its Gaussian target: RadFinder's 24 mm at the tiny model's ~40 mm bins
    seed: int = 0
    workers: int = 2


def run(work: Path, ship: Path | None, recipe: Recipe, progress: bool = True) -> dict:
    """Synthesise, train both stages, ship; returns a summary with the validation recalls."""
    from hsenet_search.data.synth import generate_dataset

    start = time.time()
    data = work / "data"
    if not (data / "radiology_text_reports").exists():
        generate_dataset(
            data,
            recipe.scans,
            seed=recipe.data_seed,
            valid_fraction=recipe.valid_fraction,
            size="tiny",
            progress=progress,
        )
    model_dir = work / "model"
    common = dict(
        data=str(data),
        out=str(model_dir),
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        workers=recipe.workers,
        prompt_loss_weight=recipe.prompt_loss,
        cache_dir=str(work / "cache"),
    )
    stage1 = train(
        TrainConfig(
            stage=1,
            config="tiny",
            epochs=recipe.stage1_epochs,
            lr=recipe.lr_stage1,
            loc_loss_weight=recipe.loc_loss,
            loc_sigma_bins=recipe.loc_sigma_bins,
            **common,
        ),
        progress=progress,
    )
    steps2 = recipe.stage2_epochs * (stage1.steps // recipe.stage1_epochs)
    stage2 = train(
        TrainConfig(
            stage=2,
            epochs=recipe.stage2_epochs,
            lr=recipe.lr_stage2,
            consistency_decay_steps=max(1, steps2 // 2),
            **common,
        ),
        progress=progress,
    )
    if ship is not None:
        ship.mkdir(parents=True, exist_ok=True)
        for name in SHIPPED_FILES:
            shutil.copy2(model_dir / name, ship / name)
    return {
        "recipe": asdict(recipe),
        "seconds": time.time() - start,
        "stage1": {"steps": stage1.steps, "validation": stage1.final_validation},
        "stage2": {"steps": stage2.steps, "validation": stage2.final_validation},
        "shipped_to": str(ship) if ship else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("runs/default-model"))
    parser.add_argument("--ship", type=Path, default=None, help="Copy the model files here (the package dir).")
    parser.add_argument("--summary", type=Path, default=Path("benchmarks/results/default_model_training.json"))
    args = parser.parse_args()
    from hsenet_search.eval.provenance import run_started, write_result

    started = run_started()
    summary = run(args.work, args.ship, Recipe())
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    write_result(args.summary, json.loads(json.dumps(summary, default=str)), started)
    print(json.dumps({k: summary[k] for k in ("stage1", "stage2", "seconds")}, indent=2, default=str))


if __name__ == "__main__":
    main()
