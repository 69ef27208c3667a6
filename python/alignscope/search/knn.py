"""The k nearest neighbours of every row of one set among the others: the layer every
neighbour-based screening score uses, exact or approximate, with the approximation's recall
measured rather than assumed.

``method``: ``"exact"`` (the engine's tiled top-k, O(N^2 d)), ``"ivf"`` (FAISS IVF with float16
codes, probes chosen for a recall target on a sample), ``"hnsw"`` (FAISS HNSW) or ``"auto"``:
exact when a timed probe of the exact search predicts it finishes within ``budget_s``, IVF
otherwise. An approximate search reports its recall@k against the exact neighbours of a random
sample of rows (the sample costs ``sample / N`` of one exact search).

The rows are read through :class:`alignscope.search.rows.Rows`, a span of queries at a time:
an EmbeddingStore larger than memory is searched without loading it. With ``checkpoint`` (a
folder), the index and every span's neighbours are files written once (temp file, then
rename), so a search killed part-way resumes at the first missing span and gives the same
table as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path
from alignscope._progress import ProgressArg, TileProgress
from alignscope._rows import unit_rows
from alignscope.search.exact import _faiss, _on_gpus, _search_index, faiss_index_params, topk
from alignscope.search.rows import Rows, as_rows

KNN_METHODS = ("exact", "ivf", "hnsw", "auto")
# Who searches the query spans: (rows, index or None for exact, [(start, stop), ...], k) ->
# (start, (sims, idx, rows searched exactly)) per span, in any order. Every runner must give
# each span exactly what search_span gives it (same index, same k), so a run is the same
# whoever searched it.
SpanRunner = Callable[
    [Rows, Any, list[tuple[int, int]], int],
    Iterable[tuple[int, tuple[np.ndarray, np.ndarray, int]]],
]
_FAISS_METHOD = {"ivf": "faiss-ivf", "hnsw": "faiss-hnsw"}
# Rows whose exact neighbours check an approximate search's recall.
RECALL_SAMPLE = 1000
# What "auto" allows the exact search: above it, IVF.
EXACT_BUDGET_S = 600.0
# Rows the timing probe of "auto" searches exactly (its cost is PROBE_ROWS / N of the search).
PROBE_ROWS = 1024
# Queries per span: the unit of progress and of resumption.
QUERY_ROWS = 65_536
# IVF probes are doubled from faiss_index_params' nprobe until the recall on the sample reaches
# this, up to MAX_NPROBE (each doubling roughly doubles the search time).
RECALL_TARGET = 0.95
MAX_NPROBE = 64
# Two neighbours whose cosines differ by less than this are tied: a search that returns either
# has found a k-th nearest neighbour (web captions repeat word for word, so exact ties are
# common and "which of 40 identical captions" is not a recall error).
TIE_TOLERANCE = 1e-5


@dataclass
class Neighbours:
    """(N, k) neighbours of each row, best first, the row itself excluded.

    sims : float32 cosine similarities; idx : int64 row indices (-1 pads when fewer exist).
    method : "exact", "ivf" or "hnsw" (what ran). recall : recall@k of an approximate search
    on ``recall_sample`` rows, None for exact. params : the index parameters.
    """

    sims: np.ndarray
    idx: np.ndarray
    method: str
    recall: float | None = None
    recall_sample: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def first(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best columns (k <= the k searched)."""
        if k > self.idx.shape[1]:
            raise ValueError(f"{k} neighbours asked of a table of {self.idx.shape[1]}")
        return self.sims[:, :k], self.idx[:, :k]

    def describe(self) -> dict[str, Any]:
        """What summary.json records of the search."""
        out: dict[str, Any] = {"method": self.method, "k": int(self.idx.shape[1])}
        out.update(self.params)
        if self.recall is not None:
            out["recall_at_k"] = self.recall
            out["recall_sample"] = self.recall_sample
        return out


