"""Cold ``hsenet-search search text`` call: this tree against a git worktree of a base commit, side by side.

Each repeat runs one fresh process per side (alternating, so both see the same machine load) and records its
wall time and peak resident memory (``/usr/bin/time -f %e %M``). The base side runs from a detached
``git worktree`` of ``--base`` (default: the merge base with main) with its own package on PYTHONPATH.

    python benchmarks/bench_cold_cli.py --index runs/demo/index [--base COMMIT] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUERY = "Right pleural effusion with adjacent atelectasis."


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def make_base_tree(commit: str, folder: Path) -> Path:
    """A detached worktree of ``commit`` importable as ``hsenet_search`` (its cli/ is linked into the package)."""
    git("worktree", "add", "--detach", str(folder), commit)
    (folder / "hsenet_search" / "cli").symlink_to(folder / "cli", target_is_directory=True)
    return folder


def one_call(root: Path, index: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [
        "/usr/bin/time",
        "-f",
        "%e %M",
        sys.executable,
        "-m",
        "hsenet_search.cli.main",
        "search",
        "text",
        QUERY,
        "--index",
        str(index.resolve()),
        "-k",
        "5",
        "--json",
    ]
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise SystemExit(f"{root}: search text failed: {res.stderr[-2000:]}")
    wall, kb = res.stderr.strip().splitlines()[-1].split()
    hits = [h["scan_id"] for h in json.loads(res.stdout)["hits"]]
    return {"wall_s": float(wall), "peak_rss_mb": int(kb) / 1024, "hits": hits}


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--index", type=Path, default=Path("runs/demo/index"))
    ap.add_argument("--base", default=None, help="commit of the code to compare with (default: merge-base main)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cold_cli.json")
    args = ap.parse_args()
    base = args.base or git("merge-base", "HEAD", "main")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hsenet-base-") as tmp:
        base_root = make_base_tree(base, Path(tmp) / "base")
        try:
            runs: dict[str, list[dict]] = {"base": [], "this": []}
            for _ in range(args.repeats):
                runs["base"].append(one_call(base_root, args.index))
                runs["this"].append(one_call(REPO, args.index))
        finally:
            git("worktree", "remove", "--force", str(base_root))
    same_hits = all(r["hits"] == runs["base"][0]["hits"] for side in runs.values() for r in side)
    result = {
        "benchmark": "cold `hsenet-search search text` call (process start to JSON)",
        "query": QUERY,
        "index": str(args.index),
        "base_commit": base,
        "this_commit": git("rev-parse", "HEAD"),
        "repeats": args.repeats,
        "same_hits": same_hits,
        **{
            side: {
                "wall_s": summary([r["wall_s"] for r in rs]),
                "peak_rss_mb": summary([r["peak_rss_mb"] for r in rs]),
            }
            for side, rs in runs.items()
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "shared": "2 cores shared with other jobs",
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    result["speedup_median"] = result["base"]["wall_s"]["median"] / result["this"]["wall_s"]["median"]
    result["memory_ratio_median"] = result["this"]["peak_rss_mb"]["median"] / result["base"]["peak_rss_mb"]["median"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("base", "this", "speedup_median", "same_hits")}, indent=2))


if __name__ == "__main__":
    main()
