"""Dataset -> model -> embeddings -> index directory (resumable, failure-tolerant).

Volumes are decoded and preprocessed in DataLoader workers (through the preprocessed-tensor
cache) while the main process encodes them. Embeddings are written as float16 shards into
``<out>.partial/`` as the build goes, so a killed build resumes where it stopped
(``--resume``, validated against the partial build's ``build.json``: :mod:`.partial`). Unreadable
volumes go to ``failures.parquet`` and the build carries on. Writers hold the index's lock
(:mod:`.locks`); the output is checked before any encoding (:mod:`hsenet_search.outputs`). The
finished index is assembled by the steps of :mod:`.assembly` (reading the shards block by block, never all
embeddings at once) and published atomically.
"""

from __future__ import annotations

import errno
import filecmp
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hsenet_search.data.cache import PreprocessCache
from hsenet_search.data.cases import Case
from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.labels import LABELS
from hsenet_search.data.resolve import check_report_text
from hsenet_search.devices import resolve_device
from hsenet_search.embedding import EmbeddedBatch, embed_cases, index_form
from hsenet_search.errors import DatasetError, HSENetError, IndexMismatchError, ModelError
from hsenet_search.outputs import OutputKind, check_output

from .assembly import (
    Assembled,
    Previous,
    clear_stale,
    embed_new_reports,
    extend_faiss,
    hubness_banks,
    merge_rows,
    publish,
)
from .compat import check_model_matches
from .locks import IndexLock
from .partial import build_fingerprint, check_resume, record
from .ray_build import RayOptions, embed_stream  # imports Ray only when a Ray build runs
from .shards import ShardWriter
from .store import open_embeddings, open_index_dir, read_failures, read_metadata, read_reports


@dataclass
class BuildConfig:
    """Options of ``index build`` / ``index add``."""

    data: str
    out: str
    model: str | None = None
    split: str = "all"
    factory: str = "IDMap2,Flat"
    batch_size: int = 8
    workers: int = 2
    resume: bool = False
    shard_size: int = 256
    cache_dir: str | None = None
    device: str = "auto"
    overwrite: bool = False
    random_weights: bool = False
    ray: RayOptions | None = None  # run the embedding step on Ray Data (index/ray_build.py)
    report_text: str | None = None  # None: the model's own protocol (model.text_protocol)


@dataclass
class BuildSummary:
    """What a build produced."""

    out: str
    volumes: int
    scans: int
    reports: int
    failures: int
    seconds: float
    encode_seconds: float
    factory: str
    resumed_from: int = 0
    added: int | None = None
    notes: list[str] = field(default_factory=list)
    failure_examples: list[str] = field(default_factory=list)

    @property
    def volumes_per_second(self) -> float:
        return self.volumes / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        if self.added == 0 and not self.failure_examples:
            return f"index {self.out}: nothing new to add ({self.volumes} volumes already indexed); unchanged"
        lines = [
            f"index {self.out}: {self.volumes} volumes ({self.scans} scans), {self.reports} unique reports, "
            f"{self.failures} failures, factory {self.factory}",
            f"{self.seconds:.1f}s total, {self.volumes_per_second:.2f} volumes/s"
            + (f", resumed after {self.resumed_from} volumes" if self.resumed_from else "")
            + (f", {self.added} volumes added" if self.added else ""),
            *self.notes,
        ]
        lines += [f"  failed: {msg}" for msg in self.failure_examples[:5]]
        return "\n".join(lines)


def case_row(case: Case) -> dict:
    """The metadata row of one case (labels as int8 columns, -1 when unknown)."""
    row = {
        "volume_name": case.volume_name,
        "scan_id": case.scan_id,
        "split": case.split,
        "path": str(case.path),
        "findings": case.findings,
        "impression": case.impression,
    }
    labels = case.labels if case.labels is not None else (-1,) * len(LABELS)
    row.update({name: int(v) for name, v in zip(LABELS, labels)})
    return row


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()
    )


