"""Exact cosine top-k, streaming the database in chunks through the engine's ``topk_inner``."""

from __future__ import annotations

import numpy as np

from alignscope import _backend
from alignscope._devices import array_device, host_only_error
from alignscope._progress import ProgressArg, TileProgress
from alignscope.metrics import PairSource, as_matrix

# Database rows per engine call: the float32 working copy stays at chunk * d * 4 bytes.
DATABASE_CHUNK = 262_144
METHODS = ("engine", "faiss", "faiss-ivf", "faiss-hnsw")
APPROXIMATE = ("faiss-ivf", "faiss-hnsw")


def store_view(store: object, view: str | None) -> str:
    """The view a search reads: ``view`` if given, else SSCD descriptors when the store has
    them (copy detection), else the image embeddings."""
    if view is not None:
        return view
    return "sscd" if store.has_view("sscd") else "image"  # type: ignore[attr-defined]


def _source(x: object, name: str, view: str | None) -> PairSource:
    from alignscope.io.store import EmbeddingStore

    if isinstance(x, EmbeddingStore):
        chosen = store_view(x, view)
        return PairSource(
            store=x, use_text=False, names=(f"{x.source} {chosen}", ""), store_view=chosen
        )
    return PairSource(as_matrix(x, name), None, use_text=False, names=(name, ""))


