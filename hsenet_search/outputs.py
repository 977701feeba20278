"""The ``--out`` guard: a command never destroys what this tool did not write.

Every command that writes (``index build``, ``data synth``, ``data slices``, ``labels extract``,
``bench ... --out``, ``train --out``) calls :func:`check_output` before doing any work. The output must
be absent (or an empty directory), or something this tool wrote -- an index directory (its
``manifest.json`` parses), a dataset written by ``data synth`` (it holds :data:`DATASET_MARKER`), a model
directory (``config.json`` of our model type), a file with the expected suffix -- and an existing one
is replaced only with ``overwrite``. The output may never be an input, a folder holding an input, a
path inside an input folder, the current directory or one of its parents.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from enum import Enum
from pathlib import Path

from hsenet_search.errors import HSENetError

DATASET_MARKER = ".hsenet-dataset"


class OutputError(HSENetError):
    """An output path would overwrite or delete something this tool did not write."""


class OutputKind(str, Enum):
    INDEX = "index"
    DATASET = "dataset"
    MODEL = "model"
    FILE = "file"


def mark_dataset(directory: str | Path) -> None:
    """Record that ``directory`` is a dataset written by this tool (so it may be overwritten)."""
    from hsenet_search.atomic import write_json

    write_json(Path(directory) / DATASET_MARKER, {"written_by": "hsenet-search data synth"})


def _is_ours(out: Path, kind: OutputKind, suffixes: Sequence[str]) -> bool:
    if kind is OutputKind.FILE:
        return out.is_file() and (not suffixes or out.suffix in suffixes)
    if not out.is_dir():
        return False
    if kind is OutputKind.DATASET:
        return (out / DATASET_MARKER).is_file()
    if kind is OutputKind.INDEX:
        from hsenet_search.index.store import MANIFEST, IndexManifest

        try:
            IndexManifest.from_json((out / MANIFEST).read_text(encoding="utf-8"), out / MANIFEST)
        except (OSError, UnicodeDecodeError, HSENetError):
            return False
        return True
    from hsenet_search.models.io import MODEL_TYPE

    try:
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return (out / "training").is_dir()
    return isinstance(config, dict) and config.get("model_type") == MODEL_TYPE


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_no_overlap(out: str | Path, inputs: Sequence[str | Path] = ()) -> Path:
    """Refuse an output that is the current directory, a parent of it, or inside or around an input."""
    given = Path(out)
    target = given.resolve()
    if _within(Path.cwd().resolve(), target):
        raise OutputError(
            "refusing to write over the current directory or one of its parents; give a new path such as indexes/NAME",
            given,
        )
    for src in inputs:
        src_path = Path(src).resolve()
        if _within(src_path, target) or _within(target, src_path):
            raise OutputError(f"the output overlaps the input {src}; write somewhere else", given)
    return target


def check_output(
    out: str | Path,
    kind: OutputKind | str,
    *,
    inputs: Sequence[str | Path] = (),
    overwrite: bool = False,
    suffixes: Sequence[str] = (),
    replace_ok: bool = False,
) -> Path:
    """Refuse ``out`` unless writing it destroys nothing of the user's; returns ``out`` resolved.

    ``inputs``: files or folders the command reads (never overwritten, never inside or around ``out``).
    ``replace_ok``: an existing output of this tool may be updated without ``overwrite`` (``train``
    continues into its own model directory). Raises :class:`OutputError` (one line) otherwise.
    """
    kind = OutputKind(kind)
    given = Path(out)
    target = check_no_overlap(given, inputs)
    if not os.path.lexists(given):
        return target
    if given.is_dir() and not given.is_symlink() and not any(given.iterdir()):
        return target
    if not _is_ours(given, kind, suffixes):
        what = {
            OutputKind.INDEX: "an index directory (no valid manifest.json)",
            OutputKind.DATASET: f"a dataset written by `data synth` (no {DATASET_MARKER})",
            OutputKind.MODEL: "a model directory written by hsenet-search",
            OutputKind.FILE: f"a {'/'.join(suffixes) or 'regular'} file",
        }[kind]
        raise OutputError(f"exists and is not {what}; refusing to overwrite it (choose a new path)", given)
    if not (overwrite or replace_ok):
        raise OutputError("already exists; pass --overwrite to replace it", given)
    return target
