"""Report text: sections, sentences, and joining findings with impression (one place for each rule).

CT-RATE reports have a findings and an impression section; an absent section reads "Not given.". In the
one-column ``report_text`` form the impression starts at the first quote (or bullet).
"""

from __future__ import annotations

import re

NOT_GIVEN = "Not given."
_EMPTY = {"", NOT_GIVEN.lower(), "nan"}
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+|\s*["“”•·]\s*|\n+')
_IMPRESSION_START = re.compile(r'["“”•·]')


def clean_section(text: str | None) -> str:
    """A section stripped of surrounding space; "" for an empty, "Not given." or "nan" cell."""
    text = (text or "").strip()
    return "" if text.lower() in _EMPTY else text


def join_report(findings: str, impression: str) -> str:
    """The report text of a case: findings and impression joined by one space."""
    return f"{findings} {impression}".strip()


def sentences(text: str | None) -> list[str]:
    """Split report text into sentences, keeping their punctuation (quotes and bullets also separate)."""
    return [s.strip() for s in _SENTENCE_END.split(text or "") if s and s.strip(" .;,")]


def split_report_text(text: str | None) -> tuple[str, str]:
    """Split a CT-RATE ``report_text`` into (findings, impression): the impression starts at the first quote
    or bullet; without one the whole text is findings."""
    match = _IMPRESSION_START.search(text or "")
    if match is None:
        return (text or "").strip(), ""
    impression = " ".join(sentences(text[match.start() :]))
    return text[: match.start()].strip(), impression
