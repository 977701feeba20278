"""Seconds per drafted report, per drafting mode, warm and cold, on CPU; where the LLM's time goes.

Three parts, one JSON (``benchmarks/results/draft_latency_cpu.json``, machine and load recorded):

1. **Warm**: ``--n`` drafts per mode (nearest, vote, grounded, llm) in this process, the LLM loaded once
   before timing. Draft ``j`` is grounded in ``--k`` real CT-RATE reports read at run time from
   ``../shared/data/ct-rate-manual-labels/train.csv`` (rows ``j*k .. j*k+k-1``, ranked in file order), so
   prompt sizes are those of real reports. The LLM mode runs with each repetition guard
   (``LLMConfig.guard``: ``new-ngrams`` ours on the generated text, ``transformers``'
   ``no_repeat_ngram_size``, ``none``); modes run interleaved per draft so load from other processes hits
   them alike. Per LLM draft: prompt tokens, new tokens, seconds in ``generate`` and the merge outcome.
2. **Weights cache**: ``--loads`` fresh processes load the default LLM with an empty cache directory (the
   GGUF file de-quantised and saved) and then from that cache (later loads; also with the clock started
   after the modules ``generate`` imports anyway, as inside the CLI); two more per repeat time a
   cached load phase by phase (imports, cache lookup, model modules, model, tokenizer) with the current
   loader (``new``: empty model + assigned safetensors) and with ``from_pretrained`` (``old``).
3. **Cold CLI**: ``--cold`` fresh ``hsenet-search generate SCAN --index DIR --mode llm --json`` processes,
   process start to JSON on stdout (imports, index open, encoding, retrieval, LLM load from the user's
   cache, one draft). Without ``--index`` a 24-scan synthetic index is built once under
   ``runs/draft-latency/``; the query is the first valid scan whose grounded draft leaves the LLM something
   to merge (so the LLM is called).

    python benchmarks/bench_draft_latency.py                  # 10 drafts, 3 loads, 3 cold calls
    python benchmarks/bench_draft_latency.py --n 20 --cold 5 --index indexes/NAME

Times are median [min-max] over the repeats.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from hsenet_search.data.labels import LABELS  # noqa: E402
from hsenet_search.data.report_text import split_report_text  # noqa: E402
from hsenet_search.eval.provenance import run_started, spread, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MANUAL = ROOT.parent / "shared" / "data" / "ct-rate-manual-labels" / "train.csv"
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "runs" / "draft-latency"
CLI = Path(sys.executable).with_name("hsenet-search")
OUTCOMES = ("merged", "partly merged", "composer")


def read_case_groups(n: int, k: int) -> list:
    """``n`` groups of ``k`` real reports (findings / impression split, radiologist labels)."""
    from hsenet_search.generate.compose import RetrievedCase

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


def warm(args, console: Console) -> dict:
    """Every mode and guard on the same groups of real reports, interleaved per draft."""
    from hsenet_search.generate.draft import MODES, draft
    from hsenet_search.generate.llm import GUARDS, load_llm

    groups = read_case_groups(args.n, args.k)
    t0 = time.perf_counter()
    llm = load_llm(args.llm, max_new_tokens=args.max_new_tokens, device="cpu")
    load_s = time.perf_counter() - t0
    guarded = {g: load_llm(args.llm, max_new_tokens=args.max_new_tokens, device="cpu", guard=g) for g in GUARDS}
    runs = [*(m for m in MODES if m != "llm"), *(f"llm/{g}" for g in GUARDS)]
    seconds: dict[str, list[float]] = {run: [] for run in runs}
    drafts: dict[str, list[dict]] = {run: [] for run in runs}
    with Progress(console=console) as bar:
        task = bar.add_task("warm drafts", total=args.n * len(runs))
        for cases in groups:
            for run in runs:
                mode, _, guard = run.partition("/")
                start = time.perf_counter()
                result = draft(cases, mode=mode, llm=guarded[guard] if guard else None)
                seconds[run].append(time.perf_counter() - start)
                drafts[run].append(
                    {
                        "findings_words": len(result.findings.split()),
                        "impression_words": len(result.impression.split()),
                        "checks_passed": {name: check["passed"] for name, check in result.checks.items()},
                        **({"merge": result.merge} if mode == "llm" else {}),
                    }
                )
                bar.update(task, advance=1)
    results = {}
    for run in runs:
        results[run] = {"seconds": spread(seconds[run]), "drafts": drafts[run]}
        merges = [d["merge"] for d in drafts[run] if "merge" in d and "new_tokens" in d["merge"]]
        if merges:
            called = [sec for sec, d in zip(seconds[run], drafts[run], strict=True) if "new_tokens" in d["merge"]]
            results[run]["seconds_llm_called"] = spread(called)
            results[run]["llm_calls"] = {
                "calls": len(merges),
                "prompt_tokens": spread([m["prompt_tokens"] for m in merges]),
                "new_tokens": spread([m["new_tokens"] for m in merges]),
                "generate_s": spread([m["seconds"] for m in merges]),
                "seconds_per_new_token": spread([m["seconds"] / max(m["new_tokens"], 1) for m in merges]),
                "outcomes": {o: sum(m["outcome"] == o for m in merges) for o in OUTCOMES},
            }
    return {"llm": llm.name, "llm_load_s_in_process": load_s, "runs": results}


def _child_load(llm: str, after_cli_imports: bool = False) -> float:
    """Seconds for ``load_llm`` in a fresh process (reported by the child on stdout); with
    ``after_cli_imports`` the clock starts once the modules ``generate`` imports anyway (the engine, MONAI's
    transforms) are imported."""
    code = (
        ("import hsenet_search.engine, monai.transforms; " if after_cli_imports else "")
        + "import time; t = time.perf_counter(); from hsenet_search.generate.llm import load_llm; "
        + f"load_llm({llm!r}, device='cpu'); print(time.perf_counter() - t)"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


# A fresh process loading a cached entry phase by phase, the model by ``load_cached_model`` (``new``) or by
# transformers' ``from_pretrained`` of the entry (``old``, the loader before issue 13's follow-up).
_PHASES = """
import json, sys, time
marks, t = {}, time.perf_counter()
def mark(name):
    global t
    now = time.perf_counter(); marks[name] = now - t; t = now
