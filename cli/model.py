"""``hsenet-search model``: describe a model, import an official HSENet CLIP checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .common import console, err_console, print_json

app = typer.Typer(help="Describe models and import official HSENet checkpoints.", no_args_is_help=True)
SLICE_INPUTS = {
    "none": "no 2E3 tower",
    "planes": "planes of the 3D input (our jointly trained slice tower)",
    "biomedclip": "official 2D slices -> BiomedCLIP trunk (or precomputed *_biomedclip_features.npy)",
    "features": "precomputed *_biomedclip_features.npy only (no BiomedCLIP trunk)",
}


def _render(info: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"model {info['name']} ({info['source']})", show_header=False)
    table.add_row("fingerprint", info["fingerprint"])
    table.add_row("embedding", f"{info['embedding']} ({info['embedding_dim']}-d)")
    table.add_row(
        "volume", f"img {tuple(info['img_size'])}, patch {tuple(info['patch_size'])}, grid {tuple(info['grid'])}"
    )
    table.add_row(
        "3D ViT",
        f"width {info['width']}, {info['layers']} layers, {info['heads']} heads, projection {info['projection_dim']}",
    )
    for name, tower in info["towers"].items():
        table.add_row(
            name,
            f"vision {tower['vision_params']:,} params, text trunk '{tower['text_trunk']}' "
            f"({tower['text_width']}-d{', frozen' if tower['text_frozen'] else ''}), "
            f"logit scale {tower['logit_scale']}",
        )
    text = info["text"]
    table.add_row("text", f"{text['source']}, {text['pooling']} pooling, max {text['max_length']} tokens")
    sl = info["slice_tower"]
    table.add_row(
        "slice tower", f"{sl['source']} ({sl['dim']}-d, {sl['params']:,} params{', frozen' if sl['frozen'] else ''})"
    )
    pk = info["packer"]
    table.add_row(
        "packer", "none" if pk is None else f"kernel {tuple(pk['kernel'])} -> {pk['tokens']} tokens x {pk['out_dim']}"
    )
    loc = info.get("localisation")
    table.add_row(
        "localisation head",
        "none" if loc is None else f"{loc['tower']}: {loc['bins']} bins of {loc['voxels_per_bin']} slices",
    )
    table.add_row("preprocessing", f"{info['preprocessing']['name']} ({info['preprocessing']['hash']})")
    table.add_row("2E3 slice input", SLICE_INPUTS[info["slice_input"]])
    table.add_row("report text", info["text_protocol"])
    table.add_row("parameters", f"{info['total_params']:,}")
    console.print(table)


@app.command("info")
def info(
    model_path: str | None = typer.Argument(
        None, help="Model dir, official checkpoint dir or config name (default: the shipped model)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a model: towers, sizes, embedding, fingerprint, preprocessing."""
    from hsenet_search.models import load_model

    summary = load_model(model_path).describe()
    if json_out:
        print_json(summary)
    else:
        _render(summary)


@app.command("import-official")
def import_official(
    src: Path = typer.Argument(..., help="Official HSENet_CLIP / HSENet-2E3-CLIP checkpoint directory."),
    out: Path = typer.Option(..., "--out", help="Output model directory (our format)."),
    text_model: Path | None = typer.Option(
        None,
        "--text-model",
        help="Local BERT folder (bert-base-uncased) with the tokenizer (and config) when the checkpoint lacks them.",
    ),
    text_config: Path | None = typer.Option(
        None, "--text-config", help="JSON of BERT config fields overriding the inferred ones."
    ),
    biomedclip: Path | None = typer.Option(
        None,
        "--biomedclip",
        help="Local open_clip BiomedCLIP checkpoint "
        "folder: the 2E3 tower's slice features are then computed from volumes.",
    ),
    embedding: str | None = typer.Option(
        None, "--embedding", help="stage1, stage2 or fusion (default: the official tower)."
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Convert an official checkpoint (strictly loaded) to a model directory."""
    from hsenet_search.errors import ModelError
    from hsenet_search.models.official import has_tokenizer
    from hsenet_search.models.official import import_official as run_import
    from hsenet_search.models.slice_tower import load_biomedclip_trunk

    if not (src / "config.json").is_file():
        raise ModelError("no config.json: not an official HSENet checkpoint folder", src)
    if text_model is None and not has_tokenizer(src):
        raise ModelError(
            "no BERT tokenizer files (vocab.txt) in the checkpoint; pass --text-model with a bert-base-uncased folder",
            src,
        )
    if text_model is not None and not has_tokenizer(text_model):
        raise ModelError("no BERT tokenizer files (vocab.txt) in --text-model", text_model)
    if biomedclip is not None:
        try:
            load_biomedclip_trunk(biomedclip)
        except ModelError as exc:
            raise ModelError(f"--biomedclip: {exc}") from exc
    with err_console.status(f"importing {src}", spinner="dots"):
        model = run_import(
            src, out, text_config=text_config, text_model=text_model, biomedclip=biomedclip, embedding=embedding
        )
    summary = {
        "out": str(out),
        "source": model.config.source,
        "fingerprint": model.fingerprint,
        "towers": list(model.towers),
        "embedding": model.config.embedding,
        "embedding_dim": model.embedding_dim,
        "slice_tower": model.config.slice_source,
        "slice_input": model.slice_input,
        "text_protocol": model.text_protocol,
    }
    if json_out:
        print_json(summary)
    else:
        console.print(
            f"imported {summary['source']} -> {out} (towers {', '.join(model.towers)}, "
            f"{summary['embedding']} {summary['embedding_dim']}-d, fingerprint {summary['fingerprint']})"
        )
        console.print(f"2E3 slice input: {SLICE_INPUTS[model.slice_input]}; report text: {model.text_protocol}")
