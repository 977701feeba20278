"""Batch jobs of the official 2D slice chain: JPEG slices (``data slices``) and BiomedCLIP slice features
(``data slice-features``) for one volume or a whole dataset.

Volumes are read and sliced in DataLoader workers; a volume that fails is recorded and the job carries on.
Every output file is written whole and renamed into place, so an interrupted job never leaves a partial file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hsenet_search.data.cases import Case, volume_stem
from hsenet_search.data.dataset import load_case_volume, open_dataset
from hsenet_search.data.resolve import resolve_input
from hsenet_search.data.slices import (
    OFFICIAL_CHAIN,
    decoded_jpegs,
    features_path_for,
    official_slices,
    write_slices,
)
from hsenet_search.errors import HSENetError


@dataclass
class JobSummary:
    """What a slice job wrote and what failed."""

    written: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self, what: str) -> str:
        rate = len(self.written) / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{len(self.written)} volume(s) -> {what}, {len(self.failures)} failed, {self.seconds:.1f}s "
            f"({rate:.2f} volumes/s)"
        ]
        return "\n".join(lines + [f"  failed: {m}" for m in self.failures[:5]])


def is_dataset(path: str | Path) -> bool:
    """A CT-RATE directory or a manifest (else a single volume)."""
    from hsenet_search.data import ctrate, manifest

    path = Path(path)
    if path.is_dir():
        return ctrate.find_root(path) is not None or manifest.find_manifest(path) is not None
    return path.suffix.lower() in (".csv", ".parquet", ".pq")


def cases_of(path: str | Path) -> list[Case]:
    """A dataset (CT-RATE directory or manifest) -> its cases; a single volume -> its resolved case."""
    if is_dataset(path):
        return [resolve_input(c) for c in open_dataset(path, "all", missing="keep")]
    return [resolve_input(path)]


def official_planes(case: Case) -> np.ndarray:
    """The case's 32 uint8 slices from the official 2D chain (metadata rescale and spacing apply)."""
    return official_slices(load_case_volume(case), case.spacing, OFFICIAL_CHAIN)


def trunk_input(planes: np.ndarray, transform: Callable) -> torch.Tensor:
    """``(32, 3, S, S)``: each slice JPEG-encoded and decoded as RGB, then BiomedCLIP's preprocess."""
    return torch.stack([transform(img) for img in decoded_jpegs(planes)])


class _Planes(Dataset):
    """Item i -> (i, uint8 slices or None, error or None); ``transform`` turns them into trunk input."""

    def __init__(self, cases: Sequence[Case], transform: Callable | None = None):
        self.cases, self.transform = list(cases), transform

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int):
        case = self.cases[i]
        try:
            planes = official_planes(case)
            return i, (planes if self.transform is None else trunk_input(planes, self.transform)), None
        except HSENetError as exc:
            return i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - a batch job records any failure and carries on
            return i, None, f"{case.path}: {type(exc).__name__}: {exc}"


def _single(items: list):
    return items[0]


def _loader(dataset: Dataset, workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=1,
        shuffle=False,
        num_workers=workers,
        collate_fn=_single,
        prefetch_factor=2 if workers > 0 else None,
    )


def write_case_slices(
    cases: Sequence[Case],
    out: str | Path,
    *,
    per_volume: bool = True,
    workers: int = 0,
    on_progress: Callable[[], None] | None = None,
) -> JobSummary:
    """``out/<volume stem>/slice_000.jpg ...`` per case, or ``out/slice_000.jpg ...`` (``per_volume=False``,
    one case)."""
    import time

    start, out, summary = time.perf_counter(), Path(out), JobSummary()
    for i, planes, error in _loader(_Planes(cases), workers):
        case = cases[i]
        if planes is None:
            summary.failures.append(error)
        else:
            folder = out / volume_stem(Path(case.path).name) if per_volume else out
            write_slices(planes, folder)
            summary.written.append(str(folder))
        if on_progress:
            on_progress()
    summary.seconds = time.perf_counter() - start
    return summary


@dataclass
class BiomedCLIPEncoder:
    """A BiomedCLIP trunk and its preprocess, read from a local open_clip checkpoint directory."""

    trunk: torch.nn.Module
    transform: Callable
    dim: int

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> BiomedCLIPEncoder:
        from hsenet_search.models.slice_tower import (
            biomedclip_image_size,
            biomedclip_transform,
            load_biomedclip_trunk,
        )

        trunk, vision, mean, std = load_biomedclip_trunk(path)
        transform = biomedclip_transform(biomedclip_image_size(vision), mean, std)
        return cls(trunk.to(device).eval(), transform, int(trunk.num_features))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        param = next(self.trunk.parameters())
        return self.trunk(images.to(device=param.device, dtype=param.dtype)).float().cpu().numpy()


def write_slice_features(
    cases: Sequence[Case],
    encoder: BiomedCLIPEncoder,
    out: str | Path | None = None,
    *,
    workers: int = 0,
    on_progress: Callable[[], None] | None = None,
) -> JobSummary:
    """``<volume stem>_biomedclip_features.npy`` ``(32, C)`` float32 per case, beside each volume or in
    ``out``."""
    import time

    start, summary = time.perf_counter(), JobSummary()
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    for i, images, error in _loader(_Planes(cases, encoder.transform), workers):
        if images is None:
            summary.failures.append(error)
        else:
            target = features_path_for(cases[i].path, out)
            tmp = target.with_name(f".{target.name}.tmp")
            with tmp.open("wb") as handle:
                np.save(handle, encoder(images).astype(np.float32))
            os.replace(tmp, target)
            summary.written.append(str(target))
        if on_progress:
            on_progress()
    summary.seconds = time.perf_counter() - start
    return summary
