"""`alignscope screen`: score pairs for poisoning, evaluate the scores, write a keep list."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from alignscope.cli._common import (
    UsageError,
    _add_overwrite,
    _load_npy,
    _open_dataset,
    _positive_int,
)


def cmd_screen(args: argparse.Namespace) -> int:
    from alignscope.io import is_store, open_store, store_row_ids
    from alignscope.report.thumbnails import thumbnails
    from alignscope.screen.run import load_truth, screen_store
    from alignscope.screen.scores import DEFAULT_SCORES, SCORES

    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            "screen draws plots with matplotlib: pip install 'alignscope[plots]'"
        ) from exc
    scores = tuple(s.strip() for s in (args.scores or "").split(",") if s.strip())
    if args.scores is None:
        scores = DEFAULT_SCORES
    bad = [s for s in scores if s not in SCORES]
    if bad or not scores:
        raise UsageError(
            f"--scores: unknown score {bad[0] if bad else ''!r}; choose from {', '.join(SCORES)}"
        )
    runner = _ray_runner(args)
    path = Path(args.store)
    if not path.exists():
        raise UsageError(f"STORE: no such file or directory {args.store!r}")
    dataset = args.images  # where thumbnails may come from: only a dataset the user names
    # --hf-out is checked before any work (an embedding can take hours)
    export = _hf_export(args, None if is_store(path) else path)
    if not is_store(path):
        dataset = str(path)
        if not args.clip:
            raise UsageError(
                f"STORE: {args.store!r} is an image dataset; give --clip SPEC to embed it first "
                "(or pass a store written by `alignscope embed`)"
            )
        from alignscope.embed import embed_dataset, load_clip

        embedded = Path(args.out) / "store"
        embed_dataset(
            _open_dataset(path, False, "STORE"),
            embedded,
            clip=load_clip(args.clip, args.device),
            progress=not args.quiet,
        )
        path = embedded
    try:
        store = open_store(path)
    except ValueError as exc:
        raise UsageError(f"STORE: {exc}") from exc
    if export is not None:
        _check_export_source(path, export[0])
    second, purified = _second_view(args, store, scores)
    if args.scores is None:  # the default: every score the store's views allow
        if second is not None:
            scores += ("view_density", "cross_view")
        if purified is not None:
            scores += ("purification",)
    truth = None
    if args.manifest:
        try:
            truth = load_truth(args.manifest, store.n)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(f"--manifest: {exc}") from exc
    ids = store_row_ids(path) if path.is_dir() else None
    reference = _reference_clean(args, ids, store.n)
    summary = screen_store(
        store,
        args.out,
        scores=scores,
        second_view=second,
        purified_view=purified,
        truth=truth,
        remove_fraction=args.remove_fraction,
        threshold=args.threshold,
        target_fpr=args.target_fpr,
        reference_clean=reference,
        rank_by=args.rank_by,
        k=args.k,
        knn=args.knn,
        ids=ids,
        captions=_metadata_texts(path, "caption", store.n),
        concepts=_metadata_texts(path, "concept", store.n),
        thumbnails=(lambda rows: thumbnails(path, rows, dataset)) if path.is_dir() else None,
        overwrite=args.overwrite,
        progress=not args.quiet,
        runner=runner,
    )
    exported = None
    if export is not None:
        from alignscope.screen.export import to_hf_dataset

        exported = to_hf_dataset(
            export[0],
            Path(args.out) / "scores.parquet",
            export[1],
            prefix=args.hf_prefix,
            progress=not args.quiet,
        )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from alignscope.report.tables import format_table

        if summary["metrics"]:
            rows = [
                (name, m["auroc"], m["auprc"], m["tpr_at_1pct_fpr"], m["tpr_at_5pct_fpr"])
                for name, m in summary["metrics"].items()
            ]
            print(format_table(("score", "AUROC", "AUPRC", "TPR@1%FPR", "TPR@5%FPR"), rows))
        r = summary["removal"]
        if r["rule"] == "target_fpr":
            basis = (
                f"from {r['n_reference']:,} trusted clean rows, FPR at most "
                f"{r['fpr_upper_bound']:.4g} with {r['confidence']:.0%} confidence"
                if r["basis"] == "reference-clean"
                else "from the distribution of all rows"
            )
            print(f"threshold at {r['fpr']:g} FPR: {r['threshold']:.6g} ({basis})")
        print(
            f"removed {r['removed']:,}, kept {r['kept']:,}; wrote scores.parquet, summary.json, "
            f"plots/, report.html, keep.txt to {args.out}"
        )
        if exported is not None:
            print(
                f"saved {export[0]} with the scores to {export[1]}: {exported['rows']:,} rows, "
                f"{exported['screened']:,} screened, {exported['kept']:,} kept"
            )
    return 0


def _hf_export(args: argparse.Namespace, dataset: Path | None) -> tuple[Path, Path] | None:
    """(dataset, out) of --hf-dataset and --hf-out (the dataset defaults to STORE when STORE
    is one), checked before any work; None without --hf-out."""
    if args.hf_out is None:
        if args.hf_dataset is not None:
            raise UsageError("--hf-dataset needs --hf-out DIR, the folder to save it into")
        return None
    name = "--hf-dataset" if args.hf_dataset is not None else "STORE"
    source = Path(args.hf_dataset) if args.hf_dataset is not None else dataset
    if source is None:
        raise UsageError(
            "--hf-out needs --hf-dataset DIR: the saved Hugging Face dataset STORE was "
            "embedded from"
        )
    from alignscope.screen.export import check_dataset, check_out

    try:
        check_dataset(source)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"{name}: {exc}") from exc
    try:
        check_out(source, args.hf_out)
    except ValueError as exc:
        raise UsageError(f"--hf-out: {exc}") from exc
    return source, Path(args.hf_out)


def _check_export_source(store: Path, dataset: Path) -> None:
    """A store whose embed_report.json names another dataset, or a dataset that changed since
    the store was embedded from it (its row count, or sampled rows' captions, not the ones the
    store recorded), would join its scores to the wrong rows: refused."""
    from alignscope.report.thumbnails import embedded_from
    from alignscope.screen.export import check_screened_dataset

    named = embedded_from(store) if store.is_dir() else None
    if named is not None and Path(named).resolve() != dataset.resolve():
        raise UsageError(
            f"--hf-dataset: the store was embedded from {named!r}, not {str(dataset)!r}; give "
            "the dataset the store was embedded from"
        )
    if store.is_dir():
        try:
            check_screened_dataset(dataset, store)
        except ValueError as exc:
            raise UsageError(f"--hf-dataset: {exc}") from exc


def _ray_runner(args: argparse.Namespace) -> Any:
    """The Ray span runner of --ray (checked before any work: Ray missing is one line, not an
    error after the embedding), or None."""
    if args.ray is None:
        if args.workers is not None:
            raise UsageError("--workers applies to --ray (Ray tasks at once)")
        return None
    from alignscope.distributed.neighbours import RaySpanRunner

    try:
        return RaySpanRunner(address=args.ray or None, workers=args.workers)
    except ValueError as exc:
        raise UsageError(f"--ray: {exc}") from exc


def _second_view(args: argparse.Namespace, store: Any, scores: tuple[str, ...]) -> tuple[Any, Any]:
    """The second image view (--second-view, else the store's vae view when it has one) and,
    when that is the store's vae view, its purified latents; (None, None) when there is none."""
    from alignscope.io.store import VIEWS  # image, text, sscd, vae, vae_purified
    from alignscope.screen.scores import VIEW_SCORES

    name = args.second_view
    if name is None:
        if store.has_view("vae"):
            name = "vae"
        elif VIEW_SCORES & set(scores):
            named = sorted(VIEW_SCORES & set(scores))
            raise UsageError(
                f"{', '.join(named)} need{'s' if len(named) == 1 else ''} --second-view (a view "
                "of the store: vae from `embed --vae`, sscd; or an .npy)"
            )
        else:
            return None, None
    if name in VIEWS and store.has_view(name):
        second = store.read(0, store.n, name)
    elif name in VIEWS and not Path(name).exists():
        raise UsageError(f"--second-view: the store has no {name} view")
    else:
        second = _load_npy(name, "--second-view")
    if second.ndim != 2 or second.shape[0] != store.n:
        raise UsageError(
            f"--second-view: expected ({store.n}, d) rows, one per pair, got shape "
            f"{tuple(second.shape)}"
        )
    purified = None
    if name == "vae" and store.has_view("vae_purified"):
        purified = store.read(0, store.n, "vae_purified")
    elif "purification" in scores:
        raise UsageError(
            "purification needs the store's vae and vae_purified views (`alignscope embed "
            "--vae DIR`) and --second-view vae"
        )
    return second, purified


def _reference_clean(args: argparse.Namespace, ids: list[str] | None, n: int) -> Any:
    """Rows of the ids listed in --reference-clean (ids as in keep.txt), or None."""
    if not args.reference_clean:
        return None
    if args.target_fpr is None:
        raise UsageError("--reference-clean needs --target-fpr")
    from alignscope.screen.decisions import read_row_ids

    try:  # rows without stored ids are named by their index, as in keep.txt
        return read_row_ids(args.reference_clean, ids or [str(i) for i in range(n)])
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--reference-clean: {exc}") from exc


def _metadata_texts(path: Path, name: str, n: int) -> list[str] | None:
    """A metadata column of a store's rows (the captions `alignscope embed` writes; a concept
    column when the store has one), else None."""
    from alignscope.io import read_metadata_column

    values = read_metadata_column(path, name) if path.is_dir() else None
    return values if values is not None and len(values) == n else None


def register(sub: Any) -> None:
    """Add the ``screen`` sub-command to ``sub`` (an argparse sub-parsers action)."""
    from alignscope.screen.scores import DEFAULT_SCORES, SCORES

    scr = sub.add_parser("screen", help="score pairs for poisoning; evaluate; write a keep list")
    scr.add_argument(
        "store",
        help="a store (clip-retrieval dir, .npy of image embeddings, .parquet) or an image dataset "
        "(with --clip)",
    )
    scr.add_argument("--out", required=True, help="output directory")
    _add_overwrite(scr)
    scr.add_argument(
        "--scores",
        default=None,
        help="comma-separated, from: "
        + ", ".join(SCORES)
        + ". Default: "
        + ",".join(DEFAULT_SCORES)
        + ", plus view_density and cross_view with a second view (the store's vae view by "
        "default) and purification with the store's vae_purified view",
    )
    scr.add_argument(
        "--second-view",
        dest="second_view",
        help="the second image view of view_density, cross_view, view_residual and "
        "purification: a view of the store (vae or vae_purified from embed --vae, sscd, image, "
        "text), or an .npy of (N, d) rows; default: the store's vae view when it has one",
    )
    scr.add_argument(
        "--manifest", help="ground truth: poison_manifest.parquet, truth.npz or bool .npy"
    )
    scr.add_argument("--remove-fraction", dest="remove_fraction", type=float, help="drop the top F")
    scr.add_argument("--threshold", type=float, help="drop pairs scoring above T (on --rank-by)")
    scr.add_argument(
        "--target-fpr",
        dest="target_fpr",
        type=float,
        help="drop pairs above the threshold that flags at most F of clean pairs (0 < F < 1)",
    )
    scr.add_argument(
        "--reference-clean",
        dest="reference_clean",
        metavar="FILE",
        help="ids of trusted clean pairs, one a line ('#' comments), to estimate the "
        "--target-fpr threshold from; without it, from all pairs' scores",
    )
    scr.add_argument(
        "--rank-by",
        dest="rank_by",
        help="score to rank and filter by (default: the first of --scores; combined by default)",
    )
    scr.add_argument("--k", type=_positive_int, default=10, help="neighbours for k-NN scores (10)")
    scr.add_argument(
        "--knn",
        choices=("exact", "ivf", "hnsw", "auto"),
        default="exact",
        help="how neighbours are found: exact (default), FAISS ivf or hnsw (recall@k measured "
        "on 1,000 rows, in summary.json), or auto (exact when a timed probe predicts it "
        "finishes in 10 minutes)",
    )
    scr.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="search the neighbours' query spans as Ray tasks that read the store from disk (a "
        "local instance without ADDRESS); the same scores as without --ray",
    )
    scr.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="--ray: spans searched at once (the CPUs of a local instance; default all)",
    )
    scr.add_argument("--clip", help="CLIP spec to embed a dataset given instead of a store")
    scr.add_argument(
        "--images",
        help="the dataset STORE was embedded from, for thumbnails in report.html (it must be the "
        "one the store's embed_report.json names)",
    )
    scr.add_argument(
        "--hf-dataset",
        dest="hf_dataset",
        metavar="DIR",
        help="the Hugging Face dataset (saved with save_to_disk) STORE was embedded from, for "
        "--hf-out (default: STORE itself when STORE is such a dataset)",
    )
    scr.add_argument(
        "--hf-out",
        dest="hf_out",
        metavar="DIR",
        help="save the dataset there with each score, rank, removed, poisoned (with "
        "--manifest) and screened as columns: ds.filter(lambda r: not r['removed']) keeps "
        "exactly the rows of keep.txt",
    )
    scr.add_argument(
        "--hf-prefix",
        dest="hf_prefix",
        default="",
        metavar="TEXT",
        help="--hf-out: put before the added columns' names (when the dataset has such columns)",
    )
    scr.add_argument("--device", default="cpu")
    scr.add_argument("--json", action="store_true")
    scr.add_argument("--quiet", action="store_true")
    scr.set_defaults(func=cmd_screen)
