"""The diffusion classifier (Li et al. 2023, "Your Diffusion Model is Secretly a Zero-Shot
Classifier") with BiBadDiff's loss filter (Pan et al., Appendix I).

An image x is classified among prompts c_1..c_C by its denoising error under each prompt:
error(x, c) = mean over samples k of the error of the UNet's prediction for the noised
latent x_t = add_noise(x_0, eps_k, t_k) conditioned on c, against its target (eps_k for an
epsilon model, the velocity for a v-prediction model, x_0 for a sample model). The predicted
class is the argmin over c. The same (t_k, eps_k) pairs serve every prompt, which cancels most
of the sampling noise from the comparison (Li et al.'s variance reduction).

BiBadDiff's filter ("filter out the top p_filter (%) denoising losses"): we read it as
per-element, inside each error map. For every (image, prompt, sample) the squared errors of
the latent's elements (channels x height x width) are sorted and the largest
``floor(filter_fraction * m)`` of the m elements are dropped before averaging. A trigger
occupies a small region of the latent, where a poisoned model conditioned on a non-target
prompt fails to denoise; dropping the largest elements removes that region's influence.
:func:`filtered_mean` is this arithmetic.

Li et al.'s protocol, as their eval_prob_adaptive.py runs it: the n_samples timesteps are
``range(T // n // 2, T, T // n)`` (its first n; T the scheduler's num_train_timesteps), so
for T = 1000 and n = 3 they are 166, 499 and 832; each image is resized with bicubic
interpolation so that its short side is the model's image size and the centred square is
cropped (torchvision's ``Resize(size, BICUBIC)`` then ``CenterCrop(size)``). Their adaptive
pruning of classes over rounds is not done: every class is scored at every timestep.

Noise: for image i, ``n_samples`` standard normal latents are drawn on the CPU, in float32,
by ``torch.randn((n_samples, C, h, w), generator=g)`` with ``g`` seeded by
``np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint64)[0]``; so each image's
noise depends on its index and the seed only (not on batch sizes or the other images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignscope._progress import ProgressArg, TileProgress
from alignscope.evaluate._images import as_array, image_list
from alignscope.train.loop import noise_target, prediction_type


def _fraction_ok(value: Any) -> bool:
    number = not isinstance(value, bool) and isinstance(
        value, (int, float, np.integer, np.floating)
    )
    return number and 0.0 <= value < 1.0


def filtered_mean(errors: Any, filter_fraction: float) -> Any:
    """Mean of each row after dropping its largest ``floor(filter_fraction * m)`` values.

    Parameters
    ----------
    errors : (..., m) torch tensor of per-element errors (any float dtype, any device).
    filter_fraction : in [0, 1); the fraction of each row's largest values to drop. At least
        one value is kept; a product within 1e-9 of an integer counts as that integer.

    Returns
    -------
    (...) float64 torch tensor on the device of ``errors``.
    """
    import torch

    if not _fraction_ok(filter_fraction):
        raise ValueError(f"filter_fraction must be in [0, 1), got {filter_fraction!r}")
    x = errors.double()
    m = x.shape[-1]
    if m == 0:
        raise ValueError("errors has no elements in its last dimension")
    drop = min(math.floor(float(filter_fraction) * m + 1e-9), m - 1)
    if drop == 0:
        return x.mean(dim=-1)
    kept = torch.sort(x, dim=-1).values[..., : m - drop]
    return kept.mean(dim=-1)


def image_seed(seed: int, index: int) -> int:
    """The torch generator seed of image ``index`` (see the module docstring)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])