def self_neighbours(
    x: Any,
    k: int,
    *,
    method: str = "exact",
    budget_s: float = EXACT_BUDGET_S,
    sample: int = RECALL_SAMPLE,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    progress: ProgressArg = False,
    runner: SpanRunner | None = None,
) -> Neighbours:
    """The k nearest other rows of every row of ``x`` by cosine similarity.

    Parameters
    ----------
    x : (N, d) float array (host memory), or :class:`~alignscope.search.rows.Rows` (a store
        view, read a span at a time; rows are normalised by the search).
    k : neighbours per row, capped at N - 1 (>= 1).
    method : see the module docstring.
    budget_s : "auto": the longest exact search it accepts.
    sample : rows whose exact neighbours measure an approximate search's recall (and choose
        the IVF probes).
    seed : the recall sample's seed.
    checkpoint : a folder for the index and the finished spans (resumable); None keeps
        everything in memory.
    progress : a bar on stderr (True) or a callable(done, total) over query rows.
    runner : who searches the spans not yet in the checkpoint (:data:`SpanRunner`); None
        searches them here, one after another (``alignscope.distributed`` runs them as Ray
        tasks).
    """
    if method not in KNN_METHODS:
        raise ValueError(f"knn method must be one of {', '.join(KNN_METHODS)}, got {method!r}")
    rows = as_rows(x, "x")
    n = rows.n
    kk = min(int(k), n - 1)
    if kk < 1:
        raise ValueError("neighbour scores need at least two samples")
    ckpt = _Checkpoint(checkpoint, {"n": n, "d": rows.d, "k": kk, "method": method, "seed": seed})
    chosen = method
    params: dict[str, Any] = dict(ckpt.meta.get("params", {}))
    if method == "auto" and "chosen" not in ckpt.meta:
        predicted = _predict_exact_seconds(rows, kk)
        params["exact_seconds_predicted"] = round(predicted, 3)
        ckpt.note(chosen="exact" if predicted <= budget_s else "ivf", params=params)
    chosen = ckpt.meta.get("chosen", chosen)
    index = None
    sample_rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    truth: np.ndarray | None = None
    if chosen != "exact":
        index, built = ckpt.index(lambda: _build_index(rows, _FAISS_METHOD[chosen], kk))
        if built or "index" not in params:
            params.update(faiss_index_params(_FAISS_METHOD[chosen], n, kk))
            truth = _exact_sims(rows, sample_rows, kk)
            if chosen == "ivf":
                params.update(_choose_nprobe(index, rows, sample_rows, truth, kk, params))
            ckpt.note(params=params)
        _set_search_params(index, chosen, params)
    sims = np.empty((n, kk), dtype=np.float32)
    idx = np.empty((n, kk), dtype=np.int64)
    short = 0
    todo = []
    done = 0
    for start, stop in rows.spans(QUERY_ROWS):
        part = ckpt.load_part(start, stop)
        if part is None:
            todo.append((start, stop))
            continue
        sims[start:stop], idx[start:stop], span_short = part
        short += span_short
        done += stop - start
    with TileProgress(progress, f"{rows.view} neighbours ({chosen})") as bar:
        for start, part in (runner or run_spans_here)(rows, index, todo, kk):
            ckpt.save_part(start, part)
            stop = start + part[1].shape[0]
            sims[start:stop], idx[start:stop], span_short = part
            short += span_short
            done += stop - start
            if bar.callback is not None:
                bar.callback(done, n)
    if chosen == "exact":
        return Neighbours(sims, idx, "exact", params=params)
    if truth is None:
        truth = _exact_sims(rows, sample_rows, kk)
    recall = _tie_aware_recall(rows, sample_rows, idx[sample_rows], truth)
    if kk > 10:  # the usual yardstick of ANN benchmarks, beside the recall at the k searched
        params["recall_at_10"] = _tie_aware_recall(
            rows, sample_rows, idx[sample_rows, :10], truth[:, :10]
        )
    params["rows_searched_exactly"] = short
    return Neighbours(
        sims, idx, chosen, recall=recall, recall_sample=int(sample_rows.size), params=params
    )


def run_spans_here(
    rows: Rows, index: Any, spans: list[tuple[int, int]], k: int
) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray, int]]]:
    """The default :data:`SpanRunner`: each span searched in this process, in order."""
    for start, stop in spans:
        part = search_span(rows, index, start, stop, k)
        rows.release()
        yield start, part


