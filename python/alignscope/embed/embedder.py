"""Embedding a dataset into a store, shard by shard, resumably.

Shard i holds the decodable records among records [i * shard_rows, (i + 1) * shard_rows) of
the dataset's fixed order. Its files are written atomically and its metadata file last, so a
shard whose metadata exists is complete; a rerun skips complete shards without decoding their
images. Views: ``img_emb``/``text_emb`` (CLIP), ``sscd_emb`` (SSCD), and ``vae_emb`` /
``vae_purified_emb`` (pooled VAE latent means of each image and of its purified copy).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import (
    atomic_path,
    claimed_output,
    ensure_free_space,
    fingerprint_tree,
    tree_bytes,
)
from alignscope.embed.clip import ClipEncoder
from alignscope.embed.sscd import SSCDEncoder
from alignscope.embed.vae import VAEEncoder
from alignscope.io.datasets import Dataset, Record
from alignscope.io.write import StoreWriter


@dataclass
class EmbedReport:
    store: str
    dataset: str = ""
    dataset_kind: str = ""
    shards_written: list[int] = field(default_factory=list)
    shards_skipped: list[int] = field(default_factory=list)
    images: int = 0
    captioned: int = 0  # images written with a non-empty caption (not in the JSON report)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "dataset": self.dataset,
            "dataset_kind": self.dataset_kind,
            "shards_written": self.shards_written,
            "shards_skipped": self.shards_skipped,
            "images": self.images,
            "images_per_second": self.images / self.seconds if self.seconds > 0 else None,
            "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
            "warnings": self.warnings,
            "seconds": self.seconds,
        }


def complete_shards(root: Path) -> set[int]:
    """Indices of the shards of store ``root`` whose metadata (written last) exists."""
    meta = root / "metadata"
    if not meta.is_dir():
        return set()
    out = set()
    for p in meta.glob("metadata_*.parquet"):
        tail = p.stem.rsplit("_", 1)[1]
        if tail.isdigit():
            out.add(int(tail))
    return out


@dataclass
class _Encoders:
    """The encoders of one embedding run (any of them may be absent)."""

    clip: ClipEncoder | None = None
    sscd: SSCDEncoder | None = None
    vae: VAEEncoder | None = None


def embed_dataset(
    dataset: Dataset,
    out: str | Path,
    *,
    clip: ClipEncoder | None = None,
    sscd: SSCDEncoder | None = None,
    vae: VAEEncoder | None = None,
    batch_size: int = 64,
    shard_rows: int = 100_000,
    dtype: Any = np.float16,
    progress: bool = True,
    overwrite: bool = False,
) -> EmbedReport:
    """Embed every decodable record of ``dataset`` into the store at ``out``.

    A rerun resumes (complete shards are skipped) only when ``out`` was written from the same
    dataset with the same encoders and settings (:func:`embed_identity`); otherwise it is
    refused naming what differs, unless ``overwrite`` replaces the old store.

    ``vae`` writes two views, ``vae`` and ``vae_purified`` (:class:`VAEEncoder`).

    Returns an :class:`EmbedReport` (also written to ``out/embed_report.json``): shards
    written and skipped (already complete), images embedded, records skipped with reasons.
    """
    if clip is None and sscd is None and vae is None:
        raise ValueError("give a CLIP, an SSCD or a VAE encoder (any of them, or several)")
    if batch_size < 1 or shard_rows < 1:
        raise ValueError("batch_size and shard_rows must be >= 1")
    encoders = _Encoders(clip, sscd, vae)
    identity = _encoders_identity(dataset, encoders, shard_rows, dtype)
    # before the folder is claimed: a refused run leaves nothing behind. What ``out`` holds
    # already (a store to resume or to overwrite) is space the run gets back or keeps.
    count, floats = dataset.record_count(), _row_floats(encoders)
    if count is not None:
        need = count * floats * np.dtype(dtype).itemsize - tree_bytes(out)
        ensure_free_space(out, need, f"the embeddings of {count:,} records")
    with claimed_output(out, "embed", identity, overwrite=overwrite):
        return _embed_into(dataset, Path(out), encoders, batch_size, shard_rows, dtype, progress)


def _row_floats(encoders: _Encoders) -> int:
    """Floats an embedded record takes over all views, as far as the encoders say (CLIP and
    VAE encoders have a ``dim``; an SSCD model's width is known only once it has run, and
    counts 0 here, so that estimates from this are lower bounds)."""

    def dim(encoder: Any) -> int:
        value = getattr(encoder, "dim", None)
        return value if isinstance(value, int) and value > 0 else 0

    clip, sscd, vae = encoders.clip, encoders.sscd, encoders.vae
    return 2 * dim(clip) + dim(sscd) + 2 * dim(vae)  # CLIP and VAE write two views each


def _spec_files(spec: str) -> list[dict[str, object]]:
    """Fingerprints of the local files or folders a model spec names (checkpoints, configs)."""
    found = []
    for part in spec.split(":")[1:]:
        if part and Path(part).exists():
            found.append(fingerprint_tree(part))
    return found


def embed_identity(
    source: str,
    kind: str,
    *,
    clip_spec: str | None,
    sscd_model: str | Path | None,
    sscd_preset: str | None,
    device: str,
    shard_rows: int,
    dtype: Any,
    vae_model: str | Path | None = None,
    vae_size: int | None = None,
) -> dict[str, object]:
    """What an embedded store depends on: the dataset (its file listing), the encoders (spec,
    model files' fingerprints, preprocessing, device) and the store settings. One owner for
    the single-process and the Ray embedders, so either may resume the other's store.

    ``vae_model`` (a VAE folder, or the name of an encoder of the user's own) adds a "vae"
    entry; without one the record has no such key, so stores embedded before VAE views
    existed still resume."""
    identity: dict[str, object] = {
        "dataset": fingerprint_tree(source),
        "dataset_kind": kind,
        "clip": None
        if clip_spec is None
        else {"spec": clip_spec, "files": _spec_files(clip_spec), "device": device},
        "sscd": None
        if sscd_preset is None
        else {
            "model": fingerprint_tree(sscd_model) if sscd_model is not None else None,
            "preset": sscd_preset,
            "device": device,
        },
        "shard_rows": int(shard_rows),
        "dtype": np.dtype(dtype).name,
    }
    if vae_model is not None:
        identity["vae"] = {
            "model": fingerprint_tree(vae_model) if Path(vae_model).exists() else str(vae_model),
            "size": vae_size,
            "device": device,
        }
    return identity


def _encoders_identity(
    dataset: Dataset, encoders: _Encoders, shard_rows: int, dtype: Any
) -> dict[str, object]:
    """:func:`embed_identity` of encoder objects (an encoder of the user's own may lack the
    attributes ours have: its class name stands in)."""
    clip, sscd, vae = encoders.clip, encoders.sscd, encoders.vae
    first = next(e for e in (clip, sscd, vae) if e is not None)
    device = getattr(first, "device", "cpu")
    preset = getattr(sscd, "preset", None)
    return embed_identity(
        dataset.source,
        dataset.kind,
        clip_spec=None if clip is None else getattr(clip, "spec", type(clip).__name__),
        sscd_model=getattr(sscd, "path", None),
        sscd_preset=None if sscd is None else getattr(preset, "name", type(sscd).__name__),
        device=device,
        shard_rows=shard_rows,
        dtype=dtype,
        vae_model=None if vae is None else getattr(vae, "path", type(vae).__name__),
        vae_size=getattr(vae, "size", None),
    )


def _embed_into(
    dataset: Dataset,
    root: Path,
    encoders: _Encoders,
    batch_size: int,
    shard_rows: int,
    dtype: Any,
    progress: bool,
) -> EmbedReport:
    writer = StoreWriter(root, dtype)
    done = complete_shards(root)
    report = EmbedReport(
        store=str(root), dataset=str(Path(dataset.source).resolve()), dataset_kind=dataset.kind
    )
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="embedding", unit="img", file=sys.stderr)

    shard: list[Record] = []
    index = 0
    count = dataset.record_count()
    empty: list[int] = []  # shards none of whose records decoded

    def flush(records: list[Record], i: int) -> None:
        if i in done:
            report.shards_skipped.append(i)
            return
        before = len(dataset.skipped)

        def check_space(floats: int) -> None:
            # the shard's first batch gives every view's width (an SSCD model's among them):
            # is there room for this shard and the ones still to write?
            left = len(records)
            if count is not None:
                shards = range(i, -(-count // shard_rows))
                left = sum(min(shard_rows, count - j * shard_rows) for j in shards if j not in done)
            need = max(left, len(records)) * floats * np.dtype(dtype).itemsize
            ensure_free_space(root, need, f"the embeddings of the {left:,} records left")

        views, meta = _embed_records(records, dataset, encoders, batch_size, bar, check_space)
        write_shard_skips(root, i, dataset.skipped[before:])  # before the metadata
        if meta["id"]:
            writer.write_shard(i, views, meta)
            report.images += len(meta["id"])
            report.captioned += sum(1 for c in meta["caption"] if c)
        else:
            empty.append(i)
        report.shards_written.append(i)

    for record in dataset:
        shard.append(record)
        if len(shard) == shard_rows:
            flush(shard, index)
            shard, index = [], index + 1
    if shard:
        flush(shard, index)
    if bar is not None:
        bar.close()
    fill_empty_shards(root, empty, dtype)
    if encoders.clip is not None and report.images and not report.captioned:
        # the text view of a captionless dataset is one constant row: say so once, here
        dataset._warn(
            "no record has a caption: every text embedding is the same, so AD and the "
            "caption-based screening scores will mean nothing for this store"
        )
        print(f"alignscope: warning: {dataset.warnings[-1]}", file=sys.stderr)
    report.seconds = time.perf_counter() - start
    # every shard's skips, those of shards completed by an earlier (interrupted) run included
    report.skipped = read_shard_skips(root, index + 1)
    report.warnings = list(dataset.warnings)
    with atomic_path(root / "embed_report.json") as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def embed_shard(
    dataset: Dataset,
    out: str | Path,
    index: int,
    shard_rows: int,
    *,
    clip: ClipEncoder | None,
    sscd: SSCDEncoder | None,
    vae: VAEEncoder | None = None,
    batch_size: int = 64,
    dtype: Any = np.float16,
) -> tuple[int, list[tuple[str, str]]]:
    """Embed and write shard ``index`` alone (records [index * shard_rows, ...)): the unit of
    work of a distributed run. Returns (images embedded, records skipped with reasons)."""
    if index in complete_shards(Path(out)):
        return 0, []
    start, stop = index * shard_rows, (index + 1) * shard_rows
    records = [r for i, r in enumerate(dataset) if start <= i < stop]
    before = len(dataset.skipped)

    def check_space(floats: int) -> None:
        need = len(records) * floats * np.dtype(dtype).itemsize
        ensure_free_space(out, need, f"the embeddings of shard {index}")

    encoders = _Encoders(clip, sscd, vae)
    views, meta = _embed_records(records, dataset, encoders, batch_size, None, check_space)
    write_shard_skips(Path(out), index, dataset.skipped[before:])
    if meta["id"]:
        StoreWriter(Path(out), dtype).write_shard(index, views, meta)
    return len(meta["id"]), dataset.skipped[before:]


def fill_empty_shards(root: Path, indices: list[int], dtype: Any) -> None:
    """Write shards ``indices`` with no rows: a shard none of whose records decoded (a run of
    corrupt files, a broken tar) left a gap in the store's 0..K-1 series, so the store did not
    open, and every rerun decoded it again. Their widths and metadata columns come from a
    complete shard; with none (nothing decoded at all) there is nothing to fill."""
    from alignscope.io.store import VIEW_FOLDERS, shard_file

    if not indices:
        return
    done = sorted(complete_shards(root) - set(indices))
    if not done:
        return
    import pyarrow.parquet as pq

    widths = {}
    for view in VIEW_FOLDERS:
        path = root / shard_file(view, done[0])
        if path.is_file():
            widths[view] = np.load(path, mmap_mode="r", allow_pickle=False).shape[1:]
    schema = pq.read_schema(root / "metadata" / f"metadata_{done[0]}.parquet")
    writer = StoreWriter(root, dtype)
    for i in indices:
        views = {view: np.zeros((0, *shape), dtype=dtype) for view, shape in widths.items()}
        writer.write_shard(i, views, schema.empty_table().to_pydict())


def write_shard_skips(root: Path, index: int, skipped: list[tuple[str, str]]) -> None:
    """The records shard ``index`` skipped, as ``metadata/skipped_<index>.json``, so the report
    of a resumed run still lists the skips of shards an earlier run completed."""
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    with atomic_path(root / "metadata" / f"skipped_{index}.json") as tmp:
        tmp.write_text(json.dumps([list(entry) for entry in skipped]))


def read_shard_skips(root: Path, shards: int) -> list[tuple[str, str]]:
    """(id, reason) of every record skipped in shards 0..shards-1, in shard order."""
    out: list[tuple[str, str]] = []
    for i in range(shards):
        path = root / "metadata" / f"skipped_{i}.json"
        if path.is_file():
            out.extend((str(a), str(b)) for a, b in json.loads(path.read_text()))
    return out


def _row_width(parts: dict[str, list[np.ndarray]]) -> int:
    """Floats a record takes over the views embedded so far."""
    return sum(int(np.prod(p[0].shape[1:])) for p in parts.values() if p)


def _embed_records(
    records: list[Record],
    dataset: Dataset,
    encoders: _Encoders,
    batch_size: int,
    bar: Any,
    check_space: Callable[[int], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, list[Any]]]:
    """Views and metadata of the decodable ``records`` (the others go to ``dataset.skipped``).
    ``check_space`` is called once, after the first batch, with the floats a record takes
    over all views: it may refuse (raise) before the rest of the work."""
    clip, sscd, vae = encoders.clip, encoders.sscd, encoders.vae
    parts: dict[str, list[np.ndarray]] = {
        "image": [],
        "text": [],
        "sscd": [],
        "vae": [],
        "vae_purified": [],
    }
    meta: dict[str, list[Any]] = {"id": [], "caption": [], "extra": []}
    batch: list[tuple[Record, Any]] = []

    def run(items: list[tuple[Record, Any]]) -> None:
        images = [im for _, im in items]
        if clip is not None:
            parts["image"].append(clip.encode_images(images))
            parts["text"].append(clip.encode_texts([r.caption for r, _ in items]))
        if sscd is not None:
            parts["sscd"].append(sscd.encode(images))
        if vae is not None:
            pooled, purified = vae.encode(images)
            parts["vae"].append(pooled)
            parts["vae_purified"].append(purified)
        for r, _ in items:
            meta["id"].append(r.id)
            meta["caption"].append(r.caption)
            meta["extra"].append(json.dumps(r.extra, sort_keys=True, default=str))
        if bar is not None:
            bar.update(len(items))

    for record in records:
        try:
            image = record.load()
        except ValueError as exc:  # BadImage: counted and listed, never fatal
            dataset.skipped.append((record.id, str(exc)))
            continue
        batch.append((record, image))
        if len(batch) == batch_size:
            run(batch)
            batch = []
            if check_space is not None:
                check_space(_row_width(parts))
                check_space = None
    if batch:
        run(batch)
        if check_space is not None:
            check_space(_row_width(parts))
    views = {k: np.concatenate(v) for k, v in parts.items() if v}
    return views, meta
