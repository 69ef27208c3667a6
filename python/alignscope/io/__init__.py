"""Inputs and their one owner each: embedding stores (the clip-retrieval / LAION shard layout,
.npy pairs, parquet tables), image-caption datasets, and the poison manifest."""

from alignscope.io.manifest import poison_flags, read_manifest, write_manifest
from alignscope.io.store import (
    EmbeddingStore,
    is_store,
    open_store,
    read_metadata_column,
    store_row_ids,
)
from alignscope.io.write import StoreWriter, write_store

__all__ = [
    "EmbeddingStore",
    "StoreWriter",
    "is_store",
    "open_store",
    "poison_flags",
    "read_manifest",
    "read_metadata_column",
    "store_row_ids",
    "write_manifest",
    "write_store",
]