def search_span(
    rows: Rows, index: Any, start: int, stop: int, k: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Neighbours of rows start..stop-1 among all rows, and how many of those rows were
    searched exactly because the index returned fewer than k."""
    queries = np.arange(start, stop)
    database, view = rows.searchable()
    if index is None:
        return (*topk(rows.read(start, stop), database, k, exclude=queries, view=view), 0)
    q = unit_rows(rows.read(start, stop), np.float32)
    sims, idx = _search_index(index, q, k, 0, queries, rows.n)
    # An IVF probe can return fewer than k rows (-1 pads); the scores index with every entry,
    # so those rows are searched exactly.
    short = np.flatnonzero((idx < 0).any(axis=1))
    if short.size:
        sims[short], idx[short] = topk(
            rows.gather(queries[short]), database, k, exclude=queries[short], view=view
        )
    return sims, idx, int(short.size)


def _build_index(rows: Rows, method: str, k: int) -> Any:
    """An IVF (float16 codes) or HNSW index over all rows, added a span at a time."""
    faiss = _faiss()
    params = faiss_index_params(method, rows.n, k)
    if method == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(rows.d, params["M"], faiss.METRIC_INNER_PRODUCT)  # type: ignore[attr-defined]
    else:
        index = faiss.index_factory(  # type: ignore[attr-defined]
            rows.d,
            f"IVF{params['nlist']},SQfp16",
            faiss.METRIC_INNER_PRODUCT,  # type: ignore[attr-defined]
        )
        train = np.random.default_rng(0).choice(
            rows.n, size=min(rows.n, params["train_rows"]), replace=False
        )
        index.train(unit_rows(rows.gather(np.sort(train)), np.float32))
    index = _on_gpus(faiss, index, k)
    for start, stop in rows.spans(QUERY_ROWS):
        index.add(unit_rows(rows.read(start, stop), np.float32))
        rows.release()
    return index


def index_on_cpu(index: Any) -> Any:
    """A CPU copy of a FAISS index that _on_gpus may have moved to the GPUs (a single-GPU
    index or the replicas index_cpu_to_all_gpus returns), else the index itself: only CPU
    indexes can be written to disk or serialised for other processes."""
    faiss = _faiss()
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0  # type: ignore[attr-defined]
    if gpus <= 0 or isinstance(index, faiss.IndexHNSWFlat):  # type: ignore[attr-defined]
        return index  # _on_gpus never moves these
    return faiss.index_gpu_to_cpu(index)  # type: ignore[attr-defined]


def _set_search_params(index: Any, method: str, params: dict[str, Any]) -> None:
    if method == "hnsw":
        index.hnsw.efSearch = params["efSearch"]
    else:
        index.nprobe = params["nprobe"]


def _choose_nprobe(
    index: Any, rows: Rows, sample: np.ndarray, truth: np.ndarray, k: int, params: dict[str, Any]
) -> dict[str, Any]:
    """The smallest probe count (doubling from params' nprobe, at most MAX_NPROBE and nlist)
    whose recall on ``sample`` reaches RECALL_TARGET; the recall of each tried."""
    q = unit_rows(rows.gather(sample), np.float32)
    tried: dict[str, float] = {}
    nprobe = int(params["nprobe"])
    cap = min(MAX_NPROBE, int(params["nlist"]))
    while True:
        index.nprobe = nprobe
        _, found = _search_index(index, q, k, 0, sample, rows.n)
        tried[str(nprobe)] = round(_tie_aware_recall(rows, sample, found, truth), 4)
        if tried[str(nprobe)] >= RECALL_TARGET or nprobe >= cap:
            break
        nprobe = min(cap, 2 * nprobe)
    return {"nprobe": nprobe, "nprobe_recall": tried, "recall_target": RECALL_TARGET}


def _exact_sims(rows: Rows, sample: np.ndarray, k: int) -> np.ndarray:
    """(len(sample), k) the exact neighbours' cosines of the sample rows, best first."""
    database, view = rows.searchable()
    sims, _ = topk(rows.gather(sample), database, k, exclude=sample, view=view)
    return sims


def _tie_aware_recall(
    rows: Rows, sample: np.ndarray, found: np.ndarray, truth: np.ndarray
) -> float:
    """Share of the found neighbours of ``sample`` that are among its exact k nearest: a found
    row counts when its exact cosine reaches the exact k-th nearest cosine (within
    TIE_TOLERANCE), so any of several tied k-th neighbours is a correct answer."""
    q = unit_rows(rows.gather(sample), np.float64)
    valid = found >= 0
    cand = unit_rows(rows.gather(np.where(valid, found, 0)).reshape(-1, rows.d), np.float64)
    cos = np.einsum("id,ikd->ik", q, cand.reshape(*found.shape, rows.d))
    kth = truth[:, -1:].astype(np.float64)
    hits = valid & (cos >= kth - TIE_TOLERANCE) & (found != sample[:, None])
    return float(hits.sum() / max(1, int(np.isfinite(truth).sum())))


def _predict_exact_seconds(rows: Rows, k: int) -> float:
    """Seconds of the exact self-search, from the time of PROBE_ROWS queries against all rows."""
    probe = np.arange(min(PROBE_ROWS, rows.n))
    database, view = rows.searchable()
    start = time.perf_counter()
    topk(rows.read(0, probe.size), database, k, exclude=probe, view=view)
    return (time.perf_counter() - start) * rows.n / probe.size


class _Checkpoint:
    """A search's files in one folder: meta.json (what the search is, its chosen parameters),
    index.faiss, and span-<start>.npz per finished span; or nothing, in memory. One search
    owns the folder at a time (screen holds its --out lock), so a temp file found on opening
    is a killed write's leftover (an index's can be GBs) and is removed."""

    def __init__(self, folder: str | Path | None, identity: dict[str, Any]) -> None:
        self.folder = None if folder is None else Path(folder)
        self.meta: dict[str, Any] = {"identity": identity}
        if self.folder is None:
            return
        path = self.folder / "meta.json"
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError):
                old = {}
            if old.get("identity") == identity:
                self.meta = old
                for stale in self.folder.glob(".*.tmp"):  # atomic_path's never-renamed files
                    stale.unlink(missing_ok=True)
                return
        # another search's (or a damaged) folder: its spans would mix with this one's
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self._write_meta()

    def _write_meta(self) -> None:
        assert self.folder is not None
        with atomic_path(self.folder / "meta.json") as tmp:
            tmp.write_text(json.dumps(self.meta, indent=1, default=str))

    def note(self, **values: Any) -> None:
        self.meta.update(json.loads(json.dumps(values, default=str)))
        if self.folder is not None:
            self._write_meta()

    def index(self, build: Any) -> tuple[Any, bool]:
        """The saved index, or a new one from ``build()`` (saved); and whether it was built."""
        if self.folder is not None and (self.folder / "index.faiss").is_file():
            return _faiss().read_index(str(self.folder / "index.faiss")), False  # type: ignore[attr-defined]
        index = build()
        if self.folder is not None:
            faiss = _faiss()
            cpu = index_on_cpu(index)
            with atomic_path(self.folder / "index.faiss") as tmp:
                faiss.write_index(cpu, str(tmp))  # type: ignore[attr-defined]
        return index, True

    def _part(self, start: int) -> Path:
        assert self.folder is not None
        return self.folder / f"span-{start:012d}.npz"

    def load_part(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        if self.folder is None or not self._part(start).is_file():
            return None
        try:
            # (np.load of a path leaks the file when the zip is unreadable: open it here)
            with open(self._part(start), "rb") as fh, np.load(fh) as part:
                sims, idx, short = part["sims"], part["idx"], int(part["short"])
        # damaged (a truncated zip is BadZipFile, not an OSError): search the span again
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None
        return (sims, idx, short) if idx.shape[0] == stop - start else None

    def save_part(self, start: int, part: tuple[np.ndarray, np.ndarray, int]) -> None:
        if self.folder is None:
            return
        with atomic_path(self._part(start)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, sims=part[0], idx=part[1], short=np.int64(part[2]))
