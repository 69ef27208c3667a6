"""`alignscope poison`: write a poisoned copy of a dataset and its manifest."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
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
    vocabulary = _concept_options(args)
    trigger_options = _trigger_options(args)  # before any model or dataset loads
    availability = _availability_options(args)
    dataset = _open_dataset(args.dataset, args.trust_pickles)
    vae = clip = pipeline = perceptual = None
    if args.anchor_pipeline and args.method == "dirty-label" and args.dirty_images != "dataset":
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
        trigger_options=trigger_options,
        vae=vae,
        clip=clip,
        anchors=args.anchors,
        anchor_pipeline=pipeline,
        dirty_images=args.dirty_images,
        perceptual=perceptual,
        budget=args.budget,
        steps=args.steps,
        nightshade_size=args.nightshade_size or None,
        concepts=args.concepts,
        concept_ranks=ranks,
        concept_pool=args.concept_pool,
        vocabulary=vocabulary,
        per_concept=args.per_concept,
        ratio=args.ratio,
        ratio_of=args.ratio_of,
        target=args.target,
        seed=args.seed,
        out_format=args.format,
        progress=not args.quiet,
        overwrite=args.overwrite,
        availability_options=availability,
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


def _concept_options(args: argparse.Namespace) -> Any:
    """Check --concept-pool and --dirty-images against the other flags; the --vocabulary
    file's vocabulary (None: the packaged one)."""
    pool, k = args.concept_pool, args.concepts
    if pool is not None:
        if k is None:
            raise UsageError(
                "--concept-pool goes with --concepts K (the pool K concepts are drawn from); "
                "--concept-ranks A-B is its own pool"
            )
        if pool < 0:
            raise UsageError(f"--concept-pool must be >= 0 (0: exactly the top K), got {pool}")
        if 0 < pool < k:
            raise UsageError(
                f"--concept-pool {pool} is smaller than --concepts {k}: give a pool of at least "
                "K (500, the paper's), or 0 to poison exactly the K most frequent"
            )
    if args.dirty_images is not None and args.method != "dirty-label":
        raise UsageError(f"--dirty-images is for --method dirty-label, not {args.method}")
    if args.dirty_images == "generated" and not args.anchor_pipeline:
        raise UsageError(
            "--dirty-images generated needs --anchor-pipeline DIR (a diffusers text-to-image "
            "pipeline; SD 1.5 in the paper)"
        )
    if args.vocabulary is None:
        return None
    from alignscope.poison.concepts import read_vocabulary

    try:
        return read_vocabulary(args.vocabulary)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--vocabulary: {exc}") from exc


def _trigger_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The trigger options the flags give, refused for a method they do not apply to."""
    options: dict[str, Any] = {}
    if args.pattern is not None:
        if args.method not in ("badnets-2", "picture-patch"):
            raise UsageError(
                f"--pattern is for --method badnets-2 or picture-patch, not {args.method}"
            )
        options["pattern"] = _read_picture(args.pattern)
    for flag, key, value in (
        ("--wanet-grid", "k", args.wanet_grid),
        ("--wanet-strength", "s", args.wanet_strength),
    ):
        if value is None:
            continue
        if args.method != "wanet":
            raise UsageError(f"{flag} is for --method wanet, not {args.method}")
        options[key] = value
    if args.wanet_grid is not None and args.wanet_grid < 2:
        raise UsageError(f"--wanet-grid must be an integer >= 2, got {args.wanet_grid}")
    if args.wanet_strength is not None and not (
        math.isfinite(args.wanet_strength) and args.wanet_strength >= 0
    ):
        raise UsageError(
            f"--wanet-strength must be a finite number >= 0, got {args.wanet_strength}"
        )
    return options or None


def _availability_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The availability poisons' flags, refused for a method they do not apply to."""
    from alignscope.poison.methods import AVAILABILITY_METHODS

    given = {
        "--epsilon": args.epsilon, "--noise-mode": args.noise_mode, "--patch": args.patch,
        "--device": args.device,
    }  # fmt: skip
    applies = {
        "--epsilon": ("unlearnable", "classwise-noise"), "--noise-mode": ("unlearnable",),
        "--patch": ("classwise-noise",), "--device": ("unlearnable",),
    }  # fmt: skip
    for flag, value in given.items():
        if value is not None and args.method not in applies[flag]:
            methods = " or ".join(applies[flag])
            raise UsageError(f"{flag} is for --method {methods}, not {args.method}")
    if args.method not in AVAILABILITY_METHODS:
        return None
    if args.epsilon is not None and not 1 <= args.epsilon <= 255:
        raise UsageError(f"--epsilon is 1..255 8-bit levels (8 = 8/255), got {args.epsilon}")
    options: dict[str, Any] = {}
    if args.epsilon is not None:
        options["epsilon"] = args.epsilon
    if args.noise_mode is not None:
        options["mode"] = args.noise_mode
    if args.patch is not None:
        options["patch"] = args.patch
    if args.device is not None:
        options["noise_options"] = {"device": args.device}
    return options


