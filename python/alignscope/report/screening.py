"""Files of a screening run: ranked scores, summary, CDF and trade-off plots, HTML, keep list."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path
from alignscope.report import interactive

TOP_SUSPICIOUS = 50
# Rows (best-ranked first) whose thumbnails the report carries: PNG data URIs of up to 128 px,
# some 10-50 kB each, so the page stays within a few MB.
THUMBNAIL_ROWS = 100
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


def explorer_data(
    scores: dict[str, np.ndarray],
    rank_by: str,
    order: np.ndarray,
    removal: dict[str, Any],
    *,
    ids: list[str],
    removed: np.ndarray,
    captions: list[str] | None = None,
    concepts: list[str] | None = None,
    truth: np.ndarray | None = None,
    images: dict[int, str] | None = None,
    cap: int = interactive.EMBED_ROWS,
) -> dict[str, Any]:
    """What the report's explorer embeds (see :data:`alignscope.report.interactive.SCRIPT`).

    Parameters
    ----------
    scores : {name: (N,) float array}, the scores of every row.
    rank_by : the score ``order`` ranks by (the slider starts on it).
    order : (N,) int array, the rows most suspicious first.
    removal : the run's removal (summary.json's): the slider starts at its threshold.
    ids : the N row ids (keep.txt's).
    removed : (N,) bool, the rows the run removed.
    captions, concepts : N strings each, or None (then no such column; no concept filter).
    truth : (N,) bool poison flags, or None (then no poisoned column, precision or recall).
    images : {row: PNG data URI}, thumbnails of some rows.
    cap : rows embedded at most (:func:`alignscope.report.interactive.choose_rows`).

    Returns
    -------
    A JSON-able dict: at most ``cap`` rows, and each score's exact counts over all N rows at
    the slider's thresholds (:func:`alignscope.report.interactive.cuts`).
    """
    n = int(order.size)
    rows, top = interactive.choose_rows(order, cap)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    images = images or {}
    embedded = set(data_rows := rows.tolist())
    columns: list[dict[str, Any]] = [
        {"key": "rank", "label": "rank", "kind": "int"},
        {"key": "row", "label": "row", "kind": "int"},
    ]
    data: dict[str, list[Any]] = {"rank": rank[rows].tolist(), "row": data_rows}
    if images:
        columns.append({"key": "thumb", "label": "image", "kind": "image"})
        data["thumb"] = [f"r{i}" if i in images else None for i in data["row"]]
    columns.append({"key": "id", "label": "id", "kind": "text", "search": True})
    data["id"] = [str(ids[i]) for i in rows]
    if captions is not None:
        columns.append({"key": "caption", "label": "caption", "kind": "text", "search": True})
        data["caption"] = [str(captions[i]) for i in rows]
    if concepts is not None:
        columns.append({"key": "concept", "label": "concept", "kind": "category"})
        data["concept"] = [str(concepts[i]) for i in rows]
    for name in sorted(scores, key=lambda name: name != rank_by):  # the ranking's score first
        columns.append({"key": name, "label": name, "kind": "score"})
        data[name] = interactive.finite_or_none(scores[name][rows])
    if truth is not None:
        columns.append({"key": "poisoned", "label": "poisoned", "kind": "flag", "filter": True})
        data["poisoned"] = truth[rows].astype(bool).tolist()
    columns.append({"key": "removed", "label": "removed by the run", "kind": "flag"})
    data["removed"] = removed[rows].astype(bool).tolist()
    primary = scores[rank_by]
    if removal.get("rule") in ("threshold", "target_fpr"):
        start = float(removal["threshold"])
    else:  # the top k: the threshold with no more than k rows strictly above it
        start = float(primary[order[min(int(removal.get("removed", 0)), n - 1)]]) if n else 0.0
    if n == top:
        note = f"All {n:,} pairs are here."
    else:
        note = (
            f"This page holds {rows.size:,} of the {n:,} pairs: the top {top:,} by {rank_by} and "
            f"a uniform random sample (seed {interactive.SAMPLE_SEED}) of {rows.size - top:,} "
            f"of the other {n - top:,}. The table sorts, filters and pages through these rows."
        )
    return {
        "title": f"Explore the {n:,} pairs",
        "note": note,
        "noun": "pairs",
        "n": n,
        "columns": columns,
        "data": data,
        "thumbnails": {
            f"r{i}": uri
            for i, uri in images.items()
            if i in embedded and uri.startswith("data:image/png;base64,")
        },
        "sort": {"key": rank_by, "desc": True},
        "search_label": "caption or id contains" if captions is not None else "id contains",
        "slider": {
            "scores": {
                name: interactive.cuts(values, truth, extra=(start,) if name == rank_by else ())
                for name, values in scores.items()
            },
            "start": {"score": rank_by, "threshold": start},
            "label": "remove the pairs scoring above a threshold on",
            "above": "removed",
            "below": "kept",
            "flagged_total": None if truth is None else int(np.sum(truth)),
            "exact": (
                f"The counts are exact over all {n:,} pairs, for pairs scoring strictly above "
                "the threshold (as --threshold removes them)."
            ),
        },
    }


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
    explorer: dict[str, Any] | None = None,
) -> Path:
    """Escaped HTML: the scores and how they were computed, metrics, plots, and the most
    suspicious pairs; with ``explorer`` (:func:`explorer_data`), an interactive table of the
    rows that the page's script builds (the static table of the most suspicious pairs is then
    hidden; without JavaScript the page is the static one)."""
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
        + (
            f'<td><img src="{e(images[r["row"]])}" alt="" width="96" data-thumb="r{r["row"]}"></td>'
            if images and r["row"] in images
            else "<td></td>"
            if images
            else ""
        )
        + f"<td>{e(str(r.get('id', '')))}</td><td>{e(str(r.get('caption', '')))}</td>"
        + f"<td>{r[rank_by]:.4f}</td>"
        + ("" if r.get("poisoned") is None else f"<td>{'yes' if r['poisoned'] else 'no'}</td>")
        + "</tr>"
        for r in ranked
    )
    truth_head = "<th>poisoned</th>" if ranked and ranked[0].get("poisoned") is not None else ""
    picture_head = "<th>image</th>" if images else ""
    figures = "".join(f'<img src="{e(p)}" alt="{e(p)}" width="420">' for p in plots)
    app = ""
    if explorer is not None:
        # the thumbnails of the static table are on the page already (data-thumb): not twice
        static = {f"r{r['row']}" for r in ranked if r["row"] in images}
        thumbnails = {k: v for k, v in explorer.get("thumbnails", {}).items() if k not in static}
        app = interactive.explorer_html({**explorer, "thumbnails": thumbnails})
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alignscope screening report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px}}{interactive.STYLE if app else ""}</style>
</head><body>
<h1>Screening report</h1>
<p>source: <code>{e(source)}</code>; ranked by <code>{e(rank_by)}</code>;
{e(_removal_sentence(removal))}</p>
<h2>Scores</h2><table><tr><th>score</th><th>computed</th>{head}</tr>{rows}</table>
{interactive.HOST if app else ""}
<h2>Plots</h2>{figures}
<section id="alignscope-static"><h2>Most suspicious pairs</h2>
<table><tr><th>rank</th><th>row</th>{picture_head}<th>id</th><th>caption</th><th>{e(rank_by)}</th>{truth_head}</tr>
{suspicious}</table></section>
{app}</body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
