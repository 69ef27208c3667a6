"""`alignscope train`: fine-tune, train from scratch, or textual inversion."""

from __future__ import annotations

import argparse
import json
from typing import Any

from alignscope.cli._common import (
    UsageError,
    _add_overwrite,
    _open_dataset,
    _positive_int,
    _quiet_model_libraries,
)


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from alignscope.train import TrainConfig, train
    from alignscope.train.modes import with_preset

    if args.mode == "classifier":  # BiBadDiff's Tab. 4 classifiers: cli/detect.py
        from alignscope.cli.detect import cmd_train_classifier

        return cmd_train_classifier(args)
    if args.model is None:
        raise UsageError(f"train {args.mode} needs --model (a Stable Diffusion folder)")
    if args.quiet:
        _quiet_model_libraries()
    dataset = _open_dataset(args.dataset, args.trust_pickles)
    config = with_preset(TrainConfig(), args.preset)
    overrides = {
        "steps": args.steps,
        "learning_rate": args.lr,
        "batch_size": args.batch_size,
        "gradient_accumulation": args.gradient_accumulation,
        "resolution": args.resolution,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "timestep_min": args.timestep_min,
        "min_snr_gamma": args.min_snr_gamma,
        "ema_decay": args.ema_decay,
        "gradient_checkpointing": args.gradient_checkpointing or None,
        "mixed_precision": args.mixed_precision,
        "jpeg_quality": args.jpeg_quality,
        "mask_dir": args.loss_mask,
        "device": args.device,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    result = train(
        args.mode,
        dataset,
        args.out,
        model=args.model,
        config=config,
        unet_config=args.unet_config,
        placeholder=args.placeholder,
        initializer=args.initializer,
        num_vectors=args.num_vectors,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    summary = {
        "output": result.output,
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "first_loss": result.losses[0] if result.losses else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "seconds": result.seconds,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.mode}: {result.steps} steps (from {result.resumed_from}) -> {result.output}")
    return 0


def register(sub: Any) -> None:
    """Add the ``train`` sub-command to ``sub`` (an argparse sub-parsers action)."""
    tr = sub.add_parser(
        "train", help="fine-tune, train from scratch, textual inversion, or an image classifier"
    )
    tr.add_argument("mode", choices=("finetune", "scratch", "textual-inversion", "classifier"))
    tr.add_argument("dataset", help="image folder, webdataset .tar(s), pickle-per-pair dir, or HF")
    tr.add_argument("--model", help="Stable Diffusion (diffusers) folder (not for classifier)")
    tr.add_argument("--out", required=True, help="output directory (model, log, checkpoints)")
    tr.add_argument(
        "--preset", choices=("implosion-finetune", "bibaddiff-finetune", "textual-inversion")
    )
    tr.add_argument("--steps", type=_positive_int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--batch-size", dest="batch_size", type=_positive_int)
    tr.add_argument("--gradient-accumulation", dest="gradient_accumulation", type=_positive_int)
    tr.add_argument("--resolution", type=_positive_int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--checkpoint-every", dest="checkpoint_every", type=_positive_int)
    tr.add_argument("--timestep-min", dest="timestep_min", type=int, help="SZT: train on t >= this")
    tr.add_argument(
        "--jpeg-quality", dest="jpeg_quality", type=int, help="SZT: JPEG-compress images"
    )
    tr.add_argument("--loss-mask", dest="loss_mask", help="SZT: directory of <stem>.png loss masks")
    tr.add_argument("--min-snr-gamma", dest="min_snr_gamma", type=float)
    tr.add_argument("--ema-decay", dest="ema_decay", type=float)
    tr.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_true")
    tr.add_argument("--mixed-precision", dest="mixed_precision", choices=("no", "bf16"))
    tr.add_argument("--unet-config", dest="unet_config", help="scratch: UNet2DConditionModel JSON")
    tr.add_argument("--placeholder", help="textual inversion: the new token, e.g. '<cat-toy>'")
    tr.add_argument("--initializer", help="textual inversion: the token it starts from")
    tr.add_argument("--num-vectors", dest="num_vectors", type=_positive_int, default=1)
    tr.add_argument("--device", help="cpu (default; classifier: cuda when present) or cuda")
    tr.add_argument("--trust-pickles", dest="trust_pickles", action="store_true")
    tr.add_argument("--json", action="store_true")
    tr.add_argument("--quiet", action="store_true")
    _add_overwrite(tr)
    from alignscope.cli.detect import add_classifier_flags

    add_classifier_flags(tr)
    tr.set_defaults(func=cmd_train)
