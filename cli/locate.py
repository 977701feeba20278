"""``hsenet-search locate``: where in a scan each text is (the model's localisation head)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import console, print_json

_BARS = "▁▂▃▄▅▆▇█"


def _sparkline(profile: list[float]) -> str:
    top = max(profile) or 1.0
    return "".join(_BARS[min(len(_BARS) - 1, int(p / top * (len(_BARS) - 1) + 0.5))] for p in profile)


def locate(
    scan: str = typer.Argument(..., help="Volume file / DICOM folder, or (with --index) an indexed scan id."),
    text: list[str] = typer.Option(..., "--text", help="Finding text to locate (repeatable)."),
    model: str | None = typer.Option(None, "--model", help="Model dir (default: the shipped model)."),
    index: Path | None = typer.Option(None, "--index", help="Index directory: SCAN may be one of its scan ids."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON {scan, results:[...]}."),
) -> None:
    """Predict the image number (1-based along the file's third voxel axis) each text refers to."""
    from hsenet_search.errors import HSENetError

    if model is not None and index is not None:
        raise HSENetError("give --model or --index, not both")
    if index is not None:
        from hsenet_search.engine import SearchEngine

        result = SearchEngine.open(index).locate(scan, text)
    else:
        from hsenet_search.locate import locate as run
        from hsenet_search.models import load_model

        if not Path(scan).exists():
            raise HSENetError("no such volume file or DICOM folder", scan)
        result = run(load_model(model).eval(), scan, text)
    if json_out:
        print_json(result.to_json())
        return
    table = Table(title=f"where in {result.scan}")
    for col in ("text", "image", "z mm", "confidence", "profile (inferior → superior bins)"):
        table.add_column(col, overflow="fold")
    for r in result.results:
        table.add_row(r.text, str(r.image_number), f"{r.z_mm:.1f}", f"{r.confidence:.2f}", _sparkline(r.profile))
    console.print(table)
    console.print(f"bins of {result.results[0].bin_mm:.1f} mm: a position is good to about half a bin")
