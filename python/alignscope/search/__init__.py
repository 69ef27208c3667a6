"""Nearest-neighbour search over embeddings: exact top-k by the engine (streamed, no full
similarity matrix), FAISS as the indexed path, and DCR-style replication metrics."""

from alignscope.search.exact import topk
from alignscope.search.replication import ReplicationResult, replication

__all__ = ["ReplicationResult", "replication", "topk"]
