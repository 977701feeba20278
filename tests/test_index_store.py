"""Index directory format: manifest validation, atomic publication, resumable shards, parquet tables."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hsenet_search.atomic import atomic_directory
from hsenet_search.data.labels import LABELS
from hsenet_search.errors import IndexFormatError
from hsenet_search.index.faiss_backend import VectorIndex
from hsenet_search.index.shards import ShardWriter
from hsenet_search.index.store import (
    FORMAT_VERSION,
    IndexManifest,
    deduplicate_reports,
    is_complete_index,
    open_index_dir,
    read_embeddings,
    read_failures,
    read_metadata,
    read_reports,
    write_embeddings,
    write_failures,
    write_metadata,
    write_reports,
)

REPO = Path(__file__).resolve().parents[1]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def manifest(**changes) -> IndexManifest:
    fields = dict(
        format_version=FORMAT_VERSION,
        model_fingerprint="f" * 64,
        model_name="tiny",
        preprocessing_hash="abc123",
        preprocessing={"spacing": [1.5, 1.5, 3.0]},
        embedding="fusion",
        dims={"volumes": 16, "reports": 16},
        metric="inner_product",
        factory="IDMap2,Flat",
        counts={"volumes": 6, "scans": 3, "reports": 2, "failures": 1},
        source={"dataset": "/data/ct-rate", "format": "ct-rate", "split": "valid"},
        created="2026-11-22T10:00:00Z",
    )
    fields.update(changes)
    return IndexManifest(**fields)


def metadata_rows(n: int) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "row_id": np.arange(n),
            "volume_name": [f"valid_{i // 2}_a_{i % 2 + 1}.nii.gz" for i in range(n)],
            "scan_id": [f"valid_{i // 2}_a" for i in range(n)],
            "split": "valid",
            "path": [f"/d/{i}.nii.gz" for i in range(n)],
            "findings": ["Right pleural effusion." if i % 3 else None for i in range(n)],
            "impression": ["Effusion."] * n,
            "report_id": [i % 2 for i in range(n)],
        }
    )
    for j, name in enumerate(LABELS):
        rows[name] = [(i + j) % 2 for i in range(n)]
    rows["spacing"] = [(0.75, 0.75, 1.5)] * n
    rows["shape"] = [np.array([480, 480, 240])] * n
    return rows


def write_index(directory: Path, seed: int = 0) -> np.ndarray:
    """A complete small index directory; returns its volume embeddings."""
    rng = np.random.default_rng(seed)
    vol, rep = unit(rng.standard_normal((6, 16))), unit(rng.standard_normal((2, 16)))
    write_embeddings(directory, "volumes", vol, rows_per_shard=4)
    write_embeddings(directory, "reports", rep)
    write_metadata(directory / "metadata.parquet", metadata_rows(6))
    write_reports(directory / "reports.parquet", pd.DataFrame({"report_id": [0, 1], "text": ["a", "b"]}))
    write_failures(directory / "failures.parquet", [{"volume_name": "x.nii.gz", "path": "/d/x", "error": "bad gzip"}])
    VectorIndex.build(vol, np.arange(6)).save(directory / "volumes.faiss")
    VectorIndex.build(rep, np.arange(2)).save(directory / "reports.faiss")
    manifest().write(directory)
    return vol


def test_manifest_round_trip_and_validation():
    m = manifest(hubness={"method": "dis", "beta": 20.0})
    again = IndexManifest.from_json(m.to_json())
    assert again == m and again.model_path() == "tiny"
    data = json.loads(m.to_json())
    cases = [
        ({"format_version": FORMAT_VERSION + 1}, "newer than this hsenet-search"),
        ({"format_version": "1"}, "format_version"),
        ({"metric": "l2"}, "inner_product"),
        ({"embedding": "stage3"}, "embedding must be one of"),
        ({"dims": {"volumes": 16}}, "dims.reports"),
        ({"counts": {"volumes": 1, "scans": 1, "reports": -1, "failures": 0}}, "counts.reports"),
        ({"files": {"../etc/passwd": {"size": 1, "sha256": ""}}}, "outside the index"),
    ]
    for change, message in cases:
        with pytest.raises(IndexFormatError, match=message):
            IndexManifest.from_json(json.dumps({**data, **change}), "x/manifest.json")
    without = {k: v for k, v in data.items() if k != "model_fingerprint"}
    with pytest.raises(IndexFormatError, match="lacks model_fingerprint"):
        IndexManifest.from_json(json.dumps(without))
    with pytest.raises(IndexFormatError, match="not valid JSON") as e:
        IndexManifest.from_json("{oops", "idx/manifest.json")
    assert str(e.value).startswith("idx/manifest.json: ")


def test_complete_index_round_trip(tmp_path: Path):
    vol = write_index(tmp_path / "idx")
    m = open_index_dir(tmp_path / "idx", verify=True)
    assert set(m.files) == {
        "volumes.faiss",
        "reports.faiss",
        "metadata.parquet",
        "reports.parquet",
        "failures.parquet",
        "embeddings/volumes_00000.npy",
        "embeddings/volumes_00001.npy",
        "embeddings/reports_00000.npy",
    }
    assert all(len(info["sha256"]) == 64 for info in m.files.values())
    np.testing.assert_allclose(read_embeddings(tmp_path / "idx", "volumes"), vol, atol=1e-3)
    index = VectorIndex.load(tmp_path / "idx" / "volumes.faiss", mmap=True)
    meta = read_metadata(tmp_path / "idx" / "metadata.parquet")
    _, ids = index.search(vol[4], 1)
    assert meta.loc[ids[0, 0], "volume_name"] == "valid_2_a_1.nii.gz"


def test_incomplete_or_corrupt_index_is_refused(tmp_path: Path):
    idx = tmp_path / "idx"
    write_index(idx)
    assert is_complete_index(idx)
    (idx / "manifest.json").rename(tmp_path / "manifest.json")
    assert not is_complete_index(idx)
    with pytest.raises(IndexFormatError, match="no manifest.json"):
        open_index_dir(idx)
    (tmp_path / "manifest.json").rename(idx / "manifest.json")
    shard = idx / "embeddings" / "volumes_00001.npy"
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(IndexFormatError, match="volumes_00001.npy has"):
        open_index_dir(idx)
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, flipped bits
    assert not is_complete_index(idx)  # every open checks the sample digest
    with pytest.raises(IndexFormatError, match="embeddings/volumes_00001.npy does not match the .*checksum"):
        open_index_dir(idx, verify=True)
    (idx / "reports.faiss").unlink()
    with pytest.raises(IndexFormatError, match="incomplete or modified index: reports.faiss is missing"):
        open_index_dir(idx)
    for path, message in ((tmp_path / "nope", "not found"), (idx / "metadata.parquet", "not a directory")):
        with pytest.raises(IndexFormatError, match=message):
            open_index_dir(path)


def test_manifest_refuses_missing_required_files(tmp_path: Path):
    write_embeddings(tmp_path, "volumes", np.ones((2, 4)))
    with pytest.raises(IndexFormatError, match="volumes.faiss, reports.faiss"):
        manifest().write(tmp_path)
    assert not (tmp_path / "manifest.json").exists()


def test_atomic_directory_replaces_only_on_success(tmp_path: Path):
    final = tmp_path / "indexes" / "ctrate"
    with atomic_directory(final, check=open_index_dir) as tmp:
        assert tmp.parent == final.parent and tmp != final
        first = write_index(tmp, seed=0)
    assert is_complete_index(final)
    # a build that fails half-way leaves the previous index untouched and no temporary directory behind
    with pytest.raises(RuntimeError, match="encoder crashed"):
        with atomic_directory(final, check=open_index_dir) as tmp:
            write_embeddings(tmp, "volumes", np.zeros((3, 16)))
            raise RuntimeError("encoder crashed")
    # a block that "succeeds" without writing a manifest is not published either
    with pytest.raises(IndexFormatError, match="no manifest.json"):
        with atomic_directory(final, check=open_index_dir) as tmp:
            write_embeddings(tmp, "volumes", np.zeros((3, 16)))
    assert is_complete_index(final)
    np.testing.assert_allclose(read_embeddings(final, "volumes"), first, atol=1e-3)
    assert sorted(p.name for p in final.parent.iterdir()) == ["ctrate"]
    with atomic_directory(final, check=open_index_dir) as tmp:
        second = write_index(tmp, seed=1)
    np.testing.assert_allclose(read_embeddings(final, "volumes"), second, atol=1e-3)
    assert sorted(p.name for p in final.parent.iterdir()) == ["ctrate"]


def test_float16_shards_round_trip(tmp_path: Path):
    x = unit(np.random.default_rng(3).standard_normal((23, 8)))
    paths = write_embeddings(tmp_path, "volumes", x, rows_per_shard=5)
    assert [p.name for p in paths] == [f"volumes_{i:05d}.npy" for i in range(5)]
    assert all(np.load(p).dtype == np.float16 for p in paths)
    back = read_embeddings(tmp_path, "volumes")
    assert back.dtype == np.float32 and back.shape == (23, 8)
    np.testing.assert_allclose(back, x, atol=1e-3)
    write_embeddings(tmp_path, "volumes", x[:3])  # rewriting a kind removes its old shards
    assert read_embeddings(tmp_path, "volumes").shape == (3, 8)
    with pytest.raises(IndexFormatError, match="NaN"):
        write_embeddings(tmp_path, "reports", np.full((2, 8), np.nan))
    with pytest.raises(IndexFormatError, match="no embeddings/reports"):
        read_embeddings(tmp_path, "reports")


def test_shard_writer_resumes_after_a_crash(tmp_path: Path):
    """A process killed mid-build keeps its complete shards; the reopened writer continues after them."""
    script = textwrap.dedent(f"""
        import os, numpy as np
        from hsenet_search.index.shards import ShardWriter
        w = ShardWriter({str(tmp_path)!r}, kind="volumes", shard_size=4)
        for i in range(14):   # 3 full shards of 4, 2 rows still buffered
            w.append([f"vol{{i}}"], np.full((1, 6), i, dtype=np.float32),
                     [{{"volume_name": f"vol{{i}}", "n": i}}])
        open(os.path.join({str(tmp_path)!r}, "volumes_shards", "shard_000003.npy"), "wb").write(b"half")
        os._exit(1)           # killed: no flush, no cleanup
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    writer = ShardWriter(tmp_path, kind="volumes", shard_size=4, resume=True)
    done = writer.completed_keys()
    assert done == {f"vol{i}" for i in range(12)}
    assert not (tmp_path / "volumes_shards" / "shard_000003.npy").exists()  # orphan of the killed write
    with writer:
        for i in range(12, 18):
            if f"vol{i}" not in done:
                writer.append([f"vol{i}"], np.full((1, 6), i, dtype=np.float32), [{"volume_name": f"vol{i}", "n": i}])
    rows, shards = ShardWriter.read(tmp_path, kind="volumes")
    emb = shards.to_array()
    assert rows["volume_name"].tolist() == [f"vol{i}" for i in range(18)]
    assert list(rows.columns) == ["volume_name", "n"]
    assert emb.dtype == np.float32 and emb.shape == (18, 6)
    np.testing.assert_array_equal(emb[:, 0], rows["n"].to_numpy())
    # without resume the work is started over
    assert ShardWriter(tmp_path, kind="volumes", resume=False).completed_keys() == set()
    assert len(ShardWriter.read(tmp_path, kind="volumes")[1]) == 0


