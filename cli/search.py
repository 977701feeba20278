"""``hsenet-search search``: text → volume, volume → volume/report, report → report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import Target, console, print_json

app = typer.Typer(help="Query an index.", no_args_is_help=True)

INDEX = typer.Option(..., "--index", help="Index directory.")
K = typer.Option(10, "-k", "--k", help="Number of hits.")
LABEL = typer.Option([], "--label", help="Keep only cases with this label (repeatable; applied inside FAISS).")
JSON = typer.Option(False, "--json", help="Print JSON {query, hits:[...]}.")
NO_COLLAPSE = typer.Option(False, "--all-reconstructions", help="Do not collapse reconstructions of one scan.")
HUBNESS = typer.Option(False, "--hubness", help="Querybank-normalised (dynamic inverted softmax) scores.")
MODEL = typer.Option(None, "--model", help="Model dir (default: the one recorded in the index).")
NPROBE = typer.Option(
    None, "--nprobe", min=1, help="IVF lists visited for this query (default: the index's tuned value)."
)
EF_SEARCH = typer.Option(None, "--ef-search", min=1, help="HNSW efSearch for this query (default: tuned).")


def _params(nprobe: int | None, ef_search: int | None) -> dict[str, float] | None:
    params = {name: value for name, value in (("nprobe", nprobe), ("efSearch", ef_search)) if value is not None}
    return params or None


def _snippet(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _render(result, json_out: bool) -> None:
    if json_out:
        print_json(result.to_json())
        return
    table = Table(title=f"{result.target} for: {_snippet(str(result.query), 70)}", show_lines=False)
    for col in ("#", "score", "scan" if result.target == "volumes" else "report of", "labels", "impression"):
        table.add_column(col, overflow="fold")
    for h in result.hits:
        table.add_row(
            str(h.rank),
            f"{h.score:.3f}",
            h.scan_id,
            ", ".join(h.labels) or "normal",
            _snippet(h.impression or h.findings),
        )
    console.print(table)
    if not result.hits:
        console.print("no hits (the label filter matched no case)")


def _engine(index: Path, model: str | None, parts: str = "all"):
    """Text queries with the index's own model load only its text side (a fast cold start)."""
    from hsenet_search.engine import SearchEngine

    return SearchEngine.open(index, model=model, parts=parts if model is None else "all")


@app.command("text")
def text(
    query: str = typer.Argument(...),
    index: Path = INDEX,
    k: int = K,
    label: list[str] = LABEL,
    json_out: bool = JSON,
    all_recons: bool = NO_COLLAPSE,
    hubness: bool = HUBNESS,
    model: str | None = MODEL,
    nprobe: int | None = NPROBE,
    ef_search: int | None = EF_SEARCH,
    with_where: bool = typer.Option(
        True,
        "--where/--no-where",
        help="With --json and a model with a localisation head, place the query in each hit (loads the vision "
        "side and reads the hit volumes); --no-where keeps the text-only cold start.",
    ),
) -> None:
    """Find the volumes that best match a findings-style text (with --json and a model with a localisation
    head, each hit also says where in the scan the text is: ``where`` = image number and z in mm)."""
    engine = _engine(index, model, "text")
    where = json_out and with_where and bool(getattr(engine.model.config, "localisation", False))
    if where and not hasattr(engine.model, "require_localisation_head"):
        engine = _engine(index, model)  # the vision side is needed to place the query in each hit
    result = engine.search_text(
        query, k, labels=label, collapse=not all_recons, hubness=hubness, params=_params(nprobe, ef_search)
    )
    _render(engine.add_where(result) if where else result, json_out)


@app.command("volume")
def volume(
    path: Path = typer.Argument(..., help="NIfTI file or DICOM series folder."),
    index: Path = INDEX,
    k: int = K,
    target: Target = typer.Option(Target.volumes, "--target", help="What to search."),
    label: list[str] = LABEL,
    json_out: bool = JSON,
    all_recons: bool = NO_COLLAPSE,
    hubness: bool = HUBNESS,
    model: str | None = MODEL,
    nprobe: int | None = NPROBE,
    ef_search: int | None = EF_SEARCH,
) -> None:
    """Find similar cases (or the closest reports) for a scan."""
    _render(
        _engine(index, model).search_volume(
            path,
            k,
            target=target.value,
            labels=label,
            collapse=not all_recons,
            hubness=hubness,
            params=_params(nprobe, ef_search),
        ),
        json_out,
    )


@app.command("report")
def report(
    query: str = typer.Argument(...),
    index: Path = INDEX,
    k: int = K,
    json_out: bool = JSON,
    model: str | None = MODEL,
    nprobe: int | None = NPROBE,
    ef_search: int | None = EF_SEARCH,
) -> None:
    """Find reports similar to a report text."""
    _render(_engine(index, model, "text").search_report(query, k, params=_params(nprobe, ef_search)), json_out)