def _read_picture(path: str) -> Any:
    """An image file as an HWC uint8 RGB array (an alpha channel is dropped, as BiBadDiff's
    ``convert("RGB")`` drops it), read by :func:`alignscope.io.datasets.read_image_file`: the
    format sniffed from the content among the dataset formats, a decompression bomb refused."""
    import numpy as np

    from alignscope.io.datasets import BadImage, read_image_file

    if not Path(path).is_file():
        raise UsageError(f"--pattern: no such file {path!r}")
    try:
        return np.asarray(read_image_file(path, "RGB"))
    except BadImage as exc:
        # (read_image_file's message names the file: "'p.png': cannot decode image: ...")
        raise UsageError(f"--pattern: cannot read {exc}") from exc


def register(sub: Any) -> None:
    """Add the ``poison`` sub-command to ``sub`` (an argparse sub-parsers action)."""
    from alignscope.poison.methods import METHODS  # light: numpy and PIL, no torch

    poi = sub.add_parser("poison", help="write a poisoned copy of a dataset and its manifest")
    poi.add_argument("dataset", help="image folder, webdataset .tar(s), pickle-per-pair dir, or HF")
    poi.add_argument("--out", required=True, help="output directory")
    _add_overwrite(poi)
    poi.add_argument(
        "--method",
        required=True,
        choices=METHODS,  # one owner: alignscope.poison.methods
    )
    poi.add_argument(
        "--concepts",
        type=_positive_int,
        help="poison K concepts drawn at random (with --seed) from the --concept-pool most "
        "frequent",
    )
    poi.add_argument(
        "--concept-pool",
        dest="concept_pool",
        type=int,
        help="with --concepts: the pool of most frequent concepts K are drawn from (default "
        "500, the Implosion protocol); 0 poisons exactly the K most frequent",
    )
    poi.add_argument("--concept-ranks", dest="concept_ranks", help="poison concepts of ranks A-B")
    poi.add_argument(
        "--vocabulary",
        help="file of nouns, one per line, to find concepts with (default: the packaged COCO, "
        "ImageNet, LVIS and Open Images class names; `alignscope concepts` writes one)",
    )
    poi.add_argument("--per-concept", dest="per_concept", type=_positive_int, help="poisons m each")
    poi.add_argument(
        "--ratio", type=float, help="m = ratio * N (0.0008), or the trigger ratio (0.1)"
    )
    poi.add_argument(
        "--ratio-of",
        dest="ratio_of",
        choices=("all", "non-target"),
        default="all",
        help="trigger attacks: poison int(ratio * N) of all N rows (all, BiBadDiff's count) or "
        "round(ratio * N_nt) of the N_nt rows not about --target (non-target)",
    )
    poi.add_argument("--target", help="target class of trigger attacks")
    poi.add_argument(
        "--pattern",
        help="badnets-2: picture blended at 0.2 (default: seeded noise); picture-patch: picture "
        "pasted as the bottom-right square (default: a drawn bomb)",
    )
    poi.add_argument(
        "--wanet-grid",
        dest="wanet_grid",
        type=int,
        help="wanet: side k of the random field (default: the image size, BiBadDiff's; the "
        "WaNet paper's is 4)",
    )
    poi.add_argument(
        "--wanet-strength",
        dest="wanet_strength",
        type=float,
        help="wanet: warp strength s (default 1.0, BiBadDiff's; the WaNet paper's is 0.5)",
    )
    poi.add_argument("--vae", help="nightshade: diffusers AutoencoderKL (or SD) directory")
    poi.add_argument("--clip", help="nightshade: CLIP spec for the candidate filters")
    poi.add_argument("--anchors", help="nightshade: directory of anchor images {target}.png")
    poi.add_argument(
        "--anchor-pipeline",
        dest="anchor_pipeline",
        help="diffusers pipeline directory: dirty-label generates its images of t with it "
        '("a photo of {t}"); nightshade generates missing anchors into --anchors',
    )
    poi.add_argument(
        "--dirty-images",
        dest="dirty_images",
        choices=("generated", "dataset"),
        help="dirty-label: images of t generated with --anchor-pipeline (the paper's; the "
        "default when one is given) or taken from the dataset (the default without one)",
    )
    poi.add_argument(
        "--budget", type=float, default=0.04, help="nightshade L-inf budget (0.04, the release's)"
    )
    poi.add_argument(
        "--nightshade-size",
        dest="nightshade_size",
        type=int,
        default=512,
        help="nightshade: resize and centre-crop sources to this square first (512, the "
        "release's); 0 keeps each image's size",
    )
    poi.add_argument(
        "--lpips", action="store_true", help="nightshade: add the paper's LPIPS < 0.07 penalty"
    )
    poi.add_argument("--steps", type=_positive_int, default=500, help="nightshade PGD steps (500)")
    poi.add_argument(
        "--epsilon",
        type=int,
        help="unlearnable, classwise-noise: L-inf budget in 8-bit levels (default 8 = 8/255)",
    )
    poi.add_argument(
        "--noise-mode",
        dest="noise_mode",
        choices=("sample", "class"),
        help="unlearnable: one error-minimising delta per image (sample, default) or per class",
    )
    poi.add_argument(
        "--patch",
        type=_positive_int,
        help="classwise-noise: side of the blocks of the class patterns in pixels (default 8)",
    )
    poi.add_argument(
        "--device", help="unlearnable: torch device of the surrogate (default: cuda if present)"
    )
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
