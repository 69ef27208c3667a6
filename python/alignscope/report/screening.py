"""Files of a screening run: ranked scores, summary, CDF and trade-off plots, HTML, keep list."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path

TOP_SUSPICIOUS = 50
# Points drawn per CDF curve (evenly spaced ranks, the ends included).
CDF_POINTS = 4096


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    _plt().close(fig)
    return path


def plot_cdf(name: str, score: np.ndarray, poisoned: np.ndarray | None, path: Path) -> Path:
    """Cumulative distribution of a score, benign and poisoned apart when the truth is known
    (the paper's Fig. 9)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    groups = (
        [("all", score)]
        if poisoned is None
        else [("benign", score[~poisoned]), ("poisoned", score[poisoned])]
    )
    for label, values in groups:
        xs = np.sort(values)
        ys = np.arange(1, xs.size + 1) / xs.size
        # a 600-pixel-wide curve needs no more than CDF_POINTS points (1M would take seconds)
        keep = np.unique(np.linspace(0, xs.size - 1, min(xs.size, CDF_POINTS)).astype(np.int64))
        ax.plot(xs[keep], ys[keep], label=f"{label} (n={xs.size})")
    ax.set_xlabel(name)
    ax.set_ylabel("CDF")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_tradeoff(metrics: dict[str, dict[str, Any]], path: Path) -> Path:
    """Share of benign data removed against share of poisons removed, one line per score."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, m in metrics.items():
        curve = m["tradeoff"]
        ax.plot(
            curve["poison_removed"],
            curve["benign_removed"],
            label=f"{name} (AUROC {m['auroc']:.2f})",
        )
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("poisons removed")
    ax.set_ylabel("benign data removed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def write_scores(columns: dict[str, np.ndarray | list[Any]], path: Path) -> Path:
    with atomic_path(path) as tmp:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ValueError("scores.parquet needs pyarrow: pip install 'alignscope[io]'") from exc
        pq.write_table(pa.table(columns), tmp)
    return path


def write_json(data: dict[str, Any], path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_keep(ids: list[str], path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return path


def _removal_sentence(removal: dict[str, Any]) -> str:
    """What was removed, as a sentence (the report used to print the raw dict)."""
    if removal.get("rule") == "target_fpr":
        rule = (
            f"removed the pairs scoring above {removal['threshold']:g}, the threshold at "
            f"{100 * float(removal['fpr']):g}% FPR estimated "
        )
        if removal.get("basis") == "reference-clean":
            rule += (
                f"from {removal['n_reference']:,} trusted clean rows (with "
                f"{100 * float(removal['confidence']):g}% confidence the FPR is at most "
                f"{100 * float(removal['fpr_upper_bound']):.2g}%)"
            )
        else:
            # no trusted rows: the quantile of all rows (poisons at a rate r keep the realised
            # rate below fpr / (1 - r); see threshold_at_fpr)
            rule += "from the scores of all rows, assuming poisons are a small minority"
    elif removal.get("rule") == "threshold":
        rule = f"removed the pairs scoring above {removal['threshold']:g}"
    else:
        rule = f"removed the top {100 * float(removal.get('fraction', 0.0)):g}%"
    text = f"{rule}: {removal['removed']:,} removed, {removal['kept']:,} kept"
    if "poisons_removed" in removal:
        text += (
            f" ({removal['poisons_removed']:,} poisoned and {removal['benign_removed']:,} "
            "benign removed"
            + (
                f"; realised FPR {100 * removal['realised_fpr']:.2g}%"
                if "realised_fpr" in removal
                else ""
            )
            + ")"
        )
    return text + "."


def write_report(
    path: Path,
    *,
    source: str,
    methods: dict[str, str],
    metrics: dict[str, dict[str, Any]] | None,
    ranked: list[dict[str, Any]],
    rank_by: str,
    plots: list[str],
    images: dict[int, str],
    removal: dict[str, Any],
) -> Path:
    """Escaped HTML: the scores and how they were computed, metrics, plots, and the most
    suspicious pairs."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(m)}</td><td>{e(methods[m])}</td>"
        + (
            f"<td>{metrics[m]['auroc']:.3f}</td><td>{metrics[m]['auprc']:.3f}</td>"
            f"<td>{metrics[m]['tpr_at_1pct_fpr']:.3f}</td><td>{metrics[m]['tpr_at_5pct_fpr']:.3f}</td>"
            if metrics
            else ""
        )
        + "</tr>"
        for m in methods
    )
    head = "<th>AUROC</th><th>AUPRC</th><th>TPR@1%FPR</th><th>TPR@5%FPR</th>" if metrics else ""
    suspicious = "".join(
        "<tr>"
        + f"<td>{r['rank']}</td><td>#{r['row']}</td>"
        + (f'<td><img src="{e(images[r["row"]])}" alt="" width="96"></td>' if images else "")
        + f"<td>{e(str(r.get('id', '')))}</td><td>{e(str(r.get('caption', '')))}</td>"
        + f"<td>{r[rank_by]:.4f}</td>"
        + ("" if r.get("poisoned") is None else f"<td>{'yes' if r['poisoned'] else 'no'}</td>")
        + "</tr>"
        for r in ranked
    )
    truth_head = "<th>poisoned</th>" if ranked and ranked[0].get("poisoned") is not None else ""
    picture_head = "<th>image</th>" if images else ""
    figures = "".join(f'<img src="{e(p)}" alt="{e(p)}" width="420">' for p in plots)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alignscope screening report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px}}</style></head><body>
<h1>Screening report</h1>
<p>source: <code>{e(source)}</code>; ranked by <code>{e(rank_by)}</code>;
{e(_removal_sentence(removal))}</p>
<h2>Scores</h2><table><tr><th>score</th><th>computed</th>{head}</tr>{rows}</table>
<h2>Plots</h2>{figures}
<h2>Most suspicious pairs</h2>
<table><tr><th>rank</th><th>row</th>{picture_head}<th>id</th><th>caption</th><th>{e(rank_by)}</th>{truth_head}</tr>
{suspicious}</table></body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
