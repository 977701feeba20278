"""Parallel decode + preprocess of case volumes for the trainer and the index builder.

Workers of a torch ``DataLoader`` read and preprocess volumes (through the on-disk
``PreprocessCache``) while the main process encodes, so decoding overlaps with the model.
A volume that cannot be read is returned as a failure record instead of raising, so a
batch job can record it and carry on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hsenet_search.errors import HSENetError

from .cache import PreprocessCache
from .cases import Case
from .preprocess import Profile, preprocess_case
from .readers import first_line


@dataclass
class LoadedBatch:
    """Preprocessed tensors of the cases that loaded, and the failures of those that did not."""

    indices: list[int]          # positions in the case list, aligned with ``tensors``
    tensors: torch.Tensor | None  # (B, 1, D, H, W) float32, None when every case failed
    failures: list[tuple[int, str]]  # (position, one-line error)


class VolumeDataset(Dataset):
    """Preprocessed model tensors for a list of cases; errors become ``(index, None, message)``."""

    def __init__(self, cases: Sequence[Case], profile: Profile, cache: PreprocessCache | None = None):
        self.cases = list(cases)
        self.profile = profile
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        case = self.cases[i]
        try:
            x = preprocess_case(case, self.profile, cache=self.cache)
        except HSENetError as exc:
            return i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - a batch job records any decode failure and carries on
            return i, None, f"{case.path}: cannot be read ({type(exc).__name__}: {first_line(exc)})"
        return i, np.ascontiguousarray(x, dtype=np.float32), None


def _collate(items: list[tuple[int, np.ndarray | None, str | None]]) -> LoadedBatch:
    ok = [(i, x) for i, x, _ in items if x is not None]
    failures = [(i, err) for i, x, err in items if x is None]
    tensors = torch.from_numpy(np.stack([x for _, x in ok])) if ok else None
    return LoadedBatch([i for i, _ in ok], tensors, failures)


def iterate_volumes(
    cases: Sequence[Case],
    profile: Profile,
    *,
    batch_size: int = 8,
    workers: int = 2,
    cache: PreprocessCache | None = None,
) -> Iterator[LoadedBatch]:
    """Yield batches of preprocessed volumes in case order, decoding in ``workers`` processes."""
    loader = DataLoader(
        VolumeDataset(cases, profile, cache),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
    yield from loader
