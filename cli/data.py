"""``hsenet-search data``: synthesise CT-RATE-layout datasets and inspect volumes or datasets."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, print_json

app = typer.Typer(help="Synthesise and inspect CT data.", no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Output dataset directory (CT-RATE layout)."),
    n: int = typer.Option(200, "--n", min=1, help="Number of scans (reports) to generate."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the output is deterministic for a seed."),
    valid_fraction: float = typer.Option(0.2, "--valid-fraction", min=0.0, max=1.0),
    labels_from: Path | None = typer.Option(None, "--labels-from", help="Condition volumes on this labels CSV."),
    reports_from: Path | None = typer.Option(None, "--reports-from", help="Pair volumes with this CSV's report text."),
    size: str = typer.Option("tiny", "--size", help="Volume size: tiny (fast, CPU) or ctrate (512x512, CT-RATE-like)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset written earlier by data synth."),
) -> None:
    """Write a complete synthetic CT-RATE dataset (volumes, reports, labels, metadata)."""
    from hsenet_search.data.synth import generate_dataset
    from hsenet_search.outputs import OutputKind, check_output

    check_output(out, OutputKind.DATASET, inputs=[p for p in (labels_from, reports_from) if p], overwrite=overwrite)

    summary = generate_dataset(
        out, n, seed=seed, valid_fraction=valid_fraction, labels_from=labels_from,
        reports_from=reports_from, size=size, progress=True,
    )
    console.print(summary.describe())


@app.command("inspect")
def inspect(
    path: Path = typer.Argument(
        ..., readable=False, help="A NIfTI/.npy file, a DICOM series folder or a dataset."
    ),  # unreadable paths get the reader's one-line error, not click's usage box
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a volume (shape, spacing, orientation, HU statistics) or a dataset (counts, labels)."""
    from hsenet_search.data.inspect import inspect_path, render_inspection

    info = inspect_path(path)
    if json_out:
        print_json(info)
    else:
        console.print(render_inspection(info))
