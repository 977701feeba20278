"""Report snippets that say where they are: "series X image Y" references mined from report sentences.

Radiologists cite the slice a finding is best seen on. RadFinder (spec §1.4) learns intra-scan
localisation from such references; this module extracts them.

Rules (case-insensitive; "series" also matches "serial", "image" also "images", "section(s)", "slice(s)";
an optional colon may follow either word):

- series first: ``series 3 image 129``, ``(series 2, image 124)``, ``serial: 201 image: 92``,
  ``series 5 section 379``;
- image first: ``image 18 in series 2``, ``(in image 170, in series 2)``;
- image alone: ``image 449`` (series unknown);
- several images: ``images 206 and 286`` gives two references; a range ``images 120-125`` (``-``, ``–`` or
  ``to``) gives one reference at its middle image.

A number followed by a unit (``image 12 mm``) or preceded by a date word is not a reference. Each reference
becomes one snippet: the sentence it sits in, and ``text``, the same sentence with every reference removed
(a model trained on snippets must not read the answer). The image number ``I`` maps to the 0-based slice
``I − 1`` along the stored volume's third voxel axis and to ``z_mm = (I − 1) × spacing_z`` from the first
slice: the convention of ``data synth`` reports. For real CT-RATE files this assumes the NIfTI slice order
follows the DICOM instance numbers of the cited series, which could not be checked here.

Dropped (with the reason recorded): image 0; an image beyond the volume's depth (when the volume is known);
a sentence that compares with a prior examination ("previous", "prior", "dated", "compared"), whose image
numbers may belong to the other scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from .labels import split_sentences

_SERIES = r"(?:series|serial)\s*:?\s*(\d{1,4})"
_IMAGE_WORD = r"(?:images?|sections?|slices?)"
_NOT_A_SIZE = r"(?!\s*(?:mm|cm|x|\d|/|\.\d))"
_NUMBER = rf"(\d{{1,4}}){_NOT_A_SIZE}"
# more images: a range ("120-125", "120 to 125") or a list ("206 and 286"), but not a count ("and 1-2 nodules")
_MORE = rf"((?:\s*(?:-|–|to)\s*\d{{1,4}}{_NOT_A_SIZE}|\s*(?:,|and)\s*\d{{1,4}}{_NOT_A_SIZE}(?!\s*[-–]\s*\d))*)"
_IMAGES = rf"{_IMAGE_WORD}\s*:?\s*{_NUMBER}{_MORE}"
_SERIES_FIRST = re.compile(rf"{_SERIES}\s*[,;]?\s*(?:in\s+|on\s+)?{_IMAGES}", re.IGNORECASE)
_IMAGE_FIRST = re.compile(rf"{_IMAGES}\s*[,;]?\s*(?:in|of|on|at)?\s*(?:the\s+)?{_SERIES}", re.IGNORECASE)
_IMAGE_ONLY = re.compile(rf"\b{_IMAGES}", re.IGNORECASE)
_PRIOR = re.compile(r"\b(?:previous|prior|dated|compared|comparison)\b", re.IGNORECASE)
_PARENTHESES = re.compile(r"\([^()]*\)")


@dataclass(frozen=True)
class Snippet:
    """One cited image of one report sentence."""

    sentence: str
    text: str
    series: int | None
    image: int
    reference: str
    slice_index: int | None = None
    z_mm: float | None = None
    dropped: str = ""

    def to_row(self) -> dict:
        return asdict(self)


def _images(first: str, more: str) -> list[int]:
    """The cited image numbers: a list ("206 and 286") or the middle of a range ("120-125")."""
    numbers = [int(first)]
    for sep, value in re.findall(r"\s*(,|and|-|–|to)\s*(\d{1,4})", more):
        if sep in ("-", "–", "to"):
            numbers[-1] = (numbers[-1] + int(value)) // 2
        else:
            numbers.append(int(value))
    return numbers


def _references(sentence: str) -> list[tuple[str, int | None, list[int], tuple[int, int]]]:
    """(matched text, series, images, span) of every reference, series-bearing forms first."""
    found: list[tuple[str, int | None, list[int], tuple[int, int]]] = []

    def free(span: tuple[int, int]) -> bool:
        return all(span[1] <= a or span[0] >= b for _, _, _, (a, b) in found)

    for m in _SERIES_FIRST.finditer(sentence):
        found.append((m.group(0), int(m.group(1)), _images(m.group(2), m.group(3)), m.span()))
    for m in _IMAGE_FIRST.finditer(sentence):
        if free(m.span()):
            found.append((m.group(0), int(m.group(3)), _images(m.group(1), m.group(2)), m.span()))
    for m in _IMAGE_ONLY.finditer(sentence):
        if free(m.span()):
            found.append((m.group(0), None, _images(m.group(1), m.group(2)), m.span()))
    return sorted(found, key=lambda r: r[3])


def strip_references(sentence: str) -> str:
    """The sentence without its slice references: a bracket holding one goes whole, with "in"/"on"/"at"."""
    out = _PARENTHESES.sub(lambda m: " " if _references(m.group(0)) else m.group(0), sentence)
    for matched, *_ in _references(out):
        out = re.sub(rf"(?:\b(?:in|on|at)\s+)?{re.escape(matched)}", " ", out, flags=re.IGNORECASE)
    out = re.sub(r"\s+([,.;])", r"\1", out)
    out = re.sub(r"([,;])(?:\s*[,;])+", r"\1", out)
    return re.sub(r"\s{2,}", " ", out).strip(" ,;")


def mine_snippets(report: str, *, depth: int | None = None, spacing_z: float | None = None) -> list[Snippet]:
    """Every slice reference in ``report``; ``depth``/``spacing_z`` of the stored volume when known."""
    out: list[Snippet] = []
    for sentence in split_sentences(report):
        refs = _references(sentence)
        if not refs:
            continue
        text = strip_references(sentence)
        prior = bool(_PRIOR.search(sentence))
        for matched, series, images, _ in refs:
            for image in images:
                dropped = ""
                if prior:
                    dropped = "compares with a prior examination"
                elif image < 1:
                    dropped = "image 0 does not exist"
                elif depth is not None and image > depth:
                    dropped = f"image {image} is beyond the volume's {depth} slices"
                index = image - 1 if not dropped else None
                z = index * spacing_z if index is not None and spacing_z is not None else None
                out.append(Snippet(sentence, text, series, image, matched.strip(), index, z, dropped))
    return out


def kept(snippets: Iterable[Snippet]) -> list[Snippet]:
    """The snippets that were not dropped."""
    return [s for s in snippets if not s.dropped]


def volume_geometry(case) -> tuple[int | None, float | None]:
    """(depth, z spacing in mm) of a case's stored volume from its header alone (no voxel data read)."""
    import nibabel as nib
    import numpy as np

    path = case.path
    try:
        if path.is_dir():
            depth, spacing = sum(1 for p in path.iterdir() if p.is_file() and not p.name.startswith(".")), None
        elif path.name.lower().endswith(".npy"):
            depth, spacing = int(np.load(path, mmap_mode="r").shape[-1]), None
        else:
            header = nib.load(path).header
            depth, spacing = int(header.get_data_shape()[2]), float(header.get_zooms()[2])
    except (OSError, ValueError, IndexError, nib.filebasedimages.ImageFileError):
        return None, None
    if case.spacing is not None:
        spacing = float(case.spacing[2])
    return depth, spacing


def dataset_snippets(cases) -> list[dict]:
    """Snippet rows (with ``volume_name`` and ``scan_id``) for every case of a dataset."""
    rows: list[dict] = []
    for case in cases:
        depth, spacing = volume_geometry(case)
        for snippet in mine_snippets(case.report, depth=depth, spacing_z=spacing):
            rows.append({"volume_name": case.volume_name, "scan_id": case.scan_id, **snippet.to_row()})
    return rows