@dataclass(frozen=True)
class DiffusionClassification:
    """Result of :func:`diffusion_classify`.

    Attributes
    ----------
    errors : (n_images, n_classes) float64, mean (filtered) denoising error per prompt.
    predictions : (n_images,) int64, argmin of ``errors`` per image (first on ties).
    class_prompts : the prompts, in column order.
    sample_errors : (n_images, n_classes, n_samples) float64, the per-sample errors.
    timesteps : (n_samples,) int64, the timesteps of the samples.
    seed, filter_fraction : the settings used.
    """

    errors: np.ndarray
    predictions: np.ndarray
    class_prompts: tuple[str, ...]
    sample_errors: np.ndarray = field(repr=False)
    timesteps: np.ndarray = field(repr=False)
    seed: int = 0
    filter_fraction: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: prompts, errors, predictions (indices and prompts) and settings."""
        return {
            "class_prompts": list(self.class_prompts),
            "errors": self.errors.tolist(),
            "predictions": [int(p) for p in self.predictions],
            "predicted_prompts": [self.class_prompts[int(p)] for p in self.predictions],
            "n_samples": int(self.timesteps.shape[0]),
            "timesteps": [int(t) for t in self.timesteps],
            "seed": self.seed,
            "filter_fraction": self.filter_fraction,
        }


# --------------------------------------------------------------------------- checks


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_pipe(pipe: Any) -> None:
    missing = [
        a for a in ("vae", "unet", "text_encoder", "tokenizer", "scheduler") if not hasattr(pipe, a)
    ]
    if missing:
        raise TypeError(
            f"pipe must be a diffusers StableDiffusionPipeline (it lacks {', '.join(missing)}); "
            "load one with StableDiffusionPipeline.from_pretrained"
        )


def _check_images(images: Any) -> list[np.ndarray]:
    return [as_array(im, f"images[{i}]") for i, im in enumerate(image_list(images))]


def _check_prompts(class_prompts: Any) -> tuple[str, ...]:
    if isinstance(class_prompts, str) or not isinstance(class_prompts, Sequence):
        raise TypeError(
            f"class_prompts must be a list of strings, got {type(class_prompts).__name__}"
        )
    prompts = tuple(class_prompts)
    if not prompts:
        raise ValueError("class_prompts is empty: give one prompt per class")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"class_prompts[{i}] must be a string, got {type(p).__name__}")
    return prompts


def li_timesteps(n_samples: int, num_train: int) -> np.ndarray:
    """Li et al.'s timesteps: the first ``n_samples`` of ``range(T // n // 2, T, T // n)``.

    Parameters
    ----------
    n_samples : n, in [1, T].
    num_train : T, the scheduler's num_train_timesteps.

    Returns
    -------
    (n,) int64, ascending.
    """
    if not 1 <= n_samples <= num_train:
        raise ValueError(
            f"n_samples must be in [1, {num_train}] (the scheduler's num_train_timesteps: one "
            f"timestep each), got {n_samples}"
        )
    stride = num_train // n_samples
    # n strides from stride // 2 end below T since n * stride <= T, so there are always n
    return np.arange(stride // 2, num_train, stride, dtype=np.int64)[:n_samples]


def _check_timesteps(timesteps: Any, n_samples: int, num_train: int) -> np.ndarray:
    if timesteps is None:
        return li_timesteps(n_samples, num_train)
    arr = np.asarray(timesteps)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(
            f"timesteps must be a 1-D sequence of ints, got {arr.dtype} with shape {arr.shape}"
        )
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"timesteps has {arr.shape[0]} entries for n_samples={n_samples}: "
            "pass n_samples=len(timesteps)"
        )
    if arr.min() < 0 or arr.max() >= num_train:
        raise ValueError(
            f"timesteps must lie in [0, {num_train}) (the scheduler's num_train_timesteps), "
            f"got values from {arr.min()} to {arr.max()}"
        )
    return arr.astype(np.int64)


# --------------------------------------------------------------------------- model work


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Li et al.'s preprocessing: resize (PIL bicubic) so the image covers height x width, then
    crop the centre.

    For a square target this is torchvision's ``Resize(size, BICUBIC)`` then
    ``CenterCrop(size)``, as their get_transform composes them:
    :func:`alignscope.io.datasets.resize_center_crop` with the bicubic filter (Nightshade's
    :func:`~alignscope.poison.nightshade.square_crop` is the same crop, bilinear). A
    non-square target scales the side that binds the same way. An image of the target size
    is returned as it is.
    """
    from alignscope.io.datasets import resize_center_crop

    return resize_center_crop(image, height, width, "bicubic")


def _latent_size(unet: Any) -> tuple[int, int]:
    size = unet.config.sample_size
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def _encode_prompts(pipe: Any, prompts: tuple[str, ...]) -> Any:
    tok = pipe.tokenizer
    ids = tok(
        list(prompts),
        padding="max_length",
        truncation=True,
        max_length=tok.model_max_length,
        return_tensors="pt",
    ).input_ids
    return pipe.text_encoder(ids.to(pipe.text_encoder.device))[0]


