"""Build throughput with input validation on vs the code before it, side by side on the same inputs.

The build's data side (``open_dataset`` -> ``preprocess_case``: read each volume, check it, preprocess it
with the ``hsenet`` profile) is timed for two commits of the package, each exported with ``git archive``
into a temp folder and imported from there by a worker process (the worker prints which package it ran).
Encoding is the same model call in both and is left out, so the ratio is an upper bound on the slowdown
of a whole build. The two sides alternate in ``--rounds`` rounds of ``--passes`` passes each.

Inputs: a manifest dataset of synthetic chest-like int16 ``.nii.gz`` volumes (CT-RATE-like in-plane size)
written to a temp dir. Results (machine, load, repeats, median and min-max per side, the ratio) go to
``benchmarks/results/validation_cpu.json``.

    .venv/bin/python benchmarks/bench_validation.py                 # ours = HEAD, baseline = 407df93
    .venv/bin/python benchmarks/bench_validation.py --quick         # smaller volumes, one round
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "validation_cpu.json"
BASELINE = "407df93"  # main before the input-validation change
FULL_SHAPES = [(448, 448, 160), (448, 448, 180), (512, 512, 140)]
QUICK_SHAPES = [(256, 256, 96), (256, 256, 80)]

WORKER = """
import json, sys, time
import hsenet_search
from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.preprocess import get_profile, preprocess_case
data, passes = sys.argv[1], int(sys.argv[2])
cases, profile = open_dataset(data), get_profile("hsenet")
times = []
for _ in range(passes + 1):  # the first pass warms caches and is dropped
    start = time.perf_counter()
    for case in cases:
        preprocess_case(case, profile)
    times.append(time.perf_counter() - start)
print(json.dumps({"package": hsenet_search.__file__, "seconds": times[1:]}))
"""


def chest_volume(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """int16 stored values (HU + 1024): air, an elliptic body, two lungs, a spine, noise."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None, None]
    y = np.linspace(-1, 1, shape[1], dtype=np.float32)[None, :, None]
    z = np.linspace(-1, 1, shape[2], dtype=np.float32)[None, None, :]
    hu = np.full(shape, -1000.0, np.float32)
    hu[np.broadcast_to((x / 0.8) ** 2 + (y / 0.65) ** 2 < 1, shape)] = 40.0
    lungs = ((np.abs(x) - 0.35) / 0.25) ** 2 + (y / 0.45) ** 2 + (z / 1.2) ** 2 < 1
    hu[np.broadcast_to(lungs, shape)] = -850.0
    hu[np.broadcast_to((x / 0.12) ** 2 + ((y - 0.5) / 0.12) ** 2 < 1, shape)] = 700.0
    hu += rng.normal(0, 15, shape).astype(np.float32)
    return (hu + 1024).round().astype(np.int16)


def write_inputs(folder: Path, shapes: list[tuple[int, int, int]]) -> Path:
    rows = ["volume_path,findings,impression"]
    for i, shape in enumerate(shapes):
        name = f"volume_{i}.nii.gz"
        image = nib.Nifti1Image(chest_volume(shape, i), np.diag([-0.75, -0.75, 1.5, 1.0]))
        image.header.set_slope_inter(1.0, -1024.0)
        nib.save(image, str(folder / name))
        rows.append(f"{name},Findings {i}.,Impression {i}.")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def export(ref: str, into: Path) -> Path:
    """``git archive REF hsenet_search`` unpacked into ``into`` (the package as it was at REF)."""
    blob = subprocess.run(["git", "archive", ref, "hsenet_search"], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as archive:
        archive.extractall(into, filter="data")
    return into


def _commit(ref: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def run_side(package_root: Path, data: Path, passes: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(package_root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(data), str(passes)],
        cwd=package_root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["package"].startswith(str(package_root)), result["package"]
    return result["seconds"]


def summary(seconds: list[float], volumes: int) -> dict:
    return {
        "repeats": len(seconds),
        "median_s": round(statistics.median(seconds), 4),
        "min_s": round(min(seconds), 4),
        "max_s": round(max(seconds), 4),
        "volumes_per_s_median": round(volumes / statistics.median(seconds), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", default="HEAD", help="git ref with validation (default HEAD)")
    parser.add_argument("--baseline", default=BASELINE, help=f"git ref before it (default {BASELINE})")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    rounds = 1 if args.quick else args.rounds
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        data = write_inputs((tmp / "data").resolve(), shapes)
        roots = {"ours": export(args.ours, tmp / "ours"), "baseline": export(args.baseline, tmp / "baseline")}
        start = time.time()
        for _ in range(rounds):
            for side in ("baseline", "ours"):
                times[side] += run_side(roots[side], data, args.passes)
        wall = time.time() - start
    result = {
        "benchmark": "build data path (read + validate + hsenet profile) with validation vs before",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "shared": "yes: 2 cores shared with other sessions",
        },
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        "inputs": {
            "volumes": len(shapes),
            "shapes": [list(s) for s in shapes],
            "dtype": "int16 .nii.gz",
            "spacing_mm": [0.75, 0.75, 1.5],
        },
        "refs": {side: _commit(ref) for side, ref in (("ours", args.ours), ("baseline", args.baseline))},
        "rounds": rounds,
        "passes_per_round": args.passes,
        "wall_s": round(wall, 1),
        "ours": summary(times["ours"], len(shapes)),
        "baseline": summary(times["baseline"], len(shapes)),
        "ratio_median": round(statistics.median(times["ours"]) / statistics.median(times["baseline"]), 4),
        "ratio_min": round(min(times["ours"]) / min(times["baseline"]), 4),
        "target": "ratio <= 1.03",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
