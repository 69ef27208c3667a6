"""What the analyses share: a Stable Diffusion folder's components, the dataset's images with
their poison flags, and the concept's embedding vectors as a tensor that prompts are encoded
through (so gradients and forward derivatives reach it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.io.datasets import BadImage, Dataset

# What the UNet predicts is training's rule (one owner): the analyses repeat training's loss.
from alignscope.train.loop import noise_target  # noqa: F401 (analyze.timesteps imports it here)

# Textual inversion's first template (train.modes.TEMPLATES): one fixed prompt, so that the
# analyses measure the images, not the template drawn.
TI_PROMPT = "a photo of a {}"


@dataclass
class Images:
    """The usable records of a dataset at one resolution.

    ids, captions : per image; rows : the record's position in the dataset (the manifest's
    ``row``); pixels : (n, 3, R, R) float32 in [-1, 1]; poisoned : (n,) bool.
    """

    ids: list[str]
    rows: list[int]
    captions: list[str]
    pixels: Any
    poisoned: np.ndarray


def load_images(dataset: Dataset, resolution: int, manifest: str | Path | None) -> Images:
    """Decode and square-crop every record as training does; flags from ``manifest``
    (``None``: every image clean)."""
    import torch

    from alignscope.io.manifest import poison_flags
    from alignscope.train.data import square_image

    if resolution < 8 or resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8, got {resolution}")
    ids, rows, captions, pixels = [], [], [], []
    count = 0
    for i, record in enumerate(dataset):
        count = i + 1
        try:
            image = record.load()
        except BadImage as exc:
            dataset.skipped.append((record.id, str(exc)))
            continue
        array = square_image(image, resolution).astype(np.float32) / 127.5 - 1.0
        ids.append(record.id)
        rows.append(i)
        captions.append(record.caption)
        pixels.append(torch.from_numpy(array).permute(2, 0, 1))
    if not ids:
        raise ValueError(f"no usable images in {dataset.source!r}")
    flags = np.zeros(count, dtype=bool)
    if manifest is not None:
        if not Path(manifest).is_file():
            raise FileNotFoundError(f"manifest {str(manifest)!r} does not exist")
        flags = poison_flags(manifest, count)
    return Images(ids, rows, captions, torch.stack(pixels).contiguous(), flags[rows])


def load_components(model: str | Path, device: str = "cpu") -> dict[str, Any]:
    """The folder's unet, vae, text encoder, tokenizer and scheduler, frozen, in eval mode."""
    from alignscope._devices import check_device
    from alignscope.train.modes import load_components as load

    check_device(device)
    if not Path(model).is_dir():
        raise FileNotFoundError(f"model folder {str(model)!r} does not exist")
    parts = load(model)
    for name in ("unet", "vae", "text_encoder"):
        parts[name].requires_grad_(False).eval().to(device)
    return parts


