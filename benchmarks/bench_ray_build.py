"""Ray build (``index build --ray auto``) against the single-process build on the same synthetic volumes.

Each build runs in its own fresh Python process (cold preprocessing cache, same model, same options);
its wall time, the embedding step's encode seconds and the peak resident memory of the whole process
tree (the driver, DataLoader workers or Ray's raylet/workers, sampled every 0.1 s) are recorded. Ray's
start-up (``ray.init`` plus a first no-op dataset) is timed apart. Also records per-stage costs
(decode + preprocess per volume, encode per volume) that ``benchmarks/README.md`` projects to CT-RATE and
1M volumes.

    python benchmarks/bench_ray_build.py --n 160 --repeats 2 --out benchmarks/results/ray_build_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(cmd: list[str], env: dict) -> dict:
    """Wall time and peak tree RSS of ``cmd``, run outside the repository (``-m`` resolves the installed
    package, whose ``cli`` subpackage setuptools maps from ./cli); raises when it fails."""
    t0 = time.perf_counter()
    pipe = subprocess.PIPE
    proc = subprocess.Popen(cmd, stdout=pipe, stderr=pipe, text=True, env=env, cwd=tempfile.gettempdir())
    ps, peak, stop = psutil.Process(proc.pid), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _tree_rss(ps))
            except psutil.Error:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": peak[0] / 2**20, "stdout": out}


RAY_START = """
import time, ray
t0 = time.perf_counter()
ray.init(num_cpus={cpus}, include_dashboard=False, log_to_driver=False, configure_logging=False)
ray.data.range(4).map_batches(lambda b: b).take_all()
print(time.perf_counter() - t0)
"""

STAGES = """
import json, time, numpy as np, torch
from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.preprocess import preprocess_case
from hsenet_search.models import load_model
model = load_model({model!r}).to({device!r}).eval()
cases = open_dataset({data!r})[:{n}]
t0 = time.perf_counter()
xs = [preprocess_case(c, model.profile) for c in cases]
pre = time.perf_counter() - t0
x = torch.from_numpy(np.stack(xs)).to({device!r})
with torch.no_grad():
    model.encode_volume(x[:2])
    t0 = time.perf_counter(); model.encode_volume(x); enc = time.perf_counter() - t0
print(json.dumps({{"decode_preprocess_s_per_volume": pre / len(cases),
                  "encode_s_per_volume": enc / len(cases)}}))
"""


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=160, help="synthetic scans (reconstructions add ~25%%)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", default=None, help="model dir (default: the shipped model)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the single-process build")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cli = [sys.executable, "-m", "hsenet_search.cli.main"]
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        from hsenet_search.data.dataset import open_dataset
        from hsenet_search.data.synth import generate_dataset

        data = work / "data"
        generate_dataset(data, args.n, seed=3, size="tiny")
        volumes = len(open_dataset(data))
        common = ["--batch-size", str(args.batch_size), "--device", args.device]
        if args.model:
            common += ["--model", args.model]
        ray_start = [
            float(
                subprocess.run(
                    [sys.executable, "-c", RAY_START.format(cpus=os.cpu_count())],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            for _ in range(args.repeats)
        ]
        runs: dict[str, list[dict]] = {"single_process": [], "ray": []}
        for r in range(args.repeats):
            for name in ("single_process", "ray") if r % 2 == 0 else ("ray", "single_process"):
                out = work / f"{name}_{r}"
                extra = ["--workers", str(args.workers)] if name == "single_process" else ["--ray", "auto"]
                cmd = [*cli, "index", "build", str(data), "--out", str(out), *common, *extra]
                res = run_measured(cmd, env)
                res.pop("stdout")
                runs[name].append(res)
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
        stages = json.loads(
            subprocess.run(
                [sys.executable, "-c", STAGES.format(model=args.model, device=args.device, data=str(data), n=32)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall = {k: summary([r["wall_s"] for r in v]) for k, v in runs.items()}
    rss = {k: summary([r["peak_rss_mb"] for r in v]) for k, v in runs.items()}
    start = summary(ray_start)
    import torch

    result = {
        "benchmark": "index build --ray auto vs single-process build, same synthetic volumes, cold cache",
        "volumes": volumes,
        "machine": {
            "cpu_cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": args.device,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
        "wall_s": wall,
        "peak_rss_mb": rss,
        "ray_start_s": start,
        "ratio_ray_vs_single_wall": wall["ray"]["median"] / wall["single_process"]["median"],
        "ratio_ray_minus_start_vs_single_wall": (wall["ray"]["median"] - start["median"])
        / wall["single_process"]["median"],
        "volumes_per_s": {
            "single_process": volumes / wall["single_process"]["median"],
            "ray": volumes / wall["ray"]["median"],
            "ray_excluding_start": volumes / (wall["ray"]["median"] - start["median"]),
        },
        "stages": stages,
        "notes": "Each build is a fresh process (model load and report encoding included in wall time). "
        "Ray's start is measured apart in fresh processes and subtracted for the 'excluding start' "
        "figures. Peak RSS sums the process tree (Ray: driver + raylet + GCS + workers).",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("volumes", "wall_s", "peak_rss_mb", "ray_start_s")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
