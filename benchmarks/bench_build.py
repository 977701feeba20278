"""Index-build throughput against the bare encoder forward, side by side in one run.

* ``bare``: ``model.encode_volume`` on tensors already preprocessed and held in memory (the ceiling).
* ``build (warm cache)``: the builder's volume path (``encode_cases``: DataLoader workers read the
  preprocessed-tensor cache, the main process encodes and writes float16 shards), as when re-indexing.
* ``build (cold)``: the same with an empty cache, so every volume is decoded and preprocessed.
* ``index build`` (CPU runs only): the whole ``build_index`` (volumes, reports, FAISS, atomic write), cold.

Target: warm-cache build throughput >= 0.8 of the bare forward.

    python benchmarks/bench_build.py [--n 200] [--model M] [--device cpu|cuda] [--workers 2] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from hsenet_search.data.cache import PreprocessCache
from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.preprocess import preprocess_case
from hsenet_search.data.synth import generate_dataset
from hsenet_search.index.builder import BuildConfig, build_index, encode_cases
from hsenet_search.models import create_model, load_model


def machine(device: str) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": device,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bare_forward(model, tensors: list[torch.Tensor], batch_size: int, device: str) -> float:
    """Seconds to encode preloaded tensors in batches (one warm-up batch first)."""
    with torch.no_grad():
        model.encode_volume(torch.stack(tensors[:batch_size]).to(device))
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, len(tensors), batch_size):
            model.encode_volume(torch.stack(tensors[i:i + batch_size]).to(device))
        _sync(device)
    return time.perf_counter() - t0


def pipeline(model, cases, work: Path, cache_dir: Path, batch_size: int, workers: int) -> float:
    cfg = BuildConfig(data="", out=str(work), batch_size=batch_size, workers=workers, cache_dir=str(cache_dir))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    encode_cases(model, cases, work, cfg=cfg, resume=False, progress=False)
    _sync(str(next(model.parameters()).device.type))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200, help="synthetic scans (reconstructions add ~25%%)")
    ap.add_argument("--model", default=None, help="model dir or config name (default: the shipped model)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--text-model", default=None, help="local transformers dir as text trunk (for machines "
                    "without the MiniLM package; volume encoding does not use the text trunk)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.model in ("tiny", "base"):
        model = create_model(args.model, text_model=args.text_model)
    else:
        model = load_model(args.model)
    model = model.to(args.device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_dataset(tmp / "data", args.n, seed=3, valid_fraction=0.2, size="tiny")
        cases = open_dataset(tmp / "data")
        cache = PreprocessCache(tmp / "cache-warm")
        t0 = time.perf_counter()
        tensors = [torch.from_numpy(preprocess_case(c, model.profile, cache=cache)) for c in cases]
        preprocess_s = time.perf_counter() - t0
        bare_s = bare_forward(model, tensors, args.batch_size, args.device)
        warm_s = pipeline(model, cases, tmp / "warm", tmp / "cache-warm", args.batch_size, args.workers)
        cold_s = pipeline(model, cases, tmp / "cold", tmp / "cache-cold", args.batch_size, args.workers)
        full_s = None
        if args.device == "cpu":
            os.environ["HSENET_CACHE"] = str(tmp / "cache-full")
            t0 = time.perf_counter()
            build_index(BuildConfig(data=str(tmp / "data"), out=str(tmp / "index"), workers=args.workers,
                                    batch_size=args.batch_size, cache_dir=str(tmp / "cache-full")),
                        model=model, progress=False)
            full_s = time.perf_counter() - t0
    n = len(cases)
    rate = {"bare_forward": n / bare_s, "build_warm_cache": n / warm_s, "build_cold": n / cold_s,
            "single_process_preprocess": n / preprocess_s}
    if full_s is not None:
        rate["index_build_cold_total"] = n / full_s
    result = {
        "benchmark": "index build throughput (volumes/s) vs bare encoder forward",
        "volumes": n, "model": model.config.name, "embedding": model.config.embedding,
        "batch_size": args.batch_size, "workers": args.workers, "volumes_per_s": rate,
        "ratio_warm_vs_bare": rate["build_warm_cache"] / rate["bare_forward"],
        "ratio_cold_vs_bare": rate["build_cold"] / rate["bare_forward"],
        "target": "build_warm_cache >= 0.8 x bare_forward", "machine": machine(args.device),
    }
    out = args.out or Path(__file__).resolve().parent / "results" / f"build_throughput_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
