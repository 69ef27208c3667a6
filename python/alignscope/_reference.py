"""Slow, obviously-correct float64 numpy references. Tests compare the engine against these.

Everything here builds dense N x N matrices on purpose: it is for N of a few thousand at most.
Nothing in the package's compute path imports this module.
"""

from __future__ import annotations

import math

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, d) rows scaled to unit L2 norm, float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _map(d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros_like(d)
    return (d - lo) / (hi - lo)


def _offdiag(m: np.ndarray) -> np.ndarray:
    return m[~np.eye(m.shape[0], dtype=bool)]


def resolve_bounds(
    profile: str | tuple, a: np.ndarray, b: np.ndarray | None
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float] | None]:
    """(feature, image, text) bounds on cosine distance for a profile, from dense matrices.

    ``profile`` is a name or a (feature, image, text) tuple of (lo, hi) pairs.
    """
    if not isinstance(profile, str):
        return profile
    if profile == "paper":
        return (1 - 0.45, 1 - 0.2), (0.0, 1.0), (0.0, 1.0) if b is not None else None
    if profile == "half":
        return (0.0, 2.0), (0.0, 2.0), (0.0, 2.0) if b is not None else None
    if profile == "minmax":
        ua = unit_rows(a)
        n = ua.shape[0]
        feature = (0.0, 0.0)
        image = (0.0, 0.0)
        text = None if b is None else (0.0, 0.0)
        if b is not None and b.shape[1] == a.shape[1]:
            d = 1.0 - np.sum(ua * unit_rows(b), axis=1)
            feature = (float(d.min()), float(d.max()))
        if n > 1:
            da = _offdiag(1.0 - ua @ ua.T)
            image = (float(da.min()), float(da.max()))
            if b is not None:
                ub = unit_rows(b)
                db = _offdiag(1.0 - ub @ ub.T)
                text = (float(db.min()), float(db.max()))
        return feature, image, text
    raise ValueError(profile)


def alignment_difficulty(
    a: np.ndarray,
    b: np.ndarray | None = None,
    *,
    labels: np.ndarray | None = None,
    true_labels: np.ndarray | None = None,
    alpha: float = 0.8,
    profile: str | tuple = "paper",
) -> dict[str, object]:
    """AD, its two terms and per-sample terms, straight from the definitions (dense, float64).

    Returns a dict with ``ad``, ``feature``, ``structure``, ``d_ab``, ``d_s``, ``ad_xy`` and the
    ``bounds`` used.
    """
    ua = unit_rows(a)
    n = ua.shape[0]
    feature_b, image_b, text_b = resolve_bounds(profile, a, b)
    dist_a = _map(1.0 - ua @ ua.T, *image_b)
    if labels is None:
        ub = unit_rows(b)
        dist_b = _map(1.0 - ub @ ub.T, *text_b)
        if ub.shape[1] == ua.shape[1]:
            d_ab = np.clip(_map(1.0 - np.sum(ua * ub, axis=1), *feature_b), 0.0, 1.0)
        else:
            d_ab = np.zeros(n)
    else:
        labels = np.asarray(labels)
        dist_b = (labels[:, None] != labels[None, :]).astype(np.float64)
        d_ab = (
            np.zeros(n)
            if true_labels is None
            else (labels != np.asarray(true_labels)).astype(np.float64)
        )
    diff = np.abs(dist_a - dist_b)
    np.fill_diagonal(diff, 0.0)  # diagonal terms are 0 by definition
    d_s = diff.sum(axis=1) / n
    feature = float(d_ab.mean())
    structure = float(diff.sum() / n**2)
    return {
        "ad": alpha * feature + (1 - alpha) * structure,
        "feature": feature,
        "structure": structure,
        "d_ab": d_ab,
        "d_s": d_s,
        "ad_xy": alpha * d_ab + (1 - alpha) * d_s,
        "bounds": (feature_b, image_b, text_b),
    }


def authors_algorithm(a: np.ndarray, b: np.ndarray, alpha: float = 0.8) -> dict[str, float]:
    """AD as the Implosion authors' published script computes it, row by row.

    Feature: s_i = cos(a_i, b_i), D = 1 - clip((s_i - 0.2) * 4, 0, 1), averaged.
    Structure: for each i, |cos(a_i, a_k) - cos(b_i, b_k)| summed over k > i (one
    matrix-vector product per row), the total times 2 / N^2.
    Works in the dtype of the inputs (float32 inputs give the authors' speed).
    """
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    n = a.shape[0]
    s = np.sum(a * b, axis=1)
    feature = float(np.mean(1.0 - np.clip((s - 0.2) * 4.0, 0.0, 1.0)))
    total = 0.0
    for i in range(n - 1):
        total += float(np.abs(a[i + 1 :] @ a[i] - b[i + 1 :] @ b[i]).sum())
    structure = 2.0 * total / n**2
    return {
        "ad": alpha * feature + (1 - alpha) * structure,
        "feature": feature,
        "structure": structure,
    }


def concept_label_ad(
    image_concept: np.ndarray, text_concept: np.ndarray, alpha: float = 0.8
) -> dict[str, float]:
    """Exact AD under the binary metrics of Theorem 4.2 (Appendix 8.4), by counting.

    Sample i has an image of concept u_i and a caption of concept v_i. D_img:txt = [u_i != v_i],
    D_img(i, k) = [u_i != u_k], D_txt(i, k) = [v_i != v_k]. A pair (i, k) contributes 1 to the
    structure sum iff exactly one of u_i = u_k, v_i = v_k holds, so over ordered pairs i != k

        sum |D_img - D_txt| = S_u + S_v - 2 S_uv,   S_x = sum_c c_x (c_x - 1),

    with c_x the number of samples per value of u, of v, and of the pair (u, v).
    """
    u = np.asarray(image_concept)
    v = np.asarray(text_concept)
    n = u.shape[0]

    def same_pairs(keys: np.ndarray) -> int:
        _, counts = np.unique(keys, axis=0, return_counts=True)
        return int(np.sum(counts * (counts - 1)))

    s_u = same_pairs(u)
    s_v = same_pairs(v)
    s_uv = same_pairs(np.stack([u, v], axis=1))
    structure = (s_u + s_v - 2 * s_uv) / n**2
    feature = float(np.mean(u != v))
    return {
        "ad": alpha * feature + (1 - alpha) * structure,
        "feature": feature,
        "structure": structure,
    }


