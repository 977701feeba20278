"""Volume-encode throughput (volumes/s) of the named model configs, per embedding (stage-1 ViT, 2E3 with its
slice tower, fusion of both).

    python benchmarks/bench_encode.py                       # tiny and base on CPU
    python benchmarks/bench_encode.py --device cuda --amp bf16 --batch-size 8

Weights are random (throughput does not depend on their values); the timed call is ``model.encode_volume`` on a
preprocessed batch already in memory, after warm-up. Results go to ``benchmarks/results/encode_throughput_<device>.json``
with the machine they ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsenet_search.models import create_model  # noqa: E402


def machine(device: torch.device, load_at_start: float) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1min": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)}}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, device: torch.device, batch_size: int, repeats: int, warmup: int, amp: str,
          text_model: str | None, embeddings: list[str]) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(name, text_model=text_model).to(device).eval()
    x = torch.rand(batch_size, 1, *model.config.img_size, device=device)
    vision = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("text_towers."))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()
    rows = []
    for embedding in embeddings:
        with autocast:
            for _ in range(warmup):
                model.encode_volume(x, embedding=embedding)
            _sync(device)
            start = time.perf_counter()
            for _ in range(repeats):
                model.encode_volume(x, embedding=embedding)
            _sync(device)
        seconds = (time.perf_counter() - start) / repeats
        rows.append({"config": name, "embedding": embedding, "device": device.type, "amp": amp,
                     "batch_size": batch_size, "img_size": list(model.config.img_size),
                     "vision_params": vision, "seconds_per_batch": round(seconds, 4),
                     "volumes_per_s": round(batch_size / seconds, 3)})
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,base")
    parser.add_argument("--embeddings", default="stage1,stage2,fusion")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: tiny 4 / base 1 on CPU, 8 on CUDA")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default: 3 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--amp", choices=("none", "bf16"), default="none")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--text-model", default=None,
                        help="local transformers dir for the text trunk (volume throughput does not use it)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    load_at_start = os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    default_batch = {"tiny": 4, "base": 1}
    repeats = args.repeats or (20 if cuda else 3)
    configs = [c for c in args.configs.split(",") if c]
    embeddings = [e for e in args.embeddings.split(",") if e]
    rows: list[dict] = []
    with Progress() as progress:
        task = progress.add_task("encode throughput", total=len(configs))
        for name in configs:
            batch_size = args.batch_size or (8 if cuda else default_batch.get(name, 1))
            rows += bench(name, device, batch_size, repeats, args.warmup, args.amp, args.text_model, embeddings)
            progress.advance(task)
    out = args.out or ROOT / "benchmarks" / "results" / f"encode_throughput_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "volume encode throughput (model.encode_volume, preprocessed batch in memory)",
              "machine": machine(device, load_at_start), "repeats": repeats, "warmup": args.warmup, "results": rows}
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"volume encode throughput on {device.type}")
    for col in ("config", "embedding", "batch", "s/batch", "volumes/s"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["config"], r["embedding"], str(r["batch_size"]), f"{r['seconds_per_batch']:.3f}",
                      f"{r['volumes_per_s']:.2f}")
    Console().print(table)
    Console().print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
