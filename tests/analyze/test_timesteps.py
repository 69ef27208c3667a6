"""The timestep analysis: where a planted poison's gradient sits, the per-image gradient
against textual inversion's own (whole-table) gradient, the suggestion rule against brute
force, and the errors a user gets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alignscope.analyze.timesteps import suggest_timestep_min
from alignscope.cli import main

torch = pytest.importorskip("torch")


def test_planted_high_frequency_poison_acts_at_low_timesteps(
    planted, tiny_sd_dir, tmp_path, capsys
):
    out = tmp_path / "ts"
    code = main(
        [
            "analyze",
            "timesteps",
            str(tiny_sd_dir),
            str(planted),
            "--out",
            str(out),
            "--placeholder",
            "<c>",
            "--initializer",
            "a",
            "--resolution",
            "16",
            "--draws",
            "4",
            "--batch-size",
            "80",
            "--json",
            "--quiet",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    edges = np.asarray(result["edges"])
    share = np.asarray(result["excess_share"])
    assert list(edges) == list(range(0, 1001, 100))
    # the checkerboard is drowned by the noise above the lowest timesteps: its pull on the
    # embedding sits in the low buckets, with the most of it in [0, 100)
    assert share[:3].sum() > 0.7
    assert share[5:].sum() < 0.15
    assert int(np.argmax(share)) == 0
    # the suggested window [t_min, T) leaves out the bucket with the most excess, and drops a
    # larger share of the poison's excess than of the clean signal
    t_min = result["suggested_timestep_min"]
    assert t_min >= edges[int(np.argmax(share)) + 1]
    assert result["kept_clean"] >= 0.8
    assert result["dropped_excess"] > 2 * (1 - result["kept_clean"])
    assert result["images"] == {"clean": 4, "poisoned": 4}
    assert "keeps >= 80% of the clean gradient mass" in result["rule"]
    png = (out / "timesteps.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "timesteps_per_image.csv").read_text().splitlines()
    assert rows[0] == "id,poisoned,bucket_start,bucket_end,loss,grad_norm"
    assert len(rows) == 1 + 8 * 10


def _ti_reference(parts, placeholder, initializer, prompt, latents, eps, t):
    """Textual inversion's gradient as training computes it: the placeholder added as a row
    of the token table, the whole table trainable, the placeholder's row of its gradient."""
    import torch.nn.functional as F

    tok, text = parts["tokenizer"], parts["text_encoder"]
    tok.add_tokens([placeholder])
    text.resize_token_embeddings(len(tok), mean_resizing=False)
    table = text.get_input_embeddings().weight
    new = tok.convert_tokens_to_ids(placeholder)
    with torch.no_grad():
        table[new] = table[tok.encode(initializer, add_special_tokens=False)[0]]
    table.requires_grad_(True)
    ids = tok(
        [prompt], padding="max_length", max_length=tok.model_max_length, return_tensors="pt"
    ).input_ids
    alpha = parts["ddpm"].alphas_cumprod[t].double()
    noisy = (alpha.sqrt() * latents.double() + (1 - alpha).sqrt() * eps.double()).float()
    pred = parts["unet"](noisy, t, text(ids)[0]).sample
    loss = F.mse_loss(pred, eps)
    (grad,) = torch.autograd.grad(loss, table)
    table.requires_grad_(False)
    return float(loss.detach()), float(grad[new].norm())


def test_per_image_embedding_gradient_is_textual_inversions(planted, tiny_sd_dir):
    from alignscope.analyze._model import (
        Concept,
        encode_latents,
        load_components,
        load_images,
        training_scheduler,
    )
    from alignscope.analyze.timesteps import _embedding_jobs
    from alignscope.io.datasets import open_dataset

    images = load_images(open_dataset(planted), 16, None)
    parts = load_components(tiny_sd_dir)
    ddpm = training_scheduler(parts["scheduler"])
    latents = encode_latents(parts["vae"], images.pixels[:3])
    gen = torch.Generator().manual_seed(4)
    eps = torch.randn(latents.shape, generator=gen)
    t = torch.tensor([5, 480, 990])
    concept = Concept(parts["tokenizer"], parts["text_encoder"], "<c>", initializer="a")
    prompts = ["a photo of a <c>"] * 3
    losses, grads = _embedding_jobs(parts, ddpm, concept, latents, eps, t, torch.arange(3), prompts)
    fresh = load_components(tiny_sd_dir)  # a model without the hook's placeholder
    fresh["ddpm"] = ddpm
    for j in range(3):
        ref_loss, ref_norm = _ti_reference(
            fresh,
            f"<r{j}>",
            "a",
            f"a photo of a <r{j}>",
            latents[j : j + 1],
            eps[j : j + 1],
            t[j : j + 1],
        )
        assert losses[j] == pytest.approx(ref_loss, rel=1e-4)
        assert float(grads[j].norm()) == pytest.approx(ref_norm, rel=1e-3)


