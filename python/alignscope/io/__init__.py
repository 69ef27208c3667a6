"""Embedding stores: the clip-retrieval / LAION shard layout, .npy pairs, parquet tables."""

from alignscope.io.store import EmbeddingStore, open_store
from alignscope.io.write import StoreWriter, write_store

__all__ = ["EmbeddingStore", "StoreWriter", "open_store", "write_store"]
