"""Every bad input is refused where it enters: one line naming the file and the problem, exit 2, no traceback.

Each case was found by a hostile test of the CLI (issue 16) and is driven through ``main()`` the way a user
meets it (``data inspect``, ``embed volume``, ``index build``), or through the library call that raises the
typed error.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT
from hsenet_search.cli.main import main
from input_files import VOXELS, edit_dicom, set_field, write_dicom_series, write_nifti

from hsenet_search.data import ctrate
from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.preprocess import get_profile, load_profile, preprocess_file
from hsenet_search.data.readers import read_volume
from hsenet_search.data.volume import MEMORY_BUDGET_ENV, VolumeWarning
from hsenet_search.errors import DatasetError, ModelError, VolumeError


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The real entry point in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["hsenet-search", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


def assert_one_line(code: int, out: str, err: str, path: Path, problem: str) -> None:
    assert code == 2 and out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0] and problem in lines[0], lines[0]


def _nifti_cases():
    four_d = np.stack([VOXELS] * 3, axis=-1)
    return [
        ("slope.nii.gz", set_field("scl_slope", 1e38), VOXELS, "NaN/non-finite voxels (after the rescale)"),
        ("zero-spacing.nii.gz", set_field("srow_x", 0.0, 0), VOXELS, "voxel spacing 0 mm on axis 0"),
        ("huge-spacing.nii.gz", set_field("srow_x", 1e4, 0), VOXELS, "voxel spacing 10000 mm on axis 0"),
        ("zero-dim.nii.gz", set_field("dim", 0, 3), VOXELS, "has an empty axis"),
        (
            "nan-affine.nii.gz",
            set_field("srow_y", np.nan, 1),
            VOXELS,
            "non-finite (NaN or infinite) voxel-to",
        ),
        ("flat-affine.nii", set_field("srow_z", 0.0, 2), VOXELS, "voxel spacing 0 mm on axis 2"),
        ("four-d.nii.gz", None, four_d, "is a 4D image"),
    ]


@pytest.mark.parametrize(("name", "edit", "array", "problem"), _nifti_cases())
def test_bad_nifti_header_is_one_line(monkeypatch, capsys, tmp_path: Path, name, edit, array, problem) -> None:
    path = write_nifti(tmp_path / name, edit, array=array)
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", path, "--json")
    assert_one_line(code, out, err, path, problem)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing else written


@pytest.mark.parametrize(
    ("dtype", "problem"),
    [
        (np.complex64, "voxel type complex64"),
        (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "voxel type [('R', 'u1')"),
    ],
)
def test_complex_and_rgb_nifti_are_refused(monkeypatch, capsys, tmp_path: Path, dtype, problem) -> None:
    array = np.zeros(VOXELS.shape, dtype=dtype)
    path = write_nifti(tmp_path / "odd.nii.gz", array=array)
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", path)
    assert_one_line(code, out, err, path, problem)


def test_complex_npy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "volume.npy"
    np.save(path, np.zeros((8, 8, 8), np.complex64))
    with pytest.raises(VolumeError, match="voxel type complex64"):
        read_volume(path)


def test_symlink_loop_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    a.symlink_to(b)
    b.symlink_to(a)
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", a)
    assert_one_line(code, out, err, a, "is a symbolic link loop")


def test_constant_volume_is_a_warning_not_an_error(monkeypatch, capsys, tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "flat.nii.gz", array=np.full(VOXELS.shape, -1000, np.int16))
    with pytest.warns(VolumeWarning, match="flat.nii.gz: volume is constant"):
        read_volume(path)
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", path, "--json")
    assert code == 0 and json.loads(out)["hu"]["min"] == -1000.0
    assert err.strip().splitlines() == [
        f"warning: {path}: volume is constant (-1000 everywhere); its embedding carries no image content"
    ]


def test_ordinary_volume_has_no_warning(tmp_path: Path) -> None:
    import warnings

    path = write_nifti(tmp_path / "ok.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = read_volume(path)
    assert volume.array.shape == VOXELS.shape and np.array_equal(volume.array, VOXELS.astype(np.float32))


# ------------------------------------------------------------------------------------------------ DICOM
def test_dicom_slice_without_pixel_data_is_named(monkeypatch, capsys, tmp_path: Path) -> None:
    paths = write_dicom_series(tmp_path / "series")
    edit_dicom(paths[-1], PixelData=None)
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", tmp_path / "series")
    assert_one_line(code, out, err, paths[-1], "DICOM image slice has no pixel data")


@pytest.mark.parametrize(("slope", "problem"), [("NaN", "slope nan"), ("1e38", "NaN/non-finite voxels")])
def test_dicom_bad_rescale_slope_is_one_line(monkeypatch, capsys, tmp_path: Path, slope, problem) -> None:
    paths = write_dicom_series(tmp_path / "series")
    edit_dicom(paths[1], RescaleSlope=slope)
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", tmp_path / "series")
    assert_one_line(code, out, err, tmp_path / "series", problem)


def test_good_synthetic_dicom_series_reads(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "series", n=4, rows=8, cols=10)
    volume = read_volume(tmp_path / "series")
    assert volume.array.shape == (10, 8, 4) and volume.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert volume.array[0, 0, 0] == -1024.0 and volume.array[1, 0, 3] == 7 + 300 - 1024


def _inspect_as_nobody(paths: list[Path]) -> list[list]:
    """``data inspect`` of each path in a forked child running as user nobody (root reads anything)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            results = []
            for path in paths:
                err = io.StringIO()
                sys.argv = ["hsenet-search", "data", "inspect", str(path)]
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    try:
                        main()
                        code = 0
                    except SystemExit as exc:
                        code = exc.code
                results.append([code, err.getvalue()])
            os.write(write_end, json.dumps(results).encode())
            status = 0
        except BaseException:  # noqa: BLE001 - report the child's failure through the pipe
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        payload = reader.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and payload, payload
    return json.loads(payload)


