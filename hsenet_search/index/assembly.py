"""Build side: the named steps that turn encoded volume shards into a published index directory.

``index build`` (single-process and ``--ray``) and ``index add`` share them. No step holds all the
embeddings: vectors are :class:`~.store.EmbeddingShards` (the build's float16 shards, the previous index's
``embeddings/*.npy``, the new report vectors' file) read a block at a time.

1. :func:`merge_rows` -- previous rows (for ``add``) then the new ones, ``row_id`` assigned in order;
2. :func:`embed_new_reports` -- unique report texts; only texts the previous index lacks are encoded,
   straight into a file of the work directory;
3. :func:`extend_faiss` -- the previous FAISS index extended with the new vectors when the factory
   allows it, or a new one built (trained on a sample, filled block by block, search defaults tuned);
4. :func:`hubness_banks` -- querybank-normalisation statistics over the whole gallery (a bank of at most
   :data:`HUBNESS_BANK` query rows);
5. :func:`publish` -- every file written into a temporary directory (embeddings streamed block by block),
   the manifest last, renamed into place.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hsenet_search.atomic import atomic_directory
from hsenet_search.data.resolve import report_text
from hsenet_search.errors import IndexFormatError
from hsenet_search.models.bridge import bridged_of_stored, text_query_on_stored

from .factories import build_tuned, unit_blocks
from .faiss_backend import VectorIndex
from .hubness import HubnessNormalizer, gallery_normalizer
from .store import (
    FORMAT_VERSION,
    EmbeddingShards,
    IndexManifest,
    deduplicate_reports,
    npy_writer,
    open_index_dir,
    write_embeddings,
    write_failures,
    write_metadata,
    write_reports,
)

HUBNESS_BETA = 20.0
HUBNESS_BANK = 1 << 16
"""Most query rows in a hubness bank: more are sampled uniformly (bounded memory and time per gallery item)."""
NEW_REPORTS = "new_reports.npy"
RETRAIN_GROWTH = 2.0
"""A trained FAISS index (IVF, PQ) is retrained when the vectors it holds exceed this many times the
number it was trained on; below that the new vectors are added to the trained index."""
REPORT_BATCH = 64


@dataclass
class Previous:
    """What ``index add`` reuses from the index it extends."""

    directory: Path
    manifest: IndexManifest
    rows: pd.DataFrame
    volume_vectors: EmbeddingShards
    reports: pd.DataFrame
    report_vectors: EmbeddingShards
    failures: pd.DataFrame


@dataclass
class FaissResult:
    index: VectorIndex
    trained_on: int
    note: str = ""


def merge_rows(new_rows: pd.DataFrame, previous: Previous | None) -> pd.DataFrame:
    """Previous rows then ``new_rows``, with ``row_id`` 0..N-1 (the FAISS ids)."""
    rows = new_rows.drop(columns=["row_id", "report_id"], errors="ignore")
    if previous is not None:
        rows = pd.concat([previous.rows.drop(columns=["row_id", "report_id"]), rows], ignore_index=True)
    rows = rows.reset_index(drop=True)
    rows.insert(0, "row_id", np.arange(len(rows), dtype=np.int64))
    return rows


def report_texts(rows: pd.DataFrame, protocol: str) -> list[str]:
    """The embedded text of each row under the report-text ``protocol`` (see ``data.resolve.REPORT_TEXTS``)."""
    return [
        report_text(f, i, protocol)
        for f, i in zip(rows["findings"].fillna(""), rows["impression"].fillna(""), strict=True)
    ]


def _encode_texts(model, texts: list[str], path: Path, progress) -> EmbeddingShards:
    """Encode ``texts`` batch by batch straight into the float32 file ``path`` (nothing held whole)."""
    task = progress.add_task("embedding reports", total=len(texts)) if progress is not None else None
    with npy_writer(path, len(texts), model.embedding_dim, "<f4") as append:
        for i in range(0, len(texts), REPORT_BATCH):
            batch = texts[i : i + REPORT_BATCH]
            with torch.no_grad():
                append(model.encode_text(batch).float().cpu().numpy())
            if task is not None:
                progress.update(task, advance=len(batch))
    return EmbeddingShards([path], "reports")


def embed_new_reports(
    model, rows: pd.DataFrame, previous: Previous | None, protocol: str, work: Path, progress=None
) -> tuple[pd.DataFrame, EmbeddingShards, int]:
    """Set ``rows["report_id"]``; returns (reports table, report vectors, number of texts encoded now).

    Report ids follow first appearance over all rows, so the ids of the previous index stay valid and
    only texts it lacks are encoded (into ``work/new_reports.npy``; the previous ones stay in its shards).
    """
    report_id, unique = deduplicate_reports(report_texts(rows, protocol))
    rows["report_id"] = report_id
    known = 0
    if previous is not None:
        known = len(previous.reports)
        if unique[:known] != previous.reports["text"].tolist():
            raise IndexFormatError(
                "reports.parquet does not match the report texts of metadata.parquet", previous.directory
            )
    new = _encode_texts(model, unique[known:], work / NEW_REPORTS, progress)
    vectors = previous.report_vectors + new if previous is not None else new
    reports = pd.DataFrame({"report_id": np.arange(len(unique), dtype=np.int64), "text": unique})
    return reports, vectors, len(unique) - known


def extend_faiss(
    vectors: EmbeddingShards, factory: str, previous: VectorIndex | None, trained_on: int, what: str
) -> FaissResult:
    """A FAISS index over all ``vectors`` (ids 0..N-1, read block by block), reusing ``previous`` (its first
    rows) if it can."""
    if previous is not None:
        trainable = not faiss_is_flat(previous)
        if not trainable or len(vectors) <= RETRAIN_GROWTH * max(trained_on, 1):
            start = previous.ntotal
            for first, block in unit_blocks(vectors.tail(start)):
                previous.add(block, np.arange(start + first, start + first + len(block)))
            return FaissResult(previous, trained_on if trainable else len(vectors))
        note = (
            f"retrained the {what} FAISS index ({factory}): it now holds {len(vectors)} vectors, more than "
            f"{RETRAIN_GROWTH:g}x the {trained_on} it was trained on"
        )
        return FaissResult(build_tuned(vectors, factory), len(vectors), note)
    return FaissResult(build_tuned(vectors, factory), len(vectors))


def faiss_is_flat(index: VectorIndex) -> bool:
    """True when the index needs no training (adding vectors never calls for a retrain)."""
    import faiss

    inner = faiss.downcast_index(index.index)
    while isinstance(inner, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        inner = faiss.downcast_index(inner.index)
    return isinstance(inner, (faiss.IndexFlat, faiss.IndexHNSW))


def hubness_banks(
    volume_vectors: EmbeddingShards, report_vectors: EmbeddingShards, bridged: bool = False
) -> dict[str, HubnessNormalizer]:
    """Querybank statistics: text queries over volumes, volume queries over reports (for a bridged index the
    queries take the forms the engine sends, so the statistics are of the bridged scores). The bank is every
    query row up to :data:`HUBNESS_BANK` rows; above that a uniform sample of that many, whose sums are scaled
    by rows / sample (``log_norm`` estimates the full bank's, scores keep their scale). The gallery is read
    block by block."""
    text_queries = report_vectors.sample(HUBNESS_BANK)
    volume_queries = volume_vectors.sample(HUBNESS_BANK)
    if bridged:  # the statistics take unit queries: the bridged volume query direction, normalised
        text_queries, volume_queries = text_query_on_stored(text_queries), bridged_of_stored(volume_queries)
        volume_queries = volume_queries / np.linalg.norm(volume_queries, axis=1, keepdims=True)
    banks = {
        "text_to_volumes": gallery_normalizer(text_queries, volume_vectors, HUBNESS_BETA),
        "volumes_to_reports": gallery_normalizer(volume_queries, report_vectors, HUBNESS_BETA),
    }
    for bank, rows, used in (
        (banks["text_to_volumes"], report_vectors, text_queries),
        (banks["volumes_to_reports"], volume_vectors, volume_queries),
    ):
        if len(used) < len(rows):
            bank.log_norm += np.float32(math.log(len(rows) / len(used)))
    return banks


def bridge_record(model) -> dict | None:
    """The manifest's ``bridge`` entry for a model with a CMKI bank (None without one)."""
    if not getattr(model, "bridged", False):
        return None
    return {
        "method": "cmki",
        "bank_size": int(model.config.bank_size),
        "volume_layout": "[plain, bank] / sqrt(2)",
        "scores": {
            "text_to_volume": "bridged",
            "volume_to_report": "bridged",
            "volume_to_volume": "cosine",
            "report_to_report": "cosine",
        },
    }


def clear_stale(out: Path) -> None:
    """Remove temporary directories a killed writer of ``out`` left beside it (call under the index lock)."""
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for stray in out.parent.glob(pattern):
            shutil.rmtree(stray, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@dataclass
class Assembled:
    """Everything :func:`publish` writes."""

    rows: pd.DataFrame
    volume_vectors: EmbeddingShards
    reports: pd.DataFrame
    report_vectors: EmbeddingShards
    failures: pd.DataFrame
    volume_index: FaissResult
    report_index: FaissResult
    banks: dict[str, HubnessNormalizer]


def publish(
    out: Path,
    parts: Assembled,
    *,
    model,
    model_name: str,
    factory: str,
    source: dict,
    text_protocol: str,
    previous: Previous | None = None,
) -> IndexManifest:
    """Write the index directory through a temporary directory, manifest last, and rename it into place.

    With ``previous`` its embedding shards are hard-linked (copied across file systems) and only the new
    rows are written as further shards.
    """
    with atomic_directory(out, check=open_index_dir) as tmp:
        carried: dict = {}
        for kind, vectors in (("volumes", parts.volume_vectors), ("reports", parts.report_vectors)):
            start = 0
            if previous is not None:
                old = sorted((previous.directory / "embeddings").glob(f"{kind}_*.npy"))
                for p in old:
                    _link_or_copy(p, tmp / "embeddings" / p.name)
                    carried[f"embeddings/{p.name}"] = previous.manifest.files.get(f"embeddings/{p.name}")
                start = len(previous.volume_vectors if kind == "volumes" else previous.report_vectors)
                if start < len(vectors):
                    write_embeddings(tmp, kind, vectors.tail(start), first_shard=len(old))
            else:
                write_embeddings(tmp, kind, vectors)
        write_metadata(tmp / "metadata.parquet", parts.rows)
        write_reports(tmp / "reports.parquet", parts.reports)
        write_failures(tmp / "failures.parquet", parts.failures)
        parts.volume_index.index.save(tmp / "volumes.faiss")
        parts.report_index.index.save(tmp / "reports.faiss")
        for name, bank in parts.banks.items():
            bank.save(tmp / "hubness" / f"{name}.npz")
        rows = parts.rows
        manifest = IndexManifest(
            format_version=FORMAT_VERSION,
            model_fingerprint=model.fingerprint,
            model_name=model_name,
            preprocessing_hash=model.profile.hash,
            preprocessing=model.profile.to_dict(),
            embedding=model.config.embedding,
            report_text=text_protocol,
            dims={
                "volumes": parts.volume_vectors.dim,
                "reports": parts.report_vectors.dim,
            },
            metric="inner_product",
            factory=factory,
            counts={
                "volumes": len(rows),
                "scans": int(rows["scan_id"].nunique()),
                "reports": len(parts.reports),
                "failures": len(parts.failures),
            },
            source=source,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            hubness={"beta": HUBNESS_BETA, "method": parts.banks["text_to_volumes"].method},
            trained_on={"volumes": parts.volume_index.trained_on, "reports": parts.report_index.trained_on},
            bridge=bridge_record(model),
        )
        manifest.write(tmp, known={k: v for k, v in carried.items() if v})
    return manifest