import torch; mark("import torch")
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer; mark("import transformers")
from hsenet_search.generate.llm import _resolve, dequantised_dir, load_cached_model
entry = dequantised_dir(*_resolve(sys.argv[1])[:2]); mark("cache entry (GGUF SHA-256)")
AutoModelForCausalLM._model_mapping[type(AutoConfig.from_pretrained(entry))]; mark("model modules")
if sys.argv[2] == "new":
    load_cached_model(entry)
else:
    AutoModelForCausalLM.from_pretrained(entry, local_files_only=True)
mark("model")
AutoTokenizer.from_pretrained(entry, local_files_only=True); mark("tokenizer")
print(json.dumps(marks))
"""
LOADERS = ("new", "old")


def _child_phases(llm: str, loader: str) -> dict[str, float]:
    command = [sys.executable, "-c", _PHASES, llm, loader]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def weights_cache(args) -> dict:
    """First load (empty cache: de-quantise and save) vs later loads (from the cache), fresh processes;
    later loads also phase by phase with the current loader (``new``) and ``from_pretrained`` (``old``),
    interleaved."""
    first, later, in_cli = [], [], []
    phases: dict[str, list[dict[str, float]]] = {loader: [] for loader in LOADERS}
    saved = os.environ.get("HSENET_LLM_CACHE")
    with tempfile.TemporaryDirectory(prefix="llm-cache-") as cache:
        os.environ["HSENET_LLM_CACHE"] = cache
        try:
            for _ in range(args.loads):
                for entry in Path(cache).iterdir():
                    shutil.rmtree(entry)
                first.append(_child_load(args.llm))
                later.append(_child_load(args.llm))
                in_cli.append(_child_load(args.llm, after_cli_imports=True))
                for loader in LOADERS:
                    phases[loader].append(_child_phases(args.llm, loader))
        finally:
            if saved is None:
                os.environ.pop("HSENET_LLM_CACHE", None)
            else:
                os.environ["HSENET_LLM_CACHE"] = saved
    return {
        "what": "load_llm in a fresh process, imports included; first = empty cache, later = cached weights",
        "first_load_s": spread(first),
        "later_load_s": spread(later),
        "later_load_after_cli_imports_s": spread(in_cli),
        "later_load_phases_s": {
            loader: {
                **{phase: spread([run[phase] for run in runs]) for phase in runs[0]},
                "total": spread([sum(run.values()) for run in runs]),
            }
            for loader, runs in phases.items()
        },
    }


def _query_scan(index: Path, data: Path, k: int) -> str:
    """The first valid scan whose grounded draft leaves the LLM something to merge (so ``--mode llm`` calls
    the LLM)."""
    from hsenet_search.data.dataset import open_dataset
    from hsenet_search.engine import SearchEngine
    from hsenet_search.generate.compose import draft_grounded
    from hsenet_search.generate.draft import merge_plan
    from hsenet_search.generate.grounding import ground

    engine = SearchEngine.open(index)
    cases = open_dataset(data, split="valid")
    for case in cases:
        neighbours = ground(engine, case.path, k)
        if merge_plan(draft_grounded(neighbours), neighbours)[1]:
            return case.path
    return cases[0].path


def _small_index(console: Console) -> tuple[Path, Path]:
    """A 24-scan synthetic dataset and its index under runs/draft-latency/ (built once, then reused)."""
    data, index = WORK / "data", WORK / "index"
    if not (index / "manifest.json").is_file():
        console.print(f"building the cold-start index once: {index}")
        if not (data / "radiology_text_reports").is_dir():
            synth = [str(CLI), "data", "synth", "--n", "24", "--seed", "5", "--out", str(data)]
            subprocess.run(synth, check=True)
        subprocess.run([str(CLI), "index", "build", str(data), "--out", str(index)], check=True)
    return index, data


def cold(args, console: Console) -> dict:
    """Fresh ``generate --mode llm --json`` processes: process start to JSON on stdout."""
    index, data = (args.index, args.data) if args.index else _small_index(console)
    scan = args.scan or _query_scan(index, data, args.k)
    command = [str(CLI), "generate", str(scan), "--index", str(index), "-k", str(args.k), "--mode", "llm"]
    command += ["--llm", args.llm, "--max-new-tokens", str(args.max_new_tokens), "--json"]
    seconds, merges = [], []
    for _ in range(args.cold):
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        merges.append(json.loads(done.stdout)["merge"])
    return {"command": " ".join(command), "seconds": spread(seconds), "merges": merges}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="warm drafts per mode")
    parser.add_argument("--k", type=int, default=5, help="retrieved reports per draft")
    parser.add_argument("--llm", default="default", help="default | local path | cached hub id")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="cap; the merge sizes its own budget")
    parser.add_argument("--loads", type=int, default=3, help="fresh processes timing first/later LLM loads")
    parser.add_argument("--cold", type=int, default=3, help="fresh `generate` CLI processes to time")
    parser.add_argument("--index", type=Path, help="index for the cold CLI calls (default: a small one)")
    parser.add_argument("--data", type=Path, help="dataset of --index (to pick the query scan)")
    parser.add_argument("--scan", help="query scan of the cold CLI calls")
    parser.add_argument("--out", type=Path, default=RESULTS / "draft_latency_cpu.json")
    args = parser.parse_args()
    if args.index and not (args.data or args.scan):
        parser.error("--index needs --data (to pick a query scan) or --scan")

    console = Console()
    started = run_started()
    report = {
        "benchmark": "seconds per drafted report on CPU: warm per mode, LLM weights cache, cold generate CLI",
        "config": {
            "n_drafts": args.n,
            "k": args.k,
            "max_new_tokens_cap": args.max_new_tokens,
            "decoding": "greedy; llm/<guard>: no-repeat 8-grams by that guard",
            "reports": "shared/data/ct-rate-manual-labels/train.csv (read at run time)",
        },
        "warm": warm(args, console),
    }
    report["weights_cache"] = weights_cache(args) if args.loads else None
    report["cold_cli"] = cold(args, console) if args.cold else None
    write_result(args.out, report, started, repeats=args.n)

    table = Table(title=f"seconds per drafted report (k={args.k}, CPU): median [min-max]")
    for column in ("what", "n", "median [min-max]", "new tokens", "s/token"):
        table.add_column(column)

    def row(name: str, s: dict, calls: dict | None = None) -> None:
        tokens = f"{calls['new_tokens']['median']:.0f}" if calls else ""
        per_token = f"{calls['seconds_per_new_token']['median']:.3f}" if calls else ""
        spread_ = f"{s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}]"
        table.add_row(name, str(s["n"]), spread_, tokens, per_token)

    for run, r in report["warm"]["runs"].items():
        row(f"warm {run}", r["seconds"])
        if "llm_calls" in r:
            row(f"warm {run}, LLM called", r["seconds_llm_called"], r["llm_calls"])
    if report["weights_cache"]:
        row("LLM load, empty cache", report["weights_cache"]["first_load_s"])
        row("LLM load, cached", report["weights_cache"]["later_load_s"])
        in_cli = report["weights_cache"]["later_load_after_cli_imports_s"]
        row("LLM load, cached, after the CLI's imports", in_cli)
        for loader, phases in report["weights_cache"]["later_load_phases_s"].items():
            for phase, s in phases.items():
                row(f"cached load ({loader} loader): {phase}", s)
    if report["cold_cli"]:
        row("cold generate CLI (llm)", report["cold_cli"]["seconds"])
    console.print(table)
    console.print(f"results -> {args.out}")


if __name__ == "__main__":
    main()
