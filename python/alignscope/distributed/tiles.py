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
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path, fingerprint_files


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

    store: dict[str, Any]  # open_store's arguments (EmbeddingStore.reopen_args)
    n: int
    block: int
    tile: int
    zscale: np.ndarray
    c0: float
    c_label: float
    codes: np.ndarray | None
    work_dir: str
    backend: str = "cpu"  # "cuda" when the tasks hold GPUs


def _rows(job: TileJob, start: int, stop: int) -> np.ndarray:
    """Packed unit rows [a, b] of rows start..stop-1, read from the store."""
    from alignscope.io import open_store
    from alignscope.metrics import PairSource

    store = open_store(**job.store)
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


@dataclass
class RayRun:
    """What one call of :func:`exact_row_sums` did."""

    row_sums: np.ndarray | None  # (N,) float64 sums of |D_img - D_txt| per row; None if incomplete
    pairs: int  # block pairs in all
    computed: int  # block pairs computed by this call (the rest were already in work_dir)
    complete: bool
    checksum: str  # sha256 of the covered pair set
    work_dir: Path  # the keyed folder of this computation's pair files
    seconds: float


def job_key(store: Any, settings: dict[str, Any]) -> str:
    """A key of the computation: the input files' fingerprints and every setting that changes
    a pair file. Pair files live in ``work_dir/ad-<key>``, so a rerun reuses only its own."""
    ident = {"version": 1, "inputs": fingerprint_files(store.files()), **settings}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def exact_row_sums(
    store: Any,
    *,
    zscale: np.ndarray,
    c0: float,
    c_label: float,
    codes: np.ndarray | None,
    work_dir: str | Path,
    address: str | None = None,
    block: int = 8192,
    tile: int = 512,
    num_gpus: float = 0.0,
    max_pairs: int | None = None,
    progress: bool = True,
) -> RayRun:
    """Exact per-row structure sums of ``store`` as Ray tasks (a local instance when
    ``address`` is None and none is running).

    Parameters
    ----------
    store : an :class:`alignscope.io.EmbeddingStore` opened from files with ``open_store``;
        every worker reopens it, so its files must be on a filesystem all nodes see.
    zscale, c0, c_label, codes : the structure constants and label codes of
        :func:`alignscope.metrics.sampled.structure_setup`.
    work_dir : folder for the pair files, shared by all nodes; this computation's files go to
        ``work_dir/ad-<key>`` (:func:`job_key`), so a rerun of the same computation resumes
        and another input or setting never reuses them.
    block : rows per task block, a multiple of ``tile``. tile : the engine's tile edge.
    max_pairs : stop after that many new pairs (an interrupted run, for resuming).
    """
    try:
        import ray
    except ImportError as exc:
        raise ValueError("the Ray backend needs: pip install 'alignscope[distributed]'") from exc
    if store.reopen_args is None:
        raise ValueError(
            "the Ray backend reads rows in its workers: open the store from files with "
            "alignscope.io.open_store (or write arrays with write_store first)"
        )
    if block % tile:
        raise ValueError(f"block ({block}) must be a multiple of tile ({tile})")
    n = store.n
    settings = {
        "n": n,
        "block": block,
        "tile": tile,
        "zscale": np.asarray(zscale, dtype=np.float64).tolist(),
        "c0": float(c0),
        "c_label": float(c_label),
        "codes": None if codes is None else hashlib.sha256(codes.tobytes()).hexdigest(),
        "use_text": codes is None,
    }
    # absolute: workers run in other directories (and on other nodes)
    work = Path(work_dir).resolve() / f"ad-{job_key(store, settings)}"
    work.mkdir(parents=True, exist_ok=True)
    record = work / "job.json"
    if not record.exists():
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps({"store": store.reopen_args, **settings}, indent=1))
    job = TileJob(
        store.reopen_args,
        n,
        block,
        tile,
        np.asarray(zscale, dtype=np.float32),
        float(c0),
        float(c_label),
        codes,
        str(work),
        "cuda" if num_gpus > 0 else "cpu",
    )
    pairs = block_pairs(n, block)
    todo = [p for p in pairs if not (work / f"pair_{p[0]}_{p[1]}.npz").exists()]
    if max_pairs is not None:
        todo = todo[:max_pairs]
    start = time.perf_counter()
    if todo:
        if not ray.is_initialized():
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
        # run_pair is looked up at call time, so tests can wrap it (failure injection)
        remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=3, retry_exceptions=True)(
            globals()["run_pair"]
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
    finished = len(complete) == len(pairs)
    return RayRun(
        row_sums=reduce_pairs(job, pairs) if finished else None,
        pairs=len(pairs),
        computed=len(todo),
        complete=finished,
        checksum=pair_set_checksum(complete),
        work_dir=work,
        seconds=time.perf_counter() - start,
    )
