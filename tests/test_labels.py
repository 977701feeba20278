"""The 18-label report labeller: negation, uncertainty, sections, the CSV contract, the CLI, real-report accuracy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared
from typer.testing import CliRunner

from hsenet_search.data.labels import (
    LABELS,
    cv_folds,
    explain_report,
    extract_labels,
    label_report,
    read_reports_csv,
    write_labels_csv,
)
from hsenet_search.errors import DatasetError

REAL_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct-rate-manual-labels" / "train.csv"


def positives(text: str) -> set[str]:
    return {label for label, v in label_report(text).items() if v}


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------------ negation


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("No pleural effusion.", "Pleural effusion"),
        ("Pleural effusion-thickening was not detected.", "Pleural effusion"),
        ("Pericardial effusion-thickening was not observed.", "Pericardial effusion"),
        ("No enlarged lymph nodes were detected in the mediastinum.", "Lymphadenopathy"),
        ("Atelectasis was not observed.", "Atelectasis"),
        ("Bronchiectasis not detected.", "Bronchiectasis"),
        ("Both lungs are free of consolidation.", "Consolidation"),
        ("There is no evidence of cardiomegaly.", "Cardiomegaly"),
        ("No pleural or pericardial effusion was detected.", "Pericardial effusion"),
        ("No pleural or pericardial effusion was detected.", "Pleural effusion"),
        ("No mass or nodular lesion was detected in both lungs.", "Lung nodule"),
        ("Hiatal hernia is not seen.", "Hiatal hernia"),
        ("Pleural effusion and pneumothorax were not detected.", "Pleural effusion"),
        (
            "A nodule in the right lung, which was observed in the previous examination, was not detected in the "
            "current examination.",
            "Lung nodule",
        ),
        ("The ground glass areas seen before have disappeared.", "Lung opacity"),
        ("The central venous catheter was removed.", "Medical material"),
        ("Mediastinal and hilar lymph nodes are not enlarged.", "Lymphadenopathy"),
    ],
)
def test_negated_mentions_do_not_count(text: str, label: str) -> None:
    assert label_report(text)[label] == 0
    evidence = [e for e in explain_report(text) if e.label == label]
    assert evidence and all(e.negated for e in evidence), "the mention is found, then negated"


def test_negation_scope_stops_at_the_next_finding() -> None:
    assert positives("Heart size increased and pericardial effusion was not observed.") == {"Cardiomegaly"}
    assert positives("No pleural effusion was detected, but atelectasis is observed in the left lower lobe.") == {
        "Atelectasis"
    }
    assert positives("Emphysematous changes are observed. No nodule was detected.") == {"Emphysema"}


def test_no_change_is_not_a_negation() -> None:
    assert label_report("No significant change in the size of the nodule in the left upper lobe.")["Lung nodule"] == 1


# ------------------------------------------------------------------------------------------------ positives

POSITIVE = {
    "Medical material": "Sternotomy wires and a cardiac pacemaker are observed.",
    "Arterial wall calcification": "Calcific atheroma plaques are observed in the aortic arch.",
    "Cardiomegaly": "Heart size increased.",
    "Pericardial effusion": "Minimal pericardial effusion is observed.",
    "Coronary artery wall calcification": "Calcific plaques in the coronary arteries.",
    "Hiatal hernia": "Sliding type hiatal hernia at the lower end of the esophagus.",
    "Lymphadenopathy": "Lymph nodes with a short axis of 12 mm in the subcarinal area.",
    "Emphysema": "Centriacinar emphysematous changes in both upper lobes.",
    "Atelectasis": "Atelectatic changes in the left lower lobe.",
    "Lung nodule": "A 6 mm nodule in the right lung upper lobe.",
    "Lung opacity": "Ground glass opacities in both lungs.",
    "Pulmonary fibrotic sequela": "Sequelae fibrotic changes in the right lung middle lobe.",
    "Pleural effusion": "Bilateral pleural effusion, more on the right.",
    "Mosaic attenuation pattern": "Mosaic attenuation pattern in both lungs.",
    "Peribronchial thickening": "Peribronchial thickening in both lower lobes.",
    "Consolidation": "Consolidation with air bronchograms in the right lower lobe.",
    "Bronchiectasis": "Cylindrical bronchiectasis in both lower lobes.",
    "Interlobular septal thickening": "Interlobular septal thickening in both lungs.",
}


def test_positive_vocabulary_covers_all_labels() -> None:
    assert set(POSITIVE) == set(LABELS)


@pytest.mark.parametrize("label", LABELS)
def test_positive_phrasing(label: str) -> None:
    found = label_report(POSITIVE[label])
    assert found[label] == 1
    assert list(found) == list(LABELS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bilateral effusion reaching 2 cm.", {"Pleural effusion"}),
        ("Hydrothorax on the left.", {"Pleural effusion"}),
        ("The cardiothoracic ratio increased in favor of the heart.", {"Cardiomegaly"}),
        ("Fibroatelectatic changes in the lingula.", {"Pulmonary fibrotic sequela"}),
        ("Thickening of the peribronchial sheath is observed.", {"Peribronchial thickening"}),
        ("Increases in interlobular septal thickness in both lungs.", {"Interlobular septal thickening"}),
        (
            "No pathological LAP was detected. A millimetric lymph node is observed in the right paratracheal area.",
            {"Lymphadenopathy"},
        ),
    ],
)
def test_report_phrasings(text: str, expected: set[str]) -> None:
    assert positives(text) == expected


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("A 5 mm nodule in the thyroid gland.", "Lung nodule"),
        ("Subcutaneous emphysema in the chest wall.", "Emphysema"),
        ("Mediastinal structures cannot be evaluated because contrast material is not given.", "Medical material"),
        ("Calcification of the aortic valve.", "Arterial wall calcification"),
        ("Calcific plaques in the coronary arteries.", "Arterial wall calcification"),
        ("Minimal pleural thickening is observed.", "Pleural effusion"),
        ("Minimal pericardial effusion is observed.", "Pleural effusion"),
        ("Interventricular septal thickening.", "Interlobular septal thickening"),
        ("Pulmonary veins drain into the left atrium.", "Medical material"),
        ("A ground-glass nodule of 6 mm in the right upper lobe.", "Lung opacity"),
    ],
)
def test_other_organ_or_meaning_does_not_count(text: str, label: str) -> None:
    assert label_report(text)[label] == 0


# ------------------------------------------------------------------------------------------------ uncertainty


def test_hedged_findings_count_and_are_marked() -> None:
    text = "Findings may be compatible with pneumonic consolidation. Suspicious for a lung nodule."
    assert positives(text) == {"Consolidation", "Lung nodule"}
    assert all(e.hedged for e in explain_report(text))


def test_bare_questioned_finding_does_not_count() -> None:
    assert label_report("Band-like density in the right lower lobe (atelectasis?).")["Atelectasis"] == 0
    evidence = [e for e in explain_report("Atelectasis?") if e.label == "Atelectasis"]
    assert evidence and evidence[0].questioned and not evidence[0].positive


# ------------------------------------------------------------------------------------------------ API


def test_extract_labels_matrix() -> None:
    texts = [POSITIVE["Emphysema"], "", "No pleural effusion. " + POSITIVE["Hiatal hernia"]]
    out = extract_labels(texts)
    assert out.dtype == np.int8 and out.shape == (3, 18)
    assert set(np.unique(out)) <= {0, 1}
    assert out[0].tolist() == [int(label == "Emphysema") for label in LABELS]
    assert out[1].sum() == 0
    assert out[2].tolist() == [int(label == "Hiatal hernia") for label in LABELS]
    assert extract_labels([]).shape == (0, 18)
    assert extract_labels([None, float("nan")]).sum() == 0, "missing reports (pandas NaN) are empty"


def test_cv_folds_deterministic_and_balanced() -> None:
    folds = cv_folds(803, k=5, seed=0)
    assert np.array_equal(folds, cv_folds(803, k=5, seed=0))
    assert not np.array_equal(folds, cv_folds(803, k=5, seed=1))
    assert sorted(np.bincount(folds).tolist()) == [160, 160, 161, 161, 161]


# ------------------------------------------------------------------------------------------------ sections / CSV


def test_findings_and_impressions_csv(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "valid_reports.csv",
        [
            {
                "VolumeName": "valid_2_a_1.nii.gz",
                "ClinicalInformation_EN": "Cough.",
                "Technique_EN": "Non-contrast.",
                "Findings_EN": "No pleural effusion.",
                "Impressions_EN": "Cardiomegaly.",
            },
            {
                "VolumeName": "valid_1_a_1.nii.gz",
                "ClinicalInformation_EN": "Not given.",
                "Technique_EN": "Not given.",
                "Findings_EN": "Not given.",
                "Impressions_EN": "Not given.",
            },
            {
                "VolumeName": "valid_1_a_2.nii.gz",
                "ClinicalInformation_EN": "Not given.",
                "Technique_EN": "Not given.",
                "Findings_EN": "Bilateral pleural effusion.",
                "Impressions_EN": "Not given.",
            },
        ],
    )
    id_column, ids, texts = read_reports_csv(path)
    assert id_column == "VolumeName"
    assert ids == ["valid_2_a_1.nii.gz", "valid_1_a_1.nii.gz", "valid_1_a_2.nii.gz"]
    assert texts[1] == "" and "Not given" not in texts[2]
    labels = extract_labels(texts)
    assert positives(texts[0]) == {"Cardiomegaly"}, "the impression counts; the findings negation stays local"
    assert labels[1].sum() == 0
    assert labels[2, LABELS.index("Pleural effusion")] == 1


def test_report_text_csv_and_labels_csv_roundtrip(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "reports.csv",
        [
            {"AccessionNo": "train_9", "report_text": POSITIVE["Bronchiectasis"], "Emphysema": "1"},
            {"AccessionNo": "train_3", "report_text": "", "Emphysema": "0"},
            {"AccessionNo": "train_5", "report_text": POSITIVE["Cardiomegaly"], "Emphysema": "0"},
        ],
    )
    id_column, ids, texts = read_reports_csv(path)
    assert (id_column, ids) == ("AccessionNo", ["train_9", "train_3", "train_5"])
    out = tmp_path / "sub" / "labels.csv"
    write_labels_csv(out, id_column, ids, extract_labels(texts))
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["AccessionNo", *LABELS]
    assert [r[0] for r in rows[1:]] == ids
    assert rows[1][1 + LABELS.index("Bronchiectasis")] == "1" and sum(map(int, rows[1][1:])) == 1
    assert rows[2][1:] == ["0"] * 18
    assert rows[3][1 + LABELS.index("Cardiomegaly")] == "1"
    assert [p.name for p in out.parent.iterdir()] == ["labels.csv"], "no temporary file left behind"


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        (["VolumeName", "Impression"], "report_text"),
        (["PatientID", "report_text"], "AccessionNo"),
    ],
)
def test_missing_column_is_one_line_dataset_error(tmp_path: Path, header: list[str], needle: str) -> None:
    path = tmp_path / "bad_reports.csv"
    path.write_text(",".join(header) + "\nx,y\n")
    with pytest.raises(DatasetError) as err:
        read_reports_csv(path)
    message = str(err.value)
    assert "bad_reports.csv" in message and needle in message and "\n" not in message


def test_unreadable_csv_is_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing.csv"):
        read_reports_csv(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81 not utf-8 \x9c")
    with pytest.raises(DatasetError, match="binary.csv"):
        read_reports_csv(binary)


def test_write_labels_csv_rejects_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="labels.csv"):
        write_labels_csv(tmp_path / "labels.csv", "AccessionNo", ["a", "b"], np.zeros((2, 17), dtype=np.int8))
    assert not (tmp_path / "labels.csv").exists()


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_extract(tmp_path: Path) -> None:
    from hsenet_search.cli.labels import app

    reports = write_csv(
        tmp_path / "reports.csv",
        [
            {
                "VolumeName": "valid_7_a_1.nii.gz",
                "Findings_EN": POSITIVE["Lung nodule"],
                "Impressions_EN": "Not given.",
            },
            {"VolumeName": "valid_3_a_1.nii.gz", "Findings_EN": "Not given.", "Impressions_EN": "Not given."},
        ],
    )
    out = tmp_path / "labels.csv"
    result = CliRunner().invoke(app, ["extract", str(reports), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 2 and summary["empty_reports"] == 1 and summary["id_column"] == "VolumeName"
    assert summary["prevalence"]["Lung nodule"] == 0.5 and summary["positives"]["Lung nodule"] == 1
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["VolumeName"] for r in rows] == ["valid_7_a_1.nii.gz", "valid_3_a_1.nii.gz"]

    table = CliRunner().invoke(app, ["extract", str(reports), "--out", str(out), "--explain", "--overwrite"])
    assert table.exit_code == 0 and "Lung nodule" in table.output and "1 empty" in table.output


def test_cli_missing_column_error(tmp_path: Path) -> None:
    from hsenet_search.cli.labels import app

    bad = tmp_path / "no_text.csv"
    bad.write_text("AccessionNo,Findings\nx,y\n")
    result = CliRunner().invoke(app, ["extract", str(bad), "--out", str(tmp_path / "o.csv")])
    assert isinstance(result.exception, DatasetError) and "no_text.csv" in str(result.exception)
    # through the real entry point: exit 2 and one line naming the file, no traceback
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hsenet_search.cli.main",
            "labels",
            "extract",
            str(bad),
            "--out",
            str(tmp_path / "o.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "no_text.csv" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.csv").exists()


# ------------------------------------------------------------------------------------------------ real reports


def test_macro_f1_on_held_out_fold_of_real_reports() -> None:
    from sklearn.metrics import f1_score

    require_shared(REAL_CSV)
    _, _, texts = read_reports_csv(REAL_CSV)
    with REAL_CSV.open(newline="", encoding="utf-8") as f:
        truth = np.array([[int(row[label]) for label in LABELS] for row in csv.DictReader(f)], dtype=np.int8)
    held_out = cv_folds(len(texts), k=5, seed=0) == 4  # the fold not read while the rules were written
    pred = extract_labels([t for t, keep in zip(texts, held_out, strict=True) if keep])
    per_label = f1_score(truth[held_out], pred, average=None, zero_division=0)
    # the documented held-out result (benchmarks/README.md, labeler_cv.json): macro-F1 0.948; the rules
    # are deterministic, so a drop of more than rounding is a regression
    assert per_label.mean() >= 0.9475, dict(zip(LABELS, per_label.round(3), strict=True))
