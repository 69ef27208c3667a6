"""Rows of the two views, wherever they live (arrays or an EmbeddingStore), validated and
unit-normalised on the way out in the packed float32 layout the engine reads."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from alignscope import _backend
from alignscope.metrics._inputs import PROBLEMS

# Rows per chunk when a whole view is scanned (feature term, landmarks): the float32 working
# set stays near chunk * (d_a + d_b) * 4 bytes.
SCAN_ROWS = 16384


class PairSource:
    """N pairs read by row id.

    Parameters
    ----------
    image, text : (N, d) arrays (numpy or memory-mapped), or None with ``store``.
    store : an :class:`alignscope.io.EmbeddingStore` instead of arrays.
    names : how errors name the views ("image_emb", "text_emb", or the store's).
    """

    def __init__(
        self,
        image: np.ndarray | None = None,
        text: np.ndarray | None = None,
        *,
        store: object = None,
        use_text: bool = True,
        names: tuple[str, str] = ("image_emb", "text_emb"),
        threads: int | None = None,
        store_view: str = "image",
    ) -> None:
        self._image = image
        self._text = text if use_text else None
        self._store = store
        self.names = names
        self.threads = threads
        self.store_view = store_view
        if store is not None:
            self.n = store.n  # type: ignore[attr-defined]
            self.d_a = store.dim(store_view)  # type: ignore[attr-defined]
            self.d_b = (store.d_text or 0) if use_text else 0  # type: ignore[attr-defined]
            self.has_text = use_text and store.has_text  # type: ignore[attr-defined]
        else:
            assert image is not None
            self.n, self.d_a = image.shape
            self.has_text = self._text is not None
            self.d_b = 0 if self._text is None else self._text.shape[1]
        self.with_cos = self.has_text and self.d_a == self.d_b

    @property
    def width(self) -> int:
        return self.d_a + self.d_b

    def _rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self._store is not None:
            img = self._store.gather(ids, self.store_view)  # type: ignore[attr-defined]
            txt = self._store.gather(ids, "text") if self.has_text else None  # type: ignore[attr-defined]
            return img, txt
        img = self._image[ids]  # type: ignore[index]
        return img, (None if self._text is None else self._text[ids])

    def _span(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self._store is not None:
            img = self._store.read(start, stop, self.store_view)  # type: ignore[attr-defined]
            txt = self._store.read(start, stop, "text") if self.has_text else None  # type: ignore[attr-defined]
            return img, txt
        img = self._image[start:stop]  # type: ignore[index]
        return img, (None if self._text is None else self._text[start:stop])

    def _pack(
        self, img: np.ndarray, txt: np.ndarray | None, row_of: np.ndarray | int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        packed = np.empty((img.shape[0], self.width), dtype=np.float32)
        problem, view, row, cos = _backend.pack_unit_rows(
            img, txt, packed, with_cos=self.with_cos, threads=self.threads
        )
        if problem:
            global_row = int(row_of[row]) if isinstance(row_of, np.ndarray) else row_of + row
            raise ValueError(PROBLEMS[problem].format(name=self.names[view], row=global_row))
        return packed, cos

    def packed(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Unit rows [a_i, b_i] for ``ids`` as (len(ids), d_a + d_b) float32, and cos(a_i, b_i)
        (float64) when the dimensions match."""
        img, txt = self._rows(ids)
        return self._pack(img, txt, ids)

    def chunks(self, rows: int = SCAN_ROWS) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(start, packed rows, cos) over the whole source in order; a store's mapped pages
        are released after each chunk."""
        for start in range(0, self.n, rows):
            stop = min(self.n, start + rows)
            img, txt = self._span(start, stop)
            packed, cos = self._pack(img, txt, start)
            if self._store is not None:
                self._store.release()  # type: ignore[attr-defined]
            yield start, packed, cos

    def release(self) -> None:
        if self._store is not None:
            self._store.release()  # type: ignore[attr-defined]
