"""``hsenet-search train``: stage-1 / stage-2 HSENet training on a CT-RATE-layout dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Augment, Bridge, Loss, PromptLoss, ReportText, TextSource, TextTruncation, TrainParts, console


def train(
    data: Path = typer.Option(..., "--data", help="CT-RATE-layout dataset or manifest (train + valid splits)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (also holds training/ state)."),
    stage: int = typer.Option(1, "--stage", min=1, max=2, help="1: global contrastive; 2: 2E3 + consistency."),
    config: str = typer.Option("tiny", "--config", help="Named model config for a fresh stage-1 model."),
    init: Path | None = typer.Option(None, "--init", help="Start from this model dir (stage 2: the stage-1 model)."),
    loss: Loss = typer.Option(Loss.clip, "--loss", help="clip (open_clip ClipLoss) or siglip (SigLipLoss)."),
    siglip_bias_init: float = typer.Option(
        -10.0,
        "--siglip-bias-init",
        help="Start of SigLIP's learnable bias (RadFinder: -10, for batches of thousands; about "
        "-ln(batch - 1) suits small batches).",
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1),
    steps: int | None = typer.Option(None, "--steps", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=2),
    lr: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(2, "--workers", min=0),
    augment: Augment = typer.Option(Augment.intensity, "--augment", help="official adds rot90/flips."),
    text_field: ReportText | None = typer.Option(
        None,
        "--text",
        help="Report text to train on (default: the model's own: findings for official models, else both).",
    ),
    text_truncation: TextTruncation = typer.Option(
        TextTruncation.head,
        "--text-truncation",
        help="head (tokenizer cut) or sentences (official: first sentence + random further sentences that fit).",
    ),
    prompt_loss: PromptLoss = typer.Option(
        PromptLoss.none,
        "--prompt-loss",
        help="Disease-prompt loss: none, pair (one prompt pair per label) or radfinder (3+3, pos_weight).",
    ),
    prompt_loss_weight: float = typer.Option(
        0.5, "--prompt-loss-weight", min=0.0, help="Weight of the prompt loss (RadFinder: 0.5)."
    ),
    loc_loss_weight: float = typer.Option(
        0.0,
        "--loc-loss-weight",
        min=0.0,
        help="Stage 1: weight of the localisation loss on the reports' 'series S image I' snippets; adds a "
        "localisation head to a model without one (0 = off; RadFinder: 0.004).",
    ),
    loc_sigma_bins: float = typer.Option(
        2.0,
        "--loc-sigma-bins",
        min=0.1,
        help="Width of the Gaussian depth target in bins (RadFinder: 2 bins = 24 mm; the tiny model's bins are "
        "~40 mm, so 0.6 keeps 24 mm).",
    ),
    consistency_steps: int = typer.Option(
        5000,
        "--consistency-steps",
        help="Stage 2: steps over which the consistency weight decays from 0.1 to 0 (official: 5000).",
    ),
    eval_every: int = typer.Option(0, "--eval-every", help="Validate every N steps (0 = every epoch)."),
    keep_stage2: bool = typer.Option(
        False,
        "--keep-stage2",
        help="Stage 2: fine-tune the model's 2E3 tower instead of initialising it from the stage-1 ViT.",
    ),
    bridge: Bridge | None = typer.Option(
        None,
        "--bridge",
        help="cmki: BrgSA's knowledge bank and CMKI loss (default: cmki if the model has a bank).",
    ),
    bank_size: int = typer.Option(2048, "--bank-size", min=1, max=65536, help="Entries of a new bank."),
    text_source: TextSource = typer.Option(
        TextSource.report,
        "--text-source",
        help="report, summary (at most 5 summary sentences per step, as BrgSA) or both (drawn per pair).",
    ),
    summaries: Path | None = typer.Option(
        None, "--summaries", help="Summaries Parquet from data summarise (default: rule-based, made now)."
    ),
    train_parts: TrainParts = typer.Option(
        TrainParts.all, "--train-parts", help="all, or heads: only projections, logit scale and bank."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/training/stage{N}/checkpoint.pt."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Train one stage of the HSENet model; validation R@k is reported on the valid split."""
    from hsenet_search.errors import HSENetError
    from hsenet_search.outputs import OutputKind, check_output
    from hsenet_search.train.trainer import TrainConfig, state_dir
    from hsenet_search.train.trainer import train as run

    if epochs is None and steps is None:
        raise HSENetError("give --epochs N or --steps N")
    check_output(out, OutputKind.MODEL, inputs=[data], replace_ok=True)
    ckpt = state_dir(out, stage) / "checkpoint.pt"
    if ckpt.exists() and not resume:
        raise HSENetError("a training checkpoint exists here; pass --resume to continue or choose another --out", out)
    cfg = TrainConfig(
        data=str(data),
        out=str(out),
        stage=stage,
        config=config,
        init=str(init) if init else None,
        loss=loss.value,
        siglip_bias_init=siglip_bias_init,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        workers=workers,
        augment=augment.value,
        text_field=text_field.value if text_field else None,
        text_truncation=text_truncation.value,
        prompt_loss_weight=prompt_loss_weight if prompt_loss is not PromptLoss.none else 0.0,
        prompt_loss=prompt_loss.value if prompt_loss is not PromptLoss.none else "pair",
        loc_loss_weight=loc_loss_weight,
        loc_sigma_bins=loc_sigma_bins,
        consistency_decay_steps=consistency_steps,
        eval_every=eval_every,
        device=device,
        keep_stage2=keep_stage2,
        bridge=bridge.value if bridge else None,
        bank_size=bank_size,
        text_source=text_source.value,
        summaries=str(summaries) if summaries else None,
        train_parts=train_parts.value,
    )
    console.print(run(cfg).describe())
