"""`alignscope detect` (STRIP and Cognitive Distillation on an image set) and the handler of
`alignscope train classifier` (its flags join `train`'s): BiBadDiff's Tab. 3 and Tab. 4."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from alignscope.cli._common import UsageError, _add_overwrite, _positive_int


def add_classifier_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``train classifier`` (``--lr``, ``--seed``, ``--batch-size``,
    ``--resolution``, ``--device`` are ``train``'s own)."""
    from alignscope.train.classifier import ARCHS

    group = parser.add_argument_group("classifier (train classifier DATA)")
    group.add_argument("--arch", choices=ARCHS, help="classifier: architecture (resnet50)")
    group.add_argument("--epochs", type=_positive_int, help="classifier: epochs (30)")
    group.add_argument("--batch", dest="batch_size", type=_positive_int, help="= --batch-size")
    group.add_argument("--test", help="classifier: clean test set, for TA (and ASR)")
    group.add_argument("--target", help="classifier: the attack's target class, for ASR")
    group.add_argument(
        "--trigger", help="classifier: the trigger applied for ASR (badnets-1, badnets-2, ...)"
    )
    group.add_argument(
        "--trigger-pattern",
        help="classifier: the picture a badnets-2 or picture-patch poisoning used (its --pattern)",
    )
    group.add_argument(
        "--trigger-manifest",
        help="classifier: the poisoning's poison_manifest.parquet, whose trigger settings ASR "
        "applies (default: DATASET's, when it has one; give it for a generated set)",
    )
    group.add_argument(
        "--classes",
        help="classifier: comma-separated class names in label order (default: those the "
        "captions 'A photo of a {class}' or the class folders name, sorted)",
    )


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from alignscope.poison.triggers import TRIGGERS
    from alignscope.train.classifier import (
        METRICS_NAME,
        ClassifierConfig,
        evaluate_classifier,
        load_class_images,
        load_classifier,
        train_classifier,
    )

    if (args.target is None) != (args.trigger is None):
        raise UsageError("give --target and --trigger together (ASR needs both), or neither")
    if args.trigger is not None and args.trigger not in TRIGGERS:
        raise UsageError(f"--trigger must be one of {', '.join(TRIGGERS)}, got {args.trigger!r}")
    if args.target is not None and args.test is None:
        raise UsageError("--target/--trigger measure ASR on the clean test set: give --test DIR")
    if args.steps is not None or args.model is not None:
        raise UsageError("train classifier takes --epochs, not --steps or --model")
    trigger_options, trigger_manifest = _asr_trigger_options(args)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        data = load_class_images(
            args.dataset,
            class_names=classes,
            resolution=args.resolution,
            trust_pickles=args.trust_pickles,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"DATASET: {exc}") from exc
    config = ClassifierConfig(
        **{
            k: v
            for k, v in {
                "arch": args.arch,
                "epochs": args.epochs,
                "lr": args.lr,
                "batch": args.batch_size,
                "seed": args.seed,
                "device": args.device,
            }.items()
            if v is not None
        }
    )
    summary: dict[str, Any] = {}

    def write_metrics(result: dict[str, Any]) -> None:
        """TA and ASR of the trained classifier into its classifier_metrics.json."""
        from alignscope._files import atomic_path

        summary.update(
            checkpoint=result["checkpoint"],
            arch=config.arch,
            classes=data.class_names,
            n_train=len(data.labels),
            epochs=result["epochs"],
            last_loss=result["losses"][-1] if result["losses"] else None,
        )
        if args.test is not None:
            model, meta = load_classifier(result["checkpoint"], config.device)
            try:
                summary.update(
                    evaluate_classifier(
                        model,
                        meta,
                        args.test,
                        target=args.target,
                        trigger=args.trigger,
                        trigger_options=trigger_options,
                    )
                )
            except (ValueError, FileNotFoundError) as exc:
                raise UsageError(f"--test: {exc}") from exc
        # the file holds what the run made, not how this invocation went (resumed_from): an
        # identical rerun writes the same bytes, which `detect --tab4` relies on
        with atomic_path(Path(args.out) / METRICS_NAME) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))

    result = train_classifier(
        data,
        args.out,
        config,
        progress=not args.quiet,
        overwrite=args.overwrite,
        metrics_identity=_metrics_identity(args, trigger_manifest),
        write_metrics=write_metrics,
    )
    summary["resumed_from"] = result["resumed_from"]
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        line = f"classifier {config.arch}: {result['epochs']} epochs -> {result['checkpoint']}"
        if "ta" in summary:
            line += f"; TA {summary['ta']:.4f}"
        if "asr" in summary:
            line += f", ASR {summary['asr']:.4f}"
        print(line)
    return 0


