"""Screening scores into the datasets that curators train from.

:func:`to_hf_dataset` joins ``scores.parquet`` to a Hugging Face dataset saved with
``save_to_disk`` (the one the screened store was embedded from) and saves the result with
``save_to_disk``, so that a training pipeline filters on the scores directly::

    ds = datasets.load_from_disk(OUT)
    train = ds.filter(lambda r: not r["removed"])  # exactly the rows of keep.txt

The join is by the dataset's row numbers: ``alignscope embed`` names the rows of a saved
dataset by their index ("0", "1", ...), and those names are the ``id`` column of
``scores.parquet``. Rows that the screening never saw (images that could not be decoded when
the store was embedded) have ``screened`` False, no scores, and ``removed`` True: keep.txt does
not list them.

A join by row number is right only for the dataset the store was embedded from, as it was
then. Given the store, :func:`check_screened_dataset` compares the two with what the store
recorded at embedding time: the row count (the store's rows plus the records its
``embed_report.json`` lists as skipped) and the captions of up to :data:`SAMPLE_ROWS` rows
spread evenly over the store (``alignscope embed`` keeps each row's caption in its metadata).
That costs a thousand reads at any scale and catches another dataset, a filtered or extended
one, and a range of rows replaced. A shuffled or re-sorted one is caught only where the order
change puts another caption at a sampled row: where captions repeat (a class-labelled set,
"A photo of a cat" for thousands of rows) rows moved among equal captions are not seen, a set
sorted by class and re-sorted within each class passes, and with one caption for every row no
reordering is seen. Nor does it see images changed under unchanged captions, or edits to rows
between the sampled ones. (``datasets``' own fingerprint is not used: it changes with any
transform, adding an unrelated column included, and a dataset built anew gets a new one even
with the same rows.)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# scores.parquet columns that name the row rather than score it
_KEYS = ("row", "id")
_ROW_NUMBER = re.compile(r"0|[1-9][0-9]*")
# rows whose captions check_screened_dataset compares: spread over the whole store, enough to
# catch a replaced range, or a shuffle of mostly distinct captions, without reading every row
SAMPLE_ROWS = 1000


def check_dataset(dataset_dir: str | os.PathLike[str]) -> None:
    """Refuse, before any screening, a dataset the export could not read: ``datasets`` not
    installed, not a dataset saved with ``save_to_disk``, or one whose files point outside its
    folder. Raises ValueError or FileNotFoundError."""
    _datasets()
    from alignscope.io.datasets import open_dataset

    # open_dataset refuses a state.json naming data files outside the folder before loading
    opened = open_dataset(dataset_dir)
    if opened.kind != "huggingface":
        raise ValueError(
            f"{str(dataset_dir)!r} is a {opened.kind} dataset; the export needs a Hugging Face "
            "dataset saved with save_to_disk (a folder with state.json)"
        )


def check_out(dataset_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Refuse an ``out`` that is already there (nothing is overwritten) or inside the
    dataset. Raises ValueError."""
    target = Path(out)
    if target.exists():
        raise ValueError(f"{str(target)!r} already exists; give a new folder to save into")
    if Path(dataset_dir).resolve() in (target.resolve(), *target.resolve().parents):
        raise ValueError(f"{str(target)!r} is inside the dataset; give a folder outside it")


def check_screened_dataset(
    dataset_dir: str | os.PathLike[str], store: str | os.PathLike[str]
) -> None:
    """Refuse a saved dataset that is not, row for row, the one ``store`` (a folder written by
    ``alignscope embed``) was embedded from: another row count than the store's rows plus the
    records its ``embed_report.json`` lists as skipped, or a sampled row (up to
    :data:`SAMPLE_ROWS`, spread evenly over the store) whose caption is not the one the store
    recorded for it. What the store did not record (no report, no captions) is not compared.
    Rows reordered among equal captions are not seen (see the module's notes). Raises
    ValueError naming the dataset, the store and the first difference."""
    import json

    from alignscope.io import read_metadata_column, store_row_ids
    from alignscope.io.datasets import clean_caption, hf_caption_column

    data = _datasets().load_from_disk(str(dataset_dir))
    n, root = len(data), Path(store)
    ids = store_row_ids(root) or []
    again = "give the saved dataset the store was embedded from, or embed this one again"
    try:
        skipped = json.loads((root / "embed_report.json").read_text()).get("skipped")
    except (OSError, ValueError, AttributeError):
        skipped = None
    if isinstance(skipped, list) and len(ids) + len(skipped) != n:
        raise ValueError(
            f"{str(dataset_dir)!r} has {n:,} rows, but the store {str(root)!r} was embedded "
            f"from {len(ids) + len(skipped):,} ({len(ids):,} embedded, {len(skipped):,} "
            f"skipped): the dataset changed since; {again}"
        )
    captions = read_metadata_column(root, "caption")
    # the caption column as `alignscope embed` read it (io.datasets.HFDiskDataset)
    column = hf_caption_column(data.column_names)
    if not ids or captions is None or len(captions) != len(ids) or column is None:
        return
    picks = np.unique(np.linspace(0, len(ids) - 1, min(SAMPLE_ROWS, len(ids))).astype(np.int64))
    pairs = [(int(ids[i]), captions[i]) for i in picks if _ROW_NUMBER.fullmatch(ids[i])]
    pairs = [(row, caption) for row, caption in pairs if row < n]  # others: _row_numbers says
    found = data.select_columns([column]).select([row for row, _ in pairs])[column]
    for (row, want), value in zip(pairs, found, strict=True):
        if clean_caption(value) != want:
            raise ValueError(
                f"{str(dataset_dir)!r}: row {row} has the caption {_clip(clean_caption(value))}, "
                f"but the store {str(root)!r} was embedded from a row {row} captioned "
                f"{_clip(want)}: the dataset changed since; {again}"
            )


