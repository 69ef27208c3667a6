"""Result types of the AD computations."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignscope.metrics.intervals import Intervals
from alignscope.metrics.profiles import Bounds


@dataclass(frozen=True, eq=False)
class PerSample:
    """Per-sample terms, each a (N,) float64 array on the host.

    d_ab : D_img:txt(x_i, y_i), the feature term of each pair.
    d_s : D_s(x_i, y_i) = (1/N) sum_k |D_img(x_i, x_k) - D_txt(y_i, y_k)| (Eq. 4).
    ad : AD(x_i, y_i) = alpha * d_ab + (1 - alpha) * d_s.
    d_s_se : standard error of each d_s (landmark estimates), or None when d_s is exact.
    method : "exact" or "landmarks".
    """

    d_ab: np.ndarray
    d_s: np.ndarray
    ad: np.ndarray
    d_s_se: np.ndarray | None = None
    method: str = "exact"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "method": self.method,
            "d_ab": self.d_ab.tolist(),
            "d_s": self.d_s.tolist(),
            "ad": self.ad.tolist(),
        }
        if self.d_s_se is not None:
            out["d_s_se"] = self.d_s_se.tolist()
        return out


@dataclass(frozen=True)
class ADResult:
    """Alignment Difficulty of a set of N pairs (Eq. 1) and how it was computed.

    ad = alpha * feature + (1 - alpha) * structure; ``method`` is "exact" or "sampled". A
    sampled result carries ``ci`` (for ``ad``), ``structure_ci`` and ``feature_ci`` (each with
    an asymptotic and a guaranteed interval; an exact term has a zero-width "exact" interval),
    ``samples`` (pairs evaluated for the structure term) and the ``seed`` that reproduces it.
    ``feature`` is None only when alpha = 0
    and the feature term cannot be formed (d differs, or labels without true_labels), and then
    per-sample ``d_ab`` is zeros. ``bounds`` holds the numeric bounds the
    profile resolved to; ``metric`` is "embeddings" (two embedding views) or "labels"
    (Sec. 5.4 label metrics).
    """

    ad: float
    feature: float | None
    structure: float
    alpha: float
    profile: str
    bounds: Bounds
    method: str
    n: int
    backend: str
    seconds: float
    metric: str = "embeddings"
    d_image: int = 0
    d_text: int | None = None
    threads: int = 1
    per_sample: PerSample | None = field(default=None, compare=False)
    ci: Intervals | None = None
    structure_ci: Intervals | None = None
    feature_ci: Intervals | None = None
    samples: int | None = None
    seed: int | None = None
    note: str | None = None

    def to_dict(self, per_sample: bool = True) -> dict[str, Any]:
        """JSON-safe dict; per-sample arrays become lists when present and ``per_sample``."""
        out: dict[str, Any] = {
            "ad": self.ad,
            "feature": self.feature,
            "structure": self.structure,
            "alpha": self.alpha,
            "profile": self.profile,
            "bounds": self.bounds.to_dict(),
            "method": self.method,
            "n": self.n,
            "metric": self.metric,
            "d_image": self.d_image,
            "d_text": self.d_text,
            "backend": self.backend,
            "threads": self.threads,
            "seconds": self.seconds,
        }
        if self.method != "exact" or self.note is not None:
            out.update(
                {
                    "ci": None if self.ci is None else self.ci.to_dict(),
                    "structure_ci": None
                    if self.structure_ci is None
                    else self.structure_ci.to_dict(),
                    "feature_ci": None if self.feature_ci is None else self.feature_ci.to_dict(),
                    "samples": self.samples,
                    "seed": self.seed,
                    "note": self.note,
                }
            )
        elif self.seed is not None:  # exact terms with landmark D_s: the seed reproduces them
            out["seed"] = self.seed
        for key in ("ad", "feature", "structure"):
            if out[key] is not None and not math.isfinite(out[key]):  # never hand out a silent NaN
                raise ArithmeticError(f"ADResult.{key} is not finite ({out[key]})")
        if per_sample and self.per_sample is not None:
            out["per_sample"] = self.per_sample.to_dict()
        return out


@dataclass(frozen=True)
class FinetuneAD:
    """Eq. 2: (1 - lam) * AD(T0) + lam * AD(T) for fine-tuning a benign base model on T."""

    ad: float
    base_ad: float
    finetune_ad: float
    lam: float
    profile: str
    bounds: Bounds

    def to_dict(self) -> dict[str, Any]:
        return {
            "ad": self.ad,
            "base_ad": self.base_ad,
            "finetune_ad": self.finetune_ad,
            "lam": self.lam,
            "profile": self.profile,
            "bounds": self.bounds.to_dict(),
        }
