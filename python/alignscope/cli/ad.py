"""`alignscope ad`, `demo` and `info`: Alignment Difficulty of a store or of .npy embeddings,
the synthetic table, and what was built."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from alignscope.cli._common import UsageError, _add_overwrite, _load_npy, _positive_int

DEMO_POISONED = (0, 100, 250, 500)


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

    how = result.method
    if result.per_sample is not None and result.per_sample.method == "landmarks":
        how += ", per-sample D_s by landmarks"  # the table was titled "exact" alone
    head = (
        f"Alignment Difficulty ({how}, profile={result.profile}, N={result.n:,}, "
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


def _per_sample_identity(args: argparse.Namespace, data: Any, profile: Any) -> dict[str, Any]:
    """What the per-sample file depends on: the inputs' fingerprints and the settings that
    change its rows. Not threads, --ray and its work dir (the Ray path gives the in-process
    values to 1e-12), nor --confidence or --budget of an exact file; the sampling settings
    and the seed only for landmark estimates (landmarks are drawn from the sampling's
    random stream)."""
    from alignscope._files import fingerprint_files

    identity: dict[str, Any] = {}
    if args.store is not None:
        # keyed by path, so a difference names the shard that changed
        identity["store"] = {str(f.pop("path")): f for f in fingerprint_files(data.files())}
    for name in ("images", "texts", "labels", "true_labels"):
        value = getattr(args, name)
        identity[name] = None if value is None else fingerprint_files([Path(value)])[0]
    identity["alpha"] = args.alpha
    identity["profile"] = profile if isinstance(profile, str) else profile.to_dict()
    identity["per_sample"] = args.per_sample_method
    if args.per_sample_method == "landmarks":
        identity["landmarks"] = {
            "count": args.landmarks,
            "seed": args.seed,  # None: drawn each run, so no two runs are the same anyway
            "method": args.method,
            "budget": args.budget,
            "max_seconds": args.max_seconds if args.method == "auto" else None,
        }
    return identity


def cmd_ad(args: argparse.Namespace) -> int:
    from alignscope.report.per_sample import check_per_sample_path

    if args.per_sample is not None:
        try:
            check_per_sample_path(args.per_sample)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(f"--per-sample: {exc}") from exc
    elif args.overwrite:
        raise UsageError("--overwrite applies to --per-sample FILE, the one file ad writes")
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
    if args.per_sample is None:
        return _run_ad(args, data, texts, labels, truth, profile, ray)
    from alignscope._files import claimed_file

    # the record is checked before the computation: a refusal comes in seconds, not hours
    identity = _per_sample_identity(args, data, profile)
    claim = claimed_file(
        args.per_sample, "ad --per-sample", identity, flag="--per-sample", overwrite=args.overwrite
    )
    with claim:  # a refusal (OutputConflict) is printed as written by cli.main
        return _run_ad(args, data, texts, labels, truth, profile, ray)


def _run_ad(
    args: argparse.Namespace,
    data: Any,
    texts: Any,
    labels: Any,
    truth: Any,
    profile: Any,
    ray: dict[str, Any],
) -> int:
    """Compute, write the per-sample file when asked, and print the result."""
    from alignscope.metrics import alignment_difficulty
    from alignscope.report.per_sample import write_per_sample

    n = data.n if hasattr(data, "n") else (data.shape[0] if data.ndim == 2 else 0)
    per_sample: bool | str = False
    if args.per_sample is not None:
        per_sample = args.per_sample_method
        from alignscope._files import ensure_free_space

        # before computing: d_ab, d_s and ad are float64 per row in either format
        ensure_free_space(args.per_sample, n * 3 * 8, "the per-sample terms")
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


def _register_ad(sub: Any) -> None:
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
    _add_overwrite(ad, "--per-sample")
    ad.set_defaults(func=cmd_ad)


def cmd_demo(args: argparse.Namespace) -> int:
    from alignscope.metrics import alignment_difficulty
    from alignscope.report.tables import format_table
    from alignscope.synth.demo import demo_world

    rows = []
    records = []
    for cp in args.poisoned:
        # One dataset at every C_P: demo_world draws the benign rows and the poison plan
        # independently of C_P and kind, so the rows differ only by the poisons added.
        world = demo_world(
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
            f"profile=paper, alpha={args.alpha:g}; alignscope.synth.demo.demo_world)"
        )
        print(format_table(("C_P", "poisons", "feature", "structure", "AD", "seconds"), rows))
    return 0


def _demo_description(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "generator": "alignscope.synth.demo.demo_world",
        "n": args.n,
        "concepts": args.concepts,
        "dim": args.dim,
        "kind": args.kind,
        "seed": args.seed,
        "per_concept": max(1, round(0.0008 * args.n)),
        "profile": "paper",
        "alpha": args.alpha,
    }


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


def _register_demo(sub: Any) -> None:
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


def register(sub: Any) -> None:
    """Add the ``ad`` and ``demo`` sub-commands to ``sub`` (an argparse sub-parsers action)."""
    _register_ad(sub)
    _register_demo(sub)


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


def register_info(sub: Any) -> None:
    """Add the ``info`` sub-command to ``sub`` (an argparse sub-parsers action)."""
    info = sub.add_parser("info", help="what was built: backends, threads, SIMD, BLAS, devices")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)
