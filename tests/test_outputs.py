"""The --out guard, the atomic-write module and the index writer lock (no model needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hsenet_search import atomic
from hsenet_search.index.locks import IndexLock, IndexLockedError, lock_path
from hsenet_search.outputs import DATASET_MARKER, OutputError, OutputKind, check_output, mark_dataset

REPO = Path(__file__).resolve().parents[1]


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.docx").write_bytes(b"years of work")
    return path


def test_absent_or_empty_output_is_accepted(tmp_path: Path):
    assert check_output(tmp_path / "new", OutputKind.INDEX) == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", OutputKind.INDEX)


@pytest.mark.parametrize("kind", list(OutputKind))
def test_foreign_output_is_refused_and_left_alone(tmp_path: Path, kind: OutputKind):
    folder = user_folder(tmp_path / "mine")
    with pytest.raises(OutputError, match="refusing to overwrite"):
        check_output(folder, kind, overwrite=True)
    assert (folder / "thesis.docx").read_bytes() == b"years of work"


def test_file_outputs_need_the_expected_suffix_and_overwrite(tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    with pytest.raises(OutputError, match="not a .csv file"):
        check_output(notes, OutputKind.FILE, suffixes=(".csv",), overwrite=True)
    labels = tmp_path / "labels.csv"
    labels.write_text("VolumeName\n")
    with pytest.raises(OutputError, match="pass --overwrite"):
        check_output(labels, OutputKind.FILE, suffixes=(".csv",))
    check_output(labels, OutputKind.FILE, suffixes=(".csv",), overwrite=True)


def test_dataset_marker_and_model_dirs(tmp_path: Path):
    data = tmp_path / "synth"
    data.mkdir()
    (data / "train").mkdir()
    with pytest.raises(OutputError, match=DATASET_MARKER):
        check_output(data, OutputKind.DATASET, overwrite=True)
    mark_dataset(data)
    with pytest.raises(OutputError, match="--overwrite"):
        check_output(data, OutputKind.DATASET)
    check_output(data, OutputKind.DATASET, overwrite=True)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "hsenet_search_clip"}))
    check_output(model, OutputKind.MODEL, replace_ok=True)
    (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(OutputError, match="not a model directory"):
        check_output(model, OutputKind.MODEL, replace_ok=True)


def test_output_never_overlaps_an_input_or_the_working_directory(tmp_path: Path, monkeypatch):
    data = user_folder(tmp_path / "data")
    for out in (data, data / "index", tmp_path):
        with pytest.raises(OutputError, match="overlaps the input"):
            check_output(out, OutputKind.INDEX, inputs=[data], overwrite=True)
    monkeypatch.chdir(data)
    for out in (".", "..", str(data)):
        with pytest.raises(OutputError, match="current directory"):
            check_output(out, OutputKind.INDEX, overwrite=True)
    assert (data / "thesis.docx").exists()


def test_atomic_writes_replace_whole_or_not_at_all(tmp_path: Path):
    path = tmp_path / "sub" / "result.json"
    atomic.write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError):
        with atomic.atomic_open(path, "w") as f:
            f.write('{"half": ')
            raise RuntimeError("crash while writing")
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]
    atomic.write_npy(tmp_path / "x.npy", np.arange(5))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.arange(5))
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    atomic.write_parquet(tmp_path / "t.parquet", frame)
    atomic.write_csv(tmp_path / "t.csv", frame)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), frame)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), frame)
    with pytest.raises(ValueError, match="mode"):
        with atomic.atomic_open(tmp_path / "y", "a"):
            pass


def test_atomic_directory_publishes_only_when_the_check_passes(tmp_path: Path):
    final = tmp_path / "out"
    with atomic.atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("1")

    def refuse(d: Path) -> None:
        raise OutputError("incomplete", d)

    with pytest.raises(OutputError):
        with atomic.atomic_directory(final, check=refuse) as tmp:
            (tmp / "a.txt").write_text("2")
    assert (final / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


HOLD = """
import sys, time
from hsenet_search.index.locks import IndexLock
lock = IndexLock(sys.argv[1], "build").acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_lock_refuses_a_second_writer_and_is_freed_when_the_holder_dies(tmp_path: Path):
    index = tmp_path / "idx"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(index)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IndexLockedError, match=f"pid {holder.pid} on .* since 20"):
            IndexLock(index, "add").acquire()
    finally:
        holder.kill()
        holder.wait()
    # the dead holder's lock file still names it, but nobody holds the lock: it is taken over
    assert json.loads(lock_path(index).read_text())["pid"] == holder.pid
    with IndexLock(index, "build") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(IndexLockedError):
            IndexLock(index, "build").acquire()
    with IndexLock(index, "build"):
        pass


def cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hsenet_search.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )


def refused(res: subprocess.CompletedProcess, needle: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert needle in res.stderr, res.stderr


def test_every_writing_command_guards_its_out(tmp_path: Path):
    reports = tmp_path / "reports.csv"
    reports.write_text("VolumeName,Findings_EN,Impressions_EN\nv_1_a_1.nii.gz,No effusion.,Normal.\n")
    folder = user_folder(tmp_path / "folder")
    refused(cli("labels", "extract", reports, "--out", folder), "refusing to overwrite")
    refused(cli("labels", "extract", reports, "--out", reports, "--overwrite"), "overlaps the input")
    labels = tmp_path / "labels.csv"
    assert cli("labels", "extract", reports, "--out", labels).returncode == 0
    refused(cli("labels", "extract", reports, "--out", labels), "--overwrite")
    assert cli("labels", "extract", reports, "--out", labels, "--overwrite").returncode == 0
    refused(cli("data", "synth", "--n", "1", "--out", folder, "--overwrite"), "refusing to overwrite")
    refused(cli("data", "synth", "--n", "1", "--out", ".", "--overwrite", cwd=folder), "current directory")
    results = tmp_path / "r.json"
    results.write_text("{}")
    refused(cli("bench", "zeroshot", "--index", tmp_path / "none", "--out", tmp_path / "r"), "--overwrite")
    refused(cli("train", "--data", tmp_path / "nodata", "--out", folder, "--steps", "1"), "not a model directory")
    refused(cli("data", "slices", folder, "--out", folder / "slices", "--overwrite"), "overlaps the input")
    refused(cli("data", "slices", reports, "--out", ".", "--overwrite", cwd=tmp_path), "current directory")
    refused(cli("data", "snippets", reports, "--out", reports, "--overwrite"), "overlaps the input")
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.docx"]
    assert results.read_text() == "{}"


def test_synth_output_is_marked_and_replaced_only_with_overwrite(tmp_path: Path):
    out = tmp_path / "synth"
    assert cli("data", "synth", "--n", "2", "--out", out).returncode == 0
    assert (out / DATASET_MARKER).is_file()
    refused(cli("data", "synth", "--n", "2", "--out", out), "--overwrite")
    res = cli("data", "synth", "--n", "2", "--seed", "1", "--out", out, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert (out / DATASET_MARKER).is_file() and (out / "train").is_dir()
