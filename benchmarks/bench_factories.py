"""Recall@10, latency and memory of the FAISS presets at 100k and 1M vectors of real model embeddings.

Real embeddings: the shipped default model's volume and report embeddings of a synthetic CT-RATE set
(``--n`` scans, built with ``index build``), replicated with Gaussian noise to each size: replica =
normalise(base + noise), noise of norm ``--noise`` (0.5: replicas of one base keep cosine ~0.9 with it,
so each base becomes a cloud whose fine structure ANN indexes must resolve). Queries: held-out noisy
replicas (never in the index) of volume embeddings and the report embeddings themselves (text -> volume).
Ground truth: exact inner-product search. Each preset is built the way ``index build`` builds it (IVF:
trained on a sample, filled chunk by chunk; search defaults tuned by ``tune_search``), then timed.

    python benchmarks/bench_factories.py --sizes 100000,1000000 --out benchmarks/results/factories_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from hsenet_search.index.factories import (
    build_from_chunks,
    estimate_bytes,
    nlist_for,
    training_sample,
    tune_search,
)
from hsenet_search.index.store import EmbeddingShards, read_embeddings

REPO = Path(__file__).resolve().parents[1]


def base_embeddings(n: int, index: Path | None) -> tuple[np.ndarray, int]:
    """Volume + report embeddings of the default model on ``n`` synthetic scans (built by the CLI unless
    ``index`` is such a build already), and the number of volume rows."""
    if index is None:
        from hsenet_search.data.synth import generate_dataset

        work = Path(tempfile.mkdtemp(prefix="bench-fact-"))
        generate_dataset(work / "data", n, seed=21, size="tiny")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "hsenet_search.cli.main",
                "index",
                "build",
                str(work / "data"),
                "--out",
                str(work / "index"),
            ],
            check=True,
            env=env,
            cwd=REPO,
            capture_output=True,
        )
        index = work / "index"
    volumes = read_embeddings(index, "volumes")
    return np.concatenate([volumes, read_embeddings(index, "reports")]), len(volumes)


def replicate(base: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = base[rng.integers(0, len(base), n)].astype(np.float32)
    x += rng.standard_normal(x.shape, dtype=np.float32) * (noise / np.sqrt(x.shape[1]))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def time_queries(index, q: np.ndarray, k: int) -> dict:
    index.search(q[:5], k)
    single = []
    for i in range(min(200, len(q))):
        t0 = time.perf_counter()
        index.search(q[i : i + 1], k)
        single.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    index.search(q, k)
    batch = time.perf_counter() - t0
    return {
        "p50_ms": statistics.median(single),
        "p99_ms": float(np.percentile(single, 99)),
        "batched_qps": len(q) / batch,
    }


def write(args: argparse.Namespace, base: np.ndarray, load_start: tuple, rows: list[dict]) -> None:
    result = {
        "benchmark": "FAISS presets on real default-model embeddings replicated with noise",
        "machine": {
            "cpu_cores": os.cpu_count(),
            "platform": platform.platform(),
            "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
        "config": {
            "base_scans": args.n,
            "base_vectors": len(base),
            "noise": args.noise,
            "nlist": args.nlist,
            "faiss_threads": faiss.omp_get_max_threads(),
            "queries": args.queries,
            "query_mix": "half held-out noisy volume replicas, half report embeddings (text -> volume)",
        },
        "notes": "recall_at_10 is measured at the tuned default (tuned.value), chosen on the index's "
        "own vectors; latency p50/p99 over 200 single queries, QPS over one batch. The "
        "machine was shared (see loadavg).",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--n", type=int, default=200, help="synthetic scans embedded by the default model")
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--hnsw-max", type=int, default=200_000, help="largest size HNSW is built at (2 cores)")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default: the preset's 4 sqrt(n))")
    p.add_argument("--base-index", type=Path, default=None, help="reuse an index built from --n scans")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    base, n_volumes = base_embeddings(args.n, args.base_index)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        x = replicate(base, n, args.noise, seed=0)
        q = np.concatenate(
            [replicate(base[:n_volumes], args.queries // 2, args.noise, seed=1), base[-(args.queries // 2) :]]
        )
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        _, truth = faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
        nlist = args.nlist or nlist_for(n)
        m = x.shape[1] // 8
        presets = ["IDMap2,Flat", f"IVF{nlist},Flat", f"IVF{nlist},PQ{m}"] + (
            ["IDMap2,HNSW32"] if n <= args.hnsw_max else []
        )

        chunks = EmbeddingShards([x[i : i + 100_000] for i in range(0, len(x), 100_000)])

        for factory in presets:
            t0 = time.perf_counter()
            sample = training_sample(chunks, 39 * nlist, seed=0) if "IVF" in factory else None
            index = build_from_chunks(chunks, factory, sample=sample)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            tuned = tune_search(index, x, queries=300)
            tune_s = time.perf_counter() - t0
            _, found = index.search(q, 10)
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist())]))
            with tempfile.TemporaryDirectory() as tmp:
                index.save(Path(tmp) / "i.faiss")
                file_mb = (Path(tmp) / "i.faiss").stat().st_size / 2**20
            row = {
                "n": n,
                "dim": x.shape[1],
                "factory": index.factory,
                "build_s": build_s,
                "tune_s": tune_s,
                "tuned": tuned.__dict__,
                "recall_at_10": recall,
                "index_file_mb": file_mb,
                "estimated_mb": estimate_bytes(factory, n, x.shape[1]) / 2**20,
                **time_queries(index, q, 10),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            write(args, base, load_start, rows)  # after every row: a long run keeps what it measured
            del index
    return 0


if __name__ == "__main__":
    sys.exit(main())
