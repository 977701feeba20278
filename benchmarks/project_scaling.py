"""Project index-build wall time and cost for CT-RATE (50k volumes) and 1M volumes on N CPU nodes + M GPUs.

Inputs are measured results in ``benchmarks/results/`` (read, not retyped):

* decode + preprocess of a CT-RATE-sized volume (512x512x~300, ~79 MB .nii.gz): ``preprocess_cpu.json``,
  seconds per volume on one core (the ``hsenet`` profile, median of the 512x512 cases);
* volume encoding on an H100: ``encode_throughput_cuda.json`` (``base`` and ``tiny`` configs, fusion);
* the Ray pipeline's efficiency on this machine: ``ray_build_cpu.json`` (single-process vs Ray throughput
  on the same volumes, Ray start apart).

Assumptions (each one is printed into the JSON): CPU nodes of ``--cores`` cores; decoding scales linearly
with cores (volumes are independent) times the measured Ray efficiency; encoding scales linearly with GPUs;
the two stages overlap (streaming), so wall = max(decode, encode) + Ray start + FAISS assembly; storage
delivers the compressed volumes fast enough (the GB/s needed is printed); prices are on-demand list prices
given by ``--cpu-node-usd-h`` and ``--gpu-usd-h`` (change them to yours).

    python benchmarks/project_scaling.py --out benchmarks/results/scaling_projection.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from hsenet_search.eval.provenance import run_started, write_result

RESULTS = Path(__file__).resolve().parent / "results"


def measured() -> dict:
    pre = json.loads((RESULTS / "preprocess_cpu.json").read_text())
    big = [c for c in pre["cases"] if c["shape"][0] == 512]
    enc = json.loads((RESULTS / "encode_throughput_cuda.json").read_text())
    gpu = {r["config"]: r["volumes_per_s"] for r in enc["results"] if r["embedding"] == "fusion"}
    ray = json.loads((RESULTS / "ray_build_cpu.json").read_text())
    return {
        "decode_preprocess_s_per_volume_core": statistics.median(c["hsenet_profile_s"] for c in big)
        * pre["machine"]["torch_threads"],  # measured with this many threads busy on one volume
        "volume_mb": statistics.median(c["file_mb"] for c in big),
        "gpu_encode_volumes_per_s": gpu,
        "ray_efficiency": 1 / ray["ratio_ray_minus_start_vs_single_wall"],
        "ray_start_s": ray["ray_start_s"]["median"],
    }


def project(volumes: int, cpu_nodes: int, gpus: int, model: str, m: dict, args: argparse.Namespace) -> dict:
    cores = cpu_nodes * args.cores
    eff = min(1.0, m["ray_efficiency"])
    decode_s = volumes * m["decode_preprocess_s_per_volume_core"] / (cores * eff)
    encode_s = volumes / (gpus * m["gpu_encode_volumes_per_s"][model])
    faiss_s = args.faiss_s_per_million * volumes / 1e6
    wall = max(decode_s, encode_s) + m["ray_start_s"] + faiss_s
    cost = wall / 3600 * (cpu_nodes * args.cpu_node_usd_h + gpus * args.gpu_usd_h)
    return {
        "volumes": volumes,
        "cpu_nodes": cpu_nodes,
        "cores": cores,
        "gpus": gpus,
        "model": model,
        "decode_h": decode_s / 3600,
        "encode_h": encode_s / 3600,
        "wall_h": wall / 3600,
        "bottleneck": "decode (CPU)" if decode_s > encode_s else "encode (GPU)",
        "cost_usd": cost,
        "storage_gb_per_s_needed": volumes * m["volume_mb"] / 1024 / max(decode_s, encode_s),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cores", type=int, default=16, help="cores per CPU node")
    p.add_argument("--cpu-node-usd-h", type=float, default=0.68, help="price of one CPU node per hour")
    p.add_argument("--gpu-usd-h", type=float, default=3.00, help="price of one H100 per hour")
    p.add_argument(
        "--faiss-s-per-million",
        type=float,
        default=600.0,
        help="FAISS assembly seconds per 1M vectors (IVF train + add + tune on one node)",
    )
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    started = run_started()
    m = measured()
    rows = [
        project(v, n, g, model, m, args)
        for v in (50_000, 1_000_000)
        for model in ("base", "tiny")
        for n, g in ((1, 1), (4, 1), (8, 2), (16, 4), (32, 8))
    ]
    out = {
        "benchmark": "projected index-build wall time and cost (from measured per-stage costs)",
        "measured_inputs": m,
        "assumptions": {
            "cpu_node_cores": args.cores,
            "cpu_node_usd_per_h": args.cpu_node_usd_h,
            "gpu": "H100",
            "gpu_usd_per_h": args.gpu_usd_h,
            "faiss_assembly_s_per_million": args.faiss_s_per_million,
            "decode": "linear in cores x measured Ray efficiency (capped at 1); CT-RATE-sized volumes",
            "encode": "linear in GPUs at the measured H100 fusion rate of the config, batch 8, fp32",
            "overlap": "streaming: wall = max(decode, encode) + Ray start + FAISS assembly",
            "storage": "not a limit; storage_gb_per_s_needed says what it must deliver",
            "not_included": "reading from object storage, report-text encoding (seconds), cluster set-up",
        },
        "rows": rows,
    }
    # the machine that computed the projection; the inputs' machines are in their own result files
    write_result(args.out, out, started, device="cpu")
    for r in rows:
        print(
            f"{r['volumes']:>9,} {r['model']:>4} {r['cpu_nodes']:>3} nodes {r['gpus']:>2} GPUs  "
            f"wall {r['wall_h']:7.2f} h  ${r['cost_usd']:8.0f}  {r['bottleneck']}  "
            f"{r['storage_gb_per_s_needed']:.1f} GB/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
