"""Report-generation benchmark: draft each evaluated scan's report from its neighbours in an index.

A scan's own report never grounds its draft: hits of the same scan, and hits whose report text
equals the reference, are excluded (an index built on all splits would otherwise leak the answer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rich.progress import Progress

from hsenet_search.data.cases import Case
from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.report_text import join_report
from hsenet_search.generate.checks import CHECKS


@dataclass
class GenerationRun:
    """Drafts, references and timings of one mode."""

    mode: str
    llm: str
    references: list[str]
    hypotheses: list[str]
    seconds_per_draft: list[float]
    scan_ids: list[str]
    checks: list[dict]
    llms: list[str]

    def metrics(self) -> dict:
        from .clinical import clinical_efficacy_from_text
        from .text_metrics import generation_scores

        return {
            "mode": self.mode,
            "llm": self.llm,
            "n": len(self.references),
            "text": generation_scores(self.references, self.hypotheses),
            "clinical_efficacy": clinical_efficacy_from_text(self.references, self.hypotheses),
            "checks_passed": {name: float(np.mean([c[name]["passed"] for c in self.checks])) for name in CHECKS},
            "fell_back": sum("grounded composer" in llm for llm in self.llms),
            "latency_s": {
                "mean": float(np.mean(self.seconds_per_draft)),
                "p50": float(np.percentile(self.seconds_per_draft, 50)),
                "p90": float(np.percentile(self.seconds_per_draft, 90)),
            },
        }


def one_case_per_scan(cases: list[Case]) -> list[Case]:
    seen: dict[str, Case] = {}
    for case in cases:
        seen.setdefault(case.scan_id, case)
    return list(seen.values())


def run_generation(
    engine,
    data: str,
    *,
    split: str = "valid",
    mode: str = "vote",
    llm=None,
    k: int = 5,
    limit: int | None = None,
    progress: bool = True,
) -> GenerationRun:
    """Draft every evaluated scan of ``data`` (first ``limit``) with ``mode``."""
    from hsenet_search.generate.draft import draft
    from hsenet_search.generate.grounding import ground

    cases = one_case_per_scan(open_dataset(data, split=split))[:limit]
    refs, hyps, secs, ids, checks, llms = [], [], [], [], [], []
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"drafting ({mode})", total=len(cases))
        for case in cases:
            retrieved = ground(
                engine, case.path, k, rescale=case.rescale, exclude_scan=case.scan_id, exclude_text=case.report
            )
            t0 = time.perf_counter()
            result = draft(retrieved, mode=mode, llm=llm)
            secs.append(time.perf_counter() - t0)
            refs.append(case.report)
            hyps.append(join_report(result.findings, result.impression))
            ids.append(case.scan_id)
            checks.append(result.checks)
            llms.append(result.llm)
            bar.update(task, advance=1)
    return GenerationRun(mode, getattr(llm, "name", "none"), refs, hyps, secs, ids, checks, llms)


def generation_markdown(payload: dict) -> str:
    """One table row per mode: corpus BLEU-1..4, METEOR, ROUGE-L, CE P/R/F1, share of drafts passing each
    check, latency."""
    lines = [
        "### Report generation",
        "",
        f"Drafts for split `{payload['split']}` grounded in the top-{payload['k']} neighbours "
        "(own scan and identical report excluded).",
        "",
        "| mode | N | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CE P | CE R | CE F1 "
        "| agree % | consist. % | no-repeat % | s/draft |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in payload["runs"]:
        t, ce = run["text"], run["clinical_efficacy"]["micro"]
        bleu = [t[f"bleu_{i}"] for i in range(1, 5)]
        lines.append(
            f"| {run['mode']} ({run['llm']}) | {run['n']} | "
            + " | ".join(f"{b:.3f}" for b in bleu)
            + f" | {t['meteor']:.3f} | {t['rouge_l']:.3f} | {ce['precision']:.3f} | {ce['recall']:.3f} | "
            f"{ce['f1']:.3f} | "
            + " | ".join(f"{100 * run['checks_passed'][c]:.0f}" for c in CHECKS)
            + f" | {run['latency_s']['mean']:.2f} |"
        )
    return "\n".join(lines) + "\n"