def _merge(
    values: np.ndarray, indices: np.ndarray, new_values: np.ndarray, new_indices: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k best of two (nq, k) candidate sets, descending; ties by smaller index."""
    v = np.concatenate([values, new_values], axis=1)
    i = np.concatenate([indices, new_indices], axis=1)
    order = np.lexsort((i, -v), axis=1)[:, :k]
    return np.take_along_axis(v, order, axis=1), np.take_along_axis(i, order, axis=1)


def topk(
    queries: object,
    database: object,
    k: int = 1,
    *,
    exclude: np.ndarray | None = None,
    method: str = "engine",
    view: str | None = None,
    threads: int | None = None,
    progress: ProgressArg = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The k most cosine-similar database rows for every query.

    Parameters
    ----------
    queries : (nq, d) float array, or an EmbeddingStore (its image view).
    database : (nx, d) float array, or an EmbeddingStore: streamed in chunks, so it may be
        larger than memory.
    k : neighbours per query (>= 1).
    exclude : (nq,) int database indices: query i never matches database row exclude[i]
        (its own index when a set is searched against itself); -1 excludes nothing.
    method : "engine" (exact, the C++ tiles), "faiss" (exact IndexFlatIP; needs faiss-cpu; with
        faiss-gpu and a GPU, flat and IVF indexes run on all GPUs), or
        the approximate indexes "faiss-ivf" (IVF with float16 codes: faiss_index_params)
        and "faiss-hnsw" (IndexHNSWFlat, M = 32, efSearch 128) for very large databases; their
        recall against exact search is what :func:`alignscope.search.replication` reports.
    view : for stores, "image", "text" or "sscd"; None: "sscd" when present, else "image".

    Returns
    -------
    (similarities (nq, k) float32, indices (nq, k) int64), best first; -inf / -1 pad rows when
    the database has fewer than k candidates.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    q_src = _source(queries, "queries", view)
    x_src = _source(database, "database", view)
    if q_src.d_a != x_src.d_a:
        raise ValueError(
            f"queries have d={q_src.d_a} but the database has d={x_src.d_a}; embed both with "
            "the same model"
        )
    if exclude is not None:
        where = array_device(exclude)
        if where is not None:
            raise host_only_error("exclude", where)
        exclude = np.asarray(exclude)
        if exclude.shape != (q_src.n,) or exclude.dtype.kind not in "iu":
            raise ValueError(
                f"exclude must be ({q_src.n},) integers, got {exclude.dtype} {exclude.shape}"
            )
    q = q_src.packed(np.arange(q_src.n))[0]
    if method in APPROXIMATE:
        return _faiss_index_search(q, x_src, k, exclude, method)
    values = np.full((q_src.n, k), -np.inf, dtype=np.float32)
    indices = np.full((q_src.n, k), -1, dtype=np.int64)
    with TileProgress(progress, "top-k search") as bar:
        for start in range(0, x_src.n, DATABASE_CHUNK):
            stop = min(x_src.n, start + DATABASE_CHUNK)
            chunk = x_src.packed(np.arange(start, stop))[0]
            if method == "faiss":
                v, i = _faiss_search(q, chunk, k, start, exclude)
            else:
                v, i = _backend.topk_inner(
                    q, chunk, k, offset=start, query_ids=exclude, threads=threads
                )
            values, indices = (v, i) if start == 0 else _merge(values, indices, v, i, k)
            x_src.release()
            if bar.callback is not None:
                bar.callback(stop, x_src.n)
    return values, indices


def _faiss() -> object:
    try:
        import faiss
    except ImportError as exc:
        raise ValueError("FAISS methods need faiss: pip install faiss-cpu (or faiss-gpu)") from exc
    return faiss


# faiss's GPU brute force and IVF search accept k up to 2048.
_FAISS_GPU_MAX_K = 2048


def _on_gpus(faiss: object, index: object, k: int) -> object:
    """The index moved to all GPUs when this faiss build sees any (faiss-gpu), else as is."""
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0  # type: ignore[attr-defined]
    if gpus <= 0 or k + 1 > _FAISS_GPU_MAX_K or isinstance(index, faiss.IndexHNSWFlat):  # type: ignore[attr-defined]
        return index
    return faiss.index_cpu_to_all_gpus(index)  # type: ignore[attr-defined]


def faiss_index_params(method: str, n: int, k: int) -> dict[str, object]:
    """The parameters of the approximate index ``method`` ("faiss-ivf" or "faiss-hnsw") for a
    database of n rows searched for k: IVF with float16 codes (``SQfp16``: the precision of a
    float16 store, half the memory of float32), nlist ~ 4 sqrt(n) lists (at least 39 training
    rows per list, faiss's minimum) trained on 40 rows per list, nprobe 8 (the k-NN layer
    doubles it until a measured recall target is met); HNSW M = 32, efSearch max(128, 2k)."""
    if method == "faiss-hnsw":
        return {"index": "HNSWFlat", "M": 32, "efSearch": max(128, 2 * k)}
    nlist = max(1, min(n // 39, int(4 * np.sqrt(n))))
    return {
        "index": f"IVF{nlist},SQfp16",
        "nlist": nlist,
        "nprobe": min(nlist, 8),
        "train_rows": min(n, 40 * nlist),
    }


def _faiss_index_search(
    q: np.ndarray, x_src: PairSource, k: int, exclude: np.ndarray | None, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate search through an IVF or HNSW index built over the whole database."""
    faiss = _faiss()
    n, d = x_src.n, x_src.d_a
    params = faiss_index_params(method, n, k)
    if method == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(d, params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = params["efSearch"]
    else:
        index = faiss.index_factory(d, params["index"], faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, size=params["train_rows"], replace=False)
        index.train(x_src.packed(np.sort(sample))[0])
        index.nprobe = params["nprobe"]
    index = _on_gpus(faiss, index, k)
    for start in range(0, n, DATABASE_CHUNK):
        index.add(x_src.packed(np.arange(start, min(n, start + DATABASE_CHUNK)))[0])
        x_src.release()
    return _search_index(index, q, k, 0, exclude, n)


def _faiss_search(
    q: np.ndarray, x: np.ndarray, k: int, offset: int, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    index = _on_gpus(faiss, faiss.IndexFlatIP(x.shape[1]), k)
    index.add(x)
    return _search_index(index, q, k, offset, exclude, x.shape[0])


def _search_index(
    index: object, q: np.ndarray, k: int, offset: int, exclude: np.ndarray | None, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Search a FAISS index for k (+1 when a self-match must be dropped) and drop exclusions
    by index."""
    extra = 1 if exclude is not None else 0
    kk = min(k + extra, n)
    v, i = index.search(q, kk)  # type: ignore[attr-defined]
    i = np.where(i >= 0, i + offset, -1)
    if exclude is not None:
        hit = i == exclude[:, None]
        v = np.where(hit, -np.inf, v)
        i = np.where(hit, -1, i)
        order = np.lexsort((np.where(i < 0, np.iinfo(np.int64).max, i), -v), axis=1)
        v = np.take_along_axis(v, order, axis=1)
        i = np.take_along_axis(i, order, axis=1)
    pad = k - v.shape[1]
    if pad > 0:
        v = np.pad(v, ((0, 0), (0, pad)), constant_values=-np.inf)
        i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
    return v[:, :k].astype(np.float32), i[:, :k].astype(np.int64)