def _metrics_identity(args: argparse.Namespace, trigger_manifest: Path | None) -> dict[str, Any]:
    """What ``classifier_metrics.json`` depends on besides the classifier (claimed with it):
    the test set, target and trigger, and the files ASR's trigger settings come from."""
    from alignscope._files import fingerprint_tree

    files = {"test": args.test, "trigger_manifest": trigger_manifest}
    files["trigger_pattern"] = args.trigger_pattern
    return {
        "target": args.target,
        "trigger": args.trigger,
        **{k: None if v is None else fingerprint_tree(v) for k, v in files.items()},
    }


def _asr_trigger_options(args: argparse.Namespace) -> tuple[dict[str, Any], Path | None]:
    """The trigger settings ASR must apply, and the manifest they come from (None: the
    trigger's defaults).

    The manifest is ``--trigger-manifest``, else DATASET's ``poison_manifest.parquet`` when
    there is one (a generated set has none: give the poisoned training set's). The settings
    are those it records for ``--trigger`` (WaNet's grid from the run's seed, k and s; the
    pattern picture, checked against its record). A manifest of another trigger is refused
    (ASR would measure a trigger the classifier never saw), and so are a WaNet ASR or a
    ``--trigger-pattern`` with no record to take the warp from or check the picture against.
    """
    from alignscope.evaluate.detectors import (
        NoTriggerRecorded,
        poisoning_pattern,
        poisoning_trigger,
    )

    if args.trigger is None:
        for flag, value in (
            ("--trigger-pattern", args.trigger_pattern),
            ("--trigger-manifest", args.trigger_manifest),
        ):
            if value is not None:
                raise UsageError(f"{flag} goes with --trigger (the ASR's trigger)")
        return {}, None
    if args.trigger_manifest is not None:
        manifest: Path | None = Path(args.trigger_manifest)
        source = "--trigger-manifest"
        if not manifest.is_file():
            raise UsageError(f"--trigger-manifest: no such file {args.trigger_manifest!r}")
    else:
        manifest = Path(args.dataset) / "poison_manifest.parquet"
        source = "DATASET's poison_manifest.parquet"
        if not manifest.is_file():
            manifest = None
    if manifest is not None:
        try:
            name, options = poisoning_trigger(manifest)
        except NoTriggerRecorded as exc:
            if args.trigger_manifest is not None:  # named as the trigger's record: it is not
                raise UsageError(f"--trigger-manifest: {exc}") from exc
            manifest = None  # a clean set, or a concept attack: nothing recorded for a trigger
        except ValueError as exc:  # unreadable, or several attacks or trigger settings
            raise UsageError(f"{source}: {exc}") from exc
    if manifest is None:
        if args.trigger == "wanet":
            raise UsageError(
                "--trigger wanet: DATASET has no poison_manifest.parquet recording a trigger "
                "attack; give --trigger-manifest: WaNet's warp is drawn per poisoning run (the "
                "poisoned training set's manifest records it)"
            )
        if args.trigger_pattern is not None:
            raise UsageError(
                "--trigger-pattern is checked against the poisoning's record, and DATASET has "
                "no poison_manifest.parquet recording a trigger attack: give --trigger-manifest"
            )
        return {}, None
    if name != args.trigger:
        where = (
            f"--trigger-manifest records a {name} attack"
            if args.trigger_manifest is not None
            else f"DATASET was poisoned with {name} (its poison_manifest.parquet)"
        )
        raise UsageError(
            f"--trigger {args.trigger}: {where}; ASR must apply that trigger: give --trigger {name}"
        )
    try:
        return poisoning_pattern(name, options, args.trigger_pattern), manifest
    except ValueError as exc:
        raise UsageError(f"--trigger-pattern: {exc}") from exc


