"""Report-generation metrics: coco-style BLEU-1..4, ROUGE-L, offline METEOR, HSENet's n-gram precisions.

Scores are on a 0-1 scale. ``references[i]`` is the reference report of ``hypotheses[i]``: one string, or
a list of strings when a sample has several references. Except for the HSENet variant, texts are
tokenised like pycocoevalcap's PTBTokenizer (see :func:`ptb_tokenize`), as R2Gen/CT2Rep-style
evaluations do before scoring.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

BLEU_IMPLEMENTATION = (
    "coco-caption BLEU (pycocoevalcap 1.2 bleu_scorer) re-implemented in Python: corpus-level clipped "
    "n-gram counts, brevity penalty with the closest reference length (ties to the shorter), "
    "tiny=1e-15/small=1e-9 smoothing, on a Python approximation of the Stanford PTBTokenizer "
    "(lowercase, punctuation removed)"
)
ROUGE_IMPLEMENTATION = "coco-caption ROUGE-L: sentence LCS F-measure, beta=1.2, averaged over samples"
METEOR_IMPLEMENTATION = (
    "offline METEOR after Banerjee & Lavie (2005) / METEOR-1.0: exact then Porter-stem (nltk, original "
    "algorithm) unigram matching, Fmean = 10PR/(R+9P), penalty 0.5*(chunks/matches)^3, best reference per "
    "sample, averaged over samples; no WordNet synonym or paraphrase stage, so it is not the METEOR 1.5 jar"
)
HSENET_PRECISION_IMPLEMENTATION = (
    "HSENet's 'BLEU-n': per-sample modified n-gram precision of HF evaluate's bleu (13a tokenisation, "
    "case-sensitive, no brevity penalty, no smoothing, 0 when a sample has no n-gram of that order), "
    "macro-averaged over samples"
)

# What the coco wrapper drops after the Java PTBTokenizer (-lowerCase), plus the quote and dash characters
# that PTB rewrites into those tokens. Brackets come out as "-lrb-", "-rrb-", ... and, lowercased, are
# not in coco's list (it names "-LRB-"), so they stay as tokens.
_PTB_DROPPED = frozenset(
    ["''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"']
    + ["\u2013", "\u2014", "\u201c", "\u201d", "\u2018", "\u2019"]  # dashes and curly quotes
)
_PTB_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# Abbreviations PTB keeps with their period (a sentence-final one still yields the token "ct.").
_PTB_ABBREVIATIONS = ("ct", "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "approx", "fig")
_PTB_SPLITS = (
    (re.compile(r"\bcannot\b"), "can not"),
    (re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b"), r" \1"),
)
# Token shapes; as in the JFlex lexer behind PTBTokenizer, the longest match wins (ties: first listed).
_PTB_SHAPES = tuple(
    re.compile(pattern)
    for pattern in (
        r"n't|'(?:s|re|ve|ll|d|m)\b",  # clitics split off above
        r"(?:[a-z]\.){2,}",  # acronyms: e.g. i.e.
        r"(?:" + "|".join(_PTB_ABBREVIATIONS) + r")\.",
        r"\d*\.\d+(?:[.,]\d+)*|\d+(?:[.,]\d+)*",  # numbers, also ".5" as in "6.5x5.5mm" -> 6.5 x5 .5 mm
        r"[a-z_]\w*(?:\.[a-z]\w*)+",  # dotted words: t12.vertebra
        r"\w+(?:[-/]\w+)*",  # words, hyphenated and slashed words: covid-19, and/or, 9x2
        r"[?!]{2,}|\.{3,}|-{2,}|-[lr][rsc]b-",
        r"\S",
    )
)
_SPACE = re.compile(r"\s*")
_PLAIN_WORD = re.compile(r"[a-z]+(?![\w.'/-])")  # no longer shape can start here: skip the lexer
ROUGE_BETA = 1.2
_TINY, _SMALL = 1e-15, 1e-9


def ptb_tokenize(text: str) -> list[str]:
    """Lowercase PTB tokens with coco's punctuation removed: a Python approximation of pycocoevalcap's
    Java ``PTBTokenizer -preserveLines -lowerCase`` followed by its punctuation filter.

    Reproduced: clitic and "cannot" splitting, brackets as ``-lrb-``/``-rrb-`` tokens (kept, as in coco),
    decimals, hyphenated/slashed/dotted words and common abbreviations kept whole, symbols such as
    ``%``, ``+``, ``<`` split off and kept, quotes and dashes dropped. The Java lexer has more special cases
    (e.g. ``IMA:49`` -> ``ima :49``); on the 800 CT-RATE reports of the shared data the two agree on all
    but a handful of tokens.
    """
    text = text.lower().replace("\n", " ")
    for pattern, replacement in _PTB_SPLITS:
        text = pattern.sub(replacement, text)
    tokens = []
    position = _SPACE.match(text).end()
    while position < len(text):
        token = _PLAIN_WORD.match(text, position)
        if token is None:
            matches = (shape.match(text, position) for shape in _PTB_SHAPES)
            token = max((m for m in matches if m), key=lambda m: m.end())
        word = token.group()
        word = _PTB_BRACKETS.get(word, "..." if word.startswith("...") else word)
        if word not in _PTB_DROPPED:
            tokens.append(word)
        position = _SPACE.match(text, token.end()).end()
    return tokens


Pairs = list[tuple[list[list[str]], list[str]]]  # (reference token lists, hypothesis tokens) per sample


def _tokenized(
    references: Sequence[str | Sequence[str]], hypotheses: Sequence[str], tokenize: Callable[[str], list[str]]
) -> Pairs:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    pairs = []
    for refs, hyp in zip(references, hypotheses, strict=True):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        pairs.append(([tokenize(r) for r in refs], tokenize(hyp)))
    return pairs


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _clipped_matches(hyp: list[str], refs: list[list[str]], n: int) -> int:
    max_ref: Counter = Counter()
    for ref in refs:
        max_ref |= _ngrams(ref, n)
    return sum(min(count, max_ref[gram]) for gram, count in _ngrams(hyp, n).items())


def corpus_bleu(
    references: Sequence[str | Sequence[str]], hypotheses: Sequence[str], max_n: int = 4
) -> dict[str, float]:
    """Corpus BLEU-1..max_n, ``{"bleu_1": ..., ...}`` (see ``BLEU_IMPLEMENTATION``).

    BLEU-n = BP * prod_{k<=n} ((correct_k + 1e-15) / (guess_k + 1e-9))^(1/n), counts summed over the
    corpus; BP = exp(1 - r/c) when c < r, with c the total hypothesis length and r the sum of each
    sample's closest reference length.
    """
    return _bleu(_tokenized(references, hypotheses, ptb_tokenize), max_n)


def _bleu(pairs: Pairs, max_n: int) -> dict[str, float]:
    correct, guess = [0] * max_n, [0] * max_n
    test_len = ref_len = 0
    for ref_tokens, hyp_tokens in pairs:
        test_len += len(hyp_tokens)
        ref_len += min((abs(len(r) - len(hyp_tokens)), len(r)) for r in ref_tokens)[1]
        for k in range(max_n):
            guess[k] += max(0, len(hyp_tokens) - k)
            correct[k] += _clipped_matches(hyp_tokens, ref_tokens, k + 1)

    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, product = {}, 1.0
    for k in range(max_n):
        product *= (correct[k] + _TINY) / (guess[k] + _SMALL)
        scores[f"bleu_{k + 1}"] = brevity * product ** (1 / (k + 1))
    return scores


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, bit-parallel over ``b`` (Allison-Dix / Hyyro recurrence)."""
    masks: dict[str, int] = {}
    for j, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << j)
    full = (1 << len(b)) - 1
    row = full
    for token in a:
        matched = row & masks.get(token, 0)
        row = ((row + matched) | (row - matched)) & full
    return len(b) - row.bit_count()


