"""The OpenAI-compatible endpoint backend against a real server: llama-cpp-python's ``llama_cpp.server``
serving the default SmolLM2 GGUF on 127.0.0.1 (installed by ``make install``).

The server runs one thread: on a shared 2-core box two llama.cpp threads spin on each other's barriers.
Timeouts are generous for the same reason; the retry and timeout path has its own test.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from hsenet_search.errors import ModelError
from hsenet_search.generate.compose import RetrievedCase, draft_grounded
from hsenet_search.generate.draft import draft
from hsenet_search.generate.llm import _resolve, load_llm

TOKEN = "test-token-4f1c"
ALIAS = "smollm2"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    source, gguf_file, _ = _resolve("default")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                f"{source}/{gguf_file}",
                "--model_alias",
                ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--api_key",
                TOKEN,
                "--n_ctx",
                "2048",
                "--n_threads",
                "1",
                "--seed",
                "0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    request = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {TOKEN}"})
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert ALIAS in json.loads(response.read())["data"][0]["id"]
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not answer in 180 s: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"openai:{url}#{ALIAS}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # still generating for a timed-out request
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture()
def token(monkeypatch):
    monkeypatch.setenv("HSENET_LLM_API_KEY", TOKEN)


def test_endpoint_chat_is_deterministic_and_authenticated(server, token):
    llm = load_llm(server, max_new_tokens=12, device="cpu", timeout_s=600, retries=0)
    assert ALIAS in llm.name and "127.0.0.1" in llm.name
    first = llm.chat("You are a radiologist.", "Name one finding a chest CT can show.")
    assert first.strip() and llm.chat("You are a radiologist.", "Name one finding a chest CT can show.") == first


def test_endpoint_drafts_a_checked_report(server, token):
    emphysema = "Centriacinar emphysematous changes are observed in both lung upper lobes."
    cases = [
        RetrievedCase(
            "train_1_a_1",
            0.9,
            f"Trachea and both main bronchi are open. {emphysema}",
            "",  # no impression of its own: the LLM writes the one the composer takes from train_2_a_1
            ("Emphysema",),
        ),
        RetrievedCase(
            "train_2_a_1",
            0.8,
            "Paraseptal emphysema is present in both lungs. No pleural effusion.",
            "Emphysema.",
            ("Emphysema",),
        ),
    ]
    result = draft(cases, mode="llm", llm=load_llm(server, max_new_tokens=64, timeout_s=600, retries=0))
    assert result.mode == "llm" and result.findings.strip() and result.impression.strip()
    assert result.merge["sentences"] == 1 and result.merge["outcome"] in ("merged", "composer")  # LLM called
    passed = all(check["passed"] for check in result.checks.values())
    assert (passed and ALIAS in result.llm) or result.findings == draft_grounded(cases).findings
    assert "Trachea and both main bronchi are open." in result.findings


def test_endpoint_without_the_token_is_a_one_line_error(server, monkeypatch):
    monkeypatch.delenv("HSENET_LLM_API_KEY", raising=False)
    with pytest.raises(ModelError, match="HTTP 401") as info:
        load_llm(server, max_new_tokens=8, retries=0).chat("system", "user")
    assert "\n" not in str(info.value)


def test_endpoint_down_is_a_one_line_error_after_retries(monkeypatch):
    monkeypatch.setenv("HSENET_LLM_API_KEY", TOKEN)
    spec = f"openai:http://127.0.0.1:{_free_port()}/v1#{ALIAS}"
    started = time.monotonic()
    with pytest.raises(ModelError, match="unreachable after 2 tries") as info:
        load_llm(spec, retries=1, timeout_s=2).chat("system", "user")
    assert "\n" not in str(info.value) and "127.0.0.1" in str(info.value)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("spec", ["openai:127.0.0.1:8000/v1#m", "openai:http://127.0.0.1:8000/v1", "openai:#m"])
def test_bad_endpoint_spec_is_a_model_error(spec):
    with pytest.raises(ModelError, match="openai:http://HOST:PORT/v1#MODEL"):
        load_llm(spec)


def test_endpoint_summarises_reports_from_the_cli(server, token, tmp_path, cli_main):
    """``data summarise --summariser openai:…``: every unique report gets a summary from the endpoint (or the
    rule summary when a reply has no usable sentence), cached so a second run asks the server nothing."""
    import pandas as pd

    from hsenet_search.data import summarise as sm
    from hsenet_search.data.dataset import open_dataset
    from hsenet_search.data.synth import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, 2, seed=5, valid_fraction=0.0, size="tiny", progress=False)
    reports = sorted({case.report for case in open_dataset(data)})
    args = ("data", "summarise", data, "--summariser", server, "--cache-dir", tmp_path / "cache")
    first = cli_main(*args, "--out", tmp_path / "a.parquet")
    assert first.code == 0, first.err
    table = pd.read_parquet(tmp_path / "a.parquet")
    assert sorted(table["report"]) == reports and all(len(s) >= 1 for s in table["summary"])
    assert "summarised with llm-" in first.out
    cached = {path: path.stat().st_mtime_ns for path in (tmp_path / "cache").rglob("*.json")}
    assert len(cached) == len(reports)
    same = cli_main(*args, "--out", tmp_path / "b.parquet")
    assert same.code == 0 and pd.read_parquet(tmp_path / "b.parquet").equals(table)
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "cache").rglob("*.json")} == cached
    assert sm.report_hash(reports[0]) in set(table["report_hash"])
