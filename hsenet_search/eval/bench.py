"""Benchmarks of record: cross-modal R@k, volume→volume label Jaccard, zero-shot classification.

Embeddings come from an index directory (the rows of the evaluated split) or are built from a
dataset with a model (a temporary index). The evaluation unit is stated in every result:
``scan`` keeps one reconstruction per scan (N = scans); ``reconstruction`` keeps them all, and
then sibling reconstructions share a report, which the published protocol counts as misses.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hsenet_search.data.labels import LABELS
from hsenet_search.errors import DatasetError, QueryError

from .bootstrap import label_jaccard_ci, recall_at_k_ci
from .retrieval import label_jaccard_at_k, random_baseline_recall, rank_summary, recall_at_k
from .zeroshot import ensemble_prompt_embeddings, macro_auc_ci, presence_probability, zero_shot_metrics

UNITS = ("scan", "reconstruction")
V2V_KS = (1, 5, 10, 50)
TOWERS_OF = {"stage1": ("stage1",), "stage2": ("stage2",), "fusion": ("stage1", "stage2")}


@dataclass
class SplitEmbeddings:
    """Paired volume and report embeddings of one split, one row per evaluation unit."""

    volumes: np.ndarray  # (N, E) float32; a bridged index: ½(plain + bank), scored as BrgSA does
    reports: np.ndarray  # (N, E) the report embedding paired with each volume
    labels: np.ndarray  # (N, 18) int, -1 where unknown
    names: list[str]
    unit: str
    split: str
    plain: np.ndarray | None = None  # a bridged index's plain unit volume embeddings (volume → volume)


@dataclass
class IndexEmbeddings:
    """Everything a benchmark reads from one index directory."""

    index_dir: Path
    manifest: dict
    metadata: pd.DataFrame
    volumes: np.ndarray
    reports: np.ndarray
    model_dir: str
    plain: np.ndarray | None = None

    def split(self, split: str, unit: str) -> SplitEmbeddings:
        if unit not in UNITS:
            raise QueryError(f"unknown evaluation unit {unit!r}; expected one of {', '.join(UNITS)}")
        rows = self.metadata[self.metadata["split"] == split] if split != "all" else self.metadata
        if unit == "scan":
            rows = rows.sort_values("volume_name").drop_duplicates("scan_id")
        rows = rows[rows["report_id"] >= 0].sort_values("row_id")
        if len(rows) == 0:
            raise DatasetError(f"the index has no rows in split {split!r}", self.index_dir)
        ids = rows["row_id"].to_numpy()
        labels = rows[list(LABELS)].to_numpy(dtype=np.int64)
        return SplitEmbeddings(
            self.volumes[ids],
            self.reports[rows["report_id"].to_numpy()],
            labels,
            rows["volume_name"].tolist(),
            unit,
            split,
            None if self.plain is None else self.plain[ids],
        )


def load_index_embeddings(index_dir: str | Path) -> IndexEmbeddings:
    """Read an index's embeddings and metadata (float16 shards -> float32)."""
    from hsenet_search.index.store import open_index_dir, read_embeddings, read_metadata
    from hsenet_search.models.bridge import bridged_of_stored, plain_of_stored

    index_dir = Path(index_dir)
    manifest = open_index_dir(index_dir)
    volumes, plain = read_embeddings(index_dir, "volumes"), None
    if manifest.bridge is not None:
        volumes, plain = bridged_of_stored(volumes), plain_of_stored(volumes)
    return IndexEmbeddings(
        index_dir,
        manifest.to_dict(),
        read_metadata(index_dir / "metadata.parquet"),
        volumes,
        read_embeddings(index_dir, "reports"),
        manifest.model_path(),
        plain,
    )


def build_temporary_index(
    data: str | Path, model: str | None, workdir: Path, *, workers: int = 2, progress: bool = True
) -> Path:
    """Index every split of ``data`` with ``model`` into ``workdir`` and return the index path."""
    from hsenet_search.index.builder import BuildConfig, build_index

    out = workdir / "index"
    build_index(BuildConfig(data=str(data), out=str(out), model=model, split="all", workers=workers), progress=progress)
    return out


def _ci_table(cis: dict) -> dict:
    return {str(k): ci.as_dict() for k, ci in cis.items()}


def retrieval_tables(
    ev: SplitEmbeddings,
    ks: Sequence[int],
    n_boot: int = 1000,
    seed: int = 0,
    bank: SplitEmbeddings | None = None,
    beta: float = 20.0,
) -> dict:
    """Text→volume, volume→text (R@k with 95 % CIs, MRR, ranks), random baseline, volume→volume Jaccard."""
    scores = ev.volumes @ ev.reports.T  # [i, j] volume i vs report j
    n = len(ev.names)
    ks = [k for k in ks if k <= n] or [n]
    out: dict = {"n": n, "unit": ev.unit, "split": ev.split, "ks": list(ks)}
    for name, s in (("text_to_volume", scores.T), ("volume_to_text", scores)):
        out[name] = {"recall": _ci_table(recall_at_k_ci(s, ks, n_boot, seed)), **rank_summary(s)}
    out["random"] = {str(k): v for k, v in random_baseline_recall(n, ks).items()}
    known = (ev.labels >= 0).all(axis=1)
    if known.sum() >= 2:
        own = ev.plain if ev.plain is not None else ev.volumes
        vv = own[known] @ own[known].T
        lab = ev.labels[known]
        v2v_ks = [k for k in V2V_KS if k < known.sum()]
        out["volume_to_volume"] = {
            "n": int(known.sum()),
            "clean": _ci_table(label_jaccard_ci(vv, lab, v2v_ks, "clean", n_boot, seed)),
            "ctclip": {str(k): v for k, v in label_jaccard_at_k(vv, lab, v2v_ks, "ctclip").items()},
        }
    if bank is not None:
        out["hubness"] = hubness_tables(ev, bank, ks, beta)
    return out


