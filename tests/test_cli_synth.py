"""``hsenet-search data synth`` writes exactly what the library generator writes for the same seed."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.synth import generate_dataset


def test_data_synth_cli_equals_the_generator(tmp_path: Path, cli_main) -> None:
    args = ("--n", "3", "--seed", "5", "--valid-fraction", "0.34", "--out", tmp_path / "cli")
    result = cli_main("data", "synth", *args)
    assert result.code == 0, result.err
    generate_dataset(tmp_path / "lib", 3, seed=5, valid_fraction=0.34, size="tiny", workers=1)
    cli_files = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    lib_files = sorted(p.relative_to(tmp_path / "lib") for p in (tmp_path / "lib").rglob("*") if p.is_file())
    assert cli_files == lib_files and any(p.suffix == ".csv" for p in cli_files)
    for rel in cli_files:
        if rel.suffix == ".csv":
            assert (tmp_path / "cli" / rel).read_text() == (tmp_path / "lib" / rel).read_text(), rel
        elif rel.name.endswith(".nii.gz"):
            a, b = nib.load(tmp_path / "cli" / rel), nib.load(tmp_path / "lib" / rel)
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
            np.testing.assert_array_equal(a.affine, b.affine)
    cases = open_dataset(tmp_path / "cli")
    assert len({c.scan_id for c in cases}) == 3 and {c.split for c in cases} == {"train", "valid"}
