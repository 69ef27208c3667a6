"""Detection metrics of a suspicion score against ground-truth poison flags."""

from __future__ import annotations

from typing import Any

import numpy as np


def _check(score: np.ndarray, poisoned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(poisoned, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"score and poisoned must be 1-D of one length; got {s.shape}, {y.shape}")
    if y.all() or not y.any():
        raise ValueError("ground truth needs both poisoned and benign rows")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    return s, y


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) with ties shared."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size)
    sorted_x = x[order]
    start = 0
    for end in range(1, x.size + 1):
        if end == x.size or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return ranks


def auroc(score: np.ndarray, poisoned: np.ndarray) -> float:
    """P(score of a poison > score of a benign sample), ties counting one half."""
    s, y = _check(score, poisoned)
    r = _ranks(s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auprc(score: np.ndarray, poisoned: np.ndarray) -> float:
    """Average precision: mean over poisons of the precision at their rank (ties grouped)."""
    s, y = _check(score, poisoned)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.flatnonzero(np.diff(s_sorted)) if s.size > 1 else np.array([], dtype=int)
    ends = np.append(distinct, s.size - 1)
    tp = np.cumsum(y_sorted)[ends]
    fp = (ends + 1) - tp
    precision = tp / (tp + fp)
    recall_gain = np.diff(np.concatenate([[0], tp])) / y.sum()
    return float(np.sum(precision * recall_gain))


def flag_budget(n: int, fpr: float) -> int:
    """The most of ``n`` benign rows a rule may flag at a false-positive rate of at most
    ``fpr``: the largest k in [0, n] with k / n <= fpr."""
    allowed = int(np.floor(fpr * n))
    # fpr * n can round across an integer (0.29 * 100 = 28.999...): decide on the share itself.
    while allowed < n and (allowed + 1) / n <= fpr:
        allowed += 1
    while allowed > 0 and allowed / n > fpr:
        allowed -= 1
    return allowed


def fpr_threshold(benign: np.ndarray, fpr: float) -> float:
    """The smallest t for which the rule ``score > t`` flags at most ``fpr`` of ``benign``:
    its (k + 1)-th largest value for k = flag_budget(n, fpr), or -inf when k = n."""
    values = np.sort(np.asarray(benign, dtype=np.float64))[::-1]
    allowed = flag_budget(values.size, fpr)
    return float(values[allowed]) if allowed < values.size else -np.inf


def tpr_at_fpr(score: np.ndarray, poisoned: np.ndarray, fpr: float) -> float:
    """Share of poisons above the threshold that flags at most ``fpr`` of benign samples."""
    s, y = _check(score, poisoned)
    return float(np.mean(s[y] > fpr_threshold(s[~y], fpr)))


def tradeoff_curve(
    score: np.ndarray, poisoned: np.ndarray, points: int = 101
) -> dict[str, list[float]]:
    """The paper's trade-off: removing everything above a threshold that removes X% of the
    poisons, which share of benign data goes too? X from 0 to 100%."""
    s, y = _check(score, poisoned)
    poison_scores = np.sort(s[y])[::-1]
    xs = np.linspace(0.0, 1.0, points)
    benign_removed = []
    for i in range(points):
        # ceil(i * n / (points - 1)) in integers: x * n can round up past an integer
        # (0.7000000000000001 * 10), which would remove one poison too many.
        count = -(-i * poison_scores.size // max(points - 1, 1))
        if count == 0:
            benign_removed.append(0.0)
            continue
        threshold = poison_scores[count - 1]
        benign_removed.append(float(np.mean(s[~y] >= threshold)))
    return {"poison_removed": xs.tolist(), "benign_removed": benign_removed}


def evaluate_scores(
    scores: dict[str, np.ndarray], poisoned: np.ndarray
) -> dict[str, dict[str, Any]]:
    """AUROC, AUPRC, TPR at 1% and 5% FPR and the trade-off curve of every score."""
    out = {}
    for name, score in scores.items():
        out[name] = {
            "auroc": auroc(score, poisoned),
            "auprc": auprc(score, poisoned),
            "tpr_at_1pct_fpr": tpr_at_fpr(score, poisoned, 0.01),
            "tpr_at_5pct_fpr": tpr_at_fpr(score, poisoned, 0.05),
            "tradeoff": tradeoff_curve(score, poisoned),
        }
    return out
