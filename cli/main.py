"""Entry point: ``hsenet-search`` assembles the command groups and turns user errors into one line."""

from __future__ import annotations

import sys
import warnings

import typer

from hsenet_search.errors import HSENetError

from .common import err_console

app = typer.Typer(
    name="hsenet-search",
    help="Cross-modal chest-CT ⇄ report search on the HSENet model family.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from . import bench, data, embed, generate, index, labels, locate, model, search, serve, train

    app.add_typer(data.app, name="data")
    app.command("train")(train.train)
    app.add_typer(embed.app, name="embed")
    app.add_typer(index.app, name="index")
    app.add_typer(search.app, name="search")
    app.command("locate")(locate.locate)
    app.add_typer(bench.app, name="bench")
    app.add_typer(labels.app, name="labels")
    app.add_typer(model.app, name="model")
    app.command("generate")(generate.generate)
    app.command("serve")(serve.serve)


_register()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. a constant volume) as one line on stderr, without the source line."""
    err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def main() -> None:
    """Run the CLI; user errors print one line on stderr and exit with status 2."""
    warnings.showwarning = _show_warning
    try:
        app()
    except HSENetError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
