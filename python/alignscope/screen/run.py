"""`alignscope screen`: scores a store, evaluates them against ground truth when given, and
writes the ranked table, plots, HTML report and the filtered training list."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import WORK_NAME, claimed_output, fingerprint_files
from alignscope.io.manifest import poison_flags
from alignscope.report import screening as out
from alignscope.screen.decisions import check_sample_size, row_indices, threshold_at_fpr
from alignscope.screen.evaluation import evaluate_scores
from alignscope.screen.scores import compute_scores
from alignscope.search.rows import Rows


def load_truth(path: str | Path, n: int) -> np.ndarray:
    """Poison flags (N,) bool from a poison_manifest.parquet (row, poisoned), a .npz with a
    ``poisoned`` array (synth.write_concept_world's truth.npz) or a bool .npy."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"ground truth {str(p)!r} does not exist")
    if p.suffix == ".parquet":
        return poison_flags(p, n)
    try:
        data = np.load(p, allow_pickle=False)
        flags = np.asarray(data["poisoned"] if p.suffix == ".npz" else data, dtype=bool)
    except Exception as exc:  # np.load raises many kinds on a damaged file
        raise ValueError(
            f"{p}: not a readable poison-flag file ({type(exc).__name__}: {exc})"
        ) from exc
    if flags.shape != (n,):
        raise ValueError(f"{p}: expected {n} poison flags, got shape {flags.shape}")
    return flags


def _digest(array: np.ndarray | None) -> str | None:
    if array is None:
        return None
    a = np.ascontiguousarray(array)
    return f"{a.dtype}{a.shape}:" + hashlib.sha256(a.tobytes()).hexdigest()[:32]


def screen_store(
    store: Any,
    out_dir: str | Path,
    *,
    scores: tuple[str, ...],
    second_view: np.ndarray | None = None,
    purified_view: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    remove_fraction: float | None = None,
    threshold: float | None = None,
    target_fpr: float | None = None,
    reference_clean: Any = None,
    rank_by: str | None = None,
    k: int = 10,
    knn: str = "exact",
    ids: list[str] | None = None,
    captions: list[str] | None = None,
    concepts: list[str] | None = None,
    images: dict[int, str] | None = None,
    thumbnails: Any = None,
    overwrite: bool = False,
    progress: bool = False,
    runner: Any = None,
) -> dict[str, Any]:
    """Score every pair of ``store`` and write the screening outputs to ``out_dir``.

    The store is read a span of rows at a time, never whole (the second view excepted: it is
    an array), so stores larger than memory are screened with memory O(N k) for the neighbour
    tables plus O(span d). The neighbour searches keep their index and finished spans in
    ``out_dir/.alignscope-work``: a run killed part-way (even with kill -9) and started again
    with the same inputs resumes its searches and writes what an uninterrupted run writes.
    ``runner`` searches the query spans elsewhere (Ray: :data:`alignscope.search.knn.SpanRunner`).

    ``out_dir`` may hold an earlier screening only of the same store with the same settings
    (then it is replaced); another one is refused naming what differs, unless ``overwrite``.
    Outputs are staged and replace the earlier ones whole, so a stopped run leaves the earlier
    run exactly as it was.

    One removal rule at most: ``remove_fraction`` (the top share by ``rank_by``), ``threshold``
    (rows scoring above it) or ``target_fpr`` (rows above the threshold at that false-positive
    rate, :func:`alignscope.screen.decisions.threshold_at_fpr`, estimated from the trusted clean
    rows ``reference_clean`` — row indices or a (N,) bool mask — when given, else from all
    rows). Without one nothing is removed.

    ``captions`` and ``concepts`` (N strings each) appear in report.html, whose table can be
    searched by caption and filtered by concept; ``thumbnails(rows)`` gives {row: PNG data URI}
    for the best-ranked rows (:data:`alignscope.report.screening.THUMBNAIL_ROWS`).
    """
    rules = [
        flag
        for flag, value in (
            ("--remove-fraction", remove_fraction),
            ("--threshold", threshold),
            ("--target-fpr", target_fpr),
        )
        if value is not None
    ]
    if len(rules) == 3:
        raise ValueError("give one of --remove-fraction, --threshold and --target-fpr, not all")
    if len(rules) == 2:
        raise ValueError(f"give {rules[0]} or {rules[1]}, not both")
    if reference_clean is not None and target_fpr is None:
        raise ValueError("--reference-clean needs --target-fpr")
    reference_rows = None
    if target_fpr is not None:
        if isinstance(target_fpr, bool) or not 0.0 < target_fpr < 1.0:
            raise ValueError(f"--target-fpr must be in (0, 1), got {target_fpr}")
        if reference_clean is not None:
            reference_rows = row_indices("reference_clean", reference_clean, int(store.n))
        # before any scoring: a sample too small for the rate could not flag a single row
        check_sample_size(
            int(store.n) if reference_rows is None else reference_rows.size,
            target_fpr,
            reference=reference_rows is not None,
        )
    if remove_fraction is not None and not 0.0 <= remove_fraction < 1.0:
        raise ValueError(f"remove fraction must be in [0, 1), got {remove_fraction}")
    for name, texts in (("captions", captions), ("concepts", concepts)):
        if texts is not None and len(texts) != int(store.n):
            raise ValueError(f"{name}: expected {store.n} strings, one per row, got {len(texts)}")
    files = store.files() if hasattr(store, "files") else []
    identity = {
        "store": fingerprint_files(files) if files else str(getattr(store, "source", "")),
        "n": int(store.n),
        "scores": list(scores),
        "k": int(k),
        "knn": knn,
        "rank_by": rank_by or scores[0],
        "remove_fraction": remove_fraction,
        "threshold": threshold,
        "target_fpr": target_fpr,
        "reference_clean": _digest(reference_rows),
        "second_view": _digest(second_view),
        "purified_view": _digest(purified_view),
        "truth": _digest(truth),
    }
    # The neighbour tables depend on the rows searched, not on the removal rule or the scores
    # asked for (each search's folder checks its own k and method): keyed by the inputs only,
    # a rerun with another threshold reuses them.
    inputs = {key: identity[key] for key in ("store", "n", "second_view", "purified_view")}
    with claimed_output(out_dir, "screen", identity, overwrite=overwrite, replaces_all=True):
        return _screen_into(
            store, out_dir, scores, (second_view, purified_view), truth, remove_fraction,
            threshold, target_fpr, reference_rows, rank_by, (k, knn), ids, (captions, concepts),
            images, thumbnails, (_work_key(inputs), progress, runner),
        )  # fmt: skip


def _work_key(inputs: dict[str, Any]) -> str:
    text = repr(sorted(inputs.items()))
    return "neighbours-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _screen_into(
    store: Any,
    out_dir: str | Path,
    scores: tuple[str, ...],
    views: tuple[np.ndarray | None, np.ndarray | None],
    truth: np.ndarray | None,
    remove_fraction: float | None,
    threshold: float | None,
    target_fpr: float | None,
    reference_rows: np.ndarray | None,
    rank_by: str | None,
    neighbours: tuple[int, str],
    ids: list[str] | None,
    texts: tuple[list[str] | None, list[str] | None],
    images: dict[int, str] | None,
    thumbnails: Any,
    work: tuple[str, bool, Any],
) -> dict[str, Any]:
    final = Path(out_dir)
    scratch = final / WORK_NAME
    scratch.mkdir(parents=True, exist_ok=True)
    # The run holds the folder's lock: any staging folder here is a killed run's leftover.
    for stale in scratch.glob("stage-*"):
        shutil.rmtree(stale, ignore_errors=True)
    table = compute_scores(
        Rows(store, "image"),
        Rows(store, "text") if store.has_text else None,
        scores=scores,
        second_view=views[0],
        purified_view=views[1],
        k=neighbours[0],
        knn=neighbours[1],
        checkpoint=scratch / work[0],
        progress=work[1],
        runner=work[2],
    )
    key = rank_by or scores[0]
    if key not in table.scores:
        raise ValueError(f"--rank-by {key!r} is not among the computed scores {list(table.scores)}")
    primary = table.scores[key]
    order = np.argsort(-primary, kind="stable")
    n = store.n
    if target_fpr is not None:
        cut = threshold_at_fpr(primary, target_fpr, reference=reference_rows)
        removed = cut.flags(primary)
        removal = {
            "rule": "target_fpr",
            "fpr": target_fpr,
            "threshold": cut.value,
            "basis": cut.basis,
            "n_reference": cut.n_reference,
            "fpr_upper_bound": cut.fpr_upper_bound,
            "confidence": cut.confidence,
        }
    elif threshold is not None:
        removed = primary > threshold
        removal = {"rule": "threshold", "threshold": threshold}
    else:
        fraction = remove_fraction or 0.0
        removed = np.zeros(n, dtype=bool)
        removed[order[: round(fraction * n)]] = True
        removal = {"rule": "remove_fraction", "fraction": fraction}
    removal.update({"removed": int(removed.sum()), "kept": int((~removed).sum())})
    # Every output is written into a hidden folder (root, below) and moved into ``final`` only
    # when all are complete: a run stopped part-way leaves the previous run's outputs whole,
    # never a mix of old and new files.
    root = Path(tempfile.mkdtemp(prefix="stage-", suffix=".tmp", dir=scratch))
    try:
        (root / "plots").mkdir()
        (root / "scores").mkdir()
        ids = ids or [str(i) for i in range(n)]
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(1, n + 1)

        def columns(rows: np.ndarray) -> dict[str, Any]:
            picked: dict[str, Any] = {"rank": rank[rows], "row": rows, "id": [ids[i] for i in rows]}
            for name, values in table.scores.items():
                picked[name] = values[rows]
            picked["removed"] = removed[rows]
            if truth is not None:
                picked["poisoned"] = truth[rows]
            return picked

        # the merged ranking, and one part per store shard in row order (to join with it)
        out.write_scores(columns(order), root / "scores.parquet")
        for number, (first, end) in enumerate(_shard_spans(store)):
            out.write_scores(
                columns(np.arange(first, end)), root / "scores" / f"part-{number:05d}.parquet"
            )
        metrics = evaluate_scores(table.scores, truth) if truth is not None else None
        plots = [
            out.plot_cdf(name, v, truth, root / "plots" / f"cdf_{name}.png")
            .relative_to(root)
            .as_posix()
            for name, v in table.scores.items()
        ]
        if metrics:
            plots.append(
                out.plot_tradeoff(metrics, root / "plots" / "tradeoff.png")
                .relative_to(root)
                .as_posix()
            )
        summary = {
            "n": n,
            "scores": table.methods,
            "rank_by": key,
            "neighbours": table.neighbours,
            "removal": removal,
            "metrics": metrics,
        }
        if truth is not None:
            summary["removal"]["poisons_removed"] = int((removed & truth).sum())
            summary["removal"]["benign_removed"] = int((removed & ~truth).sum())
            if target_fpr is not None:  # the rate the threshold was meant to hold
                summary["removal"]["realised_fpr"] = float(np.mean(removed[~truth]))
        out.write_json(summary, root / "summary.json")
        out.write_keep([ids[i] for i in range(n) if not removed[i]], root / "keep.txt")
        captions = texts[0]
        top = order[: out.TOP_SUSPICIOUS]
        pictures = (
            thumbnails(order[: out.THUMBNAIL_ROWS]) if thumbnails is not None else (images or {})
        )
        ranked = [
            {
                "rank": r + 1,
                "row": int(i),
                "id": ids[i],
                "caption": captions[i] if captions else "",
                key: float(primary[i]),
                "poisoned": None if truth is None else bool(truth[i]),
            }
            for r, i in enumerate(top)
        ]
        # the report's interactive table: rows up to a cap, exact counts at any threshold
        explorer = out.explorer_data(
            table.scores,
            key,
            order,
            removal,
            ids=ids,
            removed=removed,
            captions=captions,
            concepts=texts[1],
            truth=truth,
            images=pictures,
        )
        out.write_report(
            root / "report.html",
            source=str(getattr(store, "source", "")),
            methods=table.methods,
            metrics=metrics,
            ranked=ranked,
            rank_by=key,
            plots=plots,
            images=pictures,
            removal=removal,
            explorer=explorer,
        )
        _publish(root, final)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    # neighbour tables of earlier inputs would only take space (this run's stay for reruns)
    for other in scratch.glob("neighbours-*"):
        if other.name != work[0]:
            shutil.rmtree(other, ignore_errors=True)
    return summary


def _shard_spans(store: Any) -> list[tuple[int, int]]:
    """The store's shards as (first row, end row); one span for a store without shards."""
    if hasattr(store, "shard_spans"):
        return store.shard_spans("image")
    return [(0, int(store.n))]


def _publish(stage: Path, root: Path) -> None:
    """Move the outputs of ``stage`` into ``root``: plots/ and scores/ as wholes (an earlier
    run's plots of other scores, or parts of another store, leave with the old folders), then
    the files, the report last."""
    for folder in ("plots", "scores"):
        old = root / folder
        if old.is_dir():
            os.replace(old, stage / f".old_{folder}")
        os.replace(stage / folder, old)
    names = [p.name for p in stage.iterdir() if p.is_file()]
    for name in sorted(names, key=lambda n: (n == "report.html", n)):
        os.replace(stage / name, root / name)
