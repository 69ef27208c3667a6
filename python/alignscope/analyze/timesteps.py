"""When poisons act: per-timestep denoising loss and gradient norm, poisoned vs clean.

SZT (Styborski et al.) observes that diffusion models learn mostly from low-noise timesteps
and that poisons inject their signal there, so textual inversion trained only on t >= t_min
avoids most of it. This measures that on a user's model and data: every image is noised at
``draws`` timesteps in each of ``buckets`` equal bins of [0, T) (stratified: one uniform draw
in each of ``draws`` equal slices of the bin; the same timesteps and noise for every image, so
poisoned and clean images differ only by their content), and for each the denoising loss and
the L2 norm of its gradient with respect to the concept's embedding vectors
(``target="embedding"``: textual inversion's trainable parameters) or to the UNet's
cross-attention key/value projections (``target="unet"``: the weights that read the text,
:func:`conditioning_weights`) are recorded.

Per bucket b: the clean and poisoned means of the per-image gradient norm; the clean *share*
``clean[b] / sum(clean)`` (how much of the clean images' learning signal the bucket holds);
and the poison's *excess* ``|| mean poisoned gradient - mean clean gradient ||`` (vectors,
averaged over the images and draws of the bucket; the same noise for both groups), i.e. how
far the poisoned images pull textual inversion's expected update away from the one clean
images give, with its share of the total excess. A poison that changes the gradient's
direction but not its size shows up here; a difference of norms would miss it (and, on the
tiny test model, a faint high-frequency perturbation moves norms up as often as down).

The suggested ``--timestep-min`` (:func:`suggest_timestep_min`): the largest bucket edge whose
window [t_min, T) still keeps at least ``keep`` (default 80%) of the clean gradient mass.
Because every bucket's excess is >= 0, raising t_min never drops less excess, so among the
windows that keep that much clean signal this one drops the largest share of the poison's
excess; both fractions are reported with it.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.analyze._model import (
    Concept,
    Images,
    concept_prompt,
    encode_latents,
    load_components,
    load_images,
    noise_target,
    training_scheduler,
)
from alignscope.io.datasets import Dataset

TARGETS = ("embedding", "unet")
RULE = (
    "timestep_min = the largest bucket edge whose window [timestep_min, T) keeps >= {keep:.0%} "
    "of the clean gradient mass (mean per-image gradient norm); no window keeping that much "
    "clean signal drops a larger share of the poison's excess (the norm of mean poisoned "
    "minus mean clean gradient per bucket)"
)


@dataclass
class TimestepAnalysis:
    """What :func:`analyze_timesteps` measured (lists per bucket; ``None`` where undefined).

    edges : buckets' edges, bucket b = [edges[b], edges[b + 1]); per_sample_loss and
    per_sample_grad : (images, buckets) means over the draws; ids and poisoned : per image.
    """

    target: str
    edges: list[int]
    draws: int
    ids: list[str]
    poisoned: list[bool]
    loss_clean: list[float | None]
    loss_poison: list[float | None]
    grad_clean: list[float | None]
    grad_poison: list[float | None]
    clean_share: list[float | None]
    poison_share: list[float | None]
    excess: list[float | None]
    excess_share: list[float | None]
    suggested_timestep_min: int
    kept_clean: float
    dropped_excess: float | None
    keep: float
    rule: str
    per_sample_loss: list[list[float]]
    per_sample_grad: list[list[float]]

    def summary(self) -> dict[str, Any]:
        """Everything except the per-image tables."""
        out = asdict(self)
        out.pop("per_sample_loss")
        out.pop("per_sample_grad")
        out.pop("ids")
        out.pop("poisoned")
        out["images"] = {
            "clean": int(np.sum(~np.asarray(self.poisoned))),
            "poisoned": int(np.sum(self.poisoned)),
        }
        return out


def bucket_edges(num_timesteps: int, buckets: int) -> list[int]:
    """``buckets + 1`` integer edges splitting [0, T) into near-equal bins."""
    if not 1 <= buckets <= num_timesteps:
        raise ValueError(f"buckets must be in [1, {num_timesteps}], got {buckets}")
    return [round(b * num_timesteps / buckets) for b in range(buckets + 1)]


def suggest_timestep_min(
    edges: list[int], clean: np.ndarray, excess: np.ndarray | None, keep: float = 0.8
) -> tuple[int, float, float | None]:
    """(timestep_min, kept clean fraction, dropped excess fraction) by the module's rule.

    Parameters
    ----------
    edges : the buckets' edges (``len(clean) + 1`` of them).
    clean : per-bucket clean gradient mass (>= 0).
    excess : per-bucket poison excess (>= 0, so raising t_min never drops less of it), or
        None (no poisoned images).
    keep : the least fraction of clean mass the window must keep, in (0, 1].
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    clean = np.asarray(clean, dtype=np.float64)
    total = clean.sum()
    if total <= 0:
        raise ValueError("the clean images carry no gradient: nothing to keep a share of")
    # kept[k]: clean fraction of the window starting at bucket k (a tiny tolerance so that a
    # share of exactly `keep` summed in another order still counts as kept)
    kept = np.cumsum(clean[::-1])[::-1] / total
    k = int(np.flatnonzero(kept >= keep - 1e-12).max())
    dropped = None
    if excess is not None and float(np.sum(excess)) > 0:
        dropped = float(np.sum(excess[:k]) / np.sum(excess))
    return int(edges[k]), float(kept[k]), dropped


