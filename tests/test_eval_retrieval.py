"""Retrieval metrics and query bootstrap against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from hsenet_search.eval.bootstrap import (
    BootstrapCI,
    bootstrap_ci,
    bootstrap_mean_ci,
    label_jaccard_ci,
    recall_at_k_ci,
)
from hsenet_search.eval.retrieval import (
    label_jaccard_at_k,
    label_jaccard_per_query,
    mean_reciprocal_rank,
    random_baseline_recall,
    rank_summary,
    ranks_of_true_match,
    recall_at_k,
)

# Query 0 ties its true match with candidate 1 -> rank 2 (ties count against the query);
# query 1 is first -> rank 1; query 2 has two candidates above it -> rank 3.
TIED = np.array([[0.9, 0.9, 0.1], [0.2, 0.8, 0.5], [0.7, 0.6, 0.3]])

# Four volumes, three labels: v2 is normal. Gallery of the ctclip protocol = {v0, v1, v3}.
LABELS4 = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1]])
SCORES4 = np.array(
    [
        [1.0, 0.8, 0.95, 0.3],  # ctclip order v0, v1, v3 (v2 is not in the gallery)
        [0.7, 0.6, 0.2, 0.9],  # v3, v0, v1
        [0.5, 0.4, 1.0, 0.1],  # normal query
        [0.2, 0.2, 0.0, 0.9],  # v3, then v0 and v1 tie -> index order v0, v1
    ]
)


def test_ties_count_against_the_query():
    assert ranks_of_true_match(TIED).tolist() == [2, 1, 3]
    recall = recall_at_k(TIED, [1, 2, 3])
    assert recall == pytest.approx({1: 100 / 3, 2: 200 / 3, 3: 100.0})


def test_constant_scores_give_the_worst_rank():
    assert ranks_of_true_match(np.zeros((4, 4))).tolist() == [4, 4, 4, 4]
    assert recall_at_k(np.zeros((4, 4)), [1, 3]) == {1: 0.0, 3: 0.0}


def test_perfect_and_worst_rankings():
    assert recall_at_k(np.eye(5), [1, 5]) == {1: 100.0, 5: 100.0}
    worst = -np.eye(5)
    assert ranks_of_true_match(worst).tolist() == [5] * 5
    assert recall_at_k(worst, [1, 4, 5]) == {1: 0.0, 4: 0.0, 5: 100.0}
    assert mean_reciprocal_rank(worst) == pytest.approx(0.2)


def test_non_square_scores():
    scores = np.array([[0.5, 0.1, 0.9, 0.2], [0.3, 0.4, 0.1, 0.0]])
    assert ranks_of_true_match(scores).tolist() == [2, 1]
    assert recall_at_k(scores, [1, 2]) == {1: 50.0, 2: 100.0}
    with pytest.raises(ValueError):
        ranks_of_true_match(scores.T)


def test_rank_summary_on_the_tied_matrix():
    summary = rank_summary(TIED)
    assert summary["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    assert summary["mean_rank"] == pytest.approx(2.0)
    assert summary["median_rank"] == pytest.approx(2.0)
    assert mean_reciprocal_rank(TIED) == pytest.approx(11 / 18)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.array([[1.0, np.nan], [0.0, 1.0]]), [1])
    with pytest.raises(ValueError):
        recall_at_k(np.eye(3), [0])
    with pytest.raises(ValueError):
        recall_at_k(np.eye(3), [1, 1])


def test_random_baseline():
    assert random_baseline_recall(1564, [100]) == pytest.approx({100: 100 * 100 / 1564})
    assert random_baseline_recall(10, [1, 5, 50]) == {1: 10.0, 5: 50.0, 50: 100.0}


def test_random_baseline_matches_random_scores_on_average():
    rng = np.random.default_rng(0)
    recalls = [recall_at_k(rng.random((200, 200)), [20])[20] for _ in range(10)]
    assert np.mean(recalls) == pytest.approx(random_baseline_recall(200, [20])[20], abs=2.0)


def test_ctclip_protocol_hand_example_with_running_mean():
    # k=1 per query: q0 J(v0,v0)=1, q1 J(v1,v3)=0, q2 normal 0, q3 J(v3,v3)=1      -> 2/4 = 0.5
    # k=2 per query: q0 (1+1/2)/2, q1 (0+1/2)/2, q2 0, q3 (1+1/3)/2 (tie v0 before v1) -> 5/12
    # the published code reports k=2 as the running mean (0.5 + 5/12) / 2 = 11/24
    assert label_jaccard_at_k(SCORES4, LABELS4, [1, 2], protocol="ctclip") == pytest.approx({1: 50.0, 2: 100 * 11 / 24})
    assert label_jaccard_at_k(SCORES4, LABELS4, [2], protocol="ctclip") == pytest.approx({2: 100 * 5 / 12})
    # the running mean follows the order of ks
    assert label_jaccard_at_k(SCORES4, LABELS4, [2, 1], protocol="ctclip") == pytest.approx(
        {2: 100 * 5 / 12, 1: 100 * 11 / 24}
    )


def test_ctclip_protocol_normal_query_scores_zero_and_k_is_capped_by_gallery():
    per_query = label_jaccard_per_query(SCORES4, LABELS4, [3], protocol="ctclip")[:, 0]
    # k=3 is the whole gallery {v0, v1, v3}
    assert per_query == pytest.approx([(1 + 1 / 2 + 1 / 3) / 3, (0 + 1 / 2 + 1) / 3, 0.0, (1 + 1 / 3 + 0) / 3])
    assert label_jaccard_at_k(SCORES4, LABELS4, [50], protocol="ctclip")[50] == pytest.approx(100 * per_query.mean())


def test_ctclip_protocol_self_retrieval():
    # identity scores: each abnormal query retrieves itself first (Jaccard 1), the normal one scores 0
    assert label_jaccard_at_k(np.eye(4), LABELS4, [1], protocol="ctclip") == pytest.approx({1: 75.0})


def test_clean_protocol_excludes_the_query():
    # gallery = the other three volumes; normal v2 is retrievable.
    # k=1: q0 -> v2 (0), q1 -> v3 (0), q2 -> v0 (0), q3 -> v0 (1/3)                 -> 1/12
    # k=2: q0 (0+1/2)/2, q1 (0+1/2)/2, q2 0, q3 (1/3+0)/2                              -> 1/6
    clean = label_jaccard_at_k(SCORES4, LABELS4, [1, 2], protocol="clean")
    assert clean == pytest.approx({1: 100 / 12, 2: 100 / 6})
    assert label_jaccard_at_k(SCORES4, LABELS4, [2, 1], protocol="clean") == pytest.approx(clean)
    assert label_jaccard_at_k(np.eye(4), LABELS4, [1], protocol="clean")[1] < 100.0


def test_clean_protocol_two_normal_volumes_are_relevant():
    labels = np.array([[0, 0], [0, 0], [1, 0]])
    scores = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.1], [0.1, 0.2, 1.0]])
    per_query = label_jaccard_per_query(scores, labels, [1], protocol="clean")[:, 0]
    assert per_query.tolist() == [1.0, 1.0, 0.0]


def test_label_jaccard_rejects_bad_input():
    with pytest.raises(ValueError, match="protocol"):
        label_jaccard_at_k(SCORES4, LABELS4, [1], protocol="map")
    with pytest.raises(ValueError):
        label_jaccard_at_k(SCORES4, LABELS4[:3], [1])
    with pytest.raises(ValueError, match="positive label"):
        label_jaccard_at_k(np.eye(2), np.zeros((2, 3)), [1], protocol="ctclip")


def test_recall_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(300, 300)) + 2.0 * np.eye(300)
    ci = recall_at_k_ci(scores, [1, 10], n_boot=500, seed=3)
    point = recall_at_k(scores, [1, 10])
    for k in (1, 10):
        assert ci[k].estimate == pytest.approx(point[k])
        assert ci[k].low < ci[k].estimate < ci[k].high
    assert recall_at_k_ci(scores, [1, 10], n_boot=500, seed=3) == ci
    assert recall_at_k_ci(scores, [1, 10], n_boot=500, seed=4) != ci


def test_bootstrap_interval_shrinks_with_more_items():
    small = bootstrap_mean_ci(np.tile([0.0, 1.0], 20), n_boot=1000)[0]
    large = bootstrap_mean_ci(np.tile([0.0, 1.0], 2000), n_boot=1000)[0]
    assert small.estimate == large.estimate == 0.5
    # widths ~ 2 * 1.96 * 0.5 / sqrt(n): about 0.31 for n=40 and 0.031 for n=4000
    assert small.high - small.low == pytest.approx(0.31, abs=0.06)
    assert (small.high - small.low) > 5 * (large.high - large.low)


def test_generic_bootstrap_with_a_dict_metric():
    values = np.arange(10, dtype=float)

    def metric(idx: np.ndarray) -> dict[str, float]:
        return {"mean": float(values[idx].mean()), "max": float(values[idx].max())}

    ci = bootstrap_ci(metric, n_items=10, n_boot=300, seed=0)
    assert ci["mean"].estimate == 4.5 and ci["max"].estimate == 9.0
    assert ci["mean"].low < 4.5 < ci["mean"].high
    assert ci["max"].high == 9.0
    assert bootstrap_ci(metric, n_items=10, n_boot=300, seed=0) == ci
    single = bootstrap_ci(lambda idx: float(values[idx].mean()), n_items=10, n_boot=300, seed=0)
    assert isinstance(single, BootstrapCI) and single == ci["mean"]


def test_label_jaccard_ci_matches_point_estimates():
    for protocol in ("ctclip", "clean"):
        ci = label_jaccard_ci(SCORES4, LABELS4, [1, 2], protocol=protocol, n_boot=200)
        point = label_jaccard_at_k(SCORES4, LABELS4, [1, 2], protocol=protocol)
        assert {k: c.estimate for k, c in ci.items()} == pytest.approx(point)
        assert all(c.low <= c.estimate <= c.high for c in ci.values())


def _published_ctclip_loop(scores: np.ndarray, labels: np.ndarray, ks: list[int]) -> list[float]:
    """A plain-loop restatement of the published volume->volume procedure, list never reset."""
    gallery = [j for j in range(len(labels)) if labels[j].sum() != 0]
    collected: list[float] = []
    reported = []
    for k in ks:
        for q in range(len(labels)):
            ranked = sorted(gallery, key=lambda j: scores[q, j], reverse=True)[:k]
            jaccards = []
            for j in ranked:
                both = int(np.sum((labels[q] == 1) & (labels[j] == 1)))
                either = int(np.sum((labels[q] == 1) | (labels[j] == 1)))
                jaccards.append(both / either)
            collected.append(float(np.mean(jaccards)))
        reported.append(100 * float(np.mean(collected)))
    return reported


def test_ctclip_protocol_matches_a_loop_restatement_with_ties():
    rng = np.random.default_rng(7)
    labels = (rng.random((40, 18)) < 0.12).astype(int)
    scores = np.round(rng.random((40, 40)), 1)  # coarse scores: many ties
    ks = [1, 5, 10, 50]
    fast = label_jaccard_at_k(scores, labels, ks, protocol="ctclip")
    assert list(fast.values()) == pytest.approx(_published_ctclip_loop(scores, labels, ks))
