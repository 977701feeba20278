"""The modality gap between volume and report embeddings (BrgSA, arXiv 2501.03565; Liang et al. 2022).

After CLIP-style alignment the two modalities sit in two separate clusters on the unit sphere. Three
figures describe that for paired embeddings ``volumes[i] ↔ reports[i]`` (unit vectors):

- ``centroid_distance``: ‖mean(volumes) − mean(reports)‖ (0 when the clusters share a centre, at most 2);
- ``true_pair_cosine`` vs ``random_pair_cosine``: the mean cosine of the true pairs against the mean over
  all non-matching pairs (the margin is what retrieval lives on);
- ``probe_accuracy``: cross-validated accuracy of a logistic-regression probe that tells a vector's modality
  (0.5 = the modalities are indistinguishable, 1.0 = linearly separable).

``plot_gap`` draws both modalities on their first two principal components.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hsenet_search.atomic import atomic_path
from hsenet_search.errors import DatasetError

PROBE_FOLDS = 5
MAX_PROBE_ROWS = 4000  # per modality; the probe is a diagnostic, a sample says as much as everything


@dataclass(frozen=True)
class GapResult:
    """Modality-gap figures for one set of paired embeddings."""

    n: int
    centroid_distance: float
    true_pair_cosine: float
    random_pair_cosine: float
    probe_accuracy: float
    probe_folds: int

    def to_json(self) -> dict:
        return asdict(self)


def _unit(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise DatasetError(f"{what} embeddings must be a finite (N, E) array")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DatasetError(f"{what} embeddings contain a zero vector")
    return x / norms


def modality_gap(volumes: np.ndarray, reports: np.ndarray, *, seed: int = 0) -> GapResult:
    """Gap figures for paired embeddings (row i of each is one volume–report pair)."""
    v, t = _unit(volumes, "volume"), _unit(reports, "report")
    if v.shape != t.shape:
        raise DatasetError(f"volume and report embeddings differ in shape: {v.shape} vs {t.shape}")
    n = len(v)
    if n < 2 * PROBE_FOLDS:
        raise DatasetError(f"the modality gap needs at least {2 * PROBE_FOLDS} pairs, got {n}")
    centroid = float(np.linalg.norm(v.mean(0) - t.mean(0)))
    true_cos = float(np.einsum("ij,ij->i", v, t).mean())
    # mean over i != j of v_i·t_j, from the sums (no N×N matrix)
    random_cos = float((v.sum(0) @ t.sum(0) - true_cos * n) / (n * (n - 1)))
    return GapResult(n, centroid, true_cos, random_cos, _probe_accuracy(v, t, seed), PROBE_FOLDS)


def _probe_accuracy(v: np.ndarray, t: np.ndarray, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(seed)
    take = rng.permutation(len(v))[:MAX_PROBE_ROWS]
    x = np.concatenate([v[take], t[take]])
    y = np.r_[np.zeros(len(take)), np.ones(len(take))]
    folds = StratifiedKFold(PROBE_FOLDS, shuffle=True, random_state=seed)
    return float(cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=folds).mean())


def gap_markdown(rows: dict[str, GapResult], title: str = "Modality gap") -> str:
    """One table row per named embedding set."""
    lines = [
        f"### {title}",
        "",
        "| embeddings | N pairs | centroid distance | true-pair cosine | random-pair cosine | probe accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r.n} | {r.centroid_distance:.3f} | {r.true_pair_cosine:.3f} | "
            f"{r.random_pair_cosine:.3f} | {r.probe_accuracy:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot_gap(
    volumes: np.ndarray,
    reports: np.ndarray,
    path: str | Path,
    *,
    title: str = "",
    max_points: int = 2000,
    seed: int = 0,
) -> Path:
    """Scatter both modalities on the first two principal components of their union; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v, t = _unit(volumes, "volume"), _unit(reports, "report")
    take = np.random.default_rng(seed).permutation(len(v))[:max_points]
    both = np.concatenate([v[take], t[take]])
    centred = both - both.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    pv, pt = xy[: len(take)], xy[len(take) :]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i in range(min(len(take), 40)):  # a few true pairs, to show how far a pair spans
        ax.plot([pv[i, 0], pt[i, 0]], [pv[i, 1], pt[i, 1]], color="0.8", lw=0.6, zorder=0)
    ax.scatter(pv[:, 0], pv[:, 1], s=6, alpha=0.6, label="volumes")
    ax.scatter(pt[:, 0], pt[:, 1], s=6, alpha=0.6, label="reports")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "Volume and report embeddings (PCA)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, durable=False) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)
