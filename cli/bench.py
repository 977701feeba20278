"""``hsenet-search bench``: retrieval and zero-shot benchmarks with the published protocols."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .common import COMPOSER, Composer, Dedup, DraftMode, Split, Unit, ZeroShotPrompts, console, parse_ks

app = typer.Typer(
    help="Benchmarks: R@k, volume→volume, zero-shot, report generation, localisation.", no_args_is_help=True
)

INDEX = typer.Option(None, "--index", help="Evaluate the embeddings stored in this index directory.")
DATA = typer.Option(None, "--data", help="Or embed this dataset (all splits) with --model first.")
MODEL = typer.Option(None, "--model", help="Model for --data (default: the shipped model).")
SPLIT = typer.Option(Split.valid, "--split", help="Split to evaluate.")
UNIT = typer.Option(Unit.scan, "--unit", help="scan (one reconstruction per scan) or reconstruction.")
OUT = typer.Option(None, "--out", help="Write FILE.json, FILE.md (and FILE.png) here.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace existing result files at --out.")


def _check_out(out: Path | None, overwrite: bool, *inputs: Path | None) -> None:
    """Refuse --out files this command would clobber (before any work)."""
    from hsenet_search.outputs import OutputKind, check_output

    if out is None:
        return
    for suffix in (".json", ".md", ".png"):
        check_output(
            out.with_suffix(suffix),
            OutputKind.FILE,
            inputs=[p for p in inputs if p is not None],
            overwrite=overwrite,
            suffixes=(suffix,),
        )


def _embeddings(index: Path | None, data: Path | None, model: str | None, tmp: str):
    from hsenet_search.errors import HSENetError
    from hsenet_search.eval.bench import build_temporary_index, load_index_embeddings

    if (index is None) == (data is None):
        raise HSENetError("give exactly one of --index DIR or --data DIR")
    if data is not None:
        index = build_temporary_index(data, model, Path(tmp))
    return load_index_embeddings(index)


def _bank(emb, split: str, unit: str):
    """The other split's rows (the hubness / calibration bank), or None when the index has none."""
    other = "train" if split != "train" else "valid"
    return emb.split(other, unit) if (emb.metadata["split"] == other).any() else None


def _write(out: Path | None, payload: dict, markdown: str, started) -> None:
    """Print the tables; with ``--out`` also write FILE.json (with machine, load, versions, command) and FILE.md."""
    from hsenet_search.atomic import write_text
    from hsenet_search.eval.provenance import write_result

    console.print(markdown)
    if out is not None:
        write_result(out.with_suffix(".json"), payload, started)
        write_text(out.with_suffix(".md"), markdown)
        console.print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


