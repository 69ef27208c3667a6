"""Screening decisions a curator can act on: a threshold at a target false-positive rate, and a
few-shot model that combines the scores from a handful of confirmed rows.

- :func:`threshold_at_fpr`: the threshold on one score that flags (``score > t``) at most a
  share ``fpr`` of clean rows, estimated from a trusted clean subset when there is one (with a
  distribution-free upper confidence bound on the realised false-positive rate), otherwise from
  the empirical quantile of all rows.
- :func:`few_shot`: an L2-regularised logistic regression over rank-normalised scores, fitted
  on a few rows a person confirmed as poisoned or clean; invariant to any increasing rescaling
  of its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.screen.evaluation import flag_budget, fpr_threshold

BASES = ("reference-clean", "score-distribution")


@dataclass(frozen=True)
class Threshold:
    """A removal threshold at a target false-positive rate; rows with ``score > value`` are
    flagged.

    Attributes
    ----------
    value : the threshold t (float).
    fpr : the target false-positive rate.
    basis : "reference-clean" (estimated from trusted clean rows) or "score-distribution"
        (from all rows, assuming poisons are a small minority).
    n_reference : how many trusted clean rows it was estimated from (None without them).
    n_above : how many rows of the estimation sample score strictly above ``value``
        (at most floor(fpr * n); fewer when rows tie with it).
    fpr_upper_bound : with the reference basis, the one-sided ``confidence`` upper bound of the
        realised false-positive rate on clean rows from the distribution the reference rows
        were drawn from (see :func:`fpr_upper_bound`); None on the score-distribution basis,
        whose bound depends on the unknown poison rate.
    confidence : the bound's confidence level.
    """

    value: float
    fpr: float
    basis: str
    n_reference: int | None
    n_above: int
    fpr_upper_bound: float | None
    confidence: float = 0.95

    def flags(self, score: np.ndarray) -> np.ndarray:
        """(N,) bool: ``score > value`` for a (N,) score array."""
        return np.asarray(score, dtype=np.float64) > self.value


def fpr_upper_bound(n: int, k: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of an exceedance probability: the ``confidence``
    quantile of Beta(k + 1, n - k).

    If t is the (k + 1)-th largest of n scores drawn independently from a distribution F,
    the probability that a new draw from F exceeds t follows Beta(k + 1, n - k) when F is
    continuous (ties only make it smaller). So with probability at least ``confidence`` over
    the n draws, the false-positive rate of the rule ``score > t`` on clean rows is at most
    this bound. It equals the one-sided Clopper-Pearson upper limit for k exceedances in n
    trials. Computed by bisection on the binomial identity
    P(Beta(k + 1, n - k) <= p) = P(Binomial(n, p) >= k + 1), in float64.

    Parameters
    ----------
    n : sample size, n >= 1.
    k : 0 <= k <= n; k = n gives 1.
    confidence : in (0, 1).
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ValueError(f"k must be an integer in [0, {n}], got {k!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    n, k = int(n), int(k)
    if k == n:
        return 1.0
    # log C(n, i) for i = 0..k, accumulated as a sum of logs: no overflow for large n.
    i = np.arange(1, k + 1, dtype=np.float64)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log((n - i + 1) / i))])
    counts = np.arange(k + 1, dtype=np.float64)

    def cdf(p: float) -> float:  # P(Binomial(n, p) <= k), decreasing in p
        terms = log_choose + counts * math.log(p) + (n - counts) * math.log1p(-p)
        top = terms.max()
        return float(math.exp(top) * np.exp(terms - top).sum())

    lo, hi = 0.0, 1.0
    alpha = 1.0 - confidence
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if cdf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _min_rows(fpr: float) -> int:
    """The fewest rows n for which the rule may flag one of them: flag_budget(n, fpr) >= 1."""
    n = max(1, math.ceil(1.0 / fpr))
    while n > 1 and flag_budget(n - 1, fpr) >= 1:
        n -= 1
    while flag_budget(n, fpr) < 1:
        n += 1
    return n


def check_sample_size(n: int, fpr: float, *, reference: bool) -> None:
    """Refuse a sample of ``n`` rows too small for a threshold at ``fpr`` (n * fpr < 1, the
    share decided as in :func:`threshold_at_fpr`): it could not flag a single row. The message
    says how many rows are needed; ``reference`` names them trusted clean rows."""
    if flag_budget(n, fpr) < 1:
        what = "trusted clean rows" if reference else "rows"
        raise ValueError(
            f"a threshold at {fpr:g} FPR needs at least {_min_rows(fpr)} {what} (n * fpr >= 1), "
            f"got {n}: with fewer it could not flag a single one of them"
        )


def threshold_at_fpr(
    score: np.ndarray, fpr: float, *, reference: Any = None, confidence: float = 0.95
) -> Threshold:
    """The threshold t at which the rule ``score > t`` flags at most ``fpr`` of clean rows.

    With ``reference`` (trusted clean rows: a (N,) bool mask or row indices), t is the smallest
    value for which at most a share ``fpr`` of the reference rows score above it: their
    (k + 1)-th largest score for k = floor(fpr * n_reference), the share decided exactly
    (k / n_reference <= fpr; as :func:`alignscope.screen.tpr_at_fpr` picks its threshold).
    Rows tied with t are not flagged, so fewer than k reference rows may lie above it. The
    reference rows should be a random sample of the clean rows: a hand-picked "obviously clean"
    set scores lower than clean rows in general, and its threshold flags more than ``fpr``.
    ``fpr_upper_bound`` then bounds the realised rate on the other clean rows (see
    :func:`fpr_upper_bound`).

    Without a reference, t is the same quantile of all N rows. This assumes nothing about the
    shape of the clean scores (a median-and-MAD Gaussian fit would extrapolate a tail that
    clipped, skewed or tied screening scores do not have, and its realised rate has no bound).
    Poisons at a rate r can only make it conservative: at most fpr * N rows are flagged, so the
    realised rate on the (1 - r) N benign rows is at most fpr / (1 - r), and it is lower by
    every poison above t; but when r approaches fpr, the poisons use up the flagging budget
    and those beyond it are kept (a reference set has no such limit). ``fpr_upper_bound`` is
    None, as r is unknown.

    Parameters
    ----------
    score : (N,) float scores, higher = more suspicious; finite.
    fpr : target false-positive rate, 0 < fpr < 1.
    reference : optional trusted clean rows, a (N,) bool mask or integer row indices (repeats
        count once).
    confidence : level of the upper bound on the reference basis.

    Returns
    -------
    Threshold

    Raises
    ------
    ValueError
        For a reference (or N) too small to flag even one row at this fpr (n * fpr < 1): the
        message says how many rows are needed.
    """
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"score must be a non-empty 1-D array; got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("score contains NaN or inf")
    if isinstance(fpr, bool) or not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr!r}")
    fpr = float(fpr)
    if reference is None:
        sample, basis, n_reference = s, "score-distribution", None
    else:
        sample = s[row_indices("reference", reference, s.size)]
        basis, n_reference = "reference-clean", int(sample.size)
    check_sample_size(sample.size, fpr, reference=reference is not None)
    allowed = flag_budget(sample.size, fpr)
    value = fpr_threshold(sample, fpr)
    bound = None if reference is None else fpr_upper_bound(sample.size, allowed, confidence)
    return Threshold(
        value=value,
        fpr=fpr,
        basis=basis,
        n_reference=n_reference,
        n_above=int((sample > value).sum()),
        fpr_upper_bound=bound,
        confidence=confidence,
    )


def read_row_ids(path: str | Path, ids: Sequence[str]) -> np.ndarray:
    """Rows (sorted distinct int64) of the ids listed in a text file, one id per line.

    Blank lines and lines starting with ``#`` are skipped; surrounding whitespace is stripped.
    ``ids`` are the row ids in row order (a store's ids, as in ``keep.txt``); an id shared by
    several rows selects all of them.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        Naming the file, line and id of the first unknown id, or when it lists no id.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{str(p)!r} does not exist")
    where: dict[str, list[int]] = {}
    for row, name in enumerate(ids):
        where.setdefault(str(name), []).append(row)
    rows: list[int] = []
    with p.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            name = line.strip()
            if not name or name.startswith("#"):
                continue
            if name not in where:
                raise ValueError(f"{p}:{number}: unknown id {name!r} (not an id of the store)")
            rows.extend(where[name])
    if not rows:
        raise ValueError(f"{p}: lists no id")
    return np.unique(np.asarray(rows, dtype=np.int64))


def row_indices(argument: str, rows: Any, n: int) -> np.ndarray:
    """Distinct sorted int64 row indices in [0, n) from integer indices (repeats count once)
    or a (n,) bool mask; a ValueError naming ``argument`` otherwise."""
    r = np.asarray(rows)
    if r.dtype == bool:
        if r.shape != (n,):
            raise ValueError(
                f"{argument}: a bool mask must have one entry per row, shape ({n},); got {r.shape}"
            )
        return np.flatnonzero(r)
    if r.size == 0:
        return np.zeros(0, dtype=np.int64)
    if r.ndim != 1 or not np.issubdtype(r.dtype, np.integer):
        raise ValueError(
            f"{argument}: expected a 1-D sequence of integer row indices or a bool mask; got "
            f"dtype {r.dtype}, shape {r.shape}"
        )
    bad = r[(r < 0) | (r >= n)]
    if bad.size:
        raise ValueError(f"{argument}: row {int(bad[0])} is out of range [0, {n})")
    return np.unique(r.astype(np.int64))


def rank_features(scores: Mapping[str, np.ndarray]) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, (N, S) float64): each score replaced by the log-odds of its empirical CDF.

    A row's CDF value is (r - 1/2) / N for its rank r among the N rows (1 = lowest; tied rows
    share their mean rank), so the values lie strictly inside (0, 1) and depend only on the
    order of the scores: any increasing rescaling of a score gives the same features. The
    log-odds spreads the top tail, where poisons are (the top 1% and the top 0.1% differ by
    0.009 in CDF but by 2.3 in log-odds).
    """
    if not scores:
        raise ValueError("scores: give at least one score")
    names = tuple(scores)
    columns = []
    n = None
    for name in names:
        s = np.asarray(scores[name], dtype=np.float64)
        if s.ndim != 1 or s.size == 0 or (n is not None and s.size != n):
            want = "a non-empty 1-D array" if n is None else f"a 1-D array of {n} values"
            raise ValueError(f"scores[{name!r}]: expected {want}, got shape {s.shape}")
        if not np.isfinite(s).all():
            raise ValueError(f"scores[{name!r}]: contains NaN or inf")
        n = s.size
        cdf = (_mean_ranks(s) - 0.5) / n
        columns.append(np.log(cdf) - np.log1p(-cdf))
    return names, np.stack(columns, axis=1)


def _mean_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]]))
    ends = np.append(starts[1:], x.size)  # each tie group is sorted positions [start, end)
    ranks = np.empty(x.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


@dataclass(frozen=True)
class FewShotModel:
    """A logistic model over rank-normalised scores, fitted by :func:`few_shot`.

    Attributes
    ----------
    names : the scores, in feature order.
    coef : (S,) float64 weights of the features (log-odds of each score's empirical CDF).
    intercept : the model's intercept.
    features : (N, S) float64 features of all rows (:func:`rank_features`).
    regularization : the L2 strength lambda it was fitted with.
    poisons, clean : the labelled rows (sorted int64).
    """

    names: tuple[str, ...]
    coef: np.ndarray
    intercept: float
    features: np.ndarray
    regularization: float
    poisons: np.ndarray
    clean: np.ndarray

    def score(self) -> np.ndarray:
        """(N,) float64 log-odds of every row being poisoned; higher = more suspicious."""
        return self.features @ self.coef + self.intercept

    def probability(self) -> np.ndarray:
        """(N,) float64 probabilities 1 / (1 + exp(-score)). They reflect the labelled rows'
        ratio of poisons to clean rows, not the data's poison rate: rank by them, or choose a
        cut with :func:`threshold_at_fpr`, rather than read them as calibrated."""
        z = self.score()
        # exp of a large positive argument overflows: use the symmetric form on each side
        out = np.empty_like(z)
        pos = z >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
        e = np.exp(z[~pos])
        out[~pos] = e / (1.0 + e)
        return out


def few_shot(
    scores: Mapping[str, np.ndarray],
    poisons: Any,
    clean: Any,
    *,
    regularization: float = 1.0,
) -> FewShotModel:
    """Fit a logistic model of "poisoned" on the scores from a few confirmed rows.

    Each score is rank-normalised over all N rows (:func:`rank_features`), so the model needs
    no knowledge of the scores' scales and is unchanged by any increasing rescaling of them.
    The fit minimises the negative log-likelihood of the labelled rows plus
    ``regularization / 2 * ||coef||^2`` (the intercept is not penalised; lambda = 1 is
    scikit-learn's default C = 1), by Newton's method in float64. With a handful of labels
    the penalty is what keeps a separable set from driving the weights to infinity.

    Measured gain: ``python benchmarks/bench_decisions.py`` (the worlds and scores of
    bench_screen.py; labelled rows drawn at random, AUROC on the other rows); the README gives
    the numbers.

    Parameters
    ----------
    scores : name -> (N,) float scores, higher = more suspicious, finite.
    poisons, clean : confirmed rows, integer indices or (N,) bool masks; at least 2 distinct
        rows each, disjoint.
    regularization : L2 strength lambda > 0.

    Returns
    -------
    FewShotModel; ``.score()`` gives (N,) log-odds for all rows.
    """
    names, x = rank_features(scores)
    n = x.shape[0]
    p_rows, c_rows = row_indices("poisons", poisons, n), row_indices("clean", clean, n)
    for argument, rows in (("poisons", p_rows), ("clean", c_rows)):
        if rows.size < 2:
            raise ValueError(f"{argument}: needs at least 2 distinct rows, got {rows.size}")
    both = np.intersect1d(p_rows, c_rows)
    if both.size:
        shown = ", ".join(str(int(r)) for r in both[:5]) + (", ..." if both.size > 5 else "")
        raise ValueError(f"poisons and clean share rows [{shown}]: a row cannot be both")
    if isinstance(regularization, bool) or not float(regularization) > 0.0:
        raise ValueError(f"regularization must be > 0, got {regularization!r}")
    rows = np.concatenate([p_rows, c_rows])
    y = np.concatenate([np.ones(p_rows.size), np.zeros(c_rows.size)])
    beta = _newton_logistic(x[rows], y, float(regularization))
    return FewShotModel(
        names=names,
        coef=beta[1:],
        intercept=float(beta[0]),
        features=x,
        regularization=float(regularization),
        poisons=p_rows,
        clean=c_rows,
    )


def _newton_logistic(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """(1 + S,) [intercept, coef] minimising sum of logistic losses + lam / 2 ||coef||^2."""
    design = np.concatenate([np.ones((x.shape[0], 1)), x], axis=1)
    penalty = np.full(design.shape[1], lam)
    penalty[0] = 0.0

    def objective(beta: np.ndarray) -> float:
        z = design @ beta
        # log(1 + exp(z)) - y z, stable for either sign of z
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(penalty * beta**2))

    beta = np.zeros(design.shape[1])
    value = objective(beta)
    for _ in range(100):
        z = design @ beta
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function without overflow
        gradient = design.T @ (p - y) + penalty * beta
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        # Newton steps can overshoot far from the optimum: halve until the objective falls.
        t = 1.0
        while t > 1e-10:
            candidate = beta - t * step
            new = objective(candidate)
            if new <= value:
                break
            t *= 0.5
        else:
            break
        converged = np.max(np.abs(candidate - beta)) <= 1e-12 * max(1.0, np.max(np.abs(beta)))
        beta, value = candidate, new
        if converged:
            break
    return beta
