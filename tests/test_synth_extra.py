"""Never-labelled synthetic abnormalities (``data synth --extra-findings``): opt-in, drawn, reported, never in
the 18-label CSV, ground truth in its own file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hsenet_search.data.labels import label_report
from hsenet_search.data.synth import generate_dataset, plan_dataset
from hsenet_search.data.synth.abnormalities import _Ctx
from hsenet_search.data.synth.extra import _PLANNERS, EXTRA_LABELS, extra_report_text
from hsenet_search.data.synth.generator import render_clean
from hsenet_search.data.synth.scanner import preset


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("extra")
    plain = generate_dataset(root / "plain", 24, seed=21, valid_fraction=0.25, workers=2)
    extra = generate_dataset(root / "extra", 24, seed=21, valid_fraction=0.25, workers=2, extra_findings=True)
    return plain, extra


def test_extra_findings_are_opt_in_and_leave_labels_and_other_scans_unchanged(pair):
    plain, extra = pair
    assert not (plain.out / "extra_findings").exists()
    for split in ("train", "valid"):
        a = pd.read_csv(plain.out / "multi_abnormality_labels" / f"{split}_predicted_labels.csv")
        b = pd.read_csv(extra.out / "multi_abnormality_labels" / f"{split}_predicted_labels.csv")
        pd.testing.assert_frame_equal(a, b)  # the 18-label CSVs are identical
    with_extra = [p for p in extra.plans if any(p.extra)]
    assert with_extra and len(with_extra) < len(extra.plans)
    for p0, p1 in zip(plain.plans, extra.plans, strict=True):
        assert p0.scan_id == p1.scan_id and p0.labels == p1.labels and p0.extra is None
        if not any(p1.extra):
            assert p0.texts == p1.texts
            for recon in p0.acquisition.recons:
                path0, path1 = p0.volume_path(plain.out, recon), p1.volume_path(extra.out, recon)
                assert path0.read_bytes() == path1.read_bytes()
        else:
            assert p1.texts["Findings_EN"].startswith(p0.texts["Findings_EN"])
            assert len(p1.texts["Findings_EN"]) > len(p0.texts["Findings_EN"])


def test_ground_truth_file_lists_every_volume_and_reports_say_what_is_drawn(pair):
    plain, extra = pair
    for split in ("train", "valid"):
        truth = pd.read_csv(extra.out / "extra_findings" / f"{split}_extra_labels.csv")
        assert list(truth.columns) == ["VolumeName", *EXTRA_LABELS]
        expected = {p.volume_name(r): p.extra for p in extra.plans if p.split == split for r in p.acquisition.recons}
        assert dict(zip(truth["VolumeName"], map(tuple, truth[list(EXTRA_LABELS)].to_numpy()))) == expected
    reports = pd.read_csv(extra.out / "radiology_text_reports" / "train_reports.csv").set_index("VolumeName")
    words = {
        "Pneumothorax": "pneumothorax",
        "Lung mass": "mass",
        "Lung cyst": "cyst",
        "Rib fracture": "fracture",
        "Pleural calcification": "pleural plaques",
    }
    for p0, p1 in zip(plain.plans, extra.plans, strict=True):
        if p1.split != "train":
            continue
        written = reports.loc[p1.volume_name(p1.acquisition.recons[0])]["Findings_EN"]
        assert written == p1.texts["Findings_EN"]
        appended = written[len(p0.texts["Findings_EN"]) :].lower()
        for label, v in zip(EXTRA_LABELS, p1.extra):
            assert (words[label] in appended) == bool(v), (label, appended)


def test_extra_sentences_trigger_none_of_the_18_labels():
    plan = plan_dataset(1, seed=4, size=preset("tiny"))[0]
    rng = np.random.default_rng(0)
    ctx = _Ctx(plan.anatomy, plan.acquisition.grid, rng)
    findings = [_PLANNERS[label](ctx) for label in EXTRA_LABELS]
    text, impression = extra_report_text(findings, rng)
    assert not any(label_report(text).values()) and not any(label_report(impression).values()), text


@pytest.mark.parametrize("label", EXTRA_LABELS)
def test_each_finding_is_drawn_where_it_is_reported(label):
    plan = plan_dataset(1, seed=9, size=preset("tiny"))[0]
    anat, grid = plan.anatomy, plan.acquisition.grid
    finding = _PLANNERS[label](_Ctx(anat, grid, np.random.default_rng(1)))
    base = render_clean(anat, [], grid)
    drawn = render_clean(anat, [finding], grid)
    i, j, k = grid.index_of(finding.centre)
    changed = np.abs(drawn - base) > 50
    assert changed.any()
    if label == "Pneumothorax":  # avascular air over the anterior lung, nothing behind it
        assert drawn[changed].mean() < -960 and base[changed].mean() > -920
        _, ys, _ = np.nonzero(changed)
        assert np.median(ys) < drawn.shape[1] / 2  # anterior half (y grows posteriorly)
    elif label == "Lung mass":
        assert drawn[i, j, k] == pytest.approx(38.0, abs=15) and base[i, j, k] < -600
    elif label == "Lung cyst":
        assert drawn[i, j, k] < -980 and changed.sum() > 5
    elif label == "Rib fracture":  # the rib's bone at the fracture site is replaced by soft tissue
        assert base[i, j, k] > 250 and drawn[i, j, k] < 150
    else:
        assert drawn[i, j, k] > 500 and drawn[i, j, k] - base[i, j, k] > 200  # a dense plaque on the pleura
