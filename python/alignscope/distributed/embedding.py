"""Embedding a dataset with Ray: shards of ``shard_rows`` records handed to a pool of actors,
each holding its encoders once; the same store layout and resume rule as
:func:`alignscope.embed.embed_dataset` (complete shards are skipped)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path, claimed_output


class _Worker:
    def __init__(
        self,
        clip: str | None,
        sscd: str | None,
        preset: str,
        vae: tuple[str, int] | None,
        device: str,
        trust_models: bool,
    ) -> None:
        from alignscope.embed import SSCDEncoder, VAEEncoder, load_clip

        self.clip = load_clip(clip, device) if clip else None
        self.sscd = SSCDEncoder(sscd, preset, device, trust_models=trust_models) if sscd else None
        self.vae = VAEEncoder(vae[0], vae[1], device) if vae else None

    def run(self, dataset: str, trust: bool, out: str, index: int, rows: int, batch: int) -> Any:
        from alignscope.embed.embedder import embed_shard
        from alignscope.io.datasets import open_dataset

        images, skipped = embed_shard(
            open_dataset(dataset, trust_pickles=trust),
            out,
            index,
            rows,
            clip=self.clip,
            sscd=self.sscd,
            vae=self.vae,
            batch_size=batch,
        )
        return index, images, skipped


def ray_embed(
    dataset: str | Path,
    out: str | Path,
    *,
    clip: str | None = None,
    sscd: str | None = None,
    sscd_preset: str = "sscd",
    vae: str | None = None,
    vae_size: int = 256,
    batch_size: int = 64,
    shard_rows: int = 100_000,
    device: str = "cpu",
    workers: int = 2,
    num_gpus: float = 0.0,
    address: str | None = None,
    trust_pickles: bool = False,
    trust_models: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Embed ``dataset`` into the store ``out`` with ``workers`` Ray actors (``num_gpus`` each).
    ``out`` is claimed as :func:`alignscope.embed.embed_dataset` claims it: the same record,
    so a rerun resumes only the same computation, and either embedder may resume the other's.

    ``vae`` (a diffusers VAE folder) writes the ``vae`` and ``vae_purified`` views, from
    images resized to ``vae_size`` (:class:`alignscope.embed.VAEEncoder`).

    Returns the run's report (also written to ``out/embed_report.json``).
    """
    try:
        import ray  # noqa: F401  (checked before any work; the tasks import it below)
    except ImportError as exc:
        raise ValueError("the Ray backend needs: pip install 'alignscope[distributed]'") from exc
    from alignscope._diffusers import check_vae_folder
    from alignscope.embed import SSCDEncoder
    from alignscope.embed.embedder import embed_identity
    from alignscope.embed.vae import check_vae_size
    from alignscope.io.datasets import open_dataset

    if clip is None and sscd is None and vae is None:
        raise ValueError("give a CLIP spec, an SSCD model or a VAE folder (any of them)")
    if sscd is not None:
        # the driver checks the file once, so a refused model fails here, not in every actor
        SSCDEncoder(sscd, sscd_preset, "cpu", trust_models=trust_models)
    if vae is not None:
        check_vae_folder(vae)
        check_vae_size(vae_size)
    source = open_dataset(dataset, trust_pickles=trust_pickles)
    identity = embed_identity(
        source.source,
        source.kind,
        clip_spec=clip,
        sscd_model=sscd,
        sscd_preset=None if sscd is None else sscd_preset,
        device=device,
        shard_rows=shard_rows,
        dtype=np.float16,
        vae_model=vae,
        vae_size=None if vae is None else vae_size,
    )
    # the same record as a single-process embed: another dataset, model or setting is refused
    with claimed_output(out, "embed", identity, overwrite=overwrite):
        return _ray_embed_into(
            source, dataset, out, clip, sscd, sscd_preset,
            None if vae is None else (vae, vae_size), batch_size, shard_rows, device,
            workers, num_gpus, address, trust_pickles, trust_models, progress,
        )  # fmt: skip


def _ray_embed_into(
    source: Any,
    dataset: str | Path,
    out: str | Path,
    clip: str | None,
    sscd: str | None,
    sscd_preset: str,
    vae: tuple[str, int] | None,
    batch_size: int,
    shard_rows: int,
    device: str,
    workers: int,
    num_gpus: float,
    address: str | None,
    trust_pickles: bool,
    trust_models: bool,
    progress: bool,
) -> dict[str, Any]:
    import ray
    from ray.util import ActorPool

    from alignscope.embed import complete_shards
    from alignscope.embed.embedder import fill_empty_shards

    count = sum(1 for _ in source)
    shards = -(-count // shard_rows)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    done = complete_shards(root)
    todo = [i for i in range(shards) if i not in done]
    start = time.perf_counter()
    images, skipped = 0, []
    if todo:
        if not ray.is_initialized():
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
        actor = ray.remote(num_cpus=1, num_gpus=num_gpus, max_restarts=1, max_task_retries=2)(
            _Worker
        )
        pool = ActorPool(
            [
                actor.remote(clip, sscd, sscd_preset, vae, device, trust_models)
                for _ in range(max(1, min(workers, len(todo))))
            ]
        )
        results = pool.map_unordered(
            lambda a, i: a.run.remote(
                str(dataset), trust_pickles, str(root), i, shard_rows, batch_size
            ),
            todo,
        )
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="shards", unit="shard", file=sys.stderr)
        empty = []
        for index, n_images, shard_skipped in results:
            images += n_images
            skipped.extend(shard_skipped)
            if n_images == 0:
                empty.append(index)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        fill_empty_shards(root, sorted(empty), np.float16)  # embed_shard's dtype
    report = {
        "store": str(root),
        "dataset": str(Path(dataset).resolve()),
        "dataset_kind": source.kind,
        "shards_written": sorted(todo),
        "shards_skipped": sorted(done),
        "images": images,
        "images_per_second": images / (time.perf_counter() - start) if images else None,
        "skipped": [{"id": i, "reason": r} for i, r in skipped],
        "warnings": source.warnings,
        "seconds": time.perf_counter() - start,
        "workers": workers,
    }
    with atomic_path(root / "embed_report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return report
