"""Token-specific cross-attention maps (prompt-to-prompt style) of a diffusers UNet.

A recording processor is installed on the UNet's cross-attention layers only (self-attention
keeps its own processor) and the original processors are put back on exit, so the model is
unchanged afterwards. It computes attention exactly as diffusers' plain ``AttnProcessor``
does and, on the way, adds the softmax probabilities (a distribution over text tokens for
every query pixel) averaged over heads to a running sum at ``resolution``. With classifier-free
guidance only the conditional half of the batch is recorded.

The maps returned are the average over layers and denoising steps, so for every pixel they are
still a distribution over tokens; a word's map is the mean of its tokens' maps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

LAYERS = ("matching", "all")


class CrossAttentionStore:
    """Running sum of cross-attention maps.

    Parameters
    ----------
    resolution : (h, w) of the maps kept.
    layers : "matching" keeps layers whose map already has that size (prompt-to-prompt's 16 x 16
        layers of SD at 512 px); "all" resizes every layer's map bilinearly to it.
    conditional_only : record only the second half of each batch (the conditional half under
        classifier-free guidance).
    """

    def __init__(
        self, resolution: tuple[int, int], layers: str, conditional_only: bool, latent_hw: Any
    ) -> None:
        self.resolution = resolution
        self.layers = layers
        self.conditional_only = conditional_only
        self.latent_hw = latent_hw
        self.sum: Any = None
        self.count = 0
        self.seen: set[tuple[int, int]] = set()
        self.max_row_sum_error = 0.0

    def add(self, probs: Any, heads: int) -> None:
        import torch

        self.max_row_sum_error = max(
            self.max_row_sum_error, float((probs.float().sum(-1) - 1.0).abs().max())
        )
        bh, pixels, tokens = probs.shape
        maps = probs.float().reshape(bh // heads, heads, pixels, tokens).mean(dim=1)
        if self.conditional_only:
            maps = maps[maps.shape[0] // 2 :]
        lat_h, lat_w = self.latent_hw
        h = round(math.sqrt(pixels * lat_h / lat_w))
        w = pixels // h
        self.seen.add((h, w))
        maps = maps.transpose(1, 2).reshape(maps.shape[0], tokens, h, w)
        if (h, w) != self.resolution:
            if self.layers == "matching":
                return
            maps = torch.nn.functional.interpolate(
                maps, size=self.resolution, mode="bilinear", align_corners=False
            )
        self.sum = maps.detach().cpu() if self.sum is None else self.sum + maps.detach().cpu()
        self.count += 1

    def maps(self) -> np.ndarray:
        """(batch, tokens, h, w) float32: the average over the recorded layers and steps."""
        if self.count == 0:
            raise ValueError(
                f"no cross-attention layer has maps of size {self.resolution}; this UNet's are "
                f"{sorted(self.seen)}: pick one of them as the resolution, or layers='all'"
            )
        return (self.sum / self.count).numpy().astype(np.float32)


class _Recorder:
    """Attention as diffusers' AttnProcessor computes it, recording the probabilities."""

    def __init__(self, store: CrossAttentionStore) -> None:
        self.store = store

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any = None,
        attention_mask: Any = None,
        temb: Any = None,
        **_: Any,
    ) -> Any:
        import torch

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, length, _ = context.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)
        if encoder_hidden_states is not None:
            self.store.add(probs, attn.heads)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def cross_attention_names(unet: Any) -> list[str]:
    """Processor names of the UNet's cross-attention layers."""
    return [
        f"{name}.processor"
        for name, module in unet.named_modules()
        if getattr(module, "is_cross_attention", False) and hasattr(module, "set_processor")
    ]


