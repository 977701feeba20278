"""A real uvicorn server started by ``hsenet-search serve``: bind and token rules, and the Python client."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from hsenet_search import errors
from hsenet_search.client import Client, ServiceError

from .conftest import TOKEN
from .live import REPO, free_port, start_server, stop


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_non_local_host_without_token_is_refused(service_index, host):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hsenet_search.cli.main",
            "serve",
            "--index",
            str(service_index),
            "--host",
            host,
            "--port",
            str(free_port()),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "HSENET_TOKEN"},
    )
    assert result.returncode == 2
    assert "--token" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_short_token_is_refused(service_index):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hsenet_search.cli.main",
            "serve",
            "--index",
            str(service_index),
            "--token",
            "short",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "at least 16 characters" in result.stderr


def test_live_server_with_token_from_env_and_client(service_index, service_data, tmp_path):
    proc, url = start_server(service_index, env={"HSENET_TOKEN": TOKEN})
    try:
        assert httpx.get(f"{url}/health").status_code == 200
        denied = httpx.post(f"{url}/search/text", json={"text": "Cardiomegaly."})
        assert denied.status_code == 401 and denied.json()["type"] == "HTTPError"
        with Client(url, token="x" * 30) as wrong, pytest.raises(errors.QueryError, match="401"):
            wrong.search_text("Cardiomegaly.")
        with Client(url, token=TOKEN) as client:
            result = client.search_text("Cardiomegaly.", k=3)
            assert len(result.hits) == 3 and result.hits[0].rank == 1
            assert result.hits[0].score >= result.hits[1].score >= result.hits[2].score
            like = client.search_volume(case=result.hits[0].scan_id, k=2)
            assert result.hits[0].scan_id not in [h.scan_id for h in like.hits]
            scan = tmp_path / "scan.nii.gz"
            scan.write_bytes(sorted(service_data.glob("valid/*/*/*.nii.gz"))[0].read_bytes())
            assert len(client.search_volume(scan, k=2, target="reports").hits) == 2
            assert client.search_report("No pleural effusion.", k=2).target == "reports"
            assert client.case(result.hits[0].scan_id)["scan_id"] == result.hits[0].scan_id
            assert client.slice_png(result.hits[0].scan_id, axis="sagittal", size=64)[:4] == b"\x89PNG"
            assert client.generate(case=result.hits[0].scan_id, k=2, mode="nearest")["findings"]
            assert client.info()["indexes"][0]["counts"]["scans"] > 0
            with pytest.raises(errors.QueryError, match="unknown label"):
                client.search_text("x", labels=["Unicorn"])
            with pytest.raises(errors.VolumeError):
                client.search_volume(tmp_path / "missing.nii.gz")
            bad = tmp_path / "bad.nii.gz"
            bad.write_bytes(b"not a scan")
            with pytest.raises(errors.VolumeError, match="422"):
                client.search_volume(bad)
    finally:
        stop(proc)
    with pytest.raises(ServiceError, match="cannot reach"):
        Client(url, token=TOKEN, timeout=2).health()


def test_insecure_no_auth_is_explicit(service_index):
    # The flag is accepted for a non-loopback host; the server is started on loopback here so that no test
    # traffic leaves the machine, and it answers without a token.
    proc, url = start_server(service_index, "--insecure-no-auth")
    try:
        assert httpx.post(f"{url}/search/text", json={"text": "Cardiomegaly.", "k": 1}).status_code == 200
    finally:
        stop(proc)
