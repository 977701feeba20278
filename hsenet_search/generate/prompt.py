"""The merge prompt: the LLM rewrites the grounded composer's abnormal findings into one paragraph and
writes the impression; it is told to use only those sentences.

Written for small instruction models (SmolLM2-135M): one short instruction, one worked example in exactly
the answer format (``Findings:`` then ``Impression:``), then the sentences to merge, each with the ids of
the retrieved cases it came from, and the agreed abnormalities. The normal-system sentences are not sent:
the composer keeps them as they are. The overflow guard drops the last sentences first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hsenet_search.errors import QueryError

from .compose import Sentence

SYSTEM = (
    "You are a radiologist. Merge the given sentences into the findings of one chest CT report, then "
    "write its impression. Use only the facts in the sentences; add no other finding."
)

EXAMPLE = (
    "Sentences:\n- Emphysematous changes are observed in both lungs. [a]\n"
    "- Centriacinar emphysema is seen in both upper lobes. [b]\n"
    "- A 4 mm nodule is observed in the right lower lobe. [c]\n"
    "Abnormalities: Emphysema, Lung nodule.\n"
    "Findings: Centriacinar emphysematous changes are observed in both lungs, most in the upper lobes. "
    "A 4 mm nodule is observed in the right lower lobe.\n"
    "Impression: Emphysema in both lungs. Right lower lobe nodule."
)


@dataclass
class Prompt:
    """System and user messages, the sentences sent, and what the overflow guard did."""

    system: str
    user: str
    shown: list[Sentence]
    warnings: list[str] = field(default_factory=list)


def _user(shown: Sequence[Sentence], agreed: Sequence[str]) -> str:
    lines = "\n".join(f"- {s.text} [{', '.join(s.sources)}]" for s in shown)
    return (
        f"Example:\n{EXAMPLE}\n\nNow the new scan.\nSentences:\n{lines}\n"
        f"Abnormalities: {', '.join(agreed)}.\nWrite Findings: and Impression: as in the example."
    )


def build_prompt(
    sentences: Sequence[Sentence], agreed: Sequence[str], count_tokens: Callable[[str], int], budget_tokens: int
) -> Prompt:
    """The merge prompt for ``sentences`` (the composer's abnormal findings) within ``budget_tokens``."""
    if not sentences:
        raise QueryError("no sentences to merge")
    shown = list(sentences)
    system_tokens = count_tokens(SYSTEM)
    warnings = []
    while system_tokens + count_tokens(_user(shown, agreed)) > budget_tokens:
        if len(shown) == 1:
            raise QueryError(f"prompt budget of {budget_tokens} tokens cannot hold the drafting instructions")
        dropped = shown.pop()
        warnings.append(f"prompt over {budget_tokens} tokens: left out the sentence {dropped.text!r}")
    return Prompt(SYSTEM, _user(shown, agreed), shown, warnings)
