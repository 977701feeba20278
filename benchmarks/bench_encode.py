"""Volume-encode throughput (volumes/s) of the named model configs, per embedding (stage-1 ViT, 2E3 with its
slice tower, fusion of both).

    python benchmarks/bench_encode.py                                  # tiny and base on CPU, fp32
    python benchmarks/bench_encode.py --device cuda --amp bf16         # -> encode_throughput_cuda_bf16.json

Weights are random (throughput does not depend on their values); each timed sample is one
``model.encode_volume`` call on a preprocessed batch already in memory, after warm-up; the result is the
median volumes/s over ``--repeats`` samples with min–max. Results go to
``benchmarks/results/encode_throughput_<device>[_bf16].json`` with the machine, its load and the versions.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsenet_search.eval.provenance import run_started, spread, write_result  # noqa: E402
from hsenet_search.models import create_model  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    name: str,
    device: torch.device,
    batch_size: int,
    repeats: int,
    warmup: int,
    amp: str,
    text_model: str | None,
    embeddings: list[str],
) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(name, text_model=text_model).to(device).eval()
    x = torch.rand(batch_size, 1, *model.config.img_size, device=device)
    vision = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("text_towers."))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()
    rows = []
    for embedding in embeddings:
        rates = []
        with autocast:
            for _ in range(warmup):
                model.encode_volume(x, embedding=embedding)
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                model.encode_volume(x, embedding=embedding)
                _sync(device)
                rates.append(batch_size / (time.perf_counter() - start))
        rows.append(
            {
                "config": name,
                "embedding": embedding,
                "device": device.type,
                "amp": amp,
                "batch_size": batch_size,
                "img_size": list(model.config.img_size),
                "vision_params": vision,
                "volumes_per_s": spread(rates, 3),
            }
        )
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,base")
    parser.add_argument("--embeddings", default="stage1,stage2,fusion")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: tiny 4 / base 1 on CPU, 8 on CUDA")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default: 5 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast dtype")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--text-model",
        default=None,
        help="local transformers dir for the text trunk (volume throughput does not use it)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    started = run_started()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    default_batch = {"tiny": 4, "base": 1}
    repeats = args.repeats or (20 if cuda else 5)
    configs = [c for c in args.configs.split(",") if c]
    embeddings = [e for e in args.embeddings.split(",") if e]
    rows: list[dict] = []
    with Progress() as progress:
        task = progress.add_task("encode throughput", total=len(configs))
        for name in configs:
            batch_size = args.batch_size or (8 if cuda else default_batch.get(name, 1))
            rows += bench(name, device, batch_size, repeats, args.warmup, args.amp, args.text_model, embeddings)
            progress.advance(task)
    suffix = "_bf16" if args.amp == "bf16" else ""
    out = args.out or ROOT / "benchmarks" / "results" / f"encode_throughput_{device.type}{suffix}.json"
    write_result(
        out,
        {
            "benchmark": "volume encode throughput (model.encode_volume, preprocessed batch in memory)",
            "warmup": args.warmup,
            "results": rows,
        },
        started,
        device=str(device),
        repeats=repeats,
    )
    table = Table(title=f"volume encode throughput on {device.type} ({args.amp}), median of {repeats} [min–max]")
    for col in ("config", "embedding", "batch", "img_size", "volumes/s"):
        table.add_column(col)
    for r in rows:
        v = r["volumes_per_s"]
        table.add_row(
            r["config"],
            r["embedding"],
            str(r["batch_size"]),
            "×".join(map(str, r["img_size"])),
            f"{v['median']:.2f} [{v['min']:.2f}–{v['max']:.2f}]",
        )
    Console().print(table)
    Console().print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
