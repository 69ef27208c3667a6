"""Reading embedding stores lazily.

A store is N row-aligned image embeddings, optionally text embeddings and integer labels.
Shards are memory-mapped for sequential reads, and :meth:`release` drops the mapped pages from
this process's resident set, so scanning a store larger than memory keeps the footprint at one
chunk. Random gathers read just the rows asked for with pread, without mapping anything.
"""

from __future__ import annotations

import itertools
import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignscope import _backend

SUPPORTED_DTYPES = (np.float16, np.float32, np.float64)
# The one owner of the views a store may hold and their folders (shard i of a view is
# ``<folder>/<folder>_<i>.npy``): the reader here and the writer (io/write.py) both use it.
VIEW_FOLDERS = {
    "image": "img_emb",  # CLIP image embeddings
    "text": "text_emb",  # CLIP text embeddings
    "sscd": "sscd_emb",  # SSCD copy-detection descriptors
    "vae": "vae_emb",  # pooled VAE latent means (embed --vae)
    "vae_purified": "vae_purified_emb",  # ... of a mildly purified copy of each image
}
VIEWS = tuple(VIEW_FOLDERS)


def shard_file(view: str, index: int) -> str:
    """The path of shard ``index`` of ``view`` relative to the store's root."""
    folder = VIEW_FOLDERS[view]
    return f"{folder}/{folder}_{index}.npy"


def _open_npy(path: Path, what: str) -> np.ndarray:
    """Memory-map one .npy shard, with errors that name the file."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # np.load raises ValueError, OSError, EOFError, SyntaxError...
        raise ValueError(
            f"{what} {str(path)!r} is truncated or not a valid .npy file ({exc})"
        ) from exc
    if arr.ndim != 2:
        raise ValueError(f"{what} {str(path)!r} must be 2-D (rows, d); got shape {arr.shape}")
    if arr.dtype.type not in SUPPORTED_DTYPES:
        raise ValueError(
            f"{what} {str(path)!r} has dtype {arr.dtype}; supported: float16, float32, float64"
        )
    return arr


@dataclass
class _View:
    shards: list[np.ndarray]
    paths: list[Path]
    offsets: np.ndarray  # (len(shards) + 1,) first row of each shard, then N
    fds: dict[int, int] = field(default_factory=dict)  # shard -> file descriptor for pread

    @property
    def dim(self) -> int:
        return int(self.shards[0].shape[1])

    def take(self, s: int, local: np.ndarray) -> np.ndarray:
        """Rows ``local`` of shard s. Memory-mapped .npy shards are read with pread: random
        rows through a mapping would map whole fault-around windows (64 KiB each) and grow
        the resident set toward the store's size."""
        shard = self.shards[s]
        if not (isinstance(shard, np.memmap) and shard.flags.c_contiguous and shard.filename):
            return np.asarray(shard[local])
        if s not in self.fds:
            self.fds[s] = os.open(shard.filename, os.O_RDONLY)
        out = np.empty((local.size, shard.shape[1]), dtype=shard.dtype)
        bad = _backend.gather_file_rows(self.fds[s], shard.offset, local, out)
        if bad >= 0:
            raise ValueError(
                f"{str(self.paths[s])!r} ended before row {int(local[bad])}: the file was "
                "truncated after the store was opened"
            )
        return out

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _make_view(shards: list[np.ndarray], paths: list[Path], view: str) -> _View:
    dims = {int(s.shape[1]) for s in shards}
    if len(dims) > 1:
        first = paths[0]
        for s, p in zip(shards, paths, strict=True):
            if s.shape[1] != shards[0].shape[1]:
                raise ValueError(
                    f"{view} shard {str(p)!r} has d={s.shape[1]} but {str(first)!r} has "
                    f"d={shards[0].shape[1]}; one store holds one embedding size per view"
                )
    sizes = np.array([s.shape[0] for s in shards], dtype=np.int64)
    return _View(shards, paths, np.concatenate([[0], np.cumsum(sizes)]))


