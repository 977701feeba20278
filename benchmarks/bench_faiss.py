"""Raw FAISS search against ``VectorIndex.search`` on the same index: latency, QPS, overhead, ANN recall.

For each size N (random unit vectors of dimension D) it builds the exact ``IDMap2,Flat`` index and one
ANN index (``IVF{nlist},SQ8``, nlist ~ sqrt(N) as a power of two, trained on 40 * nlist vectors), then
measures, query by query and batch by batch with the searchers interleaved (so CPU contention from
other processes hits both alike):

* single-query latency p50 / p99 (ms), batched throughput (queries/s);
* overhead ratios ``VectorIndex / raw`` (latency) and ``raw / VectorIndex`` (QPS): target <= 1.2;
* the ANN factory's recall@k against the exact index, for each ``--nprobe``.

    python benchmarks/bench_faiss.py                       # 10k, 100k, 1M at D=256 (about 5 min on 2 cores)
    python benchmarks/bench_faiss.py --sizes 10000 --dim 512
    python benchmarks/bench_faiss.py --gpu                 # on a machine where faiss sees a GPU

Results go to ``benchmarks/results/faiss_cpu.json`` (``faiss_gpu_<device>.json`` with ``--gpu``) with the
machine described. Other searchers (e.g. ``SearchEngine.search_embedding``) can be added to the
``searchers`` dict of :func:`bench_index`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from hsenet_search.eval.provenance import run_started, write_result
from hsenet_search.index.faiss_backend import VectorIndex, gpu_count

Searcher = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
RESULTS = Path(__file__).resolve().parent / "results"


def machine_info(use_gpu: bool) -> dict:
    """CPU model, cores, library versions and the GPU (if used)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.M)
        cpu = names[0].strip() if names else cpu
    info = {
        "cpu": cpu,
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss_version": faiss.__version__,
        "faiss_compile_options": faiss.get_compile_options().strip(),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "faiss_gpus": gpu_count(),
        "gpu_used": use_gpu,
        "gpu_name": gpu_name() if use_gpu else None,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return info


def gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return "gpu"


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def ann_nlist(n: int) -> int:
    """sqrt(N) rounded to a power of two (the low end of FAISS's 4..16 sqrt(N) guideline, to train fast)."""
    return 2 ** max(4, round(math.log2(math.sqrt(n))))


def build_index(
    vectors: np.ndarray, factory: str, *, use_gpu: bool, train_size: int | None, seed: int
) -> tuple[VectorIndex, float]:
    t0 = time.perf_counter()
    train = None
    if train_size is not None and train_size < len(vectors):
        train = vectors[np.random.default_rng(seed).choice(len(vectors), train_size, replace=False)]
    index = VectorIndex.build(
        vectors, np.arange(len(vectors)), factory, train_vectors=train, seed=seed, use_gpu=use_gpu
    )
    return index, time.perf_counter() - t0


def raw_searcher(index: VectorIndex) -> Searcher:
    """Plain ``faiss.Index.search`` on the object VectorIndex itself searches (same index, same nprobe)."""
    target = index.faiss_index
    return lambda q, k: target.search(q, k)


def engine_searcher(index: VectorIndex) -> Searcher:
    return lambda q, k: index.search(q, k)


RECONS_PER_SCAN = 3  # rows per scan in the engine's metadata: it fetches k x 3 candidates and collapses them


def search_engine_searcher(index: VectorIndex) -> Searcher:
    """``SearchEngine.search_embedding`` over ``index`` with N synthetic metadata rows, ``RECONS_PER_SCAN``
    reconstructions per scan: the full query path a user calls, including validation, fetching
    k x max reconstructions candidates, hit materialisation and scan collapsing."""
    import pandas as pd

    from hsenet_search.data.labels import LABELS
    from hsenet_search.engine import SearchEngine

    n = index.ntotal
    names = [f"bench_{i // RECONS_PER_SCAN}_a_{i % RECONS_PER_SCAN + 1}.nii.gz" for i in range(n)]
    meta = pd.DataFrame(
        {
            "row_id": np.arange(n),
            "volume_name": names,
            "scan_id": [x[:-9] for x in names],
            "split": "train",
            "path": names,
            "findings": "",
            "impression": "",
            "report_id": np.arange(n),
            **{name: np.zeros(n, dtype=np.int8) for name in LABELS},
        }
    )
    engine = SearchEngine(Path("."), None, None, index, index, meta, {})
    return lambda q, k: engine.search_embedding(q, k)


def _alternate(searchers: dict[str, Searcher], i: int) -> list[tuple[str, Searcher]]:
    """The searchers in forward order on even steps, reversed on odd ones (no first-runner bias)."""
    items = list(searchers.items())
    return items if i % 2 == 0 else items[::-1]


def latencies_ms(searchers: dict[str, Searcher], queries: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-query wall time of each searcher, interleaved query by query."""
    times = {name: np.empty(len(queries)) for name in searchers}
    for fn in searchers.values():  # warm-up
        fn(queries[:1], k)
    for i in range(len(queries)):
        q = queries[i : i + 1]
        for name, fn in _alternate(searchers, i):
            t0 = time.perf_counter()
            fn(q, k)
            times[name][i] = (time.perf_counter() - t0) * 1e3
    return times


def throughput_qps(
    searchers: dict[str, Searcher],
    queries: np.ndarray,
    k: int,
    batch: int,
    *,
    min_seconds: float = 1.0,
    max_rounds: int = 20,
) -> dict[str, float]:
    """Queries per second in batches of ``batch``, interleaved batch by batch; repeated until every
    searcher has run ``min_seconds`` (fast indexes would otherwise be timed on a few milliseconds)."""
    spent = dict.fromkeys(searchers, 0.0)
    done = 0
    for r in range(max_rounds):
        for start in range(0, len(queries), batch):
            q = queries[start : start + batch]
            for name, fn in _alternate(searchers, r + start // batch):
                t0 = time.perf_counter()
                fn(q, k)
                spent[name] += time.perf_counter() - t0
        done += len(queries)
        if min(spent.values()) >= min_seconds:
            break
    return {name: done / s for name, s in spent.items()}


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


def bench_index(index: VectorIndex, queries_single: np.ndarray, queries_batch: np.ndarray, k: int, batch: int) -> dict:
    """Latency and QPS of raw FAISS and VectorIndex.search on ``index``, with their ratios."""
    searchers = {"raw_faiss": raw_searcher(index), "vector_index": engine_searcher(index)}
    lat = latencies_ms({**searchers, "search_engine": search_engine_searcher(index)}, queries_single, k)
    qps = throughput_qps(searchers, queries_batch, k, batch)
    out = {
        name: {
            "p50_ms": float(np.percentile(lat[name], 50)),
            "p99_ms": float(np.percentile(lat[name], 99)),
            "qps": qps[name],
        }
        for name in searchers
    }
    out["search_engine"] = {
        "p50_ms": float(np.percentile(lat["search_engine"], 50)),
        "p99_ms": float(np.percentile(lat["search_engine"], 99)),
    }
    out["engine_overhead"] = {
        "p50": out["search_engine"]["p50_ms"] / out["raw_faiss"]["p50_ms"],
        "p99": out["search_engine"]["p99_ms"] / out["raw_faiss"]["p99_ms"],
    }
    raw, ours = out["raw_faiss"], out["vector_index"]
    out["overhead"] = {
        "p50": ours["p50_ms"] / raw["p50_ms"],
        "p99": ours["p99_ms"] / raw["p99_ms"],
        "qps": raw["qps"] / ours["qps"],
    }
    return out


def bench_size(n: int, args: argparse.Namespace, progress: Progress) -> list[dict]:
    task = progress.add_task(f"N={n:,}", total=3 + len(args.nprobe))
    x = unit_vectors(n, args.dim, args.seed)
    n_single = args.queries_single
    n_batch = args.queries_batch if n < 1_000_000 else max(args.batch, args.queries_batch // 5)
    q_single = unit_vectors(n_single, args.dim, args.seed + 1)
    q_batch = unit_vectors(n_batch, args.dim, args.seed + 2)
    rows = []
    exact, build_s = build_index(x, "IDMap2,Flat", use_gpu=args.gpu, train_size=None, seed=args.seed)
    progress.advance(task)
    _, truth = exact.search(q_batch, args.k)
    rows.append(
        {
            "n": n,
            "factory": exact.factory,
            "on_gpu": exact.on_gpu,
            "build_s": build_s,
            "queries_single": n_single,
            "queries_batch": n_batch,
            "recall_at_k": 1.0,
            **bench_index(exact, q_single, q_batch, args.k, args.batch),
        }
    )
    progress.advance(task)
    del exact
    nlist = ann_nlist(n)
    ann, build_s = build_index(x, f"IVF{nlist},SQ8", use_gpu=args.gpu, train_size=40 * nlist, seed=args.seed)
    progress.advance(task)
    del x
    for nprobe in args.nprobe:
        faiss.ParameterSpace().set_index_parameter(ann.index, "nprobe", min(nprobe, nlist))
        if ann.on_gpu:
            faiss.GpuParameterSpace().set_index_parameter(ann.faiss_index, "nprobe", min(nprobe, nlist))
        found = ann.search(q_batch, args.k)[1]
        rows.append(
            {
                "n": n,
                "factory": ann.factory,
                "nprobe": min(nprobe, nlist),
                "on_gpu": ann.on_gpu,
                "build_s": build_s,
                "train_size": 40 * nlist,
                "queries_single": n_single,
                "queries_batch": n_batch,
                "recall_at_k": recall_at_k(found, truth),
                **bench_index(ann, q_single, q_batch, args.k, args.batch),
            }
        )
        progress.advance(task)
    return rows


def print_table(rows: list[dict], k: int, console: Console) -> None:
    table = Table(title=f"raw FAISS vs VectorIndex.search (k={k})")
    for col in (
        "N",
        "factory",
        "nprobe",
        f"R@{k}",
        "raw p50/p99 ms",
        "VI p50/p99 ms",
        "raw QPS",
        "VI QPS",
        "overhead p50/p99/QPS",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        raw, vi, oh = r["raw_faiss"], r["vector_index"], r["overhead"]
        table.add_row(
            f"{r['n']:,}",
            r["factory"],
            str(r.get("nprobe", "-")),
            f"{r['recall_at_k']:.3f}",
            f"{raw['p50_ms']:.3f}/{raw['p99_ms']:.3f}",
            f"{vi['p50_ms']:.3f}/{vi['p99_ms']:.3f}",
            f"{raw['qps']:,.0f}",
            f"{vi['qps']:,.0f}",
            f"{oh['p50']:.2f}/{oh['p99']:.2f}/{oh['qps']:.2f}",
        )
    console.print(table)


def output_path(args: argparse.Namespace, machine: dict) -> Path:
    if args.out:
        return Path(args.out)
    if not args.gpu:
        return RESULTS / "faiss_cpu.json"
    slug = re.sub(r"[^a-z0-9]+", "-", str(machine["gpu_name"]).lower()).strip("-")
    return RESULTS / f"faiss_gpu_{slug}.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated index sizes")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("-k", "--k", type=int, default=10)
    p.add_argument("--nprobe", default="16,64", help="comma-separated nprobe values for the IVF index")
    p.add_argument("--queries-single", type=int, default=200, help="single queries timed at every size")
    p.add_argument("--queries-batch", type=int, default=1000, help="queries of the batched run (1M: a fifth)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpu", action="store_true", help="place the indexes on GPU 0 (needs faiss to see a GPU)")
    p.add_argument("--out", default=None, help="JSON output path")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.nprobe = [int(s) for s in args.nprobe.split(",") if s]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=170)
    if args.gpu and gpu_count() == 0:
        console.print("[red]--gpu: FAISS sees no GPU (faiss.get_num_gpus() == 0)[/red]")
        return 2
    machine = machine_info(args.gpu)
    started = run_started()
    t0 = time.perf_counter()
    rows: list[dict] = []
    with Progress(console=console) as progress:
        for n in args.sizes:
            rows += bench_size(n, args, progress)
    elapsed = time.perf_counter() - t0
    print_table(rows, args.k, console)
    result = {
        "benchmark": "raw FAISS search vs VectorIndex.search on the same index (random unit vectors)",
        "setup": machine,
        "reconstructions_per_scan": RECONS_PER_SCAN,
        "config": {
            "sizes": args.sizes,
            "dim": args.dim,
            "k": args.k,
            "nprobe": args.nprobe,
            "batch": args.batch,
            "queries_single": args.queries_single,
            "queries_batch": args.queries_batch,
            "seed": args.seed,
        },
        "overhead_target": 1.2,
        "notes": "Uniform random unit vectors have no neighbourhood structure, the worst case for IVF: the "
        "recall@k of the ANN rows is a lower bound (clustered data reach >= 0.9, see "
        "tests/test_faiss_backend.py). The machine may be shared: p99 includes scheduling noise.",
        "elapsed_s": elapsed,
        "results": rows,
    }
    out = output_path(args, machine)
    write_result(out, result, started, device="cuda" if args.gpu else "cpu", repeats=1)
    console.print(f"{len(rows)} configurations in {elapsed:.0f}s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
