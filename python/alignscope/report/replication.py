"""Files of a replication run: matches table, summary JSON, scatter plot, HTML report."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path
from alignscope.report import interactive
from alignscope.search.replication import THRESHOLDS, ReplicationResult


def write_matches(
    result: ReplicationResult,
    path: Path,
    ids: tuple[list[str] | None, list[str] | None] = (None, None),
) -> Path:
    """One row per generated item and match rank: generated, rank, train, similarity,
    duplicate (the match's nearest other training item) and duplicate_similarity; with the
    stores' ids known (``ids``: generated, training), also generated_id, train_id and
    duplicate_id beside the row numbers (parquet only)."""
    ng, k = result.similarity.shape
    columns: dict[str, object] = {
        "generated": np.repeat(np.arange(ng), k),
        "rank": np.tile(np.arange(1, k + 1), ng),
        "train": result.index.reshape(-1),
        "similarity": result.similarity.reshape(-1).astype(np.float64),
        "duplicate": np.repeat(result.duplicate_index, k),
        "duplicate_similarity": np.repeat(result.duplicate_similarity, k).astype(np.float64),
    }
    generated_ids, training_ids = ids
    if path.suffix == ".parquet" and generated_ids is not None:
        columns["generated_id"] = [generated_ids[i] for i in columns["generated"]]  # type: ignore[union-attr]
    if path.suffix == ".parquet" and training_ids is not None:
        columns["train_id"] = [training_ids[i] if i >= 0 else None for i in columns["train"]]  # type: ignore[union-attr]
        columns["duplicate_id"] = [
            training_ids[i] if i >= 0 else None
            for i in columns["duplicate"]  # type: ignore[union-attr]
        ]
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(columns), tmp)
        else:
            table = np.empty(
                ng * k, dtype=[(c, "<f8" if "similarity" in c else "<i8") for c in columns]
            )
            for key, values in columns.items():
                table[key] = values
            with open(tmp, "wb") as fh:
                np.save(fh, table, allow_pickle=False)
    return path


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def write_scatter(result: ReplicationResult, path: Path) -> Path:
    """Generated -> train similarity against the match's train -> train similarity (BiBadDiff
    Fig. 5): points above the diagonal replicate more than the data duplicates itself."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = result.duplicate_similarity
    y = result.similarity[:, 0]
    keep = np.isfinite(x) & np.isfinite(y)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(x[keep], y[keep], s=6, alpha=0.6)
    ax.plot([-1, 1], [-1, 1], color="grey", linewidth=0.8)
    ax.axhline(
        COPY_THRESHOLD,
        color="tab:red",
        linewidth=0.8,
        linestyle="--",
        label=f"SSCD copy threshold {COPY_THRESHOLD}",
    )
    lo = float(min(x[keep].min(initial=0.0), y[keep].min(initial=0.0), 0.0))
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(lo, 1.0)
    ax.set_xlabel("train -> nearest other train (similarity)")
    ax.set_ylabel("generated -> nearest train (similarity)")
    ax.set_title("Replication")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


TOP_MATCHES = 50


def strongest(result: ReplicationResult, top: int = TOP_MATCHES) -> np.ndarray:
    """Generated rows with the highest top-1 similarity, best first."""
    key = np.nan_to_num(result.similarity[:, 0], neginf=-2.0)
    return np.argsort(-key, kind="stable")[:top]