def encode_cases(
    model, cases: Sequence[Case], work: Path, *, cfg: BuildConfig, resume: bool, progress: bool = True
) -> tuple[int, float]:
    """Embed the volumes of ``cases`` into shards under ``work``; returns (already done, encode seconds)."""
    writer = ShardWriter(work, kind="volumes", shard_size=cfg.shard_size, resume=resume)
    done = writer.completed_keys()
    failed_path = work / "failures.jsonl"
    failed = (
        {json.loads(x)["volume_name"] for x in failed_path.read_text().splitlines()}
        if (resume and failed_path.exists())
        else set()
    )
    if not resume and failed_path.exists():
        failed_path.unlink()
    todo = [c for c in cases if c.volume_name not in done and c.volume_name not in failed]
    encode_seconds = 0.0
    with _progress() as bar, failed_path.open("a") as failures:
        task = bar.add_task("embedding volumes", total=len(cases), completed=len(cases) - len(todo), visible=progress)
        for batch in _embedded_batches(model, todo, cfg):
            for i, message in batch.failures:
                failures.write(
                    json.dumps({"volume_name": todo[i].volume_name, "path": str(todo[i].path), "error": message}) + "\n"
                )
            failures.flush()
            if batch.indices:
                writer.append(
                    [todo[i].volume_name for i in batch.indices],
                    batch.embeddings,
                    [case_row(todo[i]) for i in batch.indices],
                )
            encode_seconds += batch.seconds
            bar.update(task, advance=len(batch.indices) + len(batch.failures))
        writer.close()
    return len(cases) - len(todo), encode_seconds


def _embedded_batches(model, cases: Sequence[Case], cfg: BuildConfig) -> Iterator[EmbeddedBatch]:
    """Embedded batches in case order: the one road (DataLoader workers and this process's model), or
    the same preparation and encoding on Ray Data with ``cfg.ray``."""
    cache = PreprocessCache(Path(cfg.cache_dir) if cfg.cache_dir else None)
    if cfg.ray is not None:
        yield from embed_stream(model, cases, options=cfg.ray, batch_size=cfg.batch_size, cache=cache)
        return
    yield from embed_cases(
        model, cases, batch_size=cfg.batch_size, workers=cfg.workers, cache=cache, form=index_form(model)
    )


def _read_failures_jsonl(work: Path) -> pd.DataFrame:
    path = work / "failures.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return pd.DataFrame(rows, columns=["volume_name", "path", "error"])


def _failure_examples(failures: pd.DataFrame) -> list[str]:
    return [f"{r.path}: {r.error}" if str(r.path) not in str(r.error) else str(r.error) for r in failures.itertuples()]