@contextmanager
def capture_cross_attention(
    unet: Any,
    *,
    latent_hw: tuple[int, int],
    resolution: int | tuple[int, int] = 16,
    layers: str = "matching",
    conditional_only: bool = True,
) -> Iterator[CrossAttentionStore]:
    """Record cross-attention maps while the block runs; restore the processors after it.

    Parameters
    ----------
    unet : a diffusers UNet2DConditionModel.
    latent_hw : (h, w) of the latents the UNet will see (tells non-square maps' shape).
    resolution : side (or (h, w)) of the recorded maps; SD at 512 px has 16 x 16 layers.
    layers : "matching" or "all" (see CrossAttentionStore).
    conditional_only : True under classifier-free guidance (the batch is [uncond, cond]).
    """
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {', '.join(LAYERS)}, got {layers!r}")
    res = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if len(res) != 2 or min(res) < 1:
        raise ValueError(f"resolution must be a positive side or (h, w), got {resolution!r}")
    names = cross_attention_names(unet)
    if not names:
        raise ValueError("this UNet has no cross-attention layers")
    original = dict(unet.attn_processors)
    store = CrossAttentionStore((int(res[0]), int(res[1])), layers, conditional_only, latent_hw)
    recorder = _Recorder(store)
    unet.set_attn_processor({n: recorder if n in names else p for n, p in original.items()})
    try:
        yield store
    finally:
        unet.set_attn_processor(original)


def token_positions(tokenizer: Any, prompt: str, word: str) -> list[int]:
    """Positions of ``word``'s tokens in the tokenised ``prompt`` (with its start token).

    The last occurrence wins: the evaluation templates put the concept after their own words
    ("a photo of a {}"), so a concept such as "a" or "photo" still maps to itself."""
    ids = list(tokenizer(prompt).input_ids)
    sub = list(tokenizer(word, add_special_tokens=False).input_ids)
    if not sub:
        raise ValueError(f"word {word!r} gives no tokens")
    for start in reversed(range(len(ids) - len(sub) + 1)):
        if ids[start : start + len(sub)] == sub:
            return list(range(start, start + len(sub)))
    raise ValueError(f"word {word!r} is not a token sequence of the prompt {prompt!r}")


def attention_maps(
    pipe: Any,
    prompt: str,
    words: list[str],
    *,
    seed: int = 0,
    steps: int = 50,
    guidance: float = 7.5,
    resolution: int | tuple[int, int] = 16,
    layers: str = "matching",
    height: int | None = None,
    width: int | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], CrossAttentionStore]:
    """Generate one image for ``prompt`` and return it with each word's attention map.

    Returns
    -------
    image : (H, W, 3) uint8; maps : {word: (h, w) float32} at ``resolution`` (a side or
    (h, w), e.g. (16, 24) for 512 x 768 images); the store (for its diagnostics).
    """
    import torch

    height = height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = width or pipe.unet.config.sample_size * pipe.vae_scale_factor
    positions = {w: token_positions(pipe.tokenizer, prompt, w) for w in words}
    latent_hw = (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    with capture_cross_attention(
        pipe.unet,
        latent_hw=latent_hw,
        resolution=resolution,
        layers=layers,
        conditional_only=guidance > 1.0,
    ) as store:
        out = pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
        )
    maps = store.maps()[0]
    image = np.clip(np.rint(out.images[0] * 255.0), 0, 255).astype(np.uint8)
    return image, {w: maps[p].mean(axis=0) for w, p in positions.items()}, store


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The heat map (normalised to its maximum) in a jet palette blended over the image."""
    from PIL import Image

    h, w = image.shape[:2]
    top = float(heat.max())
    norm = heat / top if top > 0 else np.zeros_like(heat)
    up = (
        np.asarray(
            Image.fromarray((norm * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
            dtype=np.float64,
        )
        / 255.0
    )
    # the jet palette as piecewise-linear ramps (no plotting library needed)
    colour = np.stack([np.clip(1.5 - np.abs(4 * up - k), 0, 1) for k in (3.0, 2.0, 1.0)], axis=-1)
    blended = (1 - alpha) * image.astype(np.float64) / 255.0 + alpha * colour
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
