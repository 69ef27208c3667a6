"""Exact Alignment Difficulty (Eq. 1) and its per-sample terms (Eq. 4)."""

from __future__ import annotations

import math
import time

import numpy as np

from alignscope import _backend
from alignscope._progress import ProgressArg, TileProgress
from alignscope.metrics._inputs import (
    PreparedViews,
    as_labels,
    as_matrix,
    check_alpha,
    label_codes,
    prepare_views,
    unit_rows64,
)
from alignscope.metrics.profiles import Bounds, check_profile, half_bounds, paper_bounds
from alignscope.metrics.result import ADResult, FinetuneAD, PerSample


def _clipped_unit(d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros_like(d)
    return np.clip((d - lo) / (hi - lo), 0.0, 1.0)


def _view_distance_range(
    packed: np.ndarray, cols: slice, original: np.ndarray, name: str, threads: int, tile: int | None
) -> tuple[float, float]:
    """(min, max) cosine distance over pairs i != k of one view.

    The engine finds the extreme pairs in float32; their distances are then recomputed in
    float64 from the original rows.
    """
    found = _backend.pair_extrema(packed[:, cols], tile=tile, threads=threads)
    if found is None:  # a single sample has no pair
        return 0.0, 0.0
    (_, i_min, k_min), (_, i_max, k_max) = found
    u = unit_rows64(original, [i_min, k_min, i_max, k_max], name)
    cos_min = float(u[0] @ u[1])
    cos_max = float(u[2] @ u[3])
    return 1.0 - cos_max, 1.0 - cos_min


def _resolve_bounds(
    profile: str | Bounds,
    views: PreparedViews,
    image: np.ndarray,
    text: np.ndarray | None,
    threads: int,
    tile: int | None,
) -> Bounds:
    if isinstance(profile, Bounds):
        return profile if text is not None else Bounds(profile.feature, profile.image, None)
    if profile == "paper":
        fixed = paper_bounds()
    elif profile == "half":
        fixed = half_bounds()
    else:
        d_a = views.d_a
        feature = (0.0, 0.0)
        if views.cos_ab is not None:
            d_ab = 1.0 - views.cos_ab
            feature = (float(d_ab.min()), float(d_ab.max()))
        image_range = _view_distance_range(
            views.packed, slice(0, d_a), image, "image_emb", threads, tile
        )
        text_range = None
        if text is not None:
            text_range = _view_distance_range(
                views.packed, slice(d_a, None), text, "text_emb", threads, tile
            )
        return Bounds(feature=feature, image=image_range, text=text_range)
    return fixed if text is not None else Bounds(fixed.feature, fixed.image, None)


def alignment_difficulty(
    image_emb: object,
    text_emb: object = None,
    *,
    labels: object = None,
    true_labels: object = None,
    alpha: float = 0.8,
    profile: str | Bounds = "paper",
    per_sample: bool = False,
    backend: str = "auto",
    threads: int | None = None,
    progress: ProgressArg = False,
    tile: int | None = None,
) -> ADResult:
    """Exact Alignment Difficulty of N image/caption pairs (Eq. 1 of the Implosion paper).

    AD = alpha * feature + (1 - alpha) * structure, with
    feature = mean_i D_img:txt(x_i, y_i) and
    structure = (1/N^2) sum_{i != k} |D_img(x_i, x_k) - D_txt(y_i, y_k)|.

    Parameters
    ----------
    image_emb : (N, d_a) float16/32/64 array on the host (numpy, or a CPU torch tensor).
        Rows are L2-normalised by the engine; a NaN/inf or all-zero row is an error.
    text_emb : (N, d_b) float array, the caption embeddings. The structure term allows
        d_b != d_a; the feature term needs d_b == d_a (or alpha = 0).
    labels : (N,) integer array replacing ``text_emb`` (label metrics, Sec. 5.4):
        D_txt(i, k) = [labels_i != labels_k].
    true_labels : (N,) integer array; with ``labels``, D_img:txt(i) = [labels_i != true_labels_i].
    alpha : weight of the feature term, in [0, 1]; 0.8 as in the paper.
    profile : "paper" (default; the authors' script), "half", "minmax", or
        :class:`alignscope.Bounds` with explicit bounds. See the README's table.
    per_sample : also return D_img:txt, D_s and AD(x_i, y_i) for every pair (Eq. 4).
    backend : "auto" or "cpu".
    threads : worker threads of the CPU engine (None: all cores, or $ALIGNSCOPE_NUM_THREADS).
    progress : True for a progress bar on stderr, or a callable(done_tiles, total_tiles).
    tile : edge of the engine's square tiles (rows); None chooses from N and the threads.

    Returns
    -------
    ADResult
        Scalars as Python floats; ``per_sample`` arrays are (N,) float64 numpy arrays.

    Raises
    ------
    TypeError, ValueError
        Naming the argument (and the row) at fault.
    """
    start = time.perf_counter()
    alpha = check_alpha(alpha)
    profile_name = check_profile(profile)
    if not isinstance(per_sample, bool):
        raise TypeError(f"per_sample must be True or False, got {per_sample!r}")
    engine = _backend.resolve_backend(backend)
    n_threads = _backend.resolve_threads(threads)
    if tile is not None and (
        isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or not 1 <= tile <= 8192
    ):
        raise ValueError(f"tile must be an integer in [1, 8192] or None, got {tile!r}")

    image = as_matrix(image_emb, "image_emb")
    n, d_a = image.shape
    text: np.ndarray | None = None
    codes: np.ndarray | None = None
    d_ab: np.ndarray | None = None
    if labels is None:
        if true_labels is not None:
            raise ValueError("true_labels is only used with labels=; pass labels too")
        if text_emb is None:
            raise TypeError("give text_emb (N, d) caption embeddings, or labels (N,) class ids")
        text = as_matrix(text_emb, "text_emb")
        if text.shape[0] != n:
            raise ValueError(
                f"image_emb has {n} rows but text_emb has {text.shape[0]}; "
                "row i of both must describe the same pair"
            )
        if text.shape[1] != d_a and alpha > 0.0:
            raise ValueError(
                f"the feature term compares image and text embeddings directly and needs equal "
                f"dimensions; image_emb has d={d_a}, text_emb has d={text.shape[1]} "
                "(embed both with one CLIP model, or pass alpha=0 for the structure term only)"
            )
    else:
        if text_emb is not None:
            raise ValueError("pass either text_emb or labels (label metrics), not both")
        label_arr = as_labels(labels, "labels", n)
        codes = label_codes(label_arr)
        if true_labels is None:
            if alpha > 0.0:
                raise ValueError(
                    "labels need true_labels for the feature term D = [labels != true_labels]; "
                    "pass true_labels=, or alpha=0 for the structure term only"
                )
        else:
            truth = as_labels(true_labels, "true_labels", n)
            d_ab = (label_arr != truth).astype(np.float64)

    views = prepare_views(image, text, ("image_emb", "text_emb"), n_threads)
    bounds = _resolve_bounds(profile, views, image, text, n_threads, tile)
    if codes is None and views.cos_ab is not None:
        d_ab = _clipped_unit(1.0 - views.cos_ab, *bounds.feature)

    c0, scale_a, scale_b, c_label = _backend.structure_constants(bounds.image, bounds.text)
    zscale = np.empty(views.packed.shape[1], dtype=np.float32)
    zscale[: views.d_a] = scale_a
    zscale[views.d_a :] = scale_b
    with TileProgress(progress, "structure AD") as bar:
        row_sums, _, _ = _backend.pair_abs_sum(
            views.packed,
            zscale=zscale,
            c0=c0,
            row_labels=codes,
            c_label=c_label,
            tile=tile,
            threads=n_threads,
            progress=bar.callback,
        )
    d_s = row_sums / n
    structure = math.fsum(row_sums.tolist()) / (n * n)
    feature = math.fsum(d_ab.tolist()) / n if d_ab is not None else None
    ad = (1.0 - alpha) * structure + (alpha * feature if feature is not None else 0.0)

    samples = None
    if per_sample:
        d_ab_out = d_ab if d_ab is not None else np.zeros(n)
        samples = PerSample(d_ab=d_ab_out, d_s=d_s, ad=alpha * d_ab_out + (1.0 - alpha) * d_s)
    return ADResult(
        ad=ad,
        feature=feature,
        structure=structure,
        alpha=alpha,
        profile=profile_name,
        bounds=bounds,
        method="exact",
        n=n,
        backend=engine,
        seconds=time.perf_counter() - start,
        metric="labels" if codes is not None else "embeddings",
        d_image=d_a,
        d_text=None if text is None else int(text.shape[1]),
        threads=n_threads,
        per_sample=samples,
    )


def finetune_ad(base: ADResult, finetune: ADResult, lam: float) -> FinetuneAD:
    """Fine-tune AD (Eq. 2): (1 - lam) * AD(T0) + lam * AD(T).

    Parameters
    ----------
    base : ADResult of the base model's training data T0 (often a sampled estimate).
    finetune : ADResult of the fine-tuning data T.
    lam : in (0, 1); 1 - lam is the weight memorisation factor.

    Both results must share profile, bounds, alpha and metric: otherwise their scales differ
    and the sum means nothing.
    """
    for name, value in (("base", base), ("finetune", finetune)):
        if not isinstance(value, ADResult):
            raise TypeError(f"{name} must be an ADResult, got {type(value).__name__}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating)):
        raise TypeError(f"lam must be a number in (0, 1), got {type(lam).__name__}")
    lam = float(lam)
    if not 0.0 < lam < 1.0:
        raise ValueError(f"lam must be in (0, 1) (Eq. 2 needs 0 < 1 - lam < 1); got {lam}")
    if base.profile != finetune.profile or base.bounds != finetune.bounds:
        raise ValueError(
            "finetune_ad needs both results computed with the same profile and bounds; got "
            f"base profile={base.profile!r} bounds={base.bounds.to_dict()} and finetune "
            f"profile={finetune.profile!r} bounds={finetune.bounds.to_dict()} "
            "(recompute one of them with profile=alignscope.Bounds(...) of the other)"
        )
    if base.alpha != finetune.alpha or base.metric != finetune.metric:
        raise ValueError(
            f"finetune_ad needs equal alpha and metric; got alpha {base.alpha} vs "
            f"{finetune.alpha}, metric {base.metric!r} vs {finetune.metric!r}"
        )
    return FinetuneAD(
        ad=(1.0 - lam) * base.ad + lam * finetune.ad,
        base_ad=base.ad,
        finetune_ad=finetune.ad,
        lam=lam,
        profile=base.profile,
        bounds=base.bounds,
    )
