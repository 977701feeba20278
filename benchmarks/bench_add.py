"""``index add`` of 10 % more volumes against a full rebuild of the grown dataset (issue 10).

A synthetic CT-RATE dataset whose ``valid`` split is about 10 % of the volumes: the index of the
``train`` split is built first (not timed); then, side by side, ``add_to_index`` of the ``valid`` split
and ``build_index`` of all splits, both cold (no preprocessing cache), same model object.

Target: the add costs <= 15 % of the full rebuild.

    python benchmarks/bench_add.py [--n 100] [--repeats 2] [--out benchmarks/results/add_vs_rebuild_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_open import machine, spread  # noqa: E402

from hsenet_search.data.dataset import open_dataset  # noqa: E402
from hsenet_search.data.synth import generate_dataset  # noqa: E402
from hsenet_search.index.builder import BuildConfig, add_to_index, build_index  # noqa: E402
from hsenet_search.models import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100, help="scans in the dataset")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "add_vs_rebuild_cpu.json")
    args = ap.parse_args()
    model = load_model().eval()
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench-add-") as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        generate_dataset(data, args.n, seed=3, valid_fraction=0.09, size="tiny")
        n_base, n_new = len(open_dataset(data, split="train")), len(open_dataset(data, split="valid"))
        base = tmp / "base"
        build_index(
            BuildConfig(data=str(data), out=str(base), split="train", workers=args.workers),
            model=model,
            progress=False,
        )
        add_s, full_s = [], []
        for i in range(args.repeats):
            grown = tmp / f"grown{i}"
            shutil.copytree(base, grown)
            t = time.perf_counter()
            add_to_index(grown, str(data), model=model, split="valid", workers=args.workers, progress=False)
            add_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            build_index(
                BuildConfig(data=str(data), out=str(tmp / f"full{i}"), split="all", workers=args.workers),
                model=model,
                progress=False,
            )
            full_s.append(time.perf_counter() - t)
    ratio = statistics.median(add_s) / statistics.median(full_s)
    result = {
        "benchmark": "index add of the new volumes vs full rebuild (cold preprocessing, same model)",
        "base_volumes": n_base,
        "added_volumes": n_new,
        "added_fraction": n_new / (n_base + n_new),
        "repeats": args.repeats,
        "add_seconds": spread(add_s),
        "rebuild_seconds": spread(full_s),
        "ratio_add_vs_rebuild": ratio,
        "target": "add <= 0.15 x rebuild",
        "machine": {**machine(), "load_avg_before": load_before},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("base_volumes", "added_volumes", "ratio_add_vs_rebuild")}, indent=2))


if __name__ == "__main__":
    main()
