"""Report drafting from retrieved cases: LLM drafting with its guards, and the mode dispatcher.

LLM drafting asks the model for ``Findings:`` (the assistant turn is pre-filled with that header) and, when
the answer stops before an ``Impression:``, asks again with the cleaned findings pre-filled so the
impression is always the model's own. The answer is post-processed: other sections and chatter are cut,
the text stops at the first repeated sentence and a sentence cut off by the token limit is dropped. When
no usable findings remain (empty, whitespace, a repetition loop) the label-vote draft replaces them, with
a warning; a draft never has empty findings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hsenet_search.data.report_text import sentences, split_report_text
from hsenet_search.errors import QueryError

from .compose import (
    Draft,
    RetrievedCase,
    agreed_labels,
    check_cases,
    draft_nearest,
    draft_vote,
)
from .llm import LLM, load_llm
from .prompt import build_prompt

__all__ = ["Draft", "RetrievedCase", "agreed_labels", "draft", "draft_llm", "draft_nearest", "draft_vote",
           "parse_sections", "split_report_text"]

MODES = ("llm", "nearest", "vote")
_HEADER = re.compile(r"(?:\*\*|#+ *)?\b(findings?|impressions?|conclusions?)\b(?:\*\*)? *:(?:\*\*)?", re.IGNORECASE)
# Where a small model starts something other than the report: another example case, a new turn, a note.
_CUT = re.compile(r"\bCase \d+\b|<\|im_|\n\s*(?:Note|Explanation|Reports? of)\b|\bAbnormalities most of",
                  re.IGNORECASE)
_CHATTER = re.compile(r"^(?:sure|certainly|here is|here's|here are|i hope|i have|as an ai|note:|let me)\b",
                      re.IGNORECASE)
_NEAR_REPEAT = 0.6
_PROMPT_SLACK = 8  # tokens reserved for tokenisation differences at the joins of prompt pieces


def parse_sections(text: str) -> tuple[str, str]:
    """Split generated text into (findings, impression) at ``Findings:`` / ``Impression:`` headers.

    Text before any header counts as findings; a second findings header ends the report.
    """
    text = _CUT.split(text, maxsplit=1)[0]
    findings, impression, current, start = [], [], "findings", 0
    for match in _HEADER.finditer(text):
        (findings if current == "findings" else impression).append(text[start : match.start()])
        kind = "findings" if match.group(1).lower().startswith("finding") else "impression"
        if kind == "findings" and (impression or "".join(findings).strip()):
            start = None
            break
        current, start = kind, match.end()
    if start is not None:
        (findings if current == "findings" else impression).append(text[start:])
    return " ".join(findings).strip(), " ".join(impression).strip()


def _words(sentence: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", sentence.lower())


def complete(text: str) -> bool:
    return text.rstrip().endswith((".", "!", "?", ")"))


def clean(text: str) -> str:
    """Strip markdown and chatter, cut a repetition loop, drop a cut-off last sentence.

    A sentence is a repeat when it equals an earlier one or shares >= 60 % of its words (Jaccard) with the
    sentence before it; the loop starts at the second repeat in a row ("gland is thick." / "gland is thin."
    / ..., variations the n-gram guard lets through), and both repeats go. Single repeats stay: real
    reports repeat stock sentences ("No space-occupying lesion was detected." for liver and spleen).
    On the 800 real CT-RATE reports in shared/data this cuts 4 findings sections.
    """
    text = re.sub(r"\*\*|__|`|^\s*(?:[-*]|\d+[.)])\s+", " ", text, flags=re.MULTILINE)
    kept, seen, previous, previous_repeat = [], set(), set(), False
    for sentence in sentences(text):
        words = _words(sentence)
        key, bag = " ".join(words), set(words)
        repeat = key in seen or len(bag & previous) >= _NEAR_REPEAT * max(len(bag | previous), 1)
        if repeat and previous_repeat:
            kept.pop()
            break
        seen.add(key)
        previous, previous_repeat = bag, repeat
        kept.append(sentence)
    kept = [s for s in kept if not _CHATTER.match(s)]
    if len(kept) > 1 and not complete(kept[-1]):
        kept.pop()
    return " ".join(kept)


def usable(text: str) -> bool:
    """Whether text has real content: at least 3 distinct words and not a loop of a few words."""
    words = [w for w in _words(text) if not w.isdigit()]
    distinct = len(set(words))
    return distinct >= 3 and (len(words) < 20 or distinct / len(words) >= 0.2)


def draft_llm(cases: Sequence[RetrievedCase], llm: LLM, *, max_new_tokens: int | None = None,
              max_examples: int = 3) -> Draft:
    """Let ``llm`` draft Findings and Impression from the cases' reports and the labels they agree on.

    ``max_new_tokens`` (default: the LLM's) bounds both generation passes together: a quarter (at least
    16 tokens) is kept for the impression pass.
    """
    check_cases(cases)
    total = llm.config.max_new_tokens if max_new_tokens is None else max_new_tokens
    if total < 32:
        raise QueryError(f"max_new_tokens must be at least 32 to draft two sections, got {total}")
    impression_tokens = max(16, total // 4)
    findings_tokens = total - impression_tokens
    agreed = agreed_labels(cases)
    budget = llm.prompt_budget(total) - llm.count_tokens("Findings: \nImpression:") - _PROMPT_SLACK
    prompt = build_prompt(cases, agreed, llm.count_tokens, budget, max_examples=max_examples)
    warnings = list(prompt.warnings)

    answer = llm.chat(prompt.system, prompt.user, max_new_tokens=findings_tokens, prefill="Findings:")
    findings, impression = (clean(part) for part in parse_sections(answer))
    if usable(findings) and not (usable(impression) and complete(impression)):
        answer = llm.chat(prompt.system, prompt.user, max_new_tokens=impression_tokens,
                          prefill=f"Findings: {findings}\nImpression:")
        impression = clean(" ".join(parse_sections(answer)).strip())

    if not usable(findings):
        vote = draft_vote(cases)
        findings, impression = vote.findings, vote.impression
        warnings.append("the LLM produced no usable findings; used the label-vote draft")
    elif not usable(impression):
        impression = draft_vote(cases).impression
        warnings.append("the LLM produced no usable impression; used the label-vote impression")
    return Draft(findings, impression, [c.case_id for c in cases], agreed, llm.name, "llm", warnings)


def draft(cases: Sequence[RetrievedCase], mode: str = "llm", llm: LLM | None = None, **kw) -> Draft:
    """Draft a report in ``mode`` (``llm`` | ``nearest`` | ``vote``); ``llm`` mode loads the default LLM when
    none is given. Keyword arguments go to the mode's function."""
    check_cases(cases)
    if mode == "llm":
        return draft_llm(cases, llm if llm is not None else load_llm(), **kw)
    if mode == "nearest":
        return draft_nearest(cases, **kw)
    if mode == "vote":
        return draft_vote(cases, **kw)
    raise QueryError(f"unknown drafting mode {mode!r}; expected one of {', '.join(MODES)}")