def rouge_l(references: Sequence[str | Sequence[str]], hypotheses: Sequence[str]) -> float:
    """coco ROUGE-L: per sample F = (1+b^2)PR/(R+b^2 P), b=1.2, with P and R the best LCS precision and
    recall over its references (0 when either is 0 or a text is empty); mean over samples."""
    return _rouge_l(_tokenized(references, hypotheses, ptb_tokenize))


def _rouge_l(pairs: Pairs) -> float:
    total = 0.0
    for refs, hyp_tokens in pairs:
        precision = recall = 0.0
        for ref_tokens in refs:
            if hyp_tokens and ref_tokens:
                lcs = _lcs_length(ref_tokens, hyp_tokens)
                precision = max(precision, lcs / len(hyp_tokens))
                recall = max(recall, lcs / len(ref_tokens))
        if precision > 0 and recall > 0:
            total += (1 + ROUGE_BETA**2) * precision * recall / (recall + ROUGE_BETA**2 * precision)
    return total / len(pairs)


@lru_cache(maxsize=1)
def _porter_stemmer():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer(mode=PorterStemmer.ORIGINAL_ALGORITHM)


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _porter_stemmer().stem(word)


def _align(hyp: list[str], ref: list[str]) -> dict[int, int]:
    """Hypothesis -> reference positions: exact matches first, then Porter stems on what is left.

    Each stage matches the most words it can; among the reference positions available for a word it
    prefers the one that continues the previous word's chunk, then the first one after it, so the
    alignment keeps few chunks.
    """
    aligned: dict[int, int] = {}
    used: set[int] = set()
    for key in (str, _stem):
        available: dict[str, list[int]] = {}
        for j, word in enumerate(ref):
            if j not in used:
                available.setdefault(key(word), []).append(j)
        previous = -1
        for i, word in enumerate(hyp):
            if i in aligned:
                previous = aligned[i]
                continue
            positions = available.get(key(word))
            if not positions:
                continue
            after = [j for j in positions if j > previous]
            j = previous + 1 if previous + 1 in positions else (after[0] if after else positions[0])
            positions.remove(j)
            aligned[i] = j
            used.add(j)
            previous = j
    return aligned


