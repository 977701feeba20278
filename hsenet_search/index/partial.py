"""Build side: what a partial build (``<out>.partial``) was building, so ``--resume`` continues only that.

A fresh build writes ``build.json`` into its work directory: the dataset, split, a digest of the case
list (names, paths, rescale, spacing, labels), a digest of the report texts, the model fingerprint, the
preprocessing hash and the options that shape the index. ``--resume`` recomputes it and refuses any
difference with one line naming what differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from hsenet_search.atomic import write_json
from hsenet_search.data.cases import Case
from hsenet_search.errors import IndexMismatchError

RECORD = "build.json"
LABELS_OF = {
    "dataset": "dataset",
    "split": "split",
    "cases": "case list",
    "reports": "report text",
    "model_fingerprint": "model",
    "preprocessing_hash": "preprocessing",
    "factory": "--factory",
}


def _digest(items: Sequence[str]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:32]


def build_fingerprint(cases: Sequence[Case], model, *, dataset: str, split: str, factory: str) -> dict:
    """The identity of a build: resuming with anything that changes it would mix two indexes."""
    return {
        "dataset": str(Path(dataset).resolve()),
        "split": split,
        "cases": _digest(
            [f"{c.volume_name}|{c.scan_id}|{c.split}|{c.path}|{c.rescale}|{c.spacing}|{c.labels}" for c in cases]
        ),
        "reports": _digest([c.report for c in cases]),
        "model_fingerprint": model.fingerprint,
        "preprocessing_hash": model.profile.hash,
        "factory": factory,
    }


def record(work: Path, fingerprint: dict) -> None:
    write_json(work / RECORD, fingerprint)


def check_resume(work: Path, fingerprint: dict) -> None:
    """Refuse to resume ``work`` unless it records exactly ``fingerprint``."""
    path = work / RECORD
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise IndexMismatchError(
            "cannot resume: the partial build records no readable build.json; rerun without --resume to start over",
            work,
        ) from e
    differs = [LABELS_OF.get(k, k) for k in fingerprint if not isinstance(old, dict) or old.get(k) != fingerprint[k]]
    if differs:
        raise IndexMismatchError(
            f"cannot resume: the partial build was made with a different "
            f"{', '.join(differs)}; rerun without --resume to start over",
            work,
        )
