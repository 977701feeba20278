"""Training data: one (volume, report) pair per scan and epoch, preprocessed in DataLoader workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Compose, RandFlip, RandRotate90, RandScaleIntensity, RandShiftIntensity
from torch.utils.data import Dataset, Sampler

from hsenet_search.data.cache import PreprocessCache
from hsenet_search.data.cases import Case
from hsenet_search.data.depth import DepthBins
from hsenet_search.data.preprocess import Profile, preprocess_case, preprocess_case_geometry
from hsenet_search.data.resolve import resolve_input
from hsenet_search.embedding import SliceRecipe, prepare_slices

AUGMENTATIONS = ("none", "intensity", "official")


@dataclass(frozen=True)
class Scan:
    """A scan: its reconstructions (cases) share one report and one label row."""

    scan_id: str
    cases: tuple[Case, ...]
    text_index: int  # index into the de-duplicated report texts
    labels: tuple[int, ...] | None


def group_scans(cases: Sequence[Case], text_of) -> tuple[list[Scan], list[str]]:
    """Group reconstructions under their scan and de-duplicate report texts (identical texts embedded once)."""
    by_scan: dict[str, list[Case]] = {}
    for case in cases:
        by_scan.setdefault(case.scan_id, []).append(case)
    texts: list[str] = []
    text_ids: dict[str, int] = {}
    scans = []
    for scan_id in sorted(by_scan):
        members = tuple(sorted(by_scan[scan_id], key=lambda c: c.volume_name))
        text = text_of(members[0])
        if text not in text_ids:
            text_ids[text] = len(texts)
            texts.append(text)
        scans.append(Scan(scan_id, members, text_ids[text], members[0].labels))
    return scans, texts


def augmentation(kind: str, seed: int) -> Compose | None:
    """The augmentation chain: intensity jitter, or the official set (adds rot90 in-plane and flips)."""
    if kind == "none":
        return None
    steps = [RandScaleIntensity(factors=0.1, prob=0.5), RandShiftIntensity(offsets=0.1, prob=0.5)]
    if kind == "official":
        steps = (
            [RandRotate90(prob=0.5, spatial_axes=(1, 2))]
            + [RandFlip(prob=0.1, spatial_axis=a) for a in range(3)]
            + steps
        )
    return Compose(steps).set_random_state(seed=seed % (2**32))


class ScanDataset(Dataset):
    """Item ``(position, epoch)`` -> one random reconstruction of the scan, preprocessed and augmented, with
    the slice inputs ``recipe`` asks for (see :mod:`hsenet_search.embedding`; the augmentation, as in the
    official code, touches the volume only) and, when ``snippets`` gives the scan's cited slices
    ``(snippet text index, 0-based stored slice)``, one of them drawn at random with its model depth bin
    (``(text index, bin)``, or None; bins of ``patch_depth`` model voxels, :mod:`hsenet_search.data.depth`).
    """

    def __init__(
        self,
        scans: Sequence[Scan],
        profile: Profile,
        cache: PreprocessCache | None,
        augment: str = "intensity",
        seed: int = 0,
        recipe: SliceRecipe | None = None,
        snippets: Sequence[Sequence[tuple[int, int]]] | None = None,
        patch_depth: int = 1,
    ):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augment!r}; expected one of {AUGMENTATIONS}")
        self.scans = list(scans)
        self.profile = profile
        self.cache = cache
        self.augment = augment
        self.seed = seed
        self.recipe = recipe or SliceRecipe("none")
        self.snippets = snippets
        self.patch_depth = patch_depth

    def __len__(self) -> int:
        return len(self.scans)

    def case_of(self, i: int, epoch: int) -> Case:
        """The reconstruction scan ``i`` shows in ``epoch``."""
        scan = self.scans[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        return scan.cases[int(rng.integers(len(scan.cases)))]

    def __getitem__(self, key: tuple[int, int]) -> tuple:
        i, epoch = key
        scan = self.scans[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        case = resolve_input(scan.cases[int(rng.integers(len(scan.cases)))])
        cited = self.snippets[i] if self.snippets is not None else ()
        target = None
        if cited:
            x, geometry = preprocess_case_geometry(case, self.profile, cache=self.cache)
            text, slice_index = cited[int(rng.integers(len(cited)))]
            depth_bin = DepthBins(geometry, self.patch_depth).bin_of_slice(slice_index)
            target = (text, depth_bin) if depth_bin is not None else None
        else:
            x = preprocess_case(case, self.profile, cache=self.cache)
        chain = augmentation(self.augment, int(rng.integers(2**31)))
        if chain is not None:
            x = np.asarray(chain(x), dtype=np.float32)
        labels = torch.tensor(scan.labels if scan.labels is not None else [-1] * 18, dtype=torch.int64)
        volume = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return volume, scan.text_index, labels, prepare_slices(case, self.recipe), target


def collate_scans(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list, list]:
    """Stack volumes, text indices and labels; slice inputs and snippet targets stay lists (one per item)."""
    volumes, text_idx, labels, slices, targets = zip(*items, strict=True)
    return torch.stack(volumes), torch.tensor(text_idx), torch.stack(labels), list(slices), list(targets)


class EpochOrder(Sampler):
    """Deterministic shuffled order for one epoch, sharded by rank, resumable from a batch offset."""

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        epoch: int,
        batch_size: int,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        per_rank = (n // world_size) // batch_size * batch_size  # drop_last: full batches on every rank
        mine = perm[rank * per_rank : (rank + 1) * per_rank]
        self.keys = [(int(i), epoch) for i in mine[start_batch * batch_size :]]

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def batches_per_epoch(n_scans: int, batch_size: int, world_size: int = 1) -> int:
    """Full batches each rank sees in one epoch."""
    return (n_scans // world_size) // batch_size