def _brute_force(edges, clean, excess, keep):
    """Every window [edges[k], T): among those keeping >= keep of the clean mass, the one
    dropping the most excess, the smallest such window on ties."""
    best = None
    for k in range(len(clean)):
        kept = sum(clean[k:]) / sum(clean)
        if kept < keep - 1e-12:
            continue
        dropped = sum(excess[:k]) / sum(excess)
        if best is None or dropped >= best[2]:
            best = (edges[k], kept, dropped)
    return best


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.95, 1.0])
def test_suggestion_rule_matches_brute_force(keep):
    gen = np.random.default_rng(7)
    for _ in range(50):
        n = int(gen.integers(1, 12))
        edges = list(range(0, 100 * n + 1, 100))
        clean = gen.random(n) + 1e-3
        excess = gen.random(n) * (gen.random(n) > 0.3) + 1e-9
        got = suggest_timestep_min(edges, clean, excess, keep)
        want = _brute_force(edges, clean, excess, keep)
        assert got[0] == want[0]
        assert got[1] == pytest.approx(want[1])
        assert got[2] == pytest.approx(want[2])


def test_manifest_must_mark_both_kinds(planted, tiny_sd_dir, tmp_path, capsys):
    from alignscope.io.manifest import write_manifest

    write_manifest(planted / "clean.parquet", {"row": list(range(8)), "poisoned": [False] * 8})
    args = ["analyze", "timesteps", str(tiny_sd_dir), str(planted), "--out", str(tmp_path / "o")]
    assert main([*args, "--manifest", str(planted / "clean.parquet"), "--resolution", "16"]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: the manifest marks no usable image as poisoned: the analysis "
        "compares poisoned with clean images of one dataset\n"
    )
    (planted / "poison_manifest.parquet").unlink()
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: no --manifest and DATA has no poison_manifest.parquet: give the "
        "poison manifest that says which images are poisoned\n"
    )


def test_unet_target_gradient_is_the_cross_attention_key_value_gradient(planted, tiny_sd_dir):
    import torch.nn.functional as F

    from alignscope.analyze._model import (
        encode_latents,
        load_components,
        load_images,
        training_scheduler,
    )
    from alignscope.analyze.timesteps import _unet_jobs
    from alignscope.io.datasets import open_dataset

    images = load_images(open_dataset(planted), 16, None)
    parts = load_components(tiny_sd_dir)
    ddpm = training_scheduler(parts["scheduler"])
    latents = encode_latents(parts["vae"], images.pixels[:1])
    eps = torch.randn(latents.shape, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([250])
    losses, grads = _unet_jobs(parts, ddpm, None, latents, eps, t, torch.arange(1), ["a thing"])
    # the reference: every weight named attn2.to_k / attn2.to_v, the loss written out
    unet, tok = parts["unet"], parts["tokenizer"]
    names = [n for n, _ in unet.named_parameters() if n.endswith(("attn2.to_k.weight",
             "attn2.to_v.weight"))]  # fmt: skip
    weights = [dict(unet.named_parameters())[n] for n in names]
    ids = tok(["a thing"], padding="max_length", max_length=tok.model_max_length,
              return_tensors="pt").input_ids  # fmt: skip
    with torch.no_grad():
        hidden = parts["text_encoder"](ids)[0]
    for w in weights:
        w.requires_grad_(True)
    alpha = ddpm.alphas_cumprod[t].double()
    noisy = (alpha.sqrt() * latents.double() + (1 - alpha).sqrt() * eps.double()).float()
    loss = F.mse_loss(unet(noisy, t, hidden).sample, eps)
    ref = torch.autograd.grad(loss, weights)
    assert len(names) == 8  # 4 cross-attention layers in the tiny UNet (down, mid, 2 up), k and v
    assert losses[0] == pytest.approx(float(loss.detach()), rel=1e-5)
    ref_norm = float(torch.sqrt(sum(g.pow(2).sum() for g in ref)))
    assert float(grads.norm()) == pytest.approx(ref_norm, rel=1e-4)


def test_learned_embeds_are_what_the_prompt_encodes(tiny_sd_dir, tmp_path):
    from safetensors.torch import save_file

    from alignscope.analyze._model import Concept, load_components

    learned = torch.randn(2, 16, generator=torch.Generator().manual_seed(2))
    save_file({"<x>": learned}, str(tmp_path / "learned_embeds.safetensors"))
    parts = load_components(tiny_sd_dir)
    concept = Concept(
        parts["tokenizer"],
        parts["text_encoder"],
        None,
        embeds=tmp_path / "learned_embeds.safetensors",
    )
    assert concept.placeholder == "<x>" and concept.phrase == "<x> <x>_1"
    got = concept.encode(["a photo of a <x> <x>_1"], concept.vectors[None])
    # the reference: the rows written into the token table, as pipe.load_textual_inversion does
    ref = load_components(tiny_sd_dir)
    tok, text = ref["tokenizer"], ref["text_encoder"]
    tok.add_tokens(["<x>", "<x>_1"])
    text.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():
        text.get_input_embeddings().weight[tok.convert_tokens_to_ids(["<x>", "<x>_1"])] = learned
        ids = tok(["a photo of a <x> <x>_1"], padding="max_length",
                  max_length=tok.model_max_length, return_tensors="pt").input_ids  # fmt: skip
        want = text(ids)[0]
    torch.testing.assert_close(got, want)
    save_file({"<y>": torch.zeros(1, 8)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError) as err:
        Concept(
            parts["tokenizer"], parts["text_encoder"], None, embeds=tmp_path / "wrong.safetensors"
        )
    assert str(err.value) == (
        f"embeds {str(tmp_path / 'wrong.safetensors')!r} has 8-dim vectors; this text encoder's "
        "are 16-dim"
    )
