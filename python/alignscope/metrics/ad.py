"""Alignment Difficulty (Eq. 1) and its per-sample terms (Eq. 4): the public entry points,
their argument checks, and the choice between exact, sampled and Ray computations."""

from __future__ import annotations

import os
import time

import numpy as np

from alignscope import _backend, _torch_engine
from alignscope._progress import ProgressArg
from alignscope.metrics._inputs import (
    check_alpha,
)
from alignscope.metrics._terms import (
    Inputs,
    RayOptions,
    Terms,
    check_ray,
    exact_in_process,
    exact_on_ray,
    resolve_inputs,
    sampled_terms,
)
from alignscope.metrics.profiles import Bounds, check_profile
from alignscope.metrics.result import ADResult, FinetuneAD, PerSample
from alignscope.metrics.sampled import (
    DEFAULT_LANDMARKS,
)

METHODS = ("exact", "sampled", "auto")
PER_SAMPLE = ("exact", "landmarks")


def _check_int(name: str, value: object, low: int, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_options(
    per_sample: object, method: object, confidence: object, max_seconds: object
) -> tuple[str | None, str, float, float]:
    if per_sample is True:
        mode: str | None = "exact"
    elif per_sample is False or per_sample is None:
        mode = None
    elif isinstance(per_sample, str) and per_sample in PER_SAMPLE:
        mode = per_sample
    else:
        raise ValueError(
            f"per_sample must be False, True, 'exact' or 'landmarks'; got {per_sample!r}"
        )
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
        raise TypeError(f"confidence must be a number in (0, 1), got {type(confidence).__name__}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float, np.floating)):
        raise TypeError(f"max_seconds must be a positive number, got {type(max_seconds).__name__}")
    if not float(max_seconds) > 0.0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    return mode, method, float(confidence), float(max_seconds)


def estimate_exact_seconds(n: int, kdim: int, threads: int) -> float:
    """Seconds the exact structure pass should take here: its GEMM FLOPs over a GEMM rate
    measured once per process on this machine."""
    tile = _backend.choose_tile(n, threads)
    sizes = np.minimum(tile, n - np.arange(0, n, tile)).astype(np.float64)
    flops = 2.0 * kdim * (np.sum(np.outer(sizes, sizes)) + np.sum(sizes * sizes)) / 2.0
    return float(flops / (_backend.measured_gflops(kdim, threads) * 1e9))


def alignment_difficulty(
    data: object,
    text_emb: object = None,
    *,
    labels: object = None,
    true_labels: object = None,
    alpha: float = 0.8,
    profile: str | Bounds = "paper",
    per_sample: bool | str = False,
    method: str = "exact",
    confidence: float = 0.95,
    budget: int | None = None,
    block: int | None = None,
    seed: int | None = None,
    max_seconds: float = 60.0,
    landmarks: int = DEFAULT_LANDMARKS,
    backend: str = "auto",
    precision: str | None = None,
    address: str | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    task_rows: int = 8192,
    threads: int | None = None,
    progress: ProgressArg = False,
    tile: int | None = None,
) -> ADResult:
    """Alignment Difficulty of N image/caption pairs (Eq. 1 of the Implosion paper).

    AD = alpha * feature + (1 - alpha) * structure, with
    feature = mean_i D_img:txt(x_i, y_i) and
    structure = (1/N^2) sum_{i != k} |D_img(x_i, x_k) - D_txt(y_i, y_k)|.

    Parameters
    ----------
    data : (N, d_a) float16/32/64 array of image embeddings on the host (numpy, or a CPU
        torch tensor), or an :class:`alignscope.io.EmbeddingStore` (its text view, or its
        labels, supply the second view). Rows are L2-normalised by the engine; a NaN/inf or
        all-zero row is an error naming the row.
    text_emb : (N, d_b) float array of caption embeddings (arrays only). The structure term
        allows d_b != d_a; the feature term needs d_b == d_a (or alpha = 0).
    labels : (N,) integer array replacing the text view (label metrics, Sec. 5.4):
        D_txt(i, k) = [labels_i != labels_k].
    true_labels : (N,) integer array; with ``labels``, D_img:txt(i) = [labels_i != true_labels_i].
    alpha : weight of the feature term, in [0, 1]; 0.8 as in the paper.
    profile : "paper" (default; the authors' script), "half", "minmax" (exact only), or
        :class:`alignscope.Bounds` with explicit bounds. See the README's table.
    per_sample : False; True or "exact" for exact D_img:txt, D_s and AD(x_i, y_i) per pair
        (Eq. 4; O(N^2), exact method only); "landmarks" for D_s estimated against
        ``landmarks`` shared random columns, with a standard error per row.
    method : "exact"; "sampled" (block-sampled structure term with confidence intervals, see
        :mod:`alignscope.metrics.sampled`); or "auto": exact when its estimated time on this
        machine is at most ``max_seconds``, else sampled (the result's ``note`` says which).
    confidence : level of the sampled intervals, in (0, 1).
    budget : pair evaluations for the sampled structure term (default 2^24).
    block : rows per side of a sample block (default 64).
    seed : seed of the sampling; None draws one and records it in the result.
    landmarks : S, the columns per row of ``per_sample="landmarks"`` (default 1024).
    backend : "auto" ("cpu"; "cuda" when the CUDA module is built and a GPU is visible once
        the kernels are validated on hardware, ``_backend.AUTO_USES_CUDA``; see
        ``precision``), "cpu", "cuda" (tensor-core kernels, fp16 inputs; see the
        README for their error bound), "torch" (blocked torch reference on its default
        device, streaming columns that do not fit in its memory) or "ray": the exact
        structure pass as Ray tasks of ``task_rows`` x ``task_rows`` blocks over a store
        opened with ``open_store`` (every worker reads its rows from the store's files), on
        the cluster at ``address`` (None: the running or a
        new local instance). Pair files go to ``work_dir`` (default
        ``~/.cache/alignscope/ray-ad``; on a cluster a folder all nodes share), in a
        subfolder keyed by the input files' fingerprints and the settings, so a rerun of
        the same computation resumes and another input never reuses them.
    precision : None (each engine's own: "fp32" on "cpu" and "ray", "fp16" on "cuda"), or
        "fp16", "bf16", "tf32" or "fp32": the format the structure GEMM's operands are rounded
        to before float32 accumulation. "torch" takes all four (emulated, so CPU results match
        a GPU's); other backends only their own, else a ValueError says which to use; with
        "auto", "bf16"/"tf32" select "torch" and "fp32" selects "cpu". Documented bound
        (:func:`alignscope._torch_engine.error_bound`): |ΔAD| <= (1 - alpha) *
        ((2u + u^2 + (K + 4) * 1.01 * 2^-24) |z| |w| + 2^-24 * 2 (|c0| + |c_label|)) with
        u = 2^-11 (fp16, tf32), 2^-8 (bf16), 0 (fp32), K the packed width, |z|, |w| the
        largest scaled and unit row norms (fp16 adds 2^-25 sqrt(K) (|z| + |w|) for
        subnormals); every per-sample D_s within the same bound without the (1 - alpha).
    threads : CPU worker threads (None: all cores, or $ALIGNSCOPE_NUM_THREADS). progress :
        True for a bar on stderr, or a callable(done, total). tile : edge of the exact
        engine's tiles; None chooses from N (512 under Ray).

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
    mode, method, confidence, max_seconds = _check_options(
        per_sample, method, confidence, max_seconds
    )
    budget, block, seed, landmarks_n = _check_sizes(budget, block, seed, landmarks, tile)
    if precision is not None:
        _torch_engine.check_precision(precision)
    engine = _backend.resolve_backend(backend, precision)
    operands = _torch_engine.engine_precision(precision, engine, backend)
    n_threads = _backend.resolve_threads(threads)
    ray = RayOptions(address, work_dir, _check_int("task_rows", task_rows, 1, allow_none=False))
    inputs = resolve_inputs(data, text_emb, labels, true_labels, alpha)

    method, note = _choose_method(
        method, engine, inputs, mode, profile_name, max_seconds, n_threads
    )
    rng = np.random.default_rng(seed if seed is not None else None)
    if seed is None and (method == "sampled" or mode == "landmarks"):
        seed = int(np.random.SeedSequence().entropy % (1 << 63))
        rng = np.random.default_rng(seed)

    # The torch engine reads the operand format from this context variable (the layers in
    # between pass no precision); reset afterwards so no other call inherits it.
    token = _torch_engine.PRECISION.set(operands)
    try:
        if engine == "ray":
            terms = exact_on_ray(inputs, profile, ray, tile, n_threads, progress)
        elif method == "exact":
            terms = exact_in_process(
                inputs, profile, mode, landmarks_n, rng, n_threads, tile, progress, engine
            )
        else:
            terms = sampled_terms(
                inputs, profile, mode, alpha, confidence, budget, block, landmarks_n, rng,
                n_threads, progress, engine,
            )  # fmt: skip
    finally:
        _torch_engine.PRECISION.reset(token)
    if precision is not None:  # recorded: the same data give other digits in another format
        note = "; ".join(x for x in (note, f"precision={operands} on backend {engine!r}") if x)
    return _assemble(
        terms, inputs, alpha, profile_name, method, mode, engine, n_threads, seed, note, start
    )


def _assemble(
    terms: Terms,
    inputs: Inputs,
    alpha: float,
    profile_name: str,
    method: str,
    mode: str | None,
    engine: str,
    threads: int,
    seed: int | None,
    note: str | None,
    start: float,
) -> ADResult:
    """The ADResult of computed terms (Eq. 1 and, when asked, Eq. 4 per pair)."""
    feature = terms.feature
    ad = (1.0 - alpha) * terms.structure + (alpha * feature if feature is not None else 0.0)
    notes = [x for x in (note, terms.note) if x]
    return ADResult(
        ad=ad,
        feature=feature,
        structure=terms.structure,
        alpha=alpha,
        profile=profile_name,
        bounds=terms.bounds,
        method=method,
        n=inputs.n,
        backend=engine,
        seconds=time.perf_counter() - start,
        metric="labels" if inputs.codes is not None else "embeddings",
        d_image=inputs.d_a,
        d_text=None if inputs.codes is not None else inputs.d_b,
        threads=threads,
        per_sample=_per_sample(terms, alpha, inputs.n) if mode is not None else None,
        ci=terms.ci,
        structure_ci=terms.structure_ci,
        feature_ci=terms.feature_ci,
        samples=terms.samples,
        seed=seed if (method == "sampled" or mode == "landmarks") else None,
        note="; ".join(notes) if notes else None,
    )


def _check_sizes(
    budget: object, block: object, seed: object, landmarks: object, tile: object
) -> tuple[int | None, int | None, int | None, int]:
    """The integer options, checked: (budget, block, seed, landmarks)."""
    block_n = _check_int("block", block, 1)
    if block_n is not None and block_n > 8192:
        raise ValueError(f"block must be <= 8192, got {block_n}")
    if tile is not None and (
        isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or not 1 <= tile <= 8192
    ):
        raise ValueError(f"tile must be an integer in [1, 8192] or None, got {tile!r}")
    return (
        _check_int("budget", budget, 1),
        block_n,
        _check_int("seed", seed, 0),
        _check_int("landmarks", landmarks, 2, allow_none=False),  # type: ignore[return-value]
    )


def _choose_method(
    method: str,
    engine: str,
    inputs: Inputs,
    mode: str | None,
    profile_name: str,
    max_seconds: float,
    threads: int,
) -> tuple[str, str | None]:
    """The concrete method ("exact" or "sampled") and the note saying why, after the checks
    that depend on it."""
    note = None
    if method == "auto" and engine != "ray":
        estimate = estimate_exact_seconds(inputs.n, inputs.d_a + inputs.d_b, threads)
        method = "exact" if estimate <= max_seconds else "sampled"
        note = (
            f"auto: exact estimated at {estimate:.3g} s on this machine; "
            f"max_seconds={max_seconds:g} -> {method}"
        )
    elif method == "auto":
        method = "exact"
    if engine == "ray":
        check_ray(inputs, method, mode, profile_name)
    if method == "sampled" and profile_name == "minmax":
        raise ValueError(
            "profile='minmax' needs the min and max over all N^2 pairs, an exact pass; use "
            "method='exact', or profile 'paper', 'half' or alignscope.Bounds(...) with sampling"
        )
    if method == "sampled" and mode == "exact":
        raise ValueError(
            "per_sample='exact' costs the full O(N^2) pass; use per_sample='landmarks' with "
            "method='sampled', or method='exact'"
        )
    return method, note


def _per_sample(terms: Terms, alpha: float, n: int) -> PerSample | None:
    """Eq. 4 per pair from the computed terms (None when no per-row D_s was computed)."""
    if terms.d_s is None:
        return None
    d_ab = terms.d_ab if terms.d_ab is not None else np.zeros(n)
    return PerSample(
        d_ab=d_ab,
        d_s=terms.d_s,
        ad=alpha * d_ab + (1.0 - alpha) * terms.d_s,
        d_s_se=terms.d_s_se,
        method="landmarks" if terms.d_s_se is not None else "exact",
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
