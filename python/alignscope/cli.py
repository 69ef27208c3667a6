"""The `alignscope` command: results on stdout (a table, or JSON with --json), progress and
errors on stderr. Exit codes: 0 success, 2 bad input or usage, 130 interrupted."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process stopped by it
DEMO_POISONED = (0, 100, 250, 500)

# API argument names -> the CLI flags a user typed, so messages name what they can fix.
_FLAG_NAMES = (
    ("true_labels", "--true-labels"),
    ("image_emb", "--images"),
    ("text_emb", "--texts"),
    ("labels", "--labels"),
)


class UsageError(Exception):
    """Bad input detected by the CLI itself; printed as one line, exit code 2."""


# keyword-argument spellings in API messages -> the flags (literal replacements)
_KEYWORD_FLAGS = (
    ("unet_config=", "--unet-config"),
    ("placeholder=", "--placeholder"),
    ("initializer=", "--initializer"),
    ("target=", "--target"),
    ("layers='all'", "--attention-layers all"),
)


def _to_flags(message: str) -> str:
    for api, flag in _FLAG_NAMES:
        message = re.sub(rf"(?<![\w-]){api}\b", flag, message)
    for keyword, flag in _KEYWORD_FLAGS:
        message = message.replace(keyword, flag)
    return message


def _load_npy(path: str, flag: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{flag}: no such file {path!r}")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a bad header or a short file
        raise UsageError(f"{flag}: cannot read {path!r} as a .npy array ({exc})") from exc


def _parse_bounds(text: str) -> Any:
    from alignscope.metrics.profiles import Bounds

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise UsageError(f"--bounds: expected numbers, got {text!r}") from exc
    if len(values) not in (4, 6):
        raise UsageError(
            "--bounds takes FEAT_LO,FEAT_HI,IMG_LO,IMG_HI[,TXT_LO,TXT_HI] on cosine distance"
        )
    text_pair = (values[4], values[5]) if len(values) == 6 else (0.0, 1.0)
    try:
        return Bounds(feature=(values[0], values[1]), image=(values[2], values[3]), text=text_pair)
    except ValueError as exc:
        raise UsageError(f"--bounds: {exc}") from exc


def _result_table(result: Any) -> str:
    from alignscope.report.tables import format_table

    head = (
        f"Alignment Difficulty ({result.method}, profile={result.profile}, N={result.n:,}, "
        f"{result.backend} x{result.threads}, {result.seconds:.2f} s)"
    )
    terms = [
        ("feature AD", result.feature, result.feature_ci),
        ("structure AD", result.structure, result.structure_ci),
        (f"AD (alpha={result.alpha:g})", result.ad, result.ci),
    ]
    if result.method == "exact":
        table = format_table(("term", "value"), [(name, value) for name, value, _ in terms])
    else:
        level = f"{100 * result.ci.guaranteed.confidence:g}%"

        def span(ci: Any, kind: str) -> str:
            if ci is None:
                return "-"
            c = getattr(ci, kind)
            return "exact" if c.method == "exact" else f"[{c.low:.4f}, {c.high:.4f}]"

        rows = [(n, v, span(c, "guaranteed"), span(c, "asymptotic")) for n, v, c in terms]
        table = format_table(
            ("term", "estimate", f"{level} guaranteed", f"{level} asymptotic"), rows
        )
        table += f"\n{result.samples:,} pairs sampled, seed {result.seed}"
    if result.note:
        table += f"\n{result.note}"
    return head + "\n" + table


def _open_source(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(data, texts, labels, true_labels) from STORE or the --images form."""
    from alignscope.io import open_store

    if args.store is not None and args.images is not None:
        raise UsageError("give a STORE or --images, not both")
    if args.store is None and args.images is None:
        raise UsageError("give a STORE (directory, .npy or .parquet) or --images IMG.npy")
    if args.true_labels is not None and args.labels is None:
        raise UsageError("--true-labels needs --labels")
    truth = _load_npy(args.true_labels, "--true-labels") if args.true_labels else None
    if args.store is not None:
        if not Path(args.store).exists():
            raise UsageError(f"STORE: no such file or directory {args.store!r}")
        try:
            store = open_store(args.store, texts=args.texts, labels=args.labels)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(f"STORE: {exc}") from exc
        return store, None, None, truth
    if args.texts is None and args.labels is None:
        raise UsageError("give --texts TXT.npy (caption embeddings) or --labels L.npy")
    if args.texts is not None and args.labels is not None:
        raise UsageError("give --texts or --labels, not both")
    images = _load_npy(args.images, "--images")
    texts = _load_npy(args.texts, "--texts") if args.texts else None
    labels = _load_npy(args.labels, "--labels") if args.labels else None
    return images, texts, labels, truth


