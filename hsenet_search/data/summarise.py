"""Report summaries for training text (BrgSA §2.1): a short list of key-finding sentences per unique report.

BrgSA replaces each report by LLM-summarised key findings and trains on at most five of those sentences.
The rule-based summariser here needs no LLM: it keeps the clauses in which the 18-label report labeler
finds a positive (not negated, not questioned) finding, with the words around it (side, lobe, size,
severity), drops negatives and repeats, and says "No significant abnormality." for a report with none.

An LLM summariser (:func:`llm_summariser`) asks any LLM the drafting code loads (the offline default
SmolLM2, a local transformers model or an OpenAI-compatible endpoint) for the report's key findings, one per
line; a reply with no usable sentence falls back to the rule-based summary (counted, never silent).

Summaries are cached per (summariser, report-text hash) as JSON files, so re-running over a dataset
only summarises reports it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hsenet_search.atomic import write_json

from .labels import explain_report, positive_clauses

NORMAL_SUMMARY = "No significant abnormality."
MAX_SENTENCES = 5  # BrgSA samples at most five summary sentences per training step


def report_hash(text: str) -> str:
    """Stable identity of a report text (whitespace-normalised)."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:32]


def rule_summary(report: str) -> list[str]:
    """Key-finding sentences of one report: positive labelled clauses, de-duplicated, in report order."""
    seen: set[str] = set()
    out: list[str] = []
    for clause in positive_clauses(report):
        key = " ".join(clause.lower().split())
        if key in seen:
            continue
        seen.add(key)
        out.append(clause[0].upper() + clause[1:] + ("" if clause.endswith(".") else "."))
    return out or [NORMAL_SUMMARY]


def draw_summary(sentences: Sequence[str], rng: random.Random, limit: int = MAX_SENTENCES) -> str:
    """A training text: at most ``limit`` of a summary's sentences, drawn at random, kept in their order."""
    if len(sentences) > limit:
        sentences = [sentences[i] for i in sorted(rng.sample(range(len(sentences)), limit))]
    return " ".join(sentences)


@dataclass(frozen=True)
class Summariser:
    """A named summariser: ``name`` keys its cache, ``summarise`` maps one report to sentences."""

    name: str
    summarise: Callable[[str], list[str]]


RULES = Summariser("rules-v1", rule_summary)

SUMMARY_SYSTEM = "You are a radiologist. You summarise chest CT reports."
SUMMARY_PROMPT = (
    "List the key abnormal findings of this chest CT report, one short sentence per line, at most five "
    "lines. Keep side, lobe and size. Leave out normal findings and negations. If nothing is abnormal, "
    f"answer '{NORMAL_SUMMARY}'\n\nReport:\n{{report}}"
)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)])\s*")


def reply_sentences(reply: str) -> list[str]:
    """Sentences of an LLM reply: one or more per line, bullets and numbering removed, repeats dropped."""
    out: list[str] = []
    for line in reply.splitlines():
        line = _BULLET.sub("", line).strip()
        for part in re.split(r"(?<=[.!?])\s+", line):
            part = part.strip()
            if not re.search("[A-Za-z]{3}", part):
                continue
            part = part[0].upper() + part[1:] + ("" if part.endswith((".", "!", "?")) else ".")
            if part not in out:
                out.append(part)
    return out


@dataclass
class LLMSummaries:
    """What an LLM summariser did: replies kept, replies that fell back to the rule-based summary."""

    kept: int = 0
    fallbacks: int = 0


def llm_summariser(spec: str = "default", max_new_tokens: int = 128, **llm_options) -> tuple[Summariser, LLMSummaries]:
    """A summariser backed by the LLM ``spec`` (``default``, a local path or hub id, ``openai:URL#MODEL``: see
    :func:`hsenet_search.generate.llm.load_llm`); its cache name carries the LLM's name and the prompt."""
    from hsenet_search.generate.llm import load_llm

    llm = load_llm(spec, max_new_tokens=max_new_tokens, **llm_options)
    stats = LLMSummaries()
    budget = llm.prompt_budget(max_new_tokens) - llm.count_tokens(SUMMARY_SYSTEM + SUMMARY_PROMPT)

    def summarise(report: str) -> list[str]:
        words = report.split()
        while words and llm.count_tokens(" ".join(words)) > budget:  # keep the start of an over-long report
            words = words[: int(len(words) * 0.9)]
        sentences = reply_sentences(llm.chat(SUMMARY_SYSTEM, SUMMARY_PROMPT.format(report=" ".join(words))))
        if not sentences:
            stats.fallbacks += 1
            return rule_summary(report)
        stats.kept += 1
        return sentences

    key = f"{llm.name}\0{SUMMARY_SYSTEM}\0{SUMMARY_PROMPT}\0{max_new_tokens}"
    return Summariser(f"llm-{hashlib.sha256(key.encode()).hexdigest()[:16]}", summarise), stats


class SummaryCache:
    """One JSON file per (summariser, report hash) under ``root``."""

    def __init__(self, root: str | Path, summariser: Summariser):
        self.dir = Path(root) / summariser.name
        self.summariser = summariser

    def get(self, text: str) -> list[str]:
        path = self.dir / f"{report_hash(text)}.json"
        if path.is_file():
            try:
                cached = json.loads(path.read_text())
                if isinstance(cached, list) and cached and all(isinstance(s, str) for s in cached):
                    return cached
            except (OSError, json.JSONDecodeError):
                pass  # a damaged entry is recomputed
        sentences = self.summariser.summarise(text)
        write_json(path, sentences, indent=None, durable=False)  # a lost entry is only recomputed
        return sentences


def summarise_reports(
    texts: Sequence[str], cache: SummaryCache, *, progress: Callable[[int], None] | None = None
) -> pd.DataFrame:
    """One row per unique report: ``report_hash``, ``report``, ``summary`` (list of sentences)."""
    rows: dict[str, dict] = {}
    for text in texts:
        key = report_hash(text)
        if key not in rows:
            rows[key] = {"report_hash": key, "report": text, "summary": cache.get(text)}
        if progress is not None:
            progress(1)
    return pd.DataFrame(list(rows.values()), columns=["report_hash", "report", "summary"])


def covers_labels(report: str, summary: Sequence[str]) -> bool:
    """True when the summary keeps every positive label of the report (the summariser's contract)."""
    before = {e.label for e in explain_report(report) if e.positive}
    after = {e.label for e in explain_report(" ".join(summary)) if e.positive}
    return before <= after
