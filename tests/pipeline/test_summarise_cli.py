"""`hsenet-search data summarise` on a synthetic dataset."""

from __future__ import annotations

import pandas as pd

from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.summarise import rule_summary

from .conftest import run_cli


def test_cli_summarise(synth_data, tmp_path):
    out = tmp_path / "summaries.parquet"
    result = run_cli("data", "summarise", synth_data, "--out", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out)
    reports = {case.report for case in open_dataset(synth_data)}
    assert len(table) == len(reports)
    for report, summary in zip(table["report"], table["summary"], strict=True):
        assert list(summary) == rule_summary(report)