@app.command("retrieval")
def retrieval(
    index: Path | None = INDEX,
    data: Path | None = DATA,
    model: str | None = MODEL,
    split: Split = SPLIT,
    unit: Unit = UNIT,
    ks: str = typer.Option("1,5,10,50,100", "--ks", help="Comma-separated k values."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=1, help="Bootstrap resamples for 95 % CIs."),
    dedup: Dedup | None = typer.Option(
        None,
        "--dedup",
        help="Also RadFinder's protocol: dup_all, first_all or smallestdeduptext (text→image, MedR/MeanR, "
        "10,000 bootstrap resamples).",
    ),
    exclude: Path | None = typer.Option(
        None, "--exclude", help="With --dedup: scan ids / volume names dropped first (RadFinder's no_chest)."
    ),
    out: Path | None = OUT,
    overwrite: bool = OVERWRITE,
) -> None:
    """Text→volume, volume→text and volume→volume tables with CIs, random baseline and hubness rows."""
    _check_out(out, overwrite, index, data)
    from hsenet_search.errors import HSENetError
    from hsenet_search.eval.radfinder_protocol import radfinder_markdown, radfinder_retrieval, read_exclusions

    if exclude is not None and dedup is None:
        raise HSENetError("--exclude applies to --dedup; give --dedup too")
    excluded = read_exclusions(exclude) if exclude is not None else None
    from hsenet_search.eval.bench import retrieval_tables, temporary_workdir
    from hsenet_search.eval.provenance import run_started
    from hsenet_search.eval.report import plot_recall, retrieval_markdown

    k_values = parse_ks(ks)
    started = run_started()
    with temporary_workdir() as tmp:
        emb = _embeddings(index, data, model, tmp)
        result = retrieval_tables(
            emb.split(split.value, unit.value), k_values, bootstrap, bank=_bank(emb, split.value, unit.value)
        )
        if dedup is not None:
            result["radfinder"] = radfinder_retrieval(
                emb.metadata,
                emb.volumes,
                emb.reports,
                split=split.value,
                dedup=dedup.value,
                exclude=excluded,
                ks=tuple(k_values),
            )
    result["source"] = {
        "index": str(index) if index else None,
        "data": str(data) if data else None,
        "model": emb.manifest["model_name"],
        "model_fingerprint": emb.manifest["model_fingerprint"],
        "embedding": emb.manifest["embedding"],
        "report_text": emb.manifest.get("report_text", "findings+impression"),
    }
    console.print(
        f"protocol: {result['source']['embedding']} embedding, report text "
        f"{result['source']['report_text']}, unit {unit.value}, split {split.value}"
    )
    markdown = retrieval_markdown(result)
    if dedup is not None:
        markdown += "\n" + radfinder_markdown(result["radfinder"])
    _write(out, result, markdown, started)
    if out is not None:
        plot_recall({emb.manifest["embedding"]: result}, out.with_suffix(".png"))


@app.command("zeroshot")
def zeroshot(
    index: Path | None = INDEX,
    data: Path | None = DATA,
    model: str | None = MODEL,
    split: Split = SPLIT,
    unit: Unit = UNIT,
    extra_labels: list[Path] = typer.Option(
        [],
        "--extra-labels",
        help="CSV of never-labelled findings (VolumeName + 0/1 columns; data synth --extra-findings writes "
        "extra_findings/<split>_extra_labels.csv); repeatable (train and valid). Scored instead of the 18.",
    ),
    prompts: ZeroShotPrompts = typer.Option(
        ZeroShotPrompts.pair,
        "--prompts",
        help="pair (CT-CLIP's prompt pair) or mean7 (7 pairs per label, averaged; RadFinder-style).",
    ),
    out: Path | None = OUT,
    overwrite: bool = OVERWRITE,
) -> None:
    """Zero-shot 18-label classification: per-label and macro AUC, weighted F1 / accuracy / precision."""
    _check_out(out, overwrite, index, data)
    import pandas as pd

    from hsenet_search.eval.bench import read_extra_labels, temporary_workdir, zeroshot_tables
    from hsenet_search.eval.provenance import run_started
    from hsenet_search.eval.report import zeroshot_markdown
    from hsenet_search.models import load_model

    started = run_started()
    with temporary_workdir() as tmp:
        emb = _embeddings(index, data, model, tmp)
        net = load_model(emb.model_dir).eval()
        extra = {}
        if extra_labels:
            truth = pd.concat([read_extra_labels(p) for p in extra_labels])
            extra = {"labels": list(truth.columns), "truth": truth[~truth.index.duplicated()]}
        ev, bank = emb.split(split.value, unit.value), _bank(emb, split.value, unit.value)
        result = zeroshot_tables(net, ev, bank, prompts=prompts.value, **extra)
    _write(out, result, zeroshot_markdown(result), started)


