"""`alignscope analyze` (Safe-Zone Training's analyses: when and where poisons act) and
`alignscope masks` (loss masks for `train --loss-mask` from the model's cross-attention)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alignscope.cli._common import (
    UsageError,
    _add_overwrite,
    _open_dataset,
    _positive_int,
    _quiet_model_libraries,
)

# Flags that change how a run talks, not what it writes.
_NOT_IDENTITY = {"out", "quiet", "json", "overwrite", "func", "trust_pickles"}


@contextmanager
def _claimed(args: argparse.Namespace, command: str) -> Iterator[None]:
    """``args.out`` claimed for ``command`` (:func:`alignscope._files.claimed_output`): a
    rerun with another model, dataset, manifest, embedding or setting is refused (or, with
    --overwrite, replaces the folder) instead of mixing its files with the earlier run's, which
    matters most for masks: `train --loss-mask` reads whatever <stem>.png it finds."""
    from alignscope._files import claimed_output, fingerprint_tree

    identity: dict[str, Any] = {
        key: value
        for key, value in sorted(vars(args).items())
        if key not in _NOT_IDENTITY and not callable(value)
    }
    for key in ("model", "dataset", "embeds", "manifest"):
        if identity.get(key) is not None:
            identity[key] = fingerprint_tree(identity[key])
    with claimed_output(args.out, command, identity, overwrite=args.overwrite):
        yield


def _manifest(args: argparse.Namespace) -> str:
    """--manifest, or the poison_manifest.parquet inside DATA."""
    from alignscope.io.manifest import MANIFEST_NAME

    if args.manifest is not None:
        if not Path(args.manifest).is_file():
            raise UsageError(f"--manifest: no such file {args.manifest!r}")
        return args.manifest
    inside = Path(args.dataset) / MANIFEST_NAME
    if inside.is_file():
        return str(inside)
    raise UsageError(
        f"no --manifest and DATA has no {MANIFEST_NAME}: give the poison manifest that says "
        "which images are poisoned"
    )


def _shared_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments every analysis takes from the same flags: the concept
    (:func:`_add_concept`), --draws, --batch-size and the run settings of :func:`_add_common`."""
    return {
        "placeholder": args.placeholder,
        "initializer": args.initializer,
        "embeds": args.embeds,
        "prompt": args.prompt,
        "draws": args.draws,
        "resolution": args.resolution,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
    }


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from exc
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def cmd_timesteps(args: argparse.Namespace) -> int:
    from alignscope.analyze.timesteps import analyze_timesteps, write_outputs

    if args.quiet:
        _quiet_model_libraries()
    manifest = _manifest(args)
    dataset = _open_dataset(args.dataset, args.trust_pickles, "DATA")
    result = analyze_timesteps(
        args.model,
        dataset,
        manifest=manifest,
        target=args.target,
        buckets=args.buckets,
        keep=args.keep,
        **_shared_options(args),
    )
    with _claimed(args, "analyze timesteps"):
        paths = write_outputs(result, args.out)
    if args.json:
        summary = result.summary()
        summary["outputs"] = {k: str(v) for k, v in paths.items()}
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{'timesteps':>11}  {'clean grad':>10}  {'poison grad':>11}  {'clean %':>7}  excess %")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    for b in range(len(result.edges) - 1):
        span = f"{result.edges[b]}-{result.edges[b + 1] - 1}"
        clean, poison = result.grad_clean[b], result.grad_poison[b]
        print(
            f"{span:>11}  {clean:>10.4g}  {'-' if poison is None else f'{poison:.4g}':>11}  "
            f"{pct(result.clean_share[b]):>7}  {pct(result.excess_share[b])}"
        )
    dropped = "n/a" if result.dropped_excess is None else f"{result.dropped_excess:.0%}"
    print(
        f"suggested --timestep-min {result.suggested_timestep_min}: keeps "
        f"{result.kept_clean:.0%} of the clean gradient, drops {dropped} of the poison's excess"
    )
    print(f"rule: {result.rule}")
    print(f"wrote {paths['json']}, {paths['csv']}, {paths['png']}")
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from alignscope.analyze.report import write_sensitivity_report
    from alignscope.analyze.sensitivity import sensitivity_maps

    if args.quiet:
        _quiet_model_libraries()
    manifest = args.manifest
    if manifest is not None and not Path(manifest).is_file():
        raise UsageError(f"--manifest: no such file {manifest!r}")
    if manifest is None and (Path(args.dataset) / "poison_manifest.parquet").is_file():
        manifest = str(Path(args.dataset) / "poison_manifest.parquet")
    if args.direction == "learned" and (args.embeds is None or args.initializer is None):
        raise UsageError(
            "--direction learned needs --embeds (the learned vectors) and --initializer "
            "(where they started)"
        )
    window = _window(args.timesteps)
    dataset = _open_dataset(args.dataset, args.trust_pickles, "DATA")
    result = sensitivity_maps(
        args.model,
        dataset,
        manifest=manifest,
        direction=args.direction,
        timesteps=window,
        **_shared_options(args),
    )
    with _claimed(args, "analyze sensitivity"):
        paths = write_sensitivity_report(result, args.out)
    flags = result.poisoned
    means = {
        "clean": float(result.maps[~flags].mean()) if (~flags).any() else None,
        "poisoned": float(result.maps[flags].mean()) if flags.any() else None,
    }
    if args.json:
        print(json.dumps({"mean_sensitivity": means, **{k: str(v) for k, v in paths.items()}}))
    else:
        for kind, value in means.items():
            print(f"{kind}: mean sensitivity {'-' if value is None else f'{value:.4g}'}")
        print(f"wrote {paths['html']}, {paths['npz']}")
    return 0


