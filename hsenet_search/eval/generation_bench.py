"""Report-generation benchmark: draft each evaluated scan's report from its neighbours in an index.

A scan's own report never grounds its draft: hits of the same scan, and hits whose report text
equals the reference, are excluded (an index built on all splits would otherwise leak the answer).
Every mode drafts from the same retrieved cases (one retrieval per scan); the LLM mode may stop after the
first ``llm_limit`` scans, and the tables then also compare every mode on those scans alone.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.progress import Progress

from hsenet_search.data.cases import Case
from hsenet_search.data.dataset import open_dataset
from hsenet_search.data.report_text import join_report
from hsenet_search.eval.provenance import spread
from hsenet_search.generate.checks import CHECKS, failed

MERGE_OUTCOMES = ("merged", "composer", "not called")


@dataclass
class GenerationRun:
    """Drafts, references, timings and checks of one mode (``merges``: the LLM mode's ``Draft.merge``)."""

    mode: str
    llm: str
    references: list[str] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)
    seconds_per_draft: list[float] = field(default_factory=list)
    scan_ids: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    merges: list[dict] = field(default_factory=list)

    def subset(self, scan_ids: Sequence[str]) -> GenerationRun:
        """This run restricted to ``scan_ids`` (in this run's order)."""
        keep = set(scan_ids)
        rows = [i for i, scan in enumerate(self.scan_ids) if scan in keep]

        def pick(values: list) -> list:
            return [values[i] for i in rows] if values else []

        return GenerationRun(
            self.mode,
            self.llm,
            *(pick(v) for v in (self.references, self.hypotheses, self.seconds_per_draft, self.scan_ids)),
            pick(self.checks),
            pick(self.merges),
        )

    def metrics(self) -> dict:
        from .clinical import clinical_efficacy_from_text
        from .text_metrics import generation_scores

        secs = self.seconds_per_draft
        result = {
            "mode": self.mode,
            "llm": self.llm,
            "n": len(self.references),
            "text": generation_scores(self.references, self.hypotheses),
            "clinical_efficacy": clinical_efficacy_from_text(self.references, self.hypotheses),
            "checks_passed": {name: float(np.mean([c[name]["passed"] for c in self.checks])) for name in CHECKS},
            "all_checks_passed": float(np.mean([not failed(c) for c in self.checks])),
            "seconds_per_draft": {**spread(secs), "mean": float(np.mean(secs))},
        }
        if self.merges:
            outcomes = Counter(m.get("outcome", "not called") for m in self.merges)
            called = [m for m in self.merges if "new_tokens" in m]
            result["merge"] = {
                "outcomes": {name: outcomes.get(name, 0) for name in MERGE_OUTCOMES},
                "llm_called": len(called),
                "lines_sent": sum(m["sentences"] for m in called),
                "impression_by_llm": sum(m["impression"] == "llm" for m in called),
                "rejected": dict(Counter(m["rejected"] for m in called if m["rejected"])),
                "failed_checks": sum(bool(m.get("failed_checks")) for m in called),
                "prompt_tokens": spread([m["prompt_tokens"] for m in called]) if called else None,
                "new_tokens": spread([m["new_tokens"] for m in called]) if called else None,
                "llm_seconds": spread([m["seconds"] for m in called]) if called else None,
            }
        return result


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
    modes: Sequence[str] = ("vote",),
    llm=None,
    k: int = 5,
    limit: int | None = None,
    llm_limit: int | None = None,
    progress: bool = True,
    composer: str = "anchored",
) -> list[GenerationRun]:
    """Draft every evaluated scan of ``data`` (first ``limit``) in each of ``modes`` from the same retrieved
    cases (the grounded and llm modes with ``composer``); the ``llm`` mode drafts only the first
    ``llm_limit`` scans. Modes run interleaved per scan, so
    load from other processes hits them alike."""
    from hsenet_search.generate.draft import draft
    from hsenet_search.generate.grounding import ground

    cases = one_case_per_scan(open_dataset(data, split=split))[:limit]
    runs = {m: GenerationRun(m, getattr(llm, "name", "none") if m == "llm" else "none") for m in modes}
    llm_cases = len(cases) if llm_limit is None else min(llm_limit, len(cases))
    drafts = sum(llm_cases if m == "llm" else len(cases) for m in modes)
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"drafting ({', '.join(modes)})", total=drafts)
        for i, case in enumerate(cases):
            retrieved = ground(
                engine, case.path, k, rescale=case.rescale, exclude_scan=case.scan_id, exclude_text=case.report
            )
            for mode, run in runs.items():
                if mode == "llm" and llm_limit is not None and i >= llm_limit:
                    continue
                t0 = time.perf_counter()
                options = {"composer": composer} if mode in ("grounded", "llm") else {}
                result = draft(retrieved, mode=mode, llm=llm if mode == "llm" else None, **options)
                run.seconds_per_draft.append(time.perf_counter() - t0)
                run.references.append(case.report)
                run.hypotheses.append(join_report(result.findings, result.impression))
                run.scan_ids.append(case.scan_id)
                run.checks.append(result.checks)
                if mode == "llm":
                    run.merges.append(result.merge)
                bar.update(task, advance=1)
    return list(runs.values())


