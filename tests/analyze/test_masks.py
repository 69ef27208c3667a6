"""Masks from the concept's cross-attention: written as <stem>.png, read by training, and
moving which pixels carry the loss."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from alignscope.cli import main

torch = pytest.importorskip("torch")


class _NoisePlusGarbage(torch.nn.Module):
    """Predicts the true noise (recovered from the noisy latents) except where ``bad`` is set,
    where it adds 100: a loss that is zero exactly when those pixels carry no weight."""

    def __init__(self, latents, ddpm, bad) -> None:
        super().__init__()
        self.latents, self.ddpm, self.bad = latents, ddpm, bad

    def forward(self, noisy, t, hidden):
        a = self.ddpm.alphas_cumprod[t].double()[:, None, None, None]
        noise = (noisy.double() - a.sqrt() * self.latents.double()) / (1 - a).sqrt()
        return SimpleNamespace(sample=(noise + 100.0 * self.bad).float())


def test_attention_masks_load_in_train_and_move_the_loss(planted, tiny_sd_dir, tmp_path, capsys):
    from alignscope.io.datasets import open_dataset
    from alignscope.train.data import load_examples
    from alignscope.train.loop import diffusion_loss
    from alignscope.train.modes import _latents, _training_scheduler, load_components

    masks = tmp_path / "masks"
    concept = ["--placeholder", "<c>", "--initializer", "a"]
    args = [str(tiny_sd_dir), str(planted), "--out", str(masks), *concept]
    assert main(["masks", *args, "--resolution", "16", "--draws", "2", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["masks"] == 8
    # (beside the run's hidden record and lock, which claim the folder)
    visible = sorted(p.name for p in masks.iterdir() if not p.name.startswith("."))
    assert visible == [f"{i}.png" for i in range(8)]
    written = np.stack([np.asarray(Image.open(masks / f"{i}.png")) for i in range(8)])
    assert set(np.unique(written)) == {0, 255}  # binary: learn or ignore
    # training reads them, one per image, as they were written
    examples = load_examples(open_dataset(planted), 16, mask_dir=str(masks))
    for i, example in enumerate(examples):
        np.testing.assert_array_equal(example.mask[0].numpy(), written[i] / 255.0)
    # and they decide which pixels carry the loss: garbage predicted on the pixels a mask
    # ignores costs nothing with the masks and a lot without them
    parts = load_components(tiny_sd_dir)
    latents, latent_masks = _latents(parts["vae"], examples)
    ddpm = _training_scheduler(parts["scheduler"])
    bad = (latent_masks == 0).expand_as(latents).float()
    assert 0 < bad.mean() < 1
    fake = _NoisePlusGarbage(latents, ddpm, bad)

    def loss(mask):
        return float(
            diffusion_loss(
                unet=fake,
                scheduler=ddpm,
                latents=latents,
                encoder_hidden_states=None,
                generator=torch.Generator().manual_seed(3),
                timestep_min=0,
                min_snr_gamma=None,
                mask=mask,
            )
        )

    assert loss(latent_masks) < 1e-6
    assert loss(None) > 100.0
    # end to end: textual inversion trains with them
    ti = ["train", "textual-inversion", str(planted), "--model", str(tiny_sd_dir)]
    run = [*ti, "--out", str(tmp_path / "ti"), "--placeholder", "<t>", "--initializer", "a"]
    assert main([*run, "--steps", "1", "--resolution", "16", "--loss-mask", str(masks)]) == 0


def test_masks_from_other_settings_are_never_mixed_into_a_folder(
    planted, tiny_sd_dir, tmp_path, capsys
):
    # train --loss-mask reads whatever <stem>.png it finds: a rerun with another threshold into
    # the same folder must be refused, not leave a mix of old and new masks
    base = ["masks", str(tiny_sd_dir), str(planted), "--out", str(tmp_path / "m")]
    run = [*base, "--placeholder", "<c>", "--initializer", "a", "--resolution", "16"]
    assert main([*run, "--draws", "1", "--quiet"]) == 0
    before = (tmp_path / "m" / "0.png").read_bytes()
    capsys.readouterr()
    assert main([*run, "--draws", "1", "--threshold", "0.9", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds the output of another run (threshold: 0.5 there, 0.9 now)" in err
    assert (tmp_path / "m" / "0.png").read_bytes() == before
    assert main([*run, "--draws", "1", "--threshold", "0.9", "--quiet", "--overwrite"]) == 0


def test_masks_refuse_a_bad_threshold(planted, tiny_sd_dir, tmp_path, capsys):
    args = ["masks", str(tiny_sd_dir), str(planted), "--out", str(tmp_path / "m")]
    assert main([*args, "--placeholder", "<c>", "--initializer", "a", "--threshold", "2"]) == 2
    assert capsys.readouterr().err == "alignscope: error: --threshold must be in [0, 1], got 2.0\n"


def _reference_attention(parts, latents, hidden, positions, steps, noise, ddpm):
    """The concept's cross-attention per latent pixel, written out with forward hooks:
    softmax(q k^T * scale) of every attn2 layer, heads averaged, the concept's positions
    averaged, resized bilinearly to the latent grid, then averaged over layers and draws."""
    import torch.nn.functional as F

    hw = latents.shape[-2:]
    maps = []

    def hook(attn, args, kwargs, output):
        x, context = args[0], kwargs["encoder_hidden_states"]
        b, n, _ = x.shape
        q = attn.to_q(x).view(b, n, attn.heads, -1).transpose(1, 2)
        k = attn.to_k(context).view(b, context.shape[1], attn.heads, -1).transpose(1, 2)
        probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1).mean(1)  # (b, n, tokens)
        side = round((n * hw[0] / hw[1]) ** 0.5)
        m = probs[..., positions].mean(-1).view(b, 1, side, n // side)
        maps.append(F.interpolate(m, size=tuple(hw), mode="bilinear", align_corners=False))

    handles = [
        module.register_forward_hook(hook, with_kwargs=True)
        for name, module in parts["unet"].named_modules()
        if name.endswith("attn2")
    ]
    try:
        with torch.no_grad():
            for d in range(steps.shape[0]):
                t = steps[d : d + 1].expand(latents.shape[0])
                a = ddpm.alphas_cumprod[t][:, None, None, None]
                noisy = a.sqrt() * latents + (1 - a).sqrt() * noise[d]
                parts["unet"](noisy, t, hidden)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(maps).mean(0)[:, 0]


def test_mask_maps_are_the_concepts_cross_attention(planted, tiny_sd_dir, tmp_path):
    from alignscope.analyze._model import Concept, encode_latents, load_components, load_images
    from alignscope.analyze.masks import attention_masks
    from alignscope.io.datasets import open_dataset
    from alignscope.train.modes import _training_scheduler

    result = attention_masks(
        tiny_sd_dir, open_dataset(planted), tmp_path / "m", placeholder="<c>",
        initializer="a", timesteps=(100, 700), draws=3, resolution=16, batch_size=3, seed=9,
    )  # fmt: skip
    parts = load_components(tiny_sd_dir)
    concept = Concept(parts["tokenizer"], parts["text_encoder"], "<c>", initializer="a")
    images = load_images(open_dataset(planted), 16, None)
    latents = encode_latents(parts["vae"], images.pixels)
    # the draws as documented: seeded generator, timesteps then noise
    gen = torch.Generator().manual_seed(9)
    steps = torch.randint(100, 700, (3,), generator=gen)
    noise = torch.randn((3, *latents.shape[1:]), generator=gen)
    ids = concept.token_ids(["a photo of a <c>"])[0].tolist()
    positions = [p for p, v in enumerate(ids) if v in concept.ids]
    hidden = concept.encode(["a photo of a <c>"] * 8, concept.vectors[None].expand(8, -1, -1))
    ref = _reference_attention(
        parts, latents, hidden, positions, steps, noise, _training_scheduler(parts["scheduler"])
    )
    up = torch.nn.functional.interpolate(ref[:, None], size=(16, 16), mode="bilinear")[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    norm = ((up - lo) / (up.amax(dim=(1, 2), keepdim=True) - lo)).numpy()
    np.testing.assert_allclose(result.maps, norm, atol=1e-4)
    clear = np.abs(norm - 0.5) > 1e-3  # away from the threshold, the masks must agree
    np.testing.assert_array_equal((result.masks == 255)[clear], (norm >= 0.5)[clear])