def diffusion_classify(
    pipe: Any,
    images: Sequence[Any],
    class_prompts: Sequence[str],
    *,
    n_samples: int = 32,
    timesteps: Sequence[int] | None = None,
    seed: int = 0,
    filter_fraction: float = 0.0,
    batch_size: int = 8,
    progress: ProgressArg = False,
) -> DiffusionClassification:
    """Classify images by which prompt lets the diffusion model denoise them best.

    Parameters
    ----------
    pipe : a diffusers ``StableDiffusionPipeline`` (its vae, unet, text_encoder, tokenizer
        and scheduler config are used; the models are put in eval mode). Runs on the UNet's
        device and dtype.
    images : n HWC uint8 RGB arrays or PIL images. Each is resized (bicubic, short side to
        the size) and centre-cropped to the UNet's sample size times the VAE's scale factor
        (:func:`fit_image`), scaled to [-1, 1] and encoded to ``latent_dist.mean *
        vae.config.scaling_factor``.
    class_prompts : C prompts, one per class (e.g. "a photo of a {name}").
    n_samples : number of (timestep, noise) pairs per image, shared by all prompts.
    timesteps : n_samples ints in [0, T), or None for Li et al.'s
        ``range(T // n // 2, T, T // n)`` (:func:`li_timesteps`; T = the scheduler's
        num_train_timesteps, n = n_samples <= T).
    seed : non-negative int; with the image's index it seeds that image's noise.
    filter_fraction : in [0, 1); the largest fraction of each error map's elements dropped
        before averaging (BiBadDiff's filter; 0 is Li et al.'s plain mean squared error).
    batch_size : UNet inputs per forward pass (and images per VAE pass).
    progress : True for a bar on stderr, or a callable(done_images, total).

    Returns
    -------
    :class:`DiffusionClassification`: errors (n, C) float64, predictions (n,) int64.
    """
    import torch
    from diffusers import DDPMScheduler

    _check_pipe(pipe)
    arrays = _check_images(images)
    prompts = _check_prompts(class_prompts)
    n_samples = _positive_int("n_samples", n_samples)
    batch_size = _positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not _fraction_ok(filter_fraction):
        raise ValueError(
            f"filter_fraction must be in [0, 1) (0.1 drops the largest 10% of each error "
            f"map), got {filter_fraction!r}"
        )
    config = pipe.scheduler.config
    num_train = int(config.num_train_timesteps)
    prediction_type(pipe.scheduler)  # an unknown target is refused before any model work
    steps = _check_timesteps(timesteps, n_samples, num_train)
    reporter = TileProgress(progress, "diffusion classifier")

    n_images, n_classes = len(arrays), len(prompts)
    sample_errors = np.zeros((n_images, n_classes, n_samples), dtype=np.float64)
    if n_images:
        vae, unet = pipe.vae.eval(), pipe.unet.eval()
        pipe.text_encoder.eval()
        noise_scheduler = DDPMScheduler.from_config(config)
        lh, lw = _latent_size(unet)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        device, dtype = unet.device, unet.dtype
        t_all = torch.from_numpy(steps).to(device)
        # (sample, class) pairs in a fixed order, cut into UNet batches
        pair_class = np.repeat(np.arange(n_classes), n_samples)
        pair_sample = np.tile(np.arange(n_samples), n_classes)
        with torch.no_grad(), reporter:
            embeddings = _encode_prompts(pipe, prompts).to(device, dtype)
            for first in range(0, n_images, batch_size):
                chunk = arrays[first : first + batch_size]
                pixels = np.stack([fit_image(a, lh * factor, lw * factor) for a in chunk])
                x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
                latents = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean
                latents = (latents * vae.config.scaling_factor).float().to(device)
                for j in range(len(chunk)):
                    i = first + j
                    x0 = latents[j : j + 1].expand(n_samples, -1, -1, -1)
                    g = torch.Generator().manual_seed(image_seed(int(seed), i))
                    noise = torch.randn(x0.shape, generator=g).to(device)
                    noisy = noise_scheduler.add_noise(x0, noise, t_all)
                    target = noise_target(noise_scheduler, x0, noise, t_all)
                    for start in range(0, n_classes * n_samples, batch_size):
                        cs = torch.from_numpy(pair_class[start : start + batch_size])
                        ks = torch.from_numpy(pair_sample[start : start + batch_size])
                        pred = unet(
                            noisy[ks].to(dtype), t_all[ks], encoder_hidden_states=embeddings[cs]
                        ).sample
                        err = (pred.float() - target[ks]) ** 2
                        values = filtered_mean(err.flatten(1), float(filter_fraction))
                        sample_errors[i, cs.numpy(), ks.numpy()] = values.cpu().numpy()
                    if reporter.callback is not None:
                        reporter.callback(i + 1, n_images)
    errors = sample_errors.mean(axis=2)
    predictions = (
        np.argmin(errors, axis=1).astype(np.int64) if n_images else np.zeros(0, dtype=np.int64)
    )
    return DiffusionClassification(
        errors=errors,
        predictions=predictions,
        class_prompts=prompts,
        sample_errors=sample_errors,
        timesteps=steps,
        seed=int(seed),
        filter_fraction=float(filter_fraction),
    )
