"""Exact structure AD split into Ray tasks.

The N rows are cut into blocks of ``block`` rows (a multiple of the engine's tile); a task is
one block pair (I, K) with I <= K and reads only those rows from the store. Diagonal pairs run
the engine's symmetric form, off-diagonal pairs its rectangular form with column sums, both with
the same tile edge as the single-process engine, so every tile's float32 sums are the ones the
single-process engine computes; only the float64 reduction order differs.

Each task writes ``work_dir/pair_{I}_{K}.npz`` (row sums of block I, column sums of block K)
atomically; a rerun skips the pairs whose files exist, a failed task is retried by Ray, and the
result carries a checksum of the covered pair set, so no pair is counted twice or missed.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path
from alignscope._rows import unit_rows


def block_pairs(n: int, block: int) -> list[tuple[int, int]]:
    """Upper block pairs (I, K), I <= K, of an n-row matrix cut into ``block``-row blocks."""
    blocks = -(-n // block)
    return [(i, k) for i in range(blocks) for k in range(i, blocks)]


def pair_set_checksum(pairs: list[tuple[int, int]]) -> str:
    text = ";".join(f"{i},{k}" for i, k in sorted(pairs))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class TileJob:
    """What a task needs besides its block pair: where the rows are and how to score pairs."""

    store_path: str
    texts_path: str | None
    n: int
    block: int
    tile: int
    zscale: np.ndarray
    c0: float
    c_label: float
    codes: np.ndarray | None
    work_dir: str
    fail_once: tuple[tuple[int, int], ...] = ()  # tests: pairs whose first attempt raises
    backend: str = "cpu"  # "cuda" when the tasks hold GPUs


def _rows(job: TileJob, start: int, stop: int) -> np.ndarray:
    """Packed unit rows [a, b] of rows start..stop-1, read from the store."""
    from alignscope.io import open_store
    from alignscope.metrics._source import PairSource

    store = open_store(job.store_path, texts=job.texts_path)
    source = PairSource(store=store, use_text=job.codes is None)
    packed, _ = source.packed(np.arange(start, stop))
    store.close()
    return packed


def run_pair(job: TileJob, pair: tuple[int, int]) -> str:
    """Compute one block pair and write its partial sums; returns the file written."""
    from alignscope import _backend

    # A task holding a GPU uses the CUDA engine when this node has one built and visible.
    engine = "cuda" if job.backend == "cuda" and not _backend.cuda_status()[2] else "cpu"
    i, k = pair
    out = Path(job.work_dir) / f"pair_{i}_{k}.npz"
    if out.exists():
        return str(out)
    marker = Path(job.work_dir) / f".attempted_{i}_{k}"
    if pair in job.fail_once and not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure of block pair {pair} (first attempt)")
    i0, i1 = i * job.block, min(job.n, (i + 1) * job.block)
    k0, k1 = k * job.block, min(job.n, (k + 1) * job.block)
    rows = _rows(job, i0, i1)
    codes = job.codes
    # A diagonal pair is the symmetric form of one block; others the rectangular one.
    diagonal = i == k
    row_sums, _, col_sums = _backend.pair_abs_sum(
        rows,
        None if diagonal else _rows(job, k0, k1),
        zscale=job.zscale,
        c0=job.c0,
        c_label=job.c_label,
        tile=job.tile,
        threads=1,
        backend=engine,
        row_labels=None if codes is None else codes[i0:i1],
        col_labels=None if codes is None or diagonal else codes[k0:k1],
    )
    if col_sums is None:
        col_sums = np.zeros(0)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, row_sums=row_sums, col_sums=col_sums)
    return str(out)


def reduce_pairs(job: TileJob, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Row sums (N,) float64 from the pair files, each pair exactly once."""
    sums = np.zeros(job.n)
    for i, k in pairs:
        with np.load(Path(job.work_dir) / f"pair_{i}_{k}.npz") as part:
            i0 = i * job.block
            sums[i0 : i0 + part["row_sums"].size] += part["row_sums"]
            if i != k:
                k0 = k * job.block
                sums[k0 : k0 + part["col_sums"].size] += part["col_sums"]
    return sums


