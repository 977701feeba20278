"""Simulated acquisition: size presets, the scan grid, reconstructions (kernel blur and noise), v1 storage
and the CT-RATE metadata row of each reconstruction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import ndtri

from ...errors import DatasetError
from .phantom import Anatomy
from .shapes import Grid


@dataclass(frozen=True)
class SizePreset:
    """Matrix, field of view and slice geometry of one output size."""

    name: str
    matrix: int
    fov_mm: tuple[float, float]
    z_spacings: tuple[float, ...]
    slices: tuple[int, int]
    slab_voxels: int  # voxels drawn at a time (bounds memory for large volumes)


PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset("tiny", 128, (360.0, 420.0), (4.0, 4.5, 5.0), (64, 80), 8_000_000),
    "ctrate": SizePreset("ctrate", 512, (340.0, 440.0), (1.0, 1.25, 1.5), (250, 320), 6_000_000),
}


def preset(name: str) -> SizePreset:
    if name not in PRESETS:
        raise DatasetError(f"unknown --size {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# (manufacturer, models, soft kernel, sharp kernel)
_SCANNERS = (
    ("Philips", ("iCT 256", "Ingenuity CT", "Brilliance 64"), "B", "YC"),
    ("SIEMENS", ("SOMATOM Definition Edge", "SOMATOM go.Top", "SOMATOM Force"), "Br40d", "Bl57d"),
    ("GE MEDICAL SYSTEMS", ("Revolution EVO", "Optima CT660"), "STANDARD", "LUNG"),
    ("TOSHIBA", ("Aquilion Prime",), "FC08", "FC52"),
)


@dataclass(frozen=True)
class Recon:
    """One reconstruction of a scan: same grid, its own kernel (blur) and noise."""

    index: int  # 1-based, the ``_<recon>`` of the file name
    kernel: str
    sharp: bool
    blur_mm: float
    noise_hu: float
    noise_mm: float  # in-plane noise correlation length
    description: str


@dataclass(frozen=True)
class Acquisition:
    """Scan-level acquisition: scanner, grid, world placement, storage convention, reconstructions."""

    manufacturer: str
    model: str
    grid: Grid
    world_offset: tuple[float, float, float]  # LPS world = body coordinates + offset
    intercept: int
    recons: tuple[Recon, ...]
    kvp: int
    tube_current: int
    ctdi: float
    study_date: str
    position: str

    def affine(self) -> np.ndarray:
        """RAS affine of the voxel grid; voxel axes run to patient Left, Posterior, Superior."""
        sx, sy, sz = self.grid.spacing
        lps = np.add(self.grid.origin, self.world_offset)
        return np.array(
            [[-sx, 0, 0, -lps[0]], [0, -sy, 0, -lps[1]], [0, 0, sz, lps[2]], [0, 0, 0, 1]], dtype=np.float64
        )


def plan_acquisition(rng: np.random.Generator, anat: Anatomy, size: SizePreset, two_recons: bool) -> Acquisition:
    """Grid covering the thorax from above the apices into the upper abdomen, plus scanner settings."""
    p = anat.patient
    lo, hi = size.fov_mm
    fov = float(np.clip(rng.uniform(lo, hi), 2 * p.half_width + 30.0, None))
    n = size.matrix
    sxy = float(np.round(fov / n, 6))
    sz = float(rng.choice(size.z_spacings))
    length = anat.H + rng.uniform(15, 35) + rng.uniform(50, 100)
    nz = int(np.clip(round(length / sz), *size.slices))
    z_top = anat.H + rng.uniform(15, 35)
    ox, oy = rng.uniform(-8, 8), rng.uniform(-4, 14)
    origin = (-(n - 1) / 2 * sxy - ox, -(n - 1) / 2 * sxy - oy, z_top - (nz - 1) * sz)
    manufacturer, models, soft_k, sharp_k = _SCANNERS[int(rng.choice(len(_SCANNERS), p=[0.5, 0.3, 0.12, 0.08]))]
    size_factor = (p.half_width / 155.0) ** 1.5
    recons = [Recon(1, soft_k, False, 0.9, float(rng.uniform(10, 16) * size_factor), 0.9, "CHEST")]
    if two_recons:
        if rng.random() < 0.7:
            recons.append(Recon(2, sharp_k, True, 0.35, float(rng.uniform(30, 42) * size_factor), 0.5, "LUNG"))
        else:
            recons.append(
                Recon(2, soft_k + " iDose", False, 1.3, float(rng.uniform(6, 9) * size_factor), 1.2, "MEDIASTINUM")
            )
    year = int(rng.integers(2015, 2021))
    return Acquisition(
        manufacturer=manufacturer,
        model=str(rng.choice(models)),
        grid=Grid((n, n, nz), (sxy, sxy, sz), origin),
        world_offset=(float(rng.uniform(-20, 20)), float(rng.uniform(120, 200)), float(rng.uniform(-600, -150))),
        intercept=-8192 if rng.random() < 0.1 else -1024,
        recons=tuple(recons),
        kvp=int(rng.choice([100, 120, 120, 120])),
        tube_current=int(rng.integers(80, 320)),
        ctdi=float(np.round(rng.uniform(3.0, 12.0), 2)),
        study_date=f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        position="FFS" if rng.random() < 0.6 else "HFS",
    )


# Inverse-CDF table: a uniform 16-bit integer indexes an exact standard-normal quantile (tails to +-4.3 sd).
_NORMAL_TABLE = ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 noise by inverse-transform sampling (several times faster than Ziggurat)."""
    return _NORMAL_TABLE[rng.integers(0, 65536, size=shape, dtype=np.uint16)]


