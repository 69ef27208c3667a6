"""SZT's loss masks from the model itself: the concept token's cross-attention on the
training images, thresholded, written as the ``<stem>.png`` masks ``train --loss-mask`` reads
(white = learn, black = ignore).

Each image is noised at ``draws`` (timestep, noise) pairs (timesteps uniform in
``[t_low, t_high)``, the same draws for every image) and denoised once with the prompt holding
the concept; :func:`alignscope.evaluate.attention.capture_cross_attention` records every
cross-attention layer's probabilities (resized to the latent grid), averaged over layers and
draws. The concept's map is the mean over its token positions, upsampled bilinearly to the
image, min-max normalised per image; the mask keeps the pixels at or above ``threshold``
(or, with ``soft``, the normalised map itself as grey levels: a per-pixel loss weight).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignscope.analyze._model import (
    Concept,
    concept_prompt,
    encode_latents,
    load_components,
    load_images,
    timestep_window,
    training_scheduler,
)
from alignscope.io.datasets import Dataset


@dataclass
class MaskResult:
    """ids : per image; maps : (n, R, R) normalised attention in [0, 1]; masks : (n, R, R)
    uint8 as written; paths : the files written."""

    ids: list[str]
    maps: np.ndarray
    masks: np.ndarray
    paths: list[Path]


def attention_masks(
    model: str | Path,
    dataset: Dataset,
    out: str | Path,
    *,
    placeholder: str | None = None,
    initializer: str | None = None,
    embeds: str | Path | None = None,
    prompt: str | None = None,
    threshold: float = 0.5,
    soft: bool = False,
    timesteps: tuple[int, int] | None = None,
    draws: int = 4,
    resolution: int = 512,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "cpu",
) -> MaskResult:
    """Write ``out/<stem>.png`` for every image of ``dataset`` (see the module's notes).

    Parameters
    ----------
    placeholder, initializer, embeds : the concept (a learned TI embedding, a new token from
        a word, or a word the tokenizer has).
    threshold : in [0, 1]: keep the pixels whose normalised map is at least this.
    soft : write the normalised map as grey levels instead of a 0/255 mask.
    """
    import torch

    from alignscope._files import atomic_path
    from alignscope.evaluate.attention import capture_cross_attention

    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if draws < 1 or batch_size < 1:
        raise ValueError("draws and batch_size must be >= 1")
    images = load_images(dataset, resolution, None)
    stems = [Path(i).stem for i in images.ids]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise ValueError(
            f"two images share the stem {dup!r}: masks are named <stem>.png, so each image "
            "needs its own stem"
        )
    parts = load_components(model, device)
    scheduler = training_scheduler(parts["scheduler"])
    low, high = timestep_window(scheduler, timesteps)
    concept = Concept.from_components(parts, placeholder, initializer=initializer, embeds=embeds)
    text = concept_prompt(concept, prompt)
    ids = concept.token_ids([text])[0]
    positions = [p for p, v in enumerate(ids.tolist()) if v in concept.ids]
    if not positions:  # truncated away by a long prompt
        raise ValueError(f"the prompt {text!r} loses the concept to the tokenizer's length")
    latents = encode_latents(parts["vae"], images.pixels.to(device))
    gen = torch.Generator().manual_seed(seed)
    steps = torch.randint(low, high, (draws,), generator=gen)
    noise = torch.randn((draws, *latents.shape[1:]), generator=gen)
    hw = tuple(latents.shape[-2:])
    maps = []
    with torch.no_grad():
        for start in range(0, latents.shape[0], batch_size):
            chunk = latents[start : start + batch_size]
            vectors = concept.vectors[None].expand(chunk.shape[0], -1, -1)
            hidden = concept.encode([text] * chunk.shape[0], vectors)
            with capture_cross_attention(
                parts["unet"], latent_hw=hw, resolution=hw, layers="all", conditional_only=False
            ) as store:
                for d in range(draws):
                    t = steps[d : d + 1].expand(chunk.shape[0]).to(device)
                    noisy = scheduler.add_noise(chunk, noise[d].to(device).expand_as(chunk), t)
                    parts["unet"](noisy, t, hidden)
            maps.append(store.maps()[:, positions].mean(axis=1))
    small = torch.from_numpy(np.concatenate(maps))[:, None]
    up = torch.nn.functional.interpolate(
        small, size=tuple(images.pixels.shape[-2:]), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    lo = up.min(axis=(1, 2), keepdims=True)
    span = up.max(axis=(1, 2), keepdims=True) - lo
    norm = np.where(span > 0, (up - lo) / np.where(span > 0, span, 1.0), 1.0)
    if soft:
        masks = np.clip(np.rint(norm * 255.0), 0, 255).astype(np.uint8)
    else:
        masks = np.where(norm >= threshold, 255, 0).astype(np.uint8)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    from PIL import Image

    for stem, mask in zip(stems, masks, strict=True):
        path = root / f"{stem}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(mask, mode="L").save(tmp, format="PNG")
        paths.append(path)
    return MaskResult(list(images.ids), norm.astype(np.float32), masks, paths)