# SSCD's copy-detection threshold (the scatter plot's red line): the explorer's slider starts
# there, counting the generated items whose nearest training item is a copy.
COPY_THRESHOLD = THRESHOLDS[-1]  # search.replication owns the thresholds (0.5, 0.75)
_STATISTICS = (
    ("count", "n"),
    ("mean", "mean"),
    ("std", "std"),
    ("p50", "median"),
    ("p75", "p75"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    *((f"fraction_above_{t}", f"share > {t}") for t in THRESHOLDS),
)


def _method_sentence(summary: dict[str, Any]) -> str:
    """How the matches were found, as a sentence (not the summary's raw keys)."""
    method = str(summary.get("method", "engine"))
    if method in ("engine", "faiss"):
        how = f"exact search ({method})"
    else:
        how = f"approximate search ({method}"
        if summary.get("recall_at_1_vs_exact") is not None:
            how += (
                f"; its top-1 match agrees with exact search for "
                f"{100 * float(summary['recall_at_1_vs_exact']):.3g}% of "
                f"{int(summary.get('recall_sample', 0)):,} items checked"
            )
        how += ")"
    return (
        f"{int(summary['n_generated']):,} generated items, each with its top-"
        f"{int(summary['k'])} training match{'es' if int(summary['k']) > 1 else ''} by cosine "
        f"similarity, {how}."
    )


def explorer_data(
    result: ReplicationResult,
    ids: tuple[list[str] | None, list[str] | None] = (None, None),
    images: tuple[dict[int, str], dict[int, str]] = ({}, {}),
    cap: int = interactive.EMBED_ROWS,
) -> dict[str, Any]:
    """What the replication report's explorer embeds: one row per generated item (its top-1
    match and that match's nearest other training item), at most ``cap`` of them (the most
    similar first, then a sample), and exact counts over all items at the slider's
    thresholds (see :data:`alignscope.report.interactive.SCRIPT`)."""
    ng = int(result.similarity.shape[0])
    order = strongest(result, top=ng)
    rows, top = interactive.choose_rows(order, cap)
    rank = np.empty(ng, dtype=np.int64)
    rank[order] = np.arange(1, ng + 1)
    similarity = result.similarity[:, 0].astype(np.float64)
    duplicate = result.duplicate_similarity.astype(np.float64)
    with np.errstate(invalid="ignore"):
        excess = similarity - duplicate
    scores = {"similarity": similarity, "duplicate_similarity": duplicate, "excess": excess}
    match = result.index[rows, 0]
    dup = result.duplicate_index[rows]
    gen_ids, train_ids = ids
    gen_images, train_images = images
    pictures = bool(gen_images or train_images)
    columns: list[dict[str, Any]] = [{"key": "rank", "label": "rank", "kind": "int"}]
    data: dict[str, list[Any]] = {"rank": rank[rows].tolist()}

    def item(key: str, which: np.ndarray, names: list[str] | None, known: dict[int, str]) -> None:
        """Columns of one item: its row, its id (searched) and its thumbnail."""
        prefix = "g" if key == "generated" else "t"
        columns.append({"key": key, "label": key, "kind": "int"})
        data[key] = [int(i) if i >= 0 else None for i in which]
        if names is not None:
            label = f"{key} id"
            columns.append({"key": f"{key}_id", "label": label, "kind": "text", "search": True})
            data[f"{key}_id"] = [names[i] if i >= 0 else None for i in which]
        if pictures:
            columns.append({"key": f"{key}_image", "label": key, "kind": "image"})
            data[f"{key}_image"] = [f"{prefix}{i}" if i in known else None for i in which]

    item("generated", rows, gen_ids, gen_images)
    item("match", match, train_ids, train_images)
    columns.append({"key": "similarity", "label": "similarity", "kind": "score"})
    data["similarity"] = interactive.finite_or_none(similarity[rows])
    item("duplicate", dup, train_ids, train_images)
    columns.append(
        {"key": "duplicate_similarity", "label": "duplicate similarity", "kind": "score"}
    )
    data["duplicate_similarity"] = interactive.finite_or_none(duplicate[rows])
    columns.append({"key": "excess", "label": "similarity - duplicate", "kind": "score"})
    data["excess"] = interactive.finite_or_none(excess[rows])
    note = (
        "match: the training item most similar to the generated one; duplicate: the training "
        "item most similar to the match. "
    )
    if ng == top:
        note += f"All {ng:,} generated items are here."
    else:
        note += (
            f"This page holds {rows.size:,} of the {ng:,} generated items: the {top:,} most "
            f"similar to a training item and a uniform random sample (seed "
            f"{interactive.SAMPLE_SEED}) of {rows.size - top:,} of the other {ng - top:,}. The "
            "table sorts, filters and pages through these rows; matches.parquet has them all."
        )
    thumbnails = {f"g{i}": uri for i, uri in gen_images.items()}
    thumbnails.update({f"t{i}": uri for i, uri in train_images.items()})
    used = {v for c in columns if c["kind"] == "image" for v in data[c["key"]] if v is not None}
    return {
        "title": f"Explore the {ng:,} generated items",
        "note": note,
        "noun": "generated items",
        "n": ng,
        "columns": columns,
        "data": data,
        "thumbnails": {
            k: v
            for k, v in thumbnails.items()
            if k in used and v.startswith("data:image/png;base64,")
        },
        "sort": {"key": "similarity", "desc": True},
        "search_label": "id contains",
        "slider": {
            "scores": {
                name: interactive.cuts(
                    values, extra=(COPY_THRESHOLD,) if name == "similarity" else ()
                )
                for name, values in scores.items()
            },
            "start": {"score": "similarity", "threshold": COPY_THRESHOLD},
            "label": "count the generated items scoring above a threshold on",
            "above": "above",
            "below": "at or below",
            "flagged_total": None,
            "exact": f"The counts are exact over all {ng:,} generated items.",
        },
    }


def write_report(
    result: ReplicationResult,
    summary: dict[str, Any],
    path: Path,
    sources: tuple[str, str],
    images: tuple[dict[int, str], dict[int, str]] = ({}, {}),
    ids: tuple[list[str] | None, list[str] | None] = (None, None),
) -> Path:
    """A self-contained page: summary statistics, the scatter plot and the strongest matches,
    side by side (generated | training match | its duplicate), with thumbnails when given, and
    an interactive table of every generated item that the page's script builds (the static
    table of the strongest matches is then hidden; without JavaScript the page is static).

    Every data-derived string is escaped; images are PNG data URIs made by alignscope; the
    only link is the relative ``scatter.png``.
    """
    e = html.escape
    gen_images, train_images = images

    def cell(uri: str | None, key: str, index: int, similarity: float | None) -> str:
        picture = f'<img src="{e(uri)}" alt="" width="96" data-thumb="{key}"><br>' if uri else ""
        sim = "" if similarity is None else f"<br>{similarity:.4f}"
        return f"<td>{picture}#{index}{sim}</td>"

    lines = []
    for g in strongest(result):
        match, dup = int(result.index[g, 0]), int(result.duplicate_index[g])
        lines.append(
            "<tr>"
            + cell(gen_images.get(int(g)), f"g{int(g)}", int(g), None)
            + cell(train_images.get(match), f"t{match}", match, float(result.similarity[g, 0]))
            + cell(train_images.get(dup), f"t{dup}", dup, float(result.duplicate_similarity[g]))
            + "</tr>"
        )
    rows = "\n".join(lines)

    def stats_row(name: str, label: str) -> str:
        s = summary[name]
        values = "".join(
            "<td>"
            + (
                "-"
                if key not in s
                else f"{int(s[key]):,}"
                if key == "count"
                else f"{float(s[key]):.4f}"
            )
            + "</td>"
            for key, _ in _STATISTICS
        )
        return f"<tr><th>{e(label)}</th>{values}</tr>"

    stat_head = "".join(f"<th>{e(label)}</th>" for _, label in _STATISTICS)
    copies = summary["generated_to_train"].get(f"fraction_above_{COPY_THRESHOLD}")
    copy_line = (
        ""
        if copies is None
        else f" {100 * float(copies):.3g}% of the generated items have a training match above "
        f"the SSCD copy threshold {COPY_THRESHOLD}."
    )
    # the thumbnails of the static table are on the page already (data-thumb): not twice
    spec = explorer_data(result, ids, images)
    static = {f"g{int(g)}" for g in strongest(result) if int(g) in gen_images}
    for g in strongest(result):
        for t in (int(result.index[g, 0]), int(result.duplicate_index[g])):
            if t in train_images:
                static.add(f"t{t}")
    spec["thumbnails"] = {k: v for k, v in spec["thumbnails"].items() if k not in static}
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alignscope replication report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}{interactive.STYLE}</style>
</head><body>
<h1>Replication report</h1>
<p>generated: <code>{e(sources[0])}</code><br>training: <code>{e(sources[1])}</code><br>
{e(_method_sentence(summary))}{e(copy_line)}</p>
<h2>Summary</h2>
<p>Cosine similarity of each generated item to its nearest training item, and of that training
item to its own nearest other training item (how much the training data duplicates itself).</p>
<table><tr><th></th>{stat_head}</tr>
{stats_row("generated_to_train", "generated -> nearest training item")}
{stats_row("train_to_train", "that item -> its nearest other training item")}</table>
{interactive.HOST}
<h2>Generated vs training duplication</h2><img src="scatter.png" alt="scatter plot" width="480">
<section id="alignscope-static"><h2>Strongest matches</h2>
<p>Rows of the two inputs with cosine similarities; pictures appear when the stores were
written by <code>alignscope embed</code> and their datasets are still in place.</p>
<table><tr><th>generated</th><th>training match</th><th>its nearest other training item</th></tr>
{rows}
</table></section>
{interactive.explorer_html(spec)}</body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def write_replication(
    result: ReplicationResult,
    out_dir: str | os.PathLike[str],
    sources: tuple[str, str],
    images: tuple[dict[int, str], dict[int, str]] = ({}, {}),
    ids: tuple[list[str] | None, list[str] | None] = (None, None),
) -> dict[str, str]:
    """matches.parquet (or .npy without pyarrow), summary.json, scatter.png, report.html;
    ``ids`` (generated, training) name the items beside their row numbers."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    summary["generated"], summary["training"] = sources
    try:
        import pyarrow  # noqa: F401

        matches = out / "matches.parquet"
    except ImportError:
        matches = out / "matches.npy"
    written = {
        "matches": write_matches(result, matches, ids),
        "summary": write_summary(summary, out / "summary.json"),
        "scatter": write_scatter(result, out / "scatter.png"),
        "report": write_report(result, summary, out / "report.html", sources, images, ids),
    }
    return {key: str(value) for key, value in written.items()}