def _assemble(
    model,
    model_name: str,
    work: Path,
    out: Path,
    *,
    cfg: BuildConfig,
    source: dict,
    progress: bool,
    previous: Previous | None = None,
) -> BuildSummary:
    """Turn finished shards (plus, for ``add``, the index they extend) into the published index directory."""
    t0 = time.perf_counter()
    new_rows, new_vectors = ShardWriter.read(work, kind="volumes")  # rows in memory, vectors on disk
    failures = _read_failures_jsonl(work)
    if previous is None and len(new_rows) == 0:
        raise DatasetError("no volume could be read; see the failures listed above", cfg.data)
    if previous is not None:
        failures = pd.concat([previous.failures, failures], ignore_index=True)
        if len(new_rows) == 0:
            new_rows = previous.rows.iloc[:0]
    rows = merge_rows(new_rows, previous)
    vol_emb = previous.volume_vectors + new_vectors if previous is not None else new_vectors
    protocol = check_report_text(cfg.report_text or model.text_protocol)
    with _progress() as bar:
        reports, rep_emb, _ = embed_new_reports(model, rows, previous, protocol, work, bar if progress else None)
    trained = (previous.manifest.trained_on or {}) if previous is not None else {}
    old_counts = previous.manifest.counts if previous is not None else {}
    vol_index = extend_faiss(
        vol_emb,
        cfg.factory,
        _load_faiss(previous, "volumes"),
        trained.get("volumes", old_counts.get("volumes", 0)),
        "volume",
    )
    rep_index = extend_faiss(
        rep_emb,
        cfg.factory,
        _load_faiss(previous, "reports"),
        trained.get("reports", old_counts.get("reports", 0)),
        "report",
    )
    banks = hubness_banks(vol_emb, rep_emb, model.bridged)
    parts = Assembled(rows, vol_emb, reports, rep_emb, failures, vol_index, rep_index, banks)
    publish(
        out,
        parts,
        model=model,
        model_name=model_name,
        factory=vol_index.index.factory,
        source=source,
        text_protocol=protocol,
        previous=previous,
    )
    return BuildSummary(
        str(out),
        len(rows),
        int(rows["scan_id"].nunique()),
        len(reports),
        len(failures),
        0.0,
        time.perf_counter() - t0,
        vol_index.index.factory,
        notes=[n for n in (vol_index.note, rep_index.note) if n],
        failure_examples=_failure_examples(failures),
    )


def _load_faiss(previous: Previous | None, kind: str):
    from .faiss_backend import VectorIndex

    return None if previous is None else VectorIndex.load(previous.directory / f"{kind}.faiss", use_gpu=False)


def _source(cfg: BuildConfig) -> dict:
    return {"dataset": str(Path(cfg.data).resolve()), "split": cfg.split}


def check_trained_model(name: str | None, random_weights: bool) -> None:
    """``--model`` must name a trained model (a directory or ``default``); configs need ``random_weights``."""
    from hsenet_search.models.configs import list_models

    if name is None or name == "default" or Path(name).exists() or random_weights:
        return
    if name in list_models():
        raise ModelError(
            f"{name!r} is a model config with random weights, not a trained model: its index "
            "could never be queried; give a model directory or 'default' (random weights are "
            "for tests only, on explicit request)"
        )


@contextmanager
def _disk_errors(work: Path, action: str) -> Iterator[None]:
    """Disk full, quota and permission errors while writing: one line, the partial work kept."""
    try:
        yield
    except OSError as e:  # pyarrow's write errors carry the errno only in their text
        codes = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO)
        code = e.errno if e.errno in codes else next((c for c in codes if os.strerror(c) in str(e)), None)
        if code is None:
            raise
        where = f" ({e.filename})" if e.filename else ""
        raise HSENetError(
            f"{os.strerror(code)} while writing{where}; nothing already written is lost: {action}", work
        ) from e