def generation_payload(runs: Sequence[GenerationRun]) -> dict:
    """``runs``: every mode on all its scans; ``runs_on_llm_scans``: every mode on the scans the LLM mode
    drafted, when that is fewer than the others."""
    payload = {"runs": [run.metrics() for run in runs]}
    llm = next((run for run in runs if run.mode == "llm"), None)
    if llm is not None and any(len(run.scan_ids) > len(llm.scan_ids) for run in runs):
        payload["runs_on_llm_scans"] = [run.subset(llm.scan_ids).metrics() for run in runs]
    return payload


def _table(runs: list[dict]) -> list[str]:
    lines = [
        "| mode | N | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CE P | CE R | CE F1 "
        "| agree % | consist. % | no-repeat % | s/draft median [min–max] |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        t, ce, sec = run["text"], run["clinical_efficacy"]["micro"], run["seconds_per_draft"]
        bleu = [t[f"bleu_{i}"] for i in range(1, 5)]
        lines.append(
            f"| {run['mode']} ({run['llm']}) | {run['n']} | "
            + " | ".join(f"{b:.3f}" for b in bleu)
            + f" | {t['meteor']:.3f} | {t['rouge_l']:.3f} | {ce['precision']:.3f} | {ce['recall']:.3f} | "
            f"{ce['f1']:.3f} | "
            + " | ".join(f"{100 * run['checks_passed'][c]:.0f}" for c in CHECKS)
            + f" | {sec['median']:.3f} [{sec['min']:.3f}–{sec['max']:.3f}] |"
        )
    return lines


def generation_markdown(payload: dict) -> str:
    """One table row per mode: corpus BLEU-1..4, METEOR, ROUGE-L, CE P/R/F1, share of drafts passing each
    check, seconds per draft; the same on the LLM's scans alone; what the LLM merge kept."""
    lines = [
        "### Report generation",
        "",
        f"Drafts for split `{payload['split']}` grounded in the top-{payload['k']} neighbours "
        "(own scan and identical report excluded).",
        "",
        *_table(payload["runs"]),
    ]
    if "runs_on_llm_scans" in payload:
        n = next(run["n"] for run in payload["runs_on_llm_scans"] if run["mode"] == "llm")
        lines += ["", f"Every mode on the {n} scans the LLM mode drafted:", ""]
        lines += _table(payload["runs_on_llm_scans"])
    for run in payload["runs"]:
        if "merge" in run:
            m = run["merge"]
            outcomes = ", ".join(f"{name} {count}" for name, count in m["outcomes"].items())
            rejected = ", ".join(f"{why} {n}" for why, n in m["rejected"].items()) or "none"
            lines += [
                "",
                f"LLM merge ({run['llm']}, {run['n']} drafts): {outcomes}. The LLM was called for "
                f"{m['llm_called']} drafts ({m['lines_sent']} finding lines); its impression was kept in "
                f"{m['impression_by_llm']}; rejected: {rejected}; {m['failed_checks']} assembled drafts failed "
                "a check.",
            ]
            if m["new_tokens"]:
                lines[-1] += (
                    f" Per call (median [min–max]): prompt {m['prompt_tokens']['median']:.0f} tokens, new "
                    f"{m['new_tokens']['median']:.0f} [{m['new_tokens']['min']:.0f}–{m['new_tokens']['max']:.0f}]"
                    f", {m['llm_seconds']['median']:.1f} s [{m['llm_seconds']['min']:.1f}–"
                    f"{m['llm_seconds']['max']:.1f}] in generate."
                )
    return "\n".join(lines) + "\n"
