"""CT-RATE layout (v1 and v2), manifests, scan ids and the dataset-level error cases."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import chest_hu

from hsenet_search.data import ctrate
from hsenet_search.data.cases import scan_id_of
from hsenet_search.data.dataset import load_case_volume, open_dataset
from hsenet_search.data.labels import LABELS
from hsenet_search.errors import DatasetError, VolumeError


@pytest.mark.parametrize(
    ("name", "scan"),
    [
        ("valid_53_a_1.nii.gz", "valid_53_a"),
        ("train_1_a_2_fixed.nii.gz", "train_1_a"),
        ("train_12_bc_10.nii", "train_12_bc"),
        ("dataset/valid/valid_1/valid_1_a/valid_1_a_1.nii.gz", "valid_1_a"),
        ("patient42.nii.gz", "patient42"),
        ("scan_x.npy", "scan_x"),
    ],
)
def test_scan_id_of(name: str, scan: str) -> None:
    assert scan_id_of(name) == scan


def test_writers_produce_ctrate_headers(tmp_path: Path) -> None:
    reports = ctrate.write_reports_csv(tmp_path / "r.csv", [{"VolumeName": "valid_1_a_1.nii.gz", "Findings_EN": "x"}])
    labels = ctrate.write_labels_csv(
        tmp_path / "l.csv", [{"VolumeName": "valid_1_a_1.nii.gz", **dict.fromkeys(LABELS, 0)}]
    )
    meta = ctrate.write_metadata_csv(tmp_path / "m.csv", [{"VolumeName": "valid_1_a_1.nii.gz", "RescaleSlope": 1}])
    rows = {p: list(csv.reader(p.open())) for p in (reports, labels, meta)}
    assert rows[reports][0] == list(ctrate.REPORT_COLUMNS)
    assert rows[reports][1] == ["valid_1_a_1.nii.gz", "Not given.", "Not given.", "x", "Not given."]
    assert rows[labels][0] == ["VolumeName", *LABELS]
    assert rows[meta][0][37:44] == [
        "XYSpacing",
        "RescaleIntercept",
        "RescaleSlope",
        "RescaleType",
        "NumberofSlices",
        "ZSpacing",
        "StudyDate",
    ]
    with pytest.raises(ValueError, match="lacks"):
        ctrate.write_labels_csv(tmp_path / "bad.csv", [{"VolumeName": "v.nii.gz", "Emphysema": 1}])
    assert ctrate.volume_relpath("train_7_b_3.nii.gz") == Path("train_7/train_7_b/train_7_b_3.nii.gz")


def test_v1_dataset_cases_and_rescale_applied_once(tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "ds")
    cases = open_dataset(root)
    names = [c.volume_name for c in cases]
    assert names == [
        "train_1_a_1.nii.gz",
        "train_1_a_2.nii.gz",
        "train_2_a_1.nii.gz",
        "train_10_b_1.nii.gz",
        "valid_3_a_1.nii.gz",
        "valid_3_a_2.nii.gz",
    ]
    assert [c.scan_id for c in cases] == [
        "train_1_a",
        "train_1_a",
        "train_2_a",
        "train_10_b",
        "valid_3_a",
        "valid_3_a",
    ]
    assert [c.split for c in cases] == ["train"] * 4 + ["valid"] * 2
    assert len(open_dataset(root, "valid")) == 2 and len(open_dataset(root, "train")) == 4

    first, second = cases[0], cases[1]
    assert first.rescale == (1.0, -1024.0)
    assert first.findings == "Findings of train_1_a." and first.impression == "Impression train_1_a."
    assert second.impression == "" and second.report == "Findings of train_1_a."
    assert first.labels == tuple(int(i % 3 == 0) for i in range(len(LABELS)))
    assert first.spacing == (0.75, 0.75, 1.5)

    volume = load_case_volume(first)
    np.testing.assert_array_equal(volume.array, chest_hu(seed=0).astype(np.float32))  # raw + (-1024), once
    assert volume.orientation == "LPS"


def test_v2_fixed_volumes_are_never_rescaled(tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "v2", fixed=True)
    assert ctrate.dataset_format(root) == "ct-rate v2"
    assert ctrate.dataset_format(make_ctrate(tmp_path / "v1")) == "ct-rate v1"
    cases = open_dataset(root)
    assert len(cases) == 6
    assert all(c.rescale is None for c in cases)
    assert cases[0].volume_name == "train_1_a_1.nii.gz"  # CSV name, joined to train_1_a_1_fixed.nii.gz
    assert cases[0].path.name == "train_1_a_1_fixed.nii.gz"
    np.testing.assert_array_equal(load_case_volume(cases[0]).array, chest_hu(seed=0).astype(np.float32))


def test_parent_with_dataset_child_is_accepted(tmp_path: Path, make_ctrate) -> None:
    make_ctrate(tmp_path / "download" / "dataset")
    assert len(open_dataset(tmp_path / "download")) == 6


def test_metadata_spacing_replaces_a_wrong_header(tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "ds", metadata_spacing=(0.5, 2.0))  # headers say 0.75 x 0.75 x 1.5
    case = open_dataset(root)[0]
    volume = load_case_volume(case)
    assert volume.spacing == pytest.approx((0.5, 0.5, 2.0))
    assert volume.orientation == "LPS"


def _rewrite_csv(path: Path, transform) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    transform(frame).to_csv(path, index=False)


def test_csv_missing_a_row_names_csv_and_volume(tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "ds")
    reports = ctrate.reports_csv(root, "valid")
    _rewrite_csv(reports, lambda f: f[f.VolumeName != "valid_3_a_2.nii.gz"])
    with pytest.raises(DatasetError) as info:
        open_dataset(root)
    assert str(info.value) == f"{reports}: has no row for VolumeName valid_3_a_2.nii.gz"


@pytest.mark.parametrize(
    ("csv_of", "transform", "problem"),
    [
        (ctrate.reports_csv, lambda f: f.drop(columns=["Findings_EN"]), "has no column 'Findings_EN'"),
        (ctrate.labels_csv, lambda f: f.drop(columns=["Emphysema"]), "has no column 'Emphysema'"),
        (
            ctrate.labels_csv,
            lambda f: f.rename(columns={"Emphysema": "Emphysem"}),
            "'Emphysem', which is not one",
        ),
        (
            ctrate.labels_csv,
            lambda f: f[f.VolumeName != "train_2_a_1.nii.gz"],
            "has no row for VolumeName train_2_a_1",
        ),
        (ctrate.labels_csv, lambda f: f.assign(Emphysema="2"), "label other than 0/1"),
        (
            ctrate.metadata_csv,
            lambda f: f[f.VolumeName != "train_1_a_1.nii.gz"],
            "has no row for VolumeName train_1_a_1",
        ),
        (ctrate.metadata_csv, lambda f: f.drop(columns=["RescaleSlope"]), "has no column 'RescaleSlope'"),
        (
            ctrate.metadata_csv,
            lambda f: f.assign(RescaleIntercept="abc"),
            "RescaleIntercept 'abc' is not a number",
        ),
        (ctrate.metadata_csv, lambda f: f.assign(XYSpacing="[oops]"), "XYSpacing '[oops]'"),
    ],
)
def test_bad_csvs_raise_dataset_errors(tmp_path: Path, make_ctrate, csv_of, transform, problem: str) -> None:
    root = make_ctrate(tmp_path / "ds")
    path = csv_of(root, "train")
    _rewrite_csv(path, transform)
    with pytest.raises(DatasetError) as info:
        open_dataset(root)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_csv_files(tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "ds")
    ctrate.labels_csv(root, "train").unlink()  # labels are optional
    assert all(c.labels is None for c in open_dataset(root, "train"))
    ctrate.metadata_csv(root, "train").unlink()  # v1 needs its rescale
    with pytest.raises(DatasetError, match="is missing .v1 volumes need RescaleSlope"):
        open_dataset(root)
    ctrate.reports_csv(root, "valid").unlink()
    with pytest.raises(DatasetError, match="validation_reports.csv: is missing"):
        open_dataset(root, "valid")


def test_volumes_missing_on_disk(tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "ds")
    gone = root / "valid" / "valid_3" / "valid_3_a" / "valid_3_a_2.nii.gz"
    gone.unlink()
    with pytest.raises(DatasetError, match=r"1 volume\(s\) listed in validation_reports.csv are missing"):
        open_dataset(root)
    kept = open_dataset(root, "valid", missing="keep")
    assert [c.path for c in kept][-1] == gone
    with pytest.raises(VolumeError, match="no such file"):
        load_case_volume(kept[-1])  # what an index builder records as a failure
    assert [c.volume_name for c in open_dataset(root, "valid", missing="skip")] == ["valid_3_a_1.nii.gz"]


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="neither a CT-RATE dataset"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such dataset"):
        open_dataset(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="unknown split"):
        open_dataset(tmp_path, "test")


def _manifest_volumes(tmp_path: Path) -> list[Path]:
    paths = []
    for i in range(3):
        path = tmp_path / "vols" / f"case{i}.nii.gz"
        path.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(chest_hu(seed=i), np.diag([0.8, 0.8, 2.0, 1.0])), str(path))
        paths.append(path)
    return paths


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_csv_and_parquet(tmp_path: Path, suffix: str) -> None:
    paths = _manifest_volumes(tmp_path)
    frame = pd.DataFrame(
        {
            "volume_path": ["vols/case0.nii.gz", str(paths[1]), "vols/case2.nii.gz"],  # relative and absolute
            "findings": ["Lungs clear.", "Nodule in the right upper lobe.", None],
            "impression": ["Normal.", "Nodule.", "Effusion."],
            "scan_id": ["s1", "s1", ""],
            "split": ["train", "validation", ""],
            "patient": ["p1", "p1", "p2"],  # other columns are ignored
            **{label: [0, int(label == "Lung nodule"), 0] for label in LABELS},
        }
    )
    manifest = tmp_path / f"manifest{suffix}"
    frame.to_csv(manifest, index=False) if suffix == ".csv" else frame.to_parquet(manifest)

    cases = open_dataset(manifest)
    assert [c.volume_name for c in cases] == ["case0.nii.gz", "case2.nii.gz", "case1.nii.gz"]  # train first
    by_name = {c.volume_name: c for c in cases}
    assert by_name["case1.nii.gz"].split == "valid" and by_name["case2.nii.gz"].split == "train"
    assert by_name["case0.nii.gz"].scan_id == "s1" and by_name["case2.nii.gz"].scan_id == "case2"
    assert by_name["case2.nii.gz"].findings == "" and by_name["case2.nii.gz"].report == "Effusion."
    assert by_name["case1.nii.gz"].labels[LABELS.index("Lung nodule")] == 1
    assert all(c.rescale is None for c in cases)
    assert by_name["case0.nii.gz"].path == tmp_path / "vols" / "case0.nii.gz"
    np.testing.assert_array_equal(load_case_volume(by_name["case0.nii.gz"]).array, chest_hu(seed=0))
    assert len(open_dataset(tmp_path)) == 3  # a folder holding manifest.csv/.parquet


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (
            pd.DataFrame({"path": ["a"], "findings": ["x"], "impression": ["y"]}),
            "has no column 'volume_path'",
        ),
        (
            pd.DataFrame(
                {
                    "volume_path": ["vols/case0.nii.gz"],
                    "findings": ["x"],
                    "impression": ["y"],
                    "Emphysema": [1],
                }
            ),
            "has 1 of the 18 label columns",
        ),
        (
            pd.DataFrame(
                {
                    "volume_path": ["vols/case0.nii.gz"],
                    "findings": ["x"],
                    "impression": ["y"],
                    "split": ["test"],
                }
            ),
            "row 2 has split 'test'",
        ),
        (
            pd.DataFrame({"volume_path": ["vols/absent.nii.gz"], "findings": ["x"], "impression": ["y"]}),
            "row 2: volume_path vols/absent.nii.gz does not exist",
        ),
        (
            pd.DataFrame({"volume_path": ["vols/case0.nii.gz"] * 2, "findings": ["x"] * 2, "impression": ["y"] * 2}),
            "row 3 repeats volume_path",
        ),
    ],
)
def test_bad_manifests(tmp_path: Path, frame: pd.DataFrame, problem: str) -> None:
    _manifest_volumes(tmp_path)
    manifest = tmp_path / "m.csv"
    frame.to_csv(manifest, index=False)
    with pytest.raises(DatasetError) as info:
        open_dataset(manifest)
    assert str(info.value).startswith(f"{manifest}: ") and problem in str(info.value)


def test_unreadable_manifest(tmp_path: Path) -> None:
    bad = tmp_path / "m.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DatasetError, match="is not a readable parquet manifest"):
        open_dataset(bad)
    with pytest.raises(DatasetError, match="not a manifest"):
        open_dataset(_touch(tmp_path))


def _touch(tmp_path: Path) -> Path:
    path = tmp_path / "list.txt"
    path.write_text("x")
    return path
