"""Thumbnails of store rows, from the dataset the user names.

A store written by ``alignscope embed`` has ``embed_report.json`` (which dataset) and per-row
ids in ``metadata/``. Pictures are read only from a dataset the user passed explicitly *and*
that the store's own report names: a path read out of a downloaded store is never opened (it
could point at any folder of the victim's). The thumbnails are PNG data URIs generated here, so
a report never links to a data-derived path or URL.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np

from alignscope.io.store import store_row_ids

THUMBNAIL_PIXELS = 128


def embedded_from(store_root: str | Path) -> str | None:
    """The dataset path a store's ``embed_report.json`` names, or None."""
    report = Path(store_root) / "embed_report.json"
    try:
        source = json.loads(report.read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, str) else None


def thumbnails(
    store_root: str | Path, rows: np.ndarray, dataset: str | Path | None
) -> dict[int, str]:
    """{row: data URI} for the requested rows whose images can be found in ``dataset``; {}
    when no dataset is given, or when it is not the one the store was embedded from."""
    root = Path(store_root)
    if dataset is None or not root.is_dir():
        return {}
    source = embedded_from(root)
    if source is None or Path(source).resolve() != Path(dataset).resolve():
        return {}
    ids = store_row_ids(root)
    if not ids or not Path(source).exists():
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
