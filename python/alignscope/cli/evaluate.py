"""`alignscope evaluate`: generate with, score and compare trained models; write the report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from alignscope.cli._common import (
    UsageError,
    _add_overwrite,
    _add_trust_models,
    _positive_int,
    _quiet_model_libraries,
)


def _concept_list(
    text: str, flag: str = "--concepts", poison_manifest: str | None = None
) -> list[str]:
    """A file (one per line), ``vocabulary:N`` (with ``poison_manifest``: the paper's N =
    pool + the next frequent nouns of the poisoned set's captions; else N packaged nouns), or a
    comma list."""
    path = Path(text)
    if path.is_file():
        concepts = [ln.strip() for ln in path.read_text("utf-8").splitlines()]
        concepts = [c for c in concepts if c and not c.startswith("#")]
    elif text.startswith("vocabulary:"):
        from alignscope.evaluate.config import vocabulary_concepts

        count = text.partition(":")[2]
        if not count.isdigit():
            raise UsageError(f"{flag} vocabulary:N needs a whole number N, got {text!r}")
        poisoned_set = Path(poison_manifest).parent if poison_manifest else None
        try:
            concepts = vocabulary_concepts(int(count), poisoned_set=poisoned_set)
        except ValueError as exc:
            raise UsageError(f"{flag} {exc}") from exc
    elif "/" in text or path.suffix in (".txt", ".tsv", ".csv"):
        raise UsageError(f"{flag} file {text!r} does not exist")
    else:
        concepts = [c.strip() for c in text.split(",") if c.strip()]
    if not concepts:
        raise UsageError(f"{flag} {text!r} gives no concepts")
    return list(dict.fromkeys(concepts))


def _given(args: argparse.Namespace, **flags: str) -> dict[str, Any]:
    """{field: value} of the flags the user gave (``field=dest``): a flag left out takes the
    default of its dataclass in ``alignscope.evaluate``, the one place the defaults live."""
    return {
        name: getattr(args, dest) for name, dest in flags.items() if getattr(args, dest) is not None
    }


def cmd_evaluate(args: argparse.Namespace) -> int:
    from alignscope.evaluate.classifiers import ZERO_SHOT
    from alignscope.evaluate.detectors import TEMPLATE_TRIGGERS
    from alignscope.evaluate.generate import GenerationSettings
    from alignscope.evaluate.run import Classification, Dissection, EvalConfig, evaluate

    if args.quiet:
        _quiet_model_libraries()
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    generation = GenerationSettings(
        **_given(
            args,
            images_per_concept="images_per_concept",
            steps="steps",
            guidance="guidance",
            seed="seed",
            batch_size="batch_size",
            template="template",
            height="height",
            width="width",
        )
    )
    dissection = None
    if not args.target_class:
        only_g1_g4 = (
            ("--p-t", args.p_t),
            ("--class-names", args.class_names),
            ("--preset", args.preset),
            ("--dissection-images", args.dissection_images),
            ("--dissection-guidance", args.dissection_guidance),
            ("--dissection-steps", args.dissection_steps),
            ("--dissection-sampler", args.dissection_sampler),
            ("--trigger-pattern", args.trigger_pattern),
            ("--trigger", args.trigger),
            ("--classifier", args.classifier),
            ("--dissection-template", args.dissection_template),
            ("--trigger-threshold", args.trigger_threshold),
        )
        stray = [f for f, v in only_g1_g4 if v is not None]
        if stray:
            raise UsageError(f"{' and '.join(stray)} only apply with --target-class (G1-G4)")
    if args.target_class:
        if not args.class_names:
            raise UsageError("--target-class needs --class-names (comma list or file)")
        fields = _given(
            args,
            trigger="trigger",
            template="dissection_template",
            threshold="trigger_threshold",
            classifier="classifier",
            images="dissection_images",
            p_t="p_t",
            guidance="dissection_guidance",
            steps="dissection_steps",
            sampler="dissection_sampler",
            pattern="trigger_pattern",
        )
        if args.trigger_pattern and (args.trigger or "badnets-1") not in (
            "badnets-2",
            "picture-patch",
        ):
            raise UsageError(
                "--trigger-pattern is the BadNets-2 or picture-patch picture: give it with "
                "--trigger badnets-2 or --trigger picture-patch"
            )
        if args.trigger_pattern and not Path(args.trigger_pattern).is_file():
            raise UsageError(f"--trigger-pattern: no such file {args.trigger_pattern!r}")
        if args.preset:
            from alignscope.evaluate.dissection import PRESETS

            fields = {**PRESETS[args.preset], **fields}  # a flag given wins over the preset
        dissection = Dissection(
            target_class=args.target_class,
            class_names=_concept_list(args.class_names, "--class-names"),
            **fields,
        )
        untrained = []
        if dissection.classifier == ZERO_SHOT:
            untrained.append("zero-shot CLIP classifies")
        if dissection.trigger in TEMPLATE_TRIGGERS:
            untrained.append("template matching detects the trigger")
        if args.preset and untrained and not args.quiet:
            print(
                f"alignscope: note: --preset {args.preset} generates as the paper does, but "
                f"{' and '.join(untrained)} where it used trained ResNet-50s (--classifier, "
                "--trigger): compare its G1-G4 with the paper's roughly",
                file=sys.stderr,
            )
    classification = None
    if args.classify:
        classes = args.classify_classes or args.class_names
        if not classes:
            raise UsageError("--classify needs --classify-classes or --class-names")
        classification = Classification(
            dataset=args.classify,
            class_names=_concept_list(classes, "--classify-classes"),
            target_class=args.target_class,
            **_given(
                args,
                n_samples="classify_samples",
                filter_fraction="classify_filter",
                max_images="classify_max_images",
            ),
        )
    config = EvalConfig(
        concepts=_concept_list(args.concepts, poison_manifest=args.poison_manifest),
        generation=generation,
        poisoned=_concept_list(args.poisoned, "--poisoned") if args.poisoned else [],
        dissection=dissection,
        classification=classification,
        trust_models=args.trust_models,
        **_given(
            args,
            clip="clip",
            aesthetics="aesthetics",
            aesthetics_clip="aesthetics_clip",
            clip_threshold="clip_threshold",
            aesthetics_threshold="aesthetics_threshold",
            bleed_threshold="bleed_threshold",
            poison_manifest="poison_manifest",
            attention_concepts="attention_concepts",
            attention_resolution="attention_resolution",
            attention_layers="attention_layers",
            replication_store="replication_store",
            sscd="sscd",
            device="device",
        ),
    )
    models: Any = args.models
    if args.names:
        labels = [n.strip() for n in args.names.split(",")]
        if len(labels) != len(args.models) or len(set(labels)) != len(labels):
            raise UsageError(
                f"--names needs {len(args.models)} distinct names, one per model; got {labels}"
            )
        models = dict(zip(labels, args.models, strict=True))
    report = evaluate(
        models,
        args.out,
        config,
        progress=not args.quiet,
        quiet=args.quiet,
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from alignscope.report.evaluation import comparison_rows
        from alignscope.report.tables import format_table

        print(
            format_table(
                ["concepts", "metric", *report["models"]],
                [[g, label, *cells] for g, label, cells in comparison_rows(report)],
            )
        )
        print(f"report: {Path(args.out) / 'report.html'}")
    return 0


# Flags left out take the defaults of alignscope.evaluate's dataclasses (EvalConfig,
# GenerationSettings, Dissection, Classification): the help describes them without repeating
# the numbers, so that one place holds them (and importing alignscope.evaluate here would slow
# every command's start).
def register(sub: Any) -> None:
    """Add the ``evaluate`` sub-command to ``sub`` (an argparse sub-parsers action)."""
    ev = sub.add_parser("evaluate", help="generate, score and compare trained models; report")
    ev.add_argument("models", nargs="+", help="diffusers Stable Diffusion folders")
    ev.add_argument("--out", required=True, help="output directory (resumable)")
    ev.add_argument(
        "--concepts",
        default="vocabulary:1000",
        help="file (one per line), comma list, or vocabulary:N (a seeded sample of N packaged "
        "COCO/ImageNet nouns; default 1000, the paper's count)",
    )
    ev.add_argument("--names", help="comma-separated model names for the report")
    ev.add_argument(
        "--images-per-concept",
        dest="images_per_concept",
        type=_positive_int,
        help="images per concept (default: the Implosion protocol's)",
    )
    ev.add_argument(
        "--steps", type=_positive_int, help="denoising steps (default: the Implosion protocol's)"
    )
    ev.add_argument(
        "--guidance", type=float, help="guidance scale (default: the Implosion protocol's)"
    )
    ev.add_argument("--seed", type=int, help="generation seed")
    ev.add_argument(
        "--batch-size", dest="batch_size", type=_positive_int, help="images per pipeline call"
    )
    ev.add_argument("--template", help="prompt; {} is the concept (default: the Implosion paper's)")
    ev.add_argument("--height", type=_positive_int)
    ev.add_argument("--width", type=_positive_int)
    ev.add_argument("--clip", help="CLIP spec for scores (default: OpenAI's ViT-B/32)")
    ev.add_argument("--aesthetics", help="LAION aesthetics head weights (.pth/.safetensors)")
    ev.add_argument(
        "--aesthetics-clip",
        dest="aesthetics_clip",
        help="CLIP spec for the aesthetics head (default: OpenAI's ViT-L/14)",
    )
    ev.add_argument("--poison-manifest", dest="poison_manifest", help="poison_manifest.parquet")
    ev.add_argument("--poisoned", help="poisoned concepts (comma list or file)")
    ev.add_argument(
        "--attention-concepts",
        dest="attention_concepts",
        type=int,
        help="concepts with cross-attention maps (the poisoned ones first)",
    )
    ev.add_argument(
        "--attention-resolution",
        dest="attention_resolution",
        type=_positive_int,
        help="side of the attention layers used",
    )
    ev.add_argument(
        "--attention-layers",
        dest="attention_layers",
        choices=("matching", "all"),
        help="matching (default): the layers of that resolution; all: every layer",
    )
    ev.add_argument("--target-class", dest="target_class", help="G1-G4: the attacked class")
    ev.add_argument("--class-names", dest="class_names", help="G1-G4: classes (comma list or file)")
    ev.add_argument(
        "--trigger",
        help="badnets-1, badnets-2, picture-patch or a TorchScript detector (default: "
        "BiBadDiff's BadNets-1)",
    )
    ev.add_argument(
        "--classifier",
        help="clip (zero-shot, default), torchvision:NAME:WEIGHTS, timm:NAME:WEIGHTS or "
        "TorchScript file",
    )
    ev.add_argument(
        "--dissection-template",
        dest="dissection_template",
        help="G1-G4 prompt; {} is the target class (default: the poisoned captions')",
    )
    ev.add_argument("--trigger-threshold", dest="trigger_threshold", type=float)
    ev.add_argument(
        "--trigger-pattern",
        dest="trigger_pattern",
        help="G1-G4 with --trigger badnets-2 or picture-patch: the picture the poisoning run "
        "blended or pasted (poison --pattern; default: the trigger's default picture)",
    )
    ev.add_argument(
        "--clip-threshold",
        dest="clip_threshold",
        type=float,
        help="Generation Accuracy: CLIP score above this (default: the Implosion paper's)",
    )
    ev.add_argument(
        "--aesthetics-threshold",
        dest="aesthetics_threshold",
        type=float,
        help="Generation Aesthetics: score above this (default: the Implosion paper's)",
    )
    ev.add_argument(
        "--bleed-threshold",
        dest="bleed_threshold",
        type=float,
        help="L2 in the scoring CLIP's unnormalised text space (default: Nightshade's)",
    )
    ev.add_argument(
        "--dissection-images",
        dest="dissection_images",
        type=_positive_int,
        help="G1-G4: images of the target prompt (default: a first look; the paper's count "
        "with --preset bibaddiff)",
    )
    ev.add_argument(
        "--dissection-guidance",
        dest="dissection_guidance",
        type=float,
        help="G1-G4: guidance scale (default: BiBadDiff's, not the evaluation's --guidance)",
    )
    ev.add_argument(
        "--dissection-steps",
        dest="dissection_steps",
        type=_positive_int,
        help="G1-G4: sampling steps (default: BiBadDiff's)",
    )
    ev.add_argument(
        "--dissection-sampler",
        dest="dissection_sampler",
        choices=("ddim", "pipeline"),
        help="G1-G4: ddim (default, BiBadDiff's DDIM, eta 0) or the model's own scheduler",
    )
    ev.add_argument(
        "--preset",
        choices=("bibaddiff",),
        help="G1-G4 as BiBadDiff: its image count, guidance, DDIM steps and prompt (flags "
        "given win); its trained classifier and detector are yours to give",
    )
    ev.add_argument(
        "--p-t", dest="p_t", type=float, help="trigger ratio in the target class's training data"
    )
    ev.add_argument("--classify", help="diffusion classifier on this labelled image dataset")
    ev.add_argument(
        "--classify-classes", dest="classify_classes", help="its classes (default: --class-names)"
    )
    ev.add_argument(
        "--classify-samples",
        dest="classify_samples",
        type=_positive_int,
        help="noise samples per class and image",
    )
    ev.add_argument(
        "--classify-filter",
        dest="classify_filter",
        type=float,
        help="drop this top fraction of denoising errors (BiBadDiff; default none)",
    )
    ev.add_argument(
        "--classify-max-images",
        dest="classify_max_images",
        type=_positive_int,
        help="images of the dataset classified at most",
    )
    ev.add_argument("--replication-store", dest="replication_store", help="store with an sscd view")
    ev.add_argument("--sscd", help="SSCD model (.torchscript/.onnx) for replication")
    _add_trust_models(ev)
    ev.add_argument("--device", help="cpu (default) or cuda")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--quiet", action="store_true")
    _add_overwrite(ev)
    ev.set_defaults(func=cmd_evaluate)