def _truth(
    manifest: str | None, trigger: str | None, data: str, flag: str, pattern: str | None = None
) -> dict[str, Any]:
    """The ground truth of one set: a poison manifest or a trigger detector, exactly one (a
    template detector with the poisoning's picture, ``pattern``, when it takes one)."""
    from alignscope.screen.backdoor import trigger_truth

    if (manifest is None) == (trigger is None):
        raise UsageError(
            f"{data}: give its ground truth as {flag}manifest FILE (a poison manifest) or "
            f"{flag}truth TRIGGER (badnets-1, badnets-2, picture-patch or a TorchScript "
            "detector), one of them"
        )
    if pattern is not None and trigger not in ("badnets-2", "picture-patch"):
        raise UsageError(
            f"{flag}truth-pattern is the picture of a badnets-2 or picture-patch poisoning: give "
            f"it with {flag}truth badnets-2 or {flag}truth picture-patch"
        )
    if manifest is not None:
        return {"manifest": manifest}
    try:
        return {"truth": trigger_truth(data, trigger, pattern=pattern)}
    except ValueError as exc:
        if pattern is None:
            raise
        raise UsageError(f"{flag}truth-pattern: {exc}") from exc


# detect's flags that change neither output: where they go and how the run talks
_NOT_IDENTITY = {"out", "report", "tab4", "quiet", "json", "overwrite", "func"}