class EmbeddingStore:
    """Row-aligned embeddings of N pairs, read lazily.

    Attributes
    ----------
    n : number of rows. d_image, d_text : dimensions (d_text None without a text view).
    source : where the store came from (a path).
    """

    def __init__(
        self,
        image: _View | None,
        text: _View | None,
        labels: np.ndarray | None,
        source: str,
        sscd: _View | None = None,
        others: dict[str, _View] | None = None,
    ) -> None:
        # every view of VIEWS has an entry, None when absent; ``others``: vae, vae_purified
        self._views: dict[str, _View | None] = dict.fromkeys(VIEWS)
        self._views.update(image=image, text=text, sscd=sscd, **(others or {}))
        self.labels = labels
        self.source = source
        # open_store's arguments, so another process (a Ray worker) can open the same store
        self.reopen_args: dict[str, Any] | None = None
        first = next((v for v in self._views.values() if v is not None), None)
        self.n = 0 if first is None else int(first.offsets[-1])
        if self.n == 0:
            raise ValueError(f"store {source!r} has no rows")

    def files(self) -> list[Path]:
        """Every embedding file of the store's views, in view and shard order."""
        return [p for view in self._views.values() if view is not None for p in view.paths]

    def shard_spans(self, view: str = "image") -> list[tuple[int, int]]:
        """(first row, end row) of each shard of ``view``, in order."""
        offsets = self._view(view).offsets
        return [(int(a), int(b)) for a, b in itertools.pairwise(offsets)]

    @property
    def d_image(self) -> int:
        return self._view("image").dim

    @property
    def d_text(self) -> int | None:
        view = self._views["text"]
        return None if view is None else view.dim

    @property
    def has_text(self) -> bool:
        return self._views["text"] is not None

    def has_view(self, view: str) -> bool:
        return self._views.get(view) is not None

    def dim(self, view: str) -> int:
        return self._view(view).dim

    def _view(self, view: str) -> _View:
        if view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
        found = self._views[view]
        if found is None:
            raise ValueError(f"store {self.source!r} has no {view} embeddings")
        return found

    def read(self, start: int, stop: int, view: str = "image") -> np.ndarray:
        """Rows start..stop-1 of a view, in the stored dtype, (stop - start, d)."""
        v = self._view(view)
        first = int(np.searchsorted(v.offsets, start, side="right")) - 1
        parts = []
        pos = start
        while pos < stop:
            shard = v.shards[first]
            lo = pos - int(v.offsets[first])
            hi = min(shard.shape[0], stop - int(v.offsets[first]))
            parts.append(np.asarray(shard[lo:hi]))
            pos += hi - lo
            first += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def gather(self, ids: np.ndarray, view: str = "image") -> np.ndarray:
        """Rows ``ids`` (any order, repeats allowed) of a view, (len(ids), d), stored dtype.

        Only the pages holding those rows are read.
        """
        v = self._view(view)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n):
            raise IndexError(f"row ids must be in [0, {self.n}); got {ids.min()}..{ids.max()}")
        unique, inverse = np.unique(ids, return_inverse=True)
        out = np.empty((unique.size, v.dim), dtype=v.shards[0].dtype)
        shard_of = np.searchsorted(v.offsets, unique, side="right") - 1
        for s in np.unique(shard_of):
            sel = shard_of == s
            out[sel] = v.take(int(s), unique[sel] - v.offsets[s])
        return out[inverse.reshape(-1)]

    def release(self) -> None:
        """Drop this process's mapped pages (the OS page cache keeps them for reuse)."""
        for view in self._views.values():
            if view is None:
                continue
            for shard in view.shards:
                handle = getattr(shard, "_mmap", None)
                if isinstance(handle, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
                    handle.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """Close the file descriptors that gathers opened (the maps close with the store)."""
        for view in self._views.values():
            if view is not None:
                view.close()

    def __enter__(self) -> EmbeddingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: os may be gone already
            pass

    def __repr__(self) -> str:
        return (
            f"EmbeddingStore(n={self.n}, d_image={self.d_image}, d_text={self.d_text}, "
            f"labels={self.labels is not None}, source={self.source!r})"
        )


def _indexed_files(directory: Path, prefix: str, suffix: str) -> dict[int, Path]:
    """{i: path} of ``<prefix><i><suffix>`` files in ``directory``, checked to be the series
    0..K-1 with one file per index: ``img_emb_1.npy`` beside ``img_emb_01.npy`` (each view
    would pick one by directory order) or a gap is an error naming the files."""
    if not directory.is_dir():
        return {}
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+){re.escape(suffix)}$")
    found: dict[int, Path] = {}
    for entry in sorted(directory.iterdir()):
        m = pattern.match(entry.name)
        if not m:
            continue
        i = int(m.group(1))
        if i in found:
            raise ValueError(
                f"{str(found[i])!r} and {str(entry)!r} are both shard {i}; keep one spelling "
                "of each shard index"
            )
        found[i] = entry
    missing = sorted(set(range(len(found))) - set(found))
    if missing:
        raise ValueError(
            f"{str(directory)!r}: shards must be numbered 0..{len(found) - 1} without gaps; "
            f"{prefix}{missing[0]}{suffix} is missing"
        )
    return found


