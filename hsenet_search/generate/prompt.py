"""The merge prompt: the LLM merges the grounded composer's abnormal findings into the impression.

Written for small instruction models (SmolLM2-135M): one short instruction, one worked example as a real
user/assistant exchange in exactly the answer format, then the composer's abnormal findings, numbered; the
assistant turn is pre-filled with ``Impression:`` and generation stops at the end of that line. The
findings themselves stay the composer's sentences (asked to rewrite them too, the 135M model copied most
lines verbatim or made them worse, at about 2.5 times the new tokens). The overflow guard drops the last
sentences first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hsenet_search.errors import QueryError

from .compose import Sentence

SYSTEM = (
    "You are a radiologist. Write the impression of a chest CT report from its numbered findings: one short "
    "phrase per finding, in the same order, keeping side and location. Add nothing."
)
PREFILL = "Impression:"
EXAMPLE_USER = (
    "1. Centriacinar emphysematous changes are observed in both lung upper lobes.\n"
    "2. A nodule measuring 4 mm was observed in the right lower lobe."
)
EXAMPLE_ANSWER = f"{PREFILL} Emphysema in both lungs. Right lower lobe nodule."
EXAMPLES: tuple[tuple[str, str], ...] = ((EXAMPLE_USER, EXAMPLE_ANSWER),)


@dataclass
class Prompt:
    """System message, few-shot (user, assistant) turns, user message, the sentences sent (line ``i + 1`` is
    ``shown[i]``), and what the overflow guard did."""

    system: str
    examples: tuple[tuple[str, str], ...]
    user: str
    shown: list[Sentence]
    warnings: list[str] = field(default_factory=list)


def numbered(texts: Sequence[str]) -> str:
    """``1. first\\n2. second ...``: the findings' line format."""
    return "\n".join(f"{i}. {text}" for i, text in enumerate(texts, 1))


def chat_messages(system: str, examples: Sequence[tuple[str, str]], user: str) -> list[dict[str, str]]:
    """OpenAI-style chat messages: the system turn, the few-shot (user, assistant) turns, the user turn."""
    messages = [{"role": "system", "content": system}]
    for shot_user, shot_answer in examples:
        messages += [{"role": "user", "content": shot_user}, {"role": "assistant", "content": shot_answer}]
    return [*messages, {"role": "user", "content": user}]


def build_prompt(sentences: Sequence[Sentence], count_tokens: Callable[[str], int], budget_tokens: int) -> Prompt:
    """The merge prompt for ``sentences`` (the composer's abnormal findings) within ``budget_tokens``."""
    if not sentences:
        raise QueryError("no sentences to merge")
    shown = list(sentences)
    fixed = count_tokens(SYSTEM) + sum(count_tokens(u) + count_tokens(a) for u, a in EXAMPLES)
    warnings = []
    while fixed + count_tokens(numbered([s.text for s in shown])) > budget_tokens:
        if len(shown) == 1:
            raise QueryError(f"prompt budget of {budget_tokens} tokens cannot hold the drafting instructions")
        dropped = shown.pop()
        warnings.append(f"prompt over {budget_tokens} tokens: left out the sentence {dropped.text!r}")
    return Prompt(SYSTEM, EXAMPLES, numbered([s.text for s in shown]), shown, warnings)
