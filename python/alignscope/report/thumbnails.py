"""Thumbnails of store rows, found through the dataset an ``alignscope embed`` run recorded.

A store written by ``alignscope embed`` has ``embed_report.json`` (which dataset, which
format) and per-row ids in ``metadata/``. The thumbnails are PNG data URIs generated here, so
a report never links to a data-derived path or URL.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np

THUMBNAIL_PIXELS = 128


def metadata_column(store_root: Path, name: str) -> list[str] | None:
    """One metadata column of every row in order (as strings), from the store's metadata
    shards; None when the store has no metadata, no such column, or no pyarrow."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    meta = store_root / "metadata"
    if not meta.is_dir():
        return None
    shards = sorted(meta.glob("metadata_*.parquet"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    values: list[str] = []
    for path in shards:
        if name not in pq.read_schema(path).names:
            return None
        values.extend(str(v) for v in pq.read_table(path, columns=[name]).column(name).to_pylist())
    return values


def row_ids(store_root: Path) -> list[str] | None:
    """Ids of all rows in order, from the store's metadata shards, or None."""
    return metadata_column(store_root, "id")


def thumbnails(store_root: str | Path, rows: np.ndarray) -> dict[int, str]:
    """{row: data URI} for the requested rows whose images can be found; {} if none can."""
    root = Path(store_root)
    report = root / "embed_report.json"
    if not root.is_dir() or not report.exists():
        return {}
    info = json.loads(report.read_text())
    ids = row_ids(root)
    source = info.get("dataset")
    if not ids or not source or not Path(source).exists():
        return {}
    from alignscope.io.datasets import BadImage, open_dataset

    wanted = {ids[r]: int(r) for r in np.unique(rows) if 0 <= r < len(ids)}
    found: dict[int, str] = {}
    for record in open_dataset(source):
        row = wanted.pop(record.id, None)
        if row is None:
            continue
        try:
            image = record.load()
        except BadImage:
            continue
        image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        found[row] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        if not wanted:
            break
    return found
