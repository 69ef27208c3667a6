"""The k-NN layer's query spans searched as Ray tasks (``alignscope screen --ray``).

:class:`RaySpanRunner` is a :data:`alignscope.search.knn.SpanRunner`: each span not yet in the
search's checkpoint becomes one task that runs :func:`alignscope.search.knn.search_span`, the
function the single-process search runs, on the same rows and the same index, so every span's
neighbours are the ones the single-process search finds. Tasks read their rows from the store
on disk (each worker opens it by path, so its files must be on a filesystem all nodes see); a
view held in memory (screening's second view) is put in the object store once. The index the
driver built is serialised once and put in the object store (one copy per node); each worker
process deserialises it once and keeps it for the rest of the search. The exact method has no
index: each task searches its queries against the whole store.

Spans come back in the order they finish, and the search saves each as it arrives, so a run
stopped part-way resumes with only the missing spans. A failed task is retried by Ray, as the
tasks of ``ad --ray`` are.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from alignscope.search.knn import index_on_cpu, search_span
from alignscope.search.rows import Rows

# What a worker process keeps between tasks, one entry per kind ("rows", "index"): the key it
# was made for and the object. A search's tasks all use the same rows and index, and a new
# search replaces them, so a long-lived worker holds at most one of each.
_WORKER_CACHE: dict[str, tuple[str, Any]] = {}


def _cached(kind: str, key: str, make: Any) -> Any:
    held = _WORKER_CACHE.get(kind)
    if held is not None and held[0] == key:
        return held[1]
    _WORKER_CACHE.pop(kind, None)  # drop the old one before making the new (memory)
    value = make()
    _WORKER_CACHE[kind] = (key, value)
    return value


def _worker_rows(source: dict[str, Any]) -> Rows:
    """The Rows a task searches: the store reopened by path, or the array put by the driver."""

    def make() -> Rows:
        if source["store"] is not None:
            from alignscope.io import open_store

            return Rows(open_store(**source["store"]), view=source["view"], name=source["name"])
        import ray

        return Rows(ray.get(source["array"][0]), view=source["view"], name=source["name"])

    return _cached("rows", source["key"], make)


def _worker_index(boxed: list[Any]) -> Any:
    """The driver's index, deserialised once per worker process (keyed by its object)."""

    def make() -> Any:
        import ray

        from alignscope.search.exact import _faiss

        return _faiss().deserialize_index(ray.get(boxed[0]))  # type: ignore[attr-defined]

    return _cached("index", boxed[0].hex(), make)


def search_task(
    source: dict[str, Any], index: list[Any] | None, start: int, stop: int, k: int
) -> tuple[int, tuple[np.ndarray, np.ndarray, int]]:
    """One span's neighbours in a worker: ``search_span`` on the rows ``source`` names and the
    driver's index (``index``: [object ref], boxed so that Ray passes the reference rather
    than the bytes and a worker fetches them once; None: the exact search)."""
    rows = _worker_rows(source)
    try:
        return start, search_span(
            rows, None if index is None else _worker_index(index), start, stop, k
        )
    finally:
        rows.release()  # the page cache keeps the store's pages; this process need not


class RaySpanRunner:
    """Search query spans as Ray tasks (a :data:`alignscope.search.knn.SpanRunner`).

    Parameters
    ----------
    address : a Ray cluster's address; None starts a local instance (unless this process
        already runs Ray: then that one is used).
    workers : spans searched at once: the CPUs of a local instance started here, and the
        tasks in flight at any time; None: every CPU Ray has.
    """

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray  # noqa: F401  (checked before any work; the runner imports it below)
        except ImportError as exc:
            raise ValueError(
                "the Ray backend needs: pip install 'alignscope[distributed]'"
            ) from exc
        if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
            raise ValueError(f"workers must be a positive number of tasks, got {workers!r}")
        self.address = address
        self.workers = None if workers is None else int(workers)

    def __call__(
        self, rows: Rows, index: Any, spans: list[tuple[int, int]], k: int
    ) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray, int]]]:
        # checked here, not in the generator: the error comes when the search starts
        if rows.store is not None and rows.store.reopen_args is None:
            raise ValueError(
                f"the Ray backend reads rows in its workers, and {rows.name!r} was not opened "
                "from files: open the store with alignscope.io.open_store (or write arrays "
                "with write_store first)"
            )
        return self._run(rows, index, spans, k)

    def _run(
        self, rows: Rows, index: Any, spans: list[tuple[int, int]], k: int
    ) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray, int]]]:
        if not spans:  # a resumed search with every span saved needs no Ray at all
            return
        import ray

        if not ray.is_initialized():
            ray.init(
                # "local": a new instance of `workers` CPUs, never a `ray start` cluster that
                # happens to run on this machine (joining it could not honour num_cpus)
                address=self.address if self.address is not None else "local",
                num_cpus=self.workers if self.address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
        source: dict[str, Any] = {"view": rows.view, "name": rows.name, "store": None}
        if rows.store is not None:
            source["store"] = rows.store.reopen_args
            # a new key per search: a worker never reuses a store opened for an earlier one
            # (its files may have been rewritten since)
            source["key"] = uuid.uuid4().hex
        else:
            ref = ray.put(np.ascontiguousarray(rows.array))
            source["array"] = [ref]  # boxed: fetched once per worker, not shipped per task
            source["key"] = ref.hex()
        boxed = None if index is None else [ray.put(_serialise(index))]
        # search_task is looked up at call time, so tests can wrap it (failure injection)
        remote = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=True)(
            globals()["search_task"]
        )
        todo = iter(spans)
        # with a cluster's address, `workers` bounds the tasks in flight (a local instance
        # started here has only that many CPUs anyway)
        limit = self.workers or len(spans)
        pending: list[Any] = []
        try:
            while True:
                for start, stop in todo:
                    pending.append(remote.remote(source, boxed, start, stop, k))
                    if len(pending) >= limit:
                        break
                if not pending:
                    break
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        finally:
            for ref in pending:  # stopped part-way (an error, Ctrl-C): the rest is not wanted
                ray.cancel(ref)


def _serialise(index: Any) -> np.ndarray:
    """The index as uint8 bytes (a GPU index is copied to the CPU first: workers search on
    their CPUs)."""
    from alignscope.search.exact import _faiss

    faiss = _faiss()
    cpu = index_on_cpu(index)
    return faiss.serialize_index(cpu)  # type: ignore[attr-defined]
