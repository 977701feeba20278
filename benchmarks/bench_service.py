"""Served latency of ``POST /search/text`` against in-process ``SearchEngine.search_text``, on a 10k-volume index.

The index holds random unit vectors with the shipped model's fingerprint (as in bench_search_e2e.py); the text
encoder, FAISS search and hit building are real. A real ``hsenet-search serve`` process listens on 127.0.0.1;
a bounded httpx load (fixed request count per level, stopping by itself) measures p50/p99 at 1, 4 and 16
concurrent clients and the throughput at saturation. Also: server memory, and slice PNG render time on a
real synthetic volume (decode + reorientation, then one render per plane).

    python benchmarks/bench_service.py [--n 10000] [--requests 120] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search_e2e import QUERIES, write_index  # noqa: E402

from hsenet_search.engine import SearchEngine  # noqa: E402
from hsenet_search.models import load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1e3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024,
    }


def load_level(url: str, clients: int, requests: int) -> dict:
    """``requests`` POSTs spread over ``clients`` threads, each with its own connection."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    per_client = max(1, requests // clients)

    def client(seed: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for i in range(per_client):
                body = {"text": QUERIES[(seed + i) % len(QUERIES)], "k": 10}
                t0 = time.perf_counter()
                status = http.post("/search/text", json=body).status_code
                dt = time.perf_counter() - t0
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append(dt)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": per_client * clients,
        "statuses": statuses,
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "throughput_rps": len(latencies) / elapsed,
    }


def paired(engine: SearchEngine, url: str, requests: int) -> tuple[list[float], list[float]]:
    """The same query in process then over HTTP, alternating, so both see the same machine load.

    The in-process call runs on a worker thread, as the server's do: on this shared 2-core machine torch's
    OpenMP team on the main thread is far slower under load (see ``main_thread_in_process_ms``).
    """
    in_process, served = [], []
    worker = ThreadPoolExecutor(1)
    with httpx.Client(base_url=url, timeout=120) as http:
        for i in range(requests):
            text = QUERIES[i % len(QUERIES)]
            t0 = time.perf_counter()
            worker.submit(engine.search_text, text, k=10).result()
            t1 = time.perf_counter()
            response = http.post("/search/text", json={"text": text, "k": 10})
            t2 = time.perf_counter()
            assert response.status_code == 200, response.text
            in_process.append(t1 - t0)
            served.append(t2 - t1)
    worker.shutdown()
    return in_process, served


def main_thread_ms(engine: SearchEngine, requests: int) -> dict:
    times = []
    for i in range(requests):
        t0 = time.perf_counter()
        engine.search_text(QUERIES[i % len(QUERIES)], k=10)
        times.append(time.perf_counter() - t0)
    return {"p50": pct(times, 50), "p99": pct(times, 99), "requests": requests}


def slice_times(repeats: int) -> dict:
    from hsenet_search.data.synth import generate_dataset
    from hsenet_search.service.render import display_volume, render_png

    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(Path(tmp) / "d", 1, seed=3, valid_fraction=0, size="tiny", workers=1)
        path = str(sorted(Path(tmp).glob("d/train/*/*/*.nii.gz"))[0])
        decode, render = [], {a: [] for a in ("axial", "coronal", "sagittal")}
        for _ in range(repeats):
            t0 = time.perf_counter()
            volume = display_volume(path)
            decode.append(time.perf_counter() - t0)
            for axis in render:
                t0 = time.perf_counter()
                render_png(volume, axis, None, "lung", None)
                render[axis].append(time.perf_counter() - t0)
    return {
        "volume_shape": list(volume.array.shape),
        "decode_ms_median": statistics.median(decode) * 1e3,
        "render_ms_median": {a: statistics.median(v) * 1e3 for a, v in render.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=120, help="requests per concurrency level")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/service.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    model = load_model()
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        write_index(index, model, args.n)
        engine = SearchEngine.open(index, model=model)
        engine.search_text(QUERIES[0], k=10)
        port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hsenet_search.cli.main",
                "serve",
                "--index",
                str(index),
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--queue",
                "64",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {server.stderr.read() if server.stderr else ''}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            memory_idle = rss_mb(server.pid)
            load_level(url, 1, 10)  # warm-up
            in_process, served_one = paired(engine, url, args.requests)
            main_thread = main_thread_ms(engine, 20)
            levels = [load_level(url, c, args.requests) for c in (1, 4, 16)]
            memory_loaded = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    in_p50, served_p50 = pct(in_process, 50), pct(served_one, 50)
    result = {
        "benchmark": "served POST /search/text vs in-process SearchEngine.search_text",
        "volumes": args.n,
        "k": 10,
        "server_workers": args.workers,
        "paired_1_client": {
            "in_process_ms": {"p50": in_p50, "p99": pct(in_process, 99)},
            "served_ms": {"p50": served_p50, "p99": pct(served_one, 99)},
            "requests": len(in_process),
        },
        "main_thread_in_process_ms": main_thread,
        "served": levels,
        "served_p50_over_in_process_1_client": served_p50 / in_p50,
        "saturation_throughput_rps": max(level["throughput_rps"] for level in levels),
        "server_memory": {"idle": memory_idle, "after_load": memory_loaded},
        "slice_png": slice_times(5),
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "paired_1_client",
                    "served",
                    "served_p50_over_in_process_1_client",
                    "server_memory",
                    "slice_png",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
