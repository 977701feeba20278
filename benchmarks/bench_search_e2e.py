"""End-to-end ``search text`` latency on a 10k-volume index.

Encoding 10k synthetic volumes on 2 CPU cores would take hours, so the index directory is written with
the shipped model's fingerprint and preprocessing and 10k random unit vectors as volume embeddings (plus
real metadata columns); everything a query does is real: the model encodes the text, FAISS searches,
Parquet metadata becomes hits. Reported: p50/p99 of ``SearchEngine.search_text`` in process, the share
spent encoding the text, and the wall time of one ``hsenet-search search text`` CLI call (process start,
model and index loading included).

    python benchmarks/bench_search_e2e.py [--n 10000] [--queries 50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hsenet_search.atomic import atomic_directory
from hsenet_search.data.labels import LABELS
from hsenet_search.engine import SearchEngine
from hsenet_search.eval.provenance import run_started, write_result
from hsenet_search.index.faiss_backend import VectorIndex
from hsenet_search.index.store import (
    FORMAT_VERSION,
    IndexManifest,
    write_embeddings,
    write_failures,
    write_metadata,
    write_reports,
)
from hsenet_search.models import load_model

QUERIES = [
    "Right pleural effusion with adjacent atelectasis.",
    "Cardiomegaly. Pericardial effusion.",
    "Emphysematous changes in both upper lobes.",
    "A 12 mm solid nodule in the left lower lobe.",
    "Consolidation with air bronchograms in the right lower lobe.",
]


def write_index(out: Path, model, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vol = rng.standard_normal((n, model.embedding_dim)).astype(np.float32)
    vol /= np.linalg.norm(vol, axis=1, keepdims=True)
    names = [f"train_{i}_a_1.nii.gz" for i in range(n)]
    meta = pd.DataFrame(
        {
            "row_id": np.arange(n),
            "volume_name": names,
            "scan_id": [x[:-9] for x in names],
            "split": "train",
            "path": names,
            "findings": "Findings text.",
            "impression": "Impression.",
            "report_id": np.arange(n),
            **{name: rng.integers(0, 2, n).astype(np.int8) for name in LABELS},
        }
    )
    reports = pd.DataFrame({"report_id": np.arange(n), "text": [f"report {i}" for i in range(n)]})
    with atomic_directory(out) as tmp:
        write_embeddings(tmp, "volumes", vol)
        write_embeddings(tmp, "reports", vol)
        write_metadata(tmp / "metadata.parquet", meta)
        write_reports(tmp / "reports.parquet", reports)
        write_failures(tmp / "failures.parquet", [])
        VectorIndex.build(vol, meta["row_id"].to_numpy()).save(tmp / "volumes.faiss")
        VectorIndex.build(vol, reports["report_id"].to_numpy()).save(tmp / "reports.faiss")
        IndexManifest(
            format_version=FORMAT_VERSION,
            model_fingerprint=model.fingerprint,
            model_name="default",
            preprocessing_hash=model.profile.hash,
            preprocessing=model.profile.to_dict(),
            embedding=model.config.embedding,
            dims={"volumes": model.embedding_dim, "reports": model.embedding_dim},
            metric="inner_product",
            factory="IDMap2,Flat",
            counts={"volumes": n, "scans": n, "reports": n, "failures": 0},
            source={"dataset": "random unit vectors (latency benchmark)", "split": "all"},
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        ).write(tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/search_e2e_cpu.json"))
    args = ap.parse_args()
    started = run_started()
    model = load_model()
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        write_index(index, model, args.n)
        engine = SearchEngine.open(index, model=model)
        engine.search_text(QUERIES[0], k=10)  # warm-up
        total, encode = [], []
        for i in range(args.queries):
            text = QUERIES[i % len(QUERIES)]
            t0 = time.perf_counter()
            engine.encode_text(text)
            t1 = time.perf_counter()
            engine.search_text(text, k=10)
            t2 = time.perf_counter()
            encode.append(t1 - t0)
            total.append(t2 - t1)
        t0 = time.perf_counter()
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "hsenet_search.cli.main",
                "search",
                "text",
                QUERIES[0],
                "--index",
                str(index),
                "-k",
                "10",
                "--json",
            ],
            capture_output=True,
            text=True,
        )
        cli_s = time.perf_counter() - t0
        assert res.returncode == 0, res.stderr
    ms = lambda xs, q: float(np.percentile(xs, q) * 1e3)  # noqa: E731
    result = {
        "benchmark": "end-to-end search text latency",
        "volumes": args.n,
        "queries": args.queries,
        "k": 10,
        "search_text_ms": {"p50": ms(total, 50), "p99": ms(total, 99)},
        "text_encode_ms": {"p50": ms(encode, 50), "p99": ms(encode, 99)},
        "cli_call_s": cli_s,
        "model": model.fingerprint,
        "embedding_dim": model.embedding_dim,
    }
    write_result(args.out, result, started, repeats=args.queries)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
