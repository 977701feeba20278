"""Service fixtures: a small index of synthetic scans, loaded once, and apps built over it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="session")
def service_data(tmp_path_factory) -> Path:
    """10 tiny synthetic scans (a few with two reconstructions), train and valid."""
    from hsenet_search.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("service-synth") / "ctrate"
    generate_dataset(out, 10, seed=5, valid_fraction=0.2, size="tiny", workers=1)
    return out


@pytest.fixture(scope="session")
def service_index(tmp_path_factory, service_data) -> Path:
    from hsenet_search.index.builder import BuildConfig, build_index

    out = tmp_path_factory.mktemp("service-index") / "small"
    build_index(BuildConfig(data=str(service_data), out=str(out), workers=1, batch_size=4), progress=False)
    return out


@pytest.fixture(scope="session")
def loaded(service_index):
    """The engines, opened once for every app of the session."""
    from hsenet_search.service.state import LoadedIndex

    return {"small": LoadedIndex.open("small", service_index)}


@pytest.fixture()
def make_client(loaded) -> Callable:
    """``make_client(token=None, **config)`` → a TestClient over a fresh app (own pool, caches, metrics)."""
    from fastapi.testclient import TestClient

    from hsenet_search.service import ServiceConfig, create_app
    from hsenet_search.service.state import ServiceState

    clients = []

    def make(token: str | None = None, **overrides):
        config = ServiceConfig(indexes=["unused"], **overrides)
        state = ServiceState(config, dict(loaded))
        client = TestClient(create_app(config, state, token=token), raise_server_exceptions=False)
        client.service = state
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.service.pool.shutdown()
        client.close()


@pytest.fixture()
def client(make_client):
    return make_client()


@pytest.fixture(scope="session")
def scan_files(service_data) -> dict[str, Path]:
    """One indexed scan's .nii.gz, plus the scan id it belongs to."""
    path = sorted(service_data.glob("valid/*/*/*.nii.gz"))[0]
    return {"nii.gz": path}
