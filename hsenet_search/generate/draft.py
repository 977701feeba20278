"""Report drafting from retrieved cases: the mode dispatcher and LLM merging with its guards.

LLM mode starts from the grounded composer's draft (:func:`compose.draft_grounded`). The impression
sentences the anchor (nearest) report does not hold itself are the LLM's to write (with the ``sections``
composer, the whole impression): it gets the abnormal findings reporting their labels as numbered lines and
merges them into impression phrases (:mod:`prompt`; greedy, a token budget sized to the lines, generation
stops at the end of the impression line). The answer is cleaned (chatter, loops and a cut-off last sentence
go), cut to one sentence per finding line, and replaces those composer sentences only when it reports
exactly the labels of the lines sent, with no new number, side or content and no repeated or cut-off
sentence (:func:`impression_problem`); otherwise the composer's impression stays, with a warning. The
draft then goes through the checks (:mod:`checks`); a failing draft falls back to the composer's. Every
mode's draft carries ``sentences`` (traced to the neighbours) and ``checks``; LLM drafts also ``merge``
(what was kept, what the call cost).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hsenet_search.data.report_text import sentences, split_report_text
from hsenet_search.errors import QueryError

from .checks import complete, failed, positive_labels, sentence_key
from .compose import (
    Draft,
    RetrievedCase,
    Sentence,
    agreed_labels,
    anchor_case,
    attribute,
    check_cases,
    draft_grounded,
    draft_nearest,
    draft_vote,
    finish,
)
from .llm import LLM, load_llm
from .prompt import EXAMPLES, PREFILL, build_prompt

__all__ = [
    "Draft",
    "RetrievedCase",
    "agreed_labels",
    "draft",
    "draft_grounded",
    "draft_llm",
    "draft_nearest",
    "draft_vote",
    "split_report_text",
]

MODES = ("llm", "grounded", "nearest", "vote")
_CHATTER = re.compile(
    r"^(?:sure|certainly|here is|here's|here are|i hope|i have|as an ai|note:|let me)\b", re.IGNORECASE
)
_NEAR_REPEAT = 0.6
_PROMPT_SLACK = 8  # tokens reserved for tokenisation differences at the joins of prompt pieces
_TOKENS_PER_LINE = 14  # new-token budget of the impression: this per finding line sent ...
_TOKENS_EXTRA = 12  # ... plus this
_SIDES = {"right": "right", "left": "left", "both": "bilateral", "bilateral": "bilateral"}
_NEW_CONTENT = 0.3  # an impression may bring at most this share of content words the findings lack
# Words an impression may add freely: report verbs, articles, prepositions (content words compare as stems).
_FREE = set(
    "a an the is are was were be been there this these that with and of in on at to from as also both "
    "seen observed noted detected present shows visible which its their it some areas area changes change "
    "appearance findings finding".split()
)


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


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:[.,]\d+)?", text))


def _sides(text: str) -> set[str]:
    return {_SIDES[w] for w in _words(text) if w in _SIDES}


def _stems(text: str) -> set[str]:
    """Content words as stems: the first 5 letters without a plural s ("lungs" and "lung" are one)."""
    return {w[:5].rstrip("s") for w in _words(text) if len(w) > 2 and not w.isdigit() and w not in _FREE}


def impression_problem(text: str, findings: str, merged: str, taken: set[str]) -> str | None:
    """Why the LLM's impression ``text`` may not replace the composer's, or ``None``.

    It must be complete, usable sentences that report exactly the labels of ``findings`` (in drafting, the
    finding lines sent), with no number, side (right/left/bilateral) or more than 30 % content words
    (5-letter stems) that the ``merged`` finding lines lack, and no repeated sentence (``taken``: the keys
    of the sentences the draft keeps)."""
    parts = sentences(text)
    if not parts or not usable(text):
        return "no usable impression"
    if not all(complete(p) for p in parts):
        return "cut off"
    if set(positive_labels(text)) != set(positive_labels(findings)):
        return "labels differ from the findings"
    if not _numbers(text) <= _numbers(merged):
        return "new number"
    if not _sides(text) <= _sides(merged):
        return "new side"
    stems = _stems(text)
    if len(stems - _stems(merged)) > _NEW_CONTENT * len(stems):
        return "new content"
    keys = [sentence_key(p) for p in parts]
    if len(set(keys)) < len(keys) or set(keys) & taken:
        return "repeated sentence"
    return None


def merge_plan(base: Draft, cases: Sequence[RetrievedCase]) -> tuple[list[Sentence], list[Sentence]]:
    """What the LLM merge of a grounded draft ``base`` keeps and sends: the impression sentences the anchor
    report holds itself (none with the ``sections`` composer), and the abnormal findings reporting the
    labels of the other impression sentences (the LLM's to rewrite; none: nothing to merge)."""
    anchor = anchor_case(cases).case_id
    impression = [s for s in base.sentences if s.section == "impression"]
    own = [s for s in impression if s.origin == "retrieved" and anchor in s.sources]
    kept = own if base.composer == "anchored" else []
    open_labels = {label for s in impression if s not in kept for label in s.labels}
    return kept, [s for s in base.sentences if s.section == "findings" and set(s.labels) & open_labels]


def draft_llm(
    cases: Sequence[RetrievedCase],
    llm: LLM,
    *,
    max_new_tokens: int | None = None,
    min_fraction: float = 0.5,
    composer: str = "anchored",
) -> Draft:
    """The grounded composer's draft with the impression sentences the anchor (nearest) report does not
    hold rewritten by ``llm`` from the findings lines that report their labels, kept only when the LLM's
    text passes :func:`impression_problem` (see the module docstring).

    ``merge`` records per draft: the finding lines sent, who wrote those impression sentences, why the
    LLM's were not used (``rejected``), the ``outcome`` (``merged``: the LLM's impression kept;
    ``composer``: not kept, or the assembled draft failed a check and the composer's draft was used) and
    the call's token counts and seconds. With nothing to merge (no agreed abnormality, or the anchor's own
    impression sentences conclude every finding) the LLM is not called.
    """
    base = draft_grounded(cases, min_fraction, composer)
    base.mode = "llm"
    findings = [s for s in base.sentences if s.section == "findings"]
    kept, abnormal = merge_plan(base, cases)
    if not abnormal:
        reason = "the anchor's impression concludes the findings" if base.labels else "no agreed abnormality"
        base.llm = f"{llm.name} (not called: {reason})"
        base.merge = {"outcome": "not called"}
        return base
    cap = llm.config.max_new_tokens if max_new_tokens is None else max_new_tokens
    if cap < 16:
        raise QueryError(f"max_new_tokens must be at least 16 to write an impression, got {cap}")
    prompt = build_prompt(abnormal, llm.count_tokens, llm.prompt_budget(cap, len(EXAMPLES)) - _PROMPT_SLACK)
    new = min(cap, _TOKENS_PER_LINE * len(prompt.shown) + _TOKENS_EXTRA)
    answer = llm.chat(
        prompt.system, prompt.user, examples=prompt.examples, max_new_tokens=new, prefill=PREFILL, one_line=True
    )
    # one phrase per finding line: a small model often goes on with the worked example's next phrase
    text = " ".join(sentences(clean(answer.strip().split("\n", 1)[0]))[: len(prompt.shown)])
    findings_text = " ".join(s.text for s in findings)
    merged = " ".join(s.text for s in prompt.shown)
    taken = {sentence_key(s.text) for s in [*findings, *kept]}
    problem = impression_problem(text, merged, merged, taken)
    merge = {
        "sentences": len(prompt.shown),
        "impression": "llm" if problem is None else "composer",
        "rejected": problem,
        "outcome": "merged" if problem is None else "composer",
        **getattr(llm, "last_usage", {}),
    }
    if problem is not None:
        base.llm = f"{llm.name} (impression not used: {problem}; grounded composer's draft)"
        base.warnings = [*prompt.warnings, f"LLM impression not used ({problem}): {text!r}", *base.warnings]
        base.merge = merge
        return base
    sources = tuple(dict.fromkeys(c for s in abnormal for c in s.sources))
    written = [
        s if s.origin == "retrieved" else Sentence(s.text, "impression", sources, s.labels, "llm")
        for s in attribute(text, "impression", cases)
    ]
    result = finish(
        Draft(
            findings_text,
            " ".join(s.text for s in [*kept, *written]),
            base.retrieved,
            base.labels,
            llm.name,
            "llm",
            prompt.warnings + base.warnings,
            findings + kept + written,
            merge=merge,
            composer=base.composer,
        ),
        cases,
    )
    if problems := failed(result.checks):
        base.llm = f"{llm.name} (draft failed checks; grounded composer used)"
        base.warnings.append(f"the LLM draft failed: {', '.join(problems)}; used the grounded composer's")
        base.merge = {**merge, "impression": "composer", "outcome": "composer", "failed_checks": problems}
        return base
    return result


def draft(cases: Sequence[RetrievedCase], mode: str = "llm", llm: LLM | None = None, **kw) -> Draft:
    """Draft a report in ``mode`` (``llm`` | ``grounded`` | ``nearest`` | ``vote``); ``llm`` mode loads the
    default LLM when none is given. Keyword arguments go to the mode's function (``composer`` to the grounded
    and llm modes)."""
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