def test_shard_writer_checks_inputs(tmp_path: Path):
    writer = ShardWriter(tmp_path, kind="reports", shard_size=10)
    writer.append(["a"], np.ones((1, 4)))
    with pytest.raises(IndexFormatError, match="dimension 5"):
        writer.append(["b"], np.ones((1, 5)))
    with pytest.raises(IndexFormatError, match="2 keys, 1 embeddings"):
        writer.append(["b", "c"], np.ones((1, 4)))
    writer.close()
    assert writer.completed_keys() == {"a"}


def test_metadata_reports_and_failures_tables(tmp_path: Path):
    rows = metadata_rows(4)
    rows["reconstruction"] = [1, 2, 1, 2]  # extra columns are kept
    write_metadata(tmp_path / "metadata.parquet", rows)
    back = read_metadata(tmp_path / "metadata.parquet")
    assert list(back.columns) == list(rows.columns)
    assert all(back[name].dtype == np.int8 for name in LABELS)
    assert back["findings"].isna().tolist() == [True, False, False, True]
    assert back["spacing"][1].tolist() == [0.75, 0.75, 1.5] and back["shape"][3].tolist() == [480, 480, 240]
    with pytest.raises(IndexFormatError, match="missing column.*scan_id"):
        write_metadata(tmp_path / "m2.parquet", rows.drop(columns=["scan_id"]))
    with pytest.raises(IndexFormatError, match="row_id must be 0..3"):
        write_metadata(tmp_path / "m2.parquet", rows.assign(row_id=[0, 2, 1, 3]))
    with pytest.raises(IndexFormatError, match="spacing"):
        write_metadata(tmp_path / "m2.parquet", rows.assign(spacing=[(1.0, 1.0)] * 4))
    assert not (tmp_path / "m2.parquet").exists()
    write_reports(tmp_path / "reports.parquet", pd.DataFrame({"report_id": [0, 1], "text": ["x", "y"]}))
    assert read_reports(tmp_path / "reports.parquet")["text"].tolist() == ["x", "y"]
    write_failures(tmp_path / "failures.parquet", [])
    assert read_failures(tmp_path / "failures.parquet").empty
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(IndexFormatError, match="not a readable parquet file") as e:
        read_metadata(tmp_path / "broken.parquet")
    assert "broken.parquet" in str(e.value)


def test_deduplicate_reports():
    ids, texts = deduplicate_reports(["A  b.", "c", "A b.", "", None, "c "])
    assert ids.tolist() == [0, 1, 0, -1, -1, 1]
    assert texts == ["A b.", "c"]
