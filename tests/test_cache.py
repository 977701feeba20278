"""Preprocessing cache key: content identity without re-hashing on warm lookups; bad entries are misses."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import LPS_AFFINE, chest_hu

from hsenet_search.data import cache as cache_module
from hsenet_search.data.cache import CacheWarning, PreprocessCache, content_hash
from hsenet_search.data.preprocess import get_profile, preprocess_file


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "ct.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(chest_hu(), LPS_AFFINE), str(path))
    return path


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every full-content hash computed (each one reads the whole file)."""
    calls: list[str] = []
    real = cache_module.content_hash

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(cache_module, "content_hash", counting)
    return calls


def test_warm_lookup_reads_the_stored_hash_not_the_file(tmp_path: Path, volume: Path, hashed) -> None:
    profile = get_profile("tiny")
    first = PreprocessCache(tmp_path / "cache").entry_path(volume, profile)
    again = PreprocessCache(tmp_path / "cache").entry_path(volume, profile)  # a new process, same disk
    assert first == again and hashed == [str(volume)]
    sidecars = list((tmp_path / "cache" / "content").rglob("*.sha256"))
    assert [p.read_text() for p in sidecars] == [content_hash(volume)]


def test_key_is_content_identity(tmp_path: Path, volume: Path) -> None:
    profile = get_profile("tiny")
    cache = PreprocessCache(tmp_path / "cache")
    copy = tmp_path / "elsewhere.nii.gz"
    shutil.copy(volume, copy)
    assert cache.entry_path(copy, profile) == cache.entry_path(volume, profile)  # same bytes, same entry
    before = cache.entry_path(volume, profile)
    stat = volume.stat()
    data = bytearray(volume.read_bytes())
    data[-5] ^= 0xFF  # same size, and the old mtime put back: the ctime still changes
    volume.write_bytes(bytes(data))
    os.utime(volume, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert volume.stat().st_size == stat.st_size
    after = cache.entry_path(volume, profile)
    assert after != before
    expected = PreprocessCache(tmp_path / "fresh").entry_path(volume, profile)
    assert after.name == expected.name


def test_dicom_folder_identity_changes_with_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"a" * 100)
    cache = PreprocessCache(tmp_path / "cache")
    first = cache.content_hash(folder)
    (folder / "b.dcm").write_bytes(b"b" * 100)
    assert cache.content_hash(folder) == content_hash(folder) != first


def test_corrupt_sidecar_is_recomputed(tmp_path: Path, volume: Path, hashed) -> None:
    cache = PreprocessCache(tmp_path / "cache")
    good = cache.content_hash(volume)
    (sidecar,) = (tmp_path / "cache" / "content").rglob("*.sha256")
    sidecar.write_text("garbage")
    assert cache.content_hash(volume) == good and len(hashed) == 2


@pytest.mark.parametrize(
    "bad",
    [
        lambda shape: b"not an npy file",
        lambda shape: np.zeros((1, 4, 4, 4), np.float32),  # wrong shape
        lambda shape: np.zeros(shape, np.float64),  # wrong dtype
    ],
    ids=["unreadable", "wrong-shape", "wrong-dtype"],
)
def test_bad_entry_is_a_warned_miss(tmp_path: Path, volume: Path, bad) -> None:
    profile = get_profile("tiny")
    cache = PreprocessCache(tmp_path / "cache")
    good = preprocess_file(volume, profile, cache=cache)
    entry = cache.entry_path(volume, profile)
    content = bad((1, *profile.output_shape))
    if isinstance(content, bytes):
        entry.write_bytes(content)
    else:
        np.save(entry, content)
    with pytest.warns(CacheWarning, match=entry.name):
        again = preprocess_file(volume, profile, cache=cache)
    np.testing.assert_array_equal(again, good)
    np.testing.assert_array_equal(np.load(entry), good)  # the entry was rewritten


def test_holds_answers_without_reading_the_file(tmp_path: Path, volume: Path, hashed) -> None:
    profile = get_profile("tiny")
    cache = PreprocessCache(tmp_path / "cache")
    assert not cache.holds(volume, profile) and hashed == []  # never seen: no hash computed
    assert not cache.holds(tmp_path / "missing.nii.gz", profile)
    preprocess_file(volume, profile, cache=cache)
    assert cache.holds(volume, profile) and not cache.holds(volume, profile, rescale=(2.0, 0.0))
    assert not cache.holds(volume, get_profile("hsenet"))
    os.utime(volume, ns=(1, 1))  # a new file version: its hash is unknown until it is read again
    assert not cache.holds(volume, profile)


def test_warm_embedding_loads_in_process_and_matches_the_cold_run(tmp_path: Path, volume: Path) -> None:
    from hsenet_search.data.cases import Case
    from hsenet_search.embedding import embed_cases
    from hsenet_search.models import create_model

    model = create_model("tiny").eval()
    cache = PreprocessCache(tmp_path / "cache")
    cases = [Case(f"v{i}.nii.gz", f"v{i}", "train", volume, "", "", None, None) for i in range(3)]
    cold = np.concatenate([b.embeddings for b in embed_cases(model, cases, batch_size=2, workers=1, cache=cache)])
    assert cache.holds(volume, model.profile)
    warm = np.concatenate([b.embeddings for b in embed_cases(model, cases, batch_size=2, workers=1, cache=cache)])
    np.testing.assert_array_equal(warm, cold)