def run_cli_quietly(path: Path) -> None:
    argv = sys.argv
    sys.argv = ["hsenet-search", "data", "inspect", str(path)]
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            main()
    except SystemExit:
        pass
    finally:
        sys.argv = argv


def test_unreadable_file_and_dicom_folder_are_one_line(monkeypatch, capsys) -> None:
    """Permission problems; as root the reads run in a forked child that drops to user nobody."""
    work = Path(tempfile.mkdtemp(prefix="hsenet-perm-"))
    try:
        work.chmod(0o755)
        volume = write_nifti(work / "locked.nii.gz")
        folder = work / "locked-series"
        write_dicom_series(folder)
        inner = work / "series"
        slices = write_dicom_series(inner)
        targets = [volume, folder, inner]
        for path in targets:  # imports what the command needs now: user nobody cannot read /root's stdlib
            run_cli_quietly(path)
        for path in (volume, folder, slices[2]):
            path.chmod(0o000)
        expected = [volume, folder, slices[2]]
        if os.geteuid() == 0:
            outcomes = _inspect_as_nobody(targets)
        else:
            outcomes = []
            for path in targets:
                code, _, err = run_cli(monkeypatch, capsys, "data", "inspect", path)
                outcomes.append([code, err])
        for (code, err), path in zip(outcomes, expected, strict=True):
            assert_one_line(code, "", err, path, "permission denied")
    finally:
        for path in [work, *work.rglob("*")]:
            path.chmod(0o755)
        shutil.rmtree(work)


# ------------------------------------------------------------------------------------------------- CSVs
def test_duplicate_volume_name_row_is_refused(monkeypatch, capsys, tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "ds")
    reports = ctrate.reports_csv(root, "train")
    frame = pd.read_csv(reports, dtype=str, keep_default_na=False)
    pd.concat([frame, frame.iloc[[1]]]).to_csv(reports, index=False)
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", root, "--json")
    name = frame["VolumeName"].iloc[1]
    assert_one_line(code, out, err, reports, f"row {len(frame) + 2} repeats VolumeName {name} (first on row 3)")


def test_fractional_label_is_refused_with_its_row(monkeypatch, capsys, tmp_path: Path, make_ctrate) -> None:
    root = make_ctrate(tmp_path / "ds")
    labels = ctrate.labels_csv(root, "valid")
    frame = pd.read_csv(labels, dtype=str, keep_default_na=False)
    frame.loc[1, "Emphysema"] = "0.7"
    frame.to_csv(labels, index=False)
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", root, "--json")
    assert_one_line(
        code,
        out,
        err,
        labels,
        "row 3 (VolumeName valid_3_a_2.nii.gz) has a label other than 0/1 (Emphysema='0.7')",
    )


def test_manifest_fractional_label_is_refused(tmp_path: Path) -> None:
    from hsenet_search.data.labels import LABELS

    volume = write_nifti(tmp_path / "a.nii.gz")
    row = {"volume_path": volume.name, "findings": "x", "impression": "y", **{label: "0" for label in LABELS}}
    pd.DataFrame([row | {"Emphysema": "0.7"}]).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(DatasetError, match=r"row 2 has Emphysema='0.7'; labels must be 0 or 1"):
        open_dataset(tmp_path)


