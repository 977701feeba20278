"""``hsenet-search bench``: retrieval and zero-shot benchmarks with the published protocols."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console

app = typer.Typer(help="Benchmarks: R@k, volume→volume, zero-shot, report generation.", no_args_is_help=True)

INDEX = typer.Option(None, "--index", help="Evaluate the embeddings stored in this index directory.")
DATA = typer.Option(None, "--data", help="Or embed this dataset (all splits) with --model first.")
MODEL = typer.Option(None, "--model", help="Model for --data (default: the shipped model).")
SPLIT = typer.Option("valid", "--split", help="Split to evaluate.")
UNIT = typer.Option("scan", "--unit", help="scan (one reconstruction per scan) or reconstruction.")
OUT = typer.Option(None, "--out", help="Write FILE.json, FILE.md (and FILE.png) here.")


def _embeddings(index: Path | None, data: Path | None, model: str | None, tmp: str):
    from hsenet_search.errors import HSENetError
    from hsenet_search.eval.bench import build_temporary_index, load_index_embeddings

    if (index is None) == (data is None):
        raise HSENetError("give exactly one of --index DIR or --data DIR")
    if data is not None:
        index = build_temporary_index(data, model, Path(tmp))
    return load_index_embeddings(index)


def _bank(emb, split: str, unit: str):
    other = "train" if split != "train" else "valid"
    return emb.split(other, unit) if (emb.metadata["split"] == other).any() else None


def _write(out: Path | None, payload: dict, markdown: str) -> None:
    from hsenet_search.eval.report import write_json

    console.print(markdown)
    if out is not None:
        write_json(out.with_suffix(".json"), payload)
        out.with_suffix(".md").write_text(markdown)
        console.print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


@app.command("retrieval")
def retrieval(index: Path | None = INDEX, data: Path | None = DATA, model: str | None = MODEL,
              split: str = SPLIT, unit: str = UNIT,
              ks: str = typer.Option("1,5,10,50,100", "--ks", help="Comma-separated k values."),
              bootstrap: int = typer.Option(1000, "--bootstrap", min=1, help="Bootstrap resamples for 95 % CIs."),
              out: Path | None = OUT) -> None:
    """Text→volume, volume→text and volume→volume tables with CIs, random baseline and hubness rows."""
    from hsenet_search.eval.bench import retrieval_tables, temporary_workdir
    from hsenet_search.eval.report import plot_recall, retrieval_markdown

    k_values = [int(k) for k in ks.split(",") if k.strip()]
    with temporary_workdir() as tmp:
        emb = _embeddings(index, data, model, tmp)
        result = retrieval_tables(emb.split(split, unit), k_values, bootstrap, bank=_bank(emb, split, unit))
    result["source"] = {"index": str(index) if index else None, "data": str(data) if data else None,
                        "model": emb.manifest["model_name"], "model_fingerprint": emb.manifest["model_fingerprint"],
                        "embedding": emb.manifest["embedding"],
                        "report_text": emb.manifest.get("report_text", "findings+impression")}
    console.print(f"protocol: {result['source']['embedding']} embedding, report text "
                  f"{result['source']['report_text']}, unit {unit}, split {split}")
    _write(out, result, retrieval_markdown(result))
    if out is not None:
        plot_recall({emb.manifest["embedding"]: result}, out.with_suffix(".png"))


@app.command("zeroshot")
def zeroshot(index: Path | None = INDEX, data: Path | None = DATA, model: str | None = MODEL,
             split: str = SPLIT, unit: str = UNIT, out: Path | None = OUT) -> None:
    """Zero-shot 18-label classification: per-label and macro AUC, weighted F1 / accuracy / precision."""
    from hsenet_search.eval.bench import temporary_workdir, zeroshot_tables
    from hsenet_search.eval.report import zeroshot_markdown
    from hsenet_search.models import load_model

    with temporary_workdir() as tmp:
        emb = _embeddings(index, data, model, tmp)
        net = load_model(emb.model_dir).eval()
        result = zeroshot_tables(net, emb.split(split, unit), _bank(emb, split, unit))
    _write(out, result, zeroshot_markdown(result))


@app.command("generation")
def generation(
    index: Path = typer.Option(..., "--index", help="Index of reference cases (the drafts' grounding)."),
    data: Path = typer.Option(..., "--data", help="Dataset whose scans are drafted and scored."),
    split: str = SPLIT,
    mode: list[str] = typer.Option(["nearest", "vote", "llm"], "--mode", help="llm | nearest | vote (repeatable)."),
    llm: str = typer.Option("default", "--llm", help="default (SmolLM2-135M-Instruct) | HF id | path."),
    k: int = typer.Option(5, "-k", "--k"),
    limit: int | None = typer.Option(None, "--limit", help="Draft only the first N scans (LLM mode is slow on CPU)."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    out: Path | None = OUT,
) -> None:
    """BLEU-1..4, METEOR, ROUGE-L, HSENet n-gram precision and clinical efficacy of drafted reports."""
    from hsenet_search.engine import SearchEngine
    from hsenet_search.eval.generation_bench import generation_markdown, run_generation
    from hsenet_search.generate.llm import load_llm

    engine = SearchEngine.open(index)
    runs = []
    for m in mode:
        model = load_llm(llm, max_new_tokens=max_new_tokens) if m == "llm" else None
        runs.append(run_generation(engine, str(data), split=split, mode=m, llm=model, k=k, limit=limit).metrics())
    payload = {"index": str(index), "data": str(data), "split": split, "k": k, "runs": runs}
    _write(out, payload, generation_markdown(payload))