def _window(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise UsageError(f"--timesteps: expected LOW,HIGH (e.g. 0,1000), got {text!r}") from exc
    return low, high


def cmd_masks(args: argparse.Namespace) -> int:
    from alignscope.analyze.masks import attention_masks

    if args.quiet:
        _quiet_model_libraries()
    if not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
    dataset = _open_dataset(args.dataset, args.trust_pickles, "DATA")
    with _claimed(args, "masks"):
        result = attention_masks(
            args.model,
            dataset,
            args.out,
            threshold=args.threshold,
            soft=args.soft,
            timesteps=_window(args.timesteps),
            **_shared_options(args),
        )
    kept = [float((m > 127).mean()) for m in result.masks]
    if args.json:
        print(json.dumps({"masks": len(result.paths), "out": str(args.out), "kept": kept}))
    else:
        print(
            f"wrote {len(result.paths)} masks to {args.out} (mean share of pixels learned "
            f"{sum(kept) / len(kept):.0%}); train with --loss-mask {args.out}"
        )
    return 0


def _add_concept(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--placeholder",
        help="the concept token: a new one with --initializer or --embeds, or a word the "
        "tokenizer has",
    )
    p.add_argument("--initializer", help="start a new --placeholder from this word (as TI does)")
    p.add_argument("--embeds", help="learned_embeds.safetensors of `train textual-inversion`")
    p.add_argument("--prompt", help="prompt with {} for the concept (default 'a photo of a {}')")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resolution", type=_positive_int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--trust-pickles", dest="trust_pickles", action="store_true")
    p.add_argument("--quiet", action="store_true")
    _add_overwrite(p)


def register(sub: Any) -> None:
    """Add ``analyze`` (with its sub-commands) and ``masks`` to ``sub``."""
    from alignscope.cli._common import _Parser

    an = sub.add_parser("analyze", help="SZT analyses: when (timesteps) and where poisons act")
    asub = an.add_subparsers(dest="analysis", required=True, parser_class=_Parser)
    ts = asub.add_parser(
        "timesteps", help="loss and gradient per timestep bucket, poisoned vs clean"
    )
    ts.add_argument("model", help="Stable Diffusion (diffusers) folder")
    ts.add_argument("dataset", metavar="DATA", help="the (poisoned) training set")
    ts.add_argument("--manifest", help="poison_manifest.parquet (default: the one in DATA)")
    ts.add_argument("--out", required=True, help="output directory (json, csv, png)")
    ts.add_argument(
        "--target",
        choices=("embedding", "unet"),
        default="embedding",
        help="gradient w.r.t. the concept's embedding (TI) or the UNet's cross-attention k/v",
    )
    _add_concept(ts)
    ts.add_argument("--buckets", type=_positive_int, default=10)
    ts.add_argument("--draws", type=_positive_int, default=4, help="timesteps drawn per bucket")
    ts.add_argument(
        "--keep",
        type=_fraction,
        default=0.8,
        help="least share of clean gradient the suggested window keeps (default 0.8)",
    )
    ts.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=8)
    _add_common(ts)
    ts.add_argument("--json", action="store_true")
    ts.set_defaults(func=cmd_timesteps)

    se = asub.add_parser(
        "sensitivity", help="Semantic Sensitivity Maps: HTML report, clean vs poisoned"
    )
    se.add_argument("model", help="Stable Diffusion (diffusers) folder")
    se.add_argument("dataset", metavar="DATA", help="the training images")
    se.add_argument("--manifest", help="poison_manifest.parquet (default: the one in DATA)")
    se.add_argument("--out", required=True, help="output directory (html, npz)")
    _add_concept(se)
    se.add_argument(
        "--direction",
        choices=("random", "learned"),
        default="random",
        help="random directions (default) or initializer -> learned (needs --embeds and "
        "--initializer)",
    )
    se.add_argument("--timesteps", help="LOW,HIGH: the timestep window (default all)")
    se.add_argument("--draws", type=_positive_int, default=8, help="(timestep, noise) draws")
    se.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=8)
    _add_common(se)
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_sensitivity)

    ma = sub.add_parser(
        "masks", help="SZT loss masks (<stem>.png) from the concept's cross-attention"
    )
    ma.add_argument("model", help="Stable Diffusion (diffusers) folder")
    ma.add_argument("dataset", metavar="DATA", help="the training images")
    ma.add_argument("--out", required=True, help="directory for <stem>.png (train --loss-mask)")
    _add_concept(ma)
    ma.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="keep pixels whose min-max normalised attention is >= this (default 0.5)",
    )
    ma.add_argument("--soft", action="store_true", help="write the normalised map as weights")
    ma.add_argument("--timesteps", help="LOW,HIGH: the timestep window (default all)")
    ma.add_argument("--draws", type=_positive_int, default=4, help="(timestep, noise) draws")
    ma.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=8)
    _add_common(ma)
    ma.add_argument("--json", action="store_true")
    ma.set_defaults(func=cmd_masks)
