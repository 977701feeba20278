"""Fuzzing of NIfTI headers, DICOM tags and CSV rows: every input is either read into a valid volume/case list
or refused with one typed error naming the file, and nothing is written beside it.

Examples are few (``max_examples``) and deadlines off so the suite stays fast on a shared 2-core machine;
one CLI run per family checks the "one line, exit 2" surface for a fuzzed file.
"""

from __future__ import annotations

import math
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hsenet_search.cli.main import main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from input_files import VOXELS, edit_dicom, write_dicom_series, write_nifti

from hsenet_search.data.labels import LABELS
from hsenet_search.data.manifest import read_manifest
from hsenet_search.data.readers import read_volume
from hsenet_search.data.volume import SPACING_RANGE_MM, VolumeWarning
from hsenet_search.errors import DatasetError, VolumeError

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ODD_FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-9, 1e4, 1e38, -1e38, math.nan, math.inf, -math.inf]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)


def assert_valid_volume(volume) -> None:
    """What a reader promises for anything it accepts."""
    assert volume.array.ndim == 3 and min(volume.array.shape) > 1
    assert volume.array.dtype == np.float32 and np.isfinite(volume.array).all()
    assert np.isfinite(volume.affine).all()
    low, high = SPACING_RANGE_MM
    assert all(low <= s <= high for s in volume.spacing)


def assert_one_line_error(error: Exception, path: Path) -> None:
    text = str(error)
    assert text.startswith(f"{path}: ") and "\n" not in text and len(text) < 400


def read_or_refuse(path: Path, folder: Path) -> None:
    before = sorted(p.name for p in folder.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolumeWarning)
        try:
            assert_valid_volume(read_volume(path))
        except VolumeError as error:
            assert_one_line_error(error, path)
    assert sorted(p.name for p in folder.iterdir()) == before


# ----------------------------------------------------------------------------------------------- NIfTI
HEADER_EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("dim"), st.integers(0, 7), st.integers(-2, 32767)),
        st.tuples(st.just("pixdim"), st.integers(0, 7), ODD_FLOATS),
        st.tuples(st.sampled_from(["srow_x", "srow_y", "srow_z"]), st.integers(0, 3), ODD_FLOATS),
        st.tuples(st.sampled_from(["scl_slope", "scl_inter"]), st.none(), ODD_FLOATS),
        st.tuples(st.sampled_from(["sform_code", "qform_code"]), st.none(), st.integers(-1, 5)),
        st.tuples(st.just("datatype"), st.none(), st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 2304])),
        st.tuples(st.just("bitpix"), st.none(), st.sampled_from([0, 8, 16, 24, 32, 64])),
        st.tuples(st.just("vox_offset"), st.none(), st.sampled_from([0.0, 100.0, 352.0, 1e9, math.nan])),
    ),
    max_size=4,
)


def _apply(edits):
    def edit(header) -> None:
        for name, index, value in edits:
            field = np.array(header[name])
            with np.errstate(all="ignore"):
                if index is None:
                    field = np.array(value).astype(field.dtype)
                else:
                    field[index] = value
            header[name] = field

    return edit


@FUZZ
@given(edits=HEADER_EDITS, gz=st.booleans())
def test_fuzzed_nifti_headers_read_or_refuse_in_one_line(edits, gz) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_nifti(folder / ("fuzz.nii.gz" if gz else "fuzz.nii"), _apply(edits))
        read_or_refuse(path, folder)