def analyze_timesteps(
    model: str | Path,
    dataset: Dataset,
    *,
    manifest: str | Path | None,
    target: str = "embedding",
    placeholder: str | None = None,
    initializer: str | None = None,
    embeds: str | Path | None = None,
    prompt: str | None = None,
    buckets: int = 10,
    draws: int = 4,
    keep: float = 0.8,
    resolution: int = 512,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "cpu",
) -> TimestepAnalysis:
    """Measure loss and gradient norm per timestep bucket, poisoned vs clean images.

    Parameters
    ----------
    model : Stable Diffusion (diffusers) folder.
    dataset : the training set; ``manifest`` (its ``poison_manifest.parquet``) says which
        rows are poisoned.
    target : "embedding" (the concept's vectors: give ``placeholder`` with ``initializer`` or
        ``embeds``, or a word the tokenizer has) or "unet" (the UNet's cross-attention key
        and value projections).
    prompt : the prompt, ``{}`` standing for the concept (default "a photo of a {}"); with
        ``target="unet"`` and no prompt, each image's own caption.
    buckets, draws : bins over [0, T) and timesteps drawn per bin.
    keep : the clean fraction the suggested window keeps (see :func:`suggest_timestep_min`).
    """
    import torch

    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if draws < 1 or batch_size < 1:
        raise ValueError("draws and batch_size must be >= 1")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    images = load_images(dataset, resolution, manifest)
    if manifest is not None and (images.poisoned.all() or not images.poisoned.any()):
        which = "every" if images.poisoned.all() else "no"
        raise ValueError(
            f"the manifest marks {which} usable image as poisoned: the analysis compares "
            "poisoned with clean images of one dataset"
        )
    parts = load_components(model, device)
    scheduler = training_scheduler(parts["scheduler"])
    edges = bucket_edges(scheduler.config.num_train_timesteps, buckets)
    concept = None
    if target == "embedding" or placeholder is not None:
        concept = Concept.from_components(
            parts, placeholder, initializer=initializer, embeds=embeds
        )
    prompts = _prompts(images, concept, prompt, target)
    latents = encode_latents(parts["vae"], images.pixels.to(device))
    gen = torch.Generator().manual_seed(seed)
    # the same timesteps and noise for every image: poisoned and clean differ by content only
    steps = _stratified(edges, draws, gen)
    noise = torch.randn((buckets, draws, *latents.shape[1:]), generator=gen)
    jobs = [(i, b, d) for i in range(len(prompts)) for b in range(buckets) for d in range(draws)]
    losses = np.zeros((len(prompts), buckets, draws))
    norms = np.zeros_like(losses)
    # per-bucket sums of the gradient vectors of clean (0) and poisoned (1) images: their
    # means' difference is the poison's pull on the update beyond what clean images give
    sums: Any = None
    group = torch.as_tensor(images.poisoned.astype(np.int64))
    run = _embedding_jobs if target == "embedding" else _unet_jobs
    size = batch_size if target == "embedding" else 1  # UNet gradients: one image at a time
    for start in range(0, len(jobs), size):
        chunk = jobs[start : start + size]
        idx = torch.tensor([j[0] for j in chunk])
        t = torch.stack([steps[b, d] for _, b, d in chunk]).to(device)
        eps = torch.stack([noise[b, d] for _, b, d in chunk]).to(device)
        loss, grads = run(parts, scheduler, concept, latents[idx.to(device)], eps, t, idx, prompts)
        grads = grads.double()
        if sums is None:
            sums = torch.zeros((2, buckets, grads.shape[1]), dtype=torch.float64, device=device)
        where = (group[idx] * buckets + torch.tensor([b for _, b, _ in chunk])).to(device)
        sums.view(2 * buckets, -1).index_add_(0, where, grads)
        for (i, b, d), lv, nv in zip(chunk, loss, grads.norm(dim=1).tolist(), strict=True):
            losses[i, b, d], norms[i, b, d] = lv, nv
    counts = np.array([np.sum(~images.poisoned), np.sum(images.poisoned)]) * draws
    deviation = None
    if counts.min() > 0:
        means = sums.cpu().numpy() / counts[:, None, None]
        deviation = np.linalg.norm(means[1] - means[0], axis=1)
    return _summarise(target, edges, draws, images, losses.mean(2), norms.mean(2), deviation, keep)


