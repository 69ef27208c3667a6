"""Files of a replication run: matches table, summary JSON, scatter plot, HTML report."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path
from alignscope.search.replication import ReplicationResult


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
        0.75, color="tab:red", linewidth=0.8, linestyle="--", label="SSCD copy threshold 0.75"
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


def write_report(
    result: ReplicationResult,
    summary: dict[str, Any],
    path: Path,
    sources: tuple[str, str],
    images: tuple[dict[int, str], dict[int, str]] = ({}, {}),
) -> Path:
    """A self-contained page: summary statistics, the scatter plot and the strongest matches,
    side by side (generated | training match | its duplicate), with thumbnails when given.

    Every data-derived string is escaped; images are PNG data URIs made by alignscope; the
    only link is the relative ``scatter.png``.
    """
    e = html.escape
    gen_images, train_images = images

    def cell(uri: str | None, index: int, similarity: float | None) -> str:
        picture = f'<img src="{e(uri)}" alt="" width="96"><br>' if uri else ""
        sim = "" if similarity is None else f"<br>{similarity:.4f}"
        return f"<td>{picture}#{index}{sim}</td>"

    lines = []
    for g in strongest(result):
        match, dup = int(result.index[g, 0]), int(result.duplicate_index[g])
        lines.append(
            "<tr>"
            + cell(gen_images.get(int(g)), int(g), None)
            + cell(train_images.get(match), match, float(result.similarity[g, 0]))
            + cell(train_images.get(dup), dup, float(result.duplicate_similarity[g]))
            + "</tr>"
        )
    rows = "\n".join(lines)

    def stats_rows(name: str) -> str:
        s = summary[name]
        return "".join(
            f"<tr><td>{e(name)}</td><td>{e(key)}</td><td>{value:.4f}</td></tr>"
            for key, value in s.items()
            if key != "count"
        )

    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alignscope replication report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head><body>
<h1>Replication report</h1>
<p>generated: <code>{e(sources[0])}</code><br>training: <code>{e(sources[1])}</code><br>
{summary["n_generated"]} generated items, top-{summary["k"]} matches by cosine similarity.</p>
<h2>Summary</h2><table><tr><th>set</th><th>statistic</th><th>value</th></tr>
{stats_rows("generated_to_train")}{stats_rows("train_to_train")}</table>
<h2>Generated vs training duplication</h2><img src="scatter.png" alt="scatter plot" width="480">
<h2>Strongest matches</h2>
<p>Rows of the two inputs with cosine similarities; pictures appear when the stores were
written by <code>alignscope embed</code> and their datasets are still in place.</p>
<table><tr><th>generated</th><th>training match</th><th>its nearest other training item</th></tr>
{rows}
</table></body></html>
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
        "report": write_report(result, summary, out / "report.html", sources, images),
    }
    return {key: str(value) for key, value in written.items()}
