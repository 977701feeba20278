"""Localisation vs its baselines on held-out synthetic scans; retrieval / zero-shot with vs without the
localisation loss; RadFinder's SigLIP + prompt recipe vs the current one:
``python benchmarks/bench_localisation.py [--work runs/locbench] [--seeds 3,4,5] [--arms ...]``.

400 tiny synthetic scans (seed 7, 40 % held out as the valid split: 160 scans, never trained on); a small
stage-1-only model (the ``tiny`` config with 2 layers of width 64, embeddings 64-d) from one random start
per seed, trained 200 steps (batch 16, lr 3e-3) in each arm of :data:`ARMS` with the same data order and
seed; every localisation arm uses weight 1 and a Gaussian target of 0.6 bins (RadFinder's 24 mm at our
~40 mm bins). Each model indexes the valid split; on it: text→volume and volume→text R@1/5/10 (95 %
bootstrap CIs over queries), zero-shot macro AUC with the CT-CLIP pair and the ``mean7`` ensemble (CI over
volumes), ``bench localisation`` (MAE with CI, baselines), the collapse check (mean volume–volume cosine),
and per pair of :data:`COMPARISONS` the paired difference (same resampled scans for both arms). A finished
arm in ``--work`` is reused, not retrained. → ``results/localisation_synthetic.{json,md}`` (the
current recipe, first seed) and ``results/localisation_ablation_synthetic.{json,md}`` (everything). Run it
under ``nice -n 10`` with ``OMP_NUM_THREADS=1`` on a shared box.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from hsenet_search.train.radfinder import SIGLIP_BIAS_INIT

RESULTS = Path(__file__).resolve().parent / "results"
KS = (1, 5, 10)
PROMPT_SETS = ("pair", "mean7")
N_BOOT = 1000


@dataclass(frozen=True)
class Arm:
    """One training recipe (everything else is shared by all arms)."""

    loss: str  # clip | siglip
    prompt_loss: str  # pair | radfinder
    prompt_loss_weight: float
    loc_loss_weight: float
    about: str
    siglip_bias_init: float = SIGLIP_BIAS_INIT


CURRENT = "the shipped recipe (default_recipe): open_clip ClipLoss, one CT-CLIP prompt pair per label, weight 1"
RADFINDER = "RadFinder §1.2-1.3: SigLIP (scale 10, bias -10, learnable), 3+3 prompts with pos_weight, weight 0.5"
ARMS = {
    "current": Arm("clip", "pair", 1.0, 1.0, CURRENT + "; localisation loss 1"),
    "current-noloc": Arm("clip", "pair", 1.0, 0.0, CURRENT + "; no localisation loss"),
    "radfinder": Arm("siglip", "radfinder", 0.5, 1.0, RADFINDER + "; localisation loss 1"),
    "radfinder-noloc": Arm("siglip", "radfinder", 0.5, 0.0, RADFINDER + "; no localisation loss"),
    # what separates the two recipes at our batch of 16
    "radfinder-smallbias": Arm(
        "siglip",
        "radfinder",
        0.5,
        1.0,
        RADFINDER.replace("bias -10", "bias -ln 15 (--siglip-bias-init)") + "; localisation loss 1",
        -math.log(15.0),
    ),
    "clip-radfinder-prompts": Arm(
        "clip", "radfinder", 0.5, 1.0, "open_clip ClipLoss with RadFinder's 3+3 prompts (weight 0.5); localisation 1"
    ),
}
COMPARISONS = (
    ("radfinder", "current"),
    ("current", "current-noloc"),
    ("radfinder", "radfinder-noloc"),
    ("radfinder-smallbias", "current"),
    ("radfinder-smallbias", "radfinder"),
    ("clip-radfinder-prompts", "current"),
)


def _init_models(work: Path, seed: int) -> dict[str, Path]:
    """The seed's random start, saved once as is (CLIP arms) and once with RadFinder's SigLIP scale."""
    import torch

    from hsenet_search.models.clip import HSENetCLIP
    from hsenet_search.models.configs import get_config
    from hsenet_search.train.radfinder import init_siglip_scale

    paths = {"clip": work / f"init-s{seed}", "siglip": work / f"init-siglip-s{seed}"}
    if all(p.exists() for p in paths.values()):
        return paths
    torch.manual_seed(seed)
    small = get_config("tiny").replace(
        layers=2,
        width=64,
        mlp_dim=128,
        towers=("stage1",),
        embedding="stage1",
        projection_dim=64,
        packer_out_dim=64,
    )
    model = HSENetCLIP(small)
    model.save_pretrained(paths["clip"])
    init_siglip_scale(model, "stage1")
    model.save_pretrained(paths["siglip"])
    return paths


def _train(arm: Arm, data: Path, work: Path, init: Path, seed: int, steps: int) -> dict:
    """Train one arm; a finished run of the same config in ``work`` is reused (and said so)."""
    from hsenet_search.train.trainer import TrainConfig, Trainer, state_dir

    start = time.time()
    cfg = TrainConfig(
        data=str(data),
        out=str(work),
        init=str(init),
        loss=arm.loss,
        siglip_bias_init=arm.siglip_bias_init,
        steps=steps,
        batch_size=16,
        lr=3e-3,
        workers=1,
        augment="intensity",
        loc_loss_weight=arm.loc_loss_weight,
        loc_sigma_bins=0.6,
        prompt_loss=arm.prompt_loss,
        prompt_loss_weight=arm.prompt_loss_weight,
        save_every=steps,
        eval_every=steps,
        seed=seed,
        cache_dir=str(data.parent / "cache"),
    )
    saved = state_dir(work, 1) / "config.json"
    reused = saved.exists()
    wanted = json.loads(json.dumps(asdict(cfg)))
    # a field the saved config lacks was added to TrainConfig later, with the default the run then had
    if reused and any(wanted.get(k) != v for k, v in json.loads(saved.read_text()).items()):
        raise RuntimeError(f"{work} holds a run of another config; remove it or use another --work")
    result = Trainer(cfg).train(progress=False)
    seconds = None if reused else round(time.time() - start, 1)
    return {"train_seconds": seconds, "reused_checkpoint": reused, "final_validation": result.final_validation}


def _prompt_margins(model, ev, prompts: str) -> np.ndarray:
    """``cos(volume, positive) − cos(volume, negative)`` (N, L): P(present) is monotone in it at any scale,
    so AUROC on it is the zero-shot AUROC."""
    from hsenet_search.data.labels import LABELS
    from hsenet_search.eval.bench import text_encoder
    from hsenet_search.eval.zeroshot import ensemble_prompt_embeddings

    pos, neg = ensemble_prompt_embeddings(text_encoder(model), LABELS, prompts)
    return ev.volumes @ pos.T - ev.volumes @ neg.T


def _evaluate(model_dir: Path, data: Path, arm: Arm) -> tuple[dict, dict]:
    """Metrics of one trained model on the valid split, and the per-scan values the paired tests resample."""
    from hsenet_search.data.cache import PreprocessCache
    from hsenet_search.eval.bench import load_index_embeddings, retrieval_tables, zeroshot_tables
    from hsenet_search.eval.localisation_bench import localisation_benchmark
    from hsenet_search.eval.provenance import load_average
    from hsenet_search.eval.retrieval import ranks_of_true_match
    from hsenet_search.index.builder import BuildConfig, build_index
    from hsenet_search.models import load_model

    index = model_dir.parent / f"idx-{model_dir.name}"
    cache = data.parent / "cache"
    build = BuildConfig(str(data), str(index), model=str(model_dir), split="valid", workers=0, cache_dir=str(cache))
    build_index(replace(build, overwrite=True), progress=False)
    ev = load_index_embeddings(index).split("valid", "scan")
    model = load_model(model_dir).eval()
    retrieval = retrieval_tables(ev, KS, N_BOOT)
    out = {
        "n_valid_scans": len(ev.names),
        "text_to_volume": retrieval["text_to_volume"]["recall"],
        "volume_to_text": retrieval["volume_to_text"]["recall"],
        "random": retrieval["random"],
    }
    for prompts in PROMPT_SETS:
        zs = zeroshot_tables(model, ev, None, prompts=prompts)
        out[f"zeroshot_{prompts}"] = {"macro_auc": zs["macro_auc_ci"], "macro": zs["same_split"]["macro"]}
    if arm.loc_loss_weight > 0:
        loc = localisation_benchmark(model, data, split="valid", cache=PreprocessCache(cache), progress=False)
        out["localisation"] = loc
    out["load_average_after"] = load_average()
    scores = ev.volumes @ ev.reports.T
    off = ~np.eye(len(scores), dtype=bool)
    out["collapse"] = {  # a volume tower that maps every scan to one vector has volume-volume cosine 1
        "volume_volume_cos": float((ev.volumes @ ev.volumes.T)[off].mean()),
        "true_pair_cos": float(np.diag(scores).mean()),
        "other_pair_cos": float(scores[off].mean()),
    }
    items = {
        "names": ev.names,
        "labels": ev.labels,
        "t2v_rank": ranks_of_true_match(scores.T),
        "v2t_rank": ranks_of_true_match(scores),
        **{f"margin_{p}": _prompt_margins(model, ev, p) for p in PROMPT_SETS},
    }
    return out, items


def _macro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from hsenet_search.eval.zeroshot import rank_auc

    aucs = [rank_auc(labels[:, c], scores[:, c]) for c in range(labels.shape[1])]
    return float(np.nanmean(aucs))


def _paired(a: dict, b: dict) -> dict:
    """``a − b`` of every metric with a 95 % paired bootstrap CI (the same resampled scans for both)."""
    from hsenet_search.eval.bootstrap import bootstrap_ci

    if a["names"] != b["names"] or (a["labels"] < 0).any():
        raise RuntimeError("the two arms' valid indexes hold different scans, or unlabelled ones")

    def stats(rows: np.ndarray) -> dict[str, float]:
        out = {}
        for direction in ("t2v", "v2t"):
            for k in KS:
                hits_a, hits_b = a[f"{direction}_rank"][rows] <= k, b[f"{direction}_rank"][rows] <= k
                out[f"{direction}_R@{k}"] = 100.0 * float(hits_a.mean() - hits_b.mean())
        for p in PROMPT_SETS:
            y = a["labels"][rows]
            out[f"zeroshot_auc_{p}"] = _macro_auc(y, a[f"margin_{p}"][rows]) - _macro_auc(y, b[f"margin_{p}"][rows])
        return out

    return {key: ci.as_dict() for key, ci in bootstrap_ci(stats, len(a["names"]), N_BOOT, seed=0).items()}


def _fmt(ci: dict, scale: float = 1.0, digits: int = 1) -> str:
    e, lo, hi = (scale * ci[key] for key in ("estimate", "low", "high"))
    return f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _markdown(payload: dict) -> str:
    lines = [
        f"Held-out synthetic valid split: {payload['n_valid_scans']} scans; {payload['steps']} steps per arm; "
        "95 % bootstrap CIs.",
        "",
        "| seed | arm | t→v R@1 | t→v R@5 | t→v R@10 | v→t R@1 | v→t R@5 | v→t R@10 | 0-shot AUC pair "
        "| 0-shot AUC mean7 | loc. MAE mm | MAE / middle bin | vol–vol cos |",
        "|---" * 13 + "|",
    ]
    for seed, arms in payload["runs"].items():
        for name, r in arms.items():
            cells = [_fmt(r["text_to_volume"][str(k)]) for k in KS] + [_fmt(r["volume_to_text"][str(k)]) for k in KS]
            cells += [_fmt(r[f"zeroshot_{p}"]["macro_auc"], digits=3) for p in PROMPT_SETS]
            loc = r.get("localisation")
            if loc:
                m = loc["overall"]["model"]
                cells += [f"{m['mae_mm']:.1f} [{m['mae_low']:.1f}, {m['mae_high']:.1f}]"]
                cells += [f"{loc['mae_ratio_to_middle_bin']:.2f}"]
            else:
                cells += ["–", "–"]
            cells += [f"{r['collapse']['volume_volume_cos']:.3f}" if "collapse" in r else "–"]
            lines.append(f"| {seed} | {name} | " + " | ".join(cells) + " |")
    if len(payload["runs"]) > 1:
        lines += ["", "Across seeds (median, min–max of the per-seed estimates):", ""]
        lines += ["| arm | t→v R@10 | v→t R@10 | 0-shot AUC pair | 0-shot AUC mean7 | loc. MAE mm |", "|---" * 6 + "|"]
        for name in next(iter(payload["runs"].values())):
            per_seed = [arms[name] for arms in payload["runs"].values() if name in arms]
            values = [
                [r["text_to_volume"]["10"]["estimate"] for r in per_seed],
                [r["volume_to_text"]["10"]["estimate"] for r in per_seed],
                *[[r[f"zeroshot_{p}"]["macro_auc"]["estimate"] for r in per_seed] for p in PROMPT_SETS],
                [r["localisation"]["overall"]["model"]["mae_mm"] for r in per_seed if "localisation" in r],
            ]
            digits = (1, 1, 3, 3, 1)
            cells = [
                f"{np.median(v):.{d}f} ({min(v):.{d}f}–{max(v):.{d}f})" if v else "–"
                for v, d in zip(values, digits, strict=True)
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences (first − second arm; R@k in points, AUC in units):", ""]
    keys = [f"{d}_R@{k}" for d in ("t2v", "v2t") for k in KS] + [f"zeroshot_auc_{p}" for p in PROMPT_SETS]
    lines += ["| seed | comparison | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for seed, comparisons in payload["paired_differences"].items():
        for name, diff in comparisons.items():
            cells = [_fmt(diff[k], digits=3 if k.startswith("zeroshot") else 1) for k in keys]
            lines.append(f"| {seed} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("runs/locbench"))
    parser.add_argument("--n", type=int, default=400, help="synthetic scans")
    parser.add_argument("--valid-fraction", type=float, default=0.4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the result files go")
    parser.add_argument("--seeds", default="3", help="comma-separated: init weights and training seed")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated of {', '.join(ARMS)}")
    parser.add_argument("--tag", default="", help="suffix of the ablation result files (a run of other arms)")
    args = parser.parse_args()
    from hsenet_search.data.synth import generate_dataset
    from hsenet_search.eval.provenance import run_started

    started = run_started()
    arms = {name: ARMS[name] for name in args.arms.split(",")}
    seeds = [int(s) for s in args.seeds.split(",")]
    data = args.work / "data"
    if not (data / "radiology_text_reports").exists():
        generate_dataset(data, args.n, seed=7, valid_fraction=args.valid_fraction, size="tiny")
    runs: dict[str, dict] = {}
    diffs: dict[str, dict] = {}
    for seed in seeds:
        inits = _init_models(args.work, seed)
        runs[str(seed)], items = {}, {}
        for name, arm in arms.items():
            model_dir = args.work / f"{name}-s{seed}"
            trained = _train(arm, data, model_dir, inits[arm.loss], seed, args.steps)
            metrics, items[name] = _evaluate(model_dir, data, arm)
            runs[str(seed)][name] = {**trained, **metrics}
            print(f"seed {seed} {name}: {trained['train_seconds']} s, R@10 t2v {metrics['text_to_volume']['10']}")
        diffs[str(seed)] = {f"{a} vs {b}": _paired(items[a], items[b]) for a, b in COMPARISONS if {a, b} <= set(items)}
        markdown = _write(args, arms, runs, diffs, seeds[0], started)  # after every seed: a cut-short run keeps them
    print(markdown.read_text())


def _write(args, arms: dict, runs: dict, diffs: dict, first_seed: int, started) -> Path:
    from hsenet_search.atomic import write_text
    from hsenet_search.eval.localisation_bench import localisation_markdown
    from hsenet_search.eval.provenance import write_result

    first = runs[str(first_seed)]
    stem = "localisation_ablation_synthetic" + (f"_{args.tag}" if args.tag else "")
    if "current" in first and not args.tag:
        loc = first["current"]["localisation"]
        write_result(args.results / "localisation_synthetic.json", loc, started)
        write_text(args.results / "localisation_synthetic.md", localisation_markdown(loc))
    payload = {
        "data": {"scans": args.n, "seed": 7, "valid_fraction": args.valid_fraction, "size": "tiny"},
        "n_valid_scans": next(iter(first.values()))["n_valid_scans"],
        "steps": args.steps,
        "bootstrap_resamples": N_BOOT,
        "arms": {name: asdict(arm) for name, arm in arms.items()},
        "runs": runs,
        "paired_differences": diffs,
    }
    write_result(args.results / f"{stem}.json", payload, started)
    return write_text(args.results / f"{stem}.md", _markdown(payload))


if __name__ == "__main__":
    main()
