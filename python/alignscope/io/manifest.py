"""The poison manifest, ``poison_manifest.parquet``: one row per record of a poisoned dataset
(``alignscope poison`` writes it beside the dataset). One writer, one reader, one set of checks:
every consumer (screening's ground truth, evaluation's poisoned prompts and p_t) reads it here.

Columns and their types: ``row`` (integer, the record's position), ``id`` and ``written_as``
(strings), ``poisoned`` (boolean), ``method``, ``source_concept``, ``target_concept`` and
``params`` (strings), ``linf``, ``l2``, ``psnr``, ``latent_before``, ``latent_after`` (floats).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path

MANIFEST_NAME = "poison_manifest.parquet"
COLUMNS = (
    "row",
    "id",
    "written_as",
    "poisoned",
    "method",
    "source_concept",
    "target_concept",
    "params",
    "linf",
    "l2",
    "psnr",
    "latent_before",
    "latent_after",
)
# The kind each checked column must have: a "false" string must never read as True.
_KINDS = {
    "row": "integer",
    "poisoned": "boolean",
    "id": "string",
    "written_as": "string",
    "method": "string",
    "source_concept": "string",
    "target_concept": "string",
}


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError("the poison manifest is parquet: pip install 'alignscope[io]'") from exc
    return pa, pq


def write_manifest(path: str | Path, columns: dict[str, list[Any]]) -> None:
    """Write ``columns`` (the names of :data:`COLUMNS`, equal lengths) atomically."""
    pa, pq = _pyarrow()
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown manifest columns {sorted(unknown)}")
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)


def read_manifest(path: str | Path, need: Iterable[str]) -> dict[str, list[Any]]:
    """The columns ``need`` of a manifest, type-checked.

    Raises
    ------
    ValueError : unreadable file, a missing column, or a column of the wrong type (a
        ``poisoned`` column of strings, a ``row`` column of floats), naming the file.
    """
    pa, pq = _pyarrow()
    p = Path(path)
    need = list(need)
    try:
        schema = pq.read_schema(p)
    except Exception as exc:  # pyarrow raises several kinds for a file that is not parquet
        raise ValueError(f"{p}: not a readable poison manifest ({type(exc).__name__})") from exc
    missing = [c for c in need if c not in schema.names]
    if missing:
        wanted = " and ".join(repr(c) for c in need)
        raise ValueError(
            f"{p}: not a poison manifest with {wanted} columns (missing {', '.join(missing)})"
        )
    checks = {
        "integer": pa.types.is_integer,
        "boolean": pa.types.is_boolean,
        "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    }
    for name in need:
        kind = _KINDS.get(name)
        if kind is not None and not checks[kind](schema.field(name).type):
            raise ValueError(
                f"{p}: manifest column {name!r} must be {kind}, got {schema.field(name).type}"
            )
    table = pq.read_table(p, columns=need).to_pydict()
    for name in need:
        if _KINDS.get(name) in ("integer", "boolean") and any(v is None for v in table[name]):
            raise ValueError(f"{p}: manifest column {name!r} has missing values")
    return table


def poison_flags(path: str | Path, n: int) -> np.ndarray:
    """(n,) bool flags of the rows a manifest marks poisoned (rows it does not list: False)."""
    table = read_manifest(path, ("row", "poisoned"))
    flags = np.zeros(n, dtype=bool)
    rows = np.asarray(table["row"], dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(
            f"{path}: manifest rows must be in [0, {n}); got {rows.min()}..{rows.max()}"
        )
    if np.unique(rows).size != rows.size:
        raise ValueError(f"{path}: manifest lists a row twice")
    flags[rows] = np.asarray(table["poisoned"], dtype=bool)
    return flags
