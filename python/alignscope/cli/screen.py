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
    from alignscope.screen.scores import SCORES

    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            "screen draws plots with matplotlib: pip install 'alignscope[plots]'"
        ) from exc
    scores = tuple(s.strip() for s in args.scores.split(",") if s.strip())
    bad = [s for s in scores if s not in SCORES]
    if bad or not scores:
        raise UsageError(
            f"--scores: unknown score {bad[0] if bad else ''!r}; choose from {', '.join(SCORES)}"
        )
    path = Path(args.store)
    if not path.exists():
        raise UsageError(f"STORE: no such file or directory {args.store!r}")
    dataset = args.images  # where thumbnails may come from: only a dataset the user names
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
    second = None
    if "cross_view" in scores:
        if not args.second_view:
            raise UsageError(
                "cross_view needs --second-view (a view of the store, e.g. sscd, or an .npy)"
            )
        if args.second_view in ("sscd", "image", "text") and store.has_view(args.second_view):
            second = store.read(0, store.n, args.second_view)
        elif args.second_view in ("sscd", "image", "text") and not Path(args.second_view).exists():
            raise UsageError(f"--second-view: the store has no {args.second_view} view")
        else:
            second = _load_npy(args.second_view, "--second-view")
        if second.ndim != 2 or second.shape[0] != store.n:
            raise UsageError(
                f"--second-view: expected ({store.n}, d) rows, one per pair, got shape "
                f"{tuple(second.shape)}"
            )
    truth = None
    if args.manifest:
        try:
            truth = load_truth(args.manifest, store.n)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(f"--manifest: {exc}") from exc
    ids = store_row_ids(path) if path.is_dir() else None
    summary = screen_store(
        store,
        args.out,
        scores=scores,
        second_view=second,
        truth=truth,
        remove_fraction=args.remove_fraction,
        threshold=args.threshold,
        rank_by=args.rank_by,
        k=args.k,
        ids=ids,
        captions=_captions(path, store.n),
        thumbnails=(lambda rows: thumbnails(path, rows, dataset)) if path.is_dir() else None,
        overwrite=args.overwrite,
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
        print(
            f"removed {r['removed']:,}, kept {r['kept']:,}; wrote scores.parquet, summary.json, "
            f"plots/, report.html, keep.txt to {args.out}"
        )
    return 0


def _captions(path: Path, n: int) -> list[str] | None:
    """Captions of a store written by `alignscope embed` (its metadata), else None."""
    from alignscope.io import read_metadata_column

    captions = read_metadata_column(path, "caption") if path.is_dir() else None
    return captions if captions is not None and len(captions) == n else None


def register(sub: Any) -> None:
    """Add the ``screen`` sub-command to ``sub`` (an argparse sub-parsers action)."""
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
        default="alignment,d_s,ad_xy,concept_consistency,k_distance,lid",
        help="comma-separated; from: alignment, d_s, ad_xy, concept_consistency, cross_view, "
        "k_distance, lid",
    )
    scr.add_argument(
        "--second-view", dest="second_view", help="cross_view's view: sscd, or an .npy"
    )
    scr.add_argument(
        "--manifest", help="ground truth: poison_manifest.parquet, truth.npz or bool .npy"
    )
    scr.add_argument("--remove-fraction", dest="remove_fraction", type=float, help="drop the top F")
    scr.add_argument("--threshold", type=float, help="drop pairs scoring above T (on --rank-by)")
    scr.add_argument("--rank-by", dest="rank_by", help="score to rank and filter by (first score)")
    scr.add_argument("--k", type=_positive_int, default=10, help="neighbours for k-NN scores (10)")
    scr.add_argument("--clip", help="CLIP spec to embed a dataset given instead of a store")
    scr.add_argument(
        "--images",
        help="the dataset STORE was embedded from, for thumbnails in report.html (it must be the "
        "one the store's embed_report.json names)",
    )
    scr.add_argument("--device", default="cpu")
    scr.add_argument("--json", action="store_true")
    scr.add_argument("--quiet", action="store_true")
    scr.set_defaults(func=cmd_screen)
