"""The diffusion classifier on a tiny random Stable Diffusion: shapes, seeding, shared noise
across prompts, the filtered error against an independent computation with the UNet, and Li et
al.'s timestep grid and bicubic resize against re-implementations of their code's description
(and torchvision itself, which their code calls)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from alignscope import _reference  # noqa: E402
from alignscope.evaluate.diffusion_classifier import (  # noqa: E402
    diffusion_classify,
    filtered_mean,
    fit_image,
    li_timesteps,
)

PROMPTS = ["a photo of a cat", "a photo of a garbage truck", "a photo of a church"]


@pytest.fixture(scope="module")
def pipe(tiny_sd_dir):
    return diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd_dir)


@pytest.fixture
def images(rng):
    # 16 x 16: the tiny UNet's 8 x 8 latents times the VAE's factor 2, so no resizing
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]


def test_errors_and_predictions(pipe, images):
    result = diffusion_classify(pipe, images, PROMPTS, n_samples=4)
    assert result.errors.shape == (2, 3) and result.errors.dtype == np.float64
    assert result.sample_errors.shape == (2, 3, 4)
    assert result.predictions.dtype == np.int64
    np.testing.assert_array_equal(result.predictions, np.argmin(result.errors, axis=1))
    np.testing.assert_array_equal(result.timesteps, _reference.li_timesteps_reference(4, 1000))
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["predicted_prompts"] == [PROMPTS[p] for p in result.predictions]


def _unet_sample_errors(pipe, image, index, prompt, timesteps, seed):
    """Per-sample epsilon errors of one image and prompt straight from the module docstring:
    the noise of image ``index`` is ``randn((n, C, h, w))`` from a generator seeded by
    SeedSequence([seed, index]); x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps_k."""
    with torch.no_grad():
        ids = pipe.tokenizer(
            [prompt],
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        text = pipe.text_encoder(ids)[0]
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
        x0 = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        g_seed = int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])
        noise = torch.randn(
            (len(timesteps), *x0.shape[1:]), generator=torch.Generator().manual_seed(g_seed)
        )
        errors = []
        for k, t in enumerate(timesteps):
            a = pipe.scheduler.alphas_cumprod[t].double()
            noisy = (a.sqrt() * x0 + (1 - a).sqrt() * noise[k : k + 1]).float()
            pred = pipe.unet(noisy, torch.tensor([t]), encoder_hidden_states=text).sample
            errors.append(float(((pred.double() - noise[k : k + 1].double()) ** 2).mean()))
    return np.array(errors)


def test_same_seed_same_errors(pipe, images):
    first = diffusion_classify(pipe, images, PROMPTS, n_samples=3, seed=7)
    again = diffusion_classify(pipe, images, PROMPTS, n_samples=3, seed=7, batch_size=2)
    other = diffusion_classify(pipe, images, PROMPTS, n_samples=3, seed=8)
    assert pipe.scheduler.config.prediction_type == "epsilon"
    # the second image (its own noise stream) and the last prompt, whose (sample, prompt)
    # pairs straddle the UNet batches of 2, recomputed from the seed at Li et al.'s
    # timesteps for n = 3: range(166, 1000, 333), i.e. 166, 499 and 832
    grid = _reference.li_timesteps_reference(3, 1000)
    assert grid == [166, 499, 832]
    np.testing.assert_array_equal(again.timesteps, grid)
    want = _unet_sample_errors(pipe, images[1], 1, PROMPTS[2], grid, 7)
    np.testing.assert_allclose(again.sample_errors[1, 2], want, rtol=1e-5)
    np.testing.assert_allclose(again.errors, first.errors, rtol=1e-6)
    assert np.abs(other.errors - first.errors).max() > 1e-4


def test_identical_prompts_get_identical_errors(pipe, images):
    # the same (t, noise) pairs for every prompt: equal prompts give equal columns
    result = diffusion_classify(pipe, images, ["a cat", "a dog", "a cat"], n_samples=3)
    np.testing.assert_allclose(result.sample_errors[:, 0], result.sample_errors[:, 2], rtol=1e-6)
    assert np.abs(result.sample_errors[:, 0] - result.sample_errors[:, 1]).max() > 1e-6


def test_filtered_mean_drops_the_largest_values(rng):
    assert filtered_mean(torch.tensor([[1.0, 10.0, 2.0, 3.0]]), 0.25).tolist() == [2.0]
    values = rng.normal(size=(3, 20))
    expected = np.sort(values, axis=1)[:, :15].mean(axis=1)  # drop floor(0.25 * 20) = 5
    np.testing.assert_allclose(filtered_mean(torch.from_numpy(values), 0.25).numpy(), expected)
    np.testing.assert_allclose(filtered_mean(torch.from_numpy(values), 0.0), values.mean(axis=1))
    with pytest.raises(ValueError, match=r"filter_fraction must be in \[0, 1\)"):
        filtered_mean(torch.from_numpy(values), 1.0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_error_equals_an_independent_unet_computation(pipe, images, prediction_type):
    scheduler = diffusers.DDIMScheduler.from_config(
        pipe.scheduler.config, prediction_type=prediction_type
    )
    model = diffusers.StableDiffusionPipeline(**{**pipe.components, "scheduler": scheduler})
    t, seed, prompt = 400, 3, PROMPTS[1]
    plain = diffusion_classify(model, images[:1], [prompt], n_samples=1, timesteps=[t], seed=seed)
    filtered = diffusion_classify(
        model, images[:1], [prompt], n_samples=1, timesteps=[t], seed=seed, filter_fraction=0.1
    )

    with torch.no_grad():
        ids = pipe.tokenizer(
            [prompt],
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        text = pipe.text_encoder(ids)[0]
        pixels = torch.from_numpy(images[0]).permute(2, 0, 1)[None].float() / 127.5 - 1
        x0 = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        # the documented noise of image 0
        g_seed = int(np.random.SeedSequence([seed, 0]).generate_state(1, dtype=np.uint64)[0])
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(g_seed))
        a = scheduler.alphas_cumprod[t].double()
        noisy = (a.sqrt() * x0 + (1 - a).sqrt() * noise).float()
        pred = pipe.unet(noisy, torch.tensor([t]), encoder_hidden_states=text).sample
    target = {
        "epsilon": noise,
        "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * x0,
        "sample": x0,
    }[prediction_type]
    err = ((pred.double() - target.double()) ** 2).flatten().numpy()
    assert plain.errors[0, 0] == pytest.approx(err.mean(), rel=1e-5)
    kept = np.sort(err)[: err.size - int(0.1 * err.size)]  # 256 elements, drop the top 25
    assert filtered.errors[0, 0] == pytest.approx(kept.mean(), rel=1e-5)
    assert filtered.errors[0, 0] < plain.errors[0, 0]


def _without_models(timesteps: int) -> SimpleNamespace:
    """Components with a scheduler config and no models: a check that runs after a model call
    would fail with an AttributeError, not the ValueError the tests expect."""
    config = SimpleNamespace(num_train_timesteps=timesteps, prediction_type="epsilon")
    return SimpleNamespace(
        vae=None,
        unet=None,
        text_encoder=None,
        tokenizer=None,
        scheduler=SimpleNamespace(config=config),
    )


def test_argument_errors_come_before_any_model_call(images):
    # a stand-in without models: a ValueError (not an AttributeError) shows the checks run first
    fake = _without_models(1000)
    cases = [
        ({"filter_fraction": 1.0}, r"filter_fraction must be in \[0, 1\)"),
        ({"timesteps": [1, 2]}, "timesteps has 2 entries for n_samples=3"),
        ({"timesteps": [0, 10, 1000]}, r"timesteps must lie in \[0, 1000\)"),
        ({"n_samples": 0}, "n_samples must be a positive int"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"seed": -1}, "seed must be a non-negative int"),
    ]
    for kwargs, message in cases:
        options = {"n_samples": 3, **kwargs}
        with pytest.raises(ValueError, match=message):
            diffusion_classify(fake, images, PROMPTS, **options)
    with pytest.raises(ValueError, match=r"images\[1\] must be an HWC uint8 RGB array"):
        diffusion_classify(fake, [images[0], images[1][..., 0]], PROMPTS)
    with pytest.raises(ValueError, match="class_prompts is empty"):
        diffusion_classify(fake, images, [])
    with pytest.raises(TypeError, match="pipe must be a diffusers StableDiffusionPipeline"):
        diffusion_classify(object(), images, PROMPTS)


# --------------------------------------------------------------------------- Li et al.'s protocol


@pytest.mark.parametrize(
    ("n", "num_train"),
    # 300 of 1000: range(1, 1000, 3) has 333 entries, Li et al. keep the first 300
    [(1, 1000), (2, 1000), (3, 1000), (7, 1000), (30, 1000), (300, 1000), (1000, 1000),
     (5, 50), (6, 7)],
)  # fmt: skip
def test_default_timesteps_are_li_et_al_grid(n, num_train):
    got = li_timesteps(n, num_train)
    assert got.dtype == np.int64
    assert got.tolist() == _reference.li_timesteps_reference(n, num_train)


def test_timestep_grid_refuses_more_samples_than_timesteps(images):
    with pytest.raises(ValueError, match=r"^n_samples must be in \[1, 1000\] \(the scheduler's"):
        li_timesteps(1001, 1000)
    fake = _without_models(10)
    with pytest.raises(ValueError, match=r"n_samples must be in \[1, 10\]"):
        diffusion_classify(fake, images, PROMPTS, n_samples=11)


# (height, width) of sources for a 16-pixel square: long sides whose resized length exceeds
# 16 by an odd number (1, 3, 5: crop offsets 0, 2, 2 under round-half-even), an upscale, a
# truncated long side (16 * 13 / 10 = 20.8) and portrait images
SHAPES = [(16, 17), (16, 19), (16, 21), (8, 11), (10, 13), (29, 12), (40, 40), (16, 16)]


@pytest.mark.parametrize("shape", SHAPES)
def test_images_are_resized_as_li_et_al(rng, shape):
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = fit_image(image, 16, 16)
    want = _reference.short_side_crop_reference(image, 16, Image.BICUBIC)
    np.testing.assert_array_equal(got, want)
    # their get_transform: torchvision's Resize(size, BICUBIC) then CenterCrop(size)
    tv = pytest.importorskip("torchvision.transforms")
    transform = tv.Compose(
        [tv.Resize(16, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(16)]
    )
    np.testing.assert_array_equal(got, np.asarray(transform(Image.fromarray(image))))


def test_the_classifier_sees_the_bicubic_crop(pipe, rng):
    """A 21 x 30 image is classified as its reference crop to the tiny model's 16 pixels."""
    image = rng.integers(0, 256, (21, 30, 3), dtype=np.uint8)
    result = diffusion_classify(pipe, [image], PROMPTS[:1], n_samples=2, seed=5)
    square = _reference.short_side_crop_reference(image, 16, Image.BICUBIC)
    want = _unet_sample_errors(pipe, square, 0, PROMPTS[0], result.timesteps.tolist(), 5)
    np.testing.assert_allclose(result.sample_errors[0, 0], want, rtol=1e-5)
