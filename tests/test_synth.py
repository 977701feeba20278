"""Synthetic CT-RATE generator: layout and CSVs, v1 storage, rendered findings vs labels vs report text,
determinism, and conditioning on real label / report CSVs."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from hsenet_search.data.labels import LABELS
from hsenet_search.data.synth import SynthSummary, generate_dataset
from hsenet_search.errors import DatasetError

# specs/ct-clip-and-ct-rate.md §1.5, verbatim.
METADATA_HEADER = (
    "VolumeName, Manufacturer, SeriesDescription, ManufacturerModelName, PatientSex, PatientAge, "
    "ReconstructionDiameter, DistanceSourceToDetector, DistanceSourceToPatient, GantryDetectorTilt, TableHeight, "
    "RotationDirection, ExposureTime, XRayTubeCurrent, Exposure, FilterType, GeneratorPower, FocalSpots, "
    "ConvolutionKernel, PatientPosition, RevolutionTime, SingleCollimationWidth, TotalCollimationWidth, TableSpeed, "
    "TableFeedPerRotation, SpiralPitchFactor, DataCollectionCenterPatient, ReconstructionTargetCenterPatient, "
    "ExposureModulationType, CTDIvol, ImagePositionPatient, ImageOrientationPatient, SliceLocation, SamplesPerPixel, "
    "PhotometricInterpretation, Rows, Columns, XYSpacing, RescaleIntercept, RescaleSlope, RescaleType, "
    "NumberofSlices, ZSpacing, StudyDate"
).split(", ")
REPORT_COLUMNS = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
CSVS = {
    "train": (
        "radiology_text_reports/train_reports.csv",
        "multi_abnormality_labels/train_predicted_labels.csv",
        "metadata/train_metadata.csv",
    ),
    "valid": (
        "radiology_text_reports/validation_reports.csv",
        "multi_abnormality_labels/valid_predicted_labels.csv",
        "metadata/validation_metadata.csv",
    ),
}
NAME = re.compile(r"^(train|valid)_(\d+)_([a-z])_(\d+)\.nii\.gz$")
SERIES = re.compile(r"series (\d+),? image (\d+)")
NEGATION = re.compile(r"\b(no|not|without)\b", re.IGNORECASE)
# A positive label must be described by a non-negated sentence matching its pattern, and vice versa.
POSITIVE = {
    "Medical material": r"catheter|pacemaker|sternotomy",
    "Arterial wall calcification": r"(calcif|atheroma)[^.]*aort",
    "Cardiomegaly": r"cardiomegaly|heart is enlarged",
    "Pericardial effusion": r"pericardial (effusion|fluid)",
    "Coronary artery wall calcification": r"coronary",
    "Hiatal hernia": r"hiatal hernia",
    "Lymphadenopathy": r"enlarged lymph node|lymphadenopathy",
    "Emphysema": r"emphysem",
    "Atelectasis": r"atelectasis",
    "Lung nodule": r"nodule",
    "Lung opacity": r"ground-glass (opacity|density increase)",
    "Pulmonary fibrotic sequela": r"fibrotic",
    "Pleural effusion": r"pleural effusion",
    "Mosaic attenuation pattern": r"mosaic",
    "Peribronchial thickening": r"peribronchial",
    "Consolidation": r"consolidation",
    "Bronchiectasis": r"bronchiect",
    "Interlobular septal thickening": r"septal thickening",
}
# Absent labels that every report states explicitly as negatives.
NEGATIVE = {
    "Pericardial effusion": r"pericardial effusion",
    "Pleural effusion": r"pleural effusion",
    "Lymphadenopathy": r"lymph node",
    "Lung nodule": r"nodul",
}


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=\.)\s+|;\s*", text) if s.strip()]


def _positive_sentences(text: str, pattern: str) -> list[str]:
    return [s for s in _sentences(text) if re.search(pattern, s, re.IGNORECASE) and not NEGATION.search(s)]


def _negative_sentences(text: str, pattern: str) -> list[str]:
    return [s for s in _sentences(text) if re.search(pattern, s, re.IGNORECASE) and NEGATION.search(s)]


def _read(root: Path, split: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return tuple(pd.read_csv(root / rel, keep_default_na=False) for rel in CSVS[split])  # type: ignore[return-value]


def _hu(root: Path, plan, recon_index: int = 0) -> np.ndarray:
    """HU of a written reconstruction, applying the metadata rescale (v1 convention)."""
    recon = plan.acquisition.recons[recon_index]
    img = nib.load(plan.volume_path(root, recon))
    meta = pd.read_csv(root / CSVS[plan.split][2]).set_index("VolumeName").loc[plan.volume_name(recon)]
    raw = np.asarray(img.dataobj)
    return raw.astype(np.float32) * float(meta["RescaleSlope"]) + float(meta["RescaleIntercept"])


def _patch(hu: np.ndarray, plan, point, k: int | None = None, half: int = 1) -> np.ndarray:
    i, j, kk = plan.acquisition.grid.index_of(point)
    k = kk if k is None else k
    return hu[i - half : i + half + 1, j - half : j + half + 1, k]


def _lung_mask(plan) -> np.ndarray:
    x, y, z = plan.acquisition.grid.axes()
    return plan.anatomy.lung_side(x, y, z) > 0


@pytest.fixture(scope="module")
def sampled(tmp_path_factory) -> tuple[Path, SynthSummary]:
    root = tmp_path_factory.mktemp("sampled") / "ds"
    return root, generate_dataset(root, 12, seed=3, valid_fraction=0.25, workers=2)


CONDITIONS = {  # AccessionNo -> positive labels
    "normal": (),
    "effusion": ("Pleural effusion", "Atelectasis"),
    "emphysema": ("Emphysema", "Lung nodule"),
    "heart": ("Cardiomegaly", "Pericardial effusion", "Coronary artery wall calcification"),
    "devices": ("Medical material", "Arterial wall calcification", "Hiatal hernia"),
    "infection": ("Consolidation", "Lung opacity", "Lymphadenopathy"),
    "airways": (
        "Bronchiectasis",
        "Peribronchial thickening",
        "Mosaic attenuation pattern",
        "Interlobular septal thickening",
        "Pulmonary fibrotic sequela",
    ),
}


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory) -> tuple[Path, SynthSummary, Path]:
    base = tmp_path_factory.mktemp("conditioned")
    csv = base / "labels.csv"
    rows = [
        {"AccessionNo": acc, "report_text": "", **{lb: int(lb in pos) for lb in LABELS}}
        for acc, pos in CONDITIONS.items()
    ]
    pd.DataFrame(rows).to_csv(csv, index=False)
    root = base / "ds"
    return root, generate_dataset(root, len(rows), seed=5, valid_fraction=0.3, labels_from=csv, workers=1), csv


def test_layout_and_csv_columns_follow_ct_rate(sampled):
    root, summary = sampled
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["train", "valid", "radiology_text_reports", "multi_abnormality_labels", "metadata", ".hsenet-dataset"]
    )
    files = sorted(root.glob("*/*/*/*.nii.gz"))
    assert len(files) == sum(summary.volumes.values()) and summary.scans["valid"] == 3
    assert sum(summary.scans.values()) == 12 and sum(summary.volumes.values()) > 12  # some second recons
    seen = set()
    for split in ("train", "valid"):
        reports, labels, meta = _read(root, split)
        assert list(reports.columns) == REPORT_COLUMNS
        assert list(labels.columns) == ["VolumeName", *LABELS]
        assert list(meta.columns) == METADATA_HEADER
        assert list(reports.VolumeName) == list(labels.VolumeName) == list(meta.VolumeName)
        assert set(labels[list(LABELS)].to_numpy().ravel()) <= {0, 1}
        for name in reports.VolumeName:
            m = NAME.match(name)
            assert m and m.group(1) == split
            rel = Path(split) / f"{split}_{m.group(2)}" / f"{split}_{m.group(2)}_{m.group(3)}" / name
            assert (root / rel).is_file()
            seen.add(root / rel)
        # Reconstructions of one scan share the report and the label row.
        scan = reports.VolumeName.str.rsplit("_", n=1).str[0]
        for _, group in reports.groupby(scan):
            assert len(group.drop(columns="VolumeName").drop_duplicates()) == 1
        for _, group in labels.groupby(scan):
            assert len(group.drop(columns="VolumeName").drop_duplicates()) == 1
        assert meta.PatientAge.str.fullmatch(r"\d{3}Y").all() and set(meta.PatientSex) <= {"M", "F"}
        assert set(meta.RescaleIntercept) <= {-1024, -8192} and set(meta.RescaleSlope) == {1}
        # CT-CLIP parses XYSpacing as float(s[1:][:-2].split(",")[0]).
        for s in meta.XYSpacing:
            assert re.fullmatch(r"\[[\d.]+, [\d.]+\]", s)
            assert float(s[1:][:-2].split(",")[0]) == pytest.approx(float(s.strip("[]").split(",")[0]), abs=1e-4)
    assert seen == set(files)
    assert "train:" in summary.describe() and "valid:" in summary.describe()


def test_volumes_are_v1_ints_in_lps_order_matching_metadata(sampled):
    root, summary = sampled
    for split in ("train", "valid"):
        _, _, meta = _read(root, split)
        for row in meta.itertuples():
            m = NAME.match(row.VolumeName)
            img = nib.load(
                root / split / f"{split}_{m.group(2)}" / f"{split}_{m.group(2)}_{m.group(3)}" / row.VolumeName
            )
            assert img.get_data_dtype() == np.int16
            assert np.isnan(img.header["scl_slope"]) or (img.dataobj.slope, img.dataobj.inter) == (1.0, 0.0)
            assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
            assert img.shape == (row.Columns, row.Rows, row.NumberofSlices)
            xy = float(row.XYSpacing[1:][:-2].split(",")[0])
            assert img.header.get_zooms() == pytest.approx((xy, xy, row.ZSpacing), rel=1e-5)
            raw = np.asarray(img.dataobj)
            hu = raw.astype(np.float32) * row.RescaleSlope + row.RescaleIntercept
            assert np.median(hu[:6, :6, :]) == pytest.approx(-1000, abs=40)  # air in the corner
            assert raw.min() >= 0 and hu.min() >= -1024  # stored values are not HU; 12-bit CT range
            assert ((hu > -150) & (hu < 100)).mean() > 0.1  # fat, muscle, heart, liver
            assert ((hu > -950) & (hu < -700)).mean() > 0.03  # aerated lung


def test_reports_agree_with_labels(sampled, conditioned):
    for summary in (sampled[1], conditioned[1]):
        for plan in summary.plans:
            findings, impression = plan.texts["Findings_EN"], plan.texts["Impressions_EN"]
            positive = {lb for lb, v in zip(LABELS, plan.labels) if v}
            for label, pattern in POSITIVE.items():
                described = _positive_sentences(findings, pattern)
                assert bool(described) == (label in positive), (label, plan.scan_id, findings)
            if "Cardiomegaly" not in positive:
                assert any(re.search(r"heart[^.;]*(normal|natural)", x, re.I) for x in _sentences(findings))
            for label, pattern in NEGATIVE.items():
                if label not in positive:
                    assert _negative_sentences(findings, pattern), (label, findings)
            assert (impression == "Thoracic CT examination within normal limits.") == (not positive)
            # Every "series S image I" reference cites a rendered finding's slice inside the volume.
            slices = {f.slice_index + 1 for f in plan.findings if f.slice_index is not None}
            for series, image in SERIES.findall(findings):
                assert int(series) == plan.series
                assert 1 <= int(image) <= plan.acquisition.grid.shape[2] and int(image) in slices
            for f in plan.findings:
                if f.label in ("Lung nodule", "Pleural effusion", "Hiatal hernia"):
                    assert f"{f.size_mm:.0f} mm" in findings
    labels = [p.labels for p in sampled[1].plans]
    assert any(sum(lb) == 0 for lb in labels) or len(labels) < 12  # normal scans occur


def test_labels_csv_matches_source_rows_and_rendered_findings(conditioned):
    root, summary, _ = conditioned
    by_acc = {p.accession: p for p in summary.plans}
    assert set(by_acc) == set(CONDITIONS)
    for split in ("train", "valid"):
        _, labels, _ = _read(root, split)
        for row in labels.itertuples(index=False):
            plan = next(p for p in summary.plans if row.VolumeName.startswith(p.scan_id + "_"))
            assert tuple(row[1:]) == tuple(int(lb in CONDITIONS[plan.accession]) for lb in LABELS)
    normal = _hu(root, by_acc["normal"])
    assert normal.max() < 1300  # no metal, no calcified plaques

    # Pleural effusion: fluid density in the dependent hemithorax at the reported level.
    plan = by_acc["effusion"]
    hu = _hu(root, plan)
    for f in [f for f in plan.findings if f.label == "Pleural effusion"]:
        assert -40 < np.median(_patch(hu, plan, f.centre)) < 60
        assert f"image {f.slice_index + 1}" in plan.texts["Findings_EN"]

    # Emphysema: more lung below -950 HU in the upper half than in the normal scan.
    def low_fraction(p, h):
        lung = _lung_mask(p)
        z = p.acquisition.grid.axes()[2]
        upper = lung & (z > 0.5 * p.anatomy.H)
        return float((h[upper] < -950).mean())

    emph = by_acc["emphysema"]
    normal_fraction = low_fraction(by_acc["normal"], normal)
    assert normal_fraction < 0.01 and low_fraction(emph, _hu(root, emph)) > max(0.03, 10 * normal_fraction)

    # Nodules: dense at the slice the report cites.
    hu = _hu(root, emph)
    for f in [f for f in emph.findings if f.label == "Lung nodule"]:
        k = f.slice_index
        assert f"image {k + 1}" in emph.texts["Findings_EN"]
        floor = -760 if f.kind == "ground-glass" else -560
        assert _patch(hu, emph, f.centre, k=k).max() > floor
        # the cited slice is where the nodule is: far from it, the same in-plane spot is lung again
        far = k + 12 if k + 12 < hu.shape[2] else k - 12
        assert _patch(hu, emph, f.centre, k=far).max() < _patch(hu, emph, f.centre, k=k).max() - 150

    # Pericardial effusion: a fluid rim outside the heart; cardiomegaly: cardiothoracic ratio > 0.5.
    heart = by_acc["heart"]
    hu = _hu(root, heart)
    f = next(f for f in heart.findings if f.label == "Pericardial effusion")
    assert -35 < _patch(hu, heart, f.params["probe"], half=0).mean() < 40
    assert next(f for f in heart.findings if f.label == "Cardiomegaly").params["ctr"] > 0.5
    assert heart.anatomy.cardiothoracic_ratio > 0.5 > by_acc["normal"].anatomy.cardiothoracic_ratio

    # Medical material is metal or a dense catheter; the hernia holds fluid behind the heart.
    dev = by_acc["devices"]
    hu = _hu(root, dev)
    material = next(f for f in dev.findings if f.label == "Medical material")
    assert hu.max() > (400 if material.kind == "central venous catheter" else 1500)
    hernia = next(f for f in dev.findings if f.label == "Hiatal hernia")
    assert -10 < _patch(hu, dev, hernia.centre).mean() < 70

    # Consolidation is soft-tissue dense; lymph nodes are > 10 mm in short axis.
    inf = by_acc["infection"]
    hu = _hu(root, inf)
    for f in [f for f in inf.findings if f.label == "Consolidation"]:
        assert np.median(_patch(hu, inf, f.centre)) > -250
    assert all(f.size_mm > 10 for f in inf.findings if f.label == "Lymphadenopathy")


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = generate_dataset(tmp_path / "a", 4, seed=11, workers=1)
    generate_dataset(tmp_path / "b", 4, seed=11, workers=2)
    generate_dataset(tmp_path / "c", 4, seed=12, workers=1)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 7 + sum(a.volumes.values())  # 6 CSVs + the marker
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    reports_a = (tmp_path / "a" / CSVS["train"][0]).read_text()
    assert reports_a != (tmp_path / "c" / CSVS["train"][0]).read_text()
    vol = files_a[[str(f).endswith(".nii.gz") for f in files_a].index(True)]
    other = tmp_path / "c" / vol
    assert not other.exists() or other.read_bytes() != (tmp_path / "a" / vol).read_bytes()
    # Re-running into an existing dataset replaces it.
    generate_dataset(tmp_path / "a", 2, seed=11, workers=1)
    assert len(list((tmp_path / "a").glob("*/*/*/*.nii.gz"))) < len(files_a) - 7


def test_real_reports_and_labels_are_copied(tmp_path, shared_data):
    csv = shared_data / "ct-rate-manual-labels" / "train.csv"
    real = pd.read_csv(csv, dtype={"AccessionNo": str}).set_index("AccessionNo")
    summary = generate_dataset(
        tmp_path / "ds", 6, seed=2, valid_fraction=0.5, labels_from=csv, reports_from=csv, workers=1
    )
    accessions = {s: {p.accession for p in summary.plans if p.split == s} for s in ("train", "valid")}
    assert not accessions["train"] & accessions["valid"] and len(accessions["train"] | accessions["valid"]) == 6
    for split in ("train", "valid"):
        reports, labels, _ = _read(tmp_path / "ds", split)
        for plan in [p for p in summary.plans if p.split == split]:
            rows = reports.VolumeName.str.startswith(plan.scan_id + "_")
            text = real.loc[plan.accession, "report_text"]
            findings, impression = reports[rows].iloc[0][["Findings_EN", "Impressions_EN"]]
            if '"' in text:
                head, tail = text.split('"', 1)
                assert (findings, impression) == (head.strip(), tail.strip())
            else:
                assert findings == text.strip() and impression
            assert tuple(labels[rows].iloc[0][list(LABELS)]) == tuple(real.loc[plan.accession, list(LABELS)])
    # --reports-from alone takes the labels from the same file.
    alone = generate_dataset(tmp_path / "alone", 2, seed=2, reports_from=csv, workers=1)
    for plan in alone.plans:
        assert plan.labels == tuple(int(v) for v in real.loc[plan.accession, list(LABELS)])


def test_bad_inputs_raise_dataset_errors(tmp_path, shared_data):
    csv = shared_data / "ct-rate-manual-labels" / "train.csv"
    with pytest.raises(DatasetError, match=re.escape(str(csv)) + r".*exceeds the 800"):
        generate_dataset(tmp_path / "x", 801, labels_from=csv)
    df = pd.read_csv(csv)
    broken = tmp_path / "broken.csv"
    df.drop(columns=["Emphysema"]).head(5).to_csv(broken, index=False)
    with pytest.raises(DatasetError, match=re.escape(str(broken)) + r".*'Emphysema'"):
        generate_dataset(tmp_path / "x", 2, labels_from=broken)
    no_text = tmp_path / "no_text.csv"
    df.drop(columns=["report_text"]).to_csv(no_text, index=False)
    with pytest.raises(DatasetError, match=re.escape(str(no_text)) + r".*'report_text'"):
        generate_dataset(tmp_path / "x", 2, reports_from=no_text)
    other = tmp_path / "other.csv"
    df.head(10).to_csv(other, index=False)
    with pytest.raises(DatasetError, match=re.escape(str(other)) + ".*AccessionNo"):
        generate_dataset(tmp_path / "x", 2, labels_from=csv, reports_from=other)
    with pytest.raises(DatasetError, match="cannot read CSV"):
        generate_dataset(tmp_path / "x", 2, labels_from=tmp_path / "missing.csv")
    with pytest.raises(DatasetError, match="--size"):
        generate_dataset(tmp_path / "x", 2, size="huge")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not empty"):
        generate_dataset(tmp_path / "busy", 2)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "x").exists()