def _meteor_single(hyp: list[str], ref: list[str]) -> float:
    aligned = _align(hyp, ref)
    matches = len(aligned)
    if matches == 0:
        return 0.0
    pairs = sorted(aligned.items())
    breaks = sum(1 for (h0, r0), (h1, r1) in zip(pairs, pairs[1:], strict=False) if (h1 - h0, r1 - r0) != (1, 1))
    chunks = 1 + breaks
    precision, recall = matches / len(hyp), matches / len(ref)
    fmean = 10 * precision * recall / (recall + 9 * precision)
    return fmean * (1 - 0.5 * (chunks / matches) ** 3)


def meteor(references: Sequence[str | Sequence[str]], hypotheses: Sequence[str]) -> float:
    """Mean per-sample METEOR (best reference per sample); see ``METEOR_IMPLEMENTATION``."""
    return _meteor(_tokenized(references, hypotheses, ptb_tokenize))


def _meteor(pairs: Pairs) -> float:
    return sum(max(_meteor_single(hyp, ref) for ref in refs) for refs, hyp in pairs) / len(pairs)


@lru_cache(maxsize=1)
def _tokenizer_13a():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def _tokenize_13a(text: str) -> list[str]:
    return _tokenizer_13a()(text).split()


def hsenet_ngram_precision(
    references: Sequence[str | Sequence[str]], hypotheses: Sequence[str], max_n: int = 4
) -> dict[str, float]:
    """HSENet's reported "BLEU-1..4" as ``{"hsenet_precision_1": ...}`` (``HSENET_PRECISION_IMPLEMENTATION``).

    Per sample, precision_n = clipped n-gram matches / hypothesis n-grams on 13a tokens (0 when the
    hypothesis has no n-gram of order n); each is the mean over samples. Not BLEU: no brevity penalty, no
    geometric mean.
    """
    return _hsenet_precision(_tokenized(references, hypotheses, _tokenize_13a), max_n)


def _hsenet_precision(pairs: Pairs, max_n: int) -> dict[str, float]:
    totals = [0.0] * max_n
    for ref_tokens, hyp_tokens in pairs:
        for k in range(max_n):
            possible = len(hyp_tokens) - k
            if possible > 0:
                totals[k] += _clipped_matches(hyp_tokens, ref_tokens, k + 1) / possible
    return {f"hsenet_precision_{k + 1}": total / len(pairs) for k, total in enumerate(totals)}


def generation_scores(references: Sequence[str | Sequence[str]], hypotheses: Sequence[str]) -> dict[str, float]:
    """All text metrics: ``bleu_1..4`` (coco), ``meteor``, ``rouge_l``, ``hsenet_precision_1..4``."""
    ptb_pairs = _tokenized(references, hypotheses, ptb_tokenize)
    return {
        **_bleu(ptb_pairs, 4),
        "meteor": _meteor(ptb_pairs),
        "rouge_l": _rouge_l(ptb_pairs),
        **_hsenet_precision(_tokenized(references, hypotheses, _tokenize_13a), 4),
    }