def _shard_paths(root: Path, view: str) -> dict[int, Path]:
    folder = VIEW_FOLDERS[view]
    return _indexed_files(root / folder, f"{folder}_", ".npy")


_OTHER_FOLDERS = [folder for view, folder in VIEW_FOLDERS.items() if view != "image"]


def _open_clip_retrieval(root: Path) -> EmbeddingStore:
    found = {view: _shard_paths(root, view) for view in VIEWS}
    present = [view for view in VIEWS if found[view]]
    if not present:
        raise ValueError(
            f"{str(root)!r} holds no embedding shards: expected img_emb/img_emb_<i>.npy "
            f"(the clip-retrieval layout; also {', '.join(f'{f}/' for f in _OTHER_FOLDERS)}), "
            "or pass a .npy or .parquet"
        )
    first = present[0]
    for view in present[1:]:
        if set(found[view]) != set(found[first]):
            missing = sorted(set(found[view]) ^ set(found[first]))
            raise ValueError(
                f"{str(root)!r}: {VIEW_FOLDERS[first]} and {VIEW_FOLDERS[view]} shards "
                f"differ; shard index {missing[0]} is present in one view only"
            )
    order = sorted(found[first])
    opened = {view: [_open_npy(found[view][i], f"{view} shard") for i in order] for view in present}
    for view in present[1:]:
        for i, a, b in zip(order, opened[first], opened[view], strict=True):
            if a.shape[0] != b.shape[0]:
                raise ValueError(
                    f"shard {i}: {str(found[first][i])!r} has {a.shape[0]} rows but "
                    f"{str(found[view][i])!r} has {b.shape[0]}; views must be row-aligned"
                )
    _check_metadata(root, order, opened[first], found[first])
    views = {
        view: _make_view(opened[view], [found[view][i] for i in order], view) for view in present
    }
    return EmbeddingStore(
        views.get("image"),
        views.get("text"),
        None,
        str(root),
        sscd=views.get("sscd"),
        others={v: views[v] for v in views if v not in ("image", "text", "sscd")},
    )


def _check_metadata(root: Path, order: list[int], shards: list[np.ndarray], paths: dict) -> None:
    meta_dir = root / "metadata"
    if not meta_dir.is_dir():
        return
    metas = _indexed_files(meta_dir, "metadata_", ".parquet")
    if metas and set(metas) != set(order):
        odd = sorted(set(metas) ^ set(order))[0]
        raise ValueError(
            f"{str(meta_dir)!r}: metadata shards must match the embedding shards one to one; "
            f"shard index {odd} is in one of them only (ids and captions would shift rows)"
        )
    try:
        import pyarrow.parquet as pq
    except ImportError:  # metadata is optional to AD; its row counts are checked when we can
        return
    for i, shard in zip(order, shards, strict=True):
        meta = metas.get(i)
        if meta is None:
            continue
        try:
            rows = pq.read_metadata(meta).num_rows
        except Exception as exc:
            raise ValueError(
                f"metadata {str(meta)!r} is not a readable parquet file ({exc})"
            ) from exc
        if rows != shard.shape[0]:
            raise ValueError(
                f"shard {i}: {str(meta)!r} has {rows} rows but {str(paths[i])!r} has "
                f"{shard.shape[0]}; metadata must be row-aligned with the embeddings"
            )