def _stratified(edges: list[int], draws: int, gen: Any) -> Any:
    """(buckets, draws) timesteps: draw d of bucket b uniform in the d-th of ``draws`` equal
    slices of the bucket (stratified: unbiased like uniform draws, but every part of the
    bucket is visited, e.g. the very lowest timesteps of bucket 0, where a faint poison is
    visible)."""
    import torch

    rows = []
    for lo, hi in itertools.pairwise(edges):
        u = (torch.arange(draws) + torch.rand(draws, generator=gen)) / draws
        rows.append((lo + (u * (hi - lo)).long()).clamp(max=hi - 1))
    return torch.stack(rows)


def _prompts(images: Images, concept: Concept | None, prompt: str | None, target: str) -> list:
    if prompt is None and target == "unet":
        return list(images.captions)
    if concept is None:  # the UNet target with a fixed prompt and no concept token
        return [prompt] * len(images.ids)
    return [concept_prompt(concept, prompt)] * len(images.ids)


def _embedding_jobs(
    parts: dict, scheduler: Any, concept: Any, latents: Any, eps: Any, t: Any, idx: Any, prompts
) -> tuple[list[float], Any]:
    """Per-job loss and (jobs, k * dim) gradient w.r.t. the concept's vectors: each job gets its own
    copy of them, so the gradient of the summed losses splits into per-job gradients."""
    import torch

    vectors = concept.vectors.expand(len(idx), -1, -1).clone().requires_grad_(True)
    hidden = concept.encode([prompts[int(i)] for i in idx], vectors)
    per_job = _denoising_loss(parts["unet"], scheduler, latents, eps, t, hidden)
    (grad,) = torch.autograd.grad(per_job.sum(), vectors)
    return per_job.detach().cpu().tolist(), grad.flatten(1)


def conditioning_weights(unet: Any) -> list[Any]:
    """The UNet's cross-attention key and value projections: the weights that read the
    text encoding (those Custom Diffusion fine-tunes for a new concept), a few percent of the
    UNet, so per-bucket sums of their gradients fit in memory even for Stable Diffusion."""
    weights = [
        module.weight
        for name, module in unet.named_modules()
        if name.split(".")[-1] in ("to_k", "to_v") and ".attn2" in f".{name}"
    ]
    if not weights:
        raise ValueError("this UNet has no cross-attention (attn2) key/value projections")
    return weights


def _unet_jobs(
    parts: dict, scheduler: Any, concept: Any, latents: Any, eps: Any, t: Any, idx: Any, prompts
) -> tuple[list[float], Any]:
    """Loss and (1, n) gradient w.r.t. the UNet's conditioning weights of one job."""
    import torch

    unet = parts["unet"]
    params = conditioning_weights(unet)
    with torch.no_grad():
        if concept is None:
            from alignscope.train.modes import _encode_text

            hidden = _encode_text(
                parts["tokenizer"], parts["text_encoder"], [prompts[int(i)] for i in idx]
            )
        else:
            hidden = concept.encode([prompts[int(i)] for i in idx], concept.vectors[None])
    for p in params:
        p.requires_grad_(True)
    try:
        per_job = _denoising_loss(unet, scheduler, latents, eps, t, hidden)
        grads = torch.autograd.grad(per_job.sum(), params)
    finally:
        for p in params:
            p.requires_grad_(False)
    return per_job.detach().cpu().tolist(), torch.cat([g.flatten() for g in grads])[None]


def _denoising_loss(unet: Any, scheduler: Any, latents: Any, eps: Any, t: Any, hidden: Any):
    """Per-sample mean squared error of the UNet's prediction (training's loss, unmasked)."""
    noisy = scheduler.add_noise(latents, eps, t)
    pred = unet(noisy, t, hidden).sample
    target = noise_target(scheduler, latents, eps, t)
    return ((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3))