def _detect_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What ``--out`` (the per-image scores) depends on: every setting but the outputs' paths,
    with the input files and folders by their fingerprints (the classifier by its
    ``classifier.pt``, the file that is read; a --truth that names a file, a TorchScript
    detector, by that file's). --device counts: the detectors' scores on another device need
    not repeat bit for bit."""
    from alignscope._files import fingerprint_tree
    from alignscope.train.classifier import CHECKPOINT_NAME

    identity: dict[str, Any] = {
        key: value
        for key, value in sorted(vars(args).items())
        if key not in _NOT_IDENTITY and not callable(value)
    }
    # as the run reads it: "cd, strip" and "cd,strip" are the same run
    identity["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    classifier = Path(args.classifier)
    identity["classifier"] = fingerprint_tree(
        classifier / CHECKPOINT_NAME if classifier.is_dir() else classifier
    )
    for key in ("dataset", "generated", "manifest", "generated_manifest", "clean", "fct_train"):
        if identity.get(key) is not None:
            identity[key] = fingerprint_tree(identity[key])
    for key in ("truth", "generated_truth"):  # a trigger's name, or a detector's file
        if identity.get(key) is not None and Path(identity[key]).is_file():
            identity[key] = fingerprint_tree(identity[key])
    for key in ("truth_pattern", "generated_truth_pattern"):  # the poisoning's picture
        if identity.get(key) is not None and Path(identity[key]).is_file():
            identity[key] = _content_fingerprint(Path(identity[key]))
    return identity


def _content_fingerprint(path: Path) -> dict[str, Any] | str:
    """A small file by its content (absolute path and sha256); a missing one by its path
    (the run then stops, naming it)."""
    import hashlib

    if not path.is_file():
        return str(path.resolve())
    return {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


# detect's input sets, by flag as its messages name them
_INPUT_SETS = {
    "dataset": "DATASET",
    "generated": "--generated",
    "clean": "--clean",
    "fct_train": "--fct-train",
}


# every other input detect reads (files or folders), for the reverse check: an input inside
# the --report folder, which --overwrite would delete with that folder's old outputs
_OTHER_INPUTS = {
    "classifier": "--classifier",
    "manifest": "--manifest",
    "generated_manifest": "--generated-manifest",
    "truth": "--truth",
    "generated_truth": "--generated-truth",
}


def _check_outside_inputs(args: argparse.Namespace) -> None:
    """Refuse an --out file or --report folder inside an input set (writing it would change
    that set's fingerprint, so every identical rerun would be refused as another run), and a
    --report folder that holds any input (a later --overwrite would delete it)."""
    for flag, value, kind in (("--out", args.out, "file"), ("--report", args.report, "folder")):
        if value is None:
            continue
        target = Path(value).resolve()
        for key, name in _INPUT_SETS.items():
            given = getattr(args, key)
            if given is not None and Path(given).resolve() in (target, *target.parents):
                raise UsageError(
                    f"{flag} {value!r} is inside {name} {given!r}; give a {kind} outside it"
                )
    if args.report is None:
        return
    report = Path(args.report).resolve()
    inputs = [(name, getattr(args, key)) for key, name in {**_INPUT_SETS, **_OTHER_INPUTS}.items()]
    inputs += [("--tab4", run) for run in args.tab4 or []]
    for name, given in inputs:
        # a --truth that names a template trigger (badnets-1, ...) is no path
        if given is None or (name.endswith("truth") and not Path(given).exists()):
            continue
        if report in Path(given).resolve().parents:
            raise UsageError(
                f"--report {args.report!r} holds {name} {given!r}: a later --overwrite would "
                "delete it with the old report; give a folder outside the inputs"
            )


def _claim_outputs(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    """Claim ``--out`` (one JSON file: :func:`~alignscope._files.claimed_file`) and
    ``--report`` (a folder: :func:`~alignscope._files.claimed_output`) before any detector
    runs, so that a rerun with another model, data, ground truth, method or setting is refused
    in seconds (or, with --overwrite, replaces them) instead of replacing them silently."""
    from alignscope._files import claimed_file, claimed_output

    if args.out is None and args.report is None:
        if args.overwrite:
            raise UsageError("--overwrite applies to --out FILE and --report DIR, detect's outputs")
        return
    if args.out is not None and Path(args.out).is_dir():
        raise UsageError(f"--out {args.out!r} is a directory: give the file to write, scores.json")
    _check_outside_inputs(args)
    identity = _detect_identity(args)
    if args.out is not None:
        stack.enter_context(
            claimed_file(args.out, "detect", identity, flag="--out", overwrite=args.overwrite)
        )
    if args.report is not None:
        # the tables also hold the --tab4 classifiers' metrics, read from these files: by
        # their content, which an identical `train classifier` rerun writes again unchanged
        metrics = [Path(run) / "classifier_metrics.json" for run in args.tab4 or []]
        tab4 = [_content_fingerprint(m) for m in metrics] or None
        stack.enter_context(
            claimed_output(
                args.report,
                "detect --report",
                {**identity, "tab4": tab4},
                overwrite=args.overwrite,
                flag="--report",  # refusals name the flag the user gave
                shown=args.report,
            )
        )


def cmd_detect(args: argparse.Namespace) -> int:
    if args.tab4 and (args.generated is None or args.report is None):
        # Tab. 4 sets the classifier trained on each set beside the other: without both sets
        # (or without --report, where the tables go) one of the two runs would be ignored
        raise UsageError("--tab4 needs --generated (the second set) and --report (the tables)")
    with contextlib.ExitStack() as stack:  # a refusal (OutputConflict) is printed by cli.main
        _claim_outputs(args, stack)
        return _run_detect(args)


def _run_detect(args: argparse.Namespace) -> int:
    """Run the detectors on the set(s), write --out and --report, print the metrics."""
    from alignscope.screen.backdoor import (
        castle_walls_tables,
        detect_backdoors,
        write_castle_walls_report,
    )

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    options = {
        "clean": args.clean,
        "fct_train": args.fct_train,
        "methods": methods,
        "strip_n": args.strip_n,
        "cd_steps": args.cd_steps,
        "cd_gamma": args.cd_gamma,
        "cd_beta": args.cd_beta,
        "seed": args.seed,
        "device": args.device,
        "progress": not args.quiet,
    }
    sets = {"training set": args.dataset}
    if args.generated is not None:
        sets["generation set"] = args.generated
    truths = {
        "training set": _truth(args.manifest, args.truth, args.dataset, "--", args.truth_pattern),
    }
    if args.generated is not None:
        truths["generation set"] = _truth(
            args.generated_manifest,
            args.generated_truth,
            args.generated,
            "--generated-",
            args.generated_truth_pattern,
        )
    reports = {
        name: detect_backdoors(path, args.classifier, **truths[name], **options)
        for name, path in sets.items()
    }
    for name, r in reports.items():
        for warning in r["warnings"]:
            print(f"alignscope: warning: {name}: {warning}", file=sys.stderr)
    report = reports["training set"]
    if args.out is not None:
        from alignscope._files import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(reports if args.generated else report, indent=2))
    if args.report is not None:
        classifiers = {}
        for name, run in zip(sets, args.tab4 or [], strict=bool(args.tab4)):
            metrics = Path(run) / "classifier_metrics.json"
            if not metrics.is_file():
                raise UsageError(
                    f"--tab4: {str(metrics)!r} does not exist; run `alignscope train "
                    f"classifier ... --out {run} --test ...` first"
                )
            classifiers[name] = json.loads(metrics.read_text())
        written = write_castle_walls_report(args.report, castle_walls_tables(reports, classifiers))
        print(f"tables -> {written[0]}, {written[1]}", file=sys.stderr)
    summary = {
        name: {k: r[k] for k in ("data", "n", "poisoned", "metrics", "note")}
        for name, r in reports.items()
    }
    if args.json:
        print(json.dumps(summary if args.generated else summary["training set"], indent=2))
    else:
        for name, r in reports.items():
            print(f"{name}: {r['n']} images, {r['poisoned']} poisoned")
            print(f"{'detector':<10}{'AUROC':>8}{'TPR@1%':>8}{'TPR@5%':>8}")
            for det, m in r["metrics"].items():
                cells = [m[k] for k in ("auroc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr")]
                print(
                    f"{det:<10}" + "".join("     n/a" if v is None else f"{v:>8.4f}" for v in cells)
                )
            if r["note"]:
                print(f"  ({r['note']})")
    if args.out is not None:
        print(f"per-image scores -> {args.out}", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    """Add the ``detect`` sub-command to ``sub`` (an argparse sub-parsers action)."""
    from alignscope.screen.backdoor import (
        CD_BETA,
        CD_GAMMA,
        CD_STEPS,
        DEFAULT_DETECTORS,
        DETECTORS,
        STRIP_OVERLAYS,
    )

    de = sub.add_parser(
        "detect", help="backdoor detectors (STRIP, Cognitive Distillation) on an image set"
    )
    de.add_argument("dataset", help="the image set to screen (training or generated set)")
    de.add_argument(
        "--classifier", required=True, help="classifier.pt of `train classifier` (or its folder)"
    )
    de.add_argument("--manifest", help="poison_manifest.parquet: which images are poisoned")
    de.add_argument(
        "--truth",
        help="or: the trigger detector that decides it (badnets-1, badnets-2, picture-patch: "
        "their default patterns; or a TorchScript FILE)",
    )
    de.add_argument("--generated", help="a generated set of the same size, screened as well")
    de.add_argument("--generated-manifest", dest="generated_manifest")
    de.add_argument(
        "--generated-truth", dest="generated_truth", help="e.g. badnets-1 (as the dissection)"
    )
    de.add_argument(
        "--truth-pattern",
        dest="truth_pattern",
        help="the picture of a badnets-2 or picture-patch poisoning (its --pattern), for --truth",
    )
    de.add_argument(
        "--generated-truth-pattern",
        dest="generated_truth_pattern",
        help="the same for --generated-truth",
    )
    de.add_argument(
        "--tab4",
        nargs=2,
        metavar=("TRAIN_RUN", "GENERATED_RUN"),
        help="`train classifier` output folders of the classifiers trained on each set",
    )
    de.add_argument("--report", help="write report.json and report.html (Tab. 3 / Tab. 4) here")
    de.add_argument("--clean", help="held-out clean images, STRIP's overlays (the test set)")
    de.add_argument(
        "--methods",
        default=",".join(DEFAULT_DETECTORS),
        help=f"comma-separated, of {','.join(DETECTORS)} (default {','.join(DEFAULT_DETECTORS)})",
    )
    de.add_argument(
        "--fct-train", dest="fct_train", help="FCT: the classifier's labelled training set"
    )
    de.add_argument("--strip-n", dest="strip_n", type=_positive_int, default=STRIP_OVERLAYS)
    de.add_argument("--cd-steps", dest="cd_steps", type=_positive_int, default=CD_STEPS)
    de.add_argument(
        "--cd-gamma",
        dest="cd_gamma",
        type=float,
        default=CD_GAMMA,
        help=f"CD's mask-norm weight (alpha in the paper; {CD_GAMMA}, the authors' default). It "
        "is in logit units: on a classifier with small logits (a small CNN) 0.01 can rank "
        "triggered images as clean: try smaller values (warns if every mask collapses)",
    )
    de.add_argument("--cd-beta", dest="cd_beta", type=float, default=CD_BETA, help="CD's TV weight")
    de.add_argument("--seed", type=int, default=0)
    de.add_argument("--device", help="cpu, cuda (default: cuda when present)")
    de.add_argument("--out", help="write the report with per-image scores (JSON) here")
    de.add_argument("--json", action="store_true")
    de.add_argument("--quiet", action="store_true")
    _add_overwrite(de, "--out and --report")
    de.set_defaults(func=cmd_detect)
