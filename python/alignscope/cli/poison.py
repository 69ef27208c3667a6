"""`alignscope poison`: write a poisoned copy of a dataset and its manifest."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from alignscope.cli._common import UsageError, _add_overwrite, _open_dataset, _positive_int


def cmd_poison(args: argparse.Namespace) -> int:
    from alignscope.poison.run import poison_dataset

    ranks = None
    if args.concept_ranks:
        try:
            a, b = (int(v) for v in args.concept_ranks.split("-"))
        except ValueError as exc:
            raise UsageError(f"--concept-ranks takes A-B, got {args.concept_ranks!r}") from exc
        ranks = (a, b)
    dataset = _open_dataset(args.dataset, args.trust_pickles)
    vae = clip = pipeline = perceptual = None
    if args.anchor_pipeline and args.method == "dirty-label":
        from alignscope.poison.anchors import load_pipeline

        pipeline = load_pipeline(args.anchor_pipeline)
    if args.method == "nightshade":
        from alignscope.poison.nightshade import load_vae

        if not args.vae:
            raise UsageError("nightshade needs --vae DIR (a diffusers AutoencoderKL or SD folder)")
        vae = load_vae(args.vae)
        if args.lpips:
            from alignscope.poison.nightshade import load_lpips

            try:
                perceptual = load_lpips()
            except ValueError as exc:
                raise UsageError(f"--lpips: {exc}") from exc
        if args.anchor_pipeline:
            from alignscope.poison.anchors import load_pipeline

            if not args.anchors:
                raise UsageError("--anchor-pipeline caches its images in --anchors DIR; give both")
            pipeline = load_pipeline(args.anchor_pipeline)
        if args.clip:
            from alignscope.embed import load_clip

            clip = load_clip(args.clip)
    report = poison_dataset(
        dataset,
        args.out,
        method=args.method,
        vae=vae,
        clip=clip,
        anchors=args.anchors,
        anchor_pipeline=pipeline,
        perceptual=perceptual,
        budget=args.budget,
        steps=args.steps,
        concepts=args.concepts,
        concept_ranks=ranks,
        per_concept=args.per_concept,
        ratio=args.ratio,
        target=args.target,
        seed=args.seed,
        out_format=args.format,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    data = report.to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(
            f"{report.method}: poisoned {report.poisoned:,} of {report.rows:,} pairs "
            f"({len(report.pairs)} concept pair(s)), written to {report.out} with "
            "poison_manifest.parquet"
        )
    if report.poisoned < report.planned:
        print(
            f"alignscope: warning: {report.planned - report.poisoned} of the {report.planned} "
            "planned poisons were skipped (their images do not decode; see skipped)",
            file=sys.stderr,
        )
    return 0


def register(sub: Any) -> None:
    """Add the ``poison`` sub-command to ``sub`` (an argparse sub-parsers action)."""
    poi = sub.add_parser("poison", help="write a poisoned copy of a dataset and its manifest")
    poi.add_argument("dataset", help="image folder, webdataset .tar(s), pickle-per-pair dir, or HF")
    poi.add_argument("--out", required=True, help="output directory")
    _add_overwrite(poi)
    poi.add_argument(
        "--method",
        required=True,
        choices=("dirty-label", "nightshade", "relabel", "badnets-1", "badnets-2", "wanet"),
    )
    poi.add_argument("--concepts", type=_positive_int, help="poison the K most frequent concepts")
    poi.add_argument("--concept-ranks", dest="concept_ranks", help="poison concepts of ranks A-B")
    poi.add_argument("--per-concept", dest="per_concept", type=_positive_int, help="poisons m each")
    poi.add_argument(
        "--ratio", type=float, help="m = ratio * N (0.0008), or the trigger ratio (0.1)"
    )
    poi.add_argument("--target", help="target class of trigger attacks")
    poi.add_argument("--vae", help="nightshade: diffusers AutoencoderKL (or SD) directory")
    poi.add_argument("--clip", help="nightshade: CLIP spec for the candidate filters")
    poi.add_argument("--anchors", help="nightshade: directory of anchor images {target}.png")
    poi.add_argument(
        "--anchor-pipeline",
        dest="anchor_pipeline",
        help="nightshade: diffusers pipeline directory to generate missing anchors into --anchors",
    )
    poi.add_argument("--budget", type=float, default=0.05, help="nightshade L-inf budget (0.05)")
    poi.add_argument(
        "--lpips", action="store_true", help="nightshade: add the paper's LPIPS < 0.07 penalty"
    )
    poi.add_argument("--steps", type=_positive_int, default=500, help="nightshade PGD steps (500)")
    poi.add_argument("--seed", type=int, default=0)
    poi.add_argument(
        "--format",
        choices=("folder", "webdataset", "pickle"),
        default=None,
        help="output format (default: the input's; folder for a saved HF dataset)",
    )
    poi.add_argument("--trust-pickles", dest="trust_pickles", action="store_true")
    poi.add_argument("--json", action="store_true")
    poi.add_argument("--quiet", action="store_true")
    poi.set_defaults(func=cmd_poison)
