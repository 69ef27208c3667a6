"""Normalisation profiles: how each cosine distance is mapped into [0, 1].

Every profile resolves to numeric :class:`Bounds` on the cosine distance d = 1 - cos, which are
recorded in each result so that two results can be compared (or refused, see ``finetune_ad``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PROFILES = ("paper", "half", "minmax")

# The authors' script maps s = cos(image, text) through clip((s - 0.2) / 0.25, 0, 1) and takes
# one minus that: on d = 1 - s this is clip((d - 0.55) / 0.25, 0, 1). Structure terms are raw
# cosine distances, i.e. bounds (0, 1) with no clipping.
PAPER_FEATURE_COS_WINDOW = (0.2, 0.45)


def _check_pair(name: str, value: object) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"Bounds.{name} must be a (lo, hi) pair of floats, got {value!r}")
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"Bounds.{name} must be finite, got ({lo}, {hi})")
    if lo > hi:
        raise ValueError(f"Bounds.{name} needs lo <= hi, got ({lo}, {hi})")
    return lo, hi


@dataclass(frozen=True)
class Bounds:
    """Explicit (lo, hi) bounds on cosine distances d = 1 - cos, one pair per metric.

    A metric maps to D = (d - lo) / (hi - lo); lo == hi (a constant distance, as ``minmax``
    finds on constant data) maps every distance to 0. The feature term is clipped to [0, 1] (as the
    authors' script clips it); the structure terms are affine and unclipped, so choose bounds
    that contain the data (cosine distances lie in [0, 2]).

    Parameters
    ----------
    feature : (lo, hi) for D_img:txt, the distance between an image and its own caption.
    image : (lo, hi) for D_img, distances between images.
    text : (lo, hi) for D_txt, distances between captions; None with label metrics.
    """

    feature: tuple[float, float] = (0.55, 0.80)
    image: tuple[float, float] = (0.0, 1.0)
    text: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature", _check_pair("feature", self.feature))
        object.__setattr__(self, "image", _check_pair("image", self.image))
        if self.text is not None:
            object.__setattr__(self, "text", _check_pair("text", self.text))

    def to_dict(self) -> dict[str, list[float] | None]:
        return {
            "feature": list(self.feature),
            "image": list(self.image),
            "text": None if self.text is None else list(self.text),
        }


def paper_bounds() -> Bounds:
    lo_cos, hi_cos = PAPER_FEATURE_COS_WINDOW
    return Bounds(feature=(1.0 - hi_cos, 1.0 - lo_cos), image=(0.0, 1.0), text=(0.0, 1.0))


def half_bounds() -> Bounds:
    return Bounds(feature=(0.0, 2.0), image=(0.0, 2.0), text=(0.0, 2.0))


def check_profile(profile: object) -> str:
    """Return the profile's name ("paper", "half", "minmax" or "bounds"), or raise."""
    if isinstance(profile, Bounds):
        return "bounds"
    if not isinstance(profile, str):
        raise TypeError(
            f"profile must be one of {', '.join(PROFILES)} or an alignscope.Bounds, "
            f"got {type(profile).__name__}"
        )
    if profile not in PROFILES:
        raise ValueError(
            f"unknown profile {profile!r}; choose one of {', '.join(map(repr, PROFILES))} "
            "or pass alignscope.Bounds(...)"
        )
    return profile
