"""Checks every draft gets: label agreement with the neighbours, findings/impression consistency, repetition.

All three use the project's report labeler (``hsenet_search.data.labels.label_report``):

* **label agreement**: every abnormality the draft reports is one the retrieved cases agree on (the label
  vote); abnormalities some but not enough neighbours carry are listed as ``left_out`` with their votes;
* **consistency**: the labeler finds the same positive labels in the findings and in the impression;
* **repetition**: no sentence occurs twice (case and punctuation ignored) and none is cut off (every
  sentence ends with ``.``, ``!``, ``?`` or ``)``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hsenet_search.data.labels import label_report

CHECKS = ("label_agreement", "consistency", "repetition")


def complete(sentence: str) -> bool:
    """Whether a sentence ends like a finished sentence."""
    return sentence.rstrip().endswith((".", "!", "?", ")"))


def positive_labels(text: str) -> list[str]:
    """The labels the report labeler finds positive in ``text``, in CT-RATE order."""
    return [label for label, value in label_report(text).items() if value]


def sentence_key(sentence: str) -> str:
    """A sentence's words, lower-cased: equal keys mean the same sentence."""
    return " ".join(re.findall(r"[a-z0-9]+", sentence.lower()))


def label_votes(cases: Sequence) -> dict[str, int]:
    """How many of the retrieved cases carry each label."""
    votes: dict[str, int] = {}
    for case in cases:
        for label in set(case.labels):
            votes[label] = votes.get(label, 0) + 1
    return votes


def check_draft(
    findings_sentences: Sequence[str], impression_sentences: Sequence[str], cases: Sequence, agreed: Sequence[str]
) -> dict:
    """Run the three checks; each entry has ``passed`` and what it found."""
    findings, impression = " ".join(findings_sentences), " ".join(impression_sentences)
    found, concluded = positive_labels(findings), positive_labels(impression)
    votes = label_votes(cases)
    reported = found + [label for label in concluded if label not in found]
    unsupported = [label for label in reported if label not in agreed]
    left_out = {label: n for label, n in sorted(votes.items()) if label not in agreed}
    seen, repeated = set(), []
    for sentence in [*findings_sentences, *impression_sentences]:
        key = sentence_key(sentence)
        if key in seen:
            repeated.append(sentence)
        seen.add(key)
    truncated = [s for s in [*findings_sentences, *impression_sentences] if not complete(s)]
    return {
        "label_agreement": {
            "passed": not unsupported,
            "agreed": list(agreed),
            "unsupported": unsupported,
            "left_out": left_out,
            "neighbours": len(cases),
        },
        "consistency": {"passed": found == concluded, "findings_labels": found, "impression_labels": concluded},
        "repetition": {"passed": not repeated and not truncated, "repeated": repeated, "truncated": truncated},
    }


def failed(checks: dict) -> list[str]:
    """Names of the checks that did not pass."""
    return [name for name in CHECKS if not checks[name]["passed"]]
