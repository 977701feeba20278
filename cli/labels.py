"""``hsenet-search labels``: extract the 18 CT-RATE abnormality labels from radiology reports."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from .common import console, print_json

app = typer.Typer(help="Extract the 18 CT-RATE abnormality labels from report text.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Report labeller (rule-based: vocabulary per label, negation, uncertainty, report sections)."""


@app.command("extract")
def extract(
    reports: Path = typer.Argument(
        ..., help="CSV with report_text or Findings_EN/Impressions_EN, and an AccessionNo or VolumeName id column."
    ),
    out: Path = typer.Option(..., "--out", help="Output labels CSV: the id column + the 18 CT-RATE labels."),
    explain: bool = typer.Option(False, "--explain", help="Print the sentence that triggered each positive label."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing labels CSV at --out."),
) -> None:
    """Label every report of REPORTS and write LABELS.csv (rows in input order)."""
    from hsenet_search.data.labels import (
        LABELS,
        explain_report,
        extract_labels,
        prevalence,
        read_reports_csv,
        write_labels_csv,
    )
    from hsenet_search.outputs import OutputKind, check_output

    check_output(out, OutputKind.FILE, inputs=[reports], overwrite=overwrite, suffixes=(".csv",))
    start = time.perf_counter()
    id_column, ids, texts = read_reports_csv(reports)
    labels = extract_labels(texts, progress=not json_out)
    write_labels_csv(out, id_column, ids, labels)
    empty = sum(1 for t in texts if not t.strip())
    summary = {
        "reports": str(reports),
        "out": str(out),
        "id_column": id_column,
        "rows": len(ids),
        "empty_reports": empty,
        "positives": {label: int(n) for label, n in zip(LABELS, labels.sum(axis=0), strict=True)},
        "prevalence": prevalence(labels),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if explain:
        for row_id, text in zip(ids, texts, strict=True):
            console.print(f"[bold]{row_id}[/]", highlight=False)
            for e in explain_report(text):
                if e.positive:
                    hedge = " (hedged)" if e.hedged else ""
                    console.print(f"  {e.label}{hedge}: [cyan]{e.mention}[/] … {e.sentence}", highlight=False)
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"{len(ids)} reports → {out}  ({empty} empty)")
    table.add_column("label")
    table.add_column("positive", justify="right")
    table.add_column("prevalence", justify="right")
    for label in LABELS:
        table.add_row(label, str(summary["positives"][label]), f"{summary['prevalence'][label]:.1%}")
    console.print(table)
    console.print(
        f"id column {id_column}; {len(ids)} rows; {empty} empty reports (all labels 0); {summary['seconds']:.2f} s",
        highlight=False,
    )
