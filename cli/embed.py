"""``hsenet-search embed``: embed a report text or a volume with a model."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, print_json

app = typer.Typer(help="Embed text or a volume.", no_args_is_help=True)


def _show(kind: str, source: str, model, vector, json_out: bool) -> None:
    values = [round(float(v), 6) for v in vector]
    if json_out:
        print_json(
            {
                "kind": kind,
                "input": source,
                "model": model.fingerprint,
                "embedding": model.config.embedding,
                "dim": len(values),
                "vector": values,
            }
        )
    else:
        head = ", ".join(f"{v:+.4f}" for v in values[:8])
        console.print(
            f"{kind} embedding ({len(values)}-d, {model.config.embedding}, model {model.fingerprint[:12]}):"
            f" [{head}, ...]"
        )


@app.command("text")
def text(
    query: str = typer.Argument(..., help="Report or query text."),
    model_path: str | None = typer.Option(None, "--model", help="Model dir or name (default: the shipped model)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Embed a text with the model's text tower (L2-normalised)."""
    import torch

    from hsenet_search.errors import QueryError
    from hsenet_search.models import load_model

    if not query.strip():
        raise QueryError("the text is empty")
    model = load_model(model_path).eval()
    with torch.no_grad():
        vec = model.encode_text([query])[0]
    _show("text", query, model, vec.tolist(), json_out)


@app.command("volume")
def volume(
    path: Path = typer.Argument(..., help="NIfTI file, DICOM series folder or preprocessed .npy."),
    model_path: str | None = typer.Option(None, "--model", help="Model dir or name (default: the shipped model)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Embed a volume by the index build's road (CT-RATE metadata rescale and spacing when inside its layout)."""
    from hsenet_search.embedding import embed_input
    from hsenet_search.models import load_model

    model = load_model(model_path).eval()
    vec = embed_input(model, path)[0]
    _show("volume", str(path), model, vec.tolist(), json_out)