def build_index(cfg: BuildConfig, model=None, progress: bool = True) -> BuildSummary:
    """Build ``cfg.out`` from the dataset ``cfg.data`` (CT-RATE directory or manifest)."""
    from hsenet_search.models import load_model

    start = time.perf_counter()
    out = Path(cfg.out)
    check_output(out, OutputKind.INDEX, inputs=[cfg.data], overwrite=cfg.overwrite)
    work = out.with_name(out.name + ".partial")
    if model is None:
        check_trained_model(cfg.model, cfg.random_weights)
    with IndexLock(out, "build"), _disk_errors(work, "free space and rerun with --resume"):
        model = (model if model is not None else load_model(cfg.model)).to(resolve_device(cfg.device)).eval()
        cases = open_dataset(cfg.data, split=cfg.split, missing="keep")
        if not cases:
            raise DatasetError(f"no cases in split {cfg.split!r}", cfg.data)
        fingerprint = build_fingerprint(cases, model, dataset=cfg.data, split=cfg.split, factory=cfg.factory)
        clear_stale(out)
        resume = cfg.resume and work.exists()
        if resume:
            check_resume(work, fingerprint)
        else:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            record(work, fingerprint)
        resumed, encode_s = encode_cases(model, cases, work, cfg=cfg, resume=resume, progress=progress)
        model_name = (
            str(Path(cfg.model).resolve()) if cfg.model and Path(cfg.model).exists() else (cfg.model or "default")
        )
        summary = _assemble(model, model_name, work, out, cfg=cfg, source=_source(cfg), progress=progress)
        shutil.rmtree(work, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    summary.encode_seconds = encode_s
    summary.resumed_from = resumed
    return summary


def _new_cases(cases: Sequence[Case], old_rows: pd.DataFrame, index_dir: Path) -> list[Case]:
    """Cases the index does not hold; a different file under an indexed volume name is refused."""
    indexed = dict(zip(old_rows["volume_name"], old_rows["path"]))
    new = []
    for case in cases:
        old_path = indexed.get(case.volume_name)
        if old_path is None:
            new.append(case)
        elif Path(old_path) != Path(case.path) and not (
            Path(old_path).is_file() and Path(case.path).is_file() and filecmp.cmp(old_path, case.path, shallow=False)
        ):
            raise IndexMismatchError(
                f"volume {case.volume_name} is already indexed from {old_path}; "
                f"{case.path} is a different file under the same name (rename it or "
                "rebuild)",
                index_dir,
            )
    return new


def add_to_index(
    index_dir: str | Path,
    data: str,
    *,
    model=None,
    split: str = "all",
    batch_size: int = 8,
    workers: int = 2,
    cache_dir: str | None = None,
    device: str = "auto",
    progress: bool = True,
) -> BuildSummary:
    """Add the cases of ``data`` that the index does not hold yet, encoding only what is new.

    The stored embedding shards, report vectors and FAISS indexes are reused; the FAISS indexes are
    extended in place unless a trained factory has outgrown its training (then retrained, and said so).
    """
    from hsenet_search.models import load_model

    start = time.perf_counter()
    index_dir = Path(index_dir).resolve()
    work = index_dir.with_name(index_dir.name + ".add.partial")
    with IndexLock(index_dir, "add"), _disk_errors(work, "free space and rerun index add"):
        clear_stale(index_dir)
        manifest = open_index_dir(index_dir)
        model = model if model is not None else load_model(manifest.model_path())
        check_model_matches(manifest, model, index_dir)
        model = model.to(resolve_device(device)).eval()
        old_rows = read_metadata(index_dir / "metadata.parquet")
        cases = _new_cases(open_dataset(data, split=split, missing="keep"), old_rows, index_dir)
        if not cases:
            return BuildSummary(
                str(index_dir),
                len(old_rows),
                int(old_rows["scan_id"].nunique()),
                manifest.counts["reports"],
                manifest.counts["failures"],
                time.perf_counter() - start,
                0.0,
                manifest.factory,
                added=0,
            )
        cfg = BuildConfig(
            data=data,
            out=str(index_dir),
            split=split,
            factory=manifest.factory,
            batch_size=batch_size,
            workers=workers,
            cache_dir=cache_dir,
            device=device,
            report_text=manifest.report_text,
        )
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        _, encode_s = encode_cases(model, cases, work, cfg=cfg, resume=False, progress=progress)
        previous = Previous(
            index_dir,
            manifest,
            old_rows,
            open_embeddings(index_dir, "volumes"),
            read_reports(index_dir / "reports.parquet"),
            open_embeddings(index_dir, "reports"),
            read_failures(index_dir / "failures.parquet"),
        )
        source = dict(manifest.source)
        source["added"] = [*source.get("added", []), _source(cfg)]
        summary = _assemble(
            model, manifest.model_name, work, index_dir, cfg=cfg, source=source, progress=progress, previous=previous
        )
        shutil.rmtree(work, ignore_errors=True)
    summary.added = summary.volumes - len(old_rows)
    summary.seconds = time.perf_counter() - start
    summary.encode_seconds = encode_s
    return summary
