"""Peak memory of ``index build``'s assembly step: in-memory (before) vs streamed (now), side by side.

The same build work directory -- float16 volume shards and row metadata as ``index build`` writes them,
clustered random vectors (N x 256, the tiny model's width) -- is assembled into an index by the builder's
``_assemble`` of two code versions, each in a fresh process: the *old* one from ``--old-ref`` (the commit
before streaming, extracted with ``git archive``) and the *new* one from this tree. Each process reports its
peak RSS (``ru_maxrss``), its RSS just before the assembly (imports + model) and the assembly's wall time;
the two published indexes are then compared (metadata, float16 embedding files, FAISS lists, tuned search
default, hubness statistics). The model is the ``tiny`` config with seeded random weights (report vectors
only feed the report index; the volume side is what scales).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_assembly_memory.py --n 1000000 \\
        --repeats 2 --out benchmarks/results/assembly_memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def make_work(work: Path, n: int, dim: int, shard_size: int, reports: int, seed: int = 0) -> None:
    """The build's work directory: float16 shards of clustered unit vectors and their metadata rows."""
    from hsenet_search.data.labels import LABELS
    from hsenet_search.index.shards import ShardWriter

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4096, dim), dtype=np.float32)
    labels = dict.fromkeys(LABELS, 0)
    with ShardWriter(work, "volumes", shard_size=shard_size) as writer:
        for s in range(0, n, shard_size):
            m = min(shard_size, n - s)
            x = centres[rng.integers(0, len(centres), m)] + 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            names = [f"vol_{i:07d}" for i in range(s, s + m)]
            rows = [
                {
                    "volume_name": v,
                    "scan_id": v[:-1],
                    "split": "train",
                    "path": f"/data/{v}.nii.gz",
                    "findings": f"Findings of report {i % reports}.",
                    "impression": "",
                    **labels,
                }
                for i, v in zip(range(s, s + m), names, strict=True)
            ]
            writer.append(names, x, rows)


def child(args: argparse.Namespace) -> None:
    """One assembly in this process; prints a JSON line."""
    import torch

    import hsenet_search
    from hsenet_search.index.builder import BuildConfig, _assemble
    from hsenet_search.models import create_model

    torch.manual_seed(0)
    model = create_model("tiny").eval()
    before = _rss_mb()
    t0 = time.perf_counter()
    cfg = BuildConfig(data=str(args.work), out=str(args.index), factory=args.factory)
    _assemble(model, "tiny", args.work, args.index, cfg=cfg, source={"dataset": "synthetic"}, progress=False)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"package": hsenet_search.__file__, "rss_before_mb": before, "peak_rss_mb": peak, "wall_s": wall}))


def run_child(src: Path | None, work: Path, index: Path, factory: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, __file__, "--child", "--work", str(work), "--index", str(index), "--factory", factory]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), check=False)
    if res.returncode != 0:
        raise SystemExit(f"assembly failed ({src or 'new'}):\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["assembly_rss_mb"] = out["peak_rss_mb"] - out["rss_before_mb"]
    return out


def compare(a: Path, b: Path) -> dict:
    """The two indexes hold the same rows, embeddings, FAISS lists, tuned default and hubness statistics."""
    import faiss
    import pandas as pd

    from hsenet_search.index.faiss_backend import VectorIndex
    from hsenet_search.index.hubness import HubnessNormalizer
    from hsenet_search.index.store import open_index_dir, read_metadata

    ma, mb = open_index_dir(a), open_index_dir(b)
    pd.testing.assert_frame_equal(read_metadata(a / "metadata.parquet"), read_metadata(b / "metadata.parquet"))
    files = sorted(p.relative_to(a).as_posix() for p in (a / "embeddings").glob("volumes_*.npy"))
    same_files = all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    ia, ib = VectorIndex.load(a / "volumes.faiss"), VectorIndex.load(b / "volumes.faiss")
    result = {"volumes_embedding_files_identical": same_files, "counts_equal": ma.counts == mb.counts}
    try:
        la, lb = faiss.extract_index_ivf(ia.index), faiss.extract_index_ivf(ib.index)
        result["ivf_lists_identical"] = all(
            np.array_equal(
                faiss.rev_swig_ptr(la.invlists.get_ids(i), la.invlists.list_size(i)),
                faiss.rev_swig_ptr(lb.invlists.get_ids(i), lb.invlists.list_size(i)),
            )
            for i in range(la.nlist)
        )
        result["tuned_nprobe"] = [int(la.nprobe), int(lb.nprobe)]
    except RuntimeError:
        pass
    q = np.load(sorted((a / "embeddings").glob("volumes_*.npy"))[0])[:200].astype(np.float32)
    result["search_ids_identical"] = bool(np.array_equal(ia.search(q, 10)[1], ib.search(q, 10)[1]))
    for name in ("text_to_volumes", "volumes_to_reports"):
        ha = HubnessNormalizer.load(a / "hubness" / f"{name}.npz")
        hb = HubnessNormalizer.load(b / "hubness" / f"{name}.npz")
        result[f"hubness_{name}_max_abs_diff"] = float(np.abs(ha.log_norm - hb.log_norm).max())
    return result


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=8192, help="rows per build shard (index build: --shard-size)")
    p.add_argument("--reports", type=int, default=2_600, help="unique report texts (>= 39 x IVF lists)")
    p.add_argument("--factories", default="IVF64,Flat;IVF64,SQ8", help="';'-separated FAISS factories")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--old-ref", default="f6fd7acb3556afa333e6ddaf517f117775334561")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--factory", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_assembly_") as tmp:
        tmp = Path(tmp)
        old_src = tmp / "old"
        old_src.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.old_ref, "hsenet_search"], cwd=REPO, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive, check=True)
        t0 = time.perf_counter()
        make_work(tmp / "work", args.n, args.dim, args.shard_size, args.reports)
        make_s = time.perf_counter() - t0
        shard_mb = sum(f.stat().st_size for f in (tmp / "work").rglob("*")) / 2**20
        results = []
        for factory in args.factories.split(";"):
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            for _ in range(args.repeats):  # interleaved
                for arm, src in (("old", old_src), ("new", None)):
                    index = tmp / f"index_{arm}"
                    shutil.rmtree(index, ignore_errors=True)
                    runs[arm].append(run_child(src, tmp / "work", index, factory))
                    print(factory, arm, runs[arm][-1], flush=True)
            same = compare(tmp / "index_old", tmp / "index_new")

            row = {"factory": factory, "runs": runs, "equal_outputs": same}
            for key in ("peak_rss_mb", "assembly_rss_mb", "wall_s"):
                row[key] = {arm: _spread([r[key] for r in runs[arm]]) for arm in runs}
            for key in ("peak_rss_mb", "assembly_rss_mb"):
                row[f"{key}_ratio_old_over_new"] = row[key]["old"]["median"] / row[key]["new"]["median"]
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}, indent=1), flush=True)
            _write(args, load_start, shard_mb, make_s, results)
    return 0


def _write(args: argparse.Namespace, load_start, shard_mb: float, make_s: float, results: list[dict]) -> None:
    """The JSON so far (rewritten after each factory)."""
    out = {
        "benchmark": "index build assembly: peak RSS, in-memory (old) vs streamed (new)",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_avg_start": load_start,
            "load_avg_end": os.getloadavg(),
        },
        "n": args.n,
        "dim": args.dim,
        "shard_size": args.shard_size,
        "unique_reports": args.reports,
        "work_dir_mb": shard_mb,
        "make_work_s": make_s,
        "old_ref": args.old_ref,
        "float32_matrix_mb": args.n * args.dim * 4 / 2**20,
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