def hubness_tables(ev: SplitEmbeddings, bank: SplitEmbeddings, ks: Sequence[int], beta: float) -> dict:
    """R@k with and without querybank normalisation (bank = another split's queries, never the evaluated ones)."""
    from hsenet_search.index.hubness import gallery_normalizer, rerank

    n = len(ev.names)
    result = {"bank_split": bank.split, "bank_size": len(bank.names), "beta": beta}
    for name, queries, gallery, bank_q in (
        ("text_to_volume", ev.reports, ev.volumes, bank.reports),
        ("volume_to_text", ev.volumes, ev.reports, bank.volumes),
    ):
        raw = queries @ gallery.T
        normalizer = gallery_normalizer(bank_q, gallery, beta)
        order = np.argsort(-raw, axis=1, kind="stable")
        cand_scores = np.take_along_axis(raw, order, axis=1).astype(np.float32)
        new_scores, new_ids = rerank(normalizer, cand_scores, order.astype(np.int64), n)
        adjusted = np.full_like(raw, -np.inf, dtype=np.float64)
        np.put_along_axis(adjusted, new_ids, -np.arange(n, dtype=np.float64)[None, :].repeat(len(raw), 0), axis=1)
        result[name] = {
            "without": {str(k): v for k, v in recall_at_k(raw, ks).items()},
            "with": {str(k): v for k, v in recall_at_k(adjusted, ks).items()},
        }
    return result


def text_encoder(model):
    """``texts -> (n, E)`` float numpy embeddings of ``model``'s query-side text encoder."""
    return lambda texts: model.encode_text(texts).float().cpu().numpy()


def zeroshot_tables(
    model,
    ev: SplitEmbeddings,
    calibration: SplitEmbeddings | None,
    *,
    labels: Sequence[str] = LABELS,
    truth: pd.DataFrame | None = None,
    prompts: str = "pair",
) -> dict:
    """Prompt-pair zero-shot classification; thresholds from a separate split and the same split.

    ``truth`` (indexed by volume name, one 0/1 column per label of ``labels``) replaces the index's 18
    labels, e.g. the never-labelled findings of ``data synth --extra-findings``. ``prompts``: ``pair``
    (CT-CLIP's) or ``mean7`` (a RadFinder-style ensemble of 7 pairs; :data:`.zeroshot.PROMPT_TEMPLATES`)."""
    import torch

    labels = list(labels)
    with torch.no_grad():
        pos, neg = ensemble_prompt_embeddings(text_encoder(model), labels, prompts)
        scale = float(np.mean([float(model.logit_scale(t)) for t in TOWERS_OF[model.config.embedding]]))

    def probs(emb: SplitEmbeddings) -> tuple[np.ndarray, np.ndarray] | None:
        y = emb.labels
        if truth is not None:
            y = truth.reindex(emb.names)[labels].fillna(-1).to_numpy(dtype=np.int64)
        known = (y >= 0).all(axis=1)
        if not known.any():
            return None
        v = emb.volumes[known]
        return y[known], presence_probability(v @ pos.T, v @ neg.T, scale)

    evaluated = probs(ev)
    if evaluated is None:
        raise DatasetError(f"no labelled volumes in split {ev.split!r}")
    y, p = evaluated
    out = {
        "n": int(len(y)),
        "unit": ev.unit,
        "split": ev.split,
        "labels": labels,
        "prompts": prompts,
        "logit_scale": scale,
        "same_split": _zs_json(zero_shot_metrics(y, p, labels=labels)),
        "macro_auc_ci": macro_auc_ci(y, p),
    }
    cal = probs(calibration) if calibration is not None else None
    if cal is not None:  # thresholds from the other split, when it has labelled volumes
        out["separate_split"] = _zs_json(zero_shot_metrics(y, p, thresholds_from=cal, labels=labels))
        out["calibration_split"] = calibration.split
    return out


def read_extra_labels(path: str | Path) -> pd.DataFrame:
    """A never-labelled findings ground-truth CSV (``VolumeName`` + 0/1 columns), indexed by volume name."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the extra labels CSV ({type(exc).__name__})", path) from exc
    if "VolumeName" not in table.columns or len(table.columns) < 2:
        raise DatasetError("the extra labels CSV needs VolumeName and at least one label column", path)
    columns = [c for c in table.columns if c != "VolumeName"]
    if not table[columns].isin((0, 1)).all().all():
        raise DatasetError("extra label values must be 0 or 1", path)
    return table.set_index("VolumeName")


def _zs_json(result) -> dict:
    return {
        "threshold_source": result.threshold_source,
        "macro": result.macro,
        "per_label": result.per_label,
        "auc_undefined": result.auc_undefined,
    }


def temporary_workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="hsenet-bench-")
