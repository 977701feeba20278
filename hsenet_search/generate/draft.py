"""Report drafting from retrieved cases: the mode dispatcher and LLM merging with its guards.

LLM mode starts from the grounded composer's draft (:func:`compose.draft_grounded`) and asks the model to
merge the abnormal findings into one paragraph and to write the impression (the assistant turn is
pre-filled with ``Findings:``). The answer is post-processed: other sections and chatter are cut, the text
stops at the first repetition loop and a sentence cut off by the token limit is dropped. The result then
goes through the checks (:mod:`checks`); a failing draft falls back to the composer's, with a warning.
Every mode's draft carries ``sentences`` (traced to the neighbours) and ``checks``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hsenet_search.data.report_text import sentences, split_report_text
from hsenet_search.errors import QueryError

from .checks import complete, failed
from .compose import (
    Draft,
    RetrievedCase,
    agreed_labels,
    attribute,
    check_cases,
    draft_grounded,
    draft_nearest,
    draft_vote,
    finish,
)
from .llm import LLM, load_llm
from .prompt import build_prompt

__all__ = [
    "Draft",
    "RetrievedCase",
    "agreed_labels",
    "draft",
    "draft_grounded",
    "draft_llm",
    "draft_nearest",
    "draft_vote",
    "parse_sections",
    "split_report_text",
]

MODES = ("llm", "grounded", "nearest", "vote")
_HEADER = re.compile(r"(?:\*\*|#+ *)?\b(findings?|impressions?|conclusions?)\b(?:\*\*)? *:(?:\*\*)?", re.IGNORECASE)
# Where a small model starts something other than the report: another example case, a new turn, a note.
_CUT = re.compile(
    r"\bCase \d+\b|<\|im_|\n\s*(?:Note|Explanation|Reports? of|Sentences:|Example:"
    r"|Abnormalities:)",
    re.IGNORECASE,
)
_CHATTER = re.compile(
    r"^(?:sure|certainly|here is|here's|here are|i hope|i have|as an ai|note:|let me)\b", re.IGNORECASE
)
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


def draft_llm(
    cases: Sequence[RetrievedCase], llm: LLM, *, max_new_tokens: int | None = None, min_fraction: float = 0.5
) -> Draft:
    """The grounded composer's draft, with its abnormal findings merged into one paragraph and the impression
    written by ``llm``.

    The composer's normal-system sentences stay as they are; the LLM's sentences are traced back to the
    neighbours (``origin`` ``retrieved`` when a neighbour's report holds the sentence, else ``llm``). A draft
    that fails a check (an abnormality the neighbours do not agree on, findings and impression reporting
    different labels, a repeated or cut-off sentence, no usable text) is replaced by the composer's draft,
    with a warning. With no agreed abnormality there is nothing to merge and the LLM is not called.
    """
    base = draft_grounded(cases, min_fraction)
    base.mode = "llm"
    abnormal = [s for s in base.sentences if s.section == "findings" and s.labels]
    if not abnormal:
        base.llm = f"{llm.name} (not called: no agreed abnormality to merge)"
        return base
    total = llm.config.max_new_tokens if max_new_tokens is None else max_new_tokens
    if total < 32:
        raise QueryError(f"max_new_tokens must be at least 32 to draft two sections, got {total}")
    budget = llm.prompt_budget(total) - _PROMPT_SLACK
    prompt = build_prompt(abnormal, base.labels, llm.count_tokens, budget)
    answer = llm.chat(prompt.system, prompt.user, max_new_tokens=total, prefill="Findings:")
    findings, impression = (clean(part) for part in parse_sections(answer))
    merged = attribute(findings, "findings", cases)
    first = base.sentences.index(abnormal[0])
    kept = [s for s in base.sentences if s.section == "findings" and not s.labels]
    sentences_ = kept[:first] + merged + kept[first:] + attribute(impression, "impression", cases)
    result = finish(
        Draft(
            " ".join(s.text for s in sentences_ if s.section == "findings"),
            impression,
            base.retrieved,
            base.labels,
            llm.name,
            "llm",
            prompt.warnings + base.warnings,
            sentences_,
        ),
        cases,
    )
    sections = (("findings", findings), ("impression", impression))
    problems = failed(result.checks) + [f"no usable {name}" for name, text in sections if not usable(text)]
    if problems:
        base.llm = f"{llm.name} (draft failed checks; grounded composer used)"
        base.warnings.append(f"the LLM draft failed: {', '.join(problems)}; used the grounded composer's draft")
        return base
    return result


def draft(cases: Sequence[RetrievedCase], mode: str = "llm", llm: LLM | None = None, **kw) -> Draft:
    """Draft a report in ``mode`` (``llm`` | ``nearest`` | ``vote``); ``llm`` mode loads the default LLM when
    none is given. Keyword arguments go to the mode's function."""
    check_cases(cases)
    if mode == "llm":
        return draft_llm(cases, llm if llm is not None else load_llm(), **kw)
    if mode == "nearest":
        return finish(draft_nearest(cases, **kw), cases)
    if mode == "vote":
        return finish(draft_vote(cases, **kw), cases)
    if mode == "grounded":
        return draft_grounded(cases, **kw)
    raise QueryError(f"unknown drafting mode {mode!r}; expected one of {', '.join(MODES)}")
