"""The ``hsenet-search`` typer application (installed as ``hsenet_search.cli``)."""