def _open_labels(path: str | os.PathLike[str], n: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"labels file {str(p)!r} does not exist")
    try:
        labels = np.load(p, allow_pickle=False)
    except Exception as exc:  # any unreadable header or body
        raise ValueError(
            f"labels {str(p)!r} is truncated or not a valid .npy file ({exc})"
        ) from exc
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels {str(p)!r} must be a 1-D integer array; got {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != n:
        raise ValueError(
            f"labels {str(p)!r} has {labels.shape[0]} entries but the store has {n} rows"
        )
    return labels


def _open_parquet(path: Path, image_column: str, text_column: str | None) -> EmbeddingStore:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError("reading .parquet needs pyarrow: pip install 'alignscope[io]'") from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise ValueError(f"{str(path)!r} is not a readable parquet file ({exc})") from exc

    def column(name: str) -> np.ndarray:
        if name not in table.column_names:
            raise ValueError(
                f"{str(path)!r} has no column {name!r}; columns: {', '.join(table.column_names)}"
            )
        col = table.column(name).combine_chunks()
        if col.null_count:
            raise ValueError(f"{str(path)!r} column {name!r} has {col.null_count} null rows")
        try:
            values = col.flatten().to_numpy(zero_copy_only=False)
            lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        except Exception as exc:
            raise ValueError(
                f"{str(path)!r} column {name!r} must hold lists of floats ({exc})"
            ) from exc
        if len(lengths) == 0 or (lengths != lengths[0]).any():
            raise ValueError(f"{str(path)!r} column {name!r} must hold lists of one length")
        arr = values.reshape(len(lengths), int(lengths[0]))
        if arr.dtype.type not in SUPPORTED_DTYPES:
            raise ValueError(f"{str(path)!r} column {name!r} has dtype {arr.dtype}; use floats")
        return arr

    image = column(image_column)
    text = column(text_column) if text_column and text_column in table.column_names else None
    return EmbeddingStore(
        _make_view([image], [path], "image"),
        None if text is None else _make_view([text], [path], "text"),
        None,
        str(path),
    )


def open_store(
    path: str | os.PathLike[str],
    *,
    texts: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    image_column: str = "image_embedding",
    text_column: str = "text_embedding",
) -> EmbeddingStore:
    """Open an embedding store, validating its layout (not its values) up front.

    Parameters
    ----------
    path : one of
        - a directory in the clip-retrieval / LAION layout: ``img_emb/img_emb_<i>.npy``,
          optional ``text_emb/text_emb_<i>.npy`` and ``metadata/metadata_<i>.parquet``,
          row-aligned, float16/32/64, ordered by shard index i;
        - an image-embedding ``.npy`` file (with ``texts=`` and/or ``labels=`` .npy files);
        - a ``.parquet`` file with list-of-float columns ``image_column`` and ``text_column``
          (read into memory).
    labels : a (N,) integer .npy file of labels (label metrics), for any layout.

    Raises
    ------
    ValueError naming the offending shard or file: misaligned row counts, mixed d, truncated
    .npy, unsupported dtype, no shards.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"store {str(root)!r} does not exist")
    if root.is_dir():
        if texts is not None:
            raise ValueError("texts= is for a .npy image file; a shard directory has text_emb/")
        store = _open_clip_retrieval(root)
    elif root.suffix == ".parquet":
        store = _open_parquet(root, image_column, text_column)
    elif root.suffix == ".npy":
        image = _open_npy(root, "image file")
        text = None
        if texts is not None:
            tpath = Path(texts)
            if not tpath.is_file():
                raise FileNotFoundError(f"texts file {str(tpath)!r} does not exist")
            text = _open_npy(tpath, "text file")
            if text.shape[0] != image.shape[0]:
                raise ValueError(
                    f"{str(root)!r} has {image.shape[0]} rows but {str(tpath)!r} has "
                    f"{text.shape[0]}; row i of both must describe the same pair"
                )
        store = EmbeddingStore(
            _make_view([image], [root], "image"),
            None if text is None else _make_view([text], [Path(texts)], "text"),  # type: ignore[arg-type]
            None,
            str(root),
        )
    else:
        raise ValueError(
            f"cannot open {str(root)!r}: expected a clip-retrieval directory, a .npy or a .parquet"
        )
    if labels is not None:
        store.labels = _open_labels(labels, store.n)
    store.reopen_args = {
        "path": str(root.resolve()),
        "texts": None if texts is None else str(Path(texts).resolve()),
        "image_column": image_column,
        "text_column": text_column,
    }
    return store


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like an embedding store (a shard directory, ``.npy`` or
    ``.parquet``) rather than an image dataset; :func:`open_store` validates it."""
    p = Path(path)
    if p.is_file():
        return p.suffix in (".npy", ".parquet")
    return any((p / folder).is_dir() for folder in VIEW_FOLDERS.values())


def read_metadata_column(root: str | os.PathLike[str], name: str) -> list[str] | None:
    """One metadata column of every row in order (as strings), from a shard directory's
    ``metadata/metadata_<i>.parquet``; None when there is no metadata, no such column, or no
    pyarrow."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    meta = Path(root) / "metadata"
    if not meta.is_dir():
        return None
    values: list[str] = []
    for _, path in sorted(_indexed_files(meta, "metadata_", ".parquet").items()):
        if name not in pq.read_schema(path).names:
            return None
        values.extend(str(v) for v in pq.read_table(path, columns=[name]).column(name).to_pylist())
    return values


def store_row_ids(root: str | os.PathLike[str]) -> list[str] | None:
    """Ids of all rows in order, from a shard directory's metadata, or None."""
    return read_metadata_column(root, "id")
