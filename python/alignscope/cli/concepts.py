"""`alignscope concepts`: the concepts a dataset's captions name, ranked by how many captions
name each, so that a poisoning pool (`poison --vocabulary`) or an evaluation's concept list
(`evaluate --concepts FILE`: the first 500 lines are the paper's pool, the next 500 its other
frequent nouns) follows the data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from alignscope.cli._common import UsageError, _add_overwrite, _open_dataset, _positive_int

DEFAULT_TOP = 1000  # the Implosion evaluation's 1000 concepts


def cmd_concepts(args: argparse.Namespace) -> int:
    from alignscope._files import atomic_path
    from alignscope.poison.concepts import (
        concept_frequencies,
        load_vocabulary,
        ranked_concepts,
        read_vocabulary,
    )

    try:
        vocabulary = (
            load_vocabulary() if args.vocabulary is None else read_vocabulary(args.vocabulary)
        )
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--vocabulary: {exc}") from exc
    if args.out is not None and Path(args.out).is_dir():
        raise UsageError(f"--out {args.out!r} is a directory: give the file to write, nouns.txt")
    dataset = _open_dataset(args.dataset, args.trust_pickles)
    captions = [record.caption for record in dataset]  # the images are never decoded
    ranked = ranked_concepts(concept_frequencies(captions, vocabulary))
    if not ranked:
        empty = sum(1 for c in captions if not c.strip())
        raise UsageError(
            f"DATASET: no caption names a noun of the vocabulary ({len(captions)} records, "
            f"{empty} without a caption); check that the dataset has its captions (sidecar "
            ".txt, captions.jsonl or .csv), or give --vocabulary"
        )
    top = ranked[: args.top]
    if args.out is not None:
        from alignscope._files import claimed_file, fingerprint_tree

        # claimed: a noun list the user wrote, or one from another dataset, vocabulary or
        # --top, is refused (--overwrite replaces it) instead of silently replaced
        identity = {
            "dataset": fingerprint_tree(args.dataset),
            "vocabulary": "packaged"
            if args.vocabulary is None
            else fingerprint_tree(args.vocabulary),
            "top": args.top,
        }
        claim = claimed_file(args.out, "concepts", identity, flag="--out", overwrite=args.overwrite)
        # nouns only, one per line: what `poison --vocabulary` and `evaluate --concepts` read
        with claim as path, atomic_path(path) as tmp:
            tmp.write_text("".join(f"{noun}\n" for noun, _ in top), encoding="utf-8")
    if args.json:
        report = {
            "dataset": str(args.dataset),
            "captions": len(captions),
            "vocabulary": args.vocabulary or "packaged",
            "concepts_found": len(ranked),
            "out": args.out,
            "top": [{"rank": r, "noun": n, "captions": c} for r, (n, c) in enumerate(top, 1)],
        }
        print(json.dumps(report, indent=2))
    elif args.out is not None:
        print(
            f"the {len(top):,} most frequent of the {len(ranked):,} concepts named in "
            f"{len(captions):,} captions, written to {args.out}"
        )
    else:
        print("rank\tconcept\tcaptions")
        for rank, (noun, count) in enumerate(top, 1):
            print(f"{rank}\t{noun}\t{count}")
    return 0


def register(sub: Any) -> None:
    """Add the ``concepts`` sub-command to ``sub`` (an argparse sub-parsers action)."""
    con = sub.add_parser(
        "concepts",
        help="the nouns a dataset's captions name, most frequent first (a concept pool)",
    )
    con.add_argument("dataset", help="image folder, webdataset .tar(s), pickle-per-pair dir, or HF")
    con.add_argument(
        "--top",
        type=_positive_int,
        default=DEFAULT_TOP,
        help=f"keep the N most frequent (default {DEFAULT_TOP}, the paper's evaluation size)",
    )
    con.add_argument(
        "--out", help="write the nouns to this file, one per line, most frequent first"
    )
    con.add_argument(
        "--vocabulary",
        help="file of nouns, one per line, to look for (default: the packaged COCO, ImageNet, "
        "LVIS and Open Images class names)",
    )
    con.add_argument("--trust-pickles", dest="trust_pickles", action="store_true")
    con.add_argument("--json", action="store_true")
    _add_overwrite(con)
    con.set_defaults(func=cmd_concepts)
