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
    extra_findings: bool = typer.Option(
        False,
        "--extra-findings",
        help="Also draw and report 5 never-labelled findings (truth in extra_findings/)",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset written earlier by data synth."),
) -> None:
    """Write a complete synthetic CT-RATE dataset (volumes, reports, labels, metadata)."""
    from hsenet_search.data.synth import generate_dataset
    from hsenet_search.outputs import OutputKind, check_output

    check_output(out, OutputKind.DATASET, inputs=[p for p in (labels_from, reports_from) if p], overwrite=overwrite)

    summary = generate_dataset(
        out,
        n,
        seed=seed,
        valid_fraction=valid_fraction,
        labels_from=labels_from,
        reports_from=reports_from,
        size=size,
        progress=True,
        extra_findings=extra_findings,
    )
    console.print(summary.describe())


@app.command("summarise")
def summarise(
    data: Path = typer.Argument(..., help="Dataset (CT-RATE layout or manifest) whose reports are summarised."),
    out: Path = typer.Option(..., "--out", help="Output Parquet file: report_hash, report, summary (sentences)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Summary cache (default: the user cache)."),
    summariser: str = typer.Option(
        "rules",
        "--summariser",
        help="rules (the labeler, no LLM) | default (SmolLM2, offline) | HF id | PATH | openai:URL#MODEL.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Key-finding summaries of every unique report (BrgSA training text), cached by report hash."""
    from hsenet_search.outputs import OutputKind, check_output

    check_output(out, OutputKind.FILE, inputs=[data], overwrite=overwrite, suffixes=(".parquet",))
    from rich.progress import Progress

    from hsenet_search.atomic import write_parquet
    from hsenet_search.data import summarise as sm
    from hsenet_search.data.cache import default_cache_root
    from hsenet_search.data.dataset import open_dataset

    texts = [case.report for case in open_dataset(data)]
    backend, stats = (sm.RULES, None) if summariser == "rules" else sm.llm_summariser(summariser)
    cache = sm.SummaryCache(cache_dir or default_cache_root() / "summaries", backend)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("summarising", total=len(texts))
        table = sm.summarise_reports(texts, cache, progress=lambda n: bar.advance(task, n))
    write_parquet(out, table)
    normal = int(table["summary"].map(lambda s: list(s) == [sm.NORMAL_SUMMARY]).sum())
    fallbacks = f"; {stats.fallbacks} unusable LLM replies replaced by the rule summary" if stats else ""
    console.print(
        f"{len(table)} unique reports from {len(texts)} volumes summarised with {backend.name} "
        f"({normal} with no positive finding{fallbacks}) → {out}"
    )


@app.command("snippets")
def snippets(
    data: Path = typer.Argument(..., help="Dataset (CT-RATE layout or manifest), or a reports CSV."),
    out: Path = typer.Option(..., "--out", help="Output Parquet file, one row per cited image."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Mine "series X image Y" references: sentence, cited image, slice index and z in mm."""
    from hsenet_search.outputs import OutputKind, check_output

    check_output(out, OutputKind.FILE, inputs=[data], overwrite=overwrite, suffixes=(".parquet",))
    import pandas as pd

    from hsenet_search.atomic import write_parquet
    from hsenet_search.data.dataset import open_dataset
    from hsenet_search.data.labels import read_reports_csv
    from hsenet_search.data.snippets import dataset_snippets, mine_snippets

    if data.is_file() and data.suffix.lower() == ".csv":
        id_column, ids, texts = read_reports_csv(data)
        rows = [{id_column: i, **s.to_row()} for i, text in zip(ids, texts, strict=True) for s in mine_snippets(text)]
        n_reports, key = len(texts), id_column
    else:
        cases = open_dataset(data)
        rows, n_reports, key = dataset_snippets(cases), len({c.scan_id for c in cases}), "scan_id"
    table = pd.DataFrame(rows)
    write_parquet(out, table)
    kept = int((table["dropped"] == "").sum()) if len(table) else 0
    citing = table[key].nunique() if len(table) else 0
    console.print(
        f"{len(table)} slice references in {citing} of {n_reports} reports; {kept} kept, "
        f"{len(table) - kept} dropped → {out}"
    )


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


def _refuse_existing(out: Path, overwrite: bool, source: Path) -> None:
    """``--out`` may not overlap the input; an existing non-empty one is refused unless ``--overwrite`` is given
    (these commands add files to a folder and never delete any)."""
    from hsenet_search.errors import HSENetError
    from hsenet_search.outputs import check_no_overlap

    check_no_overlap(out, [source])
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise HSENetError("exists and is not empty; pass --overwrite to write into it", out)


def _progress_bar(total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    return bar, bar.add_task("volumes", total=total)


@app.command("slices")
def slices(
    path: Path = typer.Argument(..., help="A volume (NIfTI, DICOM folder, .npy) or a dataset (CT-RATE dir, manifest)."),
    out: Path = typer.Option(
        ..., "--out", help="Output folder: slice_000.jpg ... (one folder per volume for a dataset)."
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="Decode/slice worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing non-empty --out."),
) -> None:
    """The official HSENet 2D slices (CT-RATE_nii_to_2D_slices.py): 32 axial JPEGs per volume."""
    from hsenet_search.slice_jobs import cases_of, is_dataset, write_case_slices

    _refuse_existing(out, overwrite, path)
    cases = cases_of(path)
    bar, task = _progress_bar(len(cases))
    with bar:
        summary = write_case_slices(
            cases, out, per_volume=is_dataset(path), workers=workers, on_progress=lambda: bar.advance(task)
        )
    console.print(summary.describe(str(out)))
    if summary.failures and not summary.written:
        raise typer.Exit(1)


@app.command("slice-features")
def slice_features(
    data: Path = typer.Argument(..., help="A dataset (CT-RATE dir, manifest) or a single volume."),
    biomedclip: Path = typer.Option(..., "--biomedclip", help="Local open_clip BiomedCLIP checkpoint folder."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for the .npy files (default: beside each volume, where build/search/embed find them).",
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="Decode/slice worker processes."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda for the BiomedCLIP trunk."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing non-empty --out."),
) -> None:
    """BiomedCLIP trunk CLS features (32, C) of the official 2D slices: <volume>_biomedclip_features.npy."""
    from hsenet_search.slice_jobs import BiomedCLIPEncoder, cases_of, write_slice_features

    if out is not None:
        _refuse_existing(out, overwrite, data)
    encoder = BiomedCLIPEncoder.load(biomedclip, device)
    cases = cases_of(data)
    bar, task = _progress_bar(len(cases))
    with bar:
        summary = write_slice_features(cases, encoder, out, workers=workers, on_progress=lambda: bar.advance(task))
    console.print(summary.describe(str(out) if out else "beside each volume"))
    if summary.failures and not summary.written:
        raise typer.Exit(1)
