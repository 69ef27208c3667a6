"""`alignscope defend vespr`: SL, adversarial SL, SimCLR, SimCLR on JPEG inputs and VESPR on an
availability-poisoned class set, scored on a clean test set (an accuracy table)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from alignscope.cli._common import UsageError, _add_overwrite, _open_dataset, _positive_int


def _load(path: str, trust: bool, name: str) -> Any:
    from alignscope.poison.availability import load_class_images

    dataset = _open_dataset(path, trust, name)
    try:
        return load_class_images(dataset), dataset
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from exc


def cmd_defend_vespr(args: argparse.Namespace) -> int:
    from alignscope._files import fingerprint_tree
    from alignscope.defend.models import pick_device
    from alignscope.defend.ssl import SSLConfig
    from alignscope.defend.supervised import SupervisedConfig
    from alignscope.defend.vespr import DEFEND_METHODS, DefendConfig, defend_table, format_table

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in DEFEND_METHODS]
    if unknown or not methods:
        raise UsageError(
            f"--methods: unknown method {(unknown or [''])[0]!r}; choose from "
            f"{', '.join(DEFEND_METHODS)}"
        )
    if not 1 <= args.jpeg_quality <= 95:
        raise UsageError(f"--jpeg-quality must be 1..95, got {args.jpeg_quality}")
    try:
        device = pick_device(args.device)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from exc
    train, train_set = _load(args.dataset, args.trust_pickles, "DATA")
    test, test_set = _load(args.test, args.trust_pickles, "--test")
    ssl = SSLConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        arch=args.arch,
        width=args.width,
        at_epsilon=args.at_epsilon,
        at_steps=args.at_steps,
        seed=args.seed,
        device=device,
    )
    sl = SupervisedConfig(
        epochs=args.sl_epochs,
        batch_size=args.batch_size,
        arch=args.arch,
        width=args.width,
        epsilon=args.at_epsilon,
        seed=args.seed,
        device=device,
    )
    config = DefendConfig(ssl=ssl, sl=sl, jpeg_quality=args.jpeg_quality)
    identity = {
        "data": fingerprint_tree(train_set.source),
        "test": fingerprint_tree(test_set.source),
    }

    def report(method: str, epoch: int, loss: float) -> None:
        if not args.quiet:
            print(f"{method}: epoch {epoch}/{args.epochs} loss {loss:.4f}", file=sys.stderr)

    table = defend_table(
        train,
        test,
        args.out,
        methods=methods,
        config=config,
        identity=identity,
        overwrite=args.overwrite,
        progress=report,
    )
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(format_table(table), end="")
    return 0


def register(sub: Any) -> None:
    """Add the ``defend`` sub-command (with ``vespr``) to ``sub``."""
    from alignscope.defend.models import ARCHITECTURES
    from alignscope.defend.vespr import DEFEND_METHODS

    defend = sub.add_parser("defend", help="defences against availability poisons")
    kinds = defend.add_subparsers(dest="defence", required=True)
    ves = kinds.add_parser(
        "vespr",
        help="SL, adversarial SL, SimCLR, SimCLR on JPEG inputs and VESPR on a (poisoned) "
        "class set: clean-test accuracy table",
    )
    ves.add_argument("dataset", help="class-labelled training set (captions name the class)")
    ves.add_argument("--test", required=True, help="clean class-labelled test set")
    ves.add_argument("--out", required=True, help="output folder (table, checkpoints)")
    _add_overwrite(ves)
    ves.add_argument(
        "--methods",
        default=",".join(DEFEND_METHODS),
        help=f"comma-separated rows of the table (default: all of {', '.join(DEFEND_METHODS)})",
    )
    ves.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default="resnet18",
        help="encoder: resnet18 (CIFAR stem, the papers') or small (CPU toy)",
    )
    ves.add_argument("--width", type=_positive_int, default=16, help="small: first-block channels")
    ves.add_argument("--epochs", type=_positive_int, default=200, help="SimCLR / VESPR epochs")
    ves.add_argument(
        "--sl-epochs",
        dest="sl_epochs",
        type=_positive_int,
        default=40,
        help="epochs of the supervised rows (40)",
    )
    ves.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=256)
    ves.add_argument("--lr", type=float, default=0.5, help="SimCLR SGD learning rate (0.5)")
    ves.add_argument(
        "--at-epsilon",
        dest="at_epsilon",
        type=float,
        default=8.0,
        help="PGD budget of sl-at and VESPR in 8-bit levels (8 = 8/255)",
    )
    ves.add_argument(
        "--at-steps",
        dest="at_steps",
        type=_positive_int,
        default=5,
        help="VESPR's PGD steps per view (5)",
    )
    ves.add_argument(
        "--jpeg-quality",
        dest="jpeg_quality",
        type=int,
        default=10,
        help="ssl-jpeg: JPEG quality (10)",
    )
    ves.add_argument("--seed", type=int, default=0)
    ves.add_argument("--device", help="torch device (default: cuda if present, else cpu)")
    ves.add_argument("--trust-pickles", dest="trust_pickles", action="store_true")
    ves.add_argument("--json", action="store_true")
    ves.add_argument("--quiet", action="store_true")
    ves.set_defaults(func=cmd_defend_vespr)