def reconstruct(clean: np.ndarray, recon: Recon, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """Kernel blur (in-plane) plus correlated noise, in HU (a new float32 array)."""
    noise = gaussian_noise(rng, clean.shape)
    corr = recon.noise_mm / grid.spacing[0]
    if corr >= 0.45:
        noise = gaussian_filter(noise, (corr, corr, 0))
        noise *= np.float32(recon.noise_hu / _filtered_std(corr))
    else:
        noise *= np.float32(recon.noise_hu)
    sigma = recon.blur_mm / grid.spacing[0]
    noise += gaussian_filter(clean, (sigma, sigma, 0)) if sigma >= 0.45 else clean
    return noise


def _filtered_std(sigma: float) -> float:
    """Standard deviation of unit white noise after a 2D Gaussian filter (scipy's truncation)."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float((k**2).sum())  # variance factor per axis is sum(k^2); two axes multiply, std = sum(k^2)


def to_stored(hu: np.ndarray, intercept: int) -> np.ndarray:
    """v1 storage (slope 1): raw integers with HU = raw + intercept, HU limited to the scanner's 12-bit range
    [-1024, 3071] (so with intercept -1024 the raw values are 0..4095). Overwrites ``hu``."""
    np.clip(hu, -1024.0, 3071.0, out=hu)
    hu -= np.float32(intercept)
    np.rint(hu, out=hu)
    return hu.astype(np.int16)


def _fmt_list(values) -> str:
    return "[" + ", ".join(repr(float(v)) if not float(v).is_integer() else str(int(v)) for v in values) + "]"


def metadata_row(volume_name: str, acq: Acquisition, recon: Recon, sex: str, age: int) -> dict[str, object]:
    """One CT-RATE metadata row (the columns of :data:`..ctrate.METADATA_COLUMNS`) for a reconstruction."""
    g = acq.grid
    sx, sy, sz = g.spacing
    first = np.add(g.origin, acq.world_offset)
    centre = np.add(first, [(g.shape[0] - 1) / 2 * sx, (g.shape[1] - 1) / 2 * sy, (g.shape[2] - 1) / 2 * sz])
    pitch = 0.9 if acq.manufacturer != "Philips" else 0.914
    collim = 0.625 if acq.manufacturer in ("Philips", "GE MEDICAL SYSTEMS") else 0.6
    total = collim * 64
    return {
        "VolumeName": volume_name,
        "Manufacturer": acq.manufacturer,
        "SeriesDescription": recon.description,
        "ManufacturerModelName": acq.model,
        "PatientSex": sex,
        "PatientAge": f"{age:03d}Y",
        "ReconstructionDiameter": round(g.shape[0] * sx, 3),
        "DistanceSourceToDetector": 1040.0 if acq.manufacturer == "Philips" else 1085.6,
        "DistanceSourceToPatient": 570.0 if acq.manufacturer == "Philips" else 595.0,
        "GantryDetectorTilt": 0.0,
        "TableHeight": round(acq.world_offset[1] - 40.0, 1),
        "RotationDirection": "CW",
        "ExposureTime": 500,
        "XRayTubeCurrent": acq.tube_current,
        "Exposure": int(acq.tube_current * 0.5),
        "FilterType": "B" if acq.manufacturer == "Philips" else "FLAT",
        "GeneratorPower": int(acq.kvp * acq.tube_current / 1000 * 1000),
        "FocalSpots": "[1.1, 1.1]" if acq.manufacturer != "SIEMENS" else "[1.2]",
        "ConvolutionKernel": recon.kernel,
        "PatientPosition": acq.position,
        "RevolutionTime": 0.5,
        "SingleCollimationWidth": collim,
        "TotalCollimationWidth": total,
        "TableSpeed": round(total * pitch / 0.5, 3),
        "TableFeedPerRotation": round(total * pitch, 3),
        "SpiralPitchFactor": pitch,
        "DataCollectionCenterPatient": _fmt_list(np.round(centre, 3)),
        "ReconstructionTargetCenterPatient": _fmt_list(np.round(centre, 3)),
        "ExposureModulationType": "DOSE",
        "CTDIvol": acq.ctdi,
        "ImagePositionPatient": _fmt_list(np.round(first, 3)),
        "ImageOrientationPatient": "[1, 0, 0, 0, 1, 0]",
        "SliceLocation": round(float(first[2]), 3),
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": g.shape[1],
        "Columns": g.shape[0],
        "XYSpacing": _fmt_list([sx, sy]),
        "RescaleIntercept": acq.intercept,
        "RescaleSlope": 1,
        "RescaleType": "HU",
        "NumberofSlices": g.shape[2],
        "ZSpacing": sz,
        "StudyDate": acq.study_date,
    }
