"""BrgSA on synthetic CT-RATE: with vs without the CMKI knowledge bank, report vs summary vs both as training
text, from the same start (the shipped default model), on the same data with the same seeds.

Synthesises a dataset with the never-labelled findings (``extra_findings``), fine-tunes the projections
(+ bank for CMKI) of both towers for a few epochs per arm (``train_parts="heads"``: stage 1, then stage 2
with ``keep_stage2``), indexes the valid split with each model and measures:

- the modality gap (centroid distance, true vs random pair cosine, linear-probe accuracy) of the volume
  vector the engine scores against text (bridged arms: ½(plain + bank); their plain vectors too);
- text → volume and volume → text R@1/5/10 with 95 % bootstrap CIs (one reconstruction per scan);
- zero-shot macro AUROC (CT-CLIP prompt pairs) on the 18 labels and on the five never-labelled findings,
  with 95 % bootstrap CIs over volumes.

    nice -n 10 python benchmarks/bench_brgsa.py [--n 360] [--epochs 3] [--stage2-epochs 2] \
        [--out benchmarks/results/brgsa_synthetic]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hsenet_search.atomic import write_text
from hsenet_search.data.synth import generate_dataset
from hsenet_search.data.synth.extra import EXTRA_LABELS
from hsenet_search.eval import bench
from hsenet_search.eval.gap import modality_gap
from hsenet_search.eval.provenance import run_started, write_result
from hsenet_search.index.builder import BuildConfig, build_index
from hsenet_search.models import DEFAULT_MODEL_DIR, load_model
from hsenet_search.train.trainer import TrainConfig, Trainer

KS = (1, 5, 10)
ARMS = [(bridge, text) for bridge in ("none", "cmki") for text in ("report", "summary", "both")]


def train_arm(data: Path, out: Path, bridge: str, text: str, args, cache: Path) -> dict:
    """Fine-tune the heads of both towers from the shipped model; returns what was trained."""
    common = dict(
        data=str(data),
        out=str(out),
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        workers=args.workers,
        augment="none",
        bridge=bridge,
        bank_size=args.bank_size,
        text_source=text,
        train_parts="heads",
        cache_dir=str(cache),
        save_every=10_000,
        eval_every=10**6,  # validate once, at the end
    )
    s1 = Trainer(TrainConfig(stage=1, init=str(DEFAULT_MODEL_DIR), epochs=args.epochs, **common)).train(False)
    s2 = Trainer(TrainConfig(stage=2, init=str(out), keep_stage2=True, epochs=args.stage2_epochs, **common)).train(
        False
    )
    return {"stage1_steps": s1.steps, "stage2_steps": s2.steps, "seconds": round(s1.seconds + s2.seconds, 1)}


def evaluate(model_dir: str, data: Path, index: Path, args, cache: Path) -> dict:
    """Gap, R@k and zero-shot of one model on the valid split of ``data``."""
    cfg = BuildConfig(data=str(data), out=str(index), model=model_dir, split="valid", workers=args.workers)
    cfg.cache_dir = str(cache)
    build_index(cfg, progress=False)
    emb = bench.load_index_embeddings(index)
    valid = emb.split("valid", "scan")
    model = load_model(model_dir).eval()
    out: dict = {"n": len(valid.names), "gap": modality_gap(valid.volumes, valid.reports).to_json()}
    if valid.plain is not None:
        out["gap_plain"] = modality_gap(valid.plain, valid.reports).to_json()
    table = bench.retrieval_tables(valid, KS, args.bootstrap, seed=0)
    out["text_to_volume"] = table["text_to_volume"]["recall"]
    out["volume_to_text"] = table["volume_to_text"]["recall"]
    zs18 = bench.zeroshot_tables(model, valid, None)
    out["zeroshot_18"] = {"macro_auc": zs18["macro_auc_ci"], "undefined": zs18["same_split"]["auc_undefined"]}
    truth = bench.read_extra_labels(data / "extra_findings" / "valid_extra_labels.csv")
    zsx = bench.zeroshot_tables(model, valid, None, labels=EXTRA_LABELS, truth=truth)
    out["zeroshot_unseen"] = {
        "macro_auc": zsx["macro_auc_ci"],
        "per_label": {k: {"auc": v["auc"], "n_pos": v["n_pos"]} for k, v in zsx["same_split"]["per_label"].items()},
    }
    return out


def _ci(d: dict, digits: int = 3) -> str:
    return f"{d['estimate']:.{digits}f} [{d['low']:.{digits}f}–{d['high']:.{digits}f}]"


def markdown(result: dict) -> str:
    lines = [
        "| arm | centroid dist. | true − random cos | probe acc. | t→v R@5 | t→v R@10 | v→t R@5 "
        "| v→t R@10 | 0-shot AUC (18) | 0-shot AUC (unseen 5) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["arms"].items():
        m, g = row["metrics"], row["metrics"]["gap"]
        margin = g["true_pair_cosine"] - g["random_pair_cosine"]
        gap = f"{g['centroid_distance']:.3f}"
        if "gap_plain" in m:
            gap += f" (plain {m['gap_plain']['centroid_distance']:.3f})"
        lines.append(
            f"| {name} | {gap} | {margin:.3f} | {g['probe_accuracy']:.3f} "
            f"| {_ci(m['text_to_volume']['5'], 1)} | {_ci(m['text_to_volume']['10'], 1)} "
            f"| {_ci(m['volume_to_text']['5'], 1)} | {_ci(m['volume_to_text']['10'], 1)} "
            f"| {_ci(m['zeroshot_18']['macro_auc'])} | {_ci(m['zeroshot_unseen']['macro_auc'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=360)
    ap.add_argument("--data-seed", type=int, default=4242)
    ap.add_argument("--valid-fraction", type=float, default=0.35)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--stage2-epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--bank-size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--arms", default="all", help="comma-separated: shipped, none-report, cmki-summary, ...")
    ap.add_argument("--reports-from", type=Path, default=None, help="semi-real: real reports + labels CSV")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/brgsa_synthetic"))
    args = ap.parse_args()
    started = run_started()
    start = time.time()
    result: dict = {
        "benchmark": "BrgSA CMKI and summaries vs a plain contrastive fine-tune (synthetic CT-RATE, valid)",
        "start_model": "shipped default (hsenet_search/models/default)",
        "recipe": {k: v for k, v in vars(args).items() if k not in ("out", "arms", "reports_from")},
        "trained_parts": "projections (vision + language) and logit scale of both towers, plus the CMKI bank "
        "for cmki arms; encoders and text trunk frozen; stage 1 then stage 2 (keep_stage2)",
        "arms": {},
    }
    wanted = None if args.arms == "all" else set(args.arms.split(","))
    with tempfile.TemporaryDirectory(prefix="hsenet-brgsa-") as tmp:
        work = Path(tmp)
        data, cache = work / "data", work / "cache"
        real = args.reports_from
        synth = generate_dataset(
            data,
            args.n,
            seed=args.data_seed,
            valid_fraction=args.valid_fraction,
            extra_findings=True,
            labels_from=real,
            reports_from=real,
        )
        result["data"] = {
            "scans": synth.scans,
            "volumes": synth.volumes,
            "seed": args.data_seed,
            "extra_findings": True,
            "size": "tiny",
            "reports_from": str(real) if real else None,
        }
        if wanted is None or "shipped" in wanted:
            result["arms"]["shipped (no fine-tune)"] = {
                "metrics": evaluate(str(DEFAULT_MODEL_DIR), data, work / "idx-shipped", args, cache)
            }
        for bridge, text in ARMS:
            name = f"{'CMKI' if bridge == 'cmki' else 'plain'} / {text}"
            if wanted is not None and f"{bridge}-{text}" not in wanted:
                continue
            model_dir = work / f"model-{bridge}-{text}"
            trained = train_arm(data, model_dir, bridge, text, args, cache)
            metrics = evaluate(str(model_dir), data, work / f"idx-{bridge}-{text}", args, cache)
            result["arms"][name] = {"bridge": bridge, "text": text, "training": trained, "metrics": metrics}
            print(name, trained, flush=True)
    result["seconds"] = round(time.time() - start, 1)
    write_result(args.out.with_suffix(".json"), result, started, device="cpu")
    write_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
