"""Report summaries for training text (BrgSA §2.1): a short list of key-finding sentences per unique report.

BrgSA replaces each report by LLM-summarised key findings and trains on at most five of those sentences.
The rule-based summariser here needs no LLM: it keeps the clauses in which the 18-label report labeler
finds a positive (not negated, not questioned) finding, with the words around it (side, lobe, size,
severity), drops negatives and repeats, and says "No significant abnormality." for a report with none.

Summaries are cached per (summariser, report-text hash) as JSON files, so re-running over a dataset
only summarises reports it has not seen.
"""

from __future__ import annotations

import hashlib
import json
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


@dataclass(frozen=True)
class Summariser:
    """A named summariser: ``name`` keys its cache, ``summarise`` maps one report to sentences."""

    name: str
    summarise: Callable[[str], list[str]]


RULES = Summariser("rules-v1", rule_summary)


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