@app.command("gap")
def gap(
    index: Path = typer.Option(..., "--index", help="Index directory whose embeddings are measured."),
    split: Split = typer.Option(Split.all, "--split", help="Split of the index to measure."),
    unit: Unit = UNIT,
    out: Path | None = OUT,
    overwrite: bool = OVERWRITE,
) -> None:
    """The modality gap: centroid distance, true vs random pair cosine, modality probe, PCA plot."""
    _check_out(out, overwrite, index)
    from hsenet_search.eval.bench import load_index_embeddings
    from hsenet_search.eval.gap import gap_markdown, modality_gap, plot_gap
    from hsenet_search.eval.provenance import run_started

    started = run_started()
    emb = load_index_embeddings(index).split(split.value, unit.value)
    result = modality_gap(emb.volumes, emb.reports)
    payload = {"index": str(index), "split": split.value, "unit": unit.value, **result.to_json()}
    rows = {str(index): result}
    if emb.plain is not None:  # a bridged index: the figures above are of ½(plain + bank); add plain ones
        plain = modality_gap(emb.plain, emb.reports)
        payload["volume_vector"], payload["plain"] = "bridged", plain.to_json()
        rows = {f"{index} (bridged)": result, f"{index} (plain)": plain}
    _write(out, payload, gap_markdown(rows), started)
    if out is not None:
        console.print(f"wrote {plot_gap(emb.volumes, emb.reports, out.with_suffix('.png'))}")


@app.command("generation")
def generation(
    index: Path = typer.Option(..., "--index", help="Index of reference cases (the drafts' grounding)."),
    data: Path = typer.Option(..., "--data", help="Dataset whose scans are drafted and scored."),
    split: Split = SPLIT,
    mode: list[DraftMode] = typer.Option(
        [DraftMode.nearest, DraftMode.vote, DraftMode.grounded, DraftMode.llm],
        "--mode",
        help="Drafting mode (repeatable).",
    ),
    llm: str = typer.Option(
        "default", "--llm", help="default (SmolLM2-135M-Instruct) | HF id | path | openai:URL#MODEL."
    ),
    k: int = typer.Option(5, "-k", "--k", min=1),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Draft only the first N scans."),
    llm_limit: int | None = typer.Option(
        None, "--llm-limit", min=1, help="LLM mode: only the first N of those scans (slow on CPU)."
    ),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1),
    composer: Composer = COMPOSER,
    out: Path | None = OUT,
    overwrite: bool = OVERWRITE,
) -> None:
    """BLEU-1..4, METEOR, ROUGE-L, HSENet n-gram precision and clinical efficacy of drafted reports."""
    _check_out(out, overwrite, index, data)
    from hsenet_search.engine import SearchEngine
    from hsenet_search.eval.generation_bench import generation_markdown, generation_payload, run_generation
    from hsenet_search.eval.provenance import run_started
    from hsenet_search.generate.llm import load_llm

    started = run_started()
    engine = SearchEngine.open(index)
    t0 = time.perf_counter()
    model = load_llm(llm, max_new_tokens=max_new_tokens) if DraftMode.llm in mode else None
    load_s = time.perf_counter() - t0
    modes = [m.value for m in dict.fromkeys(mode)]
    runs = run_generation(
        engine,
        str(data),
        split=split.value,
        modes=modes,
        llm=model,
        k=k,
        limit=limit,
        llm_limit=llm_limit,
        composer=composer.value,
    )
    payload = {"index": str(index), "data": str(data), "split": split.value, "k": k, "llm_load_s": load_s}
    payload["composer"] = composer.value
    payload |= generation_payload(runs)
    _write(out, payload, generation_markdown(payload), started)


@app.command("localisation")
def localisation(
    data: Path = typer.Option(..., "--data", help="Dataset whose held-out scans' reports cite images."),
    model: str | None = MODEL,
    split: Split = SPLIT,
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Preprocessed-tensor cache directory."),
    out: Path | None = OUT,
    overwrite: bool = OVERWRITE,
) -> None:
    """Intra-scan localisation of report snippets: MAE (95 % CI), median, ≤12/24 mm vs random/middle bin."""
    _check_out(out, overwrite, data)
    from hsenet_search.data.cache import PreprocessCache
    from hsenet_search.eval.localisation_bench import localisation_benchmark, localisation_markdown
    from hsenet_search.eval.provenance import run_started
    from hsenet_search.models import load_model

    started = run_started()
    cache = PreprocessCache(cache_dir) if cache_dir is not None else None
    result = localisation_benchmark(load_model(model).eval(), data, split=split.value, cache=cache)
    result["source"] = {"data": str(data), "model": model or "default"}
    _write(out, result, localisation_markdown(result), started)
