"""Writing the clip-retrieval layout shard by shard, each file atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path
from alignscope.io.store import VIEW_FOLDERS, shard_file


class StoreWriter:
    """Appends shards ``img_emb/img_emb_<i>.npy``, ``text_emb/text_emb_<i>.npy`` and
    ``metadata/metadata_<i>.parquet`` to a directory.

    Each file is written under a temporary name and renamed, so a crash leaves whole shards
    only; ``existing_shards`` tells a resumed job which shards are done.
    """

    def __init__(self, path: str | os.PathLike[str], dtype: Any = np.float16) -> None:
        self.root = Path(path)
        self.dtype = np.dtype(dtype)
        if self.dtype.type not in (np.float16, np.float32):
            raise ValueError(f"dtype must be float16 or float32, got {self.dtype}")
        self.root.mkdir(parents=True, exist_ok=True)
        self.next_index = max(self.existing_shards(), default=-1) + 1

    def existing_shards(self) -> list[int]:
        found = set()
        for folder in VIEW_FOLDERS.values():
            for p in (self.root / folder).glob(f"{folder}_*.npy"):
                tail = p.stem.rsplit("_", 1)[1]
                if tail.isdigit():
                    found.add(int(tail))
        return sorted(found)

    def add_shard(
        self,
        image_emb: np.ndarray,
        text_emb: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Write one shard (rows must match across views); returns its index."""
        image_emb = np.asarray(image_emb)
        if image_emb.ndim != 2 or image_emb.shape[0] == 0:
            raise ValueError(
                f"image_emb must be a non-empty (rows, d) array; got {image_emb.shape}"
            )
        if text_emb is not None and np.shape(text_emb)[0] != image_emb.shape[0]:
            raise ValueError(
                f"text_emb has {np.shape(text_emb)[0]} rows but image_emb has {image_emb.shape[0]}"
            )
        i = self.next_index
        for view, arr in (("image", image_emb), ("text", text_emb)):
            if arr is None:
                continue
            self._write_npy(self.root / shard_file(view, i), np.asarray(arr))
        if metadata is not None:
            self._write_metadata(i, metadata, image_emb.shape[0])
        self.next_index += 1
        return i

    def write_shard(self, i: int, views: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
        """Write shard ``i`` of any views (names of :data:`alignscope.io.store.VIEWS`),
        metadata last: a shard whose metadata exists is complete (the resume rule of
        ``alignscope embed``)."""
        rows = {v.shape[0] for v in views.values()}
        if len(rows) != 1:
            raise ValueError(f"views of shard {i} differ in rows: {sorted(rows)}")
        for view, arr in views.items():
            self._write_npy(self.root / shard_file(view, i), arr)
        self._write_metadata(i, metadata, rows.pop())
        self.next_index = max(self.next_index, i + 1)

    def _write_npy(self, path: Path, arr: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr.astype(self.dtype, copy=False), allow_pickle=False)

    def _write_metadata(self, i: int, metadata: dict[str, Any], rows: int) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ValueError(
                "writing metadata needs pyarrow: pip install 'alignscope[io]'"
            ) from exc
        table = pa.table(metadata)
        if table.num_rows != rows:
            raise ValueError(f"metadata has {table.num_rows} rows but the shard has {rows}")
        (self.root / "metadata").mkdir(exist_ok=True)
        with atomic_path(self.root / "metadata" / f"metadata_{i}.parquet") as tmp:
            pq.write_table(table, tmp)


def write_store(
    path: str | os.PathLike[str],
    image_emb: np.ndarray,
    text_emb: np.ndarray | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    shard_rows: int = 1_000_000,
    dtype: Any = np.float16,
) -> Path:
    """Write arrays as a clip-retrieval store of ``shard_rows`` rows per shard.

    Parameters
    ----------
    image_emb : (N, d_a) array; text_emb : (N, d_b) array or None.
    metadata : dict of N-long columns (written as metadata_<i>.parquet), or None.
    dtype : float16 (LAION's choice) or float32.
    """
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    writer = StoreWriter(path, dtype)
    if writer.existing_shards():
        raise ValueError(f"{str(path)!r} already holds shards; write into an empty directory")
    n = np.shape(image_emb)[0]
    for start in range(0, n, shard_rows):
        stop = min(n, start + shard_rows)
        meta = (
            None
            if metadata is None
            else {k: np.asarray(v)[start:stop] for k, v in metadata.items()}
        )
        writer.add_shard(
            image_emb[start:stop], None if text_emb is None else text_emb[start:stop], meta
        )
    return Path(path)