def theorem_4_2_setting_ad(
    n_concepts: int, per_concept: int, poisoned: int, m: int, alpha: float = 0.8
) -> float:
    """Closed-form AD of the Theorem 4.2 setting with all targets unpoisoned and distinct.

    C concepts of n samples each (N = C n); C_P concepts each have m of their samples replaced
    by poisons whose image shows a distinct, unpoisoned target concept (needs 2 C_P <= C).
    Counting as in :func:`concept_label_ad`: text counts stay n; a poisoned concept keeps n - m
    images and each target gains m, so

        S_v = C n (n-1)
        S_u = (C - 2 C_P) n (n-1) + C_P (n-m)(n-m-1) + C_P (n+m)(n+m-1)
        S_uv = (C - C_P) n (n-1) + C_P (n-m)(n-m-1) + C_P m (m-1)

    and structure = (S_u + S_v - 2 S_uv) / N^2 = 2 C_P m (2n - m) / N^2: the 2 m (n - m) ordered
    pairs of a poison with its own concept's benign samples (same caption concept, other image)
    plus the 2 m n pairs of a poison with its target's samples (same image concept, other
    caption). feature = C_P m / N. Eq. 5 keeps 4 m (n - m) of these, hence a lower bound.
    """
    c, n, cp = n_concepts, per_concept, poisoned
    if 2 * cp > c or m > n:
        raise ValueError("the setting needs 2 * poisoned <= n_concepts and m <= per_concept")
    big_n = c * n
    s_v = c * n * (n - 1)
    s_u = (c - 2 * cp) * n * (n - 1) + cp * (n - m) * (n - m - 1) + cp * (n + m) * (n + m - 1)
    s_uv = (c - cp) * n * (n - 1) + cp * (n - m) * (n - m - 1) + cp * m * (m - 1)
    structure = (s_u + s_v - 2 * s_uv) / big_n**2
    feature = cp * m / big_n
    return alpha * feature + (1 - alpha) * structure


def theorem_4_2_lower_bound(
    n_concepts: int, per_concept: int, poisoned: int, m: int, alpha: float = 0.8
) -> float:
    """Eq. 5 as printed: alpha m C_P / N + (2(1-alpha) m (n-m) / N^2) * 2 C_P.

    Eq. 5 already carries alpha and (1 - alpha) inside; it bounds the AD of the setting from
    below.
    """
    big_n = n_concepts * per_concept
    n, m, cp = per_concept, m, poisoned
    return alpha * m * cp / big_n + (4 * (1 - alpha) * m * (n - m) / big_n**2) * cp


# ---------------------------------------------------------------------------------------------
# Screening references (alignscope.screen): every suspicion score and detection metric by
# direct enumeration, written from the docstrings of screen/scores.py and screen/evaluation.py.
# ---------------------------------------------------------------------------------------------


def cosine_distances(x: np.ndarray) -> np.ndarray:
    """(N, N) cosine distances 1 - cos(x_i, x_j), float64."""
    u = unit_rows(x)
    return 1.0 - u @ u.T