def cmd_ad(args: argparse.Namespace) -> int:
    from alignscope.metrics import alignment_difficulty
    from alignscope.report.per_sample import check_per_sample_path, write_per_sample

    if args.per_sample is not None:
        try:
            check_per_sample_path(args.per_sample)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(f"--per-sample: {exc}") from exc
    profile: Any = _parse_bounds(args.bounds) if args.bounds else args.profile
    ray: dict[str, Any] = {}
    if args.ray is not None:
        if args.store is None:
            raise UsageError("--ray needs a STORE (the workers read their rows from it)")
        # pair files are keyed by input and settings inside it, so one folder serves all runs
        ray = {
            "backend": "ray",
            "address": args.ray or None,
            "work_dir": args.work_dir or f"{Path(args.store).name}.ray-work",
            "task_rows": args.block,
        }
    data, texts, labels, truth = _open_source(args)
    n = data.n if hasattr(data, "n") else (data.shape[0] if data.ndim == 2 else 0)
    per_sample: bool | str = False
    if args.per_sample is not None:
        per_sample = args.per_sample_method
    result = alignment_difficulty(
        data,
        texts,
        labels=labels,
        true_labels=truth,
        alpha=args.alpha,
        profile=profile,
        per_sample=per_sample,
        method=args.method,
        confidence=args.confidence,
        budget=args.budget,
        seed=args.seed,
        max_seconds=args.max_seconds,
        landmarks=args.landmarks,
        threads=args.threads,
        progress=not args.quiet and (n >= 20_000 or bool(ray)),
        **ray,
    )
    if args.per_sample is not None and result.per_sample is not None:
        write_per_sample(result.per_sample, args.per_sample)
    if args.json:
        out = result.to_dict(per_sample=False)
        if args.per_sample is not None:
            out["per_sample_path"] = str(args.per_sample)
        print(json.dumps(out, indent=2))
    else:
        print(_result_table(result))
        if args.per_sample is not None:
            print(f"per-sample terms written to {args.per_sample}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from alignscope.metrics import alignment_difficulty
    from alignscope.report.tables import format_table
    from alignscope.synth import concept_world

    rows = []
    records = []
    for cp in args.poisoned:
        world = concept_world(
            args.n,
            concepts=args.concepts,
            poisoned_concepts=cp,
            dim=args.dim,
            kind=args.kind,
            seed=args.seed,
        )
        result = alignment_difficulty(
            world.image_emb, world.text_emb, alpha=args.alpha, threads=args.threads
        )
        n_poisons = int(world.poisoned.sum())
        rows.append(
            (cp, n_poisons, result.feature, result.structure, result.ad, f"{result.seconds:.2f}")
        )
        records.append(
            {"poisoned_concepts": cp, "poisons": n_poisons, **result.to_dict(per_sample=False)}
        )
        if not args.json:
            print(f"  C_P={cp}: done in {result.seconds:.2f} s", file=sys.stderr)
    if args.json:
        print(json.dumps({"dataset": _demo_description(args), "rows": records}, indent=2))
    else:
        print(
            f"AD of synthetic {args.kind}-label poisoning (N={args.n:,}, C={args.concepts}, "
            f"d={args.dim}, m={max(1, round(0.0008 * args.n))} per poisoned concept, "
            f"profile=paper, alpha={args.alpha:g})"
        )
        print(format_table(("C_P", "poisons", "feature", "structure", "AD", "seconds"), rows))
    return 0


def _demo_description(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "generator": "alignscope.synth.concept_world",
        "n": args.n,
        "concepts": args.concepts,
        "dim": args.dim,
        "kind": args.kind,
        "seed": args.seed,
        "per_concept": max(1, round(0.0008 * args.n)),
        "profile": "paper",
        "alpha": args.alpha,
    }


def cmd_embed(args: argparse.Namespace) -> int:
    from alignscope.embed import SSCDEncoder, embed_dataset, load_clip

    if args.clip is None and args.sscd is None:
        raise UsageError("give --clip SPEC and/or --sscd MODEL (see `alignscope embed --help`)")
    dataset = _open_dataset(args.dataset, args.trust_pickles)
    if args.ray is not None:
        from alignscope.distributed.embedding import ray_embed

        data = ray_embed(
            args.dataset,
            args.out,
            clip=args.clip,
            sscd=args.sscd,
            sscd_preset=args.sscd_preset,
            batch_size=args.batch_size,
            shard_rows=args.shard_rows,
            device=args.device,
            workers=args.workers,
            address=args.ray or None,
            trust_pickles=args.trust_pickles,
            trust_models=args.trust_models,
            num_gpus=1.0 if args.device.startswith("cuda") else 0.0,
            progress=not args.quiet,
        )
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            written, skipped = len(data["shards_written"]), len(data["shards_skipped"])
            print(
                f"embedded {data['images']:,} images into {data['store']} with Ray "
                f"({written} shards written, {skipped} already complete)"
            )
        return 0
    clip = load_clip(args.clip, args.device) if args.clip else None
    sscd = (
        SSCDEncoder(args.sscd, args.sscd_preset, args.device, trust_models=args.trust_models)
        if args.sscd
        else None
    )
    report = embed_dataset(
        dataset,
        args.out,
        clip=clip,
        sscd=sscd,
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        progress=not args.quiet,
    )
    data = report.to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        rate = data["images_per_second"]
        print(
            f"embedded {report.images:,} images into {report.store} "
            f"({len(report.shards_written)} shards written, {len(report.shards_skipped)} "
            f"already complete; {rate or 0:.1f} images/s)"
        )
        if report.skipped:
            print(f"skipped {len(report.skipped)} records (listed in embed_report.json):")
            for rid, reason in report.skipped[:10]:
                print(f"  {rid}: {reason}")
    return 0


def _embed_for_replication(args: argparse.Namespace, name: str, path: Path) -> Path:
    from alignscope.embed import SSCDEncoder, embed_dataset

    if args.sscd is None:
        raise UsageError(
            f"{name}: {str(path)!r} is an image dataset; give --sscd MODEL to embed it (or pass "
            "a store written by `alignscope embed`)"
        )
    dataset = _open_dataset(path, args.trust_pickles, name)
    out = Path(args.out) / f"{name.lower()}_store"
    embed_dataset(
        dataset,
        out,
        sscd=SSCDEncoder(args.sscd, args.sscd_preset, args.device, trust_models=args.trust_models),
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    return out


def cmd_replicate(args: argparse.Namespace) -> int:
    from alignscope.io import open_store
    from alignscope.report.replication import write_replication
    from alignscope.search import replication

    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            "replicate draws scatter.png with matplotlib: pip install 'alignscope[plots]'"
        ) from exc
    from alignscope.io import is_store

    stores = []
    store_paths = []
    datasets: list[str | None] = []  # thumbnails come only from datasets the user passed
    for name, path in (("GENERATED", args.generated), ("TRAINING", args.training)):
        if not Path(path).exists():
            raise UsageError(f"{name}: no such file or directory {path!r}")
        datasets.append(None if is_store(Path(path)) else str(path))
        if datasets[-1] is not None:
            # A dataset: embed it with SSCD first, into OUT/<name>_store (resumable).
            path = _embed_for_replication(args, name, Path(path))
        try:
            stores.append(open_store(path))
            store_paths.append(str(path))
        except ValueError as exc:
            raise UsageError(f"{name}: {exc}") from exc
    result = replication(
        stores[0],
        stores[1],
        args.k,
        method=args.method,
        view=args.view,
        threads=args.threads,
        progress=not args.quiet,
    )
    from alignscope.report.replication import strongest
    from alignscope.report.thumbnails import thumbnails

    top = strongest(result)
    pictures = (
        thumbnails(store_paths[0], top, datasets[0]),
        thumbnails(
            store_paths[1],
            np.concatenate([result.index[top, 0], result.duplicate_index[top]]),
            datasets[1],
        ),
    )
    files = write_replication(result, args.out, (str(args.generated), str(args.training)), pictures)
    summary = result.summary()
    if args.json:
        print(json.dumps({"summary": summary, "files": files}, indent=2))
    else:
        from alignscope.report.tables import format_table

        rows = []
        for key in (
            "mean",
            "std",
            "p50",
            "p95",
            "p99",
            "fraction_above_0.5",
            "fraction_above_0.75",
        ):
            g = summary["generated_to_train"].get(key)
            t = summary["train_to_train"].get(key)
            rows.append((key, g, t))
        print(
            f"Replication: {summary['n_generated']:,} generated vs {stores[1].n:,} training items"
        )
        print(format_table(("statistic", "generated->train", "train->train"), rows))
        print(f"wrote {', '.join(Path(p).name for p in files.values())} to {args.out}")
    return 0


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
    return 0


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


def _add_trust_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-models",
        dest="trust_models",
        action="store_true",
        help="run TorchScript model files without checking their operators (trusted files only)",
    )


