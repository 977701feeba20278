"""Index-build throughput against the bare encoder forward, side by side in one run.

* ``bare``: ``model.encode_volume`` on tensors already preprocessed and held in memory (the ceiling).
* ``build (warm cache)``: the builder's volume path (``encode_cases``: DataLoader workers look the volumes up
  in the preprocessed-tensor cache, the main process encodes and writes float16 shards), as when re-indexing.
* ``build (cold)``: the same with an empty cache, so every volume is decoded and preprocessed.

``bare`` and ``warm`` alternate ``--repeats`` times (so load from other jobs hits both alike); the result
quotes the median with min–max of each and of the per-repeat ratio warm / bare. Target: warm >= 0.9 x bare.

``--size ctrate`` writes CT-RATE-size synthetic volumes (512×512×250–320, ~0.2 GB of voxels each); a handful of
distinct files (``--n``) is then listed ``--passes`` times as separate cases so that the warm path does as many
cache lookups as a large build would (each lookup stats the source file and reads the stored content hash).

    python benchmarks/bench_build.py --size tiny --n 150 --repeats 3
    python benchmarks/bench_build.py --size ctrate --n 4 --passes 40 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsenet_search.data.cache import PreprocessCache  # noqa: E402
from hsenet_search.data.dataset import open_dataset  # noqa: E402
from hsenet_search.data.preprocess import preprocess_case  # noqa: E402
from hsenet_search.data.synth import generate_dataset  # noqa: E402
from hsenet_search.eval.provenance import run_started, spread, write_result  # noqa: E402
from hsenet_search.index.builder import BuildConfig, encode_cases  # noqa: E402
from hsenet_search.models import create_model, load_model  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_forward(model, tensors: list[torch.Tensor], batch_size: int, device: str) -> float:
    """Seconds to encode preloaded tensors in batches (one warm-up batch first)."""
    with torch.no_grad():
        model.encode_volume(torch.stack(tensors[:batch_size]).to(device))
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, len(tensors), batch_size):
            model.encode_volume(torch.stack(tensors[i : i + batch_size]).to(device))
        _sync(device)
    return time.perf_counter() - t0


def pipeline(model, cases, work: Path, cache_dir: Path, batch_size: int, workers: int, device: str) -> float:
    """Seconds for the builder's volume path over ``cases`` into a fresh shard folder ``work``."""
    cfg = BuildConfig(data="", out=str(work), batch_size=batch_size, workers=workers, cache_dir=str(cache_dir))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    encode_cases(model, cases, work, cfg=cfg, resume=False, progress=False)
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("tiny", "ctrate"), default="tiny", help="synthetic volume size preset")
    ap.add_argument("--n", type=int, default=150, help="distinct synthetic scans (reconstructions add ~25%%)")
    ap.add_argument("--passes", type=int, default=1, help="list the distinct volumes this many times as cases")
    ap.add_argument("--repeats", type=int, default=3, help="alternating bare / warm-build timings")
    ap.add_argument("--model", default=None, help="model dir or config name (default: the shipped model)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--text-model",
        default=None,
        help="local transformers dir as text trunk (for machines "
        "without the MiniLM package; volume encoding does not use the text trunk)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    started = run_started()
    if args.model in ("tiny", "base"):
        model = create_model(args.model, text_model=args.text_model)
    else:
        model = load_model(args.model)
    model = model.to(args.device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_dataset(tmp / "data", args.n, seed=3, valid_fraction=0.2, size=args.size)
        files = open_dataset(tmp / "data")
        cases = [replace(c, volume_name=f"p{p}_{c.volume_name}") if p else c for p in range(args.passes) for c in files]
        source_mb = sum(c.path.stat().st_size for c in files) / len(files) / 2**20
        cold_s = pipeline(model, files, tmp / "cold", tmp / "cache", args.batch_size, args.workers, args.device)
        tensors = [
            torch.from_numpy(preprocess_case(c, model.profile, cache=PreprocessCache(tmp / "cache"))) for c in cases
        ]
        bare, warm = [], []
        for r in range(args.repeats):
            bare.append(len(cases) / bare_forward(model, tensors, args.batch_size, args.device))
            warm.append(
                len(cases)
                / pipeline(model, cases, tmp / f"warm{r}", tmp / "cache", args.batch_size, args.workers, args.device)
            )
    ratios = [w / b for w, b in zip(warm, bare, strict=True)]
    result = {
        "benchmark": "index build throughput (volumes/s) vs bare encoder forward",
        "inputs": {
            "size": args.size,
            "distinct_volumes": len(files),
            "passes": args.passes,
            "cases": len(cases),
            "source_file_mb_mean": round(source_mb, 2),
            "tensor_shape": list(tensors[0].shape),
        },
        "model": model.config.name,
        "embedding": model.config.embedding,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "volumes_per_s": {
            "bare_forward": spread(bare, 2),
            "build_warm_cache": spread(warm, 2),
            "build_cold": {**spread([len(files) / cold_s], 3), "note": "once, over the distinct volumes only"},
        },
        "ratio_warm_vs_bare": spread(ratios, 3),
        "target": "build_warm_cache >= 0.9 x bare_forward",
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"build_throughput_{args.device.split(':')[0]}_{args.size}.json"
    write_result(out, result, started, device=args.device, repeats=args.repeats)
    r = result["ratio_warm_vs_bare"]
    print(
        f"{len(cases)} cases ({args.size}): bare {result['volumes_per_s']['bare_forward']['median']:.1f} vol/s, "
        f"warm {result['volumes_per_s']['build_warm_cache']['median']:.1f} vol/s, warm/bare {r['median']:.3f} "
        f"[{r['min']:.3f}–{r['max']:.3f}], cold {len(files) / cold_s:.2f} vol/s; wrote {out}"
    )


if __name__ == "__main__":
    main()