def _clip(text: str, limit: int = 60) -> str:
    """``text`` quoted for a one-line message, cut at ``limit`` characters."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def to_hf_dataset(
    dataset_dir: str | os.PathLike[str],
    scores_parquet: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    store: str | os.PathLike[str] | None = None,
    prefix: str = "",
    progress: bool = False,
) -> dict[str, int]:
    """Save the dataset at ``dataset_dir`` with the screening's columns added, to ``out``.

    Parameters
    ----------
    dataset_dir : a Hugging Face dataset saved with ``save_to_disk`` (one split), the one the
        screened store was embedded from.
    scores_parquet : the ``scores.parquet`` of ``alignscope screen``.
    out : a new folder; the dataset is saved there with ``save_to_disk``.
    store : the screened store. Given, the dataset must be the one it was embedded from, row
        for row (:func:`check_screened_dataset`); without it only the ids are checked (each a
        row number of the dataset, once).
    prefix : put before each added column's name (when the dataset has such columns).
    progress : show ``datasets``' progress bars.

    Returns
    -------
    {"rows": rows of the dataset, "screened": rows with scores, "kept": rows not removed}.

    The added columns, one value per row of the dataset in its order: each score (float64),
    ``rank`` (1 = most suspicious, int64), ``removed`` (bool), ``poisoned`` (bool, when the
    screening had ground truth) and ``screened`` (bool). A row without scores has nulls there,
    ``removed`` True and ``screened`` False.
    """
    datasets = _datasets()
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_dataset(dataset_dir)
    check_out(dataset_dir, out)
    data = datasets.load_from_disk(str(dataset_dir))
    n = len(data)
    path = Path(scores_parquet)
    if not path.is_file():
        raise FileNotFoundError(f"scores {str(path)!r} does not exist")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = [c for c in ("id", "removed") if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{path}: no {missing[0]!r} column; expected the scores.parquet of alignscope screen"
        )
    rows = _row_numbers(table.column("id").to_pylist(), n, path, Path(dataset_dir))
    if store is not None:
        check_screened_dataset(dataset_dir, store)
    screened = np.zeros(n, dtype=bool)
    screened[rows] = True
    added: dict[str, Any] = {}
    for name in table.column_names:
        if name in _KEYS:
            continue
        values = table.column(name).to_numpy(zero_copy_only=False)
        if name == "removed":
            full = np.ones(n, dtype=bool)  # keep.txt lists only screened rows
            full[rows] = values.astype(bool)
            added[name] = full
            continue
        full = np.zeros(n, dtype=values.dtype)
        full[rows] = values
        added[name] = pa.array(full, mask=~screened)  # nulls where no score was computed
    added["screened"] = screened
    clashes = [prefix + k for k in added if prefix + k in data.column_names]
    if clashes:
        raise ValueError(
            f"{dataset_dir}: the dataset already has a column {clashes[0]!r}; pass a prefix "
            "(to_hf_dataset(..., prefix='alignscope_'), screen --hf-prefix) or rename it"
        )
    for name, column in added.items():
        data = data.add_column(prefix + name, column)
    _save(data, Path(out), progress)
    return {"rows": n, "screened": int(rows.size), "kept": int(np.sum(~added["removed"]))}


def _row_numbers(ids: list[Any], n: int, path: Path, dataset: Path) -> np.ndarray:
    """The dataset row of each scores row: its id is the row number ("0".."n-1")."""
    for value in ids:
        if not (isinstance(value, str) and _ROW_NUMBER.fullmatch(value) and int(value) < n):
            raise ValueError(
                f"{path}: id {value!r} is not a row number of {str(dataset)!r} (0..{n - 1}); "
                "the screened store was not embedded from this saved dataset"
            )
    rows = np.asarray([int(v) for v in ids], dtype=np.int64)
    counts = np.bincount(rows, minlength=n)
    if rows.size and counts.max() > 1:
        raise ValueError(f"{path}: id {str(int(np.argmax(counts)))!r} appears more than once")
    return rows


def _save(data: Any, out: Path, progress: bool) -> None:
    """save_to_disk into a temporary sibling, renamed to ``out`` when complete: an
    interrupted export leaves no half-written dataset under the name a pipeline reads."""
    import datasets

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent))
    silence = not progress and not datasets.are_progress_bars_disabled()
    try:
        if silence:  # for this save only: the caller's own setting is left as it was
            datasets.disable_progress_bars()
        data.save_to_disk(str(stage))
        os.replace(stage, out)
    finally:
        if silence:
            datasets.enable_progress_bars()
        shutil.rmtree(stage, ignore_errors=True)


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ValueError(
            "the Hugging Face export needs datasets: pip install 'alignscope[datasets]'"
        ) from exc
    return datasets
