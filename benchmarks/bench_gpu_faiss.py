"""GPU FAISS against CPU FAISS on the same index: same top-k, single-query latency, batched QPS.

For each factory (exact ``IDMap2,Flat``; ``IVF{K},Flat`` at its tuned ``nprobe``) one CPU index is built,
then ``VectorIndex`` copies it to GPU 0 (the project's own GPU path, ``use_gpu=True``). Both answer the
same queries; the JSON records the top-k agreement (fraction of the CPU's ids the GPU also returns, and
the largest score difference), p50/p99 latency of single queries and batched QPS, interleaved.
Vectors: clustered unit vectors (2000 Gaussian clusters) unless ``--embeddings`` gives a float16/float32
``.npy`` of real embeddings.

    python benchmarks/bench_gpu_faiss.py --n 1000000 --out benchmarks/results/faiss_gpu_vs_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_faiss import latencies_ms, machine_info, throughput_qps  # noqa: E402

from hsenet_search.index.factories import nlist_for, tune_search  # noqa: E402
from hsenet_search.index.faiss_backend import VectorIndex, gpu_count  # noqa: E402


def clustered(n: int, dim: int, seed: int, clusters: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def compare(cpu: VectorIndex, gpu: VectorIndex, queries: np.ndarray, k: int, batch: int) -> dict:
    s_cpu, i_cpu = cpu.search(queries, k)
    s_gpu, i_gpu = gpu.search(queries, k)
    agree = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(i_cpu.tolist(), i_gpu.tolist())]))
    searchers = {"cpu": lambda q, kk: cpu.search(q, kk), "gpu": lambda q, kk: gpu.search(q, kk)}
    lat = latencies_ms(searchers, queries[:200], k)
    qps = throughput_qps(searchers, queries, k, batch)
    return {
        "topk_agreement": agree,
        "identical_topk_rows": float(np.mean((i_cpu == i_gpu).all(axis=1))),
        "max_score_diff": float(np.abs(s_cpu - s_gpu).max()),
        **{f"{name}_p50_ms": float(np.percentile(lat[name], 50)) for name in searchers},
        **{f"{name}_p99_ms": float(np.percentile(lat[name], 99)) for name in searchers},
        **{f"{name}_qps": qps[name] for name in searchers},
        "gpu_speedup_qps": qps["gpu"] / qps["cpu"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--embeddings", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if gpu_count() == 0:
        print("FAISS sees no GPU (faiss.get_num_gpus() == 0)", file=sys.stderr)
        return 2
    x = np.load(args.embeddings).astype(np.float32) if args.embeddings else clustered(args.n, args.dim, 0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = x[np.random.default_rng(1).choice(len(x), args.queries, replace=False)]
    queries = queries + 0.05 * np.random.default_rng(2).standard_normal(queries.shape, dtype=np.float32)
    rows = []
    nlist = min(4096, nlist_for(len(x)))  # 4096 lists: trains in seconds on 16 cores
    train = x[np.random.default_rng(3).choice(len(x), min(len(x), 64 * nlist), replace=False)]
    for factory in ("IDMap2,Flat", f"IVF{nlist},Flat"):
        t0 = time.perf_counter()
        cpu = VectorIndex.build(x, np.arange(len(x)), factory, train_vectors=train, use_gpu=False)
        build_s = time.perf_counter() - t0
        tuning = tune_search(cpu, x)
        t0 = time.perf_counter()
        gpu = VectorIndex(cpu.index, cpu.factory, use_gpu=True)
        copy_s = time.perf_counter() - t0
        row = {
            "factory": cpu.factory,
            "n": len(x),
            "dim": x.shape[1],
            "k": args.k,
            "cpu_build_s": build_s,
            "gpu_copy_s": copy_s,
            "on_gpu": gpu.on_gpu,
            "tuned": tuning.__dict__,
            **compare(cpu, gpu, queries, args.k, args.batch),
        }
        rows.append(row)
        print(json.dumps(row))
    result = {
        "benchmark": "GPU FAISS vs CPU FAISS on the same index (VectorIndex use_gpu=True)",
        "machine": machine_info(True),
        "vectors": str(args.embeddings or "clustered synthetic"),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
