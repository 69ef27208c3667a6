"""Ray backend: exact AD as tile tasks over a shared store, reduced exactly, resumable.

Nothing outside this package imports ray; it is the optional extra ``alignscope[distributed]``.
"""

from alignscope.distributed.tiles import block_pairs, ray_alignment_difficulty

__all__ = ["block_pairs", "ray_alignment_difficulty"]
