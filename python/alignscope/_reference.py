"""Slow, obviously-correct float64 numpy references. Tests compare the engine against these.

Everything here builds dense N x N matrices on purpose: it is for N of a few thousand at most.
Nothing in the package's compute path imports this module.
"""

from __future__ import annotations

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
