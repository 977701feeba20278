"""The drafting prompt: a short instruction, the most similar reports as examples, the agreed labels.

Written for small instruction models (SmolLM2-135M): few, short parts, the examples in exactly the
``Findings:`` / ``Impression:`` format the answer must use, and the agreed labels last, next to the
request. The overflow guard fits the prompt into a token budget by dropping the lowest-ranked examples
first and then truncating the remaining report at sentence boundaries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hsenet_search.data.report_text import sentences
from hsenet_search.errors import QueryError

from .compose import RetrievedCase

SYSTEM = ("You are a radiologist. Write the chest CT report of a new scan with exactly two sections, "
          "'Findings:' and 'Impression:'.")


@dataclass
class Prompt:
    """System and user messages, the case ids shown as examples, and what the overflow guard did."""

    system: str
    user: str
    shown: list[str]
    warnings: list[str] = field(default_factory=list)


def _example(rank: int, case: RetrievedCase, findings: list[str], impression: list[str]) -> str:
    return (f"Case {rank} (id {case.case_id}, similarity {case.score:.2f})\n"
            f"Findings: {' '.join(findings)}\nImpression: {' '.join(impression)}")


def _user(examples: list[str], agreed: Sequence[str]) -> str:
    if agreed:
        request = (f"Abnormalities most of the similar scans share: {', '.join(agreed)}.\n"
                   "Write the report of the new scan in the same style: describe these abnormalities and state "
                   "that the other structures are normal.")
    else:
        request = ("Abnormalities most of the similar scans share: none.\n"
                   "Write the report of the new scan in the same style: a normal chest CT.")
    return "Reports of the most similar earlier scans, most similar first:\n\n" + "\n\n".join(examples) + (
        "\n\n" + request)


def _most_that_fit(n: int, fits: Callable[[int], bool]) -> int:
    """Largest ``k`` in ``[0, n]`` with ``fits(k)`` (``fits`` is monotone decreasing), or -1 if none."""
    if not fits(0):
        return -1
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def build_prompt(cases: Sequence[RetrievedCase], agreed: Sequence[str], count_tokens: Callable[[str], int],
                 budget_tokens: int, *, max_examples: int = 3) -> Prompt:
    """Build the prompt from the ``max_examples`` highest-ranked cases with a report, within ``budget_tokens``
    (system + user, counted with ``count_tokens``)."""
    with_text = [c for c in cases if c.findings.strip() or c.impression.strip()][:max_examples]
    if not with_text:
        raise QueryError("none of the retrieved cases has report text to ground a draft")
    texts = [(sentences(c.findings), sentences(c.impression)) for c in with_text]
    system_tokens = count_tokens(SYSTEM)

    def render(parts: list[tuple[list[str], list[str]]]) -> str:
        shown = zip(with_text, parts, strict=False)  # the first len(parts) cases
        return _user([_example(i + 1, c, f, imp) for i, (c, (f, imp)) in enumerate(shown)], agreed)

    def size(parts: list[tuple[list[str], list[str]]]) -> int:
        return system_tokens + count_tokens(render(parts))

    warnings = []
    while len(texts) > 1 and size(texts) > budget_tokens:
        dropped = with_text[len(texts) - 1]
        texts.pop()
        warnings.append(f"prompt over {budget_tokens} tokens: dropped example case {dropped.case_id}")
    if size(texts) > budget_tokens:
        findings, impression = texts[0]
        keep_f = _most_that_fit(len(findings), lambda k: size([(findings[:k], impression)]) <= budget_tokens)
        if keep_f >= 0:
            texts = [(findings[:keep_f], impression)]
        else:
            keep_i = _most_that_fit(len(impression), lambda k: size([([], impression[:k])]) <= budget_tokens)
            if keep_i < 0:
                raise QueryError(f"prompt budget of {budget_tokens} tokens cannot hold the drafting instructions")
            texts = [([], impression[:keep_i])]
        kept = len(texts[0][0]) + len(texts[0][1])
        warnings.append(f"prompt over {budget_tokens} tokens: truncated case {with_text[0].case_id} to {kept} of "
                        f"{len(findings) + len(impression)} sentences")
    return Prompt(SYSTEM, render(texts), [c.case_id for c in with_text[: len(texts)]], warnings)
