"""``hsenet-search generate``: draft a report for a scan from its most similar indexed cases."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import COMPOSER, Composer, DraftMode, console, print_json


def generate(
    path: Path = typer.Argument(..., help="NIfTI file or DICOM series folder of the new scan."),
    index: Path = typer.Option(..., "--index", help="Index of reference cases with reports."),
    k: int = typer.Option(5, "-k", "--k", min=1, help="Number of similar cases to ground the draft in."),
    mode: DraftMode = typer.Option(
        DraftMode.llm,
        "--mode",
        help="llm (LLM-merged grounded draft) | grounded "
        "(composer, no LLM) | nearest (nearest report) | vote (label-vote composer).",
    ),
    llm: str = typer.Option(
        "default",
        "--llm",
        help="default (SmolLM2-135M-Instruct, offline) | HF id "
        "| path | openai:http://HOST:PORT/v1#MODEL (token from $HSENET_LLM_API_KEY).",
    ),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=32),
    composer: Composer = COMPOSER,
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Retrieve the k most similar cases and draft Findings and Impression citing them."""
    from hsenet_search.engine import SearchEngine
    from hsenet_search.generate.draft import draft
    from hsenet_search.generate.grounding import ground
    from hsenet_search.generate.llm import load_llm

    engine = SearchEngine.open(index)
    cases = ground(engine, path, k)
    model = load_llm(llm, max_new_tokens=max_new_tokens) if mode is DraftMode.llm else None
    options = {"composer": composer.value} if mode in (DraftMode.grounded, DraftMode.llm) else {}
    result = draft(cases, mode=mode.value, llm=model, **options)
    if json_out:
        print_json(result.to_json())
        return
    console.print(f"[bold]Findings:[/] {result.findings}\n\n[bold]Impression:[/] {result.impression}\n")
    console.print(f"grounded in: {', '.join(result.retrieved)}  (mode {result.mode}, llm {result.llm})")
    console.print(
        "checks: "
        + ", ".join(f"{name} {'passed' if check['passed'] else 'FAILED'}" for name, check in result.checks.items())
    )
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
