"""Synthetic CT-RATE dataset generation: planning (patients, splits, labels, findings, reports), rendering in
parallel, and writing the exact CT-RATE layout (v1 volumes + reports, labels and metadata CSVs)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ...errors import DatasetError
from ...outputs import DATASET_MARKER, mark_dataset
from ..cases import SPLITS
from ..ctrate import (
    labels_csv,
    metadata_csv,
    reports_csv,
    volume_relpath,
    write_labels_csv,
    write_metadata_csv,
    write_reports_csv,
)
from ..labels import LABELS
from .abnormalities import Finding, airway_style, draw_findings, plan_findings
from .extra import EXTRA_LABELS, draw_extra_findings, extra_report_text, plan_extra_findings
from .phantom import (
    Anatomy,
    build_anatomy,
    draw_body,
    draw_bones,
    draw_great_vessels_and_airways,
    draw_heart,
    draw_lung_trees,
    sample_patient,
)
from .reports import clinical_information, compose_findings, compose_impression, technique
from .scanner import (
    Acquisition,
    Recon,
    SizePreset,
    metadata_row,
    plan_acquisition,
    preset,
    reconstruct,
    to_stored,
)
from .shapes import Grid
from .sources import SourceRow, load_sources, sample_labels, split_report

EXTRA_DIR = "extra_findings"  # <split>_extra_labels.csv: ground truth of the never-labelled findings (opt-in)
_DATASET_ENTRIES = ("train", "valid", "radiology_text_reports", "multi_abnormality_labels", "metadata")
_DATASET_ENTRIES += (EXTRA_DIR,)
SECOND_SCAN_RATE = 0.08  # share of scans that are a patient's follow-up scan "b"
TWO_RECON_RATE = 0.25  # share of scans with a second reconstruction


@dataclass
class ScanPlan:
    """Everything needed to write one scan: ids, labels, anatomy, acquisition, findings and report text."""

    index: int
    split: str
    patient_id: int
    letter: str
    labels: tuple[int, ...]
    anatomy: Anatomy
    acquisition: Acquisition
    findings: list[Finding]
    texts: dict[str, str]
    noise_key: tuple[int, ...]
    series: int  # series number cited by the generated report ("series S image I")
    accession: str | None = None
    extra: tuple[int, ...] | None = None  # never-labelled findings (0/1 per EXTRA_LABELS); None: not planned

    @property
    def scan_id(self) -> str:
        return f"{self.split}_{self.patient_id}_{self.letter}"

    def volume_name(self, recon: Recon) -> str:
        return f"{self.scan_id}_{recon.index}.nii.gz"

    def volume_path(self, root: Path, recon: Recon) -> Path:
        return root / self.split / volume_relpath(self.volume_name(recon))


@dataclass
class SynthSummary:
    """What :func:`generate_dataset` wrote."""

    out: Path
    size: str
    source: str
    scans: dict[str, int]
    volumes: dict[str, int]
    patients: dict[str, int]
    prevalence: dict[str, float]
    normal_fraction: float
    seconds: float
    plans: list[ScanPlan] = field(default_factory=list, repr=False)

    def describe(self) -> str:
        """A short human summary (printed by the CLI)."""
        lines = [
            f"Synthetic CT-RATE dataset ({self.size}, labels {self.source}) written to {self.out}"
            f" in {self.seconds:.1f} s"
        ]
        for split in SPLITS:
            lines.append(
                f"  {split}: {self.patients[split]} patients, {self.scans[split]} scans, {self.volumes[split]} volumes"
            )
        top = sorted(self.prevalence.items(), key=lambda kv: -kv[1])[:5]
        lines.append(
            f"  normal scans {self.normal_fraction:.0%}; most prevalent: " + ", ".join(f"{k} {v:.0%}" for k, v in top)
        )
        extra = [p.extra for p in self.plans if p.extra is not None]
        if extra:
            counts = np.sum(extra, axis=0)
            listed = ", ".join(f"{name} {int(c)}" for name, c in zip(EXTRA_LABELS, counts))
            lines.append(f"  never-labelled findings (scans, in extra_findings/): {listed}")
        return "\n".join(lines)


# ---- planning ------------------------------------------------------------------------------------
def _group_patients(n: int, rng: np.random.Generator) -> list[list[int]]:
    """Consecutive scans grouped into patients: mostly one scan, a few with a follow-up scan."""
    patients: list[list[int]] = []
    for i in range(n):
        if patients and len(patients[-1]) == 1 and rng.random() < SECOND_SCAN_RATE:
            patients[-1].append(i)
        else:
            patients.append([i])
    return patients


def _split_patients(patients: list[list[int]], valid_fraction: float, rng: np.random.Generator) -> list[str]:
    """Split per patient so that about ``valid_fraction`` of the scans are in valid."""
    n = sum(len(p) for p in patients)
    target = int(round(n * valid_fraction))
    split = ["train"] * len(patients)
    count = 0
    for j in rng.permutation(len(patients)):
        if count >= target:
            break
        split[int(j)] = "valid"
        count += len(patients[int(j)])
    return split


@dataclass(frozen=True)
class ScanSpec:
    """Identity of one scan before planning: ids, its patient and its conditioning row."""

    index: int
    split: str
    patient_id: int
    letter: str
    patient_index: int
    row: SourceRow | None


def plan_specs(
    n: int,
    *,
    seed: int = 0,
    valid_fraction: float = 0.2,
    sources: Sequence[SourceRow] | None = None,
    source_name: str = "",
) -> list[ScanSpec]:
    """Patients, splits and conditioning rows of ``n`` scans (deterministic for ``seed``)."""
    master = np.random.default_rng([seed, 0])
    rows: list[SourceRow | None] = [None] * n
    if sources is not None:
        if n > len(sources):
            raise DatasetError(f"--n {n} exceeds the {len(sources)} report rows available", source_name)
        rows = [sources[int(i)] for i in master.permutation(len(sources))[:n]]
    patients = _group_patients(n, master)
    splits = _split_patients(patients, valid_fraction, master)
    next_id = {s: 1 for s in SPLITS}
    specs: list[ScanSpec] = []
    for pi, (scans, split) in enumerate(zip(patients, splits)):
        pid = next_id[split]
        next_id[split] += 1
        specs.extend(ScanSpec(i, split, pid, letter, pi, rows[i]) for letter, i in zip("abcdefgh", scans))
    return sorted(specs, key=lambda sp: (SPLITS.index(sp.split), sp.patient_id, sp.letter))


def plan_dataset(
    n: int,
    *,
    seed: int = 0,
    valid_fraction: float = 0.2,
    sources: Sequence[SourceRow] | None = None,
    size: SizePreset,
    source_name: str = "",
) -> list[ScanPlan]:
    """Plan ``n`` scans (deterministic for ``seed``); ``sources`` rows condition labels and report text."""
    specs = plan_specs(n, seed=seed, valid_fraction=valid_fraction, sources=sources, source_name=source_name)
    return [plan_scan(spec, seed, size) for spec in specs]


def plan_scan(spec: ScanSpec, seed: int, size: SizePreset, extra_findings: bool = False) -> ScanPlan:
    """Labels, anatomy, acquisition, findings and report text of one scan (``extra_findings``: also the
    never-labelled abnormalities of :mod:`.extra`, from their own random stream)."""
    i, row = spec.index, spec.row
    patient = sample_patient(np.random.default_rng([seed, 2, spec.patient_index]))
    rng = np.random.default_rng([seed, 1, i])
    labels = row.labels if row is not None else sample_labels(rng, patient.age)
    positive = [lb for lb, v in zip(LABELS, labels) if v]
    fluid = float(np.round(rng.uniform(5, 16))) if "Pericardial effusion" in positive else 0.0
    anat = build_anatomy(patient, rng, cardiomegaly="Cardiomegaly" in positive, pericardial_fluid=fluid)
    acq = plan_acquisition(rng, anat, size, two_recons=rng.random() < TWO_RECON_RATE)
    findings = plan_findings(positive, anat, acq.grid, rng)
    series = int(rng.choice([2, 3, 4, 5, 6]))
    generated = compose_findings(findings, rng, series)
    impression = compose_impression(findings, rng, series)
    if row is not None and row.report_text is not None:
        real_findings, real_impression = split_report(row.report_text)
        generated = real_findings or "Not given."
        impression = real_impression if real_impression else impression
    extra = None
    if extra_findings:
        extra_rng = np.random.default_rng([seed, 9, i])
        extra, planned = plan_extra_findings(anat, acq.grid, extra_rng, findings)
        findings = findings + planned
        more_findings, more_impression = extra_report_text(planned, extra_rng)
        generated = " ".join(t for t in (generated, more_findings) if t)
        impression = " ".join(t for t in (impression, more_impression) if t)
    texts = {
        "ClinicalInformation_EN": clinical_information(rng, positive),
        "Technique_EN": technique(rng, acq.grid.spacing[2]),
        "Findings_EN": generated,
        "Impressions_EN": impression,
    }
    return ScanPlan(
        i,
        spec.split,
        spec.patient_id,
        spec.letter,
        tuple(labels),
        anat,
        acq,
        findings,
        texts,
        (seed, 3, i),
        series,
        row.accession if row is not None else None,
        extra,
    )


# ---- rendering -----------------------------------------------------------------------------------
def render_clean(anat: Anatomy, findings: Sequence[Finding], grid: Grid) -> np.ndarray:
    """Noise-free HU of the scan (or of a slab of it) with every finding drawn."""
    scene = draw_body(anat, grid)
    draw_findings(scene, findings, "parenchyma")
    draw_lung_trees(scene, airway_style(findings))
    draw_findings(scene, findings, "lung")
    draw_extra_findings(scene, findings, "lung")
    draw_heart(scene)
    draw_findings(scene, findings, "mediastinum")
    draw_great_vessels_and_airways(scene)
    draw_findings(scene, findings, "vessel walls")
    draw_bones(scene)
    draw_extra_findings(scene, findings, "bones")
    draw_findings(scene, findings, "devices")
    return scene.hu


def render_scan(plan: ScanPlan, slab_voxels: int = 8_000_000) -> list[np.ndarray]:
    """The stored (v1, int16) arrays of every reconstruction of a scan, drawn slab by slab."""
    acq = plan.acquisition
    g = acq.grid
    outs = [np.empty(g.shape, dtype=np.int16) for _ in acq.recons]
    outside_fov = _outside_fov(g)
    per = max(1, slab_voxels // (g.shape[0] * g.shape[1]))
    for si, k0 in enumerate(range(0, g.shape[2], per)):
        k1 = min(g.shape[2], k0 + per)
        slab = g.slab(k0, k1)
        clean = render_clean(plan.anatomy, plan.findings, slab)
        for recon, out in zip(acq.recons, outs):
            rng = np.random.default_rng([*plan.noise_key, recon.index, si])
            hu = reconstruct(clean, recon, slab, rng)
            hu[outside_fov] = -1024.0  # outside the circular reconstruction field of view
            out[:, :, k0:k1] = to_stored(hu, acq.intercept)
    return outs


def _outside_fov(g: Grid) -> np.ndarray:
    """In-plane mask of the matrix corners outside the inscribed reconstruction circle."""
    i = np.arange(g.shape[0]) - (g.shape[0] - 1) / 2
    j = np.arange(g.shape[1]) - (g.shape[1] - 1) / 2
    return (i[:, None] ** 2 + j[None, :] ** 2) > (min(g.shape[:2]) / 2) ** 2


def write_nifti(path: Path, raw: np.ndarray, affine: np.ndarray) -> None:
    """int16 ``.nii.gz`` with identity header scaling (the rescale lives in the metadata CSV, as in CT-RATE v1).

    The gzip stream uses run-length deflate (as fast as level 1 at about half the time, same size) and a zero
    timestamp, so the same data always gives the same bytes."""
    img = nib.Nifti1Image(raw, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    data = img.to_bytes()
    comp = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_RLE)
    body = comp.compress(data) + comp.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"  # gzip, deflate, no name, mtime 0, fastest, any OS
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + body + trailer)


def _build_scan(job: tuple[ScanSpec, int, SizePreset, str, bool]) -> ScanPlan:
    """Plan one scan and write its reconstructions (runs in a worker process)."""
    spec, seed, size, root, extra = job
    plan = plan_scan(spec, seed, size, extra)
    for recon, raw in zip(plan.acquisition.recons, render_scan(plan, size.slab_voxels)):
        write_nifti(plan.volume_path(Path(root), recon), raw, plan.acquisition.affine())
    return plan


# ---- writing -------------------------------------------------------------------------------------
def _write_csvs(root: Path, plans: Sequence[ScanPlan]) -> None:
    """The reports, labels and metadata CSVs of each split, through the CT-RATE writers."""
    for split in SPLITS:
        reports, labels, meta = [], [], []
        for p in plans:
            if p.split != split:
                continue
            for recon in p.acquisition.recons:
                name = p.volume_name(recon)
                reports.append({"VolumeName": name, **p.texts})
                labels.append({"VolumeName": name, **dict(zip(LABELS, p.labels))})
                meta.append(metadata_row(name, p.acquisition, recon, p.anatomy.patient.sex, p.anatomy.patient.age))
        write_reports_csv(reports_csv(root, split), reports)
        write_labels_csv(labels_csv(root, split), labels)
        write_metadata_csv(metadata_csv(root, split), meta)
        (root / split).mkdir(parents=True, exist_ok=True)
        if any(p.extra is not None for p in plans):
            split_plans = [p for p in plans if p.split == split]
            _write_extra_csv(root / EXTRA_DIR / f"{split}_extra_labels.csv", split_plans)


def _write_extra_csv(path: Path, plans: Sequence[ScanPlan]) -> None:
    """``VolumeName`` + one 0/1 column per never-labelled finding, one row per volume."""
    import pandas as pd

    rows = [
        {"VolumeName": p.volume_name(recon), **dict(zip(EXTRA_LABELS, p.extra))}
        for p in plans
        for recon in p.acquisition.recons
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["VolumeName", *EXTRA_LABELS]).to_csv(path, index=False)


def _check_output(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise DatasetError("output path exists and is not a directory", out)
        foreign = sorted(p.name for p in out.iterdir() if p.name not in (*_DATASET_ENTRIES, DATASET_MARKER))
        if foreign:
            raise DatasetError(
                f"output directory is not empty and is not a CT-RATE dataset (found {foreign[0]!r})", out
            )


def _install(tmp: Path, out: Path) -> None:
    """Replace the dataset entries of ``out`` with the freshly written ones."""
    out.mkdir(parents=True, exist_ok=True)
    for name in _DATASET_ENTRIES:
        if (out / name).exists():
            shutil.rmtree(out / name)
        if (tmp / name).exists():
            os.replace(tmp / name, out / name)
    mark_dataset(out)
    shutil.rmtree(tmp)


def _build_all(
    specs: Sequence[ScanSpec],
    seed: int,
    size: SizePreset,
    root: Path,
    workers: int,
    progress: bool,
    extra_findings: bool = False,
) -> list[ScanPlan]:
    """Plan and write every scan, in ``workers`` processes; returns the plans in ``specs`` order."""
    jobs = [(spec, seed, size, str(root), extra_findings) for spec in specs]
    plans: list[ScanPlan] = []
    # Worker processes are forked before any progress-bar thread starts.
    pool = None
    if workers > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(workers)
    results = pool.imap_unordered(_build_scan, jobs) if pool is not None else map(_build_scan, jobs)
    bar = None
    try:
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            bar = Progress(
                "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
            )
            bar.start()
            task = bar.add_task("synthesising scans", total=len(jobs))
        for plan in results:
            plans.append(plan)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
        if pool is not None:
            pool.terminate()
            pool.join()
    order = {spec.index: k for k, spec in enumerate(specs)}
    return sorted(plans, key=lambda p: order[p.index])


def generate_dataset(
    out: Path,
    n: int,
    *,
    seed: int = 0,
    valid_fraction: float = 0.2,
    labels_from: Path | None = None,
    reports_from: Path | None = None,
    size: str = "tiny",
    progress: bool = False,
    workers: int | None = None,
    extra_findings: bool = False,
) -> SynthSummary:
    """Write a synthetic CT-RATE dataset of ``n`` scans to ``out`` (deterministic for ``seed``).

    ``labels_from`` conditions each scan's labels on a row of a labels CSV (``AccessionNo, <18 labels>``);
    ``reports_from`` also takes that row's real ``report_text``. ``workers`` defaults to the CPU count;
    the output does not depend on it. ``extra_findings`` adds the never-labelled abnormalities of
    :mod:`.extra` to images and reports (labels CSVs unchanged; ground truth in ``extra_findings/``)."""
    start = time.perf_counter()
    out = Path(out)
    if n < 1:
        raise DatasetError(f"--n must be at least 1 (got {n})")
    if not 0.0 <= valid_fraction <= 1.0:
        raise DatasetError(f"--valid-fraction must lie in [0, 1] (got {valid_fraction})")
    size_preset = preset(size)
    sources = load_sources(Path(labels_from) if labels_from else None, Path(reports_from) if reports_from else None)
    source_name = str(labels_from or reports_from or "")
    _check_output(out)
    specs = plan_specs(n, seed=seed, valid_fraction=valid_fraction, sources=sources, source_name=source_name)
    workers = min(workers or os.cpu_count() or 1, len(specs))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.synth-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        plans = _build_all(specs, seed, size_preset, tmp, workers, progress, extra_findings)
        _write_csvs(tmp, plans)
        _install(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return _summarise(out, size, source_name or "sampled (CT-RATE-like prevalence)", plans, time.perf_counter() - start)


def _summarise(out: Path, size: str, source: str, plans: list[ScanPlan], seconds: float) -> SynthSummary:
    scans = {s: sum(p.split == s for p in plans) for s in SPLITS}
    volumes = {s: sum(len(p.acquisition.recons) for p in plans if p.split == s) for s in SPLITS}
    patients = {s: len({p.patient_id for p in plans if p.split == s}) for s in SPLITS}
    matrix = np.array([p.labels for p in plans], dtype=float)
    prevalence = dict(zip(LABELS, (float(v) for v in matrix.mean(axis=0))))
    normal = float((matrix.sum(axis=1) == 0).mean())
    return SynthSummary(out, size, source, scans, volumes, patients, prevalence, normal, seconds, plans)
