"""`alignscope embed` and `replicate`: embed a dataset into a store; find training items
replicated in generated ones."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.cli._common import (
    UsageError,
    _add_overwrite,
    _add_trust_models,
    _open_dataset,
    _positive_int,
)


def _vae_settings(args: argparse.Namespace) -> tuple[str | None, int]:
    """(folder, input size) of ``--vae`` / ``--vae-size``, checked before any model loads (only
    the folder's config.json is read); the folder is None without --vae."""
    from alignscope._diffusers import check_vae_folder
    from alignscope.embed.vae import DEFAULT_SIZE, check_vae_size

    if args.vae is None:
        if args.vae_size is not None:
            raise UsageError("--vae-size sets the input size of --vae DIR; give --vae too")
        return None, DEFAULT_SIZE
    size = DEFAULT_SIZE if args.vae_size is None else args.vae_size
    try:
        check_vae_size(size)
    except ValueError as exc:
        raise UsageError(f"--vae-size: {exc}") from exc
    if not Path(args.vae).is_dir():
        raise UsageError(f"--vae: no such directory {args.vae!r}")
    try:
        check_vae_folder(args.vae)
    except ValueError as exc:
        raise UsageError(f"--vae: {exc}") from exc
    return args.vae, size


def cmd_embed(args: argparse.Namespace) -> int:
    from alignscope.embed import SSCDEncoder, VAEEncoder, embed_dataset, load_clip

    if args.clip is None and args.sscd is None and args.vae is None:
        raise UsageError(
            "give --clip SPEC, --sscd MODEL and/or --vae DIR (see `alignscope embed --help`)"
        )
    vae_dir, vae_size = _vae_settings(args)
    dataset = _open_dataset(args.dataset, args.trust_pickles)
    if args.ray is not None:
        from alignscope.distributed.embedding import ray_embed

        data = ray_embed(
            args.dataset,
            args.out,
            clip=args.clip,
            sscd=args.sscd,
            sscd_preset=args.sscd_preset,
            vae=vae_dir,
            vae_size=vae_size,
            batch_size=args.batch_size,
            shard_rows=args.shard_rows,
            device=args.device,
            workers=args.workers,
            address=args.ray or None,
            trust_pickles=args.trust_pickles,
            trust_models=args.trust_models,
            num_gpus=1.0 if args.device.startswith("cuda") else 0.0,
            progress=not args.quiet,
            overwrite=args.overwrite,
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
    vae = None
    if vae_dir is not None:
        try:
            vae = VAEEncoder(vae_dir, vae_size, args.device)
        except ValueError as exc:  # weights that do not load (the config was checked above)
            raise UsageError(f"--vae: {exc}") from exc
    report = embed_dataset(
        dataset,
        args.out,
        clip=clip,
        sscd=sscd,
        vae=vae,
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        progress=not args.quiet,
        overwrite=args.overwrite,
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


def _register_embed(sub: Any) -> None:
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
    emb.add_argument(
        "--vae",
        metavar="DIR",
        help="diffusers AutoencoderKL folder (or a Stable Diffusion folder with vae/): writes the "
        "views vae (pooled latent means, as Nightshade computes them) and vae_purified (the "
        "same of a mildly purified copy: JPEG, small resize, slight blur)",
    )
    emb.add_argument(
        "--vae-size",
        dest="vae_size",
        type=int,
        default=None,
        metavar="N",
        help="--vae: centre-crop and resize images to N x N first (a multiple of 8; 256)",
    )
    emb.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=64)
    emb.add_argument("--shard-rows", dest="shard_rows", type=_positive_int, default=100_000)
    emb.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    _add_trust_models(emb)
    _add_overwrite(emb)
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
    from alignscope._files import claimed_output, fingerprint_tree

    for name, path in (("GENERATED", args.generated), ("TRAINING", args.training)):
        if not Path(path).exists():
            raise UsageError(f"{name}: no such file or directory {path!r}")
    identity = {
        "generated": fingerprint_tree(args.generated),
        "training": fingerprint_tree(args.training),
        "k": args.k,
        "method": args.method,
        "view": args.view,
        "sscd": None if args.sscd is None else fingerprint_tree(args.sscd),
        "sscd_preset": args.sscd_preset,
        "device": args.device,
    }
    with claimed_output(args.out, "replicate", identity, overwrite=args.overwrite):
        return _replicate_into(args, open_store, write_replication, replication)


def _replicate_into(args: argparse.Namespace, open_store: Any, write: Any, replication: Any) -> int:
    from alignscope.io import is_store

    stores = []
    store_paths = []
    datasets: list[str | None] = []  # thumbnails come only from datasets the user passed
    for name, path in (("GENERATED", args.generated), ("TRAINING", args.training)):
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
    from alignscope.io import store_row_ids

    ids = tuple(store_row_ids(p) if Path(p).is_dir() else None for p in store_paths)
    files = write(result, args.out, (str(args.generated), str(args.training)), pictures, ids)
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


def _register_replicate(sub: Any) -> None:
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
    _add_overwrite(rep)
    rep.add_argument("--threads", type=_positive_int, default=None)
    rep.add_argument("--json", action="store_true")
    rep.add_argument("--quiet", action="store_true")
    rep.set_defaults(func=cmd_replicate)


def register(sub: Any) -> None:
    """Add the ``embed`` and ``replicate`` sub-commands to ``sub`` (argparse sub-parsers)."""
    _register_embed(sub)
    _register_replicate(sub)
