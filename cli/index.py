"""``hsenet-search index``: build, extend and describe index directories."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import ReportText, console, print_json

app = typer.Typer(help="Build and manage FAISS index directories.", no_args_is_help=True)


@app.command("build")
def build(
    data: Path = typer.Argument(..., help="CT-RATE-layout dataset directory or manifest CSV/Parquet."),
    out: Path = typer.Option(..., "--out", help="Index directory to write, e.g. indexes/NAME."),
    model: str | None = typer.Option(None, "--model", help="Model dir or name (default: the shipped model)."),
    split: str = typer.Option("all", "--split", help="train | valid | all"),
    factory: str = typer.Option("IDMap2,Flat", "--factory", help="FAISS factory string (inner product)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=0, help="Decode/preprocess worker processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed build from its shards."),
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="Volumes per embedding shard (resume unit)."),
    device: str = typer.Option("auto", "--device"),
    report_text: ReportText | None = typer.Option(
        None, "--report-text", help="Report text to embed (default: the model's own protocol)."),
) -> None:
    """Embed every volume and report of DATA and write the index directory atomically."""
    from hsenet_search.index.builder import BuildConfig, build_index

    summary = build_index(BuildConfig(data=str(data), out=str(out), model=model, split=split, factory=factory,
                                      batch_size=batch_size, workers=workers, resume=resume,
                                      shard_size=shard_size, device=device,
                                      report_text=report_text.value if report_text else None))
    console.print(summary.describe())


@app.command("add")
def add(
    index_dir: Path = typer.Argument(..., help="Existing index directory."),
    data: Path = typer.Argument(..., help="Dataset or manifest with the new cases."),
    split: str = typer.Option("all", "--split"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=0),
) -> None:
    """Append the cases of DATA that the index does not hold yet."""
    from hsenet_search.index.builder import add_to_index

    summary = add_to_index(index_dir, str(data), split=split, batch_size=batch_size, workers=workers)
    console.print(summary.describe())


@app.command("info")
def info(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Show an index's manifest: model, preprocessing, dims, factory, counts, source."""
    from hsenet_search.index.store import open_index_dir

    manifest = open_index_dir(index_dir).to_dict()
    if json_out:
        print_json(manifest)
        return
    counts = manifest["counts"]
    console.print(f"[bold]{index_dir}[/]  format v{manifest['format_version']}")
    console.print(f"  volumes {counts['volumes']}  scans {counts['scans']}  reports {counts['reports']}  "
                  f"failures {counts['failures']}")
    console.print(f"  model {manifest['model_name']} ({manifest['model_fingerprint'][:12]}), "
                  f"embedding {manifest['embedding']}, dims {manifest['dims']}")
    console.print(f"  preprocessing {manifest['preprocessing'].get('name')} ({manifest['preprocessing_hash']}), "
                  f"factory {manifest['factory']}, metric {manifest['metric']}")
    console.print(f"  source {manifest['source']}  created {manifest['created']}")
