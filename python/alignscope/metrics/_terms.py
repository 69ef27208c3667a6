"""The computations behind :func:`alignscope.metrics.alignment_difficulty`: input resolution,
the exact terms (in this process or as Ray tasks) and the sampled terms with their intervals."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from alignscope import _backend
from alignscope._progress import ProgressArg, TileProgress
from alignscope.metrics._inputs import (
    PreparedViews,
    as_labels,
    as_matrix,
    label_codes,
    prepare_views,
    unit_rows64,
)
from alignscope.metrics._source import PairSource
from alignscope.metrics.intervals import combine, exact_intervals
from alignscope.metrics.profiles import Bounds, half_bounds, paper_bounds
from alignscope.metrics.sampled import (
    DEFAULT_BLOCK,
    DEFAULT_BUDGET,
    FEATURE_SAMPLES,
    sample_feature,
    sample_structure,
    scan,
    structure_setup,
)


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


def _fixed_bounds(profile: str | Bounds, has_text: bool) -> Bounds:
    """Bounds of every profile but minmax (which needs the data)."""
    fixed = (
        profile
        if isinstance(profile, Bounds)
        else paper_bounds()
        if profile == "paper"
        else half_bounds()
    )
    return fixed if has_text else Bounds(fixed.feature, fixed.image, None)


def _resolve_bounds(
    profile: str | Bounds,
    views: PreparedViews,
    image: np.ndarray,
    text: np.ndarray | None,
    threads: int,
    tile: int | None,
) -> Bounds:
    if profile != "minmax":
        return _fixed_bounds(profile, text is not None)
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


# Feature terms of larger stores are sampled: an exact pass would read every row.
FEATURE_EXACT_MAX_ROWS = 20_000_000
# The tile edge of Ray tasks unless given: every task's float32 tile sums are then those of the
# single-process engine at tile=512.
RAY_TILE = 512


def _exact_terms(
    image: np.ndarray,
    text: np.ndarray | None,
    codes: np.ndarray | None,
    d_ab: np.ndarray | None,
    profile: str | Bounds,
    threads: int,
    tile: int | None,
    progress: ProgressArg,
    backend: str = "cpu",
) -> tuple[Bounds, np.ndarray | None, np.ndarray]:
    """Bounds, per-row D_img:txt (or the given label one) and exact D_s of in-memory arrays."""
    views = prepare_views(image, text, ("image_emb", "text_emb"), threads)
    bounds = _resolve_bounds(profile, views, image, text, threads, tile)
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
            threads=threads,
            progress=bar.callback,
            backend=backend,
        )
    return bounds, d_ab, row_sums / image.shape[0]


@dataclass
class Inputs:
    """The resolved inputs: arrays or a store, and the label form of the second view."""

    store: Any  # EmbeddingStore or None
    image: np.ndarray | None
    text: np.ndarray | None
    codes: np.ndarray | None  # label codes (label metrics)
    d_ab: np.ndarray | None  # the label feature term [labels != true_labels], when given
    n: int
    d_a: int
    d_b: int
    names: tuple[str, str]


@dataclass
class Terms:
    """What an exact or sampled computation gives back to :func:`alignment_difficulty`."""

    bounds: Bounds
    structure: float
    feature: float | None
    d_ab: np.ndarray | None
    d_s: np.ndarray | None
    d_s_se: np.ndarray | None = None
    ci: Any = None
    structure_ci: Any = None
    feature_ci: Any = None
    samples: int | None = None
    note: str | None = None


@dataclass(frozen=True)
class RayOptions:
    """Where and how ``backend="ray"`` runs: see :func:`alignment_difficulty`."""

    address: str | None = None
    work_dir: str | os.PathLike[str] | None = None
    task_rows: int = 8192


def resolve_inputs(
    data: object, text_emb: object, labels: object, true_labels: object, alpha: float
) -> Inputs:
    from alignscope.io.store import EmbeddingStore

    store = data if isinstance(data, EmbeddingStore) else None
    image = text = None
    if store is not None:
        if text_emb is not None:
            raise ValueError("a store carries its own text view; pass text_emb only with arrays")
        if labels is None and store.labels is not None:
            labels = store.labels
        n, d_a = store.n, store.d_image
        if labels is None and not store.has_text:
            raise ValueError(
                f"store {store.source!r} has no text embeddings; open it with labels= for "
                "label metrics"
            )
        d_b = 0 if labels is not None else int(store.d_text or 0)
        names = (f"{store.source} image", f"{store.source} text")
    else:
        image = as_matrix(data, "image_emb")
        n, d_a = image.shape
        names = ("image_emb", "text_emb")
        d_b = 0
    codes = d_ab = None
    if labels is None:
        if true_labels is not None:
            raise ValueError("true_labels is only used with labels=; pass labels too")
        if store is None:
            if text_emb is None:
                raise TypeError("give text_emb (N, d) caption embeddings, or labels (N,) class ids")
            text = as_matrix(text_emb, "text_emb")
            if text.shape[0] != n:
                raise ValueError(
                    f"image_emb has {n} rows but text_emb has {text.shape[0]}; "
                    "row i of both must describe the same pair"
                )
            d_b = text.shape[1]
        if d_b != d_a and alpha > 0.0:
            raise ValueError(
                f"the feature term compares image and text embeddings directly and needs equal "
                f"dimensions; {names[0]} has d={d_a}, {names[1]} has d={d_b} "
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
    return Inputs(store, image, text, codes, d_ab, n, d_a, d_b, names)


def check_ray(inputs: Inputs, method: str, mode: str | None, profile_name: str) -> None:
    if inputs.store is None or inputs.store.reopen_args is None:
        raise ValueError(
            "backend='ray' needs a store opened with alignscope.io.open_store: the workers read "
            "their rows from its files (write arrays with write_store first)"
        )
    if method != "exact":
        raise ValueError(f"backend='ray' computes the exact terms; got method={method!r}")
    if mode == "landmarks":
        raise ValueError("backend='ray' computes exact per-sample terms: per_sample=True")
    if profile_name == "minmax":
        raise ValueError(
            "profile='minmax' needs a global min/max pass; with backend='ray' use 'paper', "
            "'half' or alignscope.Bounds(...)"
        )


def exact_on_ray(
    inputs: Inputs,
    profile: str | Bounds,
    ray: RayOptions,
    tile: int | None,
    threads: int,
    progress: ProgressArg,
) -> Terms:
    """Exact terms with the structure pass as Ray tasks; the feature pass runs here."""
    store, codes = inputs.store, inputs.codes
    bounds = _fixed_bounds(profile, codes is None)
    setup = structure_setup(inputs.d_a, inputs.d_b, bounds.image, bounds.text, codes)
    work_dir = ray.work_dir
    if work_dir is None:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        work_dir = os.path.join(cache, "alignscope", "ray-ad")
    tile = tile or RAY_TILE
    if ray.task_rows % tile:
        raise ValueError(f"task_rows ({ray.task_rows}) must be a multiple of tile ({tile})")
    run = _backend.ray_row_sums(
        store,
        zscale=setup.zscale,
        c0=setup.c0,
        c_label=setup.c_label,
        codes=codes,
        work_dir=work_dir,
        address=ray.address,
        block=ray.task_rows,
        tile=tile,
        progress=progress is True,
    )
    d_s = run.row_sums / inputs.n
    d_ab = inputs.d_ab
    if codes is None:
        source = _source(None, None, store, codes, inputs.names, threads)
        with TileProgress(False, "feature pass") as bar:
            d_ab, _, _ = scan(
                source,
                setup,
                feature_bounds=bounds.feature,
                landmarks=0,
                rng=np.random.default_rng(0),
                threads=threads,
                progress=bar,
            )
    note = (
        f"ray: {run.pairs} block pairs of {ray.task_rows} rows, {run.computed} computed now, "
        f"the rest reused from {run.work_dir}; pair-set sha256 {run.checksum[:16]}"
    )
    return Terms(
        bounds=bounds,
        structure=math.fsum(d_s.tolist()) / inputs.n,
        feature=math.fsum(d_ab.tolist()) / inputs.n if d_ab is not None else None,
        d_ab=d_ab,
        d_s=d_s,
        note=note,
    )


def exact_in_process(
    inputs: Inputs,
    profile: str | Bounds,
    mode: str | None,
    landmarks: int,
    rng: np.random.Generator,
    threads: int,
    tile: int | None,
    progress: ProgressArg,
    engine: str,
) -> Terms:
    """Exact feature and structure terms in this process (landmark D_s when asked)."""
    store, codes, n = inputs.store, inputs.codes, inputs.n
    image, text = inputs.image, inputs.text
    if store is not None:
        _check_fits_in_memory(n, inputs.d_a + inputs.d_b, store.source)
        image = store.read(0, n, "image")
        text = store.read(0, n, "text") if codes is None else None
    bounds, d_ab, d_s = _exact_terms(
        image, text, codes, inputs.d_ab, profile, threads, tile, progress, engine
    )  # type: ignore[arg-type]
    terms = Terms(
        bounds=bounds,
        structure=math.fsum(d_s.tolist()) / n,
        feature=math.fsum(d_ab.tolist()) / n if d_ab is not None else None,
        d_ab=d_ab,
        d_s=d_s,
    )
    if mode == "landmarks":
        source = _source(image, text, store, codes, inputs.names, threads)
        setup = structure_setup(inputs.d_a, inputs.d_b, bounds.image, bounds.text, codes)
        with TileProgress(progress, "landmark D_s") as bar:
            _, terms.d_s, terms.d_s_se = scan(
                source,
                setup,
                feature_bounds=None,
                landmarks=landmarks,
                rng=rng,
                threads=threads,
                progress=bar,
                backend=engine,
            )
    return terms


def sampled_terms(
    inputs: Inputs,
    profile: str | Bounds,
    mode: str | None,
    alpha: float,
    confidence: float,
    budget: int | None,
    block: int | None,
    landmarks: int,
    rng: np.random.Generator,
    threads: int,
    progress: ProgressArg,
    engine: str,
) -> Terms:
    """Block-sampled structure term with intervals; exact or sampled feature term; landmark
    D_s when asked."""
    codes, n = inputs.codes, inputs.n
    bounds = _fixed_bounds(profile, codes is None)
    source = _source(inputs.image, inputs.text, inputs.store, codes, inputs.names, threads)
    setup = structure_setup(inputs.d_a, inputs.d_b, bounds.image, bounds.text, codes)
    sample_feature_term = (
        codes is None and alpha > 0.0 and source.with_cos and n > FEATURE_EXACT_MAX_ROWS
    )
    # With both terms sampled each holds at 1 - delta/2, so their union holds at 1 - delta.
    term_confidence = 1.0 - (1.0 - confidence) / 2.0 if sample_feature_term else confidence
    with TileProgress(progress, "sampled structure AD") as bar:
        sampled = sample_structure(
            source,
            setup,
            budget=budget or DEFAULT_BUDGET,
            block=block or DEFAULT_BLOCK,
            rng=rng,
            confidence=term_confidence,
            threads=threads,
            progress=bar,
            backend=engine,
        )
    structure = sampled.mean
    d_ab, d_s, d_s_se = inputs.d_ab, None, None
    scan_feature = codes is None and alpha > 0.0 and source.with_cos and not sample_feature_term
    if scan_feature or mode == "landmarks":
        with TileProgress(progress, "landmark D_s" if mode else "feature pass") as bar:
            scanned_ab, d_s, d_s_se = scan(
                source,
                setup,
                feature_bounds=bounds.feature if scan_feature else None,
                landmarks=landmarks if mode == "landmarks" else 0,
                rng=rng,
                threads=threads,
                progress=bar,
                backend=engine,
            )
        if scan_feature:
            d_ab = scanned_ab
    feature_var = 0.0
    feature_ci = None
    if sample_feature_term:
        term = sample_feature(
            source, bounds.feature, samples=FEATURE_SAMPLES, rng=rng, confidence=term_confidence
        )
        feature, feature_var, feature_ci = term.mean, term.variance / term.units, term.intervals
    elif d_ab is not None:
        feature = math.fsum(d_ab.tolist()) / n
        feature_ci = exact_intervals(feature, confidence)
    else:
        feature = None
    center = (1.0 - alpha) * structure + (alpha * feature if feature is not None else 0.0)
    ci = combine(
        (alpha, 1.0 - alpha),
        (feature_ci or exact_intervals(0.0, confidence), sampled.intervals),
        confidence,
        (feature_var, sampled.variance / sampled.units),
        center,
    )
    return Terms(
        bounds=bounds,
        structure=structure,
        feature=feature,
        d_ab=d_ab,
        d_s=d_s,
        d_s_se=d_s_se,
        ci=ci,
        structure_ci=sampled.intervals,
        feature_ci=feature_ci,
        samples=sampled.pairs,
    )


def _available_memory() -> int | None:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not every platform reports it
        return None


def _check_fits_in_memory(n: int, width: int, source: str) -> None:
    """Exact AD of a store holds its rows as float32 (plus one stored-dtype copy): refuse,
    with the way out, before the allocation would exhaust memory."""
    need = n * width * (4 + 4)
    available = _available_memory()
    if available is not None and need > available:
        raise ValueError(
            f"exact AD of {source!r} holds {n:,} x {width} float32 rows in memory "
            f"({need / 2**30:.1f} GiB) but {available / 2**30:.1f} GiB are available; use "
            "method='sampled' (or 'auto'), or the Ray backend"
        )


def _source(
    image: np.ndarray | None,
    text: np.ndarray | None,
    store: object,
    codes: np.ndarray | None,
    names: tuple[str, str],
    threads: int,
) -> PairSource:
    if store is not None:
        return PairSource(store=store, use_text=codes is None, names=names, threads=threads)
    return PairSource(image, text, use_text=codes is None, names=names, threads=threads)
