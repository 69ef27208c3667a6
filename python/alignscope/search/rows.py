"""One view's (N, d) embeddings read by span or by row id, wherever they live: an in-memory
array, or one view of an :class:`alignscope.io.EmbeddingStore` that is never loaded whole.

Screening and the k-NN layer read every view through :class:`Rows`, so the same code scores an
array of 1,000 rows and a memory-mapped store of millions with memory O(chunk d) for the
vectors: a store's rows are read a span at a time (and the mapped pages released after it) or
gathered by id with pread, never copied into one (N, d) array.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from alignscope.metrics import as_matrix

# Rows per span when a whole view is scanned: the working set stays near span * d * 8 bytes.
SPAN_ROWS = 65_536


class Rows:
    """(N, d) rows of one view.

    Parameters
    ----------
    data : (N, d) float array (numpy, memory-mapped, CPU torch), an EmbeddingStore, or Rows.
    view : for a store, which of its views ("image", "text", "sscd", "vae", ...).
    name : how errors name the view.

    ``read`` and ``gather`` return rows in the stored dtype (float16/32/64), not normalised:
    callers normalise what they read in their own precision.
    """

    def __init__(self, data: Any, view: str = "image", name: str | None = None) -> None:
        from alignscope.io.store import EmbeddingStore

        if isinstance(data, Rows):
            self.__dict__.update(data.__dict__)
            return
        self.store: EmbeddingStore | None = None
        self.array: np.ndarray | None = None
        if isinstance(data, EmbeddingStore):
            self.store = data
            self.view = view
            self.name = name or f"{data.source} {view}"
            self.n, self.d = int(data.n), int(data.dim(view))
        else:
            self.array = as_matrix(data, name or view)
            self.view = view
            self.name = name or view
            self.n, self.d = (int(s) for s in self.array.shape)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.d)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1, (stop - start, d), stored dtype."""
        if self.store is not None:
            return self.store.read(start, stop, self.view)
        return np.asarray(self.array[start:stop])  # type: ignore[index]

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (any shape of int indices, repeats allowed), (*ids.shape, d), stored
        dtype; a store reads only the pages that hold them."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.store is not None:
            flat = self.store.gather(ids.reshape(-1), self.view)
        else:
            flat = np.asarray(self.array[ids.reshape(-1)])  # type: ignore[index]
        return flat.reshape(*ids.shape, self.d)

    def spans(self, rows: int = SPAN_ROWS) -> Iterator[tuple[int, int]]:
        """(start, stop) spans covering all rows in order."""
        for start in range(0, self.n, rows):
            yield start, min(self.n, start + rows)

    def release(self) -> None:
        """Drop a store's mapped pages (the OS page cache keeps them)."""
        if self.store is not None:
            self.store.release()

    def searchable(self) -> tuple[Any, str | None]:
        """What :func:`alignscope.search.topk` takes as a database for these rows: the array,
        or the store and its view (streamed in chunks)."""
        if self.store is not None:
            return self.store, self.view
        return self.array, None

    def whole(self) -> np.ndarray:
        """All rows as one array (a store's view is read whole: O(N d) memory)."""
        return self.read(0, self.n)


def as_rows(data: Any, name: str, view: str = "image") -> Rows:
    """``data`` as :class:`Rows` (Rows pass through)."""
    return data if isinstance(data, Rows) else Rows(data, view=view, name=name)
