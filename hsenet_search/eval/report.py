"""Writing benchmark results: JSON, Markdown tables and a PNG plot of the R@k curves."""

from __future__ import annotations

from pathlib import Path

DIRECTIONS = {"text_to_volume": "text → volume", "volume_to_text": "volume → text"}


def _fmt_ci(cell: dict) -> str:
    return f"{cell['estimate']:.1f} [{cell['low']:.1f}, {cell['high']:.1f}]"


def retrieval_markdown(result: dict, title: str = "Retrieval") -> str:
    """Markdown tables for one ``retrieval_tables`` result."""
    ks = [str(k) for k in result["ks"]]
    lines = [
        f"### {title}",
        "",
        f"N = {result['n']} ({result['unit']}s, split `{result['split']}`); R@k in %, 95 % bootstrap CI.",
        "",
        "| direction | " + " | ".join(f"R@{k}" for k in ks) + " | MRR | median rank |",
        "|---|" + "---|" * (len(ks) + 2),
    ]
    for name in ("text_to_volume", "volume_to_text"):
        row = result[name]
        cells = [_fmt_ci(row["recall"][k]) for k in ks]
        lines.append(
            f"| {DIRECTIONS[name]} | " + " | ".join(cells) + f" | {row['mrr']:.3f} | {row['median_rank']:.0f} |"
        )
    lines.append("| random baseline | " + " | ".join(f"{result['random'][k]:.1f}" for k in ks) + " | | |")
    v2v = result.get("volume_to_volume")
    if v2v:
        vks = list(v2v["clean"])
        lines += [
            "",
            f"Volume→volume label Jaccard@k in % (N = {v2v['n']} labelled volumes):",
            "",
            "| protocol | " + " | ".join(f"@{k}" for k in vks) + " |",
            "|---|" + "---|" * len(vks),
            "| clean (self excluded, per-k mean) | " + " | ".join(_fmt_ci(v2v["clean"][k]) for k in vks) + " |",
            "| CT-CLIP published code (self kept, abnormal gallery, running mean) | "
            + " | ".join(f"{v2v['ctclip'][k]:.1f}" for k in vks)
            + " |",
        ]
    hub = result.get("hubness")
    if hub:
        lines += [
            "",
            f"Hubness correction (querybank normalisation, bank = {hub['bank_size']} `{hub['bank_split']}` "
            f"queries, β = {hub['beta']}):",
            "",
            "| direction | " + " | ".join(f"R@{k}" for k in ks) + " |",
            "|---|" + "---|" * len(ks),
        ]
        for name in ("text_to_volume", "volume_to_text"):
            for variant in ("without", "with"):
                lines.append(
                    f"| {DIRECTIONS[name]}, {variant} | "
                    + " | ".join(f"{hub[name][variant][k]:.1f}" for k in ks)
                    + " |"
                )
    return "\n".join(lines) + "\n"


PROMPT_NAMES = {"pair": "CT-CLIP prompt pair", "mean7": "mean of 7 prompt pairs per label (RadFinder-style)"}


def zeroshot_markdown(result: dict, title: str = "Zero-shot classification") -> str:
    """Markdown for one ``zeroshot_tables`` result (macro rows + per-label AUC)."""
    lines = [
        f"### {title}",
        "",
        f"N = {result['n']} ({result['unit']}s, split `{result['split']}`), "
        f"{PROMPT_NAMES[result.get('prompts', 'pair')]}, P(present) = softmax over the pair.",
        "",
        "| thresholds | macro AUC | weighted F1 | accuracy | precision |",
        "|---|---|---|---|---|",
    ]
    for key in ("separate_split", "same_split"):
        if key in result:
            m = result[key]["macro"]
            lines.append(
                f"| {result[key]['threshold_source']} | {m['auc']:.3f} | {m['f1_weighted']:.3f} | "
                f"{m['accuracy']:.3f} | {m['precision']:.3f} |"
            )
    if "macro_auc_ci" in result:
        ci = result["macro_auc_ci"]
        interval = f"95 % CI {ci['low']:.3f}–{ci['high']:.3f}, bootstrap over volumes"
        lines += ["", f"Macro AUC {ci['estimate']:.3f} ({interval})."]
    per = result["same_split"]["per_label"]
    lines += ["", "| label | AUC | positives |", "|---|---|---|"]
    lines += [f"| {name} | {v['auc']:.3f} | {v['n_pos']} |" for name, v in per.items()]
    return "\n".join(lines) + "\n"


def plot_recall(results: dict[str, dict], path: Path) -> None:
    """PNG of the R@k curves (text→volume, volume→text, random) for one or more result sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, result in results.items():
        ks = [int(k) for k in result["ks"]]
        for name, style in (("text_to_volume", "-o"), ("volume_to_text", "--s")):
            ys = [result[name]["recall"][str(k)]["estimate"] for k in ks]
            ax.plot(ks, ys, style, label=f"{label}: {DIRECTIONS[name]}")
        ax.plot(ks, [result["random"][str(k)] for k in ks], ":", color="gray", label=f"{label}: random")
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("R@k (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
