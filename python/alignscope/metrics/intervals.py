"""Confidence intervals for sampled estimates.

Each estimate is a mean of n independent, identically distributed sample units (block means,
or single pairs) whose values lie in [0, R]. Two intervals are reported:

- ``asymptotic``: Student's t over the sample units (needs only a finite variance and a large
  enough n; no guarantee at finite n);
- ``guaranteed``: holds for every n without distributional assumptions: the narrower of
  Hoeffding's bound and the empirical Bernstein bound of Maurer & Pontil (2009, Thm. 4), each
  at confidence 1 - delta/2 so that their union holds at 1 - delta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class ConfidenceInterval:
    """[low, high] at ``confidence``; ``method`` names the bound ("t", "hoeffding",
    "empirical-bernstein", or "exact" for a term computed exactly)."""

    low: float
    high: float
    confidence: float
    method: str

    @property
    def halfwidth(self) -> float:
        return (self.high - self.low) / 2.0

    def to_dict(self) -> dict[str, float | str]:
        return {
            "low": self.low,
            "high": self.high,
            "halfwidth": self.halfwidth,
            "confidence": self.confidence,
            "method": self.method,
        }


@dataclass(frozen=True)
class Intervals:
    """Both intervals of one estimate."""

    asymptotic: ConfidenceInterval
    guaranteed: ConfidenceInterval

    def to_dict(self) -> dict[str, dict[str, float | str]]:
        return {"asymptotic": self.asymptotic.to_dict(), "guaranteed": self.guaranteed.to_dict()}


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t by its expansion about the normal quantile (Abramowitz & Stegun
    26.7.5); at p = 0.975 the error is below 1e-3 for df >= 5 and shrinks as df grows."""
    z = NormalDist().inv_cdf(p)
    if df <= 0:
        raise ValueError("df must be positive")
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def hoeffding_halfwidth(value_range: float, n: int, delta: float) -> float:
    """Two-sided Hoeffding half-width for the mean of n iid values in an interval of length R."""
    return value_range * math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def bernstein_halfwidth(variance: float, value_range: float, n: int, delta: float) -> float:
    """Two-sided empirical Bernstein half-width (Maurer & Pontil 2009, Thm. 4, each side at
    delta / 2), from the unbiased sample variance of n >= 2 iid values in [0, R]."""
    if n < 2:
        return math.inf
    log_term = math.log(4.0 / delta)
    return math.sqrt(2.0 * variance * log_term / n) + 7.0 * value_range * log_term / (3.0 * (n - 1))


def mean_intervals(
    mean: float,
    variance: float,
    n: int,
    value_range: float,
    confidence: float,
    lo: float,
    hi: float,
) -> Intervals:
    """Asymptotic and guaranteed intervals for a mean of n iid units in [lo, lo + R].

    Both are clipped to the a-priori range [lo, hi] of the estimated quantity.
    """
    delta = 1.0 - confidence
    if n >= 2:
        t_half = t_quantile(1.0 - delta / 2.0, n - 1) * math.sqrt(max(variance, 0.0) / n)
    else:
        t_half = math.inf
    hoeff = hoeffding_halfwidth(value_range, n, delta / 2.0)
    bern = bernstein_halfwidth(max(variance, 0.0), value_range, n, delta / 2.0)
    g_half, g_method = (hoeff, "hoeffding") if hoeff <= bern else (bern, "empirical-bernstein")

    def clip(half: float, method: str) -> ConfidenceInterval:
        return ConfidenceInterval(max(lo, mean - half), min(hi, mean + half), confidence, method)

    return Intervals(asymptotic=clip(t_half, "t"), guaranteed=clip(g_half, g_method))


def exact_intervals(value: float, confidence: float) -> Intervals:
    point = ConfidenceInterval(value, value, confidence, "exact")
    return Intervals(point, point)


def combine(
    weights: tuple[float, float],
    parts: tuple[Intervals, Intervals],
    confidence: float,
    variances: tuple[float, float],
    center: float,
) -> Intervals:
    """Interval of w0 * X0 + w1 * X1 from intervals of two independent estimates.

    Guaranteed: each part must already hold at 1 - delta/2 (union bound), so the half-widths
    add. Asymptotic: the variances of the two means add (independent samples).
    """
    g_half = sum(w * p.guaranteed.halfwidth for w, p in zip(weights, parts, strict=True))
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    a_half = z * math.sqrt(sum(w * w * v for w, v in zip(weights, variances, strict=True)))
    methods = "+".join(
        sorted({p.guaranteed.method for p in parts if p.guaranteed.method != "exact"})
    )
    return Intervals(
        asymptotic=ConfidenceInterval(center - a_half, center + a_half, confidence, "t"),
        guaranteed=ConfidenceInterval(
            center - g_half, center + g_half, confidence, methods or "exact"
        ),
    )
