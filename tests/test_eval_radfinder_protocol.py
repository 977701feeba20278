"""RadFinder's retrieval dedup modes and rank figures on a hand-made metadata table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hsenet_search.errors import DatasetError
from hsenet_search.eval.radfinder_protocol import radfinder_ranks, read_exclusions, select_rows


def _metadata():
    return pd.DataFrame(
        {
            "volume_name": [
                "valid_1_a_1.nii.gz",
                "valid_1_a_2.nii.gz",
                "valid_2_a_1.nii.gz",
                "valid_3_a_1.nii.gz",
                "valid_3_a_2.nii.gz",
                "valid_4_a_1.nii.gz",
            ],
            "scan_id": ["valid_1_a", "valid_1_a", "valid_2_a", "valid_3_a", "valid_3_a", "valid_4_a"],
            "findings": ["Nodule.", "Nodule.", "Normal  lungs.", "Effusion.", "Effusion.", "Normal lungs."],
            "spacing": [
                [0.8, 0.8, 1.0],
                [0.6, 0.6, 1.0],
                [0.7, 0.7, 1.0],
                [0.9, 0.9, 1.0],
                [0.9, 0.9, 1.0],
                [0.5, 0.5, 1.0],
            ],
        }
    )


def test_dup_all_keeps_every_volume():
    assert len(select_rows(_metadata(), "dup_all")) == 6


def test_first_all_keeps_the_first_volume_of_each_scan():
    assert select_rows(_metadata(), "first_all")["volume_name"].tolist() == [
        "valid_1_a_1.nii.gz",
        "valid_2_a_1.nii.gz",
        "valid_3_a_1.nii.gz",
        "valid_4_a_1.nii.gz",
    ]


def test_smallestdeduptext_takes_the_finest_spacing_then_drops_repeated_findings():
    # scan 1: reconstruction 2 is finer; scan 3: a tie keeps the first; scan 4 repeats scan 2's findings
    assert select_rows(_metadata(), "smallestdeduptext")["volume_name"].tolist() == [
        "valid_1_a_2.nii.gz",
        "valid_2_a_1.nii.gz",
        "valid_3_a_1.nii.gz",
    ]


def test_exclusion_list(tmp_path):
    path = tmp_path / "no_chest.txt"
    path.write_text("# non-chest studies\nvalid_2_a\n\nvalid_3_a_2\n")
    exclude = read_exclusions(path)
    assert exclude == {"valid_2_a", "valid_3_a_2"}
    rows = select_rows(_metadata(), "smallestdeduptext", exclude)
    # scan 2 excluded, so scan 4 (same findings) is now the first of its text
    assert rows["volume_name"].tolist() == ["valid_1_a_2.nii.gz", "valid_3_a_1.nii.gz", "valid_4_a_1.nii.gz"]
    assert "valid_3_a_2.nii.gz" not in select_rows(_metadata(), "dup_all", exclude)["volume_name"].tolist()


def test_unknown_mode_is_a_typed_error():
    with pytest.raises(DatasetError):
        select_rows(_metadata(), "first")


def test_rank_figures_follow_radfinder():
    # 1-based ranks 1, 2, 3, 6 -> 0-based 0, 1, 2, 5: median 1.5 -> floor 1 -> MedR 2; mean 2 -> MeanR 3
    assert radfinder_ranks(np.array([1, 2, 3, 6])) == {"MedR": 2.0, "MeanR": 3.0}
