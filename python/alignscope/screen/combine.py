"""One ranking from several scores, without knowing the attack.

Each score is replaced by its empirical upper-tail probability over the N rows (the share of
rows scoring at least as high), so scales and units drop out and any strictly increasing
rescaling of an input leaves the result unchanged. A row is as suspicious as its most extreme
score: a dirty-label poison is extreme on the caption scores, a clean-label one on the
second-view scores, and neither needs the other to agree (the min-p rule of multiple testing).

Plain min-p pays for every uninformative input: its extreme benign rows crowd the top. So each
input is weighted by how *concentrated* its top rows are: poisoning plants m poisons per
attacked concept, so the rows a useful score ranks highest are each other's caption or image
neighbours, while an uninformative score's top rows are scattered. The weight is the share of
the top rows' k nearest neighbours that are top rows too, over the share expected by chance,
relative to the most concentrated input; it depends on ranks only. Ties of the maximum are
broken by the sum of all weighted -log tail probabilities (Fisher's rule).

A score can hand in a *structure* array for its weight: the same evidence with benign
variation that the ranking tolerates taken out. relative_alignment's is its studentized
residual: concepts differ in how widely their CLIP scores scatter, and in raw units the top rows
gather in the widest-scattering concepts, which looks like a planted group to the weight (seed 0
of the realistic benchmark world with clean-label poisons: the caption score had 0.67 of the
view score's weight measured raw, 0.43 studentized).
"""

from __future__ import annotations

import numpy as np


def upper_tail(score: np.ndarray) -> np.ndarray:
    """(N,) share of rows whose score is >= each row's score (1/N for the maximum)."""
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"a score must be a non-empty 1-D array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("a score contains NaN or inf; it cannot be ranked")
    ordered = np.sort(s)
    return (s.size - np.searchsorted(ordered, s, side="left")) / s.size


# The top share whose concentration weighs an input: about the poison rate the paper studies
# (C_P m / N is 0.8-4% there); a row count, not a fitted constant.
TOP_SHARE = 0.02


def concentration(score: np.ndarray, neighbours: list[np.ndarray], top: float = TOP_SHARE) -> float:
    """How much more often the top ``top`` share of rows by ``score`` are each other's
    neighbours than chance: max over the (N, k) neighbour tables of the mean over top rows i of
    |N(i) & top| / |N(i)|, divided by the share actually chosen, ceil(top N) / N (ties broken
    by row order). Entries < 0 are missing neighbours (a row whose table has none is left
    out). 1 means scattered; 1.0 without tables."""
    s = np.asarray(score, dtype=np.float64)
    count = max(1, int(np.ceil(top * s.size)))
    chosen = np.zeros(s.size, dtype=bool)
    chosen[np.argsort(-s, kind="stable")[:count]] = True
    share = count / s.size
    found = []
    for idx in neighbours:
        table = np.asarray(idx)[chosen]
        valid = table >= 0
        hits = (chosen[np.where(valid, table, 0)] & valid).sum(axis=1)
        have = valid.sum(axis=1)
        if have.any():
            found.append(float(np.mean(hits[have > 0] / have[have > 0])) / share)
    return max(found, default=1.0)


def combined_score(
    scores: dict[str, np.ndarray],
    neighbours: list[np.ndarray] | None = None,
    structure: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """(N,) float64 combined score and each input's weight.

    combined_i = max_s w_s * (-log p_s(i)) plus a tie break below the smallest gap between
    distinct maxima from sum_s w_s * (-log p_s(i)), with p_s the upper-tail probability of
    score s and w_s the :func:`concentration` over ``neighbours`` of ``structure[s]`` (score s
    itself when ``structure`` has no entry for it) relative to the largest (all 1 without
    neighbour tables, or when no input's top rows neighbour each other).

    Parameters
    ----------
    scores : name -> (N,) score, higher more suspicious; at least one.
    neighbours : (N, k) int index tables (caption and image k-NN, self excluded).
    structure : name of a score -> (N,) finite array whose top rows' concentration weighs that
        score instead of its own (higher more suspicious, as the score).
    """
    if not scores:
        raise ValueError("the combined score needs at least one input score")
    if len({np.shape(v) for v in scores.values()}) > 1:
        raise ValueError("input scores differ in length")
    structure = dict(structure or {})
    for name, array in structure.items():
        if name not in scores:
            raise ValueError(
                f"structure names {name!r}, which is not an input score ({', '.join(scores)})"
            )
        if np.shape(array) != np.shape(scores[name]):
            raise ValueError(
                f"the structure array of {name!r} has shape {np.shape(array)}, its score "
                f"{np.shape(scores[name])}"
            )
        if not np.isfinite(np.asarray(array, dtype=np.float64)).all():
            raise ValueError(f"the structure array of {name!r} contains NaN or inf")
    tails = np.stack([upper_tail(v) for v in scores.values()])
    level = {
        name: concentration(structure.get(name, v), neighbours or []) for name, v in scores.items()
    }
    top = max(level.values())
    # No input concentrated at all (tiny N, or no neighbour tables): weigh them equally.
    weights = {name: value / top if top > 0 else 1.0 for name, value in level.items()}
    logs = -np.log(tails) * np.array(list(weights.values()))[:, None]
    top, total = logs.max(axis=0), logs.sum(axis=0)
    # The tie break must stay below the smallest gap between distinct maxima (which can be
    # tiny when two inputs with unequal weights meet), so it only orders rows that tie.
    distinct = np.unique(top)
    gap = float(np.diff(distinct).min()) if distinct.size > 1 else 1.0
    return top + 0.5 * gap * total / max(float(total.max()), 1e-300), weights