def _mean(rows: np.ndarray) -> np.ndarray | None:
    return rows.mean(axis=0) if rows.shape[0] else None


def _share(values: np.ndarray | None) -> list[float | None]:
    if values is None or float(values.sum()) <= 0:
        return [None] * (0 if values is None else len(values))
    return (values / values.sum()).tolist()


def _summarise(
    target: str,
    edges: list[int],
    draws: int,
    images: Images,
    loss: np.ndarray,
    grad: np.ndarray,
    deviation: np.ndarray | None,
    keep: float,
) -> TimestepAnalysis:
    flags = images.poisoned
    n_buckets = len(edges) - 1
    grad_clean, grad_poison = _mean(grad[~flags]), _mean(grad[flags])
    loss_clean, loss_poison = _mean(loss[~flags]), _mean(loss[flags])
    excess = deviation
    if grad_clean is None:
        raise ValueError("no clean image to compare with: the manifest marks every one poisoned")
    t_min, kept, dropped = suggest_timestep_min(edges, grad_clean, excess, keep)
    none = [None] * n_buckets

    def listed(a: np.ndarray | None) -> list[float | None]:
        return none if a is None else a.tolist()

    return TimestepAnalysis(
        target=target,
        edges=list(edges),
        draws=draws,
        ids=list(images.ids),
        poisoned=flags.tolist(),
        loss_clean=listed(loss_clean),
        loss_poison=listed(loss_poison),
        grad_clean=listed(grad_clean),
        grad_poison=listed(grad_poison),
        clean_share=_share(grad_clean),
        poison_share=_share(grad_poison) if grad_poison is not None else none,
        excess=listed(excess),
        excess_share=_share(excess) if excess is not None else none,
        suggested_timestep_min=t_min,
        kept_clean=kept,
        dropped_excess=dropped,
        keep=keep,
        rule=RULE.format(keep=keep),
        per_sample_loss=loss.tolist(),
        per_sample_grad=grad.tolist(),
    )


def write_outputs(result: TimestepAnalysis, out: str | Path) -> dict[str, Path]:
    """``timesteps.json`` (the summary), ``timesteps_per_image.csv`` and ``timesteps.png``."""
    from alignscope._files import atomic_path

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": root / "timesteps.json",
        "csv": root / "timesteps_per_image.csv",
        "png": root / "timesteps.png",
    }
    with atomic_path(paths["json"]) as tmp:
        Path(tmp).write_text(json.dumps(result.summary(), indent=2) + "\n")
    lines = ["id,poisoned,bucket_start,bucket_end,loss,grad_norm"]
    for i, ident in enumerate(result.ids):
        for b in range(len(result.edges) - 1):
            lines.append(
                f"{json.dumps(ident)},{int(result.poisoned[i])},{result.edges[b]},"
                f"{result.edges[b + 1]},{result.per_sample_loss[i][b]:.8g},"
                f"{result.per_sample_grad[i][b]:.8g}"
            )
    with atomic_path(paths["csv"]) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    with atomic_path(paths["png"]) as tmp:
        plot(result, tmp)
    return paths


def plot(result: TimestepAnalysis, path: str | Path) -> None:
    """Clean and poisoned gradient norm per bucket (left), the clean and excess shares with
    the suggested timestep_min (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.asarray(result.edges)
    mids = (edges[:-1] + edges[1:]) / 2
    width = np.diff(edges) * 0.4
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(mids, _nan(result.grad_clean), "o-", label="clean")
    left.plot(mids, _nan(result.grad_poison), "s-", label="poisoned")
    left.set_xlabel("timestep t")
    left.set_ylabel(f"gradient norm ({result.target})")
    left.legend()
    right.bar(mids - width / 2, _nan(result.clean_share), width, label="clean share")
    right.bar(mids + width / 2, _nan(result.excess_share), width, label="poison excess share")
    right.axvline(result.suggested_timestep_min, color="k", linestyle="--")
    dropped = "n/a" if result.dropped_excess is None else f"{result.dropped_excess:.0%}"
    right.set_title(
        f"suggested --timestep-min {result.suggested_timestep_min}: keeps "
        f"{result.kept_clean:.0%} clean, drops {dropped} excess",
        fontsize=9,
    )
    right.set_xlabel("timestep t")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def _nan(values: list[float | None]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
