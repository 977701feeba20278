"""One road from an input to an embedding: used by index build and add, every search, ``embed``, ``generate``,
training validation and the bench commands.

``embed_cases(model, cases)`` reads each case (see :func:`hsenet_search.data.resolve.resolve_input`)
in DataLoader workers: the model's preprocessing profile gives the 3D tensor (through the
preprocessed-tensor cache), and a model whose 2E3 tower takes BiomedCLIP features gets them from the
case's precomputed ``<volume>_biomedclip_features.npy`` or, failing that, from the official 2D slice chain
(:mod:`hsenet_search.data.slices`: 32 JPEG slices, BiomedCLIP preprocess) run through the model's BiomedCLIP
trunk in the main process. Our jointly trained slice tower reads the planes of the 3D input inside the model.
A case that cannot be read becomes a failure record and the batch carries on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hsenet_search.data.cache import PreprocessCache
from hsenet_search.data.cases import Case
from hsenet_search.data.preprocess import Profile, preprocess_case
from hsenet_search.data.readers import first_line
from hsenet_search.data.resolve import resolve_input
from hsenet_search.errors import HSENetError, ModelError


@dataclass(frozen=True)
class SliceRecipe:
    """What a worker prepares for the 2E3 tower: nothing (``none``/``planes``), precomputed features only
    (``features``), or precomputed features else preprocessed official slice images (``biomedclip``)."""

    mode: str
    slices: int = 32
    dim: int = 768
    image_size: int = 224
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


def slice_recipe(model, embedding: str | None = None) -> SliceRecipe:
    """The slice inputs ``model`` needs for ``embedding`` (default: its configured embedding)."""
    from hsenet_search.models.slice_tower import biomedclip_image_size

    cfg = model.config
    if "stage2" not in cfg.embedding_towers(embedding) or model.slice_input == "planes":
        return SliceRecipe("none")
    if model.slice_input == "features":
        return SliceRecipe("features", dim=cfg.slice_dim)
    return SliceRecipe(
        "biomedclip",
        dim=cfg.slice_dim,
        image_size=biomedclip_image_size(cfg.slice_vision_cfg),
        mean=tuple(cfg.slice_mean),
        std=tuple(cfg.slice_std),
    )


def prepare_slices(case: Case, recipe: SliceRecipe) -> tuple[str, np.ndarray] | None:
    """``("features", (32, C2d))`` from the case's feature file, ``("images", (32, 3, S, S))`` from the
    official
    2D chain, or None when the model needs neither."""
    from hsenet_search.data.slices import read_features
    from hsenet_search.models.slice_tower import biomedclip_transform
    from hsenet_search.slice_jobs import official_planes, trunk_input

    if recipe.mode == "none":
        return None
    if case.slice_features is not None:
        return "features", read_features(case.slice_features, recipe.slices, recipe.dim)
    if recipe.mode == "features":
        raise ModelError(
            f"{case.path}: this 2E3 model has no BiomedCLIP trunk and the volume has no precomputed "
            "<volume>_biomedclip_features.npy; compute them with a BiomedCLIP checkpoint "
            "(data slice-features) or load the model with a BiomedCLIP checkpoint"
        )
    transform = biomedclip_transform(recipe.image_size, recipe.mean, recipe.std)
    return "images", trunk_input(official_planes(case), transform).numpy()


@dataclass
class Prepared:
    """One case ready for the model."""

    volume: np.ndarray  # (1, D, H, W) float32
    slices: tuple[str, np.ndarray] | None


def prepare_case(case: Case, profile: Profile, recipe: SliceRecipe, cache: PreprocessCache | None = None) -> Prepared:
    """The model inputs of ``case`` (CPU work, safe in a DataLoader worker)."""
    volume = np.ascontiguousarray(preprocess_case(case, profile, cache=cache), dtype=np.float32)
    return Prepared(volume, prepare_slices(case, recipe))


@dataclass
class EmbeddedBatch:
    """Embeddings of the cases that loaded, and the failures of those that did not."""

    indices: list[int]  # positions in the case list, aligned with ``embeddings``
    embeddings: np.ndarray  # (B, E) float32
    failures: list[tuple[int, str]]  # (position, one-line error)
    seconds: float = 0.0  # time spent in the model


def prepare_or_error(
    case: Case, profile: Profile, recipe: SliceRecipe, cache: PreprocessCache | None
) -> tuple[Prepared | None, str | None]:
    """``(prepared, None)``, or ``(None, one-line reason)``: a batch job records the failure and carries on."""
    try:
        return prepare_case(case, profile, recipe, cache), None
    except HSENetError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - any decode failure becomes a failure record
        return None, f"{case.path}: cannot be read ({type(exc).__name__}: {first_line(exc)})"


class _CaseDataset(Dataset):
    def __init__(self, cases: Sequence[Case], profile: Profile, recipe: SliceRecipe, cache: PreprocessCache | None):
        self.cases, self.profile, self.recipe, self.cache = list(cases), profile, recipe, cache

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> tuple[int, Prepared | None, str | None]:
        return (i, *prepare_or_error(self.cases[i], self.profile, self.recipe, self.cache))


def _all_cached(cases: Sequence[Case], profile: Profile, recipe: SliceRecipe, cache: PreprocessCache | None) -> bool:
    """True when every case's tensor is in ``cache`` and no slice images need the 2D chain (stops at
    the first miss, so a cold build pays one ``stat``)."""
    if cache is None or recipe.mode == "images":
        return False
    return all(cache.holds(c.path, profile, c.rescale, c.spacing) for c in cases)


def _collate(items):
    return items


def slice_features_of(model, prepared: Sequence[Prepared]) -> torch.Tensor | None:
    """``(B, 32, C2d)`` slice features of prepared cases (trunk run on those that carry images)."""
    if not prepared or prepared[0].slices is None:
        return None
    out = []
    for item in prepared:
        kind, array = item.slices
        tensor = torch.from_numpy(array)
        out.append(tensor if kind == "features" else model.slice_image_features(tensor).float().cpu())
    return torch.stack(out)


def index_form(model) -> str | None:
    """The volume form an index stores: ``stored`` (``(B, 2E)``, see :mod:`hsenet_search.models.bridge`) for a
    model with a CMKI bank, else the plain embedding (None)."""
    return "stored" if getattr(model, "bridged", False) else None


def volume_dim(model, embedding: str | None = None, form: str | None = None) -> int:
    """Width of the volume vectors :func:`embed_cases` yields for ``embedding`` and ``form``."""
    dim = len(model.config.embedding_towers(embedding)) * model.config.projection_dim
    return 2 * dim if form == "stored" else dim


@torch.no_grad()
def embed_prepared(
    model, prepared: Sequence[Prepared], embedding: str | None = None, form: str | None = None
) -> np.ndarray:
    """``(B, E)`` float32 embeddings of prepared cases (``form``: see ``HSENetCLIP.encode_volume``)."""
    device = next(model.parameters()).device
    volumes = torch.from_numpy(np.stack([p.volume for p in prepared])).to(device)
    feats = slice_features_of(model, prepared)
    feats = None if feats is None else feats.to(device)
    extra = {"form": form} if form else {}
    out = model.encode_volume(volumes, slice_features=feats, embedding=embedding, **extra)
    return out.float().cpu().numpy()


def embed_cases(
    model,
    cases: Sequence[Case | str | Path],
    *,
    batch_size: int = 8,
    workers: int = 2,
    cache: PreprocessCache | None = None,
    embedding: str | None = None,
    form: str | None = None,
) -> Iterator[EmbeddedBatch]:
    """Embed ``cases`` (cases or paths, resolved) in order, ``batch_size`` at a time, decoding in
    ``workers``; ``form`` as in ``HSENetCLIP.encode_volume``."""
    resolved = [resolve_input(c) for c in cases]
    recipe = slice_recipe(model, embedding)
    if workers and _all_cached(resolved, model.profile, recipe, cache):
        workers = 0  # a cache hit is a small read: worker processes would only compete with the encoder
    loader = DataLoader(
        _CaseDataset(resolved, model.profile, recipe, cache),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=2 if workers > 0 else None,
    )
    for items in loader:
        ok = [(i, p) for i, p, _ in items if p is not None]
        failures = [(i, err) for i, p, err in items if p is None]
        dim = volume_dim(model, embedding, form)
        t0 = time.perf_counter()
        emb = np.zeros((0, dim), np.float32)
        if ok:
            emb = embed_prepared(model, [p for _, p in ok], embedding, form)
        yield EmbeddedBatch([i for i, _ in ok], emb, failures, time.perf_counter() - t0)


def embed_input(
    model,
    source: Case | str | Path,
    *,
    cache: PreprocessCache | None = None,
    embedding: str | None = None,
    rescale: tuple[float, float] | None = None,
    form: str | None = None,
) -> np.ndarray:
    """One input (path or case) -> ``(1, E)`` float32; errors are raised. ``rescale`` overrides the case's."""
    case = resolve_input(source)
    if rescale is not None:
        import dataclasses

        case = dataclasses.replace(case, rescale=tuple(rescale))
    prepared = prepare_case(case, model.profile, slice_recipe(model, embedding), cache)
    return embed_prepared(model, [prepared], embedding, form)
