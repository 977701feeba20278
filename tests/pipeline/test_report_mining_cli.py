"""`hsenet-search data summarise` and `data snippets` on a synthetic dataset."""

from __future__ import annotations

import re

import nibabel as nib
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


def test_cli_snippets_find_every_synthetic_reference(synth_data, tmp_path):
    out = tmp_path / "snippets.parquet"
    result = run_cli("data", "snippets", synth_data, "--out", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out)
    cases = open_dataset(synth_data)
    cited = sum(len(re.findall(r"series \d+,? image \d+", c.report)) for c in cases)
    assert cited > 0 and len(table) == cited and (table["dropped"] == "").all()
    for case in cases:
        rows = table[table["volume_name"] == case.volume_name]
        header = nib.load(case.path).header
        depth = header.get_data_shape()[2]
        spacing = case.spacing[2] if case.spacing else float(header.get_zooms()[2])
        assert ((rows["slice_index"] >= 0) & (rows["slice_index"] < depth)).all()
        assert ((rows["z_mm"] - rows["slice_index"] * spacing).abs() < 1e-6).all()
