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
) -> None:
    """Write a complete synthetic CT-RATE dataset (volumes, reports, labels, metadata)."""
    from hsenet_search.data.synth import generate_dataset

    summary = generate_dataset(
        out, n, seed=seed, valid_fraction=valid_fraction, labels_from=labels_from,
        reports_from=reports_from, size=size, progress=True,
    )
    console.print(summary.describe())


@app.command("inspect")
def inspect(
    path: Path = typer.Argument(..., help="A NIfTI/.npy file, a DICOM series folder or a dataset."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a volume (shape, spacing, orientation, HU statistics) or a dataset (counts, labels)."""
    from hsenet_search.data.inspect import inspect_path, render_inspection

    info = inspect_path(path)
    if json_out:
        print_json(info)
    else:
        console.print(render_inspection(info))


def _refuse_existing(out: Path, overwrite: bool) -> None:
    """An existing non-empty ``--out`` is refused unless ``--overwrite`` is given."""
    from hsenet_search.errors import HSENetError

    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise HSENetError("exists and is not empty; pass --overwrite to write into it", out)


def _progress_bar(total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console)
    return bar, bar.add_task("volumes", total=total)


@app.command("slices")
def slices(
    path: Path = typer.Argument(..., help="A volume (NIfTI, DICOM folder, .npy) or a dataset (CT-RATE dir, manifest)."),
    out: Path = typer.Option(..., "--out", help="Output folder: slice_000.jpg ... (one folder per volume "
                                               "for a dataset)."),
    workers: int = typer.Option(0, "--workers", min=0, help="Decode/slice worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing non-empty --out."),
) -> None:
    """The official HSENet 2D slices (CT-RATE_nii_to_2D_slices.py): 32 axial JPEGs per volume."""
    from hsenet_search.slice_jobs import cases_of, is_dataset, write_case_slices

    _refuse_existing(out, overwrite)
    cases = cases_of(path)
    bar, task = _progress_bar(len(cases))
    with bar:
        summary = write_case_slices(cases, out, per_volume=is_dataset(path), workers=workers,
                                    on_progress=lambda: bar.advance(task))
    console.print(summary.describe(str(out)))
    if summary.failures and not summary.written:
        raise typer.Exit(1)


@app.command("slice-features")
def slice_features(
    data: Path = typer.Argument(..., help="A dataset (CT-RATE dir, manifest) or a single volume."),
    biomedclip: Path = typer.Option(..., "--biomedclip", help="Local open_clip BiomedCLIP checkpoint folder."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the .npy files (default: beside each volume, "
                                                       "where build/search/embed find them)."),
    workers: int = typer.Option(0, "--workers", min=0, help="Decode/slice worker processes."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda for the BiomedCLIP trunk."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing non-empty --out."),
) -> None:
    """BiomedCLIP trunk CLS features (32, C) of the official 2D slices: <volume>_biomedclip_features.npy."""
    from hsenet_search.slice_jobs import BiomedCLIPEncoder, cases_of, write_slice_features

    if out is not None:
        _refuse_existing(out, overwrite)
    encoder = BiomedCLIPEncoder.load(biomedclip, device)
    cases = cases_of(data)
    bar, task = _progress_bar(len(cases))
    with bar:
        summary = write_slice_features(cases, encoder, out, workers=workers, on_progress=lambda: bar.advance(task))
    console.print(summary.describe(str(out) if out else "beside each volume"))
    if summary.failures and not summary.written:
        raise typer.Exit(1)