def test_manifest_files_with_the_same_name_are_refused(monkeypatch, capsys, tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_nifti(tmp_path / folder / "scan.nii.gz")
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(
        {"volume_path": ["a/scan.nii.gz", "b/scan.nii.gz"], "findings": ["x", "y"], "impression": ["", ""]}
    ).to_csv(manifest, index=False)
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", tmp_path, "--json")
    assert_one_line(code, out, err, manifest, "row 3: volume file name scan.nii.gz is also used on row 2")


# ------------------------------------------------------------------------------- memory and preprocessing
def test_resampled_volume_over_budget_is_refused_before_allocating(monkeypatch, tmp_path: Path) -> None:
    """z spacing x16 on a small file: the resampled grid is checked against the budget, and MONAI's
    "applying transform" wrapper is unwrapped to that one readable error."""
    path = write_nifti(tmp_path / "long.nii.gz", spacing=(1.5, 1.5, 48.0))
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "0.1")
    for profile in ("tiny", "ctclip"):
        with pytest.raises(VolumeError) as info:
            preprocess_file(path, profile)
        message = str(info.value)
        assert message.startswith(f"{path}: resampled volume of shape ") and "over the 0.0 GiB" in message
        assert "applying transform" not in message and "0x" not in message
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "64")
    assert preprocess_file(path, "tiny").shape == (1, 32, 64, 64)


def test_bad_budget_setting_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "ok.nii.gz")
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "lots")
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", path)
    assert (
        code == 2
        and out == ""
        and err.strip().splitlines() == [f"error: {MEMORY_BUDGET_ENV}='lots' is not a number of MiB"]
    )


_PEAK = """
import resource, sys
from hsenet_search.data.preprocess import preprocess_file
from hsenet_search.errors import VolumeError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path, profile in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        preprocess_file(path, profile)
        print("read", path)
    except VolumeError as exc:
        print("error", exc)
print("grew_mib", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def _gzip_bomb(path: Path, inflated_mib: int) -> Path:
    """A valid-looking .nii.gz whose stream inflates to ``inflated_mib`` MiB past its small header's size."""
    head = write_nifti(path.with_suffix(".tmp"), array=VOXELS)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(head.read_bytes())]
    zeros = bytes(2**24)
    parts += [compressor.compress(zeros) for _ in range(inflated_mib // 16)]
    parts.append(compressor.flush())
    head.unlink()
    path.write_bytes(b"".join(parts))
    return path


def test_gzip_bomb_and_huge_resample_stay_small_in_memory(tmp_path: Path) -> None:
    """An 18 MB-class gzip bomb and a 2 MB file whose spacing asks for an 18 GB resampled grid: both fail (or
    read only what the header declares) without the process growing by hundreds of MB."""
    bomb = _gzip_bomb(tmp_path / "bomb.nii.gz", inflated_mib=1024)
    assert bomb.stat().st_size < 2 * 2**20
    huge_header = write_nifti(tmp_path / "huge-dims.nii.gz", set_field("dim", 4096, 3))
    wide = tmp_path / "wide.nii.gz"
    write_nifti(wide, array=np.tile(VOXELS, (5, 6, 7)), spacing=(50.0, 50.0, 1.5))
    assert wide.stat().st_size < 3 * 2**20
    args = [bomb, "tiny", huge_header, "tiny", wide, "hsenet"]
    result = subprocess.run(
        [sys.executable, "-c", _PEAK, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"read {bomb}"  # the declared volume; the 1 GiB of trailing zeros is never inflated
    assert lines[1].startswith(f"error {huge_header}: is truncated")
    assert lines[2].startswith(f"error {wide}: resampled volume of shape ") and "GiB volume budget" in lines[2]
    assert float(lines[3].split()[1]) < 300, lines


def test_header_dims_over_budget_fail_before_inflating(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "giant.nii.gz", lambda h: [set_field("dim", 4096, i)(h) for i in (1, 2, 3)])
    with pytest.raises(VolumeError, match=r"volume of shape \(4096, 4096, 4096\) needs 256.0 GiB"):
        read_volume(path)


def test_preprocessing_hash_error_names_preprocessing_json(tmp_path: Path) -> None:
    path = tmp_path / "preprocessing.json"
    data = get_profile("tiny").to_dict() | {"hash": "0" * 16}
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{path}: preprocessing hash 0000000000000000 does not match")
    path.write_text("{not json")
    with pytest.raises(ModelError, match=r"preprocessing.json: is not valid JSON"):
        load_profile(path)


def test_gzip_cap_reads_only_declared_bytes(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "tail.nii.gz", tail=b"\x01" * 4096)
    volume = read_volume(path)
    assert np.array_equal(volume.array, VOXELS.astype(np.float32))
    with gzip.open(path) as handle:
        assert len(handle.read()) == 352 + VOXELS.nbytes + 4096
