"""Ray backend: exact AD as tile tasks over a shared store, reduced exactly, resumable; sharded
embedding. Users reach the first through ``alignment_difficulty(store, backend="ray")``.

Nothing outside this package imports ray; it is the optional extra ``alignscope[distributed]``.
"""

from alignscope.distributed.embedding import ray_embed
from alignscope.distributed.tiles import RayRun, block_pairs, exact_row_sums

__all__ = ["RayRun", "block_pairs", "exact_row_sums", "ray_embed"]
