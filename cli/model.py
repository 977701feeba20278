"""``hsenet-search model``: describe a model, import an official HSENet CLIP checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .common import console, err_console, print_json

app = typer.Typer(help="Describe models and import official HSENet checkpoints.", no_args_is_help=True)


def describe(model) -> dict[str, Any]:
    """A JSON-able summary of a loaded :class:`HSENetCLIP`."""
    cfg = model.config

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    towers = {}
    for name in model.towers:
        stage = model.stages[name]
        text = model.text_tower(name)
        towers[name] = {
            "vision_params": count(stage.vision_encoder),
            "projection_params": count(stage.mm_vision_proj) + count(stage.mm_language_proj),
            "packer_params": count(stage.packer),
            "text_trunk": cfg.text_trunk_key(name),
            "text_width": text.width,
            "text_frozen": text.frozen,
            "logit_scale": round(float(model.logit_scale(name).detach()), 4),
        }
    return {
        "name": cfg.name,
        "source": cfg.source,
        "fingerprint": model.fingerprint,
        "embedding": cfg.embedding,
        "embedding_dim": model.embedding_dim,
        "towers": towers,
        "img_size": list(cfg.img_size),
        "patch_size": list(cfg.patch_size),
        "grid": list(cfg.grid),
        "width": cfg.width, "layers": cfg.layers, "heads": cfg.heads, "projection_dim": cfg.projection_dim,
        "text": {"source": cfg.text_source, "pooling": cfg.text_pooling, "max_length": cfg.text_max_length,
                 "trunk_params": {k: count(t) for k, t in model.text_towers.items()}},
        "slice_tower": {"source": cfg.slice_source, "dim": cfg.slice_dim, "params": count(model.slice_tower),
                        "frozen": bool(model.slice_tower is not None and model.slice_tower.frozen)},
        "packer": None if cfg.packer_out_dim is None else {"kernel": list(cfg.packer_kernel),
                                                            "out_dim": cfg.packer_out_dim,
                                                            "tokens": model.stages["stage1"].packer.num_windows},
        "logit_scale_mode": cfg.logit_scale_mode,
        "preprocessing": {"name": model.preprocessing.get("name"), "hash": model.preprocessing.get("hash")},
        "total_params": count(model),
    }


def _render(info: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"model {info['name']} ({info['source']})", show_header=False)
    table.add_row("fingerprint", info["fingerprint"])
    table.add_row("embedding", f"{info['embedding']} ({info['embedding_dim']}-d)")
    table.add_row("volume", f"img {tuple(info['img_size'])}, patch {tuple(info['patch_size'])}, "
                            f"grid {tuple(info['grid'])}")
    table.add_row("3D ViT", f"width {info['width']}, {info['layers']} layers, {info['heads']} heads, "
                            f"projection {info['projection_dim']}")
    for name, tower in info["towers"].items():
        table.add_row(name, f"vision {tower['vision_params']:,} params, text trunk '{tower['text_trunk']}' "
                            f"({tower['text_width']}-d{', frozen' if tower['text_frozen'] else ''}), "
                            f"logit scale {tower['logit_scale']}")
    text = info["text"]
    table.add_row("text", f"{text['source']}, {text['pooling']} pooling, max {text['max_length']} tokens")
    sl = info["slice_tower"]
    table.add_row("slice tower", f"{sl['source']} ({sl['dim']}-d, {sl['params']:,} params"
                                 f"{', frozen' if sl['frozen'] else ''})")
    pk = info["packer"]
    table.add_row("packer", "none" if pk is None else f"kernel {tuple(pk['kernel'])} -> {pk['tokens']} tokens x "
                                                      f"{pk['out_dim']}")
    table.add_row("preprocessing", f"{info['preprocessing']['name']} ({info['preprocessing']['hash']})")
    table.add_row("parameters", f"{info['total_params']:,}")
    console.print(table)


@app.command("info")
def info(
    model_path: str | None = typer.Argument(None, help="Model dir, official checkpoint dir or config name "
                                                       "(default: the shipped model)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a model: towers, sizes, embedding, fingerprint, preprocessing."""
    from hsenet_search.models import load_model

    summary = describe(load_model(model_path))
    if json_out:
        print_json(summary)
    else:
        _render(summary)


@app.command("import-official")
def import_official(
    src: Path = typer.Argument(..., help="Official HSENet_CLIP / HSENet-2E3-CLIP checkpoint directory."),
    out: Path = typer.Option(..., "--out", help="Output model directory (our format)."),
    text_config: Path | None = typer.Option(None, "--text-config",
                                            help="JSON of BERT config fields overriding the inferred ones."),
    biomedclip: Path | None = typer.Option(None, "--biomedclip",
                                           help="Local open_clip BiomedCLIP checkpoint dir for the 2E3 slice tower."),
    embedding: str | None = typer.Option(None, "--embedding",
                                         help="stage1, stage2 or fusion (default: the official tower)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Convert an official checkpoint (strictly loaded) to a model directory."""
    from hsenet_search.models.official import import_official as run_import

    with err_console.status(f"importing {src}", spinner="dots"):
        model = run_import(src, out, text_config=text_config, biomedclip=biomedclip, embedding=embedding)
    summary = {"out": str(out), "source": model.config.source, "fingerprint": model.fingerprint,
               "towers": list(model.towers), "embedding": model.config.embedding,
               "embedding_dim": model.embedding_dim, "slice_tower": model.config.slice_source}
    if json_out:
        print_json(summary)
    else:
        console.print(f"imported {summary['source']} -> {out} (towers {', '.join(model.towers)}, "
                      f"{summary['embedding']} {summary['embedding_dim']}-d, fingerprint {summary['fingerprint']})")