@FUZZ
@given(data=st.binary(min_size=0, max_size=600), cut=st.integers(0, 3000))
def test_fuzzed_nifti_bytes_read_or_refuse_in_one_line(data, cut) -> None:
    """Random bytes spliced into a real file (header or data), then possibly truncated."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_nifti(folder / "fuzz.nii")
        blob = path.read_bytes()
        path.write_bytes((blob[:cut] + data + blob[cut + len(data) :])[: len(blob) - cut // 7])
        read_or_refuse(path, folder)


# ----------------------------------------------------------------------------------------------- DICOM
DICOM_EDITS = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["RescaleSlope", "RescaleIntercept"]),
            st.sampled_from(["NaN", "inf", "1e38", "0", "-1", "-1e38", "", "2.5"]),
        ),
        st.tuples(st.just("PixelSpacing"), st.sampled_from([[0, 0], ["nan", 1], [1e4, 1e4], [0.5, 0.5], [1]])),
        st.tuples(
            st.just("ImagePositionPatient"),
            st.sampled_from([[0, 0, 0], [0, 0, "nan"], [1, 2], [0, 0, 1e9], [0, 0, 7.5]]),
        ),
        st.tuples(
            st.just("ImageOrientationPatient"),
            st.sampled_from([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0], [0, 1, 0, 1, 0, 0]]),
        ),
        st.tuples(st.sampled_from(["Rows", "Columns"]), st.sampled_from([0, 1, 9, 65535])),
        st.tuples(st.sampled_from(["PixelData", "SeriesInstanceUID", "RescaleSlope"]), st.none()),
    ),
    min_size=1,
    max_size=3,
)


@FUZZ
@given(edits=DICOM_EDITS, which=st.integers(0, 3))
def test_fuzzed_dicom_tags_read_or_refuse_in_one_line(edits, which) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        paths = write_dicom_series(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edit_dicom(paths[which], **dict(edits))
        before = sorted(p.name for p in folder.iterdir())
        try:
            assert_valid_volume(read_volume(folder))
        except VolumeError as error:
            text = str(error)
            named = text.split(": ", 1)[0]
            assert named == str(folder) or named in map(str, paths), text  # the series or one of its files
            assert "\n" not in text
        assert sorted(p.name for p in folder.iterdir()) == before


# ------------------------------------------------------------------------------------------------- CSVs
CELLS = st.one_of(
    st.sampled_from(["0", "1", "0.0", "1.0", "0.7", "", "true", "nan", "-1", "2", "yes"]), st.text(max_size=5)
)
ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["a", "b", "c", "sub/a", "sub/d"]),
            "split": st.sampled_from(["train", "valid", "validation", "", "test"]),
            "label": CELLS,
        }
    ),
    min_size=1,
    max_size=5,
)


@FUZZ
@given(rows=ROWS)
def test_fuzzed_manifest_rows_read_or_refuse_in_one_line(rows) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for sub in ("", "sub"):
            (folder / sub).mkdir(exist_ok=True)
            for stem in ("a", "b", "c", "d"):
                write_nifti(folder / sub / f"{stem}.nii")
        table = pd.DataFrame(
            [
                {
                    "volume_path": f"{r['name']}.nii",
                    "findings": "f",
                    "impression": "i",
                    "split": r["split"],
                    **{label: "0" for label in LABELS},
                    "Emphysema": r["label"],
                }
                for r in rows
            ]
        )
        manifest = folder / "manifest.csv"
        table.to_csv(manifest, index=False)
        before = sorted(str(p) for p in folder.rglob("*"))
        try:
            cases = read_manifest(manifest)
        except DatasetError as error:
            assert_one_line_error(error, manifest)
            assert str(error).split(": ", 1)[1].startswith("row ")
        else:
            names = [c.volume_name for c in cases]
            assert len(names) == len(set(names)) == len(rows)
            assert all(c.labels is not None and set(c.labels) <= {0, 1} for c in cases)
        assert sorted(str(p) for p in folder.rglob("*")) == before


def test_fuzz_surface_through_the_cli(monkeypatch, capsys, tmp_path: Path) -> None:
    """A header the fuzzers produce (NaN pixdim, zero dim) as a user meets it: one line, exit 2."""
    path = write_nifti(tmp_path / "fuzz.nii.gz", _apply([("dim", 2, 0), ("srow_x", 0, math.nan)]), VOXELS)
    monkeypatch.setattr(sys, "argv", ["hsenet-search", "data", "inspect", str(path)])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {path}: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fuzz.nii.gz"]
