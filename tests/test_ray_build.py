"""``index build --ray``: a local Ray cluster builds the same index as the single-process build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hsenet_search.index.store import read_embeddings, read_metadata

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hsenet_search.cli.main", *map(str, args)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """10 tiny synthetic volumes, one of them truncated (unreadable)."""
    from hsenet_search.data.dataset import open_dataset
    from hsenet_search.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("ray") / "data"
    generate_dataset(out, 9, seed=5, valid_fraction=0.2, size="tiny")
    victim = open_dataset(out)[3].path
    victim.write_bytes(victim.read_bytes()[:200])
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory, dataset) -> Path:
    """The single-process build of ``dataset`` (the reference)."""
    out = tmp_path_factory.mktemp("single") / "index"
    res = subprocess.run(
        _cli("index", "build", dataset, "--out", out, "--workers", "1", "--shard-size", "3"),
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr
    return out


def _assert_same_index(a: Path, b: Path) -> None:
    meta_a, meta_b = read_metadata(a / "metadata.parquet"), read_metadata(b / "metadata.parquet")
    pd.testing.assert_frame_equal(meta_a, meta_b)
    # float16 shards of the same model on the same tensors, batched differently: float16 rounding apart
    np.testing.assert_allclose(read_embeddings(a, "volumes"), read_embeddings(b, "volumes"), atol=2e-3)
    np.testing.assert_array_equal(read_embeddings(a, "reports"), read_embeddings(b, "reports"))
    fail_a, fail_b = pd.read_parquet(a / "failures.parquet"), pd.read_parquet(b / "failures.parquet")
    assert fail_a["volume_name"].tolist() == fail_b["volume_name"].tolist()


def test_single_process_build_never_imports_ray(tmp_path, dataset):
    code = (
        "import sys; from hsenet_search.index.builder import BuildConfig, build_index; "
        f"build_index(BuildConfig(data={str(dataset)!r}, out={str(tmp_path / 'i')!r}, workers=0), "
        "progress=False); from hsenet_search.cli import main; print('ray' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.slow
def test_ray_build_equals_single_process_and_records_failures(tmp_path, dataset, single):
    out = tmp_path / "ray"
    res = subprocess.run(
        _cli("index", "build", dataset, "--out", out, "--ray", "auto", "--shard-size", "3", "--ray-cpus-per-task", "1"),
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr
    assert "1 failures" in " ".join(res.stdout.split())
    _assert_same_index(single, out)
    failures = pd.read_parquet(out / "failures.parquet")
    assert len(failures) == 1 and failures["path"].iloc[0].endswith(failures["volume_name"].iloc[0])
    assert failures["error"].iloc[0]  # the reason, one line


@pytest.mark.slow
def test_killed_ray_build_keeps_its_shards_and_resumes(tmp_path, dataset, single):
    out = tmp_path / "ray"
    shards = tmp_path / "ray.partial" / "volumes_shards"
    args = ("index", "build", dataset, "--out", out, "--ray", "auto", "--shard-size", "1", "--batch-size", "1")
    proc = subprocess.Popen(
        _cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=REPO, start_new_session=True
    )  # its own process group: the driver and its local Ray
    try:
        deadline = time.monotonic() + 600
        while len(list(shards.glob("shard_*.parquet"))) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "the build ended before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    kept = sorted(p.name for p in shards.glob("shard_*.parquet"))
    assert len(kept) >= 2 and not out.exists()
    res = subprocess.run(_cli(*args, "--resume"), capture_output=True, text=True, env=ENV, cwd=REPO, timeout=900)
    assert res.returncode == 0, res.stderr
    assert "resumed after" in " ".join(res.stdout.split())
    _assert_same_index(single, out)
