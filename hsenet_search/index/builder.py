"""Dataset -> model -> embeddings -> index directory (resumable, failure-tolerant).

Volumes are decoded and preprocessed in DataLoader workers (through the preprocessed-tensor
cache) while the main process encodes them. Embeddings are written as float16 shards into
``<out>.partial/`` as the build goes, so a killed build resumes where it stopped
(``--resume``). Unreadable volumes go to ``failures.parquet`` and the build carries on. The
finished index is assembled in a temporary directory and renamed into place atomically.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hsenet_search.data.cache import PreprocessCache
from hsenet_search.data.dataset import Case, open_dataset
from hsenet_search.data.labels import LABELS
from hsenet_search.data.resolve import check_report_text, report_text
from hsenet_search.embedding import embed_cases
from hsenet_search.errors import DatasetError, IndexMismatchError

from .store import (
    FORMAT_VERSION,
    IndexManifest,
    ShardWriter,
    atomic_directory,
    deduplicate_reports,
    open_index_dir,
    read_embeddings,
    read_failures,
    read_metadata,
    write_embeddings,
    write_failures,
    write_metadata,
    write_reports,
)

HUBNESS_BETA = 20.0


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
    failure_examples: list[str] = field(default_factory=list)

    @property
    def volumes_per_second(self) -> float:
        return self.volumes / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        lines = [
            f"index {self.out}: {self.volumes} volumes ({self.scans} scans), {self.reports} unique reports, "
            f"{self.failures} failures, factory {self.factory}",
            f"{self.seconds:.1f}s total, {self.volumes_per_second:.2f} volumes/s"
            + (f", resumed after {self.resumed_from} volumes" if self.resumed_from else ""),
        ]
        lines += [f"  failed: {msg}" for msg in self.failure_examples[:5]]
        return "\n".join(lines)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn())


def encode_cases(model, cases: Sequence[Case], work: Path, *, cfg: BuildConfig, resume: bool,
                 progress: bool = True) -> tuple[int, float]:
    """Embed the volumes of ``cases`` into shards under ``work``; returns (already done, encode seconds)."""
    writer = ShardWriter(work, kind="volumes", shard_size=cfg.shard_size, resume=resume)
    done = writer.completed_keys()
    failed_path = work / "failures.jsonl"
    failed = {json.loads(x)["volume_name"] for x in failed_path.read_text().splitlines()} if (
        resume and failed_path.exists()) else set()
    if not resume and failed_path.exists():
        failed_path.unlink()
    todo = [c for c in cases if c.volume_name not in done and c.volume_name not in failed]
    cache = PreprocessCache(Path(cfg.cache_dir) if cfg.cache_dir else None)
    encode_seconds = 0.0
    with _progress() as bar, failed_path.open("a") as failures:
        task = bar.add_task("embedding volumes", total=len(cases), completed=len(cases) - len(todo),
                            visible=progress)
        t0 = time.perf_counter()
        for batch in embed_cases(model, todo, batch_size=cfg.batch_size, workers=cfg.workers, cache=cache):
            for i, message in batch.failures:
                failures.write(json.dumps({"volume_name": todo[i].volume_name, "path": str(todo[i].path),
                                           "error": message}) + "\n")
                failures.flush()
            if batch.indices:
                writer.append([todo[i].volume_name for i in batch.indices], batch.embeddings,
                              [case_row(todo[i]) for i in batch.indices])
            bar.update(task, advance=len(batch.indices) + len(batch.failures))
        encode_seconds = time.perf_counter() - t0
        writer.close()
    return len(cases) - len(todo), encode_seconds


def _read_failures_jsonl(work: Path) -> pd.DataFrame:
    path = work / "failures.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return pd.DataFrame(rows, columns=["volume_name", "path", "error"])


def _assemble(model, model_name: str, work: Path, out: Path, *, cfg: BuildConfig, source: dict, progress: bool,
              previous: tuple[pd.DataFrame, np.ndarray, pd.DataFrame] | None = None) -> BuildSummary:
    """Turn finished shards (plus an existing index's rows, for ``add``) into the final index directory."""
    from .faiss_backend import VectorIndex  # imported here: encoding volumes needs no FAISS
    from .hubness import gallery_normalizer

    t0 = time.perf_counter()
    rows, vol_emb = ShardWriter.read_all(work, kind="volumes")
    failures = _read_failures_jsonl(work)
    if previous is not None:
        old_rows, old_emb, old_failures = previous
        keep = ~rows["volume_name"].isin(old_rows["volume_name"])
        rows = pd.concat([old_rows.drop(columns=["row_id", "report_id"], errors="ignore"), rows[keep]],
                         ignore_index=True)
        vol_emb = np.concatenate([old_emb, vol_emb[keep.to_numpy()]])
        failures = pd.concat([old_failures, failures], ignore_index=True)
    if len(rows) == 0:
        raise DatasetError("no volume could be read; see the failures listed above", cfg.data)
    rows = rows.reset_index(drop=True)
    rows.insert(0, "row_id", np.arange(len(rows), dtype=np.int64))
    protocol = check_report_text(cfg.report_text or model.text_protocol)
    texts = [report_text(f, i, protocol) for f, i in zip(rows["findings"].fillna(""), rows["impression"].fillna(""),
                                                         strict=True)]
    report_id, unique_texts = deduplicate_reports(texts)
    rows["report_id"] = report_id
    with _progress() as bar:
        task = bar.add_task("embedding reports", total=len(unique_texts), visible=progress)
        chunks = []
        for i in range(0, len(unique_texts), 64):
            batch = unique_texts[i:i + 64]
            with torch.no_grad():
                chunks.append(model.encode_text(batch).float().cpu().numpy())
            bar.update(task, advance=len(batch))
    rep_emb = np.concatenate(chunks).astype(np.float32)
    vol_emb = vol_emb.astype(np.float32)
    reports = pd.DataFrame({"report_id": np.arange(len(unique_texts), dtype=np.int64), "text": unique_texts})
    vol_index = VectorIndex.build(vol_emb, rows["row_id"].to_numpy(), cfg.factory)
    rep_index = VectorIndex.build(rep_emb, reports["report_id"].to_numpy(), cfg.factory)
    hub_text = gallery_normalizer(rep_emb, vol_emb, HUBNESS_BETA)     # bank of text queries over volumes
    hub_volume = gallery_normalizer(vol_emb, rep_emb, HUBNESS_BETA)   # bank of volume queries over reports
    with atomic_directory(out) as tmp:
        write_embeddings(tmp, "volumes", vol_emb)
        write_embeddings(tmp, "reports", rep_emb)
        write_metadata(tmp / "metadata.parquet", rows)
        write_reports(tmp / "reports.parquet", reports)
        write_failures(tmp / "failures.parquet", failures)
        vol_index.save(tmp / "volumes.faiss")
        rep_index.save(tmp / "reports.faiss")
        (tmp / "hubness").mkdir()
        hub_text.save(tmp / "hubness" / "text_to_volumes.npz")
        hub_volume.save(tmp / "hubness" / "volumes_to_reports.npz")
        manifest = IndexManifest(
            format_version=FORMAT_VERSION,
            model_fingerprint=model.fingerprint,
            model_name=model_name,
            preprocessing_hash=model.profile.hash,
            preprocessing=model.profile.to_dict(),
            embedding=model.config.embedding,
            dims={"volumes": int(vol_emb.shape[1]), "reports": int(rep_emb.shape[1])},
            metric="inner_product",
            factory=cfg.factory,
            counts={"volumes": len(rows), "scans": int(rows["scan_id"].nunique()),
                    "reports": len(reports), "failures": len(failures)},
            source=source,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            hubness={"beta": HUBNESS_BETA, "method": hub_text.method},
            report_text=protocol,
        )
        manifest.write(tmp)
    return BuildSummary(str(out), len(rows), int(rows["scan_id"].nunique()), len(reports), len(failures),
                        0.0, time.perf_counter() - t0, cfg.factory,
                        failure_examples=[f"{r.path}: {r.error}" if str(r.path) not in str(r.error) else str(r.error)
                                          for r in failures.itertuples()])


def _source(cfg: BuildConfig) -> dict:
    return {"dataset": str(Path(cfg.data).resolve()), "split": cfg.split}


def build_index(cfg: BuildConfig, model=None, progress: bool = True) -> BuildSummary:
    """Build ``cfg.out`` from the dataset ``cfg.data`` (CT-RATE directory or manifest)."""
    from hsenet_search.models import load_model

    start = time.perf_counter()
    model = model if model is not None else load_model(cfg.model)
    model = model.to(_device(cfg.device)).eval()
    cases = open_dataset(cfg.data, split=cfg.split, missing="keep")
    if not cases:
        raise DatasetError(f"no cases in split {cfg.split!r}", cfg.data)
    out = Path(cfg.out)
    work = out.with_name(out.name + ".partial")
    if not cfg.resume and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    _check_work_model(work, model, resume=cfg.resume)
    resumed, encode_s = encode_cases(model, cases, work, cfg=cfg, resume=cfg.resume, progress=progress)
    model_name = str(Path(cfg.model).resolve()) if cfg.model and Path(cfg.model).exists() else (cfg.model or "default")
    summary = _assemble(model, model_name, work, out, cfg=cfg, source=_source(cfg), progress=progress)
    shutil.rmtree(work, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    summary.encode_seconds = encode_s
    summary.resumed_from = resumed
    return summary


def add_to_index(index_dir: str | Path, data: str, *, model=None, split: str = "all", batch_size: int = 8,
                 workers: int = 2, cache_dir: str | None = None, progress: bool = True) -> BuildSummary:
    """Append the cases of ``data`` that the index does not hold yet (same model, same factory)."""
    from hsenet_search.models import load_model

    start = time.perf_counter()
    index_dir = Path(index_dir)
    manifest = open_index_dir(index_dir)
    model = model if model is not None else load_model(manifest.model_path())
    check_model_matches(manifest, model, index_dir)
    cfg = BuildConfig(data=data, out=str(index_dir), split=split, factory=manifest.factory,
                      batch_size=batch_size, workers=workers, cache_dir=cache_dir, report_text=manifest.report_text)
    old_rows = read_metadata(index_dir / "metadata.parquet")
    cases = [c for c in open_dataset(data, split=split, missing="keep") if c.volume_name not in set(old_rows["volume_name"])]
    work = index_dir.with_name(index_dir.name + ".add.partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _, encode_s = encode_cases(model, cases, work, cfg=cfg, resume=False, progress=progress)
    previous = (old_rows, read_embeddings(index_dir, "volumes"), read_failures(index_dir / "failures.parquet"))
    source = dict(manifest.source)
    source.setdefault("added", []).append(_source(cfg))
    summary = _assemble(model, manifest.model_name, work, index_dir, cfg=cfg, source=source, progress=progress,
                        previous=previous)
    shutil.rmtree(work, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    summary.encode_seconds = encode_s
    return summary


def check_model_matches(manifest: IndexManifest, model, index_dir: Path) -> None:
    """Refuse a model whose fingerprint, preprocessing hash or embedding size differs from the index's."""
    if model.fingerprint != manifest.model_fingerprint:
        raise IndexMismatchError(
            f"model fingerprint {model.fingerprint[:12]} does not match the index's "
            f"{manifest.model_fingerprint[:12]} (built with {manifest.model_name}); use the same model or rebuild",
            index_dir)
    if model.profile.hash != manifest.preprocessing_hash:
        raise IndexMismatchError(
            f"preprocessing {model.profile.hash} differs from the index's {manifest.preprocessing_hash}", index_dir)
    if model.embedding_dim != manifest.dims["volumes"]:
        raise IndexMismatchError(
            f"model embedding size {model.embedding_dim} differs from the index's {manifest.dims['volumes']}",
            index_dir)


def _check_work_model(work: Path, model, resume: bool) -> None:
    """A resumed build must use the model that wrote its shards."""
    stamp = work / "model.json"
    info = {"fingerprint": model.fingerprint, "preprocessing_hash": model.profile.hash}
    if resume and stamp.exists():
        old = json.loads(stamp.read_text())
        if old != info:
            raise IndexMismatchError("cannot resume: the partial build was made with another model", work)
    stamp.write_text(json.dumps(info))
