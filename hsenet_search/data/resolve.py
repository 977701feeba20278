"""One resolver from any input to a :class:`Case`, and the report-text protocols.

``resolve_input`` accepts a :class:`Case` (a dataset or manifest row, already resolved), a volume inside a
CT-RATE layout (``<root>/<split>/<pid>/<scan>/<name>.nii.gz``: read through the same dataset reader as
``index build``, so its metadata rescale *and* metadata spacing apply), or a loose NIfTI file, DICOM series
folder or ``.npy`` (already HU, header spacing). The returned case also names its precomputed BiomedCLIP slice
features (``<stem>_biomedclip_features.npy`` beside the volume or in ``features_dir``) when they exist.

Report text (``REPORT_TEXTS``): ``findings`` (CT-RATE ``Findings_EN``, the official HSENet protocol),
``impression`` or ``findings+impression`` (joined by one space; falls back to the other part when one
is empty).
Every text tower cleans the text as the official code does (``"`` ``'`` ``(`` ``)`` removed). A report longer
than the text tower's token budget is head-truncated by the tokenizer at inference; the official training code
instead keeps the first sentence and then random further sentences until the budget is used
(:func:`truncate_sentences`, offered as a training option).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable
from pathlib import Path

from hsenet_search.errors import DatasetError

from .cases import Case, scan_id_of
from .report_text import join_report

REPORT_TEXTS = ("findings", "impression", "findings+impression")


def resolve_input(source: str | Path | Case, *, features_dir: str | Path | None = None) -> Case:
    """The case description of ``source`` (see the module docstring)."""
    from .slices import features_path_for  # here: the report-text protocols need no image code

    case = source if isinstance(source, Case) else _case_for_path(Path(source))
    if case.slice_features is None:
        found = features_path_for(case.path, features_dir)
        if found.is_file():
            case = dataclasses.replace(case, slice_features=found)
    return case


def _case_for_path(path: Path) -> Case:
    found = _ctrate_case(path)
    if found is not None:
        return found
    name = path.name
    return Case(
        volume_name=name,
        scan_id=scan_id_of(name),
        split="query",
        path=path,
        findings="",
        impression="",
        labels=None,
        rescale=None,
        spacing=None,
    )


def _ctrate_case(path: Path) -> Case | None:
    """The dataset reader's case for a file inside a CT-RATE layout, else None."""
    from .ctrate import find_root

    path = path.resolve()
    if not path.is_file() or len(path.parents) < 4:
        return None
    root = find_root(path.parents[3])
    if root is None:
        return None
    split_dir = path.parents[2].name.removesuffix("_fixed")
    if split_dir not in ("train", "valid"):
        return None
    cases = _split_cases(root, split_dir, _stamp(root))
    return cases.get(str(path))


def _stamp(root: Path) -> tuple:
    """Modification times of the CSV folders: a changed dataset is read again."""
    return tuple(p.stat().st_mtime_ns for p in sorted(root.iterdir()) if p.is_dir())


@functools.lru_cache(maxsize=8)
def _split_cases(root: Path, split: str, stamp: tuple) -> dict[str, Case]:
    from .ctrate import read_ctrate

    try:
        cases = read_ctrate(root, splits=(split,), missing="skip")
    except DatasetError:
        return {}
    return {str(Path(c.path).resolve()): c for c in cases}


# ---------------------------------------------------------------------------------------------- report text
def check_report_text(protocol: str) -> str:
    if protocol not in REPORT_TEXTS:
        raise DatasetError(f"unknown report text {protocol!r}; expected one of {', '.join(REPORT_TEXTS)}")
    return protocol


def report_text(findings: str, impression: str, protocol: str) -> str:
    """The text a model embeds for a report under ``protocol`` (see the module docstring)."""
    findings, impression = (findings or "").strip(), (impression or "").strip()
    check_report_text(protocol)
    if protocol == "findings":
        text = findings or impression
    elif protocol == "impression":
        text = impression or findings
    else:
        text = join_report(findings, impression)
    return text


def case_text(case: Case, protocol: str) -> str:
    """``report_text`` of a case."""
    return report_text(case.findings, case.impression, protocol)


def truncate_sentences(text: str, count_tokens: Callable[[str], int], budget: int, rng: random.Random) -> str:
    """The official training truncation: a text over ``budget`` tokens keeps its first ``.``-sentence, then
    randomly chosen further sentences (in their original order) while they fit."""
    if count_tokens(text) <= budget:
        return text
    sentences = [s.strip() for s in text.split(".") if s.strip()]
    kept = [0]
    used = count_tokens(sentences[0] + ".")
    for i in rng.sample(range(1, len(sentences)), len(sentences) - 1):
        cost = count_tokens(sentences[i] + ".")
        if used + cost <= budget:
            kept.append(i)
            used += cost
    return " ".join(sentences[i] + "." for i in sorted(kept))
