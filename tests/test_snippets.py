"""Snippet mining: each reference form, what is dropped, and the text a model may see."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsenet_search.data.snippets import kept, mine_snippets, strip_references


@pytest.mark.parametrize(
    ("sentence", "series", "images"),
    [
        ("A 5 mm nodule in the right upper lobe in series 3 image 129.", 3, [129]),
        ("Nodule in the left lower lobe (series 2, image 124).", 2, [124]),
        ("In the right lung, serial: 201 image: 92, a small bulla is seen.", 201, [92]),
        ("Nodule at the segment junction (series 5 section 379) in the left lower lobe.", 5, [379]),
        ("A nodule (in image 18 in series 2) in the right lower lobe.", 2, [18]),
        ("Ground-glass nodules in series 2 images 206 and 286.", 2, [206, 286]),
        ("Consolidation spanning series 4 images 120-126 in the left lower lobe.", 4, [123]),
        ("Subpleural consolidation with irregular contours in image 449, 17 mm.", None, [449]),
    ],
)
def test_reference_forms(sentence, series, images):
    found = mine_snippets(sentence)
    assert [(s.series, s.image) for s in found] == [(series, i) for i in images]
    assert all(s.slice_index == s.image - 1 and not s.dropped for s in found)


@pytest.mark.parametrize(
    "sentence",
    [
        "A 13x9 mm lymph node in the right paratracheal area.",
        "Axial sections, 109 mm was measured as 98 mm before.",
        "In the first 5 thoracic sections there are expansile lesions.",
        "Image 12 mm nodule is not a reference.",
    ],
)
def test_non_references(sentence):
    assert mine_snippets(sentence) == []


def test_a_count_after_a_reference_is_not_an_image():
    found = mine_snippets("There are several serial 2 image 108 and 1-2 nodules up to 5 mm in image 99.")
    assert [(s.series, s.image) for s in found] == [(2, 108), (None, 99)]


def test_positions_and_drops():
    report = (
        "Nodule in series 2 image 40. Mass in series 2 image 90. "
        "Compared with the prior examination, the nodule in series 2 image 30 is stable. Image 0 is odd."
    )
    found = mine_snippets(report, depth=64, spacing_z=1.5)
    by_image = {s.image: s for s in found}
    assert by_image[40].slice_index == 39 and by_image[40].z_mm == pytest.approx(58.5)
    assert by_image[90].dropped == "image 90 is beyond the volume's 64 slices"
    assert by_image[30].dropped == "compares with a prior examination"
    assert by_image[0].dropped == "image 0 does not exist"
    assert [s.image for s in kept(found)] == [40]


def test_text_never_contains_the_answer():
    sentence = "A 4 mm nodule is observed in serial 201 image 11 in the medial middle lobe (series 4, image 124 ML)."
    text = strip_references(sentence)
    assert text == "A 4 mm nodule is observed in the medial middle lobe."
    assert "11" not in text and "124" not in text and "serial" not in text


def test_real_reports_references_are_all_well_formed():
    """Every reference mined from the 800 real reports cites a plausible image and leaves a clean text."""
    from hsenet_search.data.labels import read_reports_csv

    csv = Path(__file__).resolve().parents[1].parent / "shared/data/ct-rate-manual-labels/train.csv"
    assert csv.is_file(), f"shared data missing: {csv}"
    _, _, texts = read_reports_csv(csv)
    found = [s for text in texts for s in mine_snippets(text)]
    assert len(found) >= 20
    for s in found:
        assert 1 <= s.image <= 1000
        assert str(s.image) not in s.text.split()
        assert s.reference.lower() not in s.text.lower()
