"""Writing per-sample AD terms to .npy or .parquet."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from alignscope._files import atomic_path
from alignscope.metrics.result import PerSample

PER_SAMPLE_SUFFIXES = (".npy", ".parquet")


def check_per_sample_path(path: str | os.PathLike[str]) -> Path:
    """Validate an output path before any work is done."""
    out = Path(path)
    if out.suffix not in PER_SAMPLE_SUFFIXES:
        raise ValueError(
            f"per-sample output {str(out)!r} must end in .npy or .parquet; got {out.suffix!r}"
        )
    if not out.parent.exists():
        raise FileNotFoundError(f"per-sample output directory {str(out.parent)!r} does not exist")
    if out.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                "writing .parquet needs pyarrow: pip install 'alignscope[io]', or write .npy"
            ) from exc
    return out


def write_per_sample(samples: PerSample, path: str | os.PathLike[str]) -> Path:
    """Write columns row, d_ab, d_s, ad (and d_s_se for landmark estimates), one row per
    pair, atomically. .npy gets a structured array with those fields; .parquet a table."""
    out = check_per_sample_path(path)
    n = samples.d_s.shape[0]
    columns = {"row": np.arange(n), "d_ab": samples.d_ab, "d_s": samples.d_s, "ad": samples.ad}
    if samples.d_s_se is not None:
        columns["d_s_se"] = samples.d_s_se
    with atomic_path(out) as tmp:
        if out.suffix == ".npy":
            table = np.empty(n, dtype=[(k, "<i8" if k == "row" else "<f8") for k in columns])
            for key, values in columns.items():
                table[key] = values
            with open(tmp, "wb") as fh:
                np.save(fh, table, allow_pickle=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(columns), tmp)
    return out