def ray_alignment_difficulty(
    store_path: str | Path,
    *,
    texts: str | Path | None = None,
    labels: str | Path | None = None,
    true_labels: np.ndarray | None = None,
    alpha: float = 0.8,
    profile: Any = "paper",
    work_dir: str | Path,
    address: str | None = None,
    block: int = 8192,
    tile: int = 512,
    per_sample: bool = False,
    max_pairs: int | None = None,
    progress: bool = True,
    num_gpus: float = 0.0,
    _fail_once: tuple[tuple[int, int], ...] = (),
) -> dict[str, Any]:
    """Exact AD of a store on a Ray cluster (or a local Ray instance when ``address`` is None).

    Returns a dict with ``ad``, ``feature``, ``structure``, ``n``, ``pairs`` (block pairs in
    all), ``computed`` (pairs computed by this call; the rest were already in ``work_dir``),
    ``checksum`` (sha256 of the covered pair set) and, with ``per_sample``, ``d_s`` (N,).
    ``max_pairs`` stops after that many new pairs (an interrupted run, for resuming).
    """
    try:
        import ray
    except ImportError as exc:
        raise ValueError("the Ray backend needs: pip install 'alignscope[distributed]'") from exc
    from alignscope.io import open_store
    from alignscope.metrics._inputs import label_codes
    from alignscope.metrics.ad import _fixed_bounds
    from alignscope.metrics.profiles import check_profile
    from alignscope.metrics.sampled import feature_distance, structure_setup

    if block % tile:
        raise ValueError(f"block ({block}) must be a multiple of tile ({tile})")
    if check_profile(profile) == "minmax":
        raise ValueError("profile='minmax' needs a global min/max pass; use paper, half or Bounds")
    store = open_store(store_path, texts=texts, labels=labels)
    n = store.n
    codes = label_codes(store.labels) if store.labels is not None else None
    d_a = store.d_image
    d_b = 0 if codes is not None else int(store.d_text or 0)
    bounds = _fixed_bounds(profile, codes is None)
    setup = structure_setup(d_a, d_b, bounds.image, bounds.text, codes)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    job = TileJob(
        str(store_path),
        None if texts is None else str(texts),
        n,
        block,
        tile,
        setup.zscale,
        setup.c0,
        setup.c_label,
        codes,
        str(work),
        tuple(_fail_once),
        "cuda" if num_gpus > 0 else "cpu",
    )
    pairs = block_pairs(n, block)
    todo = [p for p in pairs if not (work / f"pair_{p[0]}_{p[1]}.npz").exists()]
    if max_pairs is not None:
        todo = todo[:max_pairs]
    start = time.perf_counter()
    if todo:
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
        remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=3, retry_exceptions=True)(
            run_pair
        )
        job_ref = ray.put(job)
        pending = [remote.remote(job_ref, p) for p in todo]
        bar = None
        if progress:
            import sys

            from tqdm import tqdm

            bar = tqdm(total=len(pending), desc="block pairs", unit="pair", file=sys.stderr)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)
            if bar is not None:
                bar.update(len(done))
        if bar is not None:
            bar.close()
    complete = [p for p in pairs if (work / f"pair_{p[0]}_{p[1]}.npz").exists()]
    result: dict[str, Any] = {
        "n": n,
        "pairs": len(pairs),
        "computed": len(todo),
        "complete": len(complete) == len(pairs),
        "checksum": pair_set_checksum(complete),
        "seconds": time.perf_counter() - start,
    }
    if len(complete) < len(pairs):
        return result  # interrupted: rerun to finish
    row_sums = reduce_pairs(job, pairs)
    structure = float(np.sum(row_sums)) / n**2
    if codes is not None:
        d_ab = (
            None
            if true_labels is None
            else (np.asarray(store.labels) != np.asarray(true_labels)).astype(float)
        )
    else:
        cos = np.concatenate(
            [
                np.einsum(
                    "ij,ij->i",
                    *(
                        unit_rows(store.read(s, min(n, s + 65536), v), np.float64)
                        for v in ("image", "text")
                    ),
                )
                for s in range(0, n, 65536)
            ]
        )
        d_ab = feature_distance(cos, bounds.feature)
    feature = float(np.mean(d_ab)) if d_ab is not None else None
    result.update(
        {
            "structure": structure,
            "feature": feature,
            "alpha": alpha,
            "ad": (1 - alpha) * structure + (alpha * feature if feature is not None else 0.0),
        }
    )
    if per_sample:
        result["d_s"] = row_sums / n
    return result
