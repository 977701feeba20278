"""Small BrgSA helpers: rank AUROC against sklearn, LLM reply parsing, the summariser on the default LLM."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hsenet_search.data.summarise import NORMAL_SUMMARY, SummaryCache, llm_summariser, reply_sentences
from hsenet_search.eval.zeroshot import macro_auc_ci, rank_auc


def test_rank_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        s = np.round(rng.normal(size=30), 1)  # ties
        if y.min() == y.max():
            continue
        assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(rank_auc(np.ones(5), np.arange(5)))


def test_macro_auc_ci_brackets_the_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (60, 3))
    p = y + rng.normal(0, 0.8, (60, 3))
    ci = macro_auc_ci(y, p, n_boot=200)
    expected = np.mean([roc_auc_score(y[:, c], p[:, c]) for c in range(3)])
    assert ci["estimate"] == pytest.approx(expected) and ci["low"] < ci["estimate"] < ci["high"]


def test_reply_sentences_strip_bullets_split_and_deduplicate():
    reply = "1. Right upper lobe nodule, 6 mm\n- Cardiomegaly. Effusion.\n* Cardiomegaly.\n\n--"
    assert reply_sentences(reply) == ["Right upper lobe nodule, 6 mm.", "Cardiomegaly.", "Effusion."]
    assert reply_sentences("  \n-- \n") == []


@pytest.mark.slow
def test_default_llm_summariser_writes_sentences_and_caches_them(tmp_path):
    summariser, stats = llm_summariser("default", max_new_tokens=48)
    assert summariser.name.startswith("llm-")
    cache = SummaryCache(tmp_path, summariser)
    report = "There is a 9 mm nodule in the right upper lobe. Bilateral pleural effusion. No lymphadenopathy."
    first = cache.get(report)
    assert first and all(isinstance(s, str) and s.endswith((".", "!", "?")) for s in first)
    assert stats.kept + stats.fallbacks == 1
    assert cache.get(report) == first and stats.kept + stats.fallbacks == 1  # second read: from the cache
    assert first != [NORMAL_SUMMARY] or stats.fallbacks == 0