def _open_dataset(path: str | Path, trust_pickles: bool, name: str = "DATASET") -> Any:
    """A dataset, or a one-line usage error naming the argument."""
    from alignscope.io.datasets import open_dataset

    try:
        return open_dataset(path, trust_pickles=trust_pickles)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"{name}: {exc}") from exc


def _quiet_model_libraries() -> None:
    """--quiet also silences the loading bars and notices of diffusers and transformers."""
    for name in ("diffusers", "transformers"):
        try:
            logging = __import__(f"{name}.utils", fromlist=["logging"]).logging
        except ImportError:
            continue
        logging.disable_progress_bar()
        logging.set_verbosity_error()


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from alignscope.train import TrainConfig, train
    from alignscope.train.modes import with_preset

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


def _concept_list(text: str, flag: str = "--concepts") -> list[str]:
    """A file (one per line), ``vocabulary:N`` (N packaged nouns), or a comma list."""
    path = Path(text)
    if path.is_file():
        concepts = [ln.strip() for ln in path.read_text("utf-8").splitlines()]
        concepts = [c for c in concepts if c and not c.startswith("#")]
    elif text.startswith("vocabulary:"):
        from alignscope.poison.concepts import load_vocabulary

        count = text.partition(":")[2]
        nouns = load_vocabulary().nouns
        if not count.isdigit() or not 1 <= int(count) <= len(nouns):
            raise UsageError(f"{flag} vocabulary:N needs N in [1, {len(nouns)}], got {text!r}")
        # a seeded sample, not the alphabetical head: "abacus".."bell cote" is no test set
        pick = np.random.default_rng(0).choice(len(nouns), size=int(count), replace=False)
        concepts = [nouns[i] for i in sorted(pick)]
    elif "/" in text or path.suffix in (".txt", ".tsv", ".csv"):
        raise UsageError(f"{flag} file {text!r} does not exist")
    else:
        concepts = [c.strip() for c in text.split(",") if c.strip()]
    if not concepts:
        raise UsageError(f"{flag} {text!r} gives no concepts")
    return list(dict.fromkeys(concepts))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from alignscope.evaluate.generate import GenerationSettings
    from alignscope.evaluate.run import Classification, Dissection, EvalConfig, evaluate

    if args.quiet:
        _quiet_model_libraries()
    generation = GenerationSettings(
        images_per_concept=args.images_per_concept,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        batch_size=args.batch_size,
        template=args.template,
        height=args.height,
        width=args.width,
    )
    dissection = None
    if not args.target_class:
        stray = [f for f, v in (("--p-t", args.p_t), ("--class-names", args.class_names)) if v]
        if stray:
            raise UsageError(f"{' and '.join(stray)} only apply with --target-class (G1-G4)")
    if args.target_class:
        if not args.class_names:
            raise UsageError("--target-class needs --class-names (comma list or file)")
        dissection = Dissection(
            target_class=args.target_class,
            class_names=_concept_list(args.class_names, "--class-names"),
            trigger=args.trigger,
            template=args.dissection_template,
            threshold=args.trigger_threshold,
            classifier=args.classifier,
            images=args.dissection_images,
            p_t=args.p_t,
        )
    classification = None
    if args.classify:
        classes = args.classify_classes or args.class_names
        if not classes:
            raise UsageError("--classify needs --classify-classes or --class-names")
        classification = Classification(
            dataset=args.classify,
            class_names=_concept_list(classes, "--classify-classes"),
            n_samples=args.classify_samples,
            filter_fraction=args.classify_filter,
            max_images=args.classify_max_images,
            target_class=args.target_class,
        )
    config = EvalConfig(
        concepts=_concept_list(args.concepts),
        generation=generation,
        clip=args.clip,
        aesthetics=args.aesthetics,
        aesthetics_clip=args.aesthetics_clip,
        poisoned=_concept_list(args.poisoned, "--poisoned") if args.poisoned else [],
        clip_threshold=args.clip_threshold,
        aesthetics_threshold=args.aesthetics_threshold,
        bleed_threshold=args.bleed_threshold,
        poison_manifest=args.poison_manifest,
        attention_concepts=args.attention_concepts,
        attention_resolution=args.attention_resolution,
        attention_layers=args.attention_layers,
        dissection=dissection,
        classification=classification,
        replication_store=args.replication_store,
        sscd=args.sscd,
        device=args.device,
        trust_models=args.trust_models,
    )
    models: Any = args.models
    if args.names:
        labels = [n.strip() for n in args.names.split(",")]
        if len(labels) != len(args.models) or len(set(labels)) != len(labels):
            raise UsageError(
                f"--names needs {len(args.models)} distinct names, one per model; got {labels}"
            )
        models = dict(zip(labels, args.models, strict=True))
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    report = evaluate(models, args.out, config, progress=not args.quiet, quiet=args.quiet)
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