def nearest_others(x: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each row's k nearest *other* rows by cosine distance, nearest first.

    A plain sort of every row of the dense distance matrix; ties go to the lower index.
    """
    d = cosine_distances(x)
    n = d.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, {n - 1}], got {k}")
    rows = []
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: (d[i, j], j))
        rows.append(others[:k])
    return np.array(rows, dtype=np.int64)


def screen_alignment(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """D_img:txt per pair under the ``paper`` profile, in the authors' form:
    1 - clip((cos(x_i, y_i) - 0.2) * 4, 0, 1)."""
    s = np.sum(unit_rows(image) * unit_rows(text), axis=1)
    return 1.0 - np.clip((s - 0.2) * 4.0, 0.0, 1.0)


def screen_concept_consistency(image: np.ndarray, text: np.ndarray, k: int) -> np.ndarray:
    """1 - (caption agreement + image agreement) / 2 per pair.

    Caption agreement of i: the mean cosine between caption i and the captions of the k images
    nearest to image i. Image agreement of i: the mean cosine between image i and the images of
    the k captions nearest to caption i.
    """
    cos_img = 1.0 - cosine_distances(image)
    cos_txt = 1.0 - cosine_distances(text)
    near_img, near_txt = nearest_others(image, k), nearest_others(text, k)
    n = cos_img.shape[0]
    out = np.empty(n)
    for i in range(n):
        caption_agreement = np.mean([cos_txt[i, j] for j in near_img[i]])
        image_agreement = np.mean([cos_img[i, j] for j in near_txt[i]])
        out[i] = 1.0 - 0.5 * (caption_agreement + image_agreement)
    return out


def screen_cross_view(view1: np.ndarray, view2: np.ndarray, k: int) -> np.ndarray:
    """Neighbourhood D_s: per row, the mean of |d_1(i, j) - d_2(i, j)| (raw cosine distances)
    over the k nearest neighbours of i in view 1 followed by those in view 2; a neighbour found
    in both views is counted twice (2k terms)."""
    d1, d2 = cosine_distances(view1), cosine_distances(view2)
    near1, near2 = nearest_others(view1, k), nearest_others(view2, k)
    n = d1.shape[0]
    out = np.empty(n)
    for i in range(n):
        terms = [abs(d1[i, j] - d2[i, j]) for j in list(near1[i]) + list(near2[i])]
        out[i] = sum(terms) / len(terms)
    return out


def _sorted_other_distances(x: np.ndarray) -> np.ndarray:
    """(N, N-1) cosine distances from each row to every other row, ascending."""
    d = cosine_distances(x)
    n = d.shape[0]
    return np.array([np.sort(np.delete(d[i], i)) for i in range(n)])


def screen_k_distance(x: np.ndarray, k: int) -> np.ndarray:
    """Cosine distance from each row to its k-th nearest other row (k = 1: the nearest)."""
    return _sorted_other_distances(x)[:, k - 1]


def screen_lid(x: np.ndarray, k: int) -> np.ndarray:
    """Maximum-likelihood local intrinsic dimensionality from the k nearest cosine distances
    d_1 <= ... <= d_k: -1 / mean_{j < k} log(d_j / d_k). Needs k >= 2 and distinct, non-zero
    distances (no duplicate rows)."""
    if k < 2:
        raise ValueError("the LID estimate needs k >= 2")
    d = _sorted_other_distances(x)[:, :k]
    if np.any(d <= 0):
        raise ValueError("duplicate rows: a zero distance has no logarithm")
    return np.array([-1.0 / np.mean(np.log(row[:-1] / row[-1])) for row in d])


def screening_scores(
    image: np.ndarray,
    text: np.ndarray | None = None,
    second_view: np.ndarray | None = None,
    *,
    scores: tuple[str, ...],
    k: int = 10,
    alpha: float = 0.8,
) -> dict[str, np.ndarray]:
    """Every requested screening score by brute force; k is used as given (<= N - 1)."""
    out: dict[str, np.ndarray] = {}
    if {"d_s", "ad_xy"} & set(scores):
        exact = alignment_difficulty(image, text, alpha=alpha, profile="paper")
    for name in scores:
        if name == "alignment":
            out[name] = screen_alignment(image, text)  # type: ignore[arg-type]
        elif name in ("d_s", "ad_xy"):
            out[name] = np.asarray(exact[name])
        elif name == "concept_consistency":
            out[name] = screen_concept_consistency(image, text, k)  # type: ignore[arg-type]
        elif name == "cross_view":
            out[name] = screen_cross_view(image, second_view, k)  # type: ignore[arg-type]
        elif name == "k_distance":
            out[name] = screen_k_distance(image, k)
        elif name == "lid":
            out[name] = screen_lid(image, k)
        else:
            raise ValueError(name)
    return out


def landmark_standard_error(image: np.ndarray, text: np.ndarray, landmarks: int) -> np.ndarray:
    """Standard error of a landmark estimate of D_s(i) under the ``paper`` profile.

    The estimate averages X = |D_img(i, k) - D_txt(i, k)| [k != i] over ``landmarks`` columns
    k drawn uniformly from [N] with replacement, so its variance is Var(X) / S with
    Var(X) = (1/N) sum_k X_k^2 - D_s(i)^2 (a population variance: exact, not estimated).
    """
    diff = np.abs(cosine_distances(image) - cosine_distances(text))
    np.fill_diagonal(diff, 0.0)
    n = diff.shape[0]
    mean = diff.sum(axis=1) / n
    var = (diff**2).sum(axis=1) / n - mean**2
    return np.sqrt(np.maximum(var, 0.0) / landmarks)


def _check_truth(score: np.ndarray, poisoned: np.ndarray) -> tuple[list[float], list[bool]]:
    s = [float(v) for v in np.asarray(score, dtype=np.float64)]
    y = [bool(v) for v in np.asarray(poisoned)]
    if len(s) != len(y) or all(y) or not any(y):
        raise ValueError("needs equal lengths and both classes")
    return s, y


def detection_auroc(score: np.ndarray, poisoned: np.ndarray) -> float:
    """P(a poison scores above a benign sample) over every poison x benign pair, ties 1/2."""
    s, y = _check_truth(score, poisoned)
    pos = [v for v, p in zip(s, y, strict=True) if p]
    neg = [v for v, p in zip(s, y, strict=True) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def detection_auprc(score: np.ndarray, poisoned: np.ndarray) -> float:
    """Average precision with tied scores grouped: the mean over poisons p of the precision of
    the set {i : s_i >= s_p} (every sample tied with p is flagged together with it)."""
    s, y = _check_truth(score, poisoned)
    precisions = []
    for sp, p in zip(s, y, strict=True):
        if not p:
            continue
        flagged = [q for v, q in zip(s, y, strict=True) if v >= sp]
        precisions.append(sum(flagged) / len(flagged))
    return sum(precisions) / len(precisions)


def detection_tpr_at_fpr(score: np.ndarray, poisoned: np.ndarray, fpr: float) -> float:
    """The largest share of poisons flagged by a rule ``score > t`` that flags at most ``fpr``
    of the benign samples (as a share: count / n_benign <= fpr), over every t in the scores
    and -inf."""
    s, y = _check_truth(score, poisoned)
    n_pos, n_neg = sum(y), len(y) - sum(y)
    best = 0.0
    for t in [-np.inf, *s]:
        benign_flagged = sum(1 for v, p in zip(s, y, strict=True) if not p and v > t)
        if benign_flagged / n_neg <= fpr:
            poisons_flagged = sum(1 for v, p in zip(s, y, strict=True) if p and v > t)
            best = max(best, poisons_flagged / n_pos)
    return best


def detection_tradeoff(
    score: np.ndarray, poisoned: np.ndarray, points: int = 101
) -> dict[str, list[float]]:
    """For X = i / (points - 1), i = 0..points-1: the smallest share of benign samples removed
    by a rule ``score >= t`` that removes at least X of the poisons (t over the scores and
    +inf). "At least X" is decided in integers: removed * (points - 1) >= i * n_poisons."""
    s, y = _check_truth(score, poisoned)
    n_pos, n_neg = sum(y), len(y) - sum(y)
    # (poisons removed, benign removed) by each candidate threshold
    rules = [
        (
            sum(1 for v, p in zip(s, y, strict=True) if p and v >= t),
            sum(1 for v, p in zip(s, y, strict=True) if not p and v >= t),
        )
        for t in [np.inf, *s]
    ]
    xs, benign = [], []
    for i in range(points):
        feasible = [b for poisons, b in rules if poisons * (points - 1) >= i * n_pos]
        xs.append(i / (points - 1))
        benign.append(min(feasible) / n_neg)
    return {"poison_removed": xs, "benign_removed": benign}


def detection_metrics(score: np.ndarray, poisoned: np.ndarray) -> dict[str, object]:
    """Every metric `alignscope screen` reports for one score, by the references above."""
    return {
        "auroc": detection_auroc(score, poisoned),
        "auprc": detection_auprc(score, poisoned),
        "tpr_at_1pct_fpr": detection_tpr_at_fpr(score, poisoned, 0.01),
        "tpr_at_5pct_fpr": detection_tpr_at_fpr(score, poisoned, 0.05),
        "tradeoff": detection_tradeoff(score, poisoned),
    }


# ---------------------------------------------------------------------------------------------
# The CUDA engine's arithmetic on the CPU (tests of backend="cuda" without a GPU): the fp16
# input rounding and tile schedule README "CUDA" describes, densely in float64; no kernel code.
# ---------------------------------------------------------------------------------------------


def cuda_kernel_pair_abs_sum(
    rows: np.ndarray,
    cols: np.ndarray | None = None,
    zscale: np.ndarray | None = None,
    c0: float = 0.0,
    row_labels: np.ndarray | None = None,
    col_labels: np.ndarray | None = None,
    c_label: float = 0.0,
    row_ids: np.ndarray | None = None,
    col_ids: np.ndarray | None = None,
    block: int | None = None,
    device: int = 0,
    *,
    tile: int = 128,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``alignscope._cuda.pair_abs_sum_host`` (same arguments, same result), densely in float64.

    The kernels round z = zscale * rows (a float32 product) and w = rows (symmetric form) or
    w = cols to fp16, then sum |c0 + <z_i, w_k> + c_label [l_i != l_k]| per row (and per
    column) in float64. fp16 x fp16 products are exact in the kernels' fp32 accumulators, so the
    input rounding is the error modelled here; the rounded operands are multiplied in float64.
    A value beyond the fp16 range becomes inf, as the kernels' conversion makes it.

    Forms: symmetric (``cols`` None) over the pairs i != k, with the kernels' schedule of
    ``tile``-row tiles: a pair in two different tiles is computed once, as z_i . w_k with i in
    the lower tile, and counted for both rows; a pair inside one tile is computed both ways.
    Rectangular: row and column sums; pairs with equal ids contribute 0. Block (``block``):
    only the diagonal blocks of ``block`` rows, row sums only.

    Returns (row_sums (n,), col_sums (m,) or None for the symmetric and block forms).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        r32 = np.asarray(rows, dtype=np.float32)
        scaled = r32 if zscale is None else r32 * np.asarray(zscale, dtype=np.float32)
        z = scaled.astype(np.float16).astype(np.float64)
        w_src = r32 if cols is None else np.asarray(cols, dtype=np.float32)
        w = w_src.astype(np.float16).astype(np.float64)
        values = float(np.float32(c0)) + z @ w.T
        if row_labels is not None:
            lr = np.asarray(row_labels)
            lc = lr if col_labels is None else np.asarray(col_labels)
            values = values + float(np.float32(c_label)) * (lr[:, None] != lc[None, :])
        terms = np.abs(values)
    n = terms.shape[0]
    if cols is None:
        np.fill_diagonal(terms, 0.0)
        tile_of = np.arange(n) // tile
        # (i, k) with i in a later tile than k: the kernel computed it as (k, i)
        later = tile_of[:, None] > tile_of[None, :]
        terms[later] = terms.T[later]
        return terms.sum(axis=1), None
    if row_ids is not None:
        terms[np.asarray(row_ids)[:, None] == np.asarray(col_ids)[None, :]] = 0.0
    if block is not None:
        block_of = np.arange(n) // block
        terms[block_of[:, None] != block_of[None, :]] = 0.0
        return terms.sum(axis=1), None
    return terms.sum(axis=1), terms.sum(axis=0)


# ---------------------------------------------------------------------------------------------
# Replication and poisoning references (issue #25): DCR statistics, perturbation measurements,
# the BadNets-1 trigger and the Nightshade step schedule, each from its written description.
# ---------------------------------------------------------------------------------------------


def percentile_linear(x: np.ndarray, p: float) -> float:
    """The p-th percentile of x with linear interpolation between order statistics.

    Hyndman & Fan's definition 7 (NumPy's and R's default): sort x, take the fractional rank
    h = (n - 1) p / 100 and interpolate between x_(floor h) and x_(floor h + 1).
    """
    v = sorted(float(t) for t in np.asarray(x, dtype=np.float64).ravel())
    h = (len(v) - 1) * p / 100.0
    lo = int(np.floor(h))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (h - lo) * (v[hi] - v[lo])


def dcr_statistics(
    x: np.ndarray,
    percentiles: tuple[int, ...] = (50, 75, 90, 95, 99),
    thresholds: tuple[float, ...] = (0.5, 0.75),
) -> dict[str, float]:
    """DCR-style statistics of similarities x, finite values only, by plain summation.

    count, mean, the population standard deviation (divisor n), the percentiles of
    :func:`percentile_linear`, and for each threshold t the fraction of values strictly above
    it (Somepalli et al. count a generation as a replica when its similarity is *above* 0.5,
    so a value equal to t does not count). No finite value gives ``{"count": 0}``.
    """
    v = [float(t) for t in np.asarray(x, dtype=np.float64).ravel() if np.isfinite(t)]
    n = len(v)
    if n == 0:
        return {"count": 0}
    mean = sum(v) / n
    out: dict[str, float] = {
        "count": n,
        "mean": mean,
        "std": float(np.sqrt(sum((t - mean) ** 2 for t in v) / n)),
    }
    for p in percentiles:
        out[f"p{p}"] = percentile_linear(np.asarray(v), p)
    for t in thresholds:
        out[f"fraction_above_{t}"] = sum(1 for s in v if s > t) / n
    return out


def perturbation_measurements(original: np.ndarray, poisoned: np.ndarray) -> dict[str, float]:
    """L-inf, L2 and PSNR of a perturbation of uint8 images, in [0, 1] pixel units.

    Exact integer differences d (in 8-bit steps) over every pixel and channel, n of them:
    linf = max |d| / 255, l2 = sqrt(sum d^2) / 255, MSE = sum d^2 / (255^2 n) and
    PSNR = 10 log10(1 / MSE) dB (peak 1), infinite when the images are equal.
    """
    d = np.asarray(poisoned, dtype=np.int64) - np.asarray(original, dtype=np.int64)
    squares = int(np.sum(d * d))  # exact in integers
    n = d.size
    return {
        "linf": int(np.max(np.abs(d))) / 255.0,
        "l2": float(np.sqrt(squares)) / 255.0,
        "psnr": np.inf if squares == 0 else float(10.0 * np.log10(255.0**2 * n / squares)),
    }


def badnets1_reference(image: np.ndarray) -> np.ndarray:
    """BiBadDiff's BadNets-1 trigger on an HWC uint8 image, pixel by pixel.

    A square of side p = min(H, W) // 10 in the bottom-right corner is painted black, except
    the pixels (r, c) of the square (r, c from its top-left) whose offset from the
    anti-diagonal, r + c - (p - 1), lies in Python's range(-p // 4, p // 4) (floor division,
    so -p // 4 = -ceil(p / 4)), which are white: BiBadDiff's released code loops over exactly
    these offsets, about 43% of the square white at 512 px. Every other pixel is unchanged.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    h, w = out.shape[:2]
    p = min(h, w) // 10
    offsets = set(range(-p // 4, p // 4))
    for r in range(p):
        for c in range(p):
            out[h - p + r, w - p + c, :] = 255 if r + c - (p - 1) in offsets else 0
    return out


def nightshade_step_sizes(budget: float, steps: int) -> np.ndarray:
    """The sign-PGD step size of each of ``steps`` iterations: linear from ``budget`` at the
    first step to ``budget / 100`` at the last (the released Nightshade generator's schedule;
    a single step uses the budget)."""
    if steps == 1:
        return np.array([budget])
    first, last = budget, budget / 100.0
    return np.array([first + (last - first) * i / (steps - 1) for i in range(steps)])


# ---------------------------------------------------------------------------------------------
# VAE latent views (embed --vae): the input pixels, the pooled grid and the mild purification,
# written from alignscope.embed.vae's docstrings, not from its code
# ---------------------------------------------------------------------------------------------


def vae_input_pixels(image: object, size: int) -> np.ndarray:
    """The (3, size, size) float64 pixels in [-1, 1] that the VAE sees for an RGB PIL image:
    the short side resized to ``size`` (PIL bilinear, the long side scaled by the same factor
    and rounded), the centred size x size square cropped, then 2 * (value / 255) - 1."""
    from PIL import Image

    w, h = image.size  # type: ignore[attr-defined]
    scale = size / min(w, h)
    resized = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)  # type: ignore[attr-defined]
    pixels = np.asarray(resized.convert("RGB"), dtype=np.float64)
    top, left = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
    square = pixels[top : top + size, left : left + size]
    return (2.0 * square / 255.0 - 1.0).transpose(2, 0, 1)


def adaptive_block_means(latent: np.ndarray, grid: int) -> np.ndarray:
    """(C, H, W) -> (C * grid * grid,) float64 mean of each of grid x grid cells, flattened
    channel-major then row-major. Cell (i, j) covers rows floor(i H / grid) up to (excluding)
    ceil((i + 1) H / grid), and the same for columns: equal blocks when grid divides H, else
    neighbouring cells overlap by one row or column (adaptive average pooling)."""
    x = np.asarray(latent, dtype=np.float64)
    c, h, w = x.shape
    out = np.empty((c, grid, grid))
    for i in range(grid):
        r0, r1 = (i * h) // grid, -((-(i + 1) * h) // grid)
        for j in range(grid):
            c0, c1 = (j * w) // grid, -((-(j + 1) * w) // grid)
            for ch in range(c):
                out[ch, i, j] = x[ch, r0:r1, c0:c1].mean()
    return out.reshape(-1)


def mild_purification(image: object) -> object:
    """An RGB PIL image after the mild purification, step by step: saved as JPEG at quality 75
    and decoded; resized (bicubic) to 3/4 of each side, rounded half up, then back to its
    size; blurred with PIL's Gaussian blur of radius 0.5."""
    import io

    from PIL import Image, ImageFilter

    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=75)  # type: ignore[attr-defined]
    decoded = Image.open(encoded)
    decoded.load()
    w, h = decoded.size
    quarter_down = decoded.resize(((3 * w + 2) // 4, (3 * h + 2) // 4), resample=Image.BICUBIC)
    restored = quarter_down.resize((w, h), resample=Image.BICUBIC)
    return restored.filter(ImageFilter.GaussianBlur(radius=0.5))


# ---------------------------------------------------------------------------------------------
# Screening decisions (screen/decisions.py): the threshold at a target FPR and the few-shot
# model's rank features, by their definitions, in plain Python loops.
# ---------------------------------------------------------------------------------------------


def fpr_threshold_definition(values: np.ndarray, fpr: float) -> float:
    """The smallest t among the values (and -inf) for which at most a share ``fpr`` of the
    values lie strictly above t, the share compared as count / n <= fpr."""
    v = [float(x) for x in np.asarray(values, dtype=np.float64)]
    feasible = [t for t in [-np.inf, *v] if sum(1 for x in v if x > t) / len(v) <= fpr]
    return min(feasible)


def rank_logit_features(scores: dict[str, np.ndarray]) -> np.ndarray:
    """(N, S): per score and row, with r = (number of rows strictly below) + (number tied,
    itself included, + 1) / 2 its mean rank, the log-odds log(F / (1 - F)) of
    F = (r - 1/2) / N."""
    columns = []
    for s in scores.values():
        v = [float(x) for x in np.asarray(s, dtype=np.float64)]
        n = len(v)
        col = []
        for x in v:
            below = sum(1 for y in v if y < x)
            tied = sum(1 for y in v if y == x)
            f = (below + (tied + 1) / 2 - 0.5) / n
            col.append(np.log(f / (1 - f)))
        columns.append(col)
    return np.asarray(columns, dtype=np.float64).T


# ---------------------------------------------------------------------------------------------
# Screening against peers (screen/relative.py) and the combined ranking (screen/combine.py):
# each score from its docstring, in plain loops and sorts over nearest_others.
# ---------------------------------------------------------------------------------------------


def _median_of(values: list[float]) -> float:
    """Median of a list: the middle value, or the mean of the two middle values."""
    v = sorted(values)
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2.0


def relative_alignment_definition(
    image: np.ndarray, text: np.ndarray, k: int, trim: float = 0.1, rounds: int = 2
) -> np.ndarray:
    """(N,) ref_i - cos(x_i, y_i). ref_i starts as the median CLIP score cos(x_j, y_j) over the
    k nearest other captions j of y_i; each of ``rounds`` rounds then makes it the mean over
    those j that are not in the top ``trim`` share of the current scores ref - cos, a row
    being in the top share when its score is above the (1 - trim) quantile q of the scores
    (linear interpolation between order statistics: position (N - 1)(1 - trim) counted from
    0 in the sorted scores). Every row must keep a peer (the docstring defines no fallback)."""
    return alignment_residual_definition(image, text, k, trim, rounds)[0]


def alignment_residual_definition(
    image: np.ndarray, text: np.ndarray, k: int, trim: float = 0.1, rounds: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, spread, peers): score as :func:`relative_alignment_definition`; spread_i the root
    mean square of cos(x_j, y_j) - ref_i over the peers j trusted in the last round (those the
    final ref_i averages), peers_i their number. Every row must keep a peer."""
    x, y = unit_rows(image), unit_rows(text)
    n = x.shape[0]
    agree = [float(np.dot(x[i], y[i])) for i in range(n)]
    near = nearest_others(text, min(k, n - 1))
    ref = [_median_of([agree[j] for j in near[i]]) for i in range(n)]
    kept: list[list[float]] = []
    for _ in range(rounds):
        score = [ref[i] - agree[i] for i in range(n)]
        ordered = sorted(score)
        at = (n - 1) * (1.0 - trim)
        low = math.floor(at)
        high = min(low + 1, n - 1)
        q = ordered[low] + (at - low) * (ordered[high] - ordered[low])
        in_top = [s > q for s in score]
        kept = [[agree[j] for j in near[i] if not in_top[j]] for i in range(n)]
        if not all(kept):
            raise ValueError("a row has no trusted peer; the definition does not cover it")
        ref = [sum(v) / len(v) for v in kept]
    spread = [math.sqrt(sum((a - ref[i]) ** 2 for a in kept[i]) / len(kept[i])) for i in range(n)]
    peers = [len(v) for v in kept]
    return np.array([ref[i] - agree[i] for i in range(n)]), np.array(spread), np.array(peers)


def studentized_alignment_definition(
    image: np.ndarray, text: np.ndarray, k: int, trim: float = 0.1, rounds: int = 2
) -> np.ndarray:
    """(N,) score_i / s_i with (score, spread, peers) of :func:`alignment_residual_definition`,
    typical the median of the spreads that are > 0 and s_i = sqrt((peers_i spread_i^2 +
    typical^2) / (peers_i + 1)) (the typical spread counted as one more peer). Every row must
    keep a peer."""
    score, spread, peers = alignment_residual_definition(image, text, k, trim, rounds)
    typical = float(np.median([v for v in spread if v > 0]))
    return np.array(
        [
            score[i] / math.sqrt((peers[i] * spread[i] ** 2 + typical**2) / (peers[i] + 1))
            for i in range(len(score))
        ]
    )


def view_residual_definition(image: np.ndarray, view: np.ndarray, k: int) -> np.ndarray:
    """(N,) r_i' S^-1 r_i with r_i = v_i - mean of v_j over the k nearest other CLIP images j
    of x_i (v: unit rows of the view) and S = (1/N) sum_i r_i r_i', the residuals' covariance
    about zero (the value a residual has when the neighbours explain the view). Needs S
    invertible (more rows than view dimensions)."""
    v = unit_rows(view)
    n = v.shape[0]
    near = nearest_others(image, min(k, n - 1))
    r = [v[i] - sum(v[j] for j in near[i]) / len(near[i]) for i in range(n)]
    s = sum(np.outer(ri, ri) for ri in r) / n
    return np.array([float(ri @ np.linalg.solve(s, ri)) for ri in r])


def purification_shift_definition(
    image: np.ndarray, latent: np.ndarray, purified: np.ndarray, k: int
) -> np.ndarray:
    """(N,) shift_i minus the median shift_j over the k nearest other CLIP images j of x_i,
    with shift_i = log(|z_i - z~_i| / |z_i|) (needs z~_i != z_i)."""
    z, zt = np.asarray(latent, dtype=np.float64), np.asarray(purified, dtype=np.float64)
    n = z.shape[0]
    shift = [float(np.log(np.linalg.norm(z[i] - zt[i]) / np.linalg.norm(z[i]))) for i in range(n)]
    near = nearest_others(image, min(k, n - 1))
    return np.array([shift[i] - _median_of([shift[j] for j in near[i]]) for i in range(n)])


def upper_tail_definition(score: np.ndarray) -> np.ndarray:
    """(N,) the share of rows whose score is >= each row's score."""
    s = [float(v) for v in np.asarray(score, dtype=np.float64)]
    return np.array([sum(1 for t in s if t >= v) / len(s) for v in s])


def concentration_definition(
    score: np.ndarray, neighbours: list[np.ndarray], top: float = 0.02
) -> float:
    """The top rows are the max(1, ceil(top N)) highest scores (ties to the lower index); per
    (N, k) table (entries < 0 missing), the mean over top rows i with a neighbour of
    |N(i) & top| / |N(i)|, over the top rows' share of N (what a scattered top set would
    find); the max over tables that have any neighbour, 1 without."""
    s = [float(v) for v in np.asarray(score, dtype=np.float64)]
    n = len(s)
    count = max(1, int(np.ceil(top * n)))
    chosen = set(sorted(range(n), key=lambda i: (-s[i], i))[:count])
    found = []
    for table in neighbours:
        hits = []
        for i in chosen:
            near = [int(j) for j in table[i] if int(j) >= 0]
            if near:
                hits.append(sum(1 for j in near if j in chosen) / len(near))
        if hits:
            found.append(sum(hits) / len(hits) / (count / n))
    return max(found) if found else 1.0


def combined_terms(
    scores: dict[str, np.ndarray],
    neighbours: list[np.ndarray] | None = None,
    structure: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The combined score's parts: (max_s w_s L_s(i), sum_s w_s L_s(i), weights), with
    L_s = -log of the upper tail of score s and w_s the concentration of structure[s] (of
    score s where structure has none) over the largest (all 1 when no input is concentrated
    at all)."""
    structure = structure or {}
    level = {
        name: concentration_definition(structure.get(name, v), neighbours or [])
        for name, v in scores.items()
    }
    top = max(level.values())
    weights = {name: (value / top if top > 0 else 1.0) for name, value in level.items()}
    logs = np.array(
        [-np.log(upper_tail_definition(v)) * weights[name] for name, v in scores.items()]
    )
    return logs.max(axis=0), logs.sum(axis=0), weights


# ---------------------------------------------------------------------------------------------
# view_density (screening, #15): written from the docstring of screen.relative.view_density
# ---------------------------------------------------------------------------------------------


def whitened_rows_definition(view: np.ndarray) -> np.ndarray:
    """(N, r) centred rows in principal coordinates with unit variance per axis, from the SVD
    of the centred matrix (singular values below 1e-9 of the largest variance dropped)."""
    x = np.asarray(view, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    var = sv**2 / x.shape[0]
    keep = var > 1e-9 * var.max()
    return x @ vt[keep].T / np.sqrt(var[keep])


def view_density_definition(image: np.ndarray, view: np.ndarray, k: int) -> np.ndarray:
    """(N,) P(mean cosine distance to the k nearest other CLIP images) minus P(the same in the
    whitened view), P(v) = share of rows whose value is <= v."""
    out = []
    for x in (np.asarray(image, dtype=np.float64), whitened_rows_definition(view)):
        d = cosine_distances(x)
        near = nearest_others(x, k)
        spread = [sum(d[i, j] for j in near[i]) / k for i in range(x.shape[0])]
        out.append(np.array([sum(1 for t in spread if t <= v) / len(spread) for v in spread]))
    return out[0] - out[1]


# ---------------------------------------------------------------------------------------------
# Triggers of #19 (BadNets-2 blend, picture patch, WaNet grid) written from BiBadDiff's
# description (its data/*/badnets_*.py: resize with PIL's default bicubic, blend at alpha,
# paste a p x p picture, WaNet with k = image size and s = 1) and the WaNet paper (k x k field
# upsampled by torch's bicubic with aligned corners); and the calibrated BadNets-2 detector
# score, shift by shift. Pixel loops, not the package's vectorised code.
# ---------------------------------------------------------------------------------------------


def pil_bicubic_resize(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """``picture`` (HWC uint8) resized to height x width by PIL's bicubic filter: the
    ``Image.resize`` default that BiBadDiff's scripts use for their pictures."""
    from PIL import Image

    bicubic = Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(np.asarray(picture)).resize((width, height), bicubic))


def blend_reference(image: np.ndarray, pattern: np.ndarray, alpha: float) -> np.ndarray:
    """BadNets-2 before rounding to 8 bits: (1 - alpha) x + alpha p at every pixel and channel,
    the pattern first resized to the image (PIL bicubic) when its size differs. float64."""
    img = np.asarray(image)
    h, w = img.shape[:2]
    pat = np.asarray(pattern)
    if pat.shape[:2] != (h, w):
        pat = pil_bicubic_resize(pat, h, w)
    out = np.empty(img.shape, dtype=np.float64)
    for r in range(h):  # row by row
        out[r] = (1 - alpha) * img[r].astype(np.float64) + alpha * pat[r].astype(np.float64)
    return out


def picture_patch_reference(image: np.ndarray, picture: np.ndarray) -> np.ndarray:
    """The picture resized to p x p (PIL bicubic), p = min(H, W) // 10, written over the
    bottom-right p x p pixels; every other pixel unchanged."""
    out = np.array(image, dtype=np.uint8, copy=True)
    h, w = out.shape[:2]
    p = min(h, w) // 10
    small = pil_bicubic_resize(picture, p, p)
    for r in range(p):
        for c in range(p):
            out[h - p + r, w - p + c, :] = small[r, c, :]
    return out


def keys_cubic(distance: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel; a = -0.75 is torch's bicubic."""
    d = abs(distance)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def bicubic_align_corners_reference(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 2-D array resized to height x width as torch's ``interpolate(mode="bicubic",
    align_corners=True)`` does: output (i, j) reads input position (i (h - 1) / (H - 1),
    j (w - 1) / (W - 1)) (0 when the output has one row or column), the 4 x 4 neighbours
    around it weighted by the cubic kernel of their distance, indices clamped to the array
    (the 2-D kernel is the product of the 1-D ones: rows first, then columns).
    """
    from fractions import Fraction

    v = np.asarray(values, dtype=np.float64)
    h, w = v.shape

    def taps(i: int, n_out: int, n_in: int) -> list[tuple[int, float]]:
        pos = Fraction(i * (n_in - 1), n_out - 1) if n_out > 1 else Fraction(0)
        base = pos.numerator // pos.denominator
        frac = float(pos - base)
        return [(min(max(base + t, 0), n_in - 1), keys_cubic(t - frac)) for t in (-1, 0, 1, 2)]

    rows = np.zeros((height, w))
    for i in range(height):
        for r, weight in taps(i, height, h):
            rows[i] += weight * v[r]
    out = np.zeros((height, width))
    for j in range(width):
        for c, weight in taps(j, width, w):
            out[:, j] += weight * rows[:, c]
    return out


def wanet_grid_reference(height: int, width: int, k: int | None, s: float, seed: int) -> np.ndarray:
    """WaNet's sampling grid, (H, W, 2) of (row, column) in [-1, 1] coordinates.

    The field: ``numpy.random.default_rng(seed).uniform(-1, 1, (2, kh, kw))`` (the package's
    documented draw; kh x kw = H x W when k is None, BiBadDiff's k = image size, else k x k),
    divided by the mean of its absolute values, resized to H x W by
    :func:`bicubic_align_corners_reference` (k given). Grid (i, j) = (-1 + 2 i / (H - 1) +
    s field_0 / H, -1 + 2 j / (W - 1) + s field_1 / W).
    """
    kh, kw = (height, width) if k is None else (k, k)
    field = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(2, kh, kw))
    field = field / np.mean(np.abs(field))
    if k is not None:
        field = np.stack([bicubic_align_corners_reference(f, height, width) for f in field])
    grid = np.empty((height, width, 2))
    cols = np.array([-1 + 2 * j / (width - 1) for j in range(width)])
    for i in range(height):  # row by row
        grid[i, :, 0] = -1 + 2 * i / (height - 1) + s * field[0, i] / height
        grid[i, :, 1] = cols + s * field[1, i] / width
    return grid


def box_residual_reference(image: np.ndarray) -> np.ndarray:
    """Each pixel minus the mean of its 3 x 3 neighbourhood, per channel, with numpy's
    "reflect" borders (index -1 reads 1, index n reads n - 2). float64."""
    a = np.asarray(image, dtype=np.float64)
    h, w = a.shape[:2]

    def reflect(q: int, n: int) -> int:
        return -q if q < 0 else (2 * (n - 1) - q if q >= n else q)

    out = np.empty_like(a)
    for r in range(h):
        for c in range(w):
            rows = [reflect(r + d, h) for d in (-1, 0, 1)]
            cols = [reflect(c + d, w) for d in (-1, 0, 1)]
            out[r, c] = a[r, c] - a[np.ix_(rows, cols)].mean(axis=(0, 1))
    return out


def badnets2_zscore_reference(
    image: np.ndarray, pattern: np.ndarray, max_control: float = 0.1
) -> float:
    """The calibrated BadNets-2 score, shift by shift: the residuals (box_residual_reference)
    of the image and of the pattern (resized to the image by PIL bicubic); c(dy, dx) = Pearson
    correlation of the image's residual with the pattern's rolled by (-dy, -dx); the controls
    are the shifts other than (0, 0) whose roll correlates with the unrolled pattern residual
    below ``max_control`` in magnitude; score = (c(0, 0) - their mean) / their population
    standard deviation."""
    img = box_residual_reference(image)
    h, w = img.shape[:2]
    pat = np.asarray(pattern)
    if pat.shape[:2] != (h, w):
        pat = pil_bicubic_resize(pat, h, w)
    res = box_residual_reference(pat)
    c0 = float(np.corrcoef(img.ravel(), res.ravel())[0, 1])
    controls = []
    for dy in range(h):
        for dx in range(w):
            if (dy, dx) == (0, 0):
                continue
            rolled = np.roll(res, (-dy, -dx), axis=(0, 1)).ravel()
            if abs(np.corrcoef(res.ravel(), rolled)[0, 1]) < max_control:
                controls.append(float(np.corrcoef(img.ravel(), rolled)[0, 1]))
    null = np.array(controls)
    return (c0 - null.mean()) / null.std()


# ---------------------------------------------------------------------------------------------
# Evaluation and attack settings of issue #19 (items 4-5): Li et al.'s timesteps and resize,
# LDM's DDIM grid, BiBadDiff's all-to-one count, the Nightshade release's step schedule and
# source crop; written from the papers' reference code as described, not from our modules
# ---------------------------------------------------------------------------------------------


def li_timesteps_reference(n: int, num_train: int) -> list[int]:
    """Li et al.'s diffusion classifier (eval_prob_adaptive.py): with T train timesteps and n
    samples, start at T // n // 2 and step by T // n below T, keeping the first n."""
    start, stride = num_train // n // 2, num_train // n
    out = []
    t = start
    while t < num_train and len(out) < n:
        out.append(t)
        t += stride
    return out


def short_side_crop_reference(image: np.ndarray, size: int, resample: int) -> np.ndarray:
    """torchvision's ``Resize(size)`` then ``CenterCrop(size)`` on a PIL image, as documented:
    the shorter side becomes ``size`` and the longer ``int(size * longer / shorter)``, resized
    by PIL with ``resample``; the crop's top-left corner is at int(round((H - size) / 2)),
    int(round((W - size) / 2)). An image already ``size`` square comes back unchanged."""
    from PIL import Image

    h, w = image.shape[:2]
    if h == w == size:
        return np.array(image, copy=True)
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    big = np.asarray(Image.fromarray(np.asarray(image)).resize((new_w, new_h), resample))
    top = round((new_h - size) / 2.0)  # Python rounds halves to even, as torchvision does
    left = round((new_w - size) / 2.0)
    return big[top : top + size, left : left + size].copy()


def ldm_ddim_timesteps(num_train: int, steps: int) -> list[int]:
    """The timesteps LDM's DDIMSampler visits (ddim_discr_method "uniform", as BiBadDiff's
    txt2img.py uses it), in sampling order: c = T // S, then 0, c, 2c, ... below T, each plus
    one, from the largest down."""
    c = num_train // steps
    return [t + 1 for t in range(0, num_train, c)][::-1]


def bibaddiff_all_to_one_count(labels: list[int], ratio: float) -> int:
    """How many images BiBadDiff's BadnetImagenette poisons: int(s * poison_rate) for s the
    number of training images, every class counted (the poisoned ones are then drawn among
    the non-target images)."""
    s = len(labels)
    return int(s * ratio)


def nightshade_release_step_sizes(budget: float, steps: int) -> list[float]:
    """The Nightshade release's (opt.py) step size at each of its iterations i = 0..T-1, in
    [0, 1] pixel units: it sets max_change = eps / 0.5 and step_size = max_change in [-1, 1]
    units and takes step_size - (step_size - step_size / 100) / T * i; halved back here."""
    max_change = budget / 0.5
    step_size = max_change
    return [(step_size - (step_size - step_size / 100) / steps * i) * 0.5 for i in range(steps)]


# --------------------------------------------------------------------------- issue #21
# Backdoor detectors (STRIP, Cognitive Distillation) on a linear model, pixel by pixel.


def strip_entropy_linear_reference(
    weight: np.ndarray, bias: np.ndarray, image: np.ndarray, overlays: list[np.ndarray]
) -> float:
    """STRIP's entropy of one image (H, W, 3) in [0, 1] under the linear classifier
    logits = weight @ (the image as C, H, W, flattened) + bias: for each overlay, every pixel
    value min(x + o, 1) (STRIP's saturating addWeighted(x, 1, o, 1)), the softmax, its
    entropy -sum p ln p; the mean over the overlays."""
    entropies = []
    h, w, c = image.shape
    for overlay in overlays:
        blend = np.zeros((c, h, w))
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    blend[ch, y, x] = min(float(image[y, x, ch]) + float(overlay[y, x, ch]), 1.0)
        logits = weight.astype(np.float64) @ blend.ravel() + bias
        p = np.exp(logits - logits.max())
        p /= p.sum()
        entropies.append(-sum(q * np.log(q) for q in p if q > 0))
    return float(np.mean(entropies))


def cd_objective_linear_reference(
    weight: np.ndarray,
    bias: np.ndarray,
    image: np.ndarray,
    mask: np.ndarray,
    colour: np.ndarray,
    gamma: float,
    beta: float,
) -> float:
    """Cognitive Distillation's objective for one image (H, W, 3) in [0, 1], a mask (H, W)
    and a colour (3,) under the linear classifier above: the mean over classes of
    |logits(x m + (1 - m) colour) - logits(x)|, plus gamma sum |m|, plus beta times the sum
    of squared differences of vertically and horizontally adjacent mask values over H W."""
    h, w, c = image.shape

    def logits(img: np.ndarray) -> np.ndarray:
        return weight.astype(np.float64) @ np.transpose(img, (2, 0, 1)).ravel() + bias

    blended = np.zeros((h, w, c))
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                m = float(mask[y, x])
                blended[y, x, ch] = image[y, x, ch] * m + (1.0 - m) * colour[ch]
    change = float(np.mean(np.abs(logits(blended) - logits(image.astype(np.float64)))))
    tv = 0.0
    for y in range(h):
        for x in range(w):
            if y + 1 < h:
                tv += (float(mask[y + 1, x]) - float(mask[y, x])) ** 2
            if x + 1 < w:
                tv += (float(mask[y, x + 1]) - float(mask[y, x])) ** 2
    return change + gamma * float(np.abs(mask).sum()) + beta * tv / (h * w)


# ---------------------------------------------------------------------------------------------
# Availability poisons and SSL (issue #23): loop re-implementations from the papers' text.
# ---------------------------------------------------------------------------------------------


def ops_search_loops(
    images: np.ndarray, labels: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One-Pixel Shortcut's search (Wu et al., ICLR 2023) with plain loops: for each class in
    order, the (row, column) and RGB-cube corner maximising the class mean of
    sum_channels |x - colour| (in [0, 1] units), among positions no earlier class took; ties go
    to the first colour in (0,0,0), (0,0,255), ..., (255,255,255) order, then row-major."""
    corners = [(r, g, b) for r in (0, 255) for g in (0, 255) for b in (0, 255)]
    h, w = images.shape[1:3]
    taken: set[tuple[int, int]] = set()
    positions = np.zeros((n_classes, 2), dtype=np.int64)
    colours = np.zeros((n_classes, 3), dtype=np.uint8)
    for k in range(n_classes):
        members = [
            img.astype(np.float64) / 255.0 for img, y in zip(images, labels, strict=True) if y == k
        ]
        best, best_at = -1.0, None
        for colour in corners:
            for r in range(h):
                for c in range(w):
                    if (r, c) in taken:
                        continue
                    total = 0.0
                    for img in members:
                        total += sum(abs(img[r, c, ch] - colour[ch] / 255.0) for ch in range(3))
                    score = total / len(members)
                    if score > best + 1e-12:
                        best, best_at = score, (r, c, colour)
        r, c, colour = best_at
        taken.add((r, c))
        positions[k] = (r, c)
        colours[k] = colour
    return positions, colours


def nt_xent_loops(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """SimCLR's NT-Xent loss (Chen et al., 2020, Eq. 1) with loops: views 2k and 2k+1 of
    example k are z1[k] and z2[k]; each of the 2N views is an anchor whose positive is the other
    view and whose denominator runs over the 2N - 1 other views; the mean over anchors."""
    views = []
    for a, b in zip(z1, z2, strict=True):
        views.append(np.asarray(a, dtype=np.float64) / np.linalg.norm(a))
        views.append(np.asarray(b, dtype=np.float64) / np.linalg.norm(b))
    n = len(views)
    total = 0.0
    for i in range(n):
        j = i + 1 if i % 2 == 0 else i - 1
        denominator = sum(
            np.exp(float(views[i] @ views[k]) / temperature) for k in range(n) if k != i
        )
        total += -np.log(np.exp(float(views[i] @ views[j]) / temperature) / denominator)
    return total / n
