"""Shared test helpers: where the real data lives, and a small CT-RATE layout writer."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
REAL_CT_NIFTI = SHARED_DATA / "real-ct" / "example_ct.nii.gz"
REAL_CT_DICOM = SHARED_DATA / "real-ct" / "dicom-series"
MANUAL_LABELS_CSV = SHARED_DATA / "ct-rate-manual-labels" / "train.csv"

# CT-RATE-like voxel geometry: LPS voxel order (affine x and y columns negative), 0.75 x 0.75 x 1.5 mm.
LPS_AFFINE = np.diag([-0.75, -0.75, 1.5, 1.0])


def require_shared(path: Path) -> Path:
    """``path`` under ``../shared``; its absence fails the test (never a skip: CI must not drop these tests)."""
    if not path.exists():
        pytest.fail(f"shared test data not found at {path} (check out ../shared beside the repository)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (a test that needs it fails when it is missing)."""
    return require_shared(SHARED_DATA)


@pytest.fixture(scope="session")
def real_ct_nifti() -> Path:
    return require_shared(REAL_CT_NIFTI)


@pytest.fixture(scope="session")
def real_ct_dicom() -> Path:
    return require_shared(REAL_CT_DICOM)


class CliRun(NamedTuple):
    code: int
    out: str
    err: str

    def one_line_error(self, *needles: str) -> str:
        """Assert exit 2 with exactly one stderr line, ``error: ...`` naming every needle; return it."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert self.code == 2, (self.code, self.out, self.err)
        assert len(lines) == 1 and lines[0].startswith("error:"), self.err
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])
        return lines[0]


@pytest.fixture
def cli_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Callable[..., CliRun]:
    """Run ``hsenet-search ARGS`` through the installed entry point ``main()``, in this process."""
    from hsenet_search.cli.main import main

    def run(*args: object) -> CliRun:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["hsenet-search", *map(str, args)])
        monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run


def chest_hu(shape: tuple[int, int, int] = (24, 20, 12), seed: int = 0) -> np.ndarray:
    """A small int16 HU volume: air around an elliptic body (soft tissue), two lungs and a bright spine."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, shape[0])[:, None, None]
    y = np.linspace(-1, 1, shape[1])[None, :, None]
    z = np.linspace(-1, 1, shape[2])[None, None, :]
    hu = np.full(shape, -1000.0)
    body = np.broadcast_to((x / 0.8) ** 2 + (y / 0.7) ** 2 < 1, shape)
    hu[body] = 40.0
    hu[np.broadcast_to(((np.abs(x) - 0.35) / 0.25) ** 2 + (y / 0.45) ** 2 + (z / 1.2) ** 2 < 1, shape)] = -850.0
    hu[np.broadcast_to((x / 0.15) ** 2 + ((y - 0.5) / 0.15) ** 2 < 1, shape)] = 700.0
    return (hu + rng.normal(0, 10, shape)).round().astype(np.int16)


@pytest.fixture
def make_ctrate() -> Callable[..., Path]:
    """Write a small CT-RATE dataset with the project's CSV writers; returns the dataset root.

    ``make_ctrate(root, fixed=False, scans={"train": {"train_1_a": 2, ...}, "valid": {...}})``: each scan gets
    that many reconstructions. v1 (``fixed=False``) stores ``HU - intercept`` with metadata intercept -1024;
    v2 (``fixed=True``) writes ``<split>_fixed/..._fixed.nii.gz`` holding HU while the metadata still
    says -1024 (which must not be applied). Volume ``i`` holds ``chest_hu(seed=i)``.
    """
    from hsenet_search.data import ctrate
    from hsenet_search.data.labels import LABELS

    def make(
        root: Path,
        *,
        fixed: bool = False,
        scans: dict[str, dict[str, int]] | None = None,
        metadata_spacing: tuple[float, float] | None = (0.75, 1.5),
    ) -> Path:
        scans = scans or {
            "train": {"train_1_a": 2, "train_2_a": 1, "train_10_b": 1},
            "valid": {"valid_3_a": 2},
        }
        seed = 0
        for split, split_scans in scans.items():
            reports, labels, metadata = [], [], []
            for scan, n_recon in split_scans.items():
                for recon in range(1, n_recon + 1):
                    name = f"{scan}_{recon}.nii.gz"
                    hu = chest_hu(seed=seed)
                    stored = hu if fixed else (hu.astype(np.int32) + 1024).astype(np.int16)
                    file_name = f"{scan}_{recon}_fixed.nii.gz" if fixed else name
                    folder = root / (f"{split}_fixed" if fixed else split)
                    path = folder / ctrate.volume_relpath(file_name)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    nib.save(nib.Nifti1Image(stored, LPS_AFFINE), str(path))
                    reports.append(
                        {
                            "VolumeName": name,
                            "Findings_EN": f"Findings of {scan}.",
                            "Impressions_EN": "Not given." if recon == 2 else f"Impression {scan}.",
                        }
                    )
                    labels.append(
                        {
                            "VolumeName": name,
                            **{lab: int((seed + i) % 3 == 0) for i, lab in enumerate(LABELS)},
                        }
                    )
                    row = {"VolumeName": name, "RescaleSlope": 1, "RescaleIntercept": -1024}
                    if metadata_spacing is not None:
                        row |= {
                            "XYSpacing": f"[{metadata_spacing[0]}, {metadata_spacing[0]}]",
                            "ZSpacing": metadata_spacing[1],
                        }
                    metadata.append(row)
                    seed += 1
            ctrate.write_reports_csv(ctrate.reports_csv(root, split), reports)
            ctrate.write_labels_csv(ctrate.labels_csv(root, split), labels)
            ctrate.write_metadata_csv(ctrate.metadata_csv(root, split), metadata)
        return root

    return make
