"""Report-generation text metrics against hand-computed values and reference implementations."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared

from hsenet_search.eval.text_metrics import (
    BLEU_IMPLEMENTATION,
    METEOR_IMPLEMENTATION,
    corpus_bleu,
    generation_scores,
    hsenet_ngram_precision,
    meteor,
    ptb_tokenize,
    rouge_l,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REF = "the cat is on the mat"
HYP = "the cat sat on the mat"
TINY, SMALL = 1e-15, 1e-9


def test_ptb_tokenize_lowercases_and_drops_punctuation():
    # expected outputs as the Java PTBTokenizer (-lowerCase) + coco's punctuation filter produce them:
    # brackets become -lrb-/-rrb- and stay (coco's list names the upper-case forms only)
    text = 'The nodule (3.5 mm) isn\'t calcified; "effusion-thickening" cannot be seen...'
    tokens = ptb_tokenize(text)
    assert tokens == [
        "the",
        "nodule",
        "-lrb-",
        "3.5",
        "mm",
        "-rrb-",
        "is",
        "n't",
        "calcified",
        "effusion-thickening",
        "can",
        "not",
        "be",
        "seen",
    ]
    assert ptb_tokenize(" ".join(tokens)) == tokens
    assert ptb_tokenize("A 6.5x5.5mm nodule on non-enhanced CT. Lungs: 50% e.g. t12.vertebra") == [
        "a",
        "6.5",
        "x5",
        ".5",
        "mm",
        "nodule",
        "on",
        "non-enhanced",
        "ct.",
        "lungs",
        "50",
        "%",
        "e.g.",
        "t12.vertebra",
    ]


def test_bleu_hand_example_with_smoothed_zero_4gram():
    # hyp: the cat sat on the mat (6) | ref: the cat is on the mat (6)
    # 1-grams 5/6 (the x2, cat, on, mat); 2-grams 3/5 (the cat, on the, the mat); 3-grams 1/4 (on the mat);
    # 4-grams 0/3. Equal lengths: BP = exp(1 - (6+1e-9)/(6+1e-15)) ~ 1 - 1.7e-10.
    # BLEU-2 = sqrt(5/6 * 3/5) = sqrt(1/2); BLEU-3 = (1/8)^(1/3) = 1/2;
    # BLEU-4 = (1/8 * 1e-15/3)^(1/4) ~ 8.0e-5: the tiny constant keeps it above 0.
    scores = corpus_bleu([REF], [HYP])
    assert scores["bleu_1"] == pytest.approx(5 / 6, rel=1e-8)
    assert scores["bleu_2"] == pytest.approx(math.sqrt(0.5), rel=1e-8)
    assert scores["bleu_3"] == pytest.approx(0.5, rel=1e-8)
    assert scores["bleu_4"] == pytest.approx((1 / 8 * TINY / (3 + SMALL)) ** 0.25, rel=1e-6)
    assert 7e-5 < scores["bleu_4"] < 9e-5


def test_bleu_brevity_penalty_and_corpus_level_counts():
    # "the cat" vs REF: p1 = p2 = 1, c=2 < r=6 -> BP = exp(1 - 6/2) = e^-2
    short = corpus_bleu([REF], ["the cat"])
    assert short["bleu_1"] == pytest.approx(math.exp(-2), rel=1e-8)
    assert short["bleu_2"] == pytest.approx(math.exp(-2), rel=1e-8)
    # corpus of both samples: counts are summed, 1-grams (5+2)/(6+2), c=8, r=12 -> BP = exp(1 - 12/8)
    both = corpus_bleu([REF, REF], [HYP, "the cat"])
    assert both["bleu_1"] == pytest.approx(7 / 8 * math.exp(-0.5), rel=1e-8)
    # not the mean of the sentence scores
    assert both["bleu_1"] != pytest.approx((5 / 6 + math.exp(-2)) / 2, rel=1e-3)


def test_bleu_closest_reference_length():
    # hypothesis of 2 tokens; references of 6 and 3 tokens -> r = 3, BP = exp(1 - 3/2)
    assert corpus_bleu([[REF, "the cat sat"]], ["the cat"])["bleu_1"] == pytest.approx(math.exp(-0.5), rel=1e-8)
    # references of 1 and 3 tokens are equally close; the shorter wins -> no penalty
    assert corpus_bleu([["the", "the cat sat"]], ["the cat"])["bleu_1"] == pytest.approx(1.0, rel=1e-8)


def test_bleu_is_case_and_punctuation_insensitive():
    assert corpus_bleu(["The cat, is on the mat."], ["THE cat sat on the mat"]) == pytest.approx(
        corpus_bleu([REF], [HYP])
    )


def test_rouge_l_hand_lcs():
    # LCS("the cat sat", REF) = 2: P = 2/3, R = 2/6; F = 2.44 P R / (R + 1.44 P)
    p, r = 2 / 3, 1 / 3
    assert rouge_l([REF], ["the cat sat"]) == pytest.approx(2.44 * p * r / (r + 1.44 * p))
    # LCS(HYP, REF) = 5 ("the cat on the mat"), P = R = 5/6 -> F = 5/6; mean over the two samples
    assert rouge_l([REF, REF], [HYP, "the cat sat"]) == pytest.approx((5 / 6 + 2.44 * p * r / (r + 1.44 * p)) / 2)
    assert rouge_l([REF], ["dog"]) == 0.0


def test_meteor_identical_disjoint_and_stems():
    # identical 4 tokens: P = R = 1, one chunk -> 1 - 0.5 * (1/4)^3
    assert meteor(["no pleural effusion seen"], ["no pleural effusion seen"]) == pytest.approx(1 - 0.5 / 64)
    assert meteor(["pleural effusion"], ["cardiomegaly"]) == 0.0
    # "calcified" matches exactly, "nodules" ~ "nodule" by Porter stem: 2 matches, P = R = 1,
    # crossed order -> 2 chunks, penalty 0.5 * (2/2)^3 -> 0.5. Exact matching alone would give
    # P = R = 1/2, 1 chunk, penalty 0.5 * 1 -> 0.25.
    assert meteor(["calcified nodule"], ["nodules calcified"]) == pytest.approx(0.5)
    # recall-weighted Fmean: 2 of 4 hypothesis tokens match a 2-token reference in one chunk:
    # P = 1/2, R = 1 -> 10PR/(R+9P) = 5/5.5; penalty 0.5 * (1/2)^3
    assert meteor(["pleural effusion"], ["pleural effusion is seen"]) == pytest.approx(5 / 5.5 * (1 - 0.0625))
    assert "WordNet" in METEOR_IMPLEMENTATION and "coco" in BLEU_IMPLEMENTATION


def test_hsenet_precision_is_a_per_sample_average():
    # sample 1: "the cat" vs REF -> p1 = 2/2, p2 = 1/1, no 3- or 4-grams -> 0, 0
    # sample 2: HYP vs REF -> 5/6, 3/5, 1/4, 0/3
    scores = hsenet_ngram_precision([REF, REF], ["the cat", HYP])
    assert scores == pytest.approx(
        {
            "hsenet_precision_1": (1 + 5 / 6) / 2,
            "hsenet_precision_2": (1 + 3 / 5) / 2,
            "hsenet_precision_3": (0 + 1 / 4) / 2,
            "hsenet_precision_4": 0.0,
        }
    )
    # pooled counts give 7/8 instead: the two definitions differ
    assert scores["hsenet_precision_1"] != pytest.approx(7 / 8)
    # 13a keeps case and punctuation tokens: "Mat ." vs "mat ." -> 1 of 2 unigrams
    assert hsenet_ngram_precision(["mat."], ["Mat."])["hsenet_precision_1"] == pytest.approx(0.5)


def test_generation_scores_names_every_metric():
    scores = generation_scores([REF], [REF])
    assert set(scores) == {
        "bleu_1",
        "bleu_2",
        "bleu_3",
        "bleu_4",
        "meteor",
        "rouge_l",
        "hsenet_precision_1",
        "hsenet_precision_2",
        "hsenet_precision_3",
        "hsenet_precision_4",
    }
    assert scores["bleu_4"] == pytest.approx(1.0) and scores["rouge_l"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        generation_scores([REF], [REF, REF])


def _real_reports(n: int) -> list[str]:
    path = require_shared(DATA / "ct-rate-manual-labels" / "train.csv")
    with path.open(newline="") as handle:
        return [row["report_text"] for row, _ in zip(csv.DictReader(handle), range(n), strict=False)]


def _pretokenised_pairs() -> tuple[list[str], list[str]]:
    """Real reports paired with their neighbour's report, some truncated to trigger the brevity penalty."""
    reports = [" ".join(ptb_tokenize(r)) for r in _real_reports(24)]
    hypotheses = []
    for i in range(len(reports)):
        words = reports[(i + 1) % len(reports)].split()
        hypotheses.append(" ".join(words[: len(words) // 3]) if i % 3 == 0 else " ".join(words))
    return reports, hypotheses


def test_bleu_and_rouge_match_pycocoevalcap_on_pretokenised_reports():
    import pycocoevalcap.bleu.bleu as bleu_module
    import pycocoevalcap.rouge.rouge as rouge_module

    refs, hyps = _pretokenised_pairs()
    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    expected, _ = bleu_module.Bleu(4).compute_score(gts, res, verbose=0)
    ours = corpus_bleu(refs, hyps)
    assert [ours[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(expected, rel=1e-9)
    expected_rouge, _ = rouge_module.Rouge().compute_score(gts, res)
    assert rouge_l(refs, hyps) == pytest.approx(expected_rouge, rel=1e-9)
    # multiple references per sample
    gts_multi = {i: [refs[i], refs[(i + 5) % len(refs)]] for i in range(len(refs))}
    expected_multi, _ = bleu_module.Bleu(4).compute_score(gts_multi, res, verbose=0)
    ours_multi = corpus_bleu([gts_multi[i] for i in range(len(refs))], hyps)
    assert [ours_multi[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(expected_multi, rel=1e-9)


def test_hsenet_precision_matches_sacrebleu_per_sample_precisions():
    from sacrebleu.metrics import BLEU

    raw = _real_reports(10)
    refs, hyps = raw, raw[1:] + raw[:1]
    scorer = BLEU(tokenize="13a", smooth_method="none")
    per_sample = np.array([scorer.corpus_score([h], [[r]]).precisions for r, h in zip(refs, hyps, strict=True)]) / 100
    ours = hsenet_ngram_precision(refs, hyps)
    assert [ours[f"hsenet_precision_{n}"] for n in range(1, 5)] == pytest.approx(per_sample.mean(axis=0))


def test_full_coco_pipeline_with_the_java_tokenizer_agrees_on_raw_reports():
    import pycocoevalcap.bleu.bleu as bleu_module
    import pycocoevalcap.rouge.rouge as rouge_module
    import pycocoevalcap.tokenizer.ptbtokenizer as tokenizer_module

    assert shutil.which("java"), "java is not installed (pycocoevalcap's PTBTokenizer needs it)"
    refs = _real_reports(200)
    hyps = [h[: len(h) // 2] if i % 3 == 0 else h for i, h in enumerate(refs[1:] + refs[:1])]
    tokenizer = tokenizer_module.PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r}] for i, r in enumerate(refs)})
    res = tokenizer.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
    same = sum(gts[i][0].split() == ptb_tokenize(r) for i, r in enumerate(refs))
    assert same >= 0.98 * len(refs)
    expected, _ = bleu_module.Bleu(4).compute_score(gts, res, verbose=0)
    ours = corpus_bleu(refs, hyps)
    assert [ours[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(expected, abs=1e-3)
    expected_rouge, _ = rouge_module.Rouge().compute_score(gts, res)
    assert rouge_l(refs, hyps) == pytest.approx(expected_rouge, abs=1e-3)
