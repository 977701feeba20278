"""Intra-scan localisation at query time: where in a scan each text is (RadFinder §1.4).

For a scan and texts, the model's localisation head gives one embedding per depth bin (a slab of
``model.depth_patch`` model voxels) and one per text; the profile is ``softmax(cos / τ)`` over the bins
(τ = 0.1, the training temperature), the prediction its argmax, the confidence its maximum. The predicted
bin's centre maps back to the stored file's slices by :mod:`hsenet_search.data.depth`: ``image_number`` is
1-based along the file's third voxel axis (the "series S image I" convention of ``data synth`` reports) and
``z_mm = (image_number − 1) × slice spacing`` from the first slice. A prediction is good to about half a bin
(``bin_mm / 2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hsenet_search.data.cache import PreprocessCache
from hsenet_search.data.cases import Case
from hsenet_search.data.depth import DepthBins, DepthGeometry
from hsenet_search.errors import QueryError
from hsenet_search.models.localisation import LOCALISATION_TAU

MAX_TEXTS = 64
MAX_TEXT_CHARS = 2000


@dataclass
class Location:
    """Where one text is in one scan."""

    text: str
    image_number: int
    z_mm: float
    bin_mm: float
    profile: list[float]
    confidence: float

    @property
    def where(self) -> dict:
        """The short form a search hit carries."""
        return {"image_number": self.image_number, "z_mm": self.z_mm}

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class LocateResult:
    """The locations of several texts in one scan (``volume_name`` and ``geometry``: the volume they were
    found in, for viewers; not part of the JSON)."""

    scan: str
    results: list[Location]
    volume_name: str = ""
    geometry: DepthGeometry | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        return {"scan": self.scan, "results": [r.to_json() for r in self.results]}


def check_texts(texts: Sequence[str]) -> list[str]:
    """The query texts, or a QueryError naming the first bad one."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise QueryError("give at least one text to locate")
    if len(texts) > MAX_TEXTS:
        raise QueryError(f"{len(texts)} texts to locate; the limit is {MAX_TEXTS}")
    for i, text in enumerate(texts, 1):
        if not isinstance(text, str) or not text.strip():
            raise QueryError(f"text {i} to locate is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise QueryError(f"text {i} to locate has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    return texts


def profile_locations(scores: np.ndarray, bins: DepthBins, texts: Sequence[str]) -> list[Location]:
    """Locations from cosine scores ``(texts, bins)`` of one scan."""
    logits = torch.from_numpy(np.asarray(scores, dtype=np.float64)) / LOCALISATION_TAU
    profiles = torch.softmax(logits, dim=-1).numpy()
    out = []
    for text, profile in zip(texts, profiles, strict=True):
        best = int(profile.argmax())
        image = bins.image_number(best)
        out.append(
            Location(
                text,
                image,
                round((image - 1) * bins.geometry.slice_mm, 3),
                round(bins.bin_mm, 3),
                [round(float(p), 6) for p in profile],
                round(float(profile[best]), 6),
            )
        )
    return out


def locate(
    model,
    source: Case | str | Path,
    texts: Sequence[str],
    *,
    scan: str | None = None,
    cache: PreprocessCache | None = None,
) -> LocateResult:
    """Locate ``texts`` in the volume ``source`` (a case, file or DICOM folder) with ``model``'s head."""
    from hsenet_search.data.preprocess import preprocess_case_geometry
    from hsenet_search.data.resolve import resolve_input

    texts = check_texts(texts)
    if not hasattr(model, "require_localisation_head"):
        raise QueryError("this engine was opened for text queries only (parts='text'); it cannot locate")
    model.require_localisation_head()
    case = resolve_input(source)
    x, geometry = preprocess_case_geometry(case, model.profile, cache=cache)
    depths = model.encode_depths(torch.from_numpy(x)[None])[0].float().cpu()
    snippets = model.encode_snippets(texts).float().cpu()
    scores = (snippets @ depths.T).numpy()
    locations = profile_locations(scores, DepthBins(geometry, model.depth_patch), texts)
    return LocateResult(scan or case.scan_id, locations, case.volume_name, geometry)
