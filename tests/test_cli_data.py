"""``hsenet-search data inspect``: JSON and table output, and bad input as one line without a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import REPO_ROOT, chest_hu
from hsenet_search.cli.main import main

from hsenet_search.data.ctrate import reports_csv
from hsenet_search.data.inspect import inspect_path
from hsenet_search.data.labels import LABELS


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run the real entry point in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["hsenet-search", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def test_inspect_nifti_json(monkeypatch, capsys, real_ct_nifti: Path) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "data", "inspect", str(real_ct_nifti), "--json")
    info = json.loads(out)
    assert code == 0
    assert info["kind"] == "volume" and info["shape"] == [122, 101, 112]
    assert info["spacing_mm"] == [3.0, 3.0, 3.0] and info["orientation"] == "RAS"
    hu = info["hu"]
    assert set(hu) == {"min", "max", "mean", "p1", "p99"}
    assert hu["min"] <= hu["p1"] < hu["mean"] < hu["p99"] <= hu["max"]
    assert -1100 < hu["p1"] < -900


def test_inspect_dicom_folder(real_ct_dicom: Path) -> None:
    info = inspect_path(real_ct_dicom)
    assert info["shape"] == [512, 512, 20] and info["spacing_mm"] == [0.9766, 0.9766, 2.0]
    assert info["orientation"] == "LPS" and info["hu"]["min"] == -1024.0


def test_inspect_dataset_json_and_table(monkeypatch, capsys, tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "ds")
    code, out, _ = run_cli(monkeypatch, capsys, "data", "inspect", str(root), "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == "dataset" and info["format"] == "ct-rate v1"
    assert info["splits"]["train"] == {"volumes": 4, "scans": 3, "missing_files": 0}
    assert info["splits"]["valid"] == {"volumes": 2, "scans": 1, "missing_files": 0}
    assert list(info["label_prevalence"]) == list(LABELS)
    # make_ctrate labels volume i positive for label j when (i + j) % 3 == 0; six volumes -> 2/6 each
    assert all(v == pytest.approx(1 / 3, abs=1e-3) for v in info["label_prevalence"].values())

    code, out, _ = run_cli(monkeypatch, capsys, "data", "inspect", str(root))
    assert code == 0 and "ct-rate v1" in out and "Pleural effusion" in out and "valid" in out


def test_inspect_ctrate_v1_file_uses_its_metadata_rescale(tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "ds")
    info = inspect_path(root / "train" / "train_1" / "train_1_a" / "train_1_a_1.nii.gz")
    hu = chest_hu(seed=0)
    assert info["rescale"] == [1.0, -1024.0]
    assert info["hu"]["min"] == hu.min() and info["hu"]["max"] == hu.max()
    loose = tmp_path / "loose.nii.gz"  # the same stored values outside a dataset: no rescale known
    nib.save(nib.Nifti1Image((hu.astype(np.int32) + 1024).astype(np.int16), np.eye(4)), str(loose))
    assert inspect_path(loose)["rescale"] is None and inspect_path(loose)["hu"]["min"] == hu.min() + 1024


def test_inspect_volume_table(monkeypatch, capsys, real_ct_nifti: Path) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "data", "inspect", str(real_ct_nifti))
    assert code == 0 and "orientation" in out and "RAS" in out and "122 x 101 x 112" in out


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "cut.nii.gz"
    nib.save(
        nib.Nifti1Image(np.zeros((64, 64, 32), np.int16) + np.arange(32, dtype=np.int16), np.eye(4)),
        str(path),
    )
    path.write_bytes(path.read_bytes()[:-200])
    return path


def _not_an_image(tmp_path: Path) -> Path:
    path = tmp_path / "notes.nii"
    path.write_text("not an image at all " * 30)
    return path


def _dataset_missing_row(tmp_path: Path, make_ctrate) -> Path:
    root = make_ctrate(tmp_path / "ds")
    path = reports_csv(root, "train")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if not line.startswith("train_2_a_1")) + "\n")
    return root


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda tmp, _: _truncated(tmp), "cut.nii.gz: is truncated"),
        (lambda tmp, _: _not_an_image(tmp), "notes.nii: is not a NIfTI image"),
        (lambda tmp, _: tmp / "nowhere.nii.gz", "nowhere.nii.gz: no such file"),
        (_dataset_missing_row, "train_reports.csv: has no row for VolumeName train_2_a_1.nii.gz"),
    ],
)
def test_bad_input_is_one_line_exit_2(monkeypatch, capsys, tmp_path: Path, make_ctrate, make, problem: str) -> None:
    path = make(tmp_path, make_ctrate)
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", str(path), "--json")
    assert code == 2 and out == ""
    assert problem in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_subprocess(tmp_path: Path) -> None:
    """The installed entry point end to end: a user error is one line on stderr, exit 2, no traceback."""
    bad = _not_an_image(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "hsenet_search.cli.main", "data", "inspect", str(bad)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "is not a NIfTI image" in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_bad_dicom_and_label_csv_via_cli(monkeypatch, capsys, tmp_path: Path, real_ct_dicom: Path, make_ctrate) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for path in sorted(real_ct_dicom.glob("*.dcm"))[:3]:
        shutil.copy(path, mixed / path.name)
    odd = sorted(mixed.glob("*.dcm"))[-1]
    ds = pydicom.dcmread(odd)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(odd)
    code, _, err = run_cli(monkeypatch, capsys, "data", "inspect", str(mixed))
    assert code == 2 and f"{mixed}: mixes 2 DICOM series" in err and "Traceback" not in err

    root = make_ctrate(tmp_path / "ds")
    labels = root / "multi_abnormality_labels" / "valid_predicted_labels.csv"
    header, *rows = labels.read_text().splitlines()
    labels.write_text(
        "\n".join([header.replace(",Emphysema", ""), *(",".join(r.split(",")[:8] + r.split(",")[9:]) for r in rows)])
        + "\n"
    )
    code, _, err = run_cli(monkeypatch, capsys, "data", "inspect", str(root), "--json")
    assert code == 2 and f"{labels}: has no column 'Emphysema'" in err and len(err.strip().splitlines()) == 1
