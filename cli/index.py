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
    model: str | None = typer.Option(None, "--model", help="Trained model dir or 'default' (the shipped model)."),
    split: str = typer.Option("all", "--split", help="train | valid | all"),
    factory: str = typer.Option("IDMap2,Flat", "--factory", help="FAISS factory string (inner product)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=0, help="Decode/preprocess worker processes."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed build from its shards."),
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="Volumes per embedding shard (resume unit)."),
    device: str = typer.Option("auto", "--device"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Preprocessed-tensor cache directory."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index directory at --out."),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="Testing only: allow a config name (random weights)."
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        help="Embed on Ray Data: 'auto' starts a local Ray, "
        "an address (ray://host:10001 or host:6379) joins a cluster.",
    ),
    ray_cpus_per_task: float = typer.Option(
        1.0, "--ray-cpus-per-task", min=0.1, help="CPUs per read+preprocess task (--ray)."
    ),
    ray_gpus_per_actor: float = typer.Option(
        1.0, "--ray-gpus-per-actor", min=0.1, help="GPUs per encoder actor when the cluster has GPUs (--ray)."
    ),
    report_text: ReportText | None = typer.Option(
        None, "--report-text", help="Report text to embed (default: the model's own protocol)."
    ),
) -> None:
    """Embed every volume and report of DATA and write the index directory atomically."""
    from hsenet_search.index.builder import BuildConfig, build_index
    from hsenet_search.index.ray_build import RayOptions

    ray_options = RayOptions(ray, ray_cpus_per_task, ray_gpus_per_actor) if ray else None
    summary = build_index(
        BuildConfig(
            data=str(data),
            out=str(out),
            model=model,
            split=split,
            factory=factory,
            batch_size=batch_size,
            workers=workers,
            resume=resume,
            shard_size=shard_size,
            device=device,
            cache_dir=str(cache_dir) if cache_dir else None,
            overwrite=overwrite,
            random_weights=random_weights,
            ray=ray_options,
            report_text=report_text.value if report_text else None,
        )
    )
    console.print(summary.describe())


@app.command("add")
def add(
    index_dir: Path = typer.Argument(..., help="Existing index directory."),
    data: Path = typer.Argument(..., help="Dataset or manifest with the new cases."),
    split: str = typer.Option("all", "--split"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=0, help="Decode/preprocess worker processes."),
    device: str = typer.Option("auto", "--device"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Preprocessed-tensor cache directory."),
) -> None:
    """Add the cases of DATA that the index does not hold yet (encodes only what is new)."""
    from hsenet_search.index.builder import add_to_index

    summary = add_to_index(
        index_dir,
        str(data),
        split=split,
        batch_size=batch_size,
        workers=workers,
        device=device,
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    console.print(summary.describe())


@app.command("verify")
def verify(index_dir: Path = typer.Argument(..., help="Index directory.")) -> None:
    """Re-hash every file of the index (sha256) against its manifest; exit 2 on any difference."""
    from hsenet_search.index.store import open_index_dir

    manifest = open_index_dir(index_dir, verify="full")
    total = sum(info["size"] for info in manifest.files.values())
    console.print(f"{index_dir}: OK, {len(manifest.files)} files ({total / 1e6:.1f} MB) match the manifest's sha256")


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
    console.print(
        f"  volumes {counts['volumes']}  scans {counts['scans']}  reports {counts['reports']}  "
        f"failures {counts['failures']}"
    )
    console.print(
        f"  model {manifest['model_name']} ({manifest['model_fingerprint'][:12]}), "
        f"embedding {manifest['embedding']}, dims {manifest['dims']}"
    )
    console.print(
        f"  preprocessing {manifest['preprocessing'].get('name')} ({manifest['preprocessing_hash']}), "
        f"factory {manifest['factory']}, metric {manifest['metric']}"
    )
    console.print(f"  source {manifest['source']}  created {manifest['created']}")