def encode_latents(vae: Any, pixels: Any, batch: int = 16) -> Any:
    """VAE latent means times the scaling factor, as training uses them."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, pixels.shape[0], batch):
            chunk = pixels[start : start + batch].to(vae.device)
            out.append(vae.encode(chunk).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


class Concept:
    """The concept's token(s) and their embedding vectors.

    Three ways to name it: ``embeds`` (a ``learned_embeds.safetensors`` that ``train
    textual-inversion`` writes; ``placeholder`` picks its key when it holds several),
    ``initializer`` (a new ``placeholder`` token started from that word, as textual inversion
    starts), or neither (``placeholder`` is a word the tokenizer already has, its rows as they
    are, e.g. the concept word of a fine-tuned model).
    """

    def __init__(
        self,
        tokenizer: Any,
        text_encoder: Any,
        placeholder: str | None,
        *,
        initializer: str | None = None,
        embeds: str | Path | None = None,
    ) -> None:
        import torch

        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        table = text_encoder.get_input_embeddings().weight
        if embeds is not None:
            placeholder, vectors = _read_embeds(embeds, placeholder)
            if vectors.shape[1] != table.shape[1]:  # checked before the tokenizer changes
                raise ValueError(
                    f"embeds {str(embeds)!r} has {vectors.shape[1]}-dim vectors; this text "
                    f"encoder's are {table.shape[1]}-dim"
                )
        elif placeholder is None:
            raise ValueError("name the concept: placeholder= (with initializer= or embeds=)")
        if embeds is not None or initializer is not None:
            k = 1 if embeds is None else vectors.shape[0]
            tokens = [placeholder] + [f"{placeholder}_{i}" for i in range(1, k)]
            if tokenizer.add_tokens(tokens) != len(tokens):
                raise ValueError(
                    f"the tokenizer already has {placeholder!r}; choose a new placeholder"
                )
            text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            self.ids = list(tokenizer.convert_tokens_to_ids(tokens))
            if embeds is None:
                init = tokenizer.encode(initializer, add_special_tokens=False)
                if len(init) != 1:
                    raise ValueError(
                        f"initializer {initializer!r} must be a single token, got {len(init)}"
                    )
                vectors = table[init[0]].detach().clone()[None]
            self.phrase = " ".join(tokens)
        else:
            self.ids = list(tokenizer.encode(placeholder, add_special_tokens=False))
            if not self.ids:
                raise ValueError(f"placeholder {placeholder!r} gives no tokens")
            vectors = table[self.ids].detach().clone()
            self.phrase = placeholder
        self.placeholder = placeholder
        self.vectors = torch.as_tensor(vectors, dtype=torch.float32).to(table.device)

    @classmethod
    def from_components(
        cls,
        parts: dict[str, Any],
        placeholder: str | None,
        *,
        initializer: str | None = None,
        embeds: str | Path | None = None,
    ) -> Concept:
        """The concept in the tokenizer and text encoder of ``parts`` (as
        :func:`load_components` gives them)."""
        return cls(
            parts["tokenizer"],
            parts["text_encoder"],
            placeholder,
            initializer=initializer,
            embeds=embeds,
        )

    def token_ids(self, prompts: list[str]) -> Any:
        tok = self.tokenizer
        return tok(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=tok.model_max_length,
            return_tensors="pt",
        ).input_ids

    @contextmanager
    def vectors_from(self, vectors: Any) -> Iterator[None]:
        """While open, the concept's positions in every encoded batch take ``vectors``
        ((batch, k, dim): one set per prompt, so each prompt's gradient stays its own)."""
        import torch

        def swap(module: Any, args: Any, output: Any) -> Any:
            ids = args[0]
            for j, tid in enumerate(self.ids):
                where = (ids == tid).unsqueeze(-1)
                output = torch.where(where, vectors[:, j, None, :].to(output.dtype), output)
            return output

        handle = self.text_encoder.get_input_embeddings().register_forward_hook(swap)
        try:
            yield
        finally:
            handle.remove()

    def encode(self, prompts: list[str], vectors: Any) -> Any:
        """Text encodings of ``prompts`` with the concept's rows replaced by ``vectors``."""
        ids = self.token_ids(prompts).to(self.text_encoder.device)
        with self.vectors_from(vectors):
            return self.text_encoder(ids)[0]


def _read_embeds(path: str | Path, placeholder: str | None) -> tuple[str, Any]:
    """(placeholder, (k, dim) tensor) from a learned_embeds.safetensors."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"embeds file {str(path)!r} does not exist")
    try:
        table = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise ValueError(f"embeds {str(path)!r} is not a safetensors file ({exc})") from exc
    if placeholder is None:
        if len(table) != 1:
            raise ValueError(
                f"embeds {str(path)!r} holds {sorted(table)}: pick one with placeholder="
            )
        placeholder = next(iter(table))
    if placeholder not in table:
        raise ValueError(f"embeds {str(path)!r} has no {placeholder!r}; it has {sorted(table)}")
    vectors = table[placeholder].float()
    return placeholder, vectors[None] if vectors.ndim == 1 else vectors


def training_scheduler(scheduler: Any) -> Any:
    """The DDPM form of the folder's scheduler (training's noise schedule)."""
    from alignscope.train.modes import _training_scheduler

    return _training_scheduler(scheduler)


def timestep_window(scheduler: Any, timesteps: tuple[int, int] | None) -> tuple[int, int]:
    """[low, high) the draws come from: ``timesteps`` checked against the scheduler's T, or the
    whole [0, T) when None."""
    num = scheduler.config.num_train_timesteps
    low, high = timesteps if timesteps is not None else (0, num)
    if not 0 <= low < high <= num:
        raise ValueError(f"timesteps must satisfy 0 <= low < high <= {num}, got {low}, {high}")
    return low, high


def concept_prompt(concept: Concept, prompt: str | None) -> str:
    """``prompt`` (default :data:`TI_PROMPT`) with the concept's phrase where its ``{}`` is."""
    template = prompt or TI_PROMPT
    if "{}" not in template:
        raise ValueError(f"prompt {template!r} must hold {{}} where the concept goes")
    return template.format(concept.phrase)
