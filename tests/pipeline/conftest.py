"""Session fixtures for the end-to-end tests: a synthetic CT-RATE dataset, a model dir and an index."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``hsenet-search ARGS`` in a subprocess (the installed console script's module)."""
    cmd = [sys.executable, "-m", "hsenet_search.cli.main", *map(str, args)]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})}
    )


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """40 scans (some with two reconstructions), tiny size, train + valid."""
    from hsenet_search.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "ctrate"
    generate_dataset(out, 40, seed=11, valid_fraction=0.25, size="tiny")
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The shipped default model saved to a directory (it must load: no random stand-in)."""
    from hsenet_search.models import load_model

    model = load_model()
    out = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> Path:
    """A different tiny model (other weights): must be refused by indexes built with ``model_dir``."""
    import torch

    from hsenet_search.models import create_model

    torch.manual_seed(12345)
    out = tmp_path_factory.mktemp("model") / "other"
    create_model("tiny").save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory, synth_data, model_dir) -> Path:
    from hsenet_search.index.builder import BuildConfig, build_index

    out = tmp_path_factory.mktemp("indexes") / "synth"
    build_index(
        BuildConfig(data=str(synth_data), out=str(out), model=str(model_dir), workers=1, batch_size=4), progress=False
    )
    return out


@pytest.fixture()
def dataset_copy(tmp_path, synth_data) -> Path:
    """A private copy of the synthetic dataset that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(synth_data, dst)
    return dst
