"""Issue 16 on the index side: no data loss, locked writers, validated resume/add, integrity on open,
SIGKILL at random points, disk full. Each case of the issue's "data loss and silent corruption" list."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hsenet_search.data.dataset import open_dataset
from hsenet_search.engine import SearchEngine
from hsenet_search.errors import IndexFormatError, IndexMismatchError
from hsenet_search.index.builder import BuildConfig, add_to_index, build_index
from hsenet_search.index.faiss_backend import VectorIndex
from hsenet_search.index.locks import lock_path
from hsenet_search.index.store import open_index_dir, read_embeddings, read_metadata, read_reports

from .conftest import REPO, run_cli

BUILD = ("--batch-size", "2", "--workers", "0", "--shard-size", "2")


def one_line_refusal(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in res.stderr and len(errors) == 1, res.stderr
    for needle in needles:
        assert needle in errors[0], (needle, res.stderr)


def by_name(index: Path) -> dict[str, np.ndarray]:
    meta = read_metadata(index / "metadata.parquet")
    return dict(zip(meta["volume_name"], read_embeddings(index, "volumes")))


def assert_same_index(a: Path, b: Path) -> None:
    """Same volumes with the same vectors, same report texts, and a valid FAISS id mapping."""
    ea, eb = by_name(a), by_name(b)
    assert sorted(ea) == sorted(eb)
    for name in ea:
        np.testing.assert_allclose(ea[name], eb[name], atol=2e-3)
    assert sorted(read_reports(a / "reports.parquet")["text"]) == sorted(read_reports(b / "reports.parquet")["text"])
    meta = read_metadata(a / "metadata.parquet")
    index = VectorIndex.load(a / "volumes.faiss")
    _, ids = index.search(read_embeddings(a, "volumes")[:5], 1)
    assert ids[:, 0].tolist() == meta["row_id"].tolist()[:5]
    open_index_dir(a, verify="full")


def start_build(data: Path, out: Path, model_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "hsenet_search.cli.main",
        "index",
        "build",
        str(data),
        "--out",
        str(out),
        "--model",
        str(model_dir),
        *BUILD,
        *extra,
    ]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(cond, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not cond():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.005)
    assert cond(), "timed out"


def shards(out: Path) -> int:
    return len(list(out.with_name(out.name + ".partial").glob("volumes_shards/shard_*.parquet")))


# ----------------------------------------------------------------------------- 1. writes never destroy
def test_out_that_is_not_ours_is_refused_before_any_encoding(tmp_path, synth_data, dataset_copy, model_dir):
    user = tmp_path / "papers"
    user.mkdir()
    (user / "draft.tex").write_text("mine")
    res = run_cli("index", "build", synth_data, "--out", user, "--model", model_dir, "--overwrite")
    one_line_refusal(res, str(user), "refusing to overwrite")
    assert (user / "draft.tex").read_text() == "mine"
    for out in (dataset_copy, dataset_copy / "index", dataset_copy.parent):
        one_line_refusal(run_cli("index", "build", dataset_copy, "--out", out, "--model", model_dir), "overlaps")
    assert len(open_dataset(dataset_copy)) == len(open_dataset(synth_data))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "hsenet_search.cli.main",
            "index",
            "build",
            str(synth_data),
            "--out",
            ".",
            "--model",
            str(model_dir),
        ],
        cwd=user,
        capture_output=True,
        text=True,
    )
    one_line_refusal(res, "current directory")
    assert sorted(p.name for p in user.iterdir()) == ["draft.tex"]


def test_an_existing_index_is_replaced_only_with_overwrite(tmp_path, index_dir, synth_data, model_dir):
    copy = tmp_path / "idx"
    shutil.copytree(index_dir, copy)
    before = (copy / "manifest.json").read_text()
    one_line_refusal(run_cli("index", "build", synth_data, "--out", copy, "--model", model_dir), "--overwrite")
    assert (copy / "manifest.json").read_text() == before


# ----------------------------------------------------------------------------- 6. trained models only
def test_index_build_refuses_a_config_name_with_random_weights(tmp_path, synth_data):
    res = run_cli("index", "build", synth_data, "--out", tmp_path / "idx", "--model", "tiny")
    one_line_refusal(res, "'tiny' is a model config with random weights", "random weights are for tests only")
    assert not (tmp_path / "idx").exists() and not (tmp_path / "idx.partial").exists()


# ----------------------------------------------------------------------------- 2, 3. locks and resume
def test_concurrent_build_is_refused_then_a_killed_build_resumes_only_its_own_data(
    tmp_path, synth_data, dataset_copy, index_dir, model_dir
):
    out = tmp_path / "idx"
    first = start_build(synth_data, out, model_dir)
    try:
        wait_for(lambda: shards(out) >= 1, first)
        first.send_signal(signal.SIGSTOP)  # a live writer mid-build, whatever the machine's speed
        second = run_cli("index", "build", synth_data, "--out", out, "--model", model_dir, *BUILD)
        one_line_refusal(second, "another writer holds this index", f"pid {first.pid} on ")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not (out / "manifest.json").exists(), "the first build finished before it could be killed"
    assert json.loads(lock_path(out).read_text())["pid"] == first.pid  # stale lock file of a dead writer
    # resume with another dataset (one report edited) or other options: refused, naming what differs
    reports = dataset_copy / "radiology_text_reports" / "train_reports.csv"
    reports.write_text(reports.read_text().replace("pleural", "pleurral", 1))
    one_line_refusal(
        run_cli("index", "build", dataset_copy, "--out", out, "--model", model_dir, "--resume", *BUILD),
        "cannot resume",
        "dataset",
        "report text",
    )
    one_line_refusal(
        run_cli(
            "index",
            "build",
            synth_data,
            "--out",
            out,
            "--model",
            model_dir,
            "--resume",
            "--factory",
            "HNSW32",
            *BUILD,
        ),
        "cannot resume",
        "--factory",
    )
    one_line_refusal(
        run_cli(
            "index",
            "build",
            synth_data,
            "--out",
            out,
            "--model",
            model_dir,
            "--resume",
            "--split",
            "train",
            *BUILD,
        ),
        "split",
        "case list",
    )
    res = run_cli("index", "build", synth_data, "--out", out, "--model", model_dir, "--resume", *BUILD)
    assert res.returncode == 0, res.stderr
    assert "resumed after" in res.stdout
    assert_same_index(out, index_dir)
    assert not out.with_name("idx.partial").exists()


def test_sigkill_at_a_random_point_of_build_resume_and_add(tmp_path, synth_data, index_dir, model_dir):
    rng = random.Random(int(time.time()))
    out = tmp_path / "idx"
    first = start_build(synth_data, out, model_dir, "--split", "train")
    wait_for(lambda: shards(out) >= 1, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    # kill the resumed build at a random moment: the partial build stays resumable or the index is whole
    resumed = start_build(synth_data, out, model_dir, "--split", "train", "--resume")
    time.sleep(rng.uniform(0.0, 30.0))
    resumed.send_signal(signal.SIGKILL)
    resumed.wait()
    if not (out / "manifest.json").exists():
        res = run_cli(
            "index",
            "build",
            synth_data,
            "--out",
            out,
            "--model",
            model_dir,
            "--split",
            "train",
            "--resume",
            *BUILD,
        )
        assert res.returncode == 0, res.stderr
    n_train = len(open_dataset(synth_data, split="train"))
    assert open_index_dir(out, verify="full").counts["volumes"] == n_train
    # kill an add at a random moment: the index is the old one or the new one, never half of either
    cmd = [
        sys.executable,
        "-m",
        "hsenet_search.cli.main",
        "index",
        "add",
        str(out),
        str(synth_data),
        "--split",
        "valid",
        "--workers",
        "0",
        "--batch-size",
        "2",
    ]
    adding = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.0, 40.0))
    adding.send_signal(signal.SIGKILL)
    adding.wait()
    assert open_index_dir(out, verify="full").counts["volumes"] in (n_train, len(open_dataset(synth_data)))
    res = run_cli("index", "add", out, synth_data, "--split", "valid", "--workers", "0")
    assert res.returncode == 0, res.stderr
    assert_same_index(out, index_dir)


# ----------------------------------------------------------------------------- 4. integrity on open
def test_a_swapped_faiss_file_of_the_same_size_is_refused(tmp_path, index_dir):
    copy = tmp_path / "idx"
    shutil.copytree(index_dir, copy)
    vectors = read_embeddings(copy, "volumes")
    other = VectorIndex.build(vectors[::-1].copy(), np.arange(len(vectors)))  # another index, same shape
    other.save(tmp_path / "other.faiss")
    assert (tmp_path / "other.faiss").stat().st_size == (copy / "volumes.faiss").stat().st_size
    shutil.copyfile(tmp_path / "other.faiss", copy / "volumes.faiss")
    with pytest.raises(IndexFormatError, match="volumes.faiss does not match the checksum"):
        SearchEngine.open(copy)
    one_line_refusal(run_cli("search", "text", "Pleural effusion.", "--index", copy), "volumes.faiss")
    one_line_refusal(run_cli("index", "info", copy), "volumes.faiss")
    one_line_refusal(run_cli("index", "verify", copy), "volumes.faiss")
    res = run_cli("index", "verify", index_dir)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr


# ----------------------------------------------------------------------------- add: validated, incremental
def test_add_refuses_a_different_file_under_an_indexed_name_and_reports_nothing_new(tmp_path, index_dir, dataset_copy):
    copy = tmp_path / "idx"
    shutil.copytree(index_dir, copy)
    cases = open_dataset(dataset_copy)
    shutil.copyfile(cases[1].path, cases[0].path)  # same volume name, other scan's pixels
    with pytest.raises(IndexMismatchError, match=f"volume {cases[0].volume_name} is already indexed"):
        add_to_index(copy, str(dataset_copy), workers=0, progress=False)
    one_line_refusal(run_cli("index", "add", copy, dataset_copy, "--workers", "0"), cases[0].volume_name)
    before = (copy / "manifest.json").read_text()
    res = run_cli("index", "add", copy, index_dir.parent / "nothing", "--workers", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    res = run_cli("index", "add", copy, open_index_dir(copy).source["dataset"], "--workers", "0")
    assert res.returncode == 0 and "nothing new to add" in " ".join(res.stdout.split()), res.stderr
    assert (copy / "manifest.json").read_text() == before


def test_add_encodes_only_new_volumes_and_reports_and_equals_a_full_build(
    tmp_path, synth_data, index_dir, model_dir, monkeypatch
):
    from hsenet_search.models import load_model

    model = load_model(model_dir)
    out = tmp_path / "idx"
    build_index(
        BuildConfig(data=str(synth_data), out=str(out), model=str(model_dir), split="train", workers=0),
        model=model,
        progress=False,
    )
    old_reports = read_reports(out / "reports.parquet")
    old_shard = out / "embeddings" / "volumes_00000.npy"
    old_inode = old_shard.stat().st_ino
    encoded_texts: list[str] = []
    encoded_volumes = [0]
    encode_text, encode_volume = model.encode_text, model.encode_volume
    monkeypatch.setattr(model, "encode_text", lambda texts: (encoded_texts.extend(texts), encode_text(texts))[1])
    monkeypatch.setattr(
        model,
        "encode_volume",
        lambda x, **kw: (encoded_volumes.__setitem__(0, encoded_volumes[0] + len(x)), encode_volume(x, **kw))[1],
    )
    summary = add_to_index(out, str(synth_data), model=model, split="valid", workers=0, progress=False)
    n_valid = len(open_dataset(synth_data, split="valid"))
    assert encoded_volumes[0] == n_valid and summary.added == n_valid
    assert not set(encoded_texts) & set(old_reports["text"])
    assert len(encoded_texts) == open_index_dir(out).counts["reports"] - len(old_reports)
    assert read_reports(out / "reports.parquet")["text"][: len(old_reports)].tolist() == old_reports["text"].tolist()
    assert old_shard.stat().st_ino == old_inode  # the stored shard is reused (hard link), not rewritten
    assert (out / "embeddings" / "volumes_00001.npy").exists()
    assert_same_index(out, index_dir)


# ----------------------------------------------------------------------------- disk full
def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_disk_full_is_one_line_keeps_the_partial_build_and_resumes(
    tmp_path, synth_data, index_dir, model_dir, monkeypatch, capsys
):
    disk = tmp_path / "disk"
    out = disk / "idx"
    if _mount_tmpfs(disk, "96k"):
        try:
            res = run_cli("index", "build", synth_data, "--out", out, "--model", model_dir, *BUILD)
            one_line_refusal(res, "No space left on device", "--resume")
            kept = shards(out)
            assert kept >= 1 and not (out / "manifest.json").exists()
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            res = run_cli("index", "build", synth_data, "--out", out, "--model", model_dir, "--resume", *BUILD)
            assert res.returncode == 0, res.stderr
            assert "resumed after" in res.stdout
            assert_same_index(out, index_dir)
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)
        return
    # no mount permitted here: the file system fills up at the write layer after three shards
    from hsenet_search.cli import main as cli_main

    from hsenet_search.index import shards as shard_module

    real = shard_module.write_parquet
    written = [0]

    def filling(path, table, **kw):
        if written[0] >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written[0] += 1
        return real(path, table, **kw)

    monkeypatch.setattr(shard_module, "write_parquet", filling)
    args = ["index", "build", str(synth_data), "--out", str(out), "--model", str(model_dir), *BUILD]
    monkeypatch.setattr(sys, "argv", ["hsenet-search", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "No space left on device" in err and "Traceback" not in err
    assert shards(out) == 3 and not (out / "manifest.json").exists()
    monkeypatch.setattr(shard_module, "write_parquet", real)
    summary = build_index(
        BuildConfig(
            data=str(synth_data),
            out=str(out),
            model=str(model_dir),
            resume=True,
            workers=0,
            batch_size=2,
            shard_size=2,
        ),
        progress=False,
    )
    assert summary.resumed_from == 6
    assert_same_index(out, index_dir)
