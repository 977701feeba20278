"""Latency per drafted report, per drafting mode (nearest, vote, grounded composer, LLM merge), on CPU.

Each draft is grounded in ``--k`` real CT-RATE reports read at run time from
``../shared/data/ct-rate-manual-labels/train.csv`` (draft ``j`` uses rows ``j*k .. j*k+k-1``, ranked in
file order), so the prompt sizes are those of real reports. The LLM (default: SmolLM2-135M-Instruct GGUF)
is loaded once before timing; its load time is reported apart. Modes run interleaved per draft so CPU
contention from other processes hits them alike. The LLM mode also runs with each repetition guard
(``LLMConfig.guard``: ours on the generated text, transformers' ``no_repeat_ngram_size``, none), and
``--cold`` fresh processes time a cold start (imports, cached weights, one LLM draft).

    python benchmarks/bench_draft_latency.py                     # 5 drafts, k=5, max_new_tokens=256
    python benchmarks/bench_draft_latency.py --n 10 --llm /path/to/causal-lm

Results: ``benchmarks/results/draft_latency_cpu.json`` with the machine described.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from hsenet_search.data.labels import LABELS  # noqa: E402
from hsenet_search.data.report_text import split_report_text  # noqa: E402
from hsenet_search.generate.compose import RetrievedCase  # noqa: E402
from hsenet_search.generate.draft import MODES, draft  # noqa: E402
from hsenet_search.generate.llm import GUARDS, load_llm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MANUAL = ROOT.parent / "shared" / "data" / "ct-rate-manual-labels" / "train.csv"
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    """CPU, usable cores, threads, library versions and the load average when the run started."""
    names = (
        re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), flags=re.M)
        if Path("/proc/cpuinfo").exists()
        else []
    )
    return {
        "cpu": names[0].strip() if names else platform.machine(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def read_case_groups(n: int, k: int) -> list[list[RetrievedCase]]:
    """``n`` groups of ``k`` real reports (findings / impression split, radiologist labels)."""
    with MANUAL.open(newline="", encoding="utf-8") as f:
        rows = list(islice(csv.DictReader(f), n * k))
    if len(rows) < n * k:
        raise SystemExit(f"{MANUAL} has {len(rows)} reports; {n} drafts x k={k} need {n * k}")
    cases = [
        RetrievedCase(
            row["AccessionNo"],
            round(1.0 - 0.05 * (i % k), 2),
            *split_report_text(row["report_text"]),
            tuple(label for label in LABELS if row[label] == "1"),
        )
        for i, row in enumerate(rows)
    ]
    return [cases[j * k : (j + 1) * k] for j in range(n)]


def summary(seconds: list[float]) -> dict:
    return {
        "mean_s": statistics.fmean(seconds),
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5, help="number of drafts per mode")
    parser.add_argument("--k", type=int, default=5, help="retrieved reports per draft")
    parser.add_argument("--llm", default="default", help="default | local path | cached hub id")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--cold", type=int, default=2, help="cold-start processes to time")
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "draft_latency_cpu.json")
    args = parser.parse_args()
    if args.cold_child:  # one cold draft: what a fresh `generate` process pays beyond retrieval
        llm = load_llm(args.llm, max_new_tokens=args.max_new_tokens)
        draft(read_case_groups(1, args.k)[0], mode="llm", llm=llm)
        return

    console = Console()
    info = machine()
    groups = read_case_groups(args.n, args.k)
    t0 = time.perf_counter()
    llm = load_llm(args.llm, max_new_tokens=args.max_new_tokens, device="cpu")
    load_s = time.perf_counter() - t0

    guarded = {
        guard: load_llm(args.llm, max_new_tokens=args.max_new_tokens, device="cpu", guard=guard) for guard in GUARDS
    }
    runs = [*(m for m in MODES if m != "llm"), *(f"llm/{g}" for g in GUARDS)]
    seconds: dict[str, list[float]] = {run: [] for run in runs}
    drafts: dict[str, list[dict]] = {run: [] for run in runs}
    with Progress(console=console) as bar:
        task = bar.add_task("drafting", total=args.n * len(runs))
        for cases in groups:
            for run in runs:
                mode, _, guard = run.partition("/")
                start = time.perf_counter()
                result = draft(cases, mode=mode, llm=guarded[guard] if guard else None)
                seconds[run].append(time.perf_counter() - start)
                drafts[run].append(
                    {
                        "retrieved": result.retrieved,
                        "findings_words": len(result.findings.split()),
                        "impression_words": len(result.impression.split()),
                        "llm": result.llm,
                        "checks_passed": {k: v["passed"] for k, v in result.checks.items()},
                        "warnings": result.warnings,
                    }
                )
                bar.update(task, advance=1)
    cold = []
    for _ in range(args.cold):
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--cold-child",
                "--k",
                str(args.k),
                "--llm",
                args.llm,
                "--max-new-tokens",
                str(args.max_new_tokens),
            ],
            check=True,
            capture_output=True,
        )
        cold.append(time.perf_counter() - start)

    results = {run: {**summary(seconds[run]), "seconds": seconds[run], "drafts": drafts[run]} for run in runs}
    report = {
        "benchmark": "latency per drafted report (CPU), k real CT-RATE reports per draft",
        "machine": {**info, "load_average_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "config": {
            "n_drafts": args.n,
            "k": args.k,
            "llm": llm.name,
            "max_new_tokens": args.max_new_tokens,
            "context_tokens": llm.context_tokens,
            "decoding": "greedy; llm/<guard> rows: no-repeat 8-grams by that guard",
            "reports": "shared/data/ct-rate-manual-labels/train.csv (read at run time)",
        },
        "llm_load_s": load_s,
        "cold_process_s": {**summary(cold), "seconds": cold} if cold else None,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    table = Table(title=f"seconds per drafted report (k={args.k}, {args.n} drafts, CPU)")
    for column in ("mode", "mean", "median", "min", "max"):
        table.add_column(column)
    for run in runs:
        r = results[run]
        table.add_row(run, *(f"{r[key]:.3f}" for key in ("mean_s", "median_s", "min_s", "max_s")))
    console.print(table)
    console.print(f"LLM {llm.name} loaded in {load_s:.1f} s; results -> {args.out}")


if __name__ == "__main__":
    main()
