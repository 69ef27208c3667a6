"""Ray backend: exact AD as tile tasks over a shared store, reduced exactly, resumable; sharded
embedding; the screening neighbour searches as span tasks (:class:`RaySpanRunner`). Users reach
the first through ``alignment_difficulty(store, backend="ray")``, the last through
``alignscope screen --ray``.

Nothing outside this package imports ray; it is the optional extra ``alignscope[distributed]``.
"""

from alignscope.distributed.embedding import ray_embed
from alignscope.distributed.neighbours import RaySpanRunner
from alignscope.distributed.tiles import RayRun, block_pairs, exact_row_sums

__all__ = ["RayRun", "RaySpanRunner", "block_pairs", "exact_row_sums", "ray_embed"]
