"""``index build`` over bad volumes: each is recorded in failures.parquet as one readable sentence naming the
file and the problem (not MONAI's ``applying transform <... at 0x7f...>``), and the build carries on."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from hsenet_search.cli.main import main

from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.volume import MEMORY_BUDGET_ENV


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from hsenet_search.models import create_model

    out = tmp_path_factory.mktemp("model") / "tiny"
    create_model("tiny").save_pretrained(out)
    return out


@pytest.mark.slow
def test_bad_volumes_are_recorded_as_readable_sentences(
    monkeypatch, capsys, tmp_path: Path, make_ctrate, tiny_model: Path
) -> None:
    root = make_ctrate(tmp_path / "ds", metadata_spacing=None)  # the files' own spacing applies
    cases = {c.volume_name: c for c in open_dataset(root)}
    wide, nan_affine = cases["train_2_a_1.nii.gz"], cases["train_10_b_1.nii.gz"]
    image = nib.load(wide.path)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), np.diag([-40.0, -40.0, 40.0, 1.0])), wide.path)
    header = nib.load(nan_affine.path).header.copy()
    srow = np.array(header["srow_y"])
    srow[1] = np.nan
    header["srow_y"] = srow
    header["qform_code"] = 0
    data = np.asanyarray(nib.load(nan_affine.path).dataobj)
    nib.Nifti1Image(data, None, header).to_filename(nan_affine.path)
    assert not np.isfinite(nib.load(nan_affine.path).affine).all()

    monkeypatch.setenv(MEMORY_BUDGET_ENV, "8")  # 8 MiB: the 40 mm volume's resampled grid does not fit
    out = tmp_path / "idx"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "hsenet-search",
            "index",
            "build",
            str(root),
            "--out",
            str(out),
            "--model",
            str(tiny_model),
            "--workers",
            "0",
            "--batch-size",
            "2",
        ],
    )
    try:
        main()
    except SystemExit as exit_:
        assert not exit_.code
    capsys.readouterr()
    failures = pd.read_parquet(out / "failures.parquet").set_index("volume_name")["error"]
    assert sorted(failures.index) == sorted([wide.volume_name, nan_affine.volume_name])
    for text in failures:
        assert "\n" not in text and "applying transform" not in text and " at 0x" not in text
    assert failures[wide.volume_name].startswith(f"{wide.path}: resampled volume of shape ")
    assert "GiB volume budget" in failures[wide.volume_name]
    assert failures[nan_affine.volume_name] == (
        f"{nan_affine.path}: has a non-finite (NaN or infinite) voxel-to-world affine"
    )
    metadata = pd.read_parquet(out / "metadata.parquet")
    assert len(metadata) == len(cases) - 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("nan-affine.nii.gz", "has a non-finite (NaN or infinite) voxel-to-world affine"),
        ("wide.nii.gz", "resampled volume of shape"),
    ],
)
def test_embed_volume_bad_input_is_one_line(monkeypatch, capsys, tmp_path: Path, tiny_model: Path, name, problem):
    from input_files import set_field, write_nifti

    if name == "wide.nii.gz":
        path = write_nifti(tmp_path / name, spacing=(40.0, 40.0, 40.0))
        monkeypatch.setenv(MEMORY_BUDGET_ENV, "8")
    else:
        path = write_nifti(tmp_path / name, set_field("srow_x", np.nan, 0))
    monkeypatch.setattr(sys, "argv", ["hsenet-search", "embed", "volume", str(path), "--model", str(tiny_model)])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {problem}"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
