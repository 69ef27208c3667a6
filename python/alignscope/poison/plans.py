"""Poison plans: which rows are poisoned, with which source and target concept, seeded.

- :func:`plan_concepts` (Implosion / Nightshade protocol): C_P concepts drawn from the
  candidates, m poisons each (or m = ratio * N, 0.0008 by default), each with a target drawn
  uniformly among the other candidates (t != p), the poisoned rows drawn among the rows whose
  caption mentions p (each row poisoned at most once).
- :func:`plan_all_to_one` (trigger attacks): rows whose caption does not mention the target,
  all pointed at one target; by default ``int(ratio * N)`` of them for N rows in all, as
  BiBadDiff's code counts (see :data:`RATIO_OF`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# What an all-to-one ratio is a ratio of. "all": int(ratio * N) poisons for N rows, the count of
# BiBadDiff's code (data/imagenette/badnets_imagenette.py draws `int(s * poison_rate)` indices,
# s = the whole training set, among the non-target ones). "non-target": round(ratio * N_nt) of
# the N_nt rows not about the target, at least one: alignscope's earlier count, and what the
# paper's text (A.2: "p percent of images which do not belong to the target class") describes.
# On ImageNette's training set (9,469 images, 961 garbage trucks) at 10%: 946 and 851 poisons.
RATIO_OF = ("all", "non-target")


@dataclass(frozen=True, eq=False)
class PoisonPlan:
    """rows: (P,) int64 poisoned row indices, ascending; source, target: the concept each
    poisoned row's caption names and the concept it is pushed toward ("" source for all-to-one);
    pairs: the (p, t) pairs in the order drawn; m: poisons per concept; seed."""

    rows: np.ndarray
    source: tuple[str, ...]
    target: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    m: int
    seed: int


def plan_concepts(
    row_concepts: list[set[str]],
    candidates: list[str],
    *,
    poisoned: int,
    per_concept: int | None = None,
    ratio: float = 0.0008,
    seed: int = 0,
    pool_filter: Callable[[str, list[int]], list[int]] | None = None,
    targets: list[str] | None = None,
) -> PoisonPlan:
    """``pool_filter(p, rows)`` may narrow the rows a concept's poisons are drawn from (the
    CLIP filters of Nightshade) before the seeded sample; ``targets`` (default: the
    candidates) is the pool each target t != p is drawn from."""
    n = len(row_concepts)
    m = per_concept if per_concept is not None else max(1, round(ratio * n))
    if poisoned < 1 or m < 1:
        raise ValueError(
            f"need at least one poisoned concept and one poison each; got C_P={poisoned}, m={m}"
        )
    target_pool = list(candidates if targets is None else targets)
    if poisoned > len(candidates) or len(set(target_pool) | set(candidates)) < 2:
        raise ValueError(
            f"C_P={poisoned} poisoned concepts need at least C_P candidate concepts and another "
            f"concept to target; got {len(candidates)} candidates, {len(target_pool)} targets"
        )
    rng = np.random.default_rng(seed)
    chosen = [candidates[i] for i in rng.choice(len(candidates), size=poisoned, replace=False)]
    used: set[int] = set()
    rows: list[int] = []
    by_row: dict[int, tuple[str, str]] = {}
    pairs = []
    for p in chosen:
        others = [c for c in target_pool if c != p]
        if not others:
            raise ValueError(f"no target concept other than {p!r}")
        t = others[int(rng.integers(len(others)))]
        pool = [i for i in range(n) if p in row_concepts[i] and i not in used]
        if pool_filter is not None:
            pool = pool_filter(p, pool)
        if len(pool) < m:
            raise ValueError(
                f"concept {p!r} appears in {len(pool)} unpoisoned captions but m={m} poisons "
                "were asked for; lower --per-concept / --ratio or choose more frequent concepts"
            )
        picked = sorted(int(i) for i in rng.choice(pool, size=m, replace=False))
        used.update(picked)
        rows.extend(picked)
        by_row.update({i: (p, t) for i in picked})
        pairs.append((p, t))
    order = sorted(rows)
    return PoisonPlan(
        rows=np.asarray(order, dtype=np.int64),
        source=tuple(by_row[i][0] for i in order),
        target=tuple(by_row[i][1] for i in order),
        pairs=tuple(pairs),
        m=m,
        seed=seed,
    )


def plan_all_to_one(
    row_concepts: list[set[str]],
    target: str,
    *,
    ratio: float,
    seed: int = 0,
    ratio_of: str = "all",
) -> PoisonPlan:
    """The rows of an all-to-one (trigger) attack toward ``target``.

    Parameters
    ----------
    row_concepts : each row's caption concepts; rows naming ``target`` are never poisoned.
    target : the class every poisoned row is relabelled to.
    ratio : in (0, 1), the poisoning ratio p.
    seed : seeds the draw of the rows (uniform, without replacement, among the non-target
        rows).
    ratio_of : "all" (default, BiBadDiff's code): ``int(p * N)`` rows for N rows in all,
        truncated as that code does (so 0.29 * 100 gives 28, the float product); a count
        above the number of non-target rows is refused, as BiBadDiff asserts. "non-target":
        ``round(p * N_nt)`` of the N_nt non-target rows, at least one.

    Returns
    -------
    :class:`PoisonPlan` with ``m`` the number of poisoned rows.
    """
    if ratio_of not in RATIO_OF:
        raise ValueError(f"ratio_of must be 'all' or 'non-target', got {ratio_of!r}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    pool = [i for i, concepts in enumerate(row_concepts) if target not in concepts]
    if not pool:
        raise ValueError(f"every caption mentions {target!r}: nothing to poison toward it")
    n = len(row_concepts)
    if ratio_of == "all":
        count = int(ratio * n)
        if count < 1:
            raise ValueError(
                f"ratio {ratio} of all {n} rows is int({ratio * n:g}) = 0 poisons: raise --ratio "
                "(or count it of the non-target rows, --ratio-of non-target, at least one)"
            )
        if count > len(pool):
            raise ValueError(
                f"ratio {ratio} of all {n} rows is {count} poisons but only {len(pool)} rows "
                f"do not mention {target!r}: lower --ratio"
            )
    else:
        count = min(max(1, round(ratio * len(pool))), len(pool))
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(pool, size=count, replace=False)).astype(np.int64)
    return PoisonPlan(
        rows, ("",) * rows.size, (target,) * rows.size, (("", target),), int(rows.size), seed
    )