def cmd_info(args: argparse.Namespace) -> int:
    from alignscope import backend_info

    info = backend_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"alignscope {info['version']}")
        print(f"  backends : {', '.join(info['backends'])}")
        cpu = info["cpu"]
        print(f"  cpu      : {cpu['threads']} threads, SIMD {cpu['simd']}")
        print(f"  blas     : {cpu['blas']}")
        cuda = info["cuda"]
        print(
            f"  cuda     : {'built' if cuda['built'] else 'not built'}, {cuda['devices']} device(s)"
        )
    return 0


def _poisoned_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"alignscope: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="alignscope", description=__doc__)
    from alignscope import __version__

    parser.add_argument("--version", action="version", version=f"alignscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ad = sub.add_parser("ad", help="Alignment Difficulty of a store or of .npy embeddings")
    ad.add_argument(
        "store",
        nargs="?",
        help="clip-retrieval directory (img_emb/, text_emb/), an image .npy, or a .parquet",
    )
    ad.add_argument("--images", help="(N, d) image embeddings, .npy (instead of STORE)")
    ad.add_argument("--texts", help="(N, d) caption embeddings, .npy")
    ad.add_argument("--labels", help="(N,) integer labels replacing the captions (label metrics)")
    ad.add_argument("--true-labels", dest="true_labels", help="(N,) true labels (feature term)")
    ad.add_argument("--alpha", type=float, default=0.8, help="feature weight in [0, 1] (0.8)")
    ad.add_argument("--profile", default="paper", help="paper (default), half or minmax")
    ad.add_argument(
        "--bounds",
        help="explicit bounds on cosine distance: FEAT_LO,FEAT_HI,IMG_LO,IMG_HI[,TXT_LO,TXT_HI]",
    )
    ad.add_argument(
        "--per-sample", dest="per_sample", help="write per-sample terms to OUT.npy|OUT.parquet"
    )
    ad.add_argument(
        "--per-sample-method",
        dest="per_sample_method",
        choices=("exact", "landmarks"),
        default="exact",
        help="exact D_s (O(N^2)) or landmark estimates with standard errors",
    )
    ad.add_argument("--landmarks", type=_positive_int, default=1024, help="landmarks S (1024)")
    ad.add_argument(
        "--method", choices=("exact", "sampled", "auto"), default="exact", help="exact (default)"
    )
    ad.add_argument("--confidence", type=float, default=0.95, help="interval level (0.95)")
    ad.add_argument(
        "--max-seconds",
        dest="max_seconds",
        type=float,
        default=60.0,
        help="--method auto: exact if estimated to take at most this long (60)",
    )
    ad.add_argument("--budget", type=_positive_int, default=None, help="sampled pairs (2^24)")
    ad.add_argument("--seed", type=int, default=None, help="sampling seed (drawn if absent)")
    ad.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="exact AD as Ray tasks (a local instance without ADDRESS); resumable",
    )
    ad.add_argument("--work-dir", dest="work_dir", help="--ray: where block-pair results go")
    ad.add_argument("--block", type=_positive_int, default=8192, help="--ray: rows per block")
    ad.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (all cores)")
    ad.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    ad.add_argument("--quiet", action="store_true", help="no progress bar")
    ad.set_defaults(func=cmd_ad)

    demo = sub.add_parser("demo", help="AD table on the embedded synthetic dataset (Table 1 style)")
    demo.add_argument("--n", type=_positive_int, default=50_000, help="pairs N (50,000)")
    demo.add_argument("--concepts", type=_positive_int, default=1000, help="concepts C (1000)")
    demo.add_argument(
        "--poisoned",
        type=_poisoned_list,
        default=list(DEMO_POISONED),
        help="C_P values (0,100,250,500)",
    )
    demo.add_argument("--dim", type=_positive_int, default=64, help="embedding dimension (64)")
    demo.add_argument("--kind", choices=("dirty", "clean"), default="dirty", help="poison kind")
    demo.add_argument("--alpha", type=float, default=0.8)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=_positive_int, default=None)
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo)

    emb = sub.add_parser("embed", help="embed an image-caption dataset into a store (resumable)")
    emb.add_argument(
        "dataset", help="image folder, webdataset .tar(s), pickle-per-pair dir, or saved HF dataset"
    )
    emb.add_argument("--out", required=True, help="store directory (clip-retrieval layout)")
    emb.add_argument("--clip", help="open_clip:NAME[:PRETRAINED_OR_CHECKPOINT] or hf:HUB_ID_OR_DIR")
    emb.add_argument("--sscd", help="SSCD model: .pt/.torchscript (TorchScript) or .onnx")
    emb.add_argument(
        "--sscd-preset", dest="sscd_preset", default="sscd", choices=("sscd", "sscd-square", "dcr")
    )
    emb.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=64)
    emb.add_argument("--shard-rows", dest="shard_rows", type=_positive_int, default=100_000)
    emb.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    _add_trust_models(emb)
    emb.add_argument(
        "--trust-pickles",
        dest="trust_pickles",
        action="store_true",
        help="unpickle pair files with the full unpickler (runs code; trusted files only)",
    )
    emb.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="embed shards with Ray actors (a local instance without ADDRESS)",
    )
    emb.add_argument("--workers", type=_positive_int, default=2, help="--ray: actors (2)")
    emb.add_argument("--json", action="store_true")
    emb.add_argument("--quiet", action="store_true")
    emb.set_defaults(func=cmd_embed)

    rep = sub.add_parser("replicate", help="find training items replicated in generated ones")
    rep.add_argument("generated", help="generated images: a store (dir, .npy, .parquet) or dataset")
    rep.add_argument("training", help="training images: a store (dir, .npy, .parquet) or dataset")
    rep.add_argument("--out", required=True, help="output directory")
    rep.add_argument("--k", type=_positive_int, default=1, help="matches per generated item (1)")
    rep.add_argument(
        "--method", choices=("engine", "faiss", "faiss-ivf", "faiss-hnsw"), default="engine"
    )
    rep.add_argument(
        "--view",
        choices=("sscd", "image", "text"),
        default=None,
        help="store view to compare (default: sscd when present, else image)",
    )
    rep.add_argument("--sscd", help="SSCD model (.pt/.torchscript/.onnx) to embed dataset inputs")
    rep.add_argument(
        "--sscd-preset", dest="sscd_preset", default="sscd", choices=("sscd", "sscd-square", "dcr")
    )
    rep.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=64)
    rep.add_argument("--device", default="cpu")
    rep.add_argument("--trust-pickles", dest="trust_pickles", action="store_true")
    _add_trust_models(rep)
    rep.add_argument("--threads", type=_positive_int, default=None)
    rep.add_argument("--json", action="store_true")
    rep.add_argument("--quiet", action="store_true")
    rep.set_defaults(func=cmd_replicate)

    poi = sub.add_parser("poison", help="write a poisoned copy of a dataset and its manifest")
    poi.add_argument("dataset", help="image folder, webdataset .tar(s), pickle-per-pair dir, or HF")
    poi.add_argument("--out", required=True, help="output directory")
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

    scr = sub.add_parser("screen", help="score pairs for poisoning; evaluate; write a keep list")
    scr.add_argument(
        "store", help="a store (dir, .npy with --texts, .parquet) or an image dataset (with --clip)"
    )
    scr.add_argument("--out", required=True, help="output directory")
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

    tr = sub.add_parser("train", help="fine-tune, train from scratch, or textual inversion")
    tr.add_argument("mode", choices=("finetune", "scratch", "textual-inversion"))
    tr.add_argument("dataset", help="image folder, webdataset .tar(s), pickle-per-pair dir, or HF")
    tr.add_argument("--model", required=True, help="Stable Diffusion (diffusers) folder")
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
    tr.add_argument("--device", help="cpu (default) or cuda")
    tr.add_argument("--trust-pickles", dest="trust_pickles", action="store_true")
    tr.add_argument("--json", action="store_true")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=cmd_train)

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
        "--images-per-concept", dest="images_per_concept", type=_positive_int, default=5
    )
    ev.add_argument("--steps", type=_positive_int, default=50)
    ev.add_argument("--guidance", type=float, default=7.5)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=4)
    ev.add_argument("--template", default="a photo of {}", help="prompt; {} is the concept")
    ev.add_argument("--height", type=_positive_int)
    ev.add_argument("--width", type=_positive_int)
    ev.add_argument("--clip", default="open_clip:ViT-B-32:openai", help="CLIP spec for scores")
    ev.add_argument("--aesthetics", help="LAION aesthetics head weights (.pth/.safetensors)")
    ev.add_argument(
        "--aesthetics-clip", dest="aesthetics_clip", default="open_clip:ViT-L-14:openai"
    )
    ev.add_argument("--poison-manifest", dest="poison_manifest", help="poison_manifest.parquet")
    ev.add_argument("--poisoned", help="poisoned concepts (comma list or file)")
    ev.add_argument("--attention-concepts", dest="attention_concepts", type=int, default=4)
    ev.add_argument(
        "--attention-resolution", dest="attention_resolution", type=_positive_int, default=16
    )
    ev.add_argument(
        "--attention-layers",
        dest="attention_layers",
        choices=("matching", "all"),
        default="matching",
    )
    ev.add_argument("--target-class", dest="target_class", help="G1-G4: the attacked class")
    ev.add_argument("--class-names", dest="class_names", help="G1-G4: classes (comma list or file)")
    ev.add_argument(
        "--trigger", default="badnets-1", help="badnets-1, badnets-2 or a TorchScript detector"
    )
    ev.add_argument(
        "--classifier",
        default="clip",
        help="clip (zero-shot), torchvision:NAME:WEIGHTS, timm:NAME:WEIGHTS or TorchScript file",
    )
    ev.add_argument(
        "--dissection-template",
        dest="dissection_template",
        default="A photo of a {}",
        help="G1-G4 prompt; {} is the target class (default: the poisoned captions')",
    )
    ev.add_argument("--trigger-threshold", dest="trigger_threshold", type=float)
    ev.add_argument("--clip-threshold", dest="clip_threshold", type=float, default=0.236)
    ev.add_argument("--aesthetics-threshold", dest="aesthetics_threshold", type=float, default=6.5)
    ev.add_argument(
        "--bleed-threshold",
        dest="bleed_threshold",
        type=float,
        default=4.8,
        help="L2 in the scoring CLIP's unnormalised text space (Nightshade: 4.8)",
    )
    ev.add_argument("--dissection-images", dest="dissection_images", type=_positive_int, default=20)
    ev.add_argument(
        "--p-t", dest="p_t", type=float, help="trigger ratio in the target class's training data"
    )
    ev.add_argument("--classify", help="diffusion classifier on this labelled image dataset")
    ev.add_argument(
        "--classify-classes", dest="classify_classes", help="its classes (default: --class-names)"
    )
    ev.add_argument("--classify-samples", dest="classify_samples", type=_positive_int, default=32)
    ev.add_argument(
        "--classify-filter",
        dest="classify_filter",
        type=float,
        default=0.0,
        help="drop this top fraction of denoising errors (BiBadDiff)",
    )
    ev.add_argument(
        "--classify-max-images", dest="classify_max_images", type=_positive_int, default=200
    )
    ev.add_argument("--replication-store", dest="replication_store", help="store with an sscd view")
    ev.add_argument("--sscd", help="SSCD model (.torchscript/.onnx) for replication")
    _add_trust_models(ev)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=cmd_evaluate)

    info = sub.add_parser("info", help="what was built: backends, threads, SIMD, BLAS, devices")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop), raised where Python next runs so the same
    clean-up as Ctrl-C happens: temporaries removed, nothing half-written."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return int(args.func(args))
    except Terminated:
        print("alignscope: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except UsageError as exc:
        print(f"alignscope: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (
        ValueError,
        TypeError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        IndexError,
    ) as exc:
        print(f"alignscope: error: {_to_flags(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("alignscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
