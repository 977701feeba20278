"""Open time of a large index with and without integrity verification (issue 16).

``SearchEngine.open`` on an index of random unit vectors (IDMap2,Flat, the shipped model's width), cold
imports excluded, warm page cache, for each ``verify`` mode:

* ``size``: every listed file present with its recorded size (what opening checked before);
* ``fast``: sizes plus the per-file sample digest (xxh3-128 over at most 8 MiB per file): the default;
* ``full``: sizes, sample digests and sha256 of every byte (``hsenet-search index verify``).

Target: ``fast`` costs <= 5 % of the open time over ``size``.

    python benchmarks/bench_open.py [--n 1000000] [--repeats 3] [--out benchmarks/results/open_verify_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search_e2e import write_index  # noqa: E402

from hsenet_search.engine import SearchEngine  # noqa: E402
from hsenet_search.index.store import open_index_dir  # noqa: E402
from hsenet_search.models import load_model  # noqa: E402

MODES = ("size", "fast", "full")


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg_1_5_15": list(os.getloadavg()),
        "shared": "2-core machine shared with 7 other sessions",
    }


def spread(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "open_verify_cpu.json")
    args = ap.parse_args()
    model = load_model()
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-open-", dir=os.environ.get("BENCH_TMP")) as tmp:
        index = Path(tmp) / "idx"
        t0 = time.perf_counter()
        write_index(index, model, args.n)
        write_s = time.perf_counter() - t0
        size_bytes = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
        SearchEngine.open(index, model=model, verify="size")  # warm imports and page cache
        check = {m: [] for m in MODES}
        engine = {m: [] for m in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                t = time.perf_counter()
                open_index_dir(index, verify=mode)
                check[mode].append(time.perf_counter() - t)
                t = time.perf_counter()
                SearchEngine.open(index, model=model, verify=mode)
                engine[mode].append(time.perf_counter() - t)
    base = statistics.median(engine["size"])
    result = {
        "benchmark": "SearchEngine.open time by verification mode (warm page cache, model object passed in)",
        "vectors": args.n,
        "dim": model.embedding_dim,
        "index_bytes": size_bytes,
        "write_seconds": write_s,
        "repeats": args.repeats,
        "verify_seconds": {m: spread(v) for m, v in check.items()},
        "open_seconds": {m: spread(v) for m, v in engine.items()},
        "overhead_vs_size_check": {m: statistics.median(engine[m]) / base - 1 for m in MODES},
        "target": "fast verification <= 5 % of open time",
        "machine": {**machine(), "load_avg_before": load_before},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("vectors", "index_bytes", "overhead_vs_size_check")}, indent=2))
    for m in MODES:
        print(m, f"verify {statistics.median(check[m]):.3f}s  open {statistics.median(engine[m]):.3f}s")


if __name__ == "__main__":
    main()
