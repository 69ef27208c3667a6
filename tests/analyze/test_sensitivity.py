"""Semantic Sensitivity Maps: the forward-mode derivative against central finite differences,
the aggregated map against one built from finite differences, a planted region found on a
constructed denoiser, and the HTML report."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from alignscope.cli import main

torch = pytest.importorskip("torch")


def _setup(tiny_sd_dir, planted, n=3):
    from alignscope.analyze._model import (
        Concept,
        encode_latents,
        load_components,
        load_images,
        training_scheduler,
    )
    from alignscope.io.datasets import open_dataset

    images = load_images(open_dataset(planted), 16, None)
    parts = load_components(tiny_sd_dir)
    concept = Concept(parts["tokenizer"], parts["text_encoder"], "<c>", initializer="a")
    latents = encode_latents(parts["vae"], images.pixels[:n])
    return parts, training_scheduler(parts["scheduler"]), concept, latents


def _finite_difference(parts, concept, noisy, t, prompts, vectors, u, h):
    """Central difference of the UNet's prediction along u, in float64 arithmetic where
    the two predictions are subtracted."""
    with torch.no_grad():
        up = parts["unet"](noisy, t, concept.encode(prompts, vectors + h * u)).sample
        down = parts["unet"](noisy, t, concept.encode(prompts, vectors - h * u)).sample
    return (up.double() - down.double()) / (2 * h)


def test_derivative_agrees_with_finite_differences(tiny_sd_dir, planted):
    from alignscope.analyze.sensitivity import prediction_jvp

    parts, ddpm, concept, latents = _setup(tiny_sd_dir, planted)
    # in float64, so that the difference quotients are not drowned by rounding
    parts["unet"].double()
    parts["text_encoder"].double()
    gen = torch.Generator().manual_seed(11)
    t = torch.tensor([3, 400, 950])
    noisy = ddpm.add_noise(latents.double(), torch.randn(latents.shape, generator=gen).double(), t)
    vectors = concept.vectors.double().expand(3, -1, -1).clone()
    u = torch.randn(vectors.shape, generator=gen, dtype=torch.float64)
    u = u / u.flatten(1).norm(dim=1)[:, None, None]
    prompts = ["a photo of a <c>"] * 3
    _, tangent = prediction_jvp(parts["unet"], concept, noisy, t, prompts, vectors, u)
    scale = float(tangent.abs().max())
    errors = []
    for h in (1e-1, 1e-2, 1e-3):
        fd = _finite_difference(parts, concept, noisy, t, prompts, vectors, u, h)
        errors.append(float((fd - tangent).abs().max()) / scale)
    # linear for small steps: the central difference converges to the derivative, its error
    # shrinking like h^2
    assert errors[-1] < 1e-4
    assert errors[1] < errors[0] / 20 and errors[2] < errors[1] / 20


def test_map_is_the_rms_of_the_directional_change(tiny_sd_dir, planted):
    from alignscope.analyze.sensitivity import latent_sensitivity

    parts, ddpm, concept, latents = _setup(tiny_sd_dir, planted)
    parts["unet"].double()  # float64: difference quotients free of rounding
    parts["text_encoder"].double()
    latents = latents.double()
    gen = torch.Generator().manual_seed(12)
    steps = torch.tensor([10, 700])
    noise = torch.randn((2, *latents.shape[1:]), generator=gen, dtype=torch.float64)
    dirs = torch.randn((2, *concept.vectors.shape), generator=gen, dtype=torch.float64)
    got = latent_sensitivity(parts, ddpm, concept, latents, ["a photo of a <c>"] * 3, steps,
                             noise, dirs, batch_size=4)  # fmt: skip
    alphas = ddpm.alphas_cumprod.double()
    want = np.zeros(got.shape)
    for i in range(3):
        for d in range(2):
            a = alphas[steps[d]]
            noisy = a.sqrt() * latents[i] + (1 - a).sqrt() * noise[d]
            fd = _finite_difference(
                parts, concept, noisy[None], steps[d : d + 1], ["a photo of a <c>"],
                concept.vectors.double()[None], dirs[d : d + 1], 1e-4,
            )  # fmt: skip
            want[i] += (fd[0] ** 2).sum(dim=0).numpy()
    want = np.sqrt(want / 2)
    np.testing.assert_allclose(got, want, rtol=1e-4)


class _GatedDenoiser(torch.nn.Module):
    """A constructed denoiser whose text conditioning acts only where the first latent channel
    is bright: pred = 0.5 x + sigmoid(20 (x_0 - 0.5)) * W mean(text)."""

    def __init__(self, text_dim: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(text_dim, 4)

    def forward(self, x, t, hidden):
        gate = torch.sigmoid(20 * (x[:, :1] - 0.5))
        return SimpleNamespace(sample=0.5 * x + gate * self.proj(hidden.mean(1))[:, :, None, None])


class _PoolingVae:
    """Latents = 2 x 2 average pooled pixels, channels RGB and their mean (scaling 1)."""

    device = torch.device("cpu")
    config = SimpleNamespace(scaling_factor=1.0)

    def encode(self, pixels):
        pooled = torch.nn.functional.avg_pool2d(pixels, 2)
        latent = torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=latent))


def test_map_highlights_a_planted_region(tiny_sd_dir):
    from alignscope.analyze._model import Images, load_components
    from alignscope.analyze.sensitivity import sensitivity_maps

    parts = load_components(tiny_sd_dir)
    parts["vae"] = _PoolingVae()
    parts["unet"] = _GatedDenoiser(parts["text_encoder"].config.hidden_size)
    pixels = torch.full((2, 3, 16, 16), -0.5)
    pixels[0, 0, 2:6, 9:15] = 1.0  # a bright red 4 x 6 patch, top right (rows 2-5, cols 9-14)
    pixels[1, 0, 10:14, 1:5] = 1.0  # and one bottom left
    images = Images(["a", "b"], [0, 1], ["", ""], pixels, np.array([False, True]))
    result = sensitivity_maps(
        parts, images, placeholder="<c>", initializer="a", timesteps=(0, 100), draws=6
    )
    for i, (rows, cols) in enumerate([(slice(2, 6), slice(9, 15)), (slice(10, 14), slice(1, 5))]):
        inside = np.zeros((16, 16), dtype=bool)
        inside[rows, cols] = True
        heat = result.maps[i]
        assert heat[inside].mean() > 5 * heat[~inside].mean()
        assert inside[np.unravel_index(np.argmax(heat), heat.shape)]


def test_report_shows_clean_beside_poisoned(tiny_sd_dir, planted, tmp_path, capsys):
    out = tmp_path / "ssm"
    args = ["analyze", "sensitivity", str(tiny_sd_dir), str(planted), "--out", str(out)]
    flags = ["--placeholder", "<c>", "--initializer", "a", "--resolution", "16", "--draws", "2"]
    assert main([*args, *flags, "--batch-size", "16", "--json", "--quiet"]) == 0
    means = json.loads(capsys.readouterr().out)["mean_sensitivity"]
    page = (out / "sensitivity.html").read_text()
    assert "<h2>clean (4 images" in page and "<h2>poisoned (4 images" in page
    assert page.count("data:image/png;base64,") == 16  # 8 images, each plain and overlaid
    saved = np.load(out / "sensitivity.npz")
    assert saved["maps"].shape == (8, 16, 16)
    assert list(saved["poisoned"]) == [bool(i % 2) for i in range(8)]
    assert means["clean"] == pytest.approx(float(saved["maps"][0::2].mean()), rel=1e-5)
    assert main([*args, *flags, "--direction", "learned"]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: --direction learned needs --embeds (the learned vectors) and "
        "--initializer (where they started)\n"
    )
